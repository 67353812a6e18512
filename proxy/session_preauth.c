/* session_preauth: the commands imapmux answers itself before login
 * (CAPABILITY, NOOP, ID, STARTTLS, LOGOUT, LOGIN, AUTHENTICATE PLAIN).  Input
 * is buffered (bounded) and parsed incrementally; a LOGIN or AUTHENTICATE
 * hands over to session_login_start, and a refused login comes back through
 * session_preauth_resume. */
#include "proxy/session_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include <openssl/mem.h>

#include "common/imap_parser.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/sasl_plain.h"
#include "proxy/conn.h"

#define SESSION_CAPA_CLEAR "IMAP4rev1 ID LITERAL+ STARTTLS LOGINDISABLED"
#define SESSION_CAPA_TLS "IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN"

static void session_preauth_process(struct session *s);

static const char *session_preauth_capa(const struct session *s)
{
    if ((s->flags & SESSION_F_TLS) && session_oauth_capa(s)[0] != '\0') {
        /* one buffer per thread: the list is copied out before the next call */
        static _Thread_local char capa[sizeof(SESSION_CAPA_TLS) + 64];
        snprintf(capa, sizeof(capa), "%s%s", SESSION_CAPA_TLS, session_oauth_capa(s));
        return capa;
    }
    return (s->flags & SESSION_F_TLS) ? SESSION_CAPA_TLS : SESSION_CAPA_CLEAR;
}

void session_preauth_start(struct session *s)
{
    if (s->conncap_refused != CONNCAP_OK) {
        /* over a connection cap: a clear word instead of the greeting */
        session_bye(s, conncap_bye(s->conncap_refused), conncap_reason(s->conncap_refused));
        return;
    }
    session_set_state(s, SESSION_PREAUTH);
    session_sendf(s, "* OK [CAPABILITY %s] imapmux ready\r\n", session_preauth_capa(s));
}

void session_preauth_input(struct session *s, const uint8_t *data, size_t len)
{
    if (s->inbuf_len + len > SESSION_MAX_INBUF_LEN) {
        /* cannot happen while reads stop during a login; a guard all the same */
        session_bye(s, "Too much input", "input buffer full");
        return;
    }
    uint8_t *nb = secret_grow(s->inbuf, s->inbuf_len, s->inbuf_len + len); /* a LOGIN line may be in it */
    if (nb == NULL) {
        session_bye(s, "[UNAVAILABLE] Out of memory", "out of memory");
        return;
    }
    s->inbuf = nb;
    memcpy(s->inbuf + s->inbuf_len, data, len);
    s->inbuf_len += len;
    session_preauth_process(s);
}

void session_preauth_drained(struct session *s)
{
    if (!(s->flags & SESSION_F_OUT_FULL)) {
        return;
    }
    s->flags &= ~SESSION_F_OUT_FULL;
    session_preauth_process(s);
    if (s->state == SESSION_PREAUTH && !(s->flags & SESSION_F_OUT_FULL)) {
        session_read_client(s);
    }
}

void session_preauth_resume(struct session *s)
{
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
    session_preauth_process(s);
    if (s->state == SESSION_PREAUTH) {
        session_read_client(s);
    }
}

static int session_arg_is_string(const struct imap_arg *a)
{
    return a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_QUOTED || a->type == IMAP_ARG_LITERAL;
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
        s->login_mech = METRICS_MECH_LOGIN;
        snprintf(s->tag, sizeof(s->tag), "%s", tag);
        session_login_refuse(s, LOGIN_REFUSE_NUL_PASSWORD, NULL, NULL);
        return;
    }
    s->login_mech = METRICS_MECH_LOGIN;
    session_login_start(s, tag, NULL, args[0].data, args[0].len, args[1].data);
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
    s->login_mech = METRICS_MECH_PLAIN;
    session_login_start(s, s->tag, sp.authzid, sp.authcid, strlen(sp.authcid), sp.passwd);
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
    int oauth = session_oauth_mech(s, args[0].data);
    if (strcasecmp(args[0].data, "PLAIN") != 0 && oauth == 0) {
        session_sendf(s, "%s NO [CANNOT] Unsupported authentication mechanism\r\n", tag);
        return;
    }
    snprintf(s->tag, sizeof(s->tag), "%s", tag);
    s->oauth_mech = oauth;
    if (oauth != 0 && num_args == 2) {
        session_oauth_start(s, args[1].data, args[1].len);
        return;
    }
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
    session_park_note_id(s, args, num_args);
    session_sendf(s, "* ID (\"name\" \"imapmux\" \"version\" \"%s\")\r\n%s OK ID completed\r\n",
                  IMAPMUX_VERSION, tag);
}

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
    if (conn_start_tls(s->client, s->snap->server_ctx, CONN_TLS_SERVER, s->authority) != 0) {
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
        session_sendf(s, "* CAPABILITY %s\r\n%s OK CAPABILITY completed\r\n", session_preauth_capa(s), tag);
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

/* session_preauth_parser makes the pre-auth parser at the first input
 * (an idle connection before its first command holds none).  Returns 0 or
 * UV_ENOMEM. */
static int session_preauth_parser(struct session *s)
{
    struct imap_parser_limits lim;
    memset(&lim, 0, sizeof(lim));
    lim.max_line_len = s->cfg->max_line_len;
    lim.max_literal_len = s->cfg->max_preauth_literal_len;
    lim.max_command_len = s->cfg->max_line_len + 2 * s->cfg->max_preauth_literal_len;
    lim.max_args = SESSION_MAX_ARGS;
    lim.max_depth = SESSION_MAX_DEPTH;
    lim.max_tag_len = SESSION_MAX_TAG_LEN;
    s->parser = imap_parser_new(&lim);
    return s->parser != NULL ? 0 : UV_ENOMEM;
}

/* session_preauth_process runs pre-auth commands from inbuf while the
 * session is in a state that takes commands; stops when input runs out or a
 * step waits. */
static void session_preauth_process(struct session *s)
{
    size_t off = 0;

    if (s->parser == NULL && s->inbuf_len > 0 && session_preauth_parser(s) != 0) {
        session_close(s, "out of memory");
        return;
    }
    s->flags |= SESSION_F_PROCESSING;
    while (s->state == SESSION_PREAUTH && off < s->inbuf_len && !(s->flags & SESSION_F_OUT_FULL)) {
        size_t used = 0;
        enum imap_parse_result r =
            imap_parser_feed(s->parser, &used, s->inbuf + off, s->inbuf_len - off);
        if (r == IMAP_PARSE_ERROR || r == IMAP_PARSE_FATAL) {
            /* a line imapmux refuses is no command: the tap forgets what it
               saw of it, so that nothing of it (a password sent as a "tag")
               can reach a record */
            if (s->tap != NULL) {
                audit_tap_client_drop(s->tap);
            }
        } else if (session_tap_in(s, s->inbuf + off, used) != 0) {
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
            if (s->flags & SESSION_F_OAUTH_FAIL) {
                /* RFC 7628 section 3.2.3: whatever the client says, the NO */
                session_oauth_reply(s);
            } else if (n == 1 && a[0].len == 1 && a[0].data[0] == '*') {
                s->oauth_mech = 0;
                session_sendf(s, "%s BAD Authentication cancelled\r\n", s->tag);
            } else if (n == 1 && s->oauth_mech != 0) {
                session_oauth_start(s, a[0].data, a[0].len);
                OPENSSL_cleanse((void *)a[0].data, a[0].len);
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
        if (s->state == SESSION_PREAUTH && s->client != NULL &&
            conn_write_queue_len(s->client) > SESSION_PREAUTH_MAX_OUT_LEN) {
            /* a client that sends without reading: its answers wait in our
               memory, so its input waits in its own until it reads */
            s->flags |= SESSION_F_OUT_FULL;
            conn_read_stop(s->client);
            conn_want_drain(s->client, SESSION_PREAUTH_MAX_OUT_LEN / 4);
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
