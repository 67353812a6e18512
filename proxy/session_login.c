/* session_login: the login pipeline, from a LOGIN or AUTHENTICATE that
 * pre-auth parsed to the relay or back to pre-auth.  It is a step machine:
 *
 *   lookup -> delay -> cache -> verify -> limit -> backend -> done
 *
 * Each step either goes on at once, or starts one piece of async work (a
 * routing lookup, a brute-force delay, a wait for a parked connection, a
 * password check on the threadpool, a backend login) whose completion stores
 * its result and calls session_login_run() again.  Every refusal, whatever
 * the step, goes through session_login_refuse(). */
#include "proxy/session_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "common/bruteforce.h"
#include "common/capa.h"
#include "common/log.h"
#include "common/schema.h"
#include "proxy/backend.h"
#include "proxy/conn.h"
#include "proxy/directory.h"
#include "proxy/warm.h"
#include "proxy/verify.h"

static const char *const login_step_names[] = {
    "lookup", "delay", "cache", "verify", "limit", "backend", "done",
};
_Static_assert(sizeof(login_step_names) / sizeof(login_step_names[0]) == LOGIN_STEP_DONE + 1,
               "a name per login step");

/* The reason label of each refusal in imapmux_login_refusals_total. */
static const char *const login_refusal_labels[] = {
    [LOGIN_REFUSE_BAD_NAME] = "bad_name",
    [LOGIN_REFUSE_NUL_PASSWORD] = "nul_password",
    [LOGIN_REFUSE_NO_ROUTE] = "no_route",
    [LOGIN_REFUSE_UNKNOWN] = "unknown_user",
    [LOGIN_REFUSE_WRONG_PASSWORD] = "wrong_password",
    [LOGIN_REFUSE_BLOCKED] = "blocked",
    [LOGIN_REFUSE_DISABLED] = "disabled",
    [LOGIN_REFUSE_AUTHZID] = "authzid",
    [LOGIN_REFUSE_BACKEND_AUTH] = "backend_refused",
    [LOGIN_REFUSE_MASTER] = "master_refused",
    [LOGIN_REFUSE_BACKEND_DOWN] = "backend_unavailable",
    [LOGIN_REFUSE_DIRECTORY_DOWN] = "directory_unavailable",
    [LOGIN_REFUSE_BUSY] = "busy",
    [LOGIN_REFUSE_INTERNAL] = "internal",
    [LOGIN_REFUSE_LIMIT_USER] = "session_limit_user",
    [LOGIN_REFUSE_LIMIT_IP] = "session_limit_ip",
    [LOGIN_REFUSE_LIMIT_REDIS] = "session_limit_unavailable",
    [LOGIN_REFUSE_TOKEN] = "token_refused",
    [LOGIN_REFUSE_TOKEN_UNAVAILABLE] = "token_unavailable",
};


void session_login_metrics(struct session *s, enum metrics_login_result r)
{
    if (s->login_t0_ns == 0) {
        return;
    }
    uint64_t now = uv_hrtime();
    if (s->login_step != LOGIN_STEP_DONE) {
        metrics_login_step(s->login_step, login_step_names[s->login_step], now - s->step_t0_ns);
    }
    metrics_login_done(r, (enum metrics_mech)s->login_mech, now - s->login_t0_ns);
    s->login_t0_ns = 0;
}

const char *session_login_step_name(enum login_step step)
{
    return login_step_names[step];
}

/* --- refusals ----------------------------------------------------------------- */

struct login_refusal_info {
    const char *code;   /* response code of the tagged NO */
    const char *text;   /* its text */
    const char *reason; /* for the log line and the audit record */
    int level;          /* of the log line */
    uint8_t counts;     /* a failed attempt: brute-force counters, max_auth_failures */
    uint8_t unavailable;/* counted as logins_unavailable (else logins_failed) */
    uint8_t untested;   /* counts for the session only: the password was not tested, so
                           the shared counters take it back as an attempt that proved
                           nothing (a blocked attempt must not block the address further:
                           a burst of right logins from a webmail host would) */
};

/* Unknown users, wrong passwords and blocks get the same answer: the client
 * cannot tell which it was. */
#define LOGIN_AUTH_FAILED "AUTHENTICATIONFAILED", "Authentication failed."
#define LOGIN_TEMP_FAILURE "UNAVAILABLE", "Temporary failure, try again later"

static const struct login_refusal_info login_refusals[] = {
    [LOGIN_REFUSE_BAD_NAME] = {LOGIN_AUTH_FAILED, "unusable login name", LOG_INFO, 1, 0},
    [LOGIN_REFUSE_NUL_PASSWORD] = {LOGIN_AUTH_FAILED, "NUL in the password", LOG_INFO, 1, 0},
    [LOGIN_REFUSE_NO_ROUTE] = {LOGIN_AUTH_FAILED, "no route", LOG_INFO, 1, 0},
    [LOGIN_REFUSE_UNKNOWN] = {LOGIN_AUTH_FAILED, "unknown user", LOG_INFO, 1, 0},
    [LOGIN_REFUSE_WRONG_PASSWORD] = {LOGIN_AUTH_FAILED, "wrong password", LOG_INFO, 1, 0},
    [LOGIN_REFUSE_BLOCKED] = {LOGIN_AUTH_FAILED, "blocked by the brute-force counters", LOG_INFO,
                              1, 0, 1},
    [LOGIN_REFUSE_DISABLED] = {"CONTACTADMIN", "Account disabled", "account disabled", LOG_INFO,
                               0, 0},
    [LOGIN_REFUSE_AUTHZID] = {"AUTHORIZATIONFAILED", "Not allowed to act as that user",
                              "authorization identity differs from the login", LOG_INFO, 0, 0},
    [LOGIN_REFUSE_BACKEND_AUTH] = {LOGIN_AUTH_FAILED, "refused by the backend", LOG_INFO, 1, 0},
    [LOGIN_REFUSE_MASTER] = {LOGIN_TEMP_FAILURE, "refused by the backend", LOG_ERR, 0, 1},
    [LOGIN_REFUSE_BACKEND_DOWN] = {"UNAVAILABLE", "Backend unavailable, try again later",
                                   "backend unavailable", LOG_WARNING, 0, 1},
    [LOGIN_REFUSE_DIRECTORY_DOWN] = {LOGIN_TEMP_FAILURE, "routing table unavailable",
                                     LOG_WARNING, 0, 1},
    [LOGIN_REFUSE_BUSY] = {LOGIN_TEMP_FAILURE, "password check queue full", LOG_WARNING, 0, 1},
    [LOGIN_REFUSE_INTERNAL] = {LOGIN_TEMP_FAILURE, "unavailable", LOG_ERR, 0, 1},
    [LOGIN_REFUSE_LIMIT_USER] = {"LIMIT", "Too many sessions open for this account; "
                                 "log out elsewhere and try again",
                                 "session limit of the login reached", LOG_INFO, 0, 0},
    [LOGIN_REFUSE_LIMIT_IP] = {"LIMIT", "Too many sessions open for this account from your "
                               "address; log out elsewhere and try again",
                               "session limit of the login from this address reached", LOG_INFO,
                               0, 0},
    [LOGIN_REFUSE_LIMIT_REDIS] = {LOGIN_TEMP_FAILURE, "sessions cannot be counted (redis)",
                                  LOG_WARNING, 0, 1},
    [LOGIN_REFUSE_TOKEN] = {LOGIN_AUTH_FAILED, "token refused", LOG_INFO, 1, 0},
    [LOGIN_REFUSE_TOKEN_UNAVAILABLE] = {LOGIN_TEMP_FAILURE, "token check unavailable",
                                        LOG_WARNING, 0, 1},
};
_Static_assert(sizeof(login_refusals) / sizeof(login_refusals[0]) == LOGIN_REFUSE_LAST + 1,
               "an answer per refusal");
/* a new refusal needs a metrics label too */
_Static_assert(sizeof(login_refusal_labels) / sizeof(login_refusal_labels[0]) ==
                   sizeof(login_refusals) / sizeof(login_refusals[0]),
               "a metrics label per refusal");

void session_login_refuse(struct session *s, enum login_refusal why, const char *code,
                          const char *detail)
{
    const struct login_refusal_info *r = &login_refusals[why];
    session_log(s, r->level, "login failed: %s%s%s", r->reason, detail != NULL ? ": " : "",
                detail != NULL ? detail : "");
    if (r->counts) {
        s->auth_failures++;
    }
    if (s->login_flags & SESSION_L_COUNTED) {
        dir_bf_settle(s->env->dir, s->user, s->client_ip,
                      r->counts && !r->untested ? DIR_BF_FAILURE : DIR_BF_VOID);
    }
    if (r->unavailable) {
        s->env->stats.logins_unavailable++;
    } else {
        s->env->stats.logins_failed++;
    }
    if (s->login_t0_ns == 0) {
        s->login_t0_ns = s->step_t0_ns = uv_hrtime(); /* refused before its start */
        s->login_step = LOGIN_STEP_LOOKUP;
    }
    session_login_metrics(s, r->unavailable ? METRICS_LOGIN_UNAVAILABLE : METRICS_LOGIN_FAILED);
    metrics_login_refused(why, login_refusal_labels[why]);
    session_audit_event(s, "login", "failed", r->reason);
    if (!session_oauth_refused(s, code != NULL ? code : r->code, r->text)) {
        session_sendf(s, "%s NO [%s] %s\r\n", s->tag, code != NULL ? code : r->code, r->text);
    }
    session_login_clear(s);
    sesslimit_release(s->env->limits, &s->lease); /* a later step failed */
    (void)session_name_set(&s->user, "");
    (void)session_name_set(&s->auth_user, "");
    s->route = NULL;
    s->route_name[0] = '\0';
    if (s->state == SESSION_LOGGING_IN) {
        session_preauth_resume(s);
    }
}

/* --- the steps ----------------------------------------------------------------- */

/* session_login_back: an async step's completion came back and dropped the
 * reference it held.  Returns 1 when the login goes on, 0 when the session
 * left the login meanwhile (it may be freed by then: touch nothing). */
static int session_login_back(struct session *s)
{
    s->pending--;
    if (s->state != SESSION_LOGGING_IN) {
        session_maybe_free(s);
        return 0;
    }
    return 1;
}

static void session_login_goto(struct session *s, enum login_step step)
{
    if (log_enabled(LOG_DEBUG)) {
        session_log(s, LOG_DEBUG, "login step %s -> %s", login_step_names[s->login_step],
                    login_step_names[step]);
    }
    if (s->login_t0_ns != 0 && step != s->login_step) {
        uint64_t now = uv_hrtime();
        metrics_login_step(s->login_step, login_step_names[s->login_step], now - s->step_t0_ns);
        s->step_t0_ns = now;
    }
    s->login_step = step;
}

/* lookup: the routing table says where the user lives, how the password is
 * checked and what the brute-force counters hold. */

/* session_login_counters applies the brute-force verdict of the lookup. */
static void session_login_counters(struct session *s, const struct config_bruteforce *bf,
                                   const struct dir_result *res)
{
    struct bruteforce_verdict v;
    bruteforce_decide(&v, bf, &res->bf);
    if (v.blocked) {
        s->login_flags |= SESSION_L_BLOCKED;
        s->env->stats.bf_blocked++;
    }
    s->login_delay_ms = v.delay_ms;
}

static void session_on_lookup(void *ctx, const struct dir_result *res)
{
    struct session *s = ctx;
    const struct config_bruteforce *bf = &s->cfg->bruteforce;

    if (!session_login_back(s)) {
        return;
    }
    if (res->bf_counted) {
        s->login_flags |= SESSION_L_COUNTED; /* settled by the login's end */
    }
    if (res->status == DIR_UNAVAILABLE) {
        session_login_refuse(s, LOGIN_REFUSE_DIRECTORY_DOWN, NULL, res->reason);
        return;
    }
    if (res->status == DIR_NO_ROUTE) {
        /* refused like an unknown user, after the same work */
        s->login_flags |= SESSION_L_UNKNOWN | SESSION_L_NO_ROUTE;
        session_login_counters(s, bf, res);
        session_login_goto(s, LOGIN_STEP_DELAY);
        session_login_run(s);
        return;
    }
    s->route = res->backend;
    if (session_oauth_routed(s) != 0) {
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        return;
    }
    snprintf(s->route_name, sizeof(s->route_name), "%s", res->backend_name);
    s->kick_gen = res->kick_gen;
    s->port = res->port;
    if (session_name_set(&s->host, res->host) != 0) {
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        return;
    }

    if (res->have_user) {
        if (res->user.login_as != NULL &&
            (s->backend_user = strdup(res->user.login_as)) == NULL) {
            session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
            return;
        }
        if (res->user.state == SCHEMA_DISABLED) {
            s->login_flags |= SESSION_L_DISABLED;
        }
        if (res->user.password != NULL) {
            s->login_flags |= SESSION_L_LOCAL;
            if ((s->hash = strdup(res->user.password)) == NULL) {
                session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
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
    if (s->oauth_state == SESSION_OAUTH_VALID) {
        /* the token proved the identity: known to the issuer is known */
        s->login_flags &= ~SESSION_L_UNKNOWN;
    }
    if (s->route->auth == CONFIG_BACKEND_AUTH_MASTER && !(s->login_flags & SESSION_L_LOCAL) &&
        s->oauth_state != SESSION_OAUTH_VALID) {
        /* a master login would let in anyone: only verified users get one */
        if (!(s->login_flags & SESSION_L_UNKNOWN) && res->have_user) {
            session_log(s, LOG_WARNING, "backend %s logs in as master but the user has no "
                        "password hash; refusing", s->route_name);
        }
        s->login_flags |= SESSION_L_UNKNOWN;
    }
    if (s->auth_user[0] != '\0' &&
        (s->route->auth != CONFIG_BACKEND_AUTH_PASSTHROUGH || !s->route->passthrough_authzid ||
         (s->login_flags & (SESSION_L_LOCAL | SESSION_L_UNKNOWN)))) {
        /* only a backend that is told so may decide who acts as whom */
        session_login_refuse(s, LOGIN_REFUSE_AUTHZID, NULL, s->auth_user);
        return;
    }
    session_login_counters(s, bf, res);
    session_login_goto(s, LOGIN_STEP_DELAY);
    session_login_run(s);
}

static enum login_next session_login_lookup(struct session *s)
{
    s->pending++;
    if (dir_lookup_in(s->env->dir, s->cfg, s->user, s->client_ip, session_on_lookup, s) != 0) {
        s->pending--;
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        return LOGIN_END;
    }
    return LOGIN_WAIT; /* the lookup may have answered already: it ran the steps */
}

/* delay: the brute-force counters slow down a login with recent failures. */

static void session_on_delay(struct session *s)
{
    session_login_goto(s, LOGIN_STEP_CACHE);
    session_login_run(s);
}

static enum login_next session_login_delay(struct session *s)
{
    if (s->login_delay_ms > 0 && session_after(s, s->login_delay_ms, session_on_delay) == 0) {
        s->env->stats.bf_delayed++;
        return LOGIN_WAIT;
    }
    session_login_goto(s, LOGIN_STEP_CACHE);
    return LOGIN_GO;
}

/* cache: a connection parked at this user's last LOGOUT, with the same
 * credentials, skips the password check and the backend login. */

static void session_login_limit_track(struct session *s);

static void session_on_cache_relay(struct session *s)
{
    char *capa = s->cached_capa;
    s->cached_capa = NULL;
    session_login_goto(s, LOGIN_STEP_DONE);
    session_login_limit_track(s);
    session_relay_enter(s, s->backend, capa, NULL, 0, 1);
}

void session_login_cache_ready(struct session *s, int hit)
{
    if (s->state != SESSION_LOGGING_IN) {
        return;
    }
    if (!hit) {
        session_login_goto(s, LOGIN_STEP_VERIFY);
    }
    /* called from within the cache: go on at the next loop turn */
    if (session_after(s, 0, hit ? session_on_cache_relay : session_login_run) != 0) {
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
    }
}

static enum login_next session_login_cache(struct session *s)
{
    if (s->oauth_mech != 0 && s->oauth_state != SESSION_OAUTH_VALID) {
        /* a refused token must not find a connection parked by its valid past */
        session_login_goto(s, LOGIN_STEP_VERIFY);
        return LOGIN_GO;
    }
    switch (session_park_take(s)) {
    case SESSCACHE_MISS:
        session_login_goto(s, LOGIN_STEP_VERIFY);
        return LOGIN_GO;
    case SESSCACHE_WAIT:
        return LOGIN_WAIT; /* session_login_cache_ready follows */
    case SESSCACHE_HIT:
        break;
    }
    /* the LOGIN command's parser may be the caller: relay from the next turn */
    if (session_after(s, 0, session_on_cache_relay) != 0) {
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        return LOGIN_END;
    }
    return LOGIN_WAIT;
}

/* verify: the password is checked here (on the threadpool) when the routing
 * table holds its hash; unknown and blocked users check a dummy, so that
 * they cost the same. */

static void session_on_verified(void *ctx, int result)
{
    struct session *s = ctx;
    if (!session_login_back(s)) {
        return;
    }
    if (result < 0 && !(s->login_flags & SESSION_L_UNKNOWN)) {
        session_log(s, LOG_ERR, "the stored password hash is unusable");
    }
    if (result != 1) {
        session_login_refuse(s,
                             (s->login_flags & SESSION_L_BLOCKED)    ? LOGIN_REFUSE_BLOCKED
                             : (s->login_flags & SESSION_L_NO_ROUTE) ? LOGIN_REFUSE_NO_ROUTE
                             : (s->login_flags & SESSION_L_UNKNOWN)  ? LOGIN_REFUSE_UNKNOWN
                                                                     : LOGIN_REFUSE_WRONG_PASSWORD,
                             NULL, NULL);
        return;
    }
    if (s->login_flags & SESSION_L_DISABLED) {
        session_login_refuse(s, LOGIN_REFUSE_DISABLED, NULL, NULL);
        return;
    }
    session_login_goto(s, LOGIN_STEP_LIMIT);
    session_login_run(s);
}

static enum login_next session_login_verify(struct session *s)
{
    if (s->oauth_mech != 0) {
        return session_oauth_verify(s); /* the token was checked: no password here */
    }
    if (s->login_flags & (SESSION_L_LOCAL | SESSION_L_UNKNOWN | SESSION_L_BLOCKED)) {
        const char *hash = (s->login_flags & (SESSION_L_UNKNOWN | SESSION_L_BLOCKED)) ? NULL
                                                                                      : s->hash;
        s->pending++;
        int r = verify_start_for(s->env->loop, s->client_ip, hash, s->password,
                                 session_on_verified, s);
        if (r != 0) {
            /* a full queue answers at once: never an unbounded wait */
            s->pending--;
            session_login_refuse(s, r == UV_EBUSY ? LOGIN_REFUSE_BUSY : LOGIN_REFUSE_INTERNAL,
                                 NULL, r == UV_EBUSY ? NULL : "cannot queue the password check");
            return LOGIN_END;
        }
        return LOGIN_WAIT;
    }
    if (s->login_flags & SESSION_L_DISABLED) {
        session_login_refuse(s, LOGIN_REFUSE_DISABLED, NULL, NULL);
        return LOGIN_END;
    }
    session_login_goto(s, LOGIN_STEP_LIMIT);
    return LOGIN_GO;
}

/* limit: the login's logged-in sessions on every instance are counted in
 * Redis (proxy/sesslimit.h); this one takes a lease, or is refused when the
 * login (or the login from this address) has its limit's worth.  It comes
 * after the password check so that a stranger's guesses take no lease. */

static void session_on_limit(void *ctx, enum sesslimit_verdict v, unsigned limit,
                             struct sesslimit_lease *lease)
{
    struct session *s = ctx;
    struct sesslimit *l = s->env->limits; /* the worker's: outlives s */
    char detail[64];

    if (!session_login_back(s)) {
        sesslimit_release(l, &lease);
        return;
    }
    snprintf(detail, sizeof(detail), "at most %u", limit);
    switch (v) {
    case SESSLIMIT_OK:
        break;
    case SESSLIMIT_OVER_USER:
        session_login_refuse(s, LOGIN_REFUSE_LIMIT_USER, NULL, detail);
        return;
    case SESSLIMIT_OVER_IP:
        session_login_refuse(s, LOGIN_REFUSE_LIMIT_IP, NULL, detail);
        return;
    case SESSLIMIT_REDIS_DOWN:
        if (s->cfg->session_limits_refuse) {
            sesslimit_release(l, &lease);
            session_login_refuse(s, LOGIN_REFUSE_LIMIT_REDIS, NULL, NULL);
            return;
        }
        session_log(s, LOG_WARNING, "login: sessions cannot be counted (redis); allowed "
                    "(limits.on_redis_error: allow)");
        break;
    }
    s->lease = lease;
    session_login_goto(s, LOGIN_STEP_BACKEND);
    session_login_run(s);
}

static enum login_next session_login_limit(struct session *s)
{
    if (s->env->limits == NULL) {
        session_login_goto(s, LOGIN_STEP_BACKEND);
        return LOGIN_GO;
    }
    s->pending++;
    if (sesslimit_acquire(s->env->limits, s->user, s->client_ip, s->id,
                          s->cfg->max_sessions_per_user, s->cfg->max_sessions_per_user_ip,
                          session_on_limit, s) != 0) {
        s->pending--;
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        return LOGIN_END;
    }
    return LOGIN_WAIT; /* the answer may have come already: it ran the steps */
}

/* A session cache hit skips the steps after the cache: its session is
 * counted, never refused (it takes the connection that the same login's
 * session parked a moment ago, whose lease was just given back). */
static void session_on_limit_tracked(void *ctx, enum sesslimit_verdict v, unsigned limit,
                                     struct sesslimit_lease *lease)
{
    struct session *s = ctx;
    (void)v;
    (void)limit;
    s->pending--;
    if (s->state == SESSION_CLOSING || s->lease != NULL) {
        sesslimit_release(s->env->limits, &lease);
    } else {
        s->lease = lease;
    }
    session_maybe_free(s);
}

static void session_login_limit_track(struct session *s)
{
    if (s->env->limits == NULL) {
        return;
    }
    s->pending++;
    if (sesslimit_acquire(s->env->limits, s->user, s->client_ip, s->id, 0, 0,
                          session_on_limit_tracked, s) != 0) {
        s->pending--;
        session_log(s, LOG_WARNING, "login: out of memory; this session is not counted");
    }
}

/* backend: log in to the chosen host, as the master user with the client as
 * authorization identity, or with the client's credentials; on a warm
 * connection when one is ready. */

static void session_on_backend_login(void *ctx, enum backend_status st, const char *code,
                                     const char *reason);

static int session_login_backend_start(struct session *s, int warm_ok)
{
    const struct config_backend *b = s->route;
    const char *target = s->backend_user != NULL ? s->backend_user : s->user;
    struct backend_login_params p = {
        .cfg = b,
        .host = s->host,
        .port = s->port,
        .tls_ctx = snapshot_backend_ctx(s->snap, b),
        .client_ip = s->client_ip,
        .client_port = s->client_port,
        .local_ip = s->local_ip,
        .local_port = s->local_port,
        .connect_timeout_ms = s->cfg->backend_connect_timeout_ms,
        .greeting_timeout_ms = s->cfg->backend_greeting_timeout_ms,
        .session_id = s->id,
    };
    if (b->auth == CONFIG_BACKEND_AUTH_MASTER) {
        p.authzid = target;
        p.user = b->master_user;
        p.password = b->master_password;
    } else if (s->oauth_mech != 0) {
        p.user = target; /* the token passes through: the backend checks it again */
        p.password = s->password;
        p.oauth = 1;
    } else if (s->auth_user[0] != '\0') {
        p.authzid = target; /* checked in the lookup: the backend decides */
        p.user = s->auth_user;
        p.password = s->password;
    } else {
        p.user = target;
        p.password = s->password;
    }
    uint8_t proxy_header[SESSION_PROXY_OUT_MAX_LEN];
    if (b->proxy_protocol != 0) {
        int n = session_proxy_header_out(s, proxy_header, sizeof(proxy_header));
        if (n < 0) {
            return UV_EINVAL;
        }
        p.proxy_header = proxy_header;
        p.proxy_header_len = (size_t)n;
        warm_ok = 0; /* the pool has none for it anyway (config) */
    }
    struct backend *warm = warm_ok ? warm_take(s->env->warm, b, s->host, s->port) : NULL;
    s->flags &= ~SESSION_F_WARM_LOGIN;
    if (warm != NULL && backend_resume_login(warm, &p, session_on_backend_login, s) == 0) {
        s->backend_login = warm;
        /* the password is kept until the login is answered: a warm
           connection the backend dropped a moment ago gets one retry */
        s->flags |= SESSION_F_WARM_LOGIN;
    } else {
        backend_free(warm);
        s->backend_login = backend_login(s->env->loop, &p, session_on_backend_login, s);
        session_wipe(&s->password); /* the backend has its own copy */
    }
    return s->backend_login != NULL ? 0 : UV_ENOMEM;
}

static void session_on_backend_login(void *ctx, enum backend_status st, const char *code,
                                     const char *reason)
{
    struct session *s = ctx;
    const char *capa = NULL;
    const uint8_t *rest = NULL;
    size_t rest_len = 0;

    if (st != BACKEND_OK) {
        backend_free(s->backend_login); /* from within its callback: allowed */
        s->backend_login = NULL;
    }
    if (st == BACKEND_UNAVAILABLE && (s->flags & SESSION_F_WARM_LOGIN)) {
        /* a warm connection can die (backend restart, idle cut, a NAT that
           forgot it) before the pool notices: once more on a new one */
        session_log(s, LOG_INFO, "login: warm connection failed (%s); trying a new connection",
                    reason);
        s->env->stats.warm_retries++;
        if (session_login_backend_start(s, 0) != 0) {
            session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        }
        return;
    }
    s->flags &= ~SESSION_F_WARM_LOGIN;
    session_wipe(&s->password);
    switch (st) {
    case BACKEND_OK:
        break;
    case BACKEND_AUTH_FAILED:
        if (s->route->auth == CONFIG_BACKEND_AUTH_MASTER) {
            /* our master credentials or the user's mailbox: not the client's fault */
            session_log(s, LOG_ERR, "backend %s refused the master login", s->route_name);
            session_login_refuse(s, LOGIN_REFUSE_MASTER, NULL, reason);
        } else {
            session_login_refuse(s, LOGIN_REFUSE_BACKEND_AUTH, code, reason);
        }
        return;
    case BACKEND_UNAVAILABLE:
        session_login_refuse(s, LOGIN_REFUSE_BACKEND_DOWN, NULL, reason);
        return;
    }

    struct conn *conn = backend_take_conn(s->backend_login, &capa, &rest, &rest_len);
    size_t flen = 0;
    char *filtered = capa_filter(&flen, capa, strlen(capa));
    const char *lit = backend_literal(s->backend_login);
    if (filtered != NULL && lit != NULL && !capa_has(filtered, flen, "LITERAL+") &&
        !capa_has(filtered, flen, "LITERAL-")) {
        /* announced before login only (Dovecot): the client's list says it */
        char *c = realloc(filtered, flen + strlen(lit) + 2);
        if (c == NULL) {
            free(filtered);
            filtered = NULL;
        } else {
            snprintf(c + flen, strlen(lit) + 2, "%s%s", flen > 0 ? " " : "", lit);
            filtered = c;
        }
    }
    session_login_goto(s, LOGIN_STEP_DONE);
    session_relay_enter(s, conn, filtered, rest, rest_len, 0);
    backend_free(s->backend_login); /* rest was used; a close above freed it already */
    s->backend_login = NULL;
}

static enum login_next session_login_backend(struct session *s)
{
    if (session_login_backend_start(s, 1) != 0) {
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        return LOGIN_END;
    }
    return LOGIN_WAIT;
}

static enum login_next session_login_done(struct session *s)
{
    (void)s; /* entered by the completion that got there */
    return LOGIN_END;
}

static enum login_next (*const login_steps[])(struct session *s) = {
    [LOGIN_STEP_LOOKUP] = session_login_lookup,   [LOGIN_STEP_DELAY] = session_login_delay,
    [LOGIN_STEP_CACHE] = session_login_cache,     [LOGIN_STEP_VERIFY] = session_login_verify,
    [LOGIN_STEP_LIMIT] = session_login_limit,
    [LOGIN_STEP_BACKEND] = session_login_backend, [LOGIN_STEP_DONE] = session_login_done,
};
_Static_assert(sizeof(login_steps) / sizeof(login_steps[0]) == LOGIN_STEP_DONE + 1,
               "a function per login step");

void session_login_run(struct session *s)
{
    enum login_next next;
    do {
        next = login_steps[s->login_step](s);
    } while (next == LOGIN_GO && s->state == SESSION_LOGGING_IN);
}

/* --- the entry ------------------------------------------------------------------ */

void session_login_start(struct session *s, const char *tag, const char *authzid,
                         const char *user, size_t user_len, const char *password)
{
    if (tag != s->tag) {
        snprintf(s->tag, sizeof(s->tag), "%s", tag);
    }
    session_login_clear(s);
    s->step_t0_ns = uv_hrtime();
    if (s->login_t0_ns == 0) {
        s->login_t0_ns = s->step_t0_ns; /* else an OAuth token check began the login */
    }
    s->login_step = LOGIN_STEP_LOOKUP; /* refusals before the steps count there */
    char name[SCHEMA_MAX_LOGIN_LEN + 1];
    if (schema_normalize(name, user, user_len) != 0) {
        (void)session_name_set(&s->user, "");
        session_login_refuse(s, LOGIN_REFUSE_BAD_NAME, NULL, NULL);
        return;
    }
    const char *acting = name;
    char as[SCHEMA_MAX_LOGIN_LEN + 1];
    if (authzid != NULL && authzid[0] != '\0') {
        if (schema_normalize(as, authzid, strlen(authzid)) != 0) {
            (void)session_name_set(&s->user, "");
            session_login_refuse(s, LOGIN_REFUSE_BAD_NAME, NULL, NULL);
            return;
        }
        if (strcmp(as, name) != 0) {
            /* acting as another user: the session is that user's (routed,
               counted and audited as that user), its credentials are ours */
            if (session_name_set(&s->auth_user, name) != 0) {
                (void)session_name_set(&s->user, "");
                session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
                return;
            }
            acting = as;
        }
    }
    if (session_name_set(&s->user, acting) != 0) {
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        return;
    }
    s->password = strdup(password);
    if (s->password == NULL) {
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        return;
    }
    session_set_state(s, SESSION_LOGGING_IN);
    s->login_step = LOGIN_STEP_LOOKUP;
    conn_read_stop(s->client);
    session_login_run(s);
}

void session_login_clear(struct session *s)
{
    session_wipe(&s->password);
    session_wipe(&s->hash);
    free(s->backend_user);
    s->backend_user = NULL;
    s->login_flags = 0;
    s->login_delay_ms = 0;
}
