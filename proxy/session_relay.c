/* session_relay: a logged-in session.  Entered once per session by
 * session_relay_enter (after a backend login or a session cache hit); from
 * then on both directions are copied as they come, with backpressure, each
 * byte shown to the audit tap and scanned for line ends (kicks and parking
 * need to know where commands end). */
#include "proxy/session_private.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "common/imap_scan.h"
#include "common/imap_syntax.h"
#include "common/log.h"
#include "proxy/conn.h"
#include "proxy/directory.h"

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
    session_park_note_command(s, head, len);
}

static void session_on_backend_line(void *ctx, const uint8_t *head, size_t len)
{
    struct session *s = ctx;
    if (imap_syntax_is_bye(head, len)) {
        s->flags |= SESSION_F_BACKEND_BYE;
    } else if (len >= 1 && head[0] == '+') {
        s->flags |= SESSION_F_WAITS_CLIENT; /* IDLE, or a literal wanted */
    } else if (len >= 1 && head[0] != '*') {
        s->completions++;
        s->flags &= ~SESSION_F_WAITS_CLIENT;
    }
}

/* session_relay_copy writes to dst what src sent; past the high mark of
 * dst's queue, src is not read until dst drains to a quarter of it. */
static void session_relay_copy(struct session *s, struct conn *dst, struct conn *src,
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
    session_relay_copy(s, s->client, s->backend, data, len, SESSION_F_BACK_PAUSE);
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

void session_relay_client_drained(struct session *s)
{
    if (s->state == SESSION_RELAY && (s->flags & SESSION_F_BACK_PAUSE)) {
        s->flags &= ~SESSION_F_BACK_PAUSE;
        conn_read_start(s->backend);
    }
}

const struct conn_ops session_backend_ops = {
    .on_read = session_on_backend_read,
    .on_eof = session_on_backend_eof,
    .on_drain = session_on_backend_drain,
    .on_close = session_on_backend_close,
};

void session_relay_enter(struct session *s, struct conn *conn, char *filtered,
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
    session_log(s, LOG_INFO, "login ok (%s%s%s%s)",
                s->client != NULL && conn_is_tls(s->client) ? conn_tls_version(s->client)
                                                            : "cleartext",
                cached ? ", session cache" : "",
                s->auth_user[0] != '\0' ? ", with the credentials of " : "", s->auth_user);
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
    session_set_deadline(s, s->cfg->idle_timeout_ms);
    conn_read_start(s->backend);
    if (s->state == SESSION_RELAY && (s->flags & SESSION_F_KICK)) {
        /* kicked while logging in */
        s->kick_at = uv_now(s->env->loop);
        session_kick_check(s);
    } else if (s->state == SESSION_RELAY) {
        session_read_client(s);
    }
}

void session_relay_client_read(struct session *s, const uint8_t *data, size_t len)
{
    if (session_park_try(s, data, len)) {
        return;
    }
    s->bytes_in += len;
    s->last_activity = uv_now(s->env->loop);
    imap_scan_feed(&s->client_scan, data, len, session_on_client_line, s);
    if (session_tap_in(s, data, len) != 0) {
        return;
    }
    session_relay_copy(s, s->backend, s->client, data, len, SESSION_F_CLIENT_PAUSE);
}
