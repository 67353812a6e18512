#include "proxy/session_private.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include <openssl/mem.h>

#include "common/capa.h"
#include "common/log.h"
#include "common/schema.h"
#include "proxy/backend.h"
#include "proxy/conn.h"
#include "proxy/directory.h"
#include "proxy/pool.h"
#include "proxy/verify.h"

static void session_on_login_done(void *ctx, enum backend_status st, const char *code,
                                  const char *reason);

/* --- login: directory, verification, backend -------------------------------- */

/* session_login_refused answers a failed login and goes back to pre-auth. */
static void session_login_refused(struct session *s, const char *code, const char *text,
                                  int counts)
{
    if (counts) {
        s->auth_failures++;
        if (s->user[0] != '\0') {
            dir_record_failure(s->env->dir, s->user, s->client_ip);
        }
    }
    if (strcmp(code, "UNAVAILABLE") == 0) {
        s->env->stats.logins_unavailable++;
    } else {
        s->env->stats.logins_failed++;
    }
    session_audit_event(s, "login", "failed", s->fail_reason != NULL ? s->fail_reason : code);
    s->fail_reason = NULL;
    session_sendf(s, "%s NO [%s] %s\r\n", s->tag, code, text);
    session_login_clear(s);
    s->user[0] = '\0';
    s->route = NULL;
    session_set_state(s, SESSION_PREAUTH);
    if (s->auth_failures >= s->cfg->max_auth_failures) {
        session_bye(s, "Too many failed logins", "too many failed logins");
        return;
    }
    if (s->flags & SESSION_F_PROCESSING) {
        /* answered at once, from within the command: the caller's loop goes on */
        session_read_client(s);
        return;
    }
    session_process(s);
    if (s->state == SESSION_PREAUTH) {
        session_read_client(s);
    }
}

static void session_auth_failed(struct session *s)
{
    session_login_refused(s, "AUTHENTICATIONFAILED", "Authentication failed.", 1);
}

static void session_unavailable(struct session *s)
{
    if (s->fail_reason == NULL) {
        s->fail_reason = "unavailable";
    }
    session_login_refused(s, "UNAVAILABLE", "Temporary failure, try again later", 0);
}

/* session_login_backend logs in to the chosen host: as the master user with
 * the client as authorization identity, or with the client's credentials;
 * on a warm pool connection when one is ready and warm is set. */
static void session_login_backend_on(struct session *s, int warm_ok);

static void session_login_backend(struct session *s)
{
    session_login_backend_on(s, 1);
}

static void session_login_backend_on(struct session *s, int warm_ok)
{
    const struct config_backend *b = s->route;
    size_t idx = (size_t)(b - s->cfg->backends);
    const char *target = s->login_as != NULL ? s->login_as : s->user;
    struct backend_login_params p = {
        .cfg = b,
        .host = s->host,
        .port = s->port,
        .tls_ctx = s->env->backend_ctx[idx],
        .client_ip = s->client_ip,
        .client_port = s->client_port,
        .local_ip = s->local_ip,
        .local_port = s->local_port,
        .connect_timeout_ms = s->cfg->backend_connect_timeout_ms,
        .greeting_timeout_ms = s->cfg->backend_greeting_timeout_ms,
    };
    if (b->auth == CONFIG_BACKEND_AUTH_MASTER) {
        p.authzid = target;
        p.user = b->master_user;
        p.password = b->master_password;
    } else {
        p.authzid = s->authzid;
        p.user = target;
        p.password = s->password;
    }
    struct backend *warm = warm_ok ? pool_take(s->env->pool, b, s->host, s->port) : NULL;
    s->flags &= ~SESSION_F_WARM_LOGIN;
    if (warm != NULL && backend_resume_login(warm, &p, session_on_login_done, s) == 0) {
        s->login = warm;
        /* the password is kept until the login is answered: a warm
           connection the backend dropped a moment ago gets one retry */
        s->flags |= SESSION_F_WARM_LOGIN;
    } else {
        backend_free(warm);
        s->login = backend_login(s->env->loop, &p, session_on_login_done, s);
        session_wipe(&s->password); /* the backend has its own copy */
    }
    if (s->login == NULL) {
        session_log(s, LOG_ERR, "login: out of memory");
        session_unavailable(s);
    }
}

static void session_on_verified(void *ctx, int result)
{
    struct session *s = ctx;
    s->pending--;
    if (s->state != SESSION_LOGIN) {
        session_maybe_free(s);
        return;
    }
    if (result < 0 && !(s->login_flags & SESSION_L_UNKNOWN)) {
        session_log(s, LOG_ERR, "login failed: the stored password hash is unusable");
    }
    if (result != 1) {
        s->fail_reason = (s->login_flags & SESSION_L_BLOCKED)   ? "blocked by the brute-force counters"
                         : (s->login_flags & SESSION_L_UNKNOWN) ? "unknown user"
                                                                : "wrong password";
        session_log(s, LOG_INFO, "login failed: %s", s->fail_reason);
        session_auth_failed(s);
        return;
    }
    if (s->login_flags & SESSION_L_DISABLED) {
        session_log(s, LOG_INFO, "login refused: account disabled");
        s->fail_reason = "account disabled";
        session_login_refused(s, "CONTACTADMIN", "Account disabled", 0);
        return;
    }
    if (s->authzid != NULL && strcasecmp(s->authzid, s->user) != 0) {
        session_log(s, LOG_INFO, "login refused: authorization identity differs from the login");
        s->fail_reason = "authorization identity differs from the login";
        session_login_refused(s, "AUTHORIZATIONFAILED", "Not allowed to act as that user", 0);
        return;
    }
    session_wipe(&s->authzid);
    session_login_backend(s);
}

/* session_login_verify: after any brute-force delay, check the password here
 * or let the backend do it. */

static void session_login_verify(struct session *s)
{
    if (session_cache_hit(s)) {
        return;
    }
    session_login_check(s);
}

/* session_login_check: the login without the session cache. */
void session_login_check(struct session *s)
{
    if (s->login_flags & (SESSION_L_LOCAL | SESSION_L_UNKNOWN | SESSION_L_BLOCKED)) {
        const char *hash = (s->login_flags & (SESSION_L_UNKNOWN | SESSION_L_BLOCKED)) ? NULL
                                                                                      : s->hash;
        if (verify_start(s->env->loop, hash, s->password, session_on_verified, s) != 0) {
            session_log(s, LOG_ERR, "login: cannot queue the password check");
            session_unavailable(s);
            return;
        }
        s->pending++;
        return;
    }
    if (s->login_flags & SESSION_L_DISABLED) {
        session_log(s, LOG_INFO, "login refused: account disabled");
        s->fail_reason = "account disabled";
        session_login_refused(s, "CONTACTADMIN", "Account disabled", 0);
        return;
    }
    session_login_backend(s);
}

struct session_delay {
    uv_timer_t timer;
    struct session *s;
};

static void session_on_delay_close(uv_handle_t *h)
{
    struct session_delay *d = h->data;
    struct session *s = d->s;
    free(d);
    s->pending--;
    if (s->state != SESSION_LOGIN) {
        session_maybe_free(s);
        return;
    }
    session_login_verify(s);
}

static void session_on_delay(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, session_on_delay_close);
}

/* session_bf_delay: the pause before a login from an address or for a login
 * with recent failures; it doubles with each failure past delay_after. */
static unsigned session_bf_delay(const struct config_bruteforce *bf, unsigned long fails)
{
    if (!bf->enabled || fails < bf->delay_after || bf->delay_ms == 0) {
        return 0;
    }
    unsigned long steps = fails - bf->delay_after;
    uint64_t d = bf->delay_ms;
    while (steps-- > 0 && d < bf->max_delay_ms) {
        d *= 2;
    }
    return d > bf->max_delay_ms ? bf->max_delay_ms : (unsigned)d;
}

static void session_on_lookup(void *ctx, const struct dir_result *res)
{
    struct session *s = ctx;
    const struct config_bruteforce *bf = &s->cfg->bruteforce;

    s->pending--;
    if (s->state != SESSION_LOGIN) {
        session_maybe_free(s);
        return;
    }
    if (res->status == DIR_UNAVAILABLE) {
        session_log(s, LOG_WARNING, "login failed: routing table unavailable: %s", res->reason);
        s->fail_reason = "routing table unavailable";
        session_unavailable(s);
        return;
    }
    if (res->status == DIR_NO_ROUTE) {
        session_log(s, LOG_INFO, "login failed: no route for this login");
        s->fail_reason = "no route";
        session_auth_failed(s);
        return;
    }
    s->route = res->backend;
    snprintf(s->host, sizeof(s->host), "%s", res->host);
    s->port = res->port;

    if (res->have_user) {
        if (res->user.login_as != NULL && (s->login_as = strdup(res->user.login_as)) == NULL) {
            session_unavailable(s);
            return;
        }
        if (res->user.state == SCHEMA_DISABLED) {
            s->login_flags |= SESSION_L_DISABLED;
        }
        if (res->user.password != NULL) {
            s->login_flags |= SESSION_L_LOCAL;
            if ((s->hash = strdup(res->user.password)) == NULL) {
                session_unavailable(s);
                return;
            }
        }
    } else if (s->cfg->redis.enabled) {
        int local = res->have_domain && res->domain_auth != SCHEMA_AUTH_DEFAULT
                        ? res->domain_auth == SCHEMA_AUTH_LOCAL
                        : !s->cfg->redis.unknown_users_passthrough;
        if (local) {
            s->login_flags |= SESSION_L_UNKNOWN;
        }
    }
    if (s->route->auth == CONFIG_BACKEND_AUTH_MASTER && !(s->login_flags & SESSION_L_LOCAL)) {
        /* a master login would let in anyone: only verified users get one */
        if (!(s->login_flags & SESSION_L_UNKNOWN) && res->have_user) {
            session_log(s, LOG_WARNING, "backend %s logs in as master but the user has no "
                        "password hash; refusing", s->route->name);
        }
        s->login_flags |= SESSION_L_UNKNOWN;
    }
    unsigned long fails = res->fails_ip > res->fails_login ? res->fails_ip : res->fails_login;
    if (bf->enabled && (res->fails_ip >= bf->block_ip_after ||
                        res->fails_login >= bf->block_login_after)) {
        s->login_flags |= SESSION_L_BLOCKED;
        s->env->stats.bf_blocked++;
    }
    unsigned delay = session_bf_delay(bf, fails);
    if (delay > 0) {
        struct session_delay *d = malloc(sizeof(*d));
        if (d != NULL) {
            d->s = s;
            uv_timer_init(s->env->loop, &d->timer);
            d->timer.data = d;
            uv_timer_start(&d->timer, session_on_delay, delay, 0);
            s->pending++;
            s->env->stats.bf_delayed++;
            return;
        }
    }
    session_login_verify(s);
}

/* session_start_login normalises the login, keeps the credentials for the
 * steps to come and asks the directory; the client's command is answered
 * when every step is done.  Client reads stop meanwhile. */
void session_start_login(struct session *s, const char *tag, const char *authzid,
                                const char *user, size_t user_len, const char *password)
{
    if (tag != s->tag) {
        snprintf(s->tag, sizeof(s->tag), "%s", tag);
    }
    session_login_clear(s);
    if (schema_normalize(s->user, user, user_len) != 0) {
        s->user[0] = '\0';
        s->auth_failures++;
        session_audit_event(s, "login", "failed", "unusable login name");
        session_sendf(s, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", tag);
        session_log(s, LOG_INFO, "login refused: unusable login name");
        return;
    }
    s->password = strdup(password);
    if (authzid != NULL && authzid[0] != '\0') {
        s->authzid = strdup(authzid);
    }
    if (s->password == NULL || (authzid != NULL && authzid[0] != '\0' && s->authzid == NULL)) {
        session_login_clear(s);
        s->user[0] = '\0';
        session_sendf(s, "%s NO [UNAVAILABLE] Temporary failure, try again later\r\n", tag);
        return;
    }
    session_set_state(s, SESSION_LOGIN);
    conn_read_stop(s->client);
    s->pending++;
    if (dir_lookup(s->env->dir, s->user, s->client_ip, session_on_lookup, s) != 0) {
        s->pending--;
        session_unavailable(s);
    }
}

static void session_on_login_done(void *ctx, enum backend_status st, const char *code,
                                  const char *reason)
{
    struct session *s = ctx;
    const char *capa = NULL;
    const uint8_t *rest = NULL;
    size_t rest_len = 0;

    if (st == BACKEND_UNAVAILABLE && (s->flags & SESSION_F_WARM_LOGIN)) {
        /* a warm connection can die (backend restart, idle cut, a NAT that
           forgot it) before the pool notices: once more on a new one */
        s->flags &= ~SESSION_F_WARM_LOGIN;
        backend_free(s->login);
        s->login = NULL;
        session_log(s, LOG_INFO, "login: warm connection failed (%s); trying a new connection",
                    reason);
        s->env->stats.warm_retries++;
        session_login_backend_on(s, 0);
        return;
    }
    s->flags &= ~SESSION_F_WARM_LOGIN;
    session_wipe(&s->password);
    if (st != BACKEND_OK) {
        backend_free(s->login);
        s->login = NULL;
        if (st == BACKEND_AUTH_FAILED) {
            session_log(s, LOG_INFO, "login failed: %s", reason);
            s->fail_reason = "refused by the backend";
            if (s->route->auth == CONFIG_BACKEND_AUTH_MASTER) {
                /* our master credentials or the user's mailbox: not the client's fault */
                session_log(s, LOG_ERR, "backend %s refused the master login", s->route->name);
                session_unavailable(s);
            } else {
                session_login_refused(s, code, "Authentication failed.", 1);
            }
        } else {
            session_log(s, LOG_WARNING, "login failed: backend unavailable: %s", reason);
            s->fail_reason = "backend unavailable";
            session_login_refused(s, "UNAVAILABLE", "Backend unavailable, try again later", 0);
        }
        return;
    }

    struct conn *conn = backend_take_conn(s->login, &capa, &rest, &rest_len);
    size_t flen = 0;
    char *filtered = capa_filter(&flen, capa, strlen(capa));
    session_enter_relay(s, conn, filtered, rest, rest_len, 0);
    backend_free(s->login); /* rest was used; a close above freed it already */
    s->login = NULL;
}
