/* session_relay: a logged-in session.  Entered once per session by
 * session_relay_enter (after a backend login or a session cache hit).  The
 * client's bytes pass the command gate (common/imap_check) before a byte of
 * a command reaches the backend, so that what the backend executes is what
 * the audit records; literal data passes through without a copy.  The
 * backend's bytes are copied as they come.  Both directions have
 * backpressure, and every forwarded byte is shown to the audit tap. */
#include "proxy/session_private.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "common/audit_tap.h"
#include "common/capa.h"
#include "common/imap_check.h"
#include "common/imap_scan.h"
#include "common/imap_syntax.h"
#include "common/log.h"
#include "proxy/compress.h"
#include "proxy/conn.h"
#include "proxy/directory.h"


#define SESSION_RELAY_MAX_LITERAL_LEN (1ull << 30) /* bytes of a message literal (APPEND) */
#define SESSION_RELAY_MAX_ARG_LITERAL_LEN (1u << 20) /* bytes of any other literal */
#define SESSION_RELAY_MAX_ANSWER_LEN 4096 /* imapmux's own answers waiting for a line end */
#define SESSION_RELAY_HELD_MIN 256        /* first allocation of the held line part */

static void session_relay_resume(struct session *s);

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

/* --- imapmux's own answers in the client stream ------------------------------ */

/* session_relay_flush_answers sends the answers imapmux queued, once the
 * backend's stream is between two lines. */
static void session_relay_flush_answers(struct session *s)
{
    if (s->answers_len == 0 || !imap_scan_at_line_start(&s->backend_scan) ||
        !capa_rewrite_at_line_start(&s->capa_rw) || s->client == NULL) {
        return;
    }
    (void)conn_write(s->client, s->answers, s->answers_len);
    free(s->answers);
    s->answers = NULL;
    s->answers_len = 0;
}

/* session_relay_answer puts a line of imapmux's own (a BAD for a refused
 * command) into the client's stream, never inside a backend response.
 * Returns 0, or -1 when the session ended. */
static int session_relay_answer(struct session *s, const char *line)
{
    size_t n = strlen(line);
    if (s->answers_len + n > SESSION_RELAY_MAX_ANSWER_LEN) {
        session_bye(s, "Too many invalid commands", "too many refused commands unanswered");
        return -1;
    }
    uint8_t *a = realloc(s->answers, s->answers_len + n);
    if (a == NULL) {
        session_bye(s, "[UNAVAILABLE] Out of memory", "out of memory");
        return -1;
    }
    memcpy(a + s->answers_len, line, n);
    s->answers = a;
    s->answers_len += n;
    session_relay_flush_answers(s);
    return 0;
}

/* --- client to backend: the gate ----------------------------------------------- */

static void session_relay_held_clear(struct session *s)
{
    free(s->held);
    s->held = NULL;
    s->held_len = 0;
    s->held_cap = 0;
}

/* session_relay_hold keeps bytes of a line part the gate has not judged yet
 * (bounded by relay.max_line_len, which the gate enforces). */
static int session_relay_hold(struct session *s, const uint8_t *data, size_t n)
{
    if (s->held_len + n > s->held_cap) {
        size_t cap = s->held_cap > 0 ? s->held_cap : SESSION_RELAY_HELD_MIN;
        while (cap < s->held_len + n) {
            cap *= 2;
        }
        uint8_t *h = realloc(s->held, cap);
        if (h == NULL) {
            session_bye(s, "[UNAVAILABLE] Out of memory", "out of memory");
            return -1;
        }
        s->held = h;
        s->held_cap = cap;
    }
    memcpy(s->held + s->held_len, data, n);
    s->held_len += n;
    return 0;
}

/* session_relay_send_backend shows forwarded bytes to the tap and writes
 * them to the backend.  Returns 0, or -1 when the session ended. */
static int session_relay_send_backend(struct session *s, const uint8_t *data, size_t n)
{
    if (n == 0) {
        return 0;
    }
    if (session_tap_in(s, data, n) != 0) {
        return -1;
    }
    session_relay_copy(s, s->backend, s->client, data, n, SESSION_F_CLIENT_PAUSE);
    return s->state == SESSION_RELAY ? 0 : -1;
}

/* session_relay_forward sends the held part and data (a validated line part). */
static int session_relay_forward(struct session *s, const uint8_t *data, size_t n)
{
    if (s->held_len > 0) {
        int r = session_relay_send_backend(s, s->held, s->held_len);
        session_relay_held_clear(s);
        if (r != 0) {
            return -1;
        }
    }
    return session_relay_send_backend(s, data, n);
}

/* session_relay_command_done: the gate passed a whole command to the backend. */
static void session_relay_command_done(struct session *s)
{
    if (imap_check_cmd(s->check) == IMAP_CHECK_CMD_DONE) {
        return; /* the end of IDLE, not a command of its own */
    }
    s->commands++;
    metrics_relay_command(imap_check_name(s->check), imap_check_uid(s->check));
    session_park_note_command(s, imap_check_name(s->check));
}

/* session_relay_keep stores client bytes the gate cannot take now (it waits
 * for the backend): at most one read, since the client is not read meanwhile. */
static int session_relay_keep(struct session *s, const uint8_t *data, size_t len)
{
    uint8_t *c = malloc(len);
    if (c == NULL) {
        session_bye(s, "[UNAVAILABLE] Out of memory", "out of memory");
        return -1;
    }
    memcpy(c, data, len);
    free(s->cin);
    s->cin = c;
    s->cin_len = len;
    return 0;
}

/* session_relay_compress answers COMPRESS (RFC 4978), which the gate left to
 * imapmux: the client's side is compressed from here, the backend's is not.
 * line is the whole command (the held part plus n bytes at data); rest bytes
 * followed it in the same read. */
static void session_relay_compress(struct session *s, const uint8_t *data, size_t n, size_t rest)
{
    size_t tag_len = 0;
    const char *tag = imap_check_tag(s->check, &tag_len);
    char line[SESSION_MAX_TAG_LEN + 80];
    /* the gate checked the syntax; the mechanism is the line's last atom */
    char tail[10];
    size_t tl = 0;
    for (size_t i = 0; i < s->held_len + n; i++) {
        uint8_t ch = i < s->held_len ? s->held[i] : data[i - s->held_len];
        if (tl == sizeof(tail)) {
            memmove(tail, tail + 1, sizeof(tail) - 1);
            tl--;
        }
        tail[tl++] = (char)ch;
    }
    int deflate = tl == sizeof(tail) && strncasecmp(tail, " DEFLATE\r\n", sizeof(tail)) == 0;
    /* the command is recorded like any other: the tap sees it and our answer */
    if (session_tap_in(s, s->held, s->held_len) != 0 || session_tap_in(s, data, n) != 0) {
        return;
    }
    session_relay_held_clear(s);
    if (rest > 0) {
        /* RFC 4978: nothing may follow before the OK; what did is not ours to guess */
        session_bye(s, "Data after COMPRESS before its answer", "data after COMPRESS");
        return;
    }
    int r = 0;
    if (!s->cfg->relay.compress) {
        snprintf(line, sizeof(line), "%s BAD Command not supported by the server\r\n", tag);
    } else if (!deflate) {
        snprintf(line, sizeof(line), "%s NO Unsupported compression mechanism\r\n", tag);
    } else if (s->commands != s->completions || s->answers_len > 0 ||
               !imap_scan_at_line_start(&s->backend_scan)) {
        snprintf(line, sizeof(line), "%s NO COMPRESS while commands are in progress\r\n", tag);
    } else {
        snprintf(line, sizeof(line), "%s OK DEFLATE active\r\n", tag);
        session_tap_out(s, (const uint8_t *)line, strlen(line));
        r = conn_start_compress(s->client, line, strlen(line));
        if (r == 0) {
            session_log(s, LOG_DEBUG, "COMPRESS=DEFLATE active");
            session_relay_resume(s);
            return;
        }
        snprintf(line, sizeof(line), "%s NO %s\r\n", tag,
                 r == UV_EALREADY ? "[COMPRESSIONACTIVE] Compression is already active"
                                  : "[UNAVAILABLE] Cannot compress now");
    }
    session_tap_out(s, (const uint8_t *)line, strlen(line));
    (void)conn_write(s->client, line, strlen(line));
    session_relay_resume(s);
}

/* Forwarded bytes of one read, not written yet: consecutive verdicts that
 * forward (a pipelined burst of commands, a literal) lie next to each other
 * in the read, so they go to the tap and the backend in one write instead
 * of one per command.  Flushed before any other verdict is acted on, so the
 * backend and the tap see everything in the order the client sent it. */
struct relay_pending {
    const uint8_t *data; /* in the read being fed */
    size_t len;
};

static int session_relay_pend(struct session *s, struct relay_pending *p, const uint8_t *data,
                              size_t n)
{
    if (p->len > 0 && p->data + p->len != data) {
        /* not next to the pending bytes (cannot happen within one read):
           send those first */
        int r = session_relay_send_backend(s, p->data, p->len);
        p->len = 0;
        if (r != 0) {
            return r;
        }
    }
    if (p->len == 0) {
        p->data = data;
    }
    p->len += n;
    return 0;
}

static int session_relay_flush_pending(struct session *s, struct relay_pending *p)
{
    if (p->len == 0) {
        return s->state == SESSION_RELAY ? 0 : -1;
    }
    int r = session_relay_send_backend(s, p->data, p->len);
    p->len = 0;
    return r;
}

/* session_relay_feed runs client bytes through the gate and acts on each
 * verdict.  Bytes it cannot take now are kept for session_relay_resume. */
static void session_relay_feed(struct session *s, const uint8_t *data, size_t len)
{
    struct relay_pending pend = {NULL, 0};
    while (s->state == SESSION_RELAY) {
        if (imap_check_blocked(s->check)) {
            if (session_relay_flush_pending(s, &pend) != 0) {
                return;
            }
            if (len > 0 && session_relay_keep(s, data, len) != 0) {
                return;
            }
            s->flags |= SESSION_F_GATE_WAIT;
            conn_read_stop(s->client);
            return;
        }
        if (len == 0) {
            (void)session_relay_flush_pending(s, &pend);
            return;
        }
        size_t n = 0;
        enum imap_check_action a = imap_check_feed(s->check, &n, data, len);
        int forwards = a == IMAP_CHECK_FORWARD_END || a == IMAP_CHECK_FORWARD ||
                       a == IMAP_CHECK_LITERAL;
        if ((!forwards || s->held_len > 0) && session_relay_flush_pending(s, &pend) != 0) {
            return;
        }
        switch (a) {
        case IMAP_CHECK_HOLD:
            if (session_relay_hold(s, data, n) != 0) {
                return;
            }
            break;
        case IMAP_CHECK_FORWARD_END:
            if (s->held_len == 0 && n == len && imap_check_cmd(s->check) == IMAP_CHECK_CMD_RELAYED &&
                strcmp(imap_check_name(s->check), "LOGOUT") == 0) {
                /* parking takes the backend connection: what is pending goes first */
                if (session_relay_flush_pending(s, &pend) != 0) {
                    return;
                }
                if (session_park_try(s, data, n)) {
                    return;
                }
            }
            if (s->held_len > 0 ? session_relay_forward(s, data, n) != 0
                                : session_relay_pend(s, &pend, data, n) != 0) {
                return;
            }
            session_relay_command_done(s);
            break;
        case IMAP_CHECK_FORWARD:
            if (s->held_len > 0 ? session_relay_forward(s, data, n) != 0
                                : session_relay_pend(s, &pend, data, n) != 0) {
                return;
            }
            break;
        case IMAP_CHECK_LITERAL:
            if (session_relay_pend(s, &pend, data, n) != 0) {
                return;
            }
            break;
        case IMAP_CHECK_WAIT_CONTINUATION:
            break; /* blocked now: the rest is kept above */
        case IMAP_CHECK_LOCAL:
            session_relay_compress(s, data, n, len - n);
            return;
        case IMAP_CHECK_REJECT: {
            size_t tag_len = 0;
            const char *tag = imap_check_tag(s->check, &tag_len);
            const char *why = imap_check_reason(s->check);
            char line[SESSION_MAX_TAG_LEN + 128];
            session_relay_held_clear(s);
            snprintf(line, sizeof(line), "%s BAD %s\r\n", tag != NULL ? tag : "*", why);
            session_log(s, LOG_INFO, "command refused: %s", why);
            s->env->stats.commands_refused++;
            if (session_relay_answer(s, line) != 0) {
                return;
            }
            break;
        }
        case IMAP_CHECK_DROP:
            break;
        case IMAP_CHECK_FATAL: {
            const char *why = imap_check_reason(s->check);
            char bye[160];
            session_relay_held_clear(s);
            s->env->stats.commands_refused++;
            snprintf(bye, sizeof(bye), "%s", why != NULL ? why : "Protocol error");
            session_log(s, LOG_INFO, "command refused, session ended: %s", bye);
            session_bye(s, bye, "refused command after part of it was relayed");
            return;
        }
        }
        data += n;
        len -= n;
    }
    (void)session_relay_flush_pending(s, &pend);
}

/* session_relay_resume feeds what the client sent while the gate waited,
 * then reads the client again if the gate lets it. */
static void session_relay_resume(struct session *s)
{
    uint8_t *c = s->cin;
    size_t n = s->cin_len;
    s->cin = NULL;
    s->cin_len = 0;
    s->flags &= ~SESSION_F_GATE_WAIT;
    if (c != NULL) {
        session_relay_feed(s, c, n);
        free(c);
    }
    if (s->state == SESSION_RELAY && !(s->flags & SESSION_F_GATE_WAIT)) {
        session_read_client(s);
    }
}

void session_relay_client_read(struct session *s, const uint8_t *data, size_t len)
{
    s->bytes_in += len;
    metrics_relay_bytes(1, len);
    s->last_activity = uv_now(s->env->loop);
    session_relay_feed(s, data, len);
}

/* --- backend to client ---------------------------------------------------------- */

/* The backend's stream is scanned for line ends (literals skipped by
 * length): a kicked session ends after the command in flight, imapmux's own
 * answers go between two lines, and the gate learns of continuations and
 * tagged answers. */
static void session_on_backend_line(void *ctx, const uint8_t *head, size_t len)
{
    struct session *s = ctx;
    if (imap_syntax_is_bye(head, len)) {
        s->flags |= SESSION_F_BACKEND_BYE;
    } else if (len >= 1 && head[0] == '+') {
        s->flags |= SESSION_F_WAITS_CLIENT; /* IDLE, or a literal wanted */
        if (imap_check_server_continuation(s->check)) {
            s->flags |= SESSION_F_GATE_RESUME;
        }
    } else if (len >= 1 && head[0] != '*') {
        s->completions++;
        s->flags &= ~SESSION_F_WAITS_CLIENT;
        const uint8_t *sp = memchr(head, ' ', len);
        size_t tag_len = sp != NULL ? (size_t)(sp - head) : len;
        enum imap_check_cmd waited = imap_check_cmd(s->check);
        int literal_wait = imap_check_blocked(s->check) && (waited == IMAP_CHECK_CMD_RELAYED ||
                                                           waited == IMAP_CHECK_CMD_VENDOR);
        if (imap_check_server_tagged(s->check, head, tag_len)) {
            if (literal_wait && s->tap != NULL) {
                /* the backend refused a literal it was asked for: the command
                   ends without it, and the client's next bytes are commands */
                audit_tap_client_cut(s->tap);
            }
            s->flags |= SESSION_F_GATE_RESUME;
        }
    }
}

/* session_relay_to_client writes what the capability rewriter passes on:
 * the backend's bytes, unchanged except in its capability lists. */
static void session_relay_to_client(void *ctx, const uint8_t *p, size_t n)
{
    struct session *s = ctx;
    if (s->state == SESSION_RELAY && s->client != NULL) {
        session_relay_copy(s, s->client, s->backend, p, n, SESSION_F_BACK_PAUSE);
    }
}

static void session_on_backend_read(void *ctx, const uint8_t *data, size_t len)
{
    struct session *s = ctx;
    if (s->state != SESSION_RELAY) {
        return;
    }
    s->bytes_out += len;
    metrics_relay_bytes(0, len);
    s->last_backend_data = uv_now(s->env->loop);
    imap_scan_feed(&s->backend_scan, data, len, session_on_backend_line, s);
    session_tap_out(s, data, len);
    if (session_audit_full(s)) {
        return;
    }
    if (capa_rewrite_feed(&s->capa_rw, data, len, session_relay_to_client, s) != 0) {
        session_bye(s, "[UNAVAILABLE] Out of memory", "out of memory");
        return;
    }
    session_relay_flush_answers(s);
    if ((s->flags & SESSION_F_GATE_RESUME) && s->state == SESSION_RELAY) {
        s->flags &= ~SESSION_F_GATE_RESUME;
        if (s->flags & SESSION_F_GATE_WAIT) {
            session_relay_resume(s);
        }
    }
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
        session_read_client(s);
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

/* session_relay_gate_new sets the gate up for the capabilities the client
 * was shown (the backend's, filtered). */
static int session_relay_gate_new(struct session *s, const char *capa)
{
    struct imap_check_opts o;
    memset(&o, 0, sizeof(o));
    o.max_line_len = s->cfg->relay.max_line_len;
    o.max_literal_len = SESSION_RELAY_MAX_LITERAL_LEN;
    o.max_arg_literal_len = SESSION_RELAY_MAX_ARG_LITERAL_LEN;
    o.max_tag_len = SESSION_MAX_TAG_LEN;
    o.allowed_commands = (const char *const *)s->cfg->relay.allowed_commands;
    o.num_allowed_commands = s->cfg->relay.num_allowed_commands;
    /* LITERAL+ and LITERAL- as the backend announces them: a command the gate
       passed is one the backend knows, and RFC 7888 has a server read a
       non-synchronising literal even of a command it refuses */
    imap_check_opts_from_capability(&o, capa, strlen(capa));
    s->check = imap_check_new(&o);
    return s->check != NULL ? 0 : UV_ENOMEM;
}

/* session_relay_capa appends what imapmux itself offers after login to the
 * backend's filtered list (taken); returns the new list or NULL on OOM. */
static char *session_relay_capa(struct session *s, char *filtered)
{
    if (!s->cfg->relay.compress || filtered == NULL) {
        return filtered;
    }
    size_t n = strlen(filtered);
    char *c = realloc(filtered, n + sizeof(" COMPRESS=DEFLATE"));
    if (c == NULL) {
        free(filtered);
        return NULL;
    }
    memcpy(c + n, n > 0 ? " COMPRESS=DEFLATE" : "COMPRESS=DEFLATE", n > 0 ? 18 : 17);
    return c;
}
void session_relay_enter(struct session *s, struct conn *conn, char *filtered,
                         const uint8_t *rest, size_t rest_len, int cached)
{
    if (s->backend != conn) {
        s->backend = conn;
        conn_set_ops(s->backend, &session_backend_ops, s);
        s->pending++;
    }
    if (!cached) {
        filtered = session_relay_capa(s, filtered); /* a cached list has it already */
    }
    if (filtered == NULL || session_relay_gate_new(s, filtered) != 0) {
        free(filtered);
        session_bye(s, "[UNAVAILABLE] Out of memory", "out of memory");
        return;
    }
    session_set_state(s, SESSION_RELAY);
    if (s->login_flags & SESSION_L_COUNTED) {
        dir_bf_settle(s->env->dir, s->user, s->client_ip, DIR_BF_SUCCESS);
    }
    session_login_clear(s);
    if (s->client != NULL) {
        conn_set_wipe(s->client, 0); /* no credentials come after this */
    }
    s->env->stats.logins_ok++;
    session_login_metrics(s, METRICS_LOGIN_OK);
    imap_scan_init(&s->backend_scan);
    /* the list of the login OK, wherever the backend sends one again */
    capa_rewrite_init(&s->capa_rw, s->cfg->relay.compress ? "COMPRESS=DEFLATE" : "");
    s->last_backend_data = uv_now(s->env->loop);
    session_log(s, LOG_INFO, "login ok (%s%s%s%s)",
                s->client != NULL && conn_is_tls(s->client) ? conn_tls_version(s->client)
                                                            : "cleartext",
                cached ? ", session cache" : "",
                s->auth_user[0] != '\0' ? ", with the credentials of " : "", s->auth_user);
    session_audit_preauth_end(s);
    session_audit_event(s, "login", "ok", cached ? "session cache" : NULL);
    /* the tagged OK and anything the backend already sent go out together */
    session_sendf(s, "%s OK [CAPABILITY %s] Logged in\r\n", s->tag, filtered);
    if (s->flags & SESSION_F_PARK_OK) {
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
    s->last_activity = uv_now(s->env->loop);
    session_set_deadline(s, s->cfg->idle_timeout_ms);
    conn_read_start(s->backend);
    if (s->inbuf != NULL) {
        /* commands the client pipelined after its login pass the gate too */
        uint8_t *in = s->inbuf;
        size_t in_len = s->inbuf_len;
        s->inbuf = NULL;
        s->inbuf_len = 0;
        s->bytes_in += in_len;
        metrics_relay_bytes(1, in_len);
        session_relay_feed(s, in, in_len);
        free(in);
    }
    if (s->state == SESSION_RELAY && (s->flags & SESSION_F_KICK)) {
        /* kicked while logging in */
        s->kick_at = uv_now(s->env->loop);
        session_kick_check(s);
    } else if (s->state == SESSION_RELAY) {
        session_read_client(s);
    }
}

void session_relay_free(struct session *s)
{
    imap_check_free(s->check);
    s->check = NULL;
    session_relay_held_clear(s);
    free(s->cin);
    s->cin = NULL;
    free(s->answers);
    s->answers = NULL;
    capa_rewrite_cleanup(&s->capa_rw);
}
