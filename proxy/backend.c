#include "proxy/backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>


#include "common/capa.h"
#include "common/imap_syntax.h"
#include "common/log.h"
#include "common/sasl_oauth.h"
#include "common/sasl_plain.h"
#include "common/secret.h"
#include "proxy/conn.h"
#include "proxy/metrics.h"

#define BACKEND_MAX_LINE_LEN 65536 /* bytes of one backend line during login */
#define BACKEND_MAX_CAPA_LEN 4096  /* bytes of a capability list we keep */

enum backend_state {
    BS_RESOLVE,       /* getaddrinfo running */
    BS_CONNECT,       /* TCP connect running */
    BS_TLS,           /* implicit TLS handshake */
    BS_GREETING,      /* waiting for "* OK" */
    BS_STARTTLS,      /* "S STARTTLS" sent, waiting for its completion */
    BS_STARTTLS_TLS,  /* handshake after STARTTLS */
    BS_CAPABILITY,    /* "C CAPABILITY" sent */
    BS_AUTH_CONTINUE, /* a command waits for "+" before its next part */
    BS_LOGIN,         /* login sent, waiting for its completion */
    BS_POST_CAPA,     /* "P CAPABILITY" after login (no capabilities in the OK) */
    BS_READY,         /* warm: greeted, capabilities known, waiting for a login */
    BS_ID_PENDING,    /* warm connection taken; the login starts on the next turn */
    BS_PING,          /* warm: "H NOOP" sent as a health check */
    BS_DONE,          /* reported; nothing more happens */
};

static const char *const backend_state_names[] = {
    "resolve", "connect", "tls", "greeting", "starttls", "starttls-tls", "capability",
    "auth-continue", "login", "post-capability", "ready", "id-pending", "ping", "done",
};
_Static_assert(sizeof(backend_state_names) / sizeof(backend_state_names[0]) == BS_DONE + 1,
               "a name per backend state");

#define BACKEND_F_FREED   (1u << 0) /* backend_free called */
#define BACKEND_F_TAKEN   (1u << 1) /* conn handed to the caller */
#define BACKEND_F_GAI     (1u << 2) /* getaddrinfo outstanding */
#define BACKEND_F_LITERAL (1u << 3) /* skipping a server literal */
#define BACKEND_F_DEFER   (1u << 4) /* the timer reports a failure found in backend_login */
#define BACKEND_F_PREPARE (1u << 5) /* stop at BS_READY (a warm pool connection) */
#define BACKEND_F_RESUME  (1u << 6) /* the timer starts the login on a warm connection */

struct backend {
    uv_loop_t *loop;
    uv_timer_t timer;               /* phase timeout and deferred reports; timer.data = this */
    uv_getaddrinfo_t gai;           /* gai.data = this */
    struct conn *conn;              /* owned until taken; NULL once closed */
    backend_done_cb cb;
    void *ctx;
    const struct config_backend *cfg;
    char host[256];                 /* the host of cfg chosen for this login */
    uint16_t port;
    SSL_CTX *tls_ctx;
    enum backend_state state;
    uint32_t flags;                 /* BACKEND_F_* */
    int pending;                    /* handles not yet closed (timer, conn) */
    unsigned greeting_timeout_ms;

    char *authzid, *user, *password;/* owned, wiped in backend_release */
    char *client_ip, *local_ip;
    uint16_t client_port, local_port;

    char *line;                     /* current backend line; bounded */
    size_t line_len, line_cap;
    size_t literal_left;            /* bytes of a server literal to skip */
    char *capa;                     /* last capability list seen (malloc'd, at most
                                       BACKEND_MAX_CAPA_LEN - 1 bytes), or NULL: an
                                       in-flight login or a warm connection holds only
                                       what the backend announced */
    int capa_known;                 /* capa holds the list valid now */
    const char *literal;            /* "LITERAL+" or "LITERAL-" if any list announced it
                                       (Dovecot names them before login only), or NULL */
    char *next_part;                /* sent after a "+" (wiped), or NULL */
    uint8_t *rest;                  /* bytes after the tagged OK of the login */
    size_t rest_len;

    uint8_t *proxy_header;          /* written at connect (owned), or NULL */
    size_t proxy_header_len;
    const char *deferred_reason;    /* with BACKEND_F_DEFER */
    char session[32];               /* id of the session it logs in for; "" for a warm one */
    int oauth;                      /* password is an OAuth token (backend_send_oauth) */

    int metrics_host;               /* metrics_backend_host of host:port */
    uint64_t connect_t0_ns;         /* uv_hrtime at the start; 0 once ready */
    uint64_t login_t0_ns;           /* uv_hrtime when the login was sent; 0 before */
};

/* backend_metrics_report counts how the connection ended, by the state it
 * was in (before the state becomes BS_DONE). */
static void backend_metrics_report(const struct backend *b, enum backend_status st)
{
    static const enum metrics_backend_phase phase_of[] = {
        [BS_RESOLVE] = METRICS_BE_RESOLVE,     [BS_CONNECT] = METRICS_BE_CONNECT,
        [BS_TLS] = METRICS_BE_TLS,             [BS_GREETING] = METRICS_BE_GREETING,
        [BS_STARTTLS] = METRICS_BE_GREETING,   [BS_STARTTLS_TLS] = METRICS_BE_TLS,
        [BS_CAPABILITY] = METRICS_BE_GREETING, [BS_AUTH_CONTINUE] = METRICS_BE_LOGIN,
        [BS_LOGIN] = METRICS_BE_LOGIN,         [BS_POST_CAPA] = METRICS_BE_LOGIN,
        [BS_READY] = METRICS_BE_LOST,          [BS_ID_PENDING] = METRICS_BE_LOGIN,
        [BS_PING] = METRICS_BE_LOST,           [BS_DONE] = METRICS_BE_LOST,
    };
    _Static_assert(sizeof(phase_of) / sizeof(phase_of[0]) == BS_DONE + 1,
                   "a metrics phase per backend state");
    if (st == BACKEND_OK) {
        if (b->login_t0_ns != 0) {
            metrics_backend_logged_in(b->metrics_host, uv_hrtime() - b->login_t0_ns);
        }
    } else if (st == BACKEND_AUTH_FAILED) {
        metrics_backend_failed(b->metrics_host, METRICS_BE_REFUSED);
    } else {
        metrics_backend_failed(b->metrics_host, phase_of[b->state]);
    }
}

static void backend_on_timer(uv_timer_t *t);

/* backend_log writes one line with the backend's context first. */
static void backend_log(const struct backend *b, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void backend_log(const struct backend *b, int level, const char *fmt, ...)
{
    char prefix[400];
    va_list ap;
    if (!log_enabled(level)) {
        return;
    }
    snprintf(prefix, sizeof(prefix), "%s%s%sbackend=%s(%s:%u) state=%s: ",
             b->session[0] != '\0' ? "session=" : "", b->session,
             b->session[0] != '\0' ? " " : "", b->cfg->name, b->host, (unsigned)b->port,
             backend_state_names[b->state]);
    va_start(ap, fmt);
    log_vmsg(level, prefix, fmt, ap);
    va_end(ap);
}

static void backend_set_state(struct backend *b, enum backend_state st)
{
    if (log_enabled(LOG_DEBUG)) {
        backend_log(b, LOG_DEBUG, "-> %s", backend_state_names[st]);
    }
    b->state = st;
}
static void backend_send_login(struct backend *b);
static void backend_after_capa(struct backend *b);

static void backend_release(struct backend *b)
{
    secret_free_str(b->authzid);
    secret_free_str(b->user);
    secret_free_str(b->password);
    secret_free_str(b->next_part);
    free(b->client_ip);
    free(b->local_ip);
    free(b->proxy_header);
    free(b->line);
    free(b->rest);
    free(b->capa);
    free(b);
}

static void backend_maybe_release(struct backend *b)
{
    if ((b->flags & BACKEND_F_FREED) && b->pending == 0 && !(b->flags & BACKEND_F_GAI)) {
        backend_release(b);
    }
}

static void backend_on_timer_close(uv_handle_t *h)
{
    struct backend *b = h->data;
    b->pending--;
    backend_maybe_release(b);
}

/* backend_report ends the login: calls back unless freed already. */
static void backend_report(struct backend *b, enum backend_status st, const char *code,
                           const char *reason)
{
    if (b->state == BS_DONE) {
        return;
    }
    backend_metrics_report(b, st);
    backend_set_state(b, BS_DONE);
    uv_timer_stop(&b->timer);
    if (st != BACKEND_OK && b->conn != NULL) {
        conn_close(b->conn, CONN_CLOSE_NOW);
    }
    if (!(b->flags & BACKEND_F_FREED)) {
        b->cb(b->ctx, st, code, reason);
    }
}

static void backend_fail(struct backend *b, const char *reason)
{
    backend_report(b, BACKEND_UNAVAILABLE, NULL, reason);
}

/* backend_defer_fail reports on the next loop turn: the callback must not
 * run inside backend_login. */
static void backend_defer_fail(struct backend *b, const char *reason)
{
    b->flags |= BACKEND_F_DEFER;
    b->deferred_reason = reason;
    uv_timer_start(&b->timer, backend_on_timer, 0, 0);
}

static void backend_on_timer(uv_timer_t *t)
{
    struct backend *b = t->data;
    if (b->flags & BACKEND_F_DEFER) {
        backend_fail(b, b->deferred_reason);
        return;
    }
    if (b->flags & BACKEND_F_RESUME) {
        b->flags &= ~BACKEND_F_RESUME;
        uv_timer_start(&b->timer, backend_on_timer, b->greeting_timeout_ms, 0);
        backend_after_capa(b);
        return;
    }
    switch (b->state) {
    case BS_RESOLVE:
    case BS_CONNECT:
        backend_fail(b, "connect timeout");
        break;
    case BS_TLS:
    case BS_STARTTLS_TLS:
        backend_fail(b, "TLS handshake timeout");
        break;
    case BS_GREETING:
        backend_fail(b, "greeting timeout");
        break;
    default:
        backend_fail(b, "response timeout");
        break;
    }
}

static void backend_send(struct backend *b, const char *text)
{
    (void)conn_write(b->conn, text, strlen(text)); /* failures come as on_eof */
}

/* backend_clear_capa forgets the capability list (a new one is asked for). */
static void backend_clear_capa(struct backend *b)
{
    b->capa_known = 0;
    free(b->capa);
    b->capa = NULL;
}

static void backend_set_capa(struct backend *b, const char *list, size_t len)
{
    if (len >= BACKEND_MAX_CAPA_LEN) {
        len = BACKEND_MAX_CAPA_LEN - 1; /* a longer list is cut; login only needs the start */
    }
    char *c = malloc(len + 1);
    if (c == NULL) {
        backend_clear_capa(b); /* as if none was announced: CAPABILITY is asked */
        return;
    }
    memcpy(c, list, len);
    c[len] = '\0';
    free(b->capa);
    b->capa = c;
    b->capa_known = 1;
    if (capa_has(b->capa, len, "LITERAL+")) {
        b->literal = "LITERAL+";
    } else if (b->literal == NULL && capa_has(b->capa, len, "LITERAL-")) {
        b->literal = "LITERAL-";
    }
}

static int backend_has(const struct backend *b, const char *name)
{
    return b->capa != NULL && capa_has(b->capa, strlen(b->capa), name);
}

/* backend_after_capa runs once the capability list is known. */
static void backend_after_capa(struct backend *b)
{
    char line[512];
    if (b->connect_t0_ns != 0) {
        metrics_backend_connected(b->metrics_host, uv_hrtime() - b->connect_t0_ns);
        b->connect_t0_ns = 0;
    }
    if (b->flags & BACKEND_F_PREPARE) {
        /* a warm connection: wait here for backend_resume_login */
        backend_set_state(b, BS_READY);
        uv_timer_stop(&b->timer);
        b->cb(b->ctx, BACKEND_OK, NULL, "ready");
        return;
    }
    if (b->cfg->forward_id) {
        if (!backend_has(b, "ID")) {
            backend_log(b, LOG_DEBUG, "no ID capability, not forwarding the client address");
        } else {
            /* pipelined with the login: its answer is not waited for, which
               saves a round trip; a refusal does not stop the login */
            snprintf(line, sizeof(line),
                     "I ID (\"x-originating-ip\" \"%s\" \"x-originating-port\" \"%u\" "
                     "\"x-connected-ip\" \"%s\" \"x-connected-port\" \"%u\")\r\n",
                     b->client_ip, (unsigned)b->client_port, b->local_ip,
                     (unsigned)b->local_port);
            backend_send(b, line);
        }
    }
    backend_send_login(b);
}

/* backend_needs_literal: IMAP quoted strings carry 7-bit text without
 * CR, LF or NUL only. */
static int backend_needs_literal(const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x80 || ch == '\r' || ch == '\n') {
            return 1;
        }
    }
    return 0;
}

static void backend_append_quoted(char *out, size_t *off, const char *s)
{
    out[(*off)++] = '"';
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\') {
            out[(*off)++] = '\\';
        }
        out[(*off)++] = *s;
    }
    out[(*off)++] = '"';
}

/* backend_send_oauth logs in with the client's OAuth token (in b->password),
 * by the mechanism the backend announces: the token passes through. */
static void backend_send_oauth(struct backend *b)
{
    int mech = backend_has(b, "AUTH=OAUTHBEARER") ? SASL_OAUTH_BEARER
                                : backend_has(b, "AUTH=XOAUTH2")   ? SASL_OAUTH_XOAUTH2
                                                                   : 0;
    const char *name = mech == SASL_OAUTH_BEARER ? "OAUTHBEARER" : "XOAUTH2";
    size_t b64_len = 0;
    if (mech == 0) {
        backend_fail(b, "backend offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2");
        return;
    }
    char *b64 = sasl_oauth_encode(&b64_len, mech, b->user, b->password);
    size_t n = b64_len + 48;
    char *cmd = b64 != NULL ? malloc(n) : NULL;
    if (cmd == NULL) {
        secret_free(b64, b64 != NULL ? b64_len + 1 : 0);
        backend_fail(b, "out of memory");
        return;
    }
    if (backend_has(b, "SASL-IR")) {
        snprintf(cmd, n, "L AUTHENTICATE %s %s\r\n", name, b64);
    } else {
        snprintf(cmd, n, "%s\r\n", b64);
        b->next_part = cmd;
        cmd = malloc(48);
        if (cmd == NULL) {
            secret_free(b64, b64_len + 1);
            backend_fail(b, "out of memory");
            return;
        }
        n = 48;
        snprintf(cmd, n, "L AUTHENTICATE %s\r\n", name);
        backend_set_state(b, BS_AUTH_CONTINUE);
    }
    backend_send(b, cmd);
    secret_free(cmd, n);
    secret_free(b64, b64_len + 1);
}

static void backend_send_login(struct backend *b)
{
    b->login_t0_ns = uv_hrtime();
    backend_set_state(b, BS_LOGIN);
    if (b->oauth) {
        backend_send_oauth(b);
        return;
    }
    if (backend_has(b, "AUTH=PLAIN")) {
        size_t b64_len = 0;
        char *b64 = sasl_plain_encode(&b64_len, b->authzid != NULL ? b->authzid : "", b->user,
                                      b->password);
        if (b64 == NULL) {
            backend_fail(b, "out of memory");
            return;
        }
        if (backend_has(b, "SASL-IR")) {
            size_t n = b64_len + 32;
            char *cmd = malloc(n);
            if (cmd == NULL) {
                secret_free(b64, b64_len + 1);
                backend_fail(b, "out of memory");
                return;
            }
            snprintf(cmd, n, "L AUTHENTICATE PLAIN %s\r\n", b64);
            backend_send(b, cmd);
            secret_free(cmd, n);
            secret_free(b64, b64_len + 1);
        } else {
            b->next_part = malloc(b64_len + 3);
            if (b->next_part == NULL) {
                secret_free(b64, b64_len + 1);
                backend_fail(b, "out of memory");
                return;
            }
            snprintf(b->next_part, b64_len + 3, "%s\r\n", b64);
            secret_free(b64, b64_len + 1);
            backend_set_state(b, BS_AUTH_CONTINUE);
            backend_send(b, "L AUTHENTICATE PLAIN\r\n");
        }
        return;
    }
    if (backend_has(b, "LOGINDISABLED")) {
        backend_fail(b, "backend offers neither AUTH=PLAIN nor LOGIN");
        return;
    }
    if (b->authzid != NULL && b->authzid[0] != '\0') {
        backend_fail(b, "master-user login needs AUTH=PLAIN on the backend");
        return;
    }
    /* LOGIN user password: quoted strings, or a literal for 8-bit text. */
    size_t ulen = strlen(b->user), plen = strlen(b->password);
    size_t n = 2 * (ulen + plen) + 64;
    char *cmd = malloc(n);
    size_t off = 0;
    if (cmd == NULL) {
        backend_fail(b, "out of memory");
        return;
    }
    off += (size_t)snprintf(cmd, n, "L LOGIN ");
    if (backend_needs_literal(b->user)) {
        /* user literal then password: keep it simple, LITERAL+ or fail */
        if (!backend_has(b, "LITERAL+")) {
            secret_free(cmd, n); /* "L LOGIN " only so far, but one rule for cmd */
            backend_fail(b, "8-bit login name needs AUTH=PLAIN or LITERAL+ on the backend");
            return;
        }
        off += (size_t)snprintf(cmd + off, n - off, "{%zu+}\r\n%s", ulen, b->user);
    } else {
        backend_append_quoted(cmd, &off, b->user);
    }
    cmd[off++] = ' ';
    if (backend_needs_literal(b->password)) {
        if (backend_has(b, "LITERAL+") || backend_has(b, "LITERAL-")) {
            off += (size_t)snprintf(cmd + off, n - off, "{%zu+}\r\n%s\r\n", plen, b->password);
            cmd[off] = '\0';
            backend_send(b, cmd);
        } else {
            off += (size_t)snprintf(cmd + off, n - off, "{%zu}\r\n", plen);
            cmd[off] = '\0';
            b->next_part = malloc(plen + 3);
            if (b->next_part == NULL) {
                secret_free(cmd, n);
                backend_fail(b, "out of memory");
                return;
            }
            snprintf(b->next_part, plen + 3, "%s\r\n", b->password);
            backend_set_state(b, BS_AUTH_CONTINUE);
            backend_send(b, cmd);
        }
    } else {
        backend_append_quoted(cmd, &off, b->password);
        cmd[off++] = '\r';
        cmd[off++] = '\n';
        cmd[off] = '\0';
        backend_send(b, cmd);
    }
    secret_free(cmd, n);
}

static void backend_query_capa(struct backend *b, enum backend_state st)
{
    backend_set_state(b, st);
    backend_clear_capa(b);
    backend_send(b, st == BS_POST_CAPA ? "P CAPABILITY\r\n" : "C CAPABILITY\r\n");
}

/* backend_tagged parses "<tag> <status> [<code> ...] text"; returns the
 * status word (OK, NO, BAD) or NULL if the line is not tagged with tag. */
static const char *backend_tagged(const char *line, const char *tag, const char **out_text)
{
    size_t tl = strlen(tag);
    if (strncmp(line, tag, tl) != 0 || line[tl] != ' ') {
        return NULL;
    }
    const char *st = line + tl + 1;
    if (strncasecmp(st, "OK", 2) == 0 && (st[2] == ' ' || st[2] == '\0')) {
        *out_text = st[2] == ' ' ? st + 3 : st + 2;
        return "OK";
    }
    if (strncasecmp(st, "NO", 2) == 0 && (st[2] == ' ' || st[2] == '\0')) {
        *out_text = st[2] == ' ' ? st + 3 : st + 2;
        return "NO";
    }
    *out_text = st;
    return "BAD";
}

/* backend_refusal_code picks a known response code from a refusal text. */
static const char *backend_refusal_code(const char *text)
{
    static const char *const codes[] = {
        "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED",
        "CONTACTADMIN", "LIMIT", "UNAVAILABLE", "SERVERBUG", "INUSE",
    };
    if (text[0] != '[') {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        size_t n = strlen(codes[i]);
        if (strncasecmp(text + 1, codes[i], n) == 0 && (text[1 + n] == ']' || text[1 + n] == ' ')) {
            return codes[i];
        }
    }
    return NULL;
}

static void backend_capa_from_text(struct backend *b, const char *text)
{
    size_t n = 0;
    const char *list = capa_find_in_text(&n, text, strlen(text));
    if (list != NULL) {
        backend_set_capa(b, list, n);
    }
}

/* What backend_on_line asks of the read loop. */
enum backend_line_result {
    BACKEND_LINE_NEXT,      /* go on with the next line (or the report was made) */
    BACKEND_LINE_LOGGED_IN, /* the login finished: keep the rest of the input */
    BACKEND_LINE_STARTTLS,  /* STARTTLS accepted: nothing may follow in cleartext */
};

/* backend_on_line handles one complete line (without CRLF) and returns what
 * the read loop must do next. */
static enum backend_line_result backend_on_line(struct backend *b, const char *line)
{
    const char *text = NULL;
    const char *st;

    if (strncmp(line, "* ", 2) == 0) {
        if (strncasecmp(line + 2, "CAPABILITY ", 11) == 0) {
            backend_set_capa(b, line + 13, strlen(line + 13));
        } else if (imap_syntax_is_bye((const uint8_t *)line, strlen(line))) {
            backend_fail(b, "backend said BYE");
            return BACKEND_LINE_NEXT;
        } else if (b->state == BS_GREETING) {
            if (strncasecmp(line + 2, "OK", 2) != 0) {
                backend_fail(b, "unexpected backend greeting");
                return BACKEND_LINE_NEXT;
            }
            backend_capa_from_text(b, line + 4 + (line[4] == ' '));
            uv_timer_start(&b->timer, backend_on_timer, b->greeting_timeout_ms, 0);
            if (b->cfg->tls == CONFIG_BACKEND_TLS_STARTTLS) {
                backend_set_state(b, BS_STARTTLS);
                backend_send(b, "S STARTTLS\r\n");
            } else if (b->capa_known) {
                backend_after_capa(b);
            } else {
                backend_query_capa(b, BS_CAPABILITY);
            }
        }
        return BACKEND_LINE_NEXT;
    }
    if (line[0] == '+') {
        if (b->state == BS_AUTH_CONTINUE && b->next_part != NULL) {
            backend_set_state(b, BS_LOGIN);
            backend_send(b, b->next_part);
            secret_free_str(b->next_part);
            b->next_part = NULL;
        } else if (b->oauth && b->state == BS_LOGIN) {
            /* the error challenge of RFC 7628 3.2.2: the dummy reply, then the NO */
            backend_send(b, "AQ==\r\n");
        } else {
            backend_send(b, "*\r\n"); /* a challenge we did not expect: cancel */
        }
        return BACKEND_LINE_NEXT;
    }
    switch (b->state) {
    case BS_STARTTLS:
        if ((st = backend_tagged(line, "S", &text)) == NULL) {
            break;
        }
        if (strcmp(st, "OK") != 0) {
            backend_fail(b, "backend refused STARTTLS");
            return BACKEND_LINE_NEXT;
        }
        /* the handshake starts in backend_on_read, which alone knows
           whether cleartext follows this line */
        return BACKEND_LINE_STARTTLS;
    case BS_CAPABILITY:
    case BS_POST_CAPA:
        st = backend_tagged(line, b->state == BS_CAPABILITY ? "C" : "P", &text);
        if (st == NULL) {
            break;
        }
        if (strcmp(st, "OK") != 0 || !b->capa_known) {
            backend_fail(b, "backend CAPABILITY failed");
            return BACKEND_LINE_NEXT;
        }
        if (b->state == BS_POST_CAPA) {
            return BACKEND_LINE_LOGGED_IN;
        }
        backend_after_capa(b);
        return BACKEND_LINE_NEXT;
    case BS_READY:
        break;
    case BS_PING:
        if (backend_tagged(line, "H", &text) != NULL) {
            backend_set_state(b, BS_READY); /* any answer shows the backend alive */
            uv_timer_stop(&b->timer);
            return BACKEND_LINE_NEXT;
        }
        break;
    case BS_LOGIN:
    case BS_AUTH_CONTINUE:
        if (backend_tagged(line, "I", &text) != NULL) {
            return BACKEND_LINE_NEXT; /* the answer to the pipelined ID */
        }
        if ((st = backend_tagged(line, "L", &text)) == NULL) {
            break;
        }
        if (strcmp(st, "OK") == 0) {
            backend_clear_capa(b);
            backend_capa_from_text(b, text);
            if (b->capa_known) {
                return BACKEND_LINE_LOGGED_IN;
            }
            backend_query_capa(b, BS_POST_CAPA);
            return BACKEND_LINE_NEXT;
        }
        {
            const char *code = backend_refusal_code(text);
            if (code != NULL && strcmp(code, "UNAVAILABLE") == 0) {
                backend_fail(b, "backend answered UNAVAILABLE");
            } else {
                backend_report(b, BACKEND_AUTH_FAILED,
                               code != NULL ? code : "AUTHENTICATIONFAILED",
                               strcmp(st, "NO") == 0 ? "backend refused the login"
                                                     : "backend rejected the login command");
            }
        }
        return BACKEND_LINE_NEXT;
    default:
        break;
    }
    backend_log(b, LOG_DEBUG, "unexpected line in login phase");
    return BACKEND_LINE_NEXT;
}

/* backend_line_literal returns n if line ends with "{n}" or "{n+}", else -1. */
static long backend_line_literal(const char *line, size_t len)
{
    if (len < 3 || line[len - 1] != '}') {
        return -1;
    }
    size_t i = len - 1;
    if (i > 0 && line[i - 1] == '+') {
        i--;
    }
    size_t end = i;
    while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9') {
        i--;
    }
    if (i == end || i == 0 || line[i - 1] != '{' || end - i > 9) {
        return -1;
    }
    return strtol(line + i, NULL, 10);
}

/* backend_begin_tls_after_starttls runs after the tagged OK to STARTTLS;
 * trailing is the count of cleartext bytes that came after it in the same
 * read.  The server must wait for our ClientHello, so any such byte was
 * sent before TLS by the backend or by someone on the path, and nothing of it
 * may be taken as the backend's word (RFC 9051 section 11.1; RFC 3207 gives
 * the same rule for SMTP): the login fails.  Otherwise everything learned in
 * cleartext is forgotten (the line parser, a skipped literal, the
 * capabilities; they are asked again over TLS) and the handshake starts. */
static void backend_begin_tls_after_starttls(struct backend *b, size_t trailing)
{
    if (trailing > 0) {
        backend_log(b, LOG_WARNING, "%zu cleartext bytes after the STARTTLS answer", trailing);
        backend_fail(b, "backend sent data after its STARTTLS answer");
        return;
    }
    backend_set_state(b, BS_STARTTLS_TLS);
    free(b->line);
    b->line = NULL;
    b->line_len = 0;
    b->line_cap = 0;
    b->literal_left = 0;
    b->flags &= ~BACKEND_F_LITERAL;
    backend_clear_capa(b);
    if (conn_start_tls(b->conn, b->tls_ctx, CONN_TLS_CLIENT,
                       b->cfg->server_name != NULL ? b->cfg->server_name : b->host) != 0) {
        backend_fail(b, "out of memory");
    }
}

static void backend_on_read(void *ctx, const uint8_t *data, size_t len)
{
    struct backend *b = ctx;
    size_t i = 0;

    while (i < len && b->state != BS_DONE) {
        if (b->flags & BACKEND_F_LITERAL) {
            size_t n = len - i < b->literal_left ? len - i : b->literal_left;
            i += n;
            b->literal_left -= n;
            if (b->literal_left == 0) {
                b->flags &= ~BACKEND_F_LITERAL;
            }
            continue;
        }
        uint8_t ch = data[i++];
        if (ch != '\n') {
            if (b->line_len + 1 >= BACKEND_MAX_LINE_LEN) {
                backend_fail(b, "backend line too long");
                return;
            }
            if (b->line_len + 1 >= b->line_cap) {
                size_t cap = b->line_cap == 0 ? 256 : b->line_cap * 2;
                char *nl = realloc(b->line, cap);
                if (nl == NULL) {
                    backend_fail(b, "out of memory");
                    return;
                }
                b->line = nl;
                b->line_cap = cap;
            }
            b->line[b->line_len++] = (char)ch;
            continue;
        }
        size_t l = b->line_len;
        if (l > 0 && b->line[l - 1] == '\r') {
            l--;
        }
        if (b->line == NULL) {
            continue; /* an empty line; ignore */
        }
        b->line[l] = '\0';
        b->line_len = 0;
        long lit = backend_line_literal(b->line, l);
        if (lit > 0) {
            /* a literal inside an untagged response: skip it, the rest of the
               response follows on its own line */
            b->literal_left = (size_t)lit;
            b->flags |= BACKEND_F_LITERAL;
            continue;
        }
        enum backend_line_result r = backend_on_line(b, b->line);
        if (r == BACKEND_LINE_STARTTLS) {
            backend_begin_tls_after_starttls(b, len - i);
            return;
        }
        if (r == BACKEND_LINE_LOGGED_IN) {
            if (i < len) {
                b->rest = malloc(len - i);
                if (b->rest == NULL) {
                    backend_fail(b, "out of memory");
                    return;
                }
                memcpy(b->rest, data + i, len - i);
                b->rest_len = len - i;
            }
            conn_read_stop(b->conn);
            backend_report(b, BACKEND_OK, NULL, "logged in");
            return;
        }
    }
}

static void backend_on_handshake(void *ctx, int status)
{
    struct backend *b = ctx;
    if (status != 0) {
        backend_log(b, LOG_WARNING, "TLS handshake failed: %s", conn_tls_error(b->conn));
        backend_fail(b, "backend TLS handshake failed");
        return;
    }
    if (b->state == BS_TLS) {
        backend_set_state(b, BS_GREETING);
    } else {
        backend_query_capa(b, BS_CAPABILITY);
    }
}

static void backend_on_eof(void *ctx, int status)
{
    struct backend *b = ctx;
    (void)status;
    backend_fail(b, "backend closed the connection");
}

static void backend_on_drain(void *ctx)
{
    (void)ctx;
}

static void backend_on_conn_close(void *ctx)
{
    struct backend *b = ctx;
    b->conn = NULL;
    b->pending--;
    backend_maybe_release(b);
}

static void backend_on_connect(void *ctx, int status)
{
    struct backend *b = ctx;
    if (status != 0) {
        backend_log(b, LOG_WARNING, "connect failed: %s", uv_strerror(status));
        backend_fail(b, "backend connect failed");
        return;
    }
    uv_timer_start(&b->timer, backend_on_timer, b->greeting_timeout_ms, 0);
    if (conn_read_start(b->conn) != 0) {
        backend_fail(b, "backend read failed");
        return;
    }
    if (b->proxy_header != NULL) {
        /* in clear, before anything else, as the PROXY protocol wants */
        if (conn_write(b->conn, b->proxy_header, b->proxy_header_len) != 0) {
            backend_fail(b, "backend write failed");
            return;
        }
    }
    if (b->cfg->tls == CONFIG_BACKEND_TLS_IMPLICIT) {
        backend_set_state(b, BS_TLS);
        if (conn_start_tls(b->conn, b->tls_ctx, CONN_TLS_CLIENT,
                           b->cfg->server_name != NULL ? b->cfg->server_name : b->host) != 0) {
            backend_fail(b, "out of memory");
        }
    } else {
        backend_set_state(b, BS_GREETING);
    }
}

static const struct conn_ops backend_conn_ops = {
    .on_connect = backend_on_connect,
    .on_handshake = backend_on_handshake,
    .on_read = backend_on_read,
    .on_eof = backend_on_eof,
    .on_drain = backend_on_drain,
    .on_close = backend_on_conn_close,
};

static void backend_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct backend *b = req->data;
    b->flags &= ~BACKEND_F_GAI;
    if (b->flags & BACKEND_F_FREED) {
        uv_freeaddrinfo(res);
        backend_maybe_release(b);
        return;
    }
    if (status != 0 || res == NULL) {
        backend_log(b, LOG_WARNING, "cannot resolve the host: %s", uv_strerror(status));
        uv_freeaddrinfo(res);
        backend_fail(b, "backend host not resolved");
        return;
    }
    b->conn = conn_new(b->loop, &backend_conn_ops, b);
    if (b->conn == NULL) {
        uv_freeaddrinfo(res);
        backend_fail(b, "out of memory");
        return;
    }
    /* the login command carries the credentials: a copy queued for the
       socket is wiped once written (with TLS only ciphertext is queued) */
    conn_set_wipe(b->conn, 1);
    b->pending++;
    backend_set_state(b, BS_CONNECT);
    int r = conn_connect(b->conn, res->ai_addr);
    uv_freeaddrinfo(res);
    if (r != 0) {
        backend_log(b, LOG_WARNING, "connect failed: %s", uv_strerror(r));
        backend_fail(b, "backend connect failed");
    }
}

static char *backend_strdup(const char *s)
{
    return strdup(s != NULL ? s : "");
}

static struct backend *backend_start(uv_loop_t *loop, const struct backend_login_params *p,
                                     backend_done_cb cb, void *ctx, uint32_t flags)
{
    struct backend *b = calloc(1, sizeof(*b));
    char port[8];
    struct addrinfo hints;

    if (b == NULL) {
        return NULL;
    }
    b->loop = loop;
    b->cb = cb;
    b->ctx = ctx;
    b->flags = flags;
    b->cfg = p->cfg;
    snprintf(b->host, sizeof(b->host), "%s", p->host != NULL ? p->host : p->cfg->host);
    b->port = p->host != NULL ? p->port : p->cfg->port;
    b->tls_ctx = p->tls_ctx;
    snprintf(b->session, sizeof(b->session), "%s", p->session_id != NULL ? p->session_id : "");
    b->metrics_host = metrics_backend_host(b->cfg->name, b->host, b->port);
    b->connect_t0_ns = uv_hrtime();
    b->greeting_timeout_ms = p->greeting_timeout_ms;
    b->client_port = p->client_port;
    b->local_port = p->local_port;
    b->authzid = p->authzid != NULL && p->authzid[0] != '\0' ? strdup(p->authzid) : NULL;
    b->user = backend_strdup(p->user);
    b->password = backend_strdup(p->password);
    b->client_ip = backend_strdup(p->client_ip);
    b->local_ip = backend_strdup(p->local_ip);
    b->oauth = p->oauth;
    if (p->proxy_header != NULL && p->proxy_header_len > 0) {
        b->proxy_header = malloc(p->proxy_header_len);
        if (b->proxy_header != NULL) {
            memcpy(b->proxy_header, p->proxy_header, p->proxy_header_len);
            b->proxy_header_len = p->proxy_header_len;
        }
    }
    if (b->user == NULL || b->password == NULL || b->client_ip == NULL || b->local_ip == NULL ||
        (p->proxy_header != NULL && p->proxy_header_len > 0 && b->proxy_header == NULL) ||
        (p->authzid != NULL && p->authzid[0] != '\0' && b->authzid == NULL)) {
        backend_release(b);
        return NULL;
    }
    uv_timer_init(loop, &b->timer);
    b->timer.data = b;
    b->pending = 1;
    b->gai.data = b;
    backend_set_state(b, BS_RESOLVE);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%u", (unsigned)b->port);
    int r = uv_getaddrinfo(loop, &b->gai, backend_on_resolved, b->host, port, &hints);
    if (r != 0) {
        backend_defer_fail(b, "backend host not resolved");
        return b;
    }
    b->flags |= BACKEND_F_GAI;
    uv_timer_start(&b->timer, backend_on_timer, p->connect_timeout_ms, 0);
    return b;
}

struct backend *backend_login(uv_loop_t *loop, const struct backend_login_params *p,
                              backend_done_cb cb, void *ctx)
{
    return backend_start(loop, p, cb, ctx, 0);
}

struct backend *backend_prepare(uv_loop_t *loop, const struct backend_login_params *p,
                                backend_done_cb cb, void *ctx)
{
    return backend_start(loop, p, cb, ctx, BACKEND_F_PREPARE);
}

int backend_is_ready(const struct backend *b)
{
    return b->state == BS_READY;
}

void backend_ping(struct backend *b)
{
    if (b->state != BS_READY) {
        return;
    }
    backend_set_state(b, BS_PING);
    uv_timer_start(&b->timer, backend_on_timer, b->greeting_timeout_ms, 0);
    backend_send(b, "H NOOP\r\n");
}

/* backend_swap replaces *dst by a copy of src (the old one wiped). */
static int backend_swap(char **dst, const char *src)
{
    char *d = backend_strdup(src);
    if (d == NULL) {
        return -1;
    }
    secret_free_str(*dst);
    *dst = d;
    return 0;
}

int backend_resume_login(struct backend *b, const struct backend_login_params *p,
                         backend_done_cb cb, void *ctx)
{
    if (b->state != BS_READY) {
        return -1;
    }
    if (backend_swap(&b->user, p->user) != 0 || backend_swap(&b->password, p->password) != 0 ||
        backend_swap(&b->client_ip, p->client_ip) != 0 ||
        backend_swap(&b->local_ip, p->local_ip) != 0) {
        return -1;
    }
    if (p->authzid != NULL && p->authzid[0] != '\0') {
        if (backend_swap(&b->authzid, p->authzid) != 0) {
            return -1;
        }
    } else if (b->authzid != NULL) {
        secret_free_str(b->authzid);
        b->authzid = NULL;
    }
    b->client_port = p->client_port;
    b->local_port = p->local_port;
    b->oauth = p->oauth;
    b->greeting_timeout_ms = p->greeting_timeout_ms;
    snprintf(b->session, sizeof(b->session), "%s", p->session_id != NULL ? p->session_id : "");
    b->cb = cb;
    b->ctx = ctx;
    b->flags &= ~BACKEND_F_PREPARE;
    b->flags |= BACKEND_F_RESUME;
    backend_set_state(b, BS_ID_PENDING);
    /* the login starts on the next loop turn: no callback from within */
    uv_timer_start(&b->timer, backend_on_timer, 0, 0);
    return 0;
}

const char *backend_literal(const struct backend *b)
{
    return b->literal;
}

struct conn *backend_take_conn(struct backend *b, const char **out_capa,
                               const uint8_t **out_rest, size_t *out_rest_len)
{
    struct conn *c = b->conn;
    conn_set_wipe(c, 0); /* mail from here on: the relay's cost, not the login's */
    b->flags |= BACKEND_F_TAKEN;
    b->conn = NULL;
    b->pending--;
    *out_capa = b->capa != NULL ? b->capa : "";
    *out_rest = b->rest;
    *out_rest_len = b->rest_len;
    return c;
}

void backend_free(struct backend *b)
{
    if (b == NULL) {
        return;
    }
    b->flags |= BACKEND_F_FREED;
    backend_set_state(b, BS_DONE);
    if (b->flags & BACKEND_F_GAI) {
        uv_cancel((uv_req_t *)&b->gai);
    }
    if (b->conn != NULL) {
        conn_close(b->conn, CONN_CLOSE_NOW);
    }
    if (!uv_is_closing((uv_handle_t *)&b->timer)) {
        uv_close((uv_handle_t *)&b->timer, backend_on_timer_close);
    }
}

void backend_set_config(struct backend *b, const struct config_backend *cfg)
{
    b->cfg = cfg;
}
