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
#include "common/imap_scan.h"
#include "common/log.h"
#include "proxy/conn.h"
#include "proxy/sesscache.h"

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
int session_cache_hit(struct session *s)
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
int session_cmd_parkable(const uint8_t *head, size_t len)
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
int session_try_park(struct session *s, const uint8_t *data, size_t len)
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
