#include "proxy/session_private.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include <openssl/mem.h>

#include "common/log.h"
#include "proxy/audit.h"
#include "proxy/backend.h"
#include "proxy/conn.h"
#include "proxy/sesscache.h"

static void session_on_timer(uv_timer_t *t);

/* session_log writes one line with the session's context appended first. */
void session_log(struct session *s, int level, const char *fmt, ...)
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

void session_set_state(struct session *s, enum session_state st)
{
    if (log_enabled(LOG_DEBUG)) {
        session_log(s, LOG_DEBUG, "-> %s", session_state_names[st]);
    }
    s->state = st;
}

void session_arm(struct session *s, uint64_t ms)
{
    uv_timer_start(&s->timer, session_on_timer, ms, 0);
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
int session_read_client(struct session *s)
{
    if (s->client == NULL || s->env->audit_paused) {
        return 0;
    }
    return conn_read_start(s->client);
}

void session_audit_pause(struct session_env *env)
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

void session_wipe(char **p)
{
    if (*p != NULL) {
        OPENSSL_cleanse(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

/* session_login_clear forgets what a login in flight held. */
void session_login_clear(struct session *s)
{
    session_wipe(&s->password);
    session_wipe(&s->authzid);
    session_wipe(&s->hash);
    free(s->login_as);
    s->login_as = NULL;
    s->login_flags = 0;
}

void session_maybe_free(struct session *s)
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

const char *session_capa(const struct session *s)
{
    return (s->flags & SESSION_F_TLS) ? SESSION_CAPA_TLS : SESSION_CAPA_CLEAR;
}

static void session_greet(struct session *s)
{
    session_set_state(s, SESSION_PREAUTH);
    session_sendf(s, "* OK [CAPABILITY %s] imapmux ready\r\n", session_capa(s));
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

void session_on_client_handshake(void *ctx, int status)
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
