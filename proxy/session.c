#include "proxy/session.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include <openssl/mem.h>

#include "common/audit_tap.h"
#include "common/capa.h"
#include "common/imap_parser.h"
#include "common/imap_scan.h"
#include "common/json.h"
#include "common/log.h"
#include "common/sasl_plain.h"
#include "common/schema.h"
#include "proxy/audit.h"
#include "proxy/backend.h"
#include "proxy/conn.h"
#include "proxy/directory.h"
#include "proxy/pool.h"
#include "proxy/sesscache.h"
#include "proxy/verify.h"

#define SESSION_MAX_BAD_COMMANDS 10     /* BAD answers before BYE */
#define SESSION_MAX_INBUF_LEN 131072    /* bytes of pre-auth input held (two reads) */
#define SESSION_CLOSE_TIMEOUT_MS 5000   /* a graceful close may take this long */
#define SESSION_MAX_TAG_LEN 64
#define SESSION_MAX_ARGS 32
#define SESSION_MAX_DEPTH 4
#define SESSION_LOGIN_MAX_LEN 256       /* bytes of a login name we accept */

#define SESSION_CAPA_CLEAR "IMAP4rev1 ID LITERAL+ STARTTLS LOGINDISABLED"
#define SESSION_CAPA_TLS "IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN"

enum session_state {
    SESSION_TLS_ACCEPT, /* implicit TLS: handshake running, nothing sent yet */
    SESSION_PREAUTH,    /* greeting sent; commands answered here */
    SESSION_STARTTLS,   /* STARTTLS accepted; handshake running, input discarded */
    SESSION_LOGIN,      /* backend login running; client reads stopped */
    SESSION_RELAY,      /* logged in; bytes copied both ways */
    SESSION_CLOSING,    /* session_close called; waiting for handles */
};

static const char *const session_state_names[] = {
    "tls-accept", "preauth", "starttls", "login", "relay", "closing",
};
_Static_assert(sizeof(session_state_names) / sizeof(session_state_names[0]) == SESSION_CLOSING + 1,
               "a name per state");

#define SESSION_F_TLS          (1u << 0) /* client side is TLS now */
#define SESSION_F_STARTTLS     (1u << 1) /* listener is cleartext + STARTTLS */
#define SESSION_F_AUTH_CONT    (1u << 2) /* AUTHENTICATE waits for the client's line */
#define SESSION_F_BACKEND_BYE  (1u << 3) /* the backend sent "* BYE" (LOGOUT, shutdown) */
#define SESSION_F_CLIENT_PAUSE (1u << 5) /* client reads stopped by backpressure */
#define SESSION_F_BACK_PAUSE   (1u << 6) /* backend reads stopped by backpressure */
#define SESSION_F_FREED        (1u << 7) /* session_maybe_free ran the free */
#define SESSION_F_KICK         (1u << 8) /* kicked: BYE after the command in flight */
#define SESSION_F_WAITS_CLIENT (1u << 9) /* the backend's last word was a "+" */
#define SESSION_F_PROCESSING   (1u << 10) /* inside session_process: do not re-enter */
#define SESSION_F_AUDIT_FULL   (1u << 11) /* a record did not fit (policy close): end */
#define SESSION_F_CACHE_KEYED  (1u << 12) /* cache_key holds this login's session cache key */
#define SESSION_F_NO_PARK      (1u << 13) /* a command changed more than the mailbox state */
#define SESSION_F_CACHE_HIT    (1u << 14) /* backend taken from the cache; relay on the timer */
#define SESSION_F_CACHE_WAIT   (1u << 15) /* waits for a parked connection's reset */
#define SESSION_F_CACHE_MISSED (1u << 16) /* that wait failed; log in on the timer */
#define SESSION_F_WARM_LOGIN   (1u << 17) /* the login runs on a warm pool connection */

#define SESSION_KICK_QUIET_MS 50      /* a kicked session ends when the backend is this quiet */
#define SESSION_KICK_MAX_MS 10000     /* ... or this long after the kick, whatever is in flight */

#define SESSION_L_LOCAL    (1u << 0) /* imapmux verifies the password */
#define SESSION_L_UNKNOWN  (1u << 1) /* no such user: verify the dummy, then refuse */
#define SESSION_L_DISABLED (1u << 2) /* refuse with CONTACTADMIN once verified */
#define SESSION_L_BLOCKED  (1u << 3) /* brute-force block: refuse like a wrong password */

struct session {
    struct session_env *env;     /* borrowed; the worker outlives us */
    struct session *next, *prev; /* in env->sessions */
    struct config *cfg;          /* our own reference */
    const struct config_listener *listener; /* in cfg */
    char id[32];                 /* "w<worker>-<n>" for logs */
    enum session_state state;
    uint32_t flags;              /* SESSION_F_* */
    int pending;                 /* handles and work not yet closed/finished */

    struct conn *client;         /* owned; NULL once closed */
    struct conn *backend;        /* owned after login; NULL before and once closed */
    struct backend *login;       /* running backend login, or NULL */
    uv_timer_t timer;            /* one per session; re-armed per state */
    uint64_t last_activity;      /* loop time of the last client read (ms) */

    struct imap_parser *parser;  /* pre-auth only; freed at login */
    uint8_t *inbuf;              /* pre-auth input not yet parsed; NULL when empty */
    size_t inbuf_len;            /* bytes in inbuf */

    char tag[SESSION_MAX_TAG_LEN + 1];  /* tag of the LOGIN/AUTHENTICATE in flight */
    char user[SCHEMA_MAX_LOGIN_LEN + 1]; /* normalised login of the session ("" before) */
    const struct config_backend *route; /* chosen backend, in cfg */
    char host[256];              /* chosen host of route */
    uint16_t port;

    /* a login in flight (state SESSION_LOGIN) */
    char *password;              /* the client's; wiped as soon as it is used */
    char *authzid;               /* the client's SASL authorization identity, or NULL */
    char *hash;                  /* stored hash to verify, or NULL */
    char *login_as;              /* backend login (rename), or NULL */
    unsigned login_flags;        /* SESSION_L_* */
    unsigned auth_failures;
    unsigned bad_commands;

    char client_ip[64];
    uint16_t client_port;
    char local_ip[64];
    uint16_t local_port;
    uint64_t bytes_in, bytes_out;   /* relayed client->backend, backend->client */

    struct imap_scan client_scan;   /* line ends of the relayed streams */
    struct imap_scan backend_scan;
    uint64_t commands;              /* commands the client completed */
    uint64_t completions;           /* tagged responses of the backend */
    uint64_t last_backend_data;     /* loop time (ms) */
    uint64_t kick_at;               /* loop time of the kick */
    const char *kick_reason;        /* static text for the BYE */

    struct audit_tap *tap;          /* with an audit queue: the command records */
    uint64_t start_us;              /* monotonic, for the session's duration */
    const char *fail_reason;        /* why the login in flight failed (static) */
    uint64_t audit_commands;        /* command records written */

    uint8_t cache_key[SESSCACHE_KEY_LEN]; /* with SESSION_F_CACHE_KEYED */
    char *shown_capa;               /* capabilities the client got at login (cache on) */
    char *cached_capa;              /* with SESSION_F_CACHE_HIT: the list to show */
};

static void session_close(struct session *s, const char *reason);
static void session_bye(struct session *s, const char *code_and_text, const char *reason);
static void session_process(struct session *s);
static void session_on_timer(uv_timer_t *t);

/* session_log writes one line with the session's context appended first. */
static void session_log(struct session *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void session_log(struct session *s, int level, const char *fmt, ...)
{
    char prefix[1024];
    va_list ap;
    if (!log_enabled(level)) {
        return;
    }
    char backend[320] = "";
    if (s->route != NULL) {
        snprintf(backend, sizeof(backend), " backend=%s(%s:%u)", s->route->name, s->host,
                 (unsigned)s->port);
    }
    snprintf(prefix, sizeof(prefix), "session=%s client=%s:%u listener=%s:%u%s%s%s state=%s: ",
             s->id, s->client_ip, (unsigned)s->client_port, s->listener->address,
             (unsigned)s->listener->port, s->user[0] ? " user=" : "", s->user, backend,
             session_state_names[s->state]);
    va_start(ap, fmt);
    log_vmsg(level, prefix, fmt, ap);
    va_end(ap);
}

static void session_set_state(struct session *s, enum session_state st)
{
    if (log_enabled(LOG_DEBUG)) {
        session_log(s, LOG_DEBUG, "-> %s", session_state_names[st]);
    }
    s->state = st;
}

static void session_arm(struct session *s, uint64_t ms)
{
    uv_timer_start(&s->timer, session_on_timer, ms, 0);
}

/* --- audit records ---------------------------------------------------------- */

static uint64_t session_mono_us(void)
{
    return uv_hrtime() / 1000u;
}

/* session_audit_begin starts a record of type with the session's context. */
static void session_audit_begin(struct session *s, struct json *j, char *buf, size_t cap,
                                const char *type)
{
    char ts[32], addr[320];
    audit_time(ts, audit_now_us());
    json_begin(j, buf, cap);
    json_str(j, "time", ts);
    json_str(j, "instance", s->cfg->instance);
    json_str(j, "type", type);
    json_str(j, "session", s->id);
    json_str(j, "client", s->client_ip);
    json_u64(j, "client_port", s->client_port);
    snprintf(addr, sizeof(addr), strchr(s->listener->address, ':') ? "[%s]:%u" : "%s:%u",
             s->listener->address, (unsigned)s->listener->port);
    json_str(j, "listener", addr);
    if ((s->flags & SESSION_F_TLS) && s->client != NULL) {
        json_str(j, "tls", conn_tls_version(s->client));
        json_str(j, "cipher", conn_tls_cipher(s->client));
    }
    if (s->user[0] != '\0') {
        json_str(j, "user", s->user);
    }
    if (s->route != NULL) {
        json_str(j, "backend", s->route->name);
        snprintf(addr, sizeof(addr), strchr(s->host, ':') ? "[%s]:%u" : "%s:%u", s->host,
                 (unsigned)s->port);
        json_str(j, "backend_host", addr);
    }
}

static void session_audit_pause(struct session_env *env);

/* session_audit_push ends the record and queues it; a full queue pauses
 * the worker's clients (block) or marks the session for its end (close). */
static void session_audit_push(struct session *s, struct json *j)
{
    size_t len = json_end(j);
    switch (audit_push(s->env->audit, j->buf, len)) {
    case AUDIT_PUSHED:
    case AUDIT_DROPPED:
        break;
    case AUDIT_BLOCKED:
        if (!s->env->audit_paused) {
            session_audit_pause(s->env);
        }
        break;
    case AUDIT_CLOSE:
        s->flags |= SESSION_F_AUDIT_FULL;
        break;
    }
}

/* session_audit_full ends a session whose record found the queue full under
 * policy close; returns 1 when it did. */
static int session_audit_full(struct session *s)
{
    if (!(s->flags & SESSION_F_AUDIT_FULL) || s->state == SESSION_CLOSING) {
        return 0;
    }
    session_bye(s, "[UNAVAILABLE] Audit log unavailable, try again later", "audit queue full");
    return 1;
}

static void session_on_audit_cmd(void *ctx, const struct audit_cmd *c)
{
    struct session *s = ctx;
    char buf[AUDIT_RECORD_MAX];
    struct json j;
    session_audit_begin(s, &j, buf, sizeof(buf), "command");
    json_str(&j, "tag", c->tag);
    json_str(&j, "command", c->name);
    json_bool(&j, "uid", c->uid);
    json_fields(&j, c->fields);
    json_str(&j, "status", c->status[0] != '\0' ? c->status : "none");
    if (c->code[0] != '\0') {
        json_str(&j, "code", c->code);
    }
    json_u64(&j, "duration_us", c->end_us - c->start_us);
    json_u64(&j, "bytes_in", c->bytes_in);
    json_u64(&j, "bytes_out", c->bytes_out);
    s->audit_commands++;
    session_audit_push(s, &j);
}

/* session_audit_event writes a record of a session event; reason may be NULL. */
static void session_audit_event(struct session *s, const char *type, const char *result,
                                const char *reason)
{
    if (s->env->audit == NULL) {
        return;
    }
    char buf[AUDIT_RECORD_MAX];
    struct json j;
    session_audit_begin(s, &j, buf, sizeof(buf), type);
    if (result != NULL) {
        json_str(&j, "result", result);
    }
    if (reason != NULL) {
        json_str(&j, "reason", reason);
    }
    if (strcmp(type, "session_end") == 0) {
        json_u64(&j, "duration_us", session_mono_us() - s->start_us);
        json_u64(&j, "commands", s->audit_commands);
        json_u64(&j, "bytes_in", s->bytes_in);
        json_u64(&j, "bytes_out", s->bytes_out);
    }
    session_audit_push(s, &j);
}

/* session_tap_in / session_tap_out: what the client sent (and was taken)
 * and what it is sent.  0, or -1 when the session ended. */
static int session_tap_in(struct session *s, const uint8_t *data, size_t len)
{
    if (s->tap == NULL || len == 0) {
        return 0;
    }
    if (audit_tap_client(s->tap, data, len, session_mono_us()) != 0) {
        session_bye(s, "Too many commands in flight", "too many commands in flight");
        return -1;
    }
    return session_audit_full(s) ? -1 : 0;
}

static void session_tap_out(struct session *s, const uint8_t *data, size_t len)
{
    if (s->tap != NULL && len > 0) {
        audit_tap_server(s->tap, data, len, session_mono_us());
    }
}

/* --- reading the client ------------------------------------------------------ */

/* session_reads_client: the state in which the client is read. */
static int session_reads_client(const struct session *s)
{
    switch (s->state) {
    case SESSION_TLS_ACCEPT:
    case SESSION_PREAUTH:
    case SESSION_STARTTLS:
        return 1;
    case SESSION_RELAY:
        return !(s->flags & (SESSION_F_CLIENT_PAUSE | SESSION_F_KICK));
    default:
        return 0;
    }
}

/* session_read_client reads the client again unless the audit queue waits. */
static int session_read_client(struct session *s)
{
    if (s->client == NULL || s->env->audit_paused) {
        return 0;
    }
    return conn_read_start(s->client);
}

static void session_audit_pause(struct session_env *env)
{
    env->audit_paused = 1;
    log_msg(LOG_WARNING, "worker %u: audit queue full: clients wait until it drains",
            env->worker_id);
    for (struct session *s = env->sessions; s != NULL; s = s->next) {
        if (s->client != NULL && s->state != SESSION_CLOSING) {
            conn_read_stop(s->client);
        }
    }
}

void session_audit_resume(struct session_env *env)
{
    if (!env->audit_paused) {
        return;
    }
    env->audit_paused = 0;
    log_msg(LOG_NOTICE, "worker %u: audit queue drained: reading clients again",
            env->worker_id);
    for (struct session *s = env->sessions; s != NULL; s = s->next) {
        if (s->client != NULL && session_reads_client(s)) {
            conn_read_start(s->client);
        }
    }
}

/* --- lifetime -------------------------------------------------------------- */

static void session_wipe(char **p)
{
    if (*p != NULL) {
        OPENSSL_cleanse(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

/* session_login_clear forgets what a login in flight held. */
static void session_login_clear(struct session *s)
{
    session_wipe(&s->password);
    session_wipe(&s->authzid);
    session_wipe(&s->hash);
    free(s->login_as);
    s->login_as = NULL;
    s->login_flags = 0;
}

static void session_maybe_free(struct session *s)
{
    if (s->state != SESSION_CLOSING || s->pending > 0 || (s->flags & SESSION_F_FREED)) {
        return;
    }
    s->flags |= SESSION_F_FREED;
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        s->env->sessions = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    }
    s->env->num_sessions--;
    session_login_clear(s);
    free(s->shown_capa);
    free(s->cached_capa);
    audit_tap_free(s->tap);
    imap_parser_free(s->parser);
    if (s->inbuf != NULL) {
        OPENSSL_cleanse(s->inbuf, s->inbuf_len);
        free(s->inbuf);
    }
    config_unref(&s->cfg);
    free(s);
}

static void session_on_timer_close(uv_handle_t *h)
{
    struct session *s = h->data;
    s->pending--;
    session_maybe_free(s);
}

static void session_on_client_close(void *ctx)
{
    struct session *s = ctx;
    s->client = NULL;
    s->pending--;
    if (s->state != SESSION_CLOSING) {
        session_close(s, NULL);
    }
    if (s->client == NULL && s->backend == NULL && s->login == NULL &&
        !uv_is_closing((uv_handle_t *)&s->timer)) {
        uv_close((uv_handle_t *)&s->timer, session_on_timer_close);
    }
    session_maybe_free(s);
}

static void session_on_backend_close(void *ctx)
{
    struct session *s = ctx;
    s->backend = NULL;
    s->pending--;
    if (s->client == NULL && !uv_is_closing((uv_handle_t *)&s->timer)) {
        uv_close((uv_handle_t *)&s->timer, session_on_timer_close);
    }
    session_maybe_free(s);
}

/* session_close ends the session (idempotent): the client gets what was
 * queued (a BYE, say) within SESSION_CLOSE_TIMEOUT_MS, the backend is cut. */
static void session_close(struct session *s, const char *reason)
{
    if (s->state == SESSION_CLOSING) {
        return;
    }
    if (reason != NULL) {
        session_log(s, LOG_INFO,
                    "closed: %s (in %" PRIu64 " bytes, out %" PRIu64 " bytes)", reason, s->bytes_in,
                    s->bytes_out);
    }
    if (s->tap != NULL) {
        audit_tap_finish(s->tap, session_mono_us()); /* unanswered commands */
        session_audit_event(s, "session_end", NULL, reason != NULL ? reason : "closed");
    }
    session_set_state(s, SESSION_CLOSING);
    s->flags &= ~SESSION_F_AUTH_CONT;
    if (s->flags & SESSION_F_CACHE_WAIT) {
        sesscache_cancel(s->env->cache, s);
        s->flags &= ~SESSION_F_CACHE_WAIT;
    }
    if (s->login != NULL) {
        backend_free(s->login);
        s->login = NULL;
    }
    if (s->backend != NULL) {
        conn_close(s->backend, 0);
    }
    if (s->client != NULL) {
        conn_close(s->client, 1);
        session_arm(s, SESSION_CLOSE_TIMEOUT_MS);
    } else if (!uv_is_closing((uv_handle_t *)&s->timer)) {
        uv_close((uv_handle_t *)&s->timer, session_on_timer_close);
    }
}

/* --- writing to the client ------------------------------------------------- */

static void session_send(struct session *s, const char *text)
{
    if (s->client != NULL) {
        size_t n = strlen(text);
        session_tap_out(s, (const uint8_t *)text, n);
        (void)conn_write(s->client, text, n); /* failures come as on_eof */
    }
}

static void session_sendf(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void session_sendf(struct session *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n >= sizeof(line)) {
        n = sizeof(line) - 1; /* our own lines are short; a cut one still ends below */
        line[n - 2] = '\r';
        line[n - 1] = '\n';
    }
    if (s->client != NULL) {
        session_tap_out(s, (const uint8_t *)line, (size_t)n);
        (void)conn_write(s->client, line, (size_t)n);
    }
}

static void session_bye(struct session *s, const char *code_and_text, const char *reason)
{
    session_sendf(s, "* BYE %s\r\n", code_and_text);
    session_close(s, reason);
}

static const char *session_capa(const struct session *s)
{
    return (s->flags & SESSION_F_TLS) ? SESSION_CAPA_TLS : SESSION_CAPA_CLEAR;
}

static void session_greet(struct session *s)
{
    session_set_state(s, SESSION_PREAUTH);
    session_sendf(s, "* OK [CAPABILITY %s] imapmux ready\r\n", session_capa(s));
}

/* --- pre-auth commands ---------------------------------------------------- */

static int session_arg_is_string(const struct imap_arg *a)
{
    return a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_QUOTED || a->type == IMAP_ARG_LITERAL;
}

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
static int session_cache_hit(struct session *s);

static void session_login_check(struct session *s);

static void session_login_verify(struct session *s)
{
    if (session_cache_hit(s)) {
        return;
    }
    session_login_check(s);
}

/* session_login_check: the login without the session cache. */
static void session_login_check(struct session *s)
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
static void session_start_login(struct session *s, const char *tag, const char *authzid,
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

static void session_cmd_login(struct session *s, const char *tag, const struct imap_arg *args,
                              size_t num_args)
{
    if (!(s->flags & SESSION_F_TLS)) {
        session_sendf(s, "%s NO [PRIVACYREQUIRED] Use STARTTLS first\r\n", tag);
        return;
    }
    if (num_args != 2 || !session_arg_is_string(&args[0]) || !session_arg_is_string(&args[1])) {
        s->bad_commands++;
        session_sendf(s, "%s BAD LOGIN expects a user name and a password\r\n", tag);
        return;
    }
    if (memchr(args[1].data, '\0', args[1].len) != NULL) {
        s->auth_failures++;
        session_audit_event(s, "login", "failed", "NUL in the password");
        session_sendf(s, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", tag);
        return;
    }
    session_start_login(s, tag, NULL, args[0].data, args[0].len, args[1].data);
}

/* session_auth_plain handles the base64 PLAIN message (initial response or
 * continuation line) of an AUTHENTICATE in flight. */
static void session_auth_plain(struct session *s, const char *b64, size_t len)
{
    struct sasl_plain sp;
    int r;

    if (len == 1 && b64[0] == '=') {
        len = 0; /* RFC 4959: "=" is an empty initial response */
    }
    r = sasl_plain_decode(&sp, b64, len);
    if (r != 0) {
        s->bad_commands++;
        session_sendf(s, "%s BAD Invalid SASL PLAIN message: %s\r\n", s->tag, sasl_plain_strerror(r));
        return;
    }
    session_start_login(s, s->tag, sp.authzid, sp.authcid, strlen(sp.authcid), sp.passwd);
    sasl_plain_cleanup(&sp);
}

static void session_cmd_authenticate(struct session *s, const char *tag,
                                     const struct imap_arg *args, size_t num_args)
{
    if (!(s->flags & SESSION_F_TLS)) {
        session_sendf(s, "%s NO [PRIVACYREQUIRED] Use STARTTLS first\r\n", tag);
        return;
    }
    if (num_args < 1 || num_args > 2 || args[0].type != IMAP_ARG_ATOM ||
        (num_args == 2 && args[1].type != IMAP_ARG_ATOM)) {
        s->bad_commands++;
        session_sendf(s, "%s BAD AUTHENTICATE expects a mechanism and an optional response\r\n",
                      tag);
        return;
    }
    if (strcasecmp(args[0].data, "PLAIN") != 0) {
        session_sendf(s, "%s NO [CANNOT] Unsupported authentication mechanism\r\n", tag);
        return;
    }
    snprintf(s->tag, sizeof(s->tag), "%s", tag);
    if (num_args == 2) {
        session_auth_plain(s, args[1].data, args[1].len);
        return;
    }
    s->flags |= SESSION_F_AUTH_CONT;
    imap_parser_set_line_mode(s->parser);
    session_send(s, "+ \r\n");
}

static void session_cmd_id(struct session *s, const char *tag, const struct imap_arg *args,
                           size_t num_args)
{
    if (num_args == 0 || !((num_args == 1 && imap_arg_is_nil(&args[0])) ||
                           (args[0].type == IMAP_ARG_LIST_BEGIN &&
                            args[num_args - 1].type == IMAP_ARG_LIST_END))) {
        s->bad_commands++;
        session_sendf(s, "%s BAD ID expects NIL or a parenthesized list\r\n", tag);
        return;
    }
    session_sendf(s, "* ID (\"name\" \"imapmux\" \"version\" \"%s\")\r\n%s OK ID completed\r\n",
                  IMAPMUX_VERSION, tag);
}

static void session_on_client_handshake(void *ctx, int status);

static void session_cmd_starttls(struct session *s, const char *tag, size_t num_args)
{
    if (num_args != 0) {
        s->bad_commands++;
        session_sendf(s, "%s BAD STARTTLS takes no arguments\r\n", tag);
        return;
    }
    if (!(s->flags & SESSION_F_STARTTLS) || (s->flags & SESSION_F_TLS)) {
        session_sendf(s, "%s BAD TLS is already active\r\n", tag);
        return;
    }
    session_sendf(s, "%s OK Begin TLS negotiation now\r\n", tag);
    /* Whatever the client sent after STARTTLS in cleartext is dropped, never
     * run after the handshake (command injection, RFC 9051 section 11.1). */
    if (s->inbuf != NULL) {
        OPENSSL_cleanse(s->inbuf, s->inbuf_len);
        free(s->inbuf);
        s->inbuf = NULL;
        s->inbuf_len = 0;
    }
    session_set_state(s, SESSION_STARTTLS);
    if (conn_start_tls(s->client, s->env->server_ctx, 1, NULL) != 0) {
        session_close(s, "out of memory");
    }
}

static void session_command(struct session *s)
{
    size_t num_args = 0;
    const struct imap_arg *args = imap_parser_get_args(s->parser, &num_args);
    const char *tag = imap_parser_get_tag(s->parser);
    const char *name = imap_parser_get_name(s->parser);

    if (strcasecmp(name, "CAPABILITY") == 0 && num_args == 0) {
        session_sendf(s, "* CAPABILITY %s\r\n%s OK CAPABILITY completed\r\n", session_capa(s), tag);
    } else if (strcasecmp(name, "NOOP") == 0 && num_args == 0) {
        session_sendf(s, "%s OK NOOP completed\r\n", tag);
    } else if (strcasecmp(name, "LOGOUT") == 0 && num_args == 0) {
        session_sendf(s, "* BYE Logging out\r\n%s OK LOGOUT completed\r\n", tag);
        session_close(s, "logout before login");
    } else if (strcasecmp(name, "ID") == 0) {
        session_cmd_id(s, tag, args, num_args);
    } else if (strcasecmp(name, "STARTTLS") == 0) {
        session_cmd_starttls(s, tag, num_args);
    } else if (strcasecmp(name, "LOGIN") == 0) {
        session_cmd_login(s, tag, args, num_args);
    } else if (strcasecmp(name, "AUTHENTICATE") == 0) {
        session_cmd_authenticate(s, tag, args, num_args);
    } else {
        s->bad_commands++;
        session_sendf(s, "%s BAD Command unknown or not valid before login\r\n", tag);
    }
    /* Credentials were copied where needed; wipe the parser's copy. */
    for (size_t i = 0; i < num_args; i++) {
        OPENSSL_cleanse((void *)args[i].data, args[i].len);
    }
}

/* session_process runs pre-auth commands from inbuf while the session is in
 * a state that takes commands; stops when input runs out or a step waits. */
static void session_process(struct session *s)
{
    size_t off = 0;

    s->flags |= SESSION_F_PROCESSING;
    while (s->state == SESSION_PREAUTH && off < s->inbuf_len) {
        size_t used = 0;
        enum imap_parse_result r =
            imap_parser_feed(s->parser, &used, s->inbuf + off, s->inbuf_len - off);
        if (session_tap_in(s, s->inbuf + off, used) != 0) {
            off += used;
            break;
        }
        off += used;
        switch (r) {
        case IMAP_PARSE_MORE:
            break;
        case IMAP_PARSE_LITERAL_WAIT:
            session_send(s, "+ Ready for literal data\r\n");
            break;
        case IMAP_PARSE_COMMAND:
            session_command(s);
            if (s->parser != NULL) {
                imap_parser_reset(s->parser);
            }
            break;
        case IMAP_PARSE_LINE: {
            size_t n = 0;
            const struct imap_arg *a = imap_parser_get_args(s->parser, &n);
            s->flags &= ~SESSION_F_AUTH_CONT;
            if (n == 1 && a[0].len == 1 && a[0].data[0] == '*') {
                session_sendf(s, "%s BAD Authentication cancelled\r\n", s->tag);
            } else if (n == 1) {
                session_auth_plain(s, a[0].data, a[0].len);
                OPENSSL_cleanse((void *)a[0].data, a[0].len);
            }
            imap_parser_reset(s->parser);
            break;
        }
        case IMAP_PARSE_ERROR: {
            const char *tag = imap_parser_get_tag(s->parser);
            const char *why = imap_parser_get_error(s->parser);
            if (s->flags & SESSION_F_AUTH_CONT) {
                s->flags &= ~SESSION_F_AUTH_CONT;
                tag = s->tag;
            }
            s->bad_commands++;
            session_sendf(s, "%s BAD %s\r\n", tag != NULL ? tag : "*",
                          why != NULL ? why : "Invalid command");
            session_log(s, LOG_INFO, "bad command: %s", why != NULL ? why : "invalid");
            imap_parser_reset(s->parser);
            break;
        }
        case IMAP_PARSE_FATAL: {
            const char *why = imap_parser_get_error(s->parser);
            session_sendf(s, "* BYE %s\r\n", why != NULL ? why : "Protocol error");
            session_close(s, why != NULL ? why : "protocol error");
            break;
        }
        }
        if (s->state == SESSION_PREAUTH && s->bad_commands >= SESSION_MAX_BAD_COMMANDS) {
            session_bye(s, "Too many invalid commands", "too many invalid commands");
        } else if (s->state == SESSION_PREAUTH && s->auth_failures >= s->cfg->max_auth_failures) {
            session_bye(s, "Too many failed logins", "too many failed logins");
        }
    }
    s->flags &= ~SESSION_F_PROCESSING;
    if (s->inbuf == NULL) {
        return; /* STARTTLS dropped the buffer */
    }
    /* keep what was not parsed (pipelined input waiting for a login); wipe the rest */
    OPENSSL_cleanse(s->inbuf, off);
    if (off >= s->inbuf_len || s->state == SESSION_CLOSING) {
        OPENSSL_cleanse(s->inbuf, s->inbuf_len);
        free(s->inbuf);
        s->inbuf = NULL;
        s->inbuf_len = 0;
    } else if (off > 0) {
        memmove(s->inbuf, s->inbuf + off, s->inbuf_len - off);
        s->inbuf_len -= off;
        OPENSSL_cleanse(s->inbuf + s->inbuf_len, off);
    }
}

/* --- relay ------------------------------------------------------------------ */

static int session_cmd_parkable(const uint8_t *head, size_t len);

/* The relayed streams are scanned for line ends (literals skipped by length)
 * to know when a kicked session may be ended: after the command in flight.
 * Client lines that end a command are counted, and so are the backend's
 * tagged responses; "DONE" ends IDLE, not a command. */
static void session_on_client_line(void *ctx, const uint8_t *head, size_t len)
{
    struct session *s = ctx;
    if (len == 4 && strncasecmp((const char *)head, "DONE", 4) == 0) {
        return;
    }
    s->commands++;
    if (s->env->cache != NULL && !session_cmd_parkable(head, len)) {
        s->flags |= SESSION_F_NO_PARK;
    }
}

static void session_on_backend_line(void *ctx, const uint8_t *head, size_t len)
{
    struct session *s = ctx;
    if (len >= 5 && memcmp(head, "* BYE", 5) == 0) {
        s->flags |= SESSION_F_BACKEND_BYE;
    } else if (len >= 1 && head[0] == '+') {
        s->flags |= SESSION_F_WAITS_CLIENT; /* IDLE, or a literal wanted */
    } else if (len >= 1 && head[0] != '*') {
        s->completions++;
        s->flags &= ~SESSION_F_WAITS_CLIENT;
    }
}

static void session_kick_check(struct session *s);

static void session_relay(struct session *s, struct conn *dst, struct conn *src,
                          const uint8_t *data, size_t len, uint32_t pause_flag)
{
    if (conn_write(dst, data, len) != 0) {
        return; /* dst reports on_eof */
    }
    if (conn_write_queue_len(dst) > s->cfg->relay_buffer_len && !(s->flags & pause_flag)) {
        s->flags |= pause_flag;
        conn_read_stop(src);
        conn_want_drain(dst, s->cfg->relay_buffer_len / 4);
    }
}

static void session_on_backend_read(void *ctx, const uint8_t *data, size_t len)
{
    struct session *s = ctx;
    if (s->state != SESSION_RELAY) {
        return;
    }
    s->bytes_out += len;
    s->last_backend_data = uv_now(s->env->loop);
    imap_scan_feed(&s->backend_scan, data, len, session_on_backend_line, s);
    session_tap_out(s, data, len);
    if (session_audit_full(s)) {
        return;
    }
    session_relay(s, s->client, s->backend, data, len, SESSION_F_BACK_PAUSE);
}

static void session_on_backend_eof(void *ctx, int status)
{
    struct session *s = ctx;
    if (s->state != SESSION_RELAY) {
        return;
    }
    if (s->flags & SESSION_F_BACKEND_BYE) {
        session_close(s, "backend closed after BYE");
        return;
    }
    session_log(s, LOG_WARNING, "backend connection lost: %s",
                status == UV_EOF ? "closed by the backend" : uv_strerror(status));
    session_bye(s, "[UNAVAILABLE] Backend connection lost", "backend connection lost");
}

/* session_on_backend_drain: the backend took what we queued; read the client again */
static void session_on_backend_drain(void *ctx)
{
    struct session *s = ctx;
    if (s->state == SESSION_RELAY && (s->flags & SESSION_F_CLIENT_PAUSE)) {
        s->flags &= ~SESSION_F_CLIENT_PAUSE;
        if (!(s->flags & SESSION_F_KICK)) {
            session_read_client(s);
        }
    }
}

static void session_on_client_drain(void *ctx)
{
    struct session *s = ctx;
    if (s->state == SESSION_RELAY && (s->flags & SESSION_F_BACK_PAUSE)) {
        s->flags &= ~SESSION_F_BACK_PAUSE;
        conn_read_start(s->backend);
    }
}

static void session_on_unused_connect(void *ctx, int status)
{
    (void)ctx;
    (void)status;
}

static void session_on_unused_handshake(void *ctx, int status)
{
    (void)ctx;
    (void)status;
}

static const struct conn_ops session_backend_ops = {
    .on_connect = session_on_unused_connect,
    .on_handshake = session_on_unused_handshake,
    .on_read = session_on_backend_read,
    .on_eof = session_on_backend_eof,
    .on_drain = session_on_backend_drain,
    .on_close = session_on_backend_close,
};

static void session_enter_relay(struct session *s, struct conn *conn, char *filtered,
                                const uint8_t *rest, size_t rest_len, int cached);

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

/* session_enter_relay: the login succeeded on conn (taken over); filtered
 * is the capability list to show the client (malloc'd and taken; NULL after
 * an OOM); rest is what the backend sent after its tagged OK. */
static void session_enter_relay(struct session *s, struct conn *conn, char *filtered,
                                const uint8_t *rest, size_t rest_len, int cached)
{
    if (s->backend != conn) {
        s->backend = conn;
        conn_set_ops(s->backend, &session_backend_ops, s);
        s->pending++;
    }
    if (filtered == NULL) {
        session_bye(s, "[UNAVAILABLE] Out of memory", "out of memory");
        return;
    }
    session_set_state(s, SESSION_RELAY);
    session_login_clear(s);
    dir_record_success(s->env->dir, s->user);
    s->env->stats.logins_ok++;
    imap_scan_init(&s->client_scan);
    imap_scan_init(&s->backend_scan);
    s->last_backend_data = uv_now(s->env->loop);
    session_log(s, LOG_INFO, "login ok (%s%s)", s->client != NULL && conn_is_tls(s->client)
                                                    ? conn_tls_version(s->client) : "cleartext",
                cached ? ", session cache" : "");
    session_audit_event(s, "login", "ok", cached ? "session cache" : NULL);
    /* the tagged OK and anything the backend already sent go out together */
    session_sendf(s, "%s OK [CAPABILITY %s] Logged in\r\n", s->tag, filtered);
    if (s->flags & SESSION_F_CACHE_KEYED) {
        s->shown_capa = filtered; /* the same list for the next login on this conn */
    } else {
        free(filtered);
    }
    if (rest_len > 0) {
        session_on_backend_read(s, rest, rest_len);
    }

    /* pre-auth state is gone for good */
    imap_parser_free(s->parser);
    s->parser = NULL;
    if (s->inbuf != NULL) {
        /* commands the client pipelined after its login go to the backend */
        s->bytes_in += s->inbuf_len;
        imap_scan_feed(&s->client_scan, s->inbuf, s->inbuf_len, session_on_client_line, s);
        int gone = session_tap_in(s, s->inbuf, s->inbuf_len);
        if (!gone) {
            (void)conn_write(s->backend, s->inbuf, s->inbuf_len);
        }
        free(s->inbuf);
        s->inbuf = NULL;
        s->inbuf_len = 0;
        if (gone) {
            return;
        }
    }
    s->last_activity = uv_now(s->env->loop);
    session_arm(s, s->cfg->idle_timeout_ms);
    conn_read_start(s->backend);
    if (s->state == SESSION_RELAY && (s->flags & SESSION_F_KICK)) {
        /* kicked while logging in */
        s->kick_at = uv_now(s->env->loop);
        session_kick_check(s);
    } else if (s->state == SESSION_RELAY) {
        session_read_client(s);
    }
}

/* --- session cache ------------------------------------------------------------ */

/* session_cache_adopt makes a connection from the cache the session's
 * backend; the relay starts from the timer, on the next turn (the caller may
 * be the LOGIN command's parser, or the cache). */
static void session_cache_adopt(struct session *s, struct conn *conn, char *capa)
{
    s->backend = conn;
    conn_set_ops(conn, &session_backend_ops, s);
    s->pending++;
    s->cached_capa = capa;
    s->flags |= SESSION_F_CACHE_HIT;
    session_arm(s, 0);
}

/* session_on_cache_ready: a connection this login waited for is reset (conn)
 * or lost (NULL).  Called from the cache's callbacks: note it, go on from
 * the timer. */
static void session_on_cache_ready(void *ctx, struct conn *conn, char *capa)
{
    struct session *s = ctx;
    s->flags &= ~SESSION_F_CACHE_WAIT;
    if (conn != NULL) {
        session_log(s, LOG_DEBUG, "session cache hit after the reset");
        session_cache_adopt(s, conn, capa);
        return;
    }
    s->flags |= SESSION_F_CACHE_MISSED;
    session_arm(s, 0);
}

/* session_cache_hit keys a verified-or-to-be-verified login for the session
 * cache and, when a connection is parked for it, logs in on that one: no
 * password check and no backend login.  A connection parked a moment ago
 * whose reset is not answered yet is waited for (a client that logs out and
 * straight in again).  Returns 1 when the cache took the login over.
 * Unknown, blocked and disabled users and logins acting as another user are
 * never cached. */
static int session_cache_hit(struct session *s)
{
    char *capa = NULL;
    struct conn *conn = NULL;
    if (s->env->cache == NULL ||
        (s->login_flags & (SESSION_L_UNKNOWN | SESSION_L_BLOCKED | SESSION_L_DISABLED)) ||
        (s->authzid != NULL && strcasecmp(s->authzid, s->user) != 0)) {
        return 0;
    }
    sesscache_key(s->cache_key, s->env->cache, s->user, s->authzid, s->password, s->hash,
                  s->route->name, s->host, s->port);
    s->flags |= SESSION_F_CACHE_KEYED;
    switch (sesscache_take(s->env->cache, s->user, s->cache_key, &conn, &capa,
                           session_on_cache_ready, s)) {
    case SESSCACHE_MISS:
        return 0;
    case SESSCACHE_WAIT:
        session_log(s, LOG_DEBUG, "session cache: waiting for a parked connection's reset");
        s->flags |= SESSION_F_CACHE_WAIT;
        return 1;
    case SESSCACHE_HIT:
        break;
    }
    session_log(s, LOG_DEBUG, "session cache hit");
    session_cache_adopt(s, conn, capa);
    return 1;
}

/* session_cmd_parkable tells whether a relayed command leaves nothing but the
 * mailbox selection behind on the backend connection (which UNSELECT resets).
 * ENABLE, COMPRESS, NOTIFY and the like change the connection for good, and
 * so may vendor commands: a session that used one is not parked. */
static int session_cmd_parkable(const uint8_t *head, size_t len)
{
    static const char *const sticky[] = {
        "ENABLE", "COMPRESS", "NOTIFY", "LANGUAGE", "UNAUTHENTICATE", "CONTEXT", "STARTTLS",
    };
    const uint8_t *sp = memchr(head, ' ', len);
    if (sp == NULL) {
        return len < IMAP_SCAN_HEAD_LEN; /* a lone tag: BAD, harmless */
    }
    const uint8_t *name = sp + 1;
    size_t n = len - (size_t)(name - head);
    const uint8_t *end = memchr(name, ' ', n);
    if (end == NULL) {
        if (len >= IMAP_SCAN_HEAD_LEN) {
            return 0; /* the name may be cut: do not guess */
        }
    } else {
        n = (size_t)(end - name);
    }
    if (n > 0 && (name[0] == 'X' || name[0] == 'x')) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(sticky) / sizeof(sticky[0]); i++) {
        if (strlen(sticky[i]) == n && strncasecmp((const char *)name, sticky[i], n) == 0) {
            return 0;
        }
    }
    return 1;
}

/* session_try_park: the client sent exactly "<tag> LOGOUT" with nothing in
 * flight.  With the session cache on and a parkable session, the client is
 * answered here and the backend connection, still logged in, goes to the
 * cache instead of being logged out.  Returns 1 when it did (the session
 * then ends), 0 to relay the LOGOUT as usual. */
static int session_try_park(struct session *s, const uint8_t *data, size_t len)
{
    if (s->env->cache == NULL || !(s->flags & SESSION_F_CACHE_KEYED) || s->shown_capa == NULL ||
        (s->flags & (SESSION_F_NO_PARK | SESSION_F_KICK | SESSION_F_BACKEND_BYE |
                     SESSION_F_WAITS_CLIENT | SESSION_F_CLIENT_PAUSE | SESSION_F_BACK_PAUSE |
                     SESSION_F_AUDIT_FULL)) ||
        s->commands != s->completions || !imap_scan_at_line_start(&s->client_scan) ||
        len < 9 || len > SESSION_MAX_TAG_LEN + 9 || data[len - 2] != '\r' ||
        data[len - 1] != '\n' || strncasecmp((const char *)data + len - 9, " LOGOUT", 7) != 0 ||
        conn_write_queue_len(s->backend) > 0 ||
        !capa_has(s->shown_capa, strlen(s->shown_capa), "UNSELECT")) {
        return 0;
    }
    char tag[SESSION_MAX_TAG_LEN + 1];
    size_t tag_len = len - 9;
    for (size_t i = 0; i < tag_len; i++) {
        uint8_t ch = data[i];
        if (ch <= ' ' || ch >= 0x7f || ch == '(' || ch == ')' || ch == '{' || ch == '%' ||
            ch == '*' || ch == '"' || ch == '\\' || ch == '+') {
            return 0;
        }
    }
    if (tag_len == 0) {
        return 0;
    }
    memcpy(tag, data, tag_len);
    tag[tag_len] = '\0';
    if (sesscache_park(s->env->cache, s->user, s->cache_key, s->backend, s->shown_capa) != 0) {
        return 0;
    }
    /* the backend conn is the cache's now */
    s->backend = NULL;
    s->pending--;
    s->bytes_in += len;
    s->commands++;
    (void)session_tap_in(s, data, len);
    session_sendf(s, "* BYE Logging out\r\n%s OK Logout completed.\r\n", tag);
    session_close(s, "logged out (backend connection parked)");
    return 1;
}

/* --- client callbacks ------------------------------------------------------- */

static void session_on_client_read(void *ctx, const uint8_t *data, size_t len)
{
    struct session *s = ctx;

    switch (s->state) {
    case SESSION_RELAY:
        if (s->env->cache != NULL && session_try_park(s, data, len)) {
            return;
        }
        s->bytes_in += len;
        s->last_activity = uv_now(s->env->loop);
        imap_scan_feed(&s->client_scan, data, len, session_on_client_line, s);
        if (session_tap_in(s, data, len) != 0) {
            return;
        }
        session_relay(s, s->backend, s->client, data, len, SESSION_F_CLIENT_PAUSE);
        return;
    case SESSION_PREAUTH:
        break;
    default:
        return; /* closing, or input we must not act on */
    }
    if (s->inbuf_len + len > SESSION_MAX_INBUF_LEN) {
        /* cannot happen while reads stop during a login; a guard all the same */
        session_bye(s, "Too much input", "input buffer full");
        return;
    }
    uint8_t *nb = realloc(s->inbuf, s->inbuf_len + len);
    if (nb == NULL) {
        session_bye(s, "[UNAVAILABLE] Out of memory", "out of memory");
        return;
    }
    s->inbuf = nb;
    memcpy(s->inbuf + s->inbuf_len, data, len);
    s->inbuf_len += len;
    session_process(s);
}

static void session_on_client_handshake(void *ctx, int status)
{
    struct session *s = ctx;
    if (status != 0) {
        session_log(s, LOG_INFO, "TLS handshake failed: %s", conn_tls_error(s->client));
        session_close(s, NULL);
        return;
    }
    s->flags |= SESSION_F_TLS;
    if (log_enabled(LOG_DEBUG)) {
        session_log(s, LOG_DEBUG, "TLS established: %s %s", conn_tls_version(s->client),
                    conn_tls_cipher(s->client));
    }
    if (s->state == SESSION_TLS_ACCEPT) {
        session_greet(s);
    } else if (s->state == SESSION_STARTTLS) {
        session_set_state(s, SESSION_PREAUTH);
    }
}

static void session_on_client_eof(void *ctx, int status)
{
    struct session *s = ctx;
    if (s->state == SESSION_TLS_ACCEPT && status == -1) {
        session_log(s, LOG_INFO, "TLS handshake failed: %s", conn_tls_error(s->client));
        session_close(s, NULL);
        return;
    }
    if (status == UV_EOF) {
        session_close(s, "client closed the connection");
    } else if (status == -1) {
        session_log(s, LOG_INFO, "client TLS error: %s", conn_tls_error(s->client));
        session_close(s, "client TLS error");
    } else {
        session_close(s, uv_strerror(status));
    }
}

static void session_on_client_drain(void *ctx);

static const struct conn_ops session_client_ops = {
    .on_connect = session_on_unused_connect,
    .on_handshake = session_on_client_handshake,
    .on_read = session_on_client_read,
    .on_eof = session_on_client_eof,
    .on_drain = session_on_client_drain,
    .on_close = session_on_client_close,
};

static void session_on_timer(uv_timer_t *t)
{
    struct session *s = t->data;
    switch (s->state) {
    case SESSION_CLOSING:
        /* the client did not take our last words in time: cut */
        if (s->client != NULL) {
            conn_close(s->client, 0);
        }
        return;
    case SESSION_RELAY: {
        if (s->flags & SESSION_F_KICK) {
            session_kick_check(s);
            return;
        }
        uint64_t idle = uv_now(s->env->loop) - s->last_activity;
        if (idle < s->cfg->idle_timeout_ms) {
            session_arm(s, s->cfg->idle_timeout_ms - idle);
            return;
        }
        session_bye(s, "Autologout; idle for too long", "idle timeout");
        return;
    }
    case SESSION_TLS_ACCEPT:
    case SESSION_STARTTLS:
        session_close(s, "pre-auth timeout during TLS handshake");
        return;
    case SESSION_LOGIN:
        if (s->flags & SESSION_F_CACHE_HIT) {
            char *capa = s->cached_capa;
            s->cached_capa = NULL;
            s->flags &= ~SESSION_F_CACHE_HIT;
            session_enter_relay(s, s->backend, capa, NULL, 0, 1);
            return;
        }
        if (s->flags & SESSION_F_CACHE_MISSED) {
            s->flags &= ~SESSION_F_CACHE_MISSED;
            session_arm(s, s->cfg->preauth_timeout_ms);
            session_login_check(s);
            return;
        }
        session_bye(s, "Pre-authentication timeout", "pre-auth timeout");
        return;
    default:
        session_bye(s, "Pre-authentication timeout", "pre-auth timeout");
        return;
    }
}

int session_accept(struct session_env *env, uv_stream_t *server,
                   const struct config_listener *listener)
{
    struct session *s = calloc(1, sizeof(*s));
    struct imap_parser_limits lim;
    int r;

    if (s == NULL) {
        return UV_ENOMEM;
    }
    s->env = env;
    s->cfg = config_ref(env->cfg);
    s->listener = listener;
    snprintf(s->id, sizeof(s->id), "w%u-%" PRIu64, env->worker_id, ++env->next_id);
    s->client = conn_new(env->loop, &session_client_ops, s);
    if (s->client == NULL) {
        config_unref(&s->cfg);
        free(s);
        return UV_ENOMEM;
    }
    s->pending = 2; /* client conn, timer */
    uv_timer_init(env->loop, &s->timer);
    s->timer.data = s;
    s->next = env->sessions;
    if (env->sessions != NULL) {
        env->sessions->prev = s;
    }
    env->sessions = s;
    env->num_sessions++;
    s->state = SESSION_TLS_ACCEPT;

    r = conn_accept(s->client, server);
    if (r != 0) {
        session_close(s, NULL);
        return r;
    }
    conn_addr(s->client, 1, s->client_ip, sizeof(s->client_ip), &s->client_port);
    conn_addr(s->client, 0, s->local_ip, sizeof(s->local_ip), &s->local_port);
    s->start_us = session_mono_us();
    if (env->audit != NULL) {
        const struct config_audit *ac = &s->cfg->audit;
        const struct audit_tap_opts topts = {
            .seqset_max = ac->seqset_max,
            .search_values = ac->search_values,
            .max_pending = ac->max_pending,
        };
        s->tap = audit_tap_new(&topts, session_on_audit_cmd, s);
        if (s->tap == NULL) {
            session_close(s, "out of memory");
            return UV_ENOMEM;
        }
        session_audit_event(s, "session_start", NULL, NULL);
    }

    memset(&lim, 0, sizeof(lim));
    lim.max_line_len = s->cfg->max_line_len;
    lim.max_literal_len = s->cfg->max_preauth_literal_len;
    lim.max_command_len = s->cfg->max_line_len + 2 * s->cfg->max_preauth_literal_len;
    lim.max_args = SESSION_MAX_ARGS;
    lim.max_depth = SESSION_MAX_DEPTH;
    lim.max_tag_len = SESSION_MAX_TAG_LEN;
    s->parser = imap_parser_new(&lim);
    if (s->parser == NULL) {
        session_close(s, "out of memory");
        return UV_ENOMEM;
    }
    /* pre-auth is bounded from accept, whatever the client trickles in */
    session_arm(s, s->cfg->preauth_timeout_ms);
    session_log(s, LOG_DEBUG, "accepted");
    if (listener->tls == CONFIG_LISTENER_IMPLICIT) {
        if (conn_start_tls(s->client, env->server_ctx, 1, NULL) != 0) {
            session_close(s, "out of memory");
            return UV_ENOMEM;
        }
    } else {
        s->flags |= SESSION_F_STARTTLS;
        session_greet(s);
    }
    r = session_read_client(s);
    if (r != 0) {
        session_close(s, uv_strerror(r));
    }
    return 0;
}

/* --- kicks and re-routing ----------------------------------------------------- */

/* session_kick_check ends a kicked session when no command is in flight (or
 * the one in flight waits for the client) and the backend has been quiet
 * for a moment at a line end; else it looks again soon. */
static void session_kick_check(struct session *s)
{
    uint64_t now = uv_now(s->env->loop);
    int idle_cmd = s->completions >= s->commands || (s->flags & SESSION_F_WAITS_CLIENT);
    int quiet = now - s->last_backend_data >= SESSION_KICK_QUIET_MS &&
                imap_scan_at_line_start(&s->backend_scan) && conn_write_queue_len(s->client) == 0;
    if ((idle_cmd && quiet) || now - s->kick_at >= SESSION_KICK_MAX_MS) {
        char bye[160];
        snprintf(bye, sizeof(bye), "[UNAVAILABLE] %s", s->kick_reason);
        s->env->stats.kicks++;
        session_bye(s, bye, idle_cmd ? "kicked" : "kicked with a command in flight");
        return;
    }
    session_arm(s, SESSION_KICK_QUIET_MS);
}

static void session_kick(struct session *s, const char *reason)
{
    if (s->flags & SESSION_F_KICK) {
        return;
    }
    if (s->state == SESSION_LOGIN) {
        s->flags |= SESSION_F_KICK; /* applied when the login succeeds */
        s->kick_reason = reason;
        return;
    }
    if (s->state != SESSION_RELAY) {
        return;
    }
    s->flags |= SESSION_F_KICK;
    s->kick_reason = reason;
    s->kick_at = uv_now(s->env->loop);
    session_log(s, LOG_INFO, "kick: %s", reason);
    session_audit_event(s, "kick", NULL, reason);
    conn_read_stop(s->client); /* no new commands */
    session_kick_check(s);
}

static void session_on_recheck(void *ctx, const struct dir_result *res)
{
    struct session *s = ctx;
    s->pending--;
    if (s->state != SESSION_RELAY) {
        session_maybe_free(s);
        return;
    }
    if (res->status == DIR_UNAVAILABLE) {
        session_log(s, LOG_WARNING, "route check failed: %s; the session stays", res->reason);
        return;
    }
    if (res->status == DIR_NO_ROUTE) {
        session_kick(s, "Account moved, please reconnect");
        return;
    }
    if (res->backend != s->route || res->port != s->port || strcmp(res->host, s->host) != 0) {
        session_log(s, LOG_INFO, "route changed to %s(%s:%u)", res->backend->name, res->host,
                    (unsigned)res->port);
        session_kick(s, "Mailbox moved, please reconnect");
    }
}

void session_on_event(struct session_env *env, enum schema_event_type type, const char *arg)
{
    struct session *next;
    /* parked connections follow the same events: a kicked or moved user's
       go; domain and backend changes drop them all (they are cheap to redo) */
    if (type == SCHEMA_EV_KICK || type == SCHEMA_EV_ROUTE) {
        sesscache_evict_user(env->cache, arg);
    } else {
        sesscache_evict_all(env->cache);
    }
    for (struct session *s = env->sessions; s != NULL; s = next) {
        next = s->next; /* sessions are never freed from here, but be sure */
        if (s->state != SESSION_RELAY && s->state != SESSION_LOGIN) {
            continue;
        }
        const char *domain;
        int match = 0;
        switch (type) {
        case SCHEMA_EV_KICK:
        case SCHEMA_EV_ROUTE:
            match = strcmp(s->user, arg) == 0;
            break;
        case SCHEMA_EV_DOMAIN:
            domain = schema_domain(s->user);
            match = domain != NULL && strcmp(domain, arg) == 0;
            break;
        case SCHEMA_EV_BACKEND:
            match = s->route != NULL && strcmp(s->route->name, arg) == 0;
            break;
        }
        if (!match) {
            continue;
        }
        if (type == SCHEMA_EV_KICK) {
            session_kick(s, "Session ended by the administrator");
        } else if (s->state == SESSION_RELAY) {
            s->pending++;
            if (dir_lookup(env->dir, s->user, NULL, session_on_recheck, s) != 0) {
                s->pending--;
            }
        }
    }
}

void session_drain_all(struct session_env *env, int final)
{
    struct session *s = env->sessions;
    while (s != NULL) {
        struct session *next = s->next; /* session_close never frees at once */
        if (s->state == SESSION_TLS_ACCEPT || s->state == SESSION_STARTTLS) {
            session_close(s, "server shutting down");
        } else if (s->state == SESSION_PREAUTH || s->state == SESSION_LOGIN ||
                   (final && s->state == SESSION_RELAY)) {
            session_bye(s, "[UNAVAILABLE] Server shutting down", "server shutting down");
        }
        s = next;
    }
}
