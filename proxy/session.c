#include "proxy/session_private.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include <openssl/mem.h>

#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"
#include "proxy/audit.h"
#include "proxy/backend.h"
#include "proxy/conn.h"
#include "proxy/sesscache.h"
#include "proxy/verify.h"

static void session_on_timer(uv_timer_t *t);

static const char *const session_state_names[] = {
    "tls-accept", "preauth", "starttls", "logging-in", "relay", "closing",
};
_Static_assert(sizeof(session_state_names) / sizeof(session_state_names[0]) == SESSION_CLOSING + 1,
               "a name per state");

/* session_log writes one line with the session's context appended first. */
void session_log(struct session *s, int level, const char *fmt, ...)
{
    char prefix[1024];
    va_list ap;
    if (!log_enabled(level)) {
        return;
    }
    char backend[400] = ""; /* name (64), host (255), port */
    if (s->route != NULL) {
        snprintf(backend, sizeof(backend), " backend=%s(%s:%u)", s->route_name, s->host,
                 (unsigned)s->port);
    }
    snprintf(prefix, sizeof(prefix), "session=%s client=%s:%u listener=%s:%u%s%s%s state=%s%s%s: ",
             s->id, s->client_ip, (unsigned)s->client_port, s->listener->address,
             (unsigned)s->listener->port, s->user[0] ? " user=" : "", s->user, backend,
             session_state_names[s->state], s->state == SESSION_LOGGING_IN ? " step=" : "",
             s->state == SESSION_LOGGING_IN ? session_login_step_name(s->login_step) : "");
    va_start(ap, fmt);
    log_vmsg(level, prefix, fmt, ap);
    va_end(ap);
}

void session_set_state(struct session *s, enum session_state st)
{
    if (log_enabled(LOG_DEBUG)) {
        session_log(s, LOG_DEBUG, "-> %s", session_state_names[st]);
    }
    s->state = st;
}

void session_set_deadline(struct session *s, uint64_t ms)
{
    uv_timer_start(&s->timer, session_on_timer, ms, 0);
}

/* A session_after request: a one-shot timer that holds a reference to its
 * session.  Owned by itself; freed in its close callback. */
struct session_after {
    uv_timer_t timer;
    struct session *s;
    session_after_fn fn;
};

static void session_on_after_close(uv_handle_t *h)
{
    struct session_after *a = h->data;
    struct session *s = a->s;
    session_after_fn fn = a->fn;
    free(a);
    s->pending--;
    if (s->state == SESSION_CLOSING) {
        session_maybe_free(s);
        return;
    }
    fn(s);
}

static void session_on_after(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, session_on_after_close);
}

int session_after(struct session *s, uint64_t ms, session_after_fn fn)
{
    struct session_after *a = malloc(sizeof(*a));
    if (a == NULL) {
        return UV_ENOMEM;
    }
    a->s = s;
    a->fn = fn;
    uv_timer_init(s->env->loop, &a->timer);
    a->timer.data = a;
    uv_timer_start(&a->timer, session_on_after, ms, 0);
    s->pending++;
    return 0;
}

/* --- reading the client ------------------------------------------------------ */

/* session_reads_client: the state in which the client is read. */
static int session_reads_client(const struct session *s)
{
    switch (s->state) {
    case SESSION_TLS_ACCEPT:
    case SESSION_STARTTLS:
        return 1;
    case SESSION_PREAUTH:
        return !(s->flags & SESSION_F_OUT_FULL);
    case SESSION_RELAY:
        return !(s->flags & (SESSION_F_CLIENT_PAUSE | SESSION_F_KICK | SESSION_F_GATE_WAIT));
    default:
        return 0;
    }
}

/* session_read_client reads the client again, unless the audit queue waits
 * or the state does not read it (session_reads_client). */
int session_read_client(struct session *s)
{
    if (s->client == NULL || s->env->audit_paused || !session_reads_client(s)) {
        return 0;
    }
    return conn_read_start(s->client);
}

/* session_audit_set_paused stops (paused) or resumes reading the clients of
 * every session of env: the audit queue is full, or drained. */
static void session_audit_set_paused(struct session_env *env, int paused)
{
    struct list_link *l, *n;
    env->audit_paused = paused;
    LIST_FOREACH_SAFE(l, n, &env->sessions) {
        struct session *s = SESSION_OF(l);
        if (s->client == NULL || s->state == SESSION_CLOSING) {
            continue;
        }
        if (paused) {
            conn_read_stop(s->client);
        } else if (session_reads_client(s)) {
            conn_read_start(s->client);
        }
    }
}

void session_audit_pause(struct session_env *env)
{
    log_msg(LOG_WARNING, "worker %u: audit queue full: clients wait until it drains",
            env->worker_id);
    session_audit_set_paused(env, 1);
}

void session_audit_resume(struct session_env *env)
{
    if (!env->audit_paused) {
        return;
    }
    log_msg(LOG_NOTICE, "worker %u: audit queue drained: reading clients again",
            env->worker_id);
    session_audit_set_paused(env, 0);
}

/* --- lifetime -------------------------------------------------------------- */

void session_wipe(char **p)
{
    if (*p != NULL) {
        OPENSSL_cleanse(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

void session_maybe_free(struct session *s)
{
    if (s->state != SESSION_CLOSING || s->pending > 0 || (s->flags & SESSION_F_FREED)) {
        return;
    }
    s->flags |= SESSION_F_FREED;
    list_remove(&s->link);
    conncap_release(s->env->conncap, &s->conncap);
    metrics_listener_closed((size_t)(s->listener - s->cfg->listeners));
    s->env->num_sessions--;
    session_login_clear(s);
    (void)session_name_set(&s->user, "");
    (void)session_name_set(&s->auth_user, "");
    (void)session_name_set(&s->host, "");
    free(s->shown_capa);
    free(s->cached_capa);
    audit_tap_free(s->tap);
    session_relay_free(s);
    imap_parser_free(s->parser);
    proxy_proto_free(s->proxy);
    if (s->inbuf != NULL) {
        OPENSSL_cleanse(s->inbuf, s->inbuf_len);
        free(s->inbuf);
    }
    config_unref(&s->cfg);
    snapshot_unref(&s->snap);
    secret_free(s, sizeof(*s)); /* cache_key is an HMAC of the password */
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
    if (s->client == NULL && s->backend == NULL && s->backend_login == NULL &&
        !uv_is_closing((uv_handle_t *)&s->timer)) {
        uv_close((uv_handle_t *)&s->timer, session_on_timer_close);
    }
    session_maybe_free(s);
}

void session_on_backend_close(void *ctx)
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
void session_close(struct session *s, const char *reason)
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
    if (s->state == SESSION_LOGGING_IN && s->login_step == LOGIN_STEP_VERIFY) {
        verify_cancel(s->env->loop, s); /* its callback still comes, and drops the reference */
    }
    session_set_state(s, SESSION_CLOSING);
    s->flags &= ~SESSION_F_AUTH_CONT;
    session_park_cancel(s);
    sesslimit_release(s->env->limits, &s->lease); /* the login's count drops at once */
    if (s->backend_login != NULL) {
        backend_free(s->backend_login);
        s->backend_login = NULL;
    }
    if (s->backend != NULL) {
        conn_close(s->backend, CONN_CLOSE_NOW);
    }
    if (s->client != NULL) {
        conn_close(s->client, CONN_CLOSE_GRACEFUL);
        session_set_deadline(s, SESSION_CLOSE_TIMEOUT_MS);
    } else if (!uv_is_closing((uv_handle_t *)&s->timer)) {
        uv_close((uv_handle_t *)&s->timer, session_on_timer_close);
    }
}

/* --- writing to the client ------------------------------------------------- */

void session_send(struct session *s, const char *text)
{
    if (s->client != NULL) {
        size_t n = strlen(text);
        session_tap_out(s, (const uint8_t *)text, n);
        (void)conn_write(s->client, text, n); /* failures come as on_eof */
    }
}

void session_sendf(struct session *s, const char *fmt, ...)
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

void session_bye(struct session *s, const char *code_and_text, const char *reason)
{
    session_sendf(s, "* BYE %s\r\n", code_and_text);
    session_close(s, reason);
}

/* --- client callbacks ------------------------------------------------------- */

static void session_on_client_read(void *ctx, const uint8_t *data, size_t len)
{
    struct session *s = ctx;

    if (s->flags & SESSION_F_PROXY_WAIT) {
        session_proxy_input(s, data, len);
        return;
    }
    switch (s->state) {
    case SESSION_RELAY:
        session_relay_client_read(s, data, len);
        return;
    case SESSION_PREAUTH:
        session_preauth_input(s, data, len);
        return;
    default:
        return; /* closing, or input we must not act on */
    }
}

void session_on_client_handshake(void *ctx, int status)
{
    struct session *s = ctx;
    metrics_tls_handshake(status == 0 ? METRICS_TLS_OK
                                      : metrics_tls_reason(conn_tls_error(s->client)));
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
        session_preauth_start(s);
    } else if (s->state == SESSION_STARTTLS) {
        session_set_state(s, SESSION_PREAUTH);
    }
}

static void session_on_client_eof(void *ctx, int status)
{
    struct session *s = ctx;
    if (s->state == SESSION_TLS_ACCEPT || s->state == SESSION_STARTTLS) {
        metrics_tls_handshake(status == IMAPMUX_E_TLS ? metrics_tls_reason(conn_tls_error(s->client))
                                                      : METRICS_TLS_EOF);
    }
    if (s->state == SESSION_TLS_ACCEPT && status == IMAPMUX_E_TLS) {
        session_log(s, LOG_INFO, "TLS handshake failed: %s", conn_tls_error(s->client));
        session_close(s, NULL);
        return;
    }
    if (status == UV_EOF) {
        session_close(s, "client closed the connection");
    } else if (status == IMAPMUX_E_TLS) {
        session_log(s, LOG_INFO, "client TLS error: %s", conn_tls_error(s->client));
        session_close(s, "client TLS error");
    } else if (status == IMAPMUX_E_COMPRESS) {
        session_log(s, LOG_INFO, "client's compressed stream: %s", conn_compress_error(s->client));
        session_close(s, "client's compressed stream is corrupt");
    } else {
        session_close(s, uv_strerror(status));
    }
}

/* session_on_client_drain: the client took what was queued for it. */
static void session_on_client_drain(void *ctx)
{
    struct session *s = ctx;
    if (s->state == SESSION_PREAUTH) {
        session_preauth_drained(s);
    } else if (s->state == SESSION_RELAY) {
        session_relay_client_drained(s);
    }
}

static const struct conn_ops session_client_ops = {
    .on_handshake = session_on_client_handshake,
    .on_read = session_on_client_read,
    .on_eof = session_on_client_eof,
    .on_drain = session_on_client_drain,
    .on_close = session_on_client_close,
};

static void session_on_timer(uv_timer_t *t)
{
    struct session *s = t->data;
    if ((s->flags & SESSION_F_PROXY_WAIT) && s->state != SESSION_CLOSING) {
        session_close(s, "PROXY header timeout");
        return;
    }
    switch (s->state) {
    case SESSION_CLOSING:
        /* the client did not take our last words in time: cut */
        if (s->client != NULL) {
            conn_close(s->client, CONN_CLOSE_NOW);
        }
        return;
    case SESSION_RELAY: {
        if (s->flags & SESSION_F_KICK) {
            session_kick_check(s);
            return;
        }
        uint64_t idle = uv_now(s->env->loop) - s->last_activity;
        if (idle < s->cfg->idle_timeout_ms) {
            session_set_deadline(s, s->cfg->idle_timeout_ms - idle);
            return;
        }
        session_bye(s, "Autologout; idle for too long", "idle timeout");
        return;
    }
    case SESSION_TLS_ACCEPT:
    case SESSION_STARTTLS:
        metrics_tls_handshake(METRICS_TLS_TIMEOUT);
        session_close(s, "pre-auth timeout during TLS handshake");
        return;
    case SESSION_LOGGING_IN: {
        char why[64];
        snprintf(why, sizeof(why), "login timed out in step=%s",
                 session_login_step_name(s->login_step));
        session_login_metrics(s, METRICS_LOGIN_UNAVAILABLE);
        session_bye(s, "Pre-authentication timeout", why);
        return;
    }
    default:
        session_bye(s, "Pre-authentication timeout", "pre-auth timeout");
        return;
    }
}

int session_accept(struct session_env *env, uv_stream_t *server,
                   const struct config_listener *listener)
{
    struct session *s = calloc(1, sizeof(*s));
    int r;

    if (s == NULL) {
        return UV_ENOMEM;
    }
    s->user = session_no_name;
    s->auth_user = session_no_name;
    s->host = session_no_name;
    s->env = env;
    s->cfg = config_ref(env->cfg);
    s->snap = snapshot_ref(env->snap);
    s->listener = listener;
    snprintf(s->id, sizeof(s->id), "w%u-%" PRIu64, env->worker_id, ++env->next_id);
    s->client = conn_new(env->loop, &session_client_ops, s);
    if (s->client == NULL) {
        config_unref(&s->cfg);
        snapshot_unref(&s->snap);
        free(s);
        return UV_ENOMEM;
    }
    conn_set_wipe(s->client, 1); /* credentials may pass until the login is over */
    s->pending = 2; /* client conn, timer */
    uv_timer_init(env->loop, &s->timer);
    s->timer.data = s;
    metrics_listener_accepted((size_t)(listener - s->cfg->listeners)); /* closed at free */
    list_push_front(&env->sessions, &s->link);
    env->num_sessions++;
    s->state = SESSION_TLS_ACCEPT;

    r = conn_accept(s->client, server);
    if (r != 0) {
        session_close(s, NULL);
        return r;
    }
    conn_addr(s->client, CONN_PEER, s->client_ip, sizeof(s->client_ip), &s->client_port);
    conn_addr(s->client, CONN_LOCAL, s->local_ip, sizeof(s->local_ip), &s->local_port);
    memcpy(s->peer_ip, s->client_ip, sizeof(s->peer_ip));
    s->peer_port = s->client_port;
    if (listener->proxy_protocol) {
        return session_proxy_begin(s); /* session_start follows the header */
    }
    return session_start(s);
}

int session_start(struct session *s)
{
    struct session_env *env = s->env;
    const struct config_listener *listener = s->listener;
    int r;

    s->conncap_refused = conncap_acquire(env->conncap, s->client_ip, &s->conncap);
    s->start_us = session_mono_us();
    if (env->audit != NULL && session_audit_start(s) != 0) {
        session_close(s, "out of memory");
        return UV_ENOMEM;
    }

    /* the pre-auth parser comes with the first input (session_preauth.c):
       a connection that says nothing holds none */
    /* pre-auth is bounded from accept, whatever the client trickles in */
    session_set_deadline(s, s->cfg->preauth_timeout_ms);
    session_log(s, LOG_DEBUG, "accepted");
    if (listener->tls == CONFIG_LISTENER_IMPLICIT) { /* after any PROXY header */
        if (conn_start_tls(s->client, s->snap->server_ctx, CONN_TLS_SERVER, s->authority) != 0) {
            session_close(s, "out of memory");
            return UV_ENOMEM;
        }
    } else {
        s->flags |= SESSION_F_STARTTLS;
        session_preauth_start(s);
    }
    r = session_read_client(s);
    if (r != 0) {
        session_close(s, uv_strerror(r));
    }
    return 0;
}

void session_drain_all(struct session_env *env, int final)
{
    struct list_link *l, *n;
    LIST_FOREACH_SAFE(l, n, &env->sessions) { /* session_close never frees at once */
        struct session *s = SESSION_OF(l);
        if (s->state == SESSION_TLS_ACCEPT || s->state == SESSION_STARTTLS) {
            session_close(s, "server shutting down");
        } else if (s->state == SESSION_PREAUTH || s->state == SESSION_LOGGING_IN ||
                   (final && s->state == SESSION_RELAY)) {
            session_bye(s, "[UNAVAILABLE] Server shutting down", "server shutting down");
        }
    }
}

const char session_no_name[1] = "";

int session_name_set(const char **slot, const char *text)
{
    if (*slot != session_no_name && *slot != NULL) {
        free((char *)*slot);
    }
    *slot = session_no_name;
    if (text[0] == '\0') {
        return 0;
    }
    char *copy = strdup(text);
    if (copy == NULL) {
        return UV_ENOMEM;
    }
    *slot = copy;
    return 0;
}
