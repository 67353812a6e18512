/* session_park: the session's side of the session cache.  At a client's
 * LOGOUT a still logged-in backend connection may be parked instead of being
 * logged out (session_park_try); a later login of the same user with the same
 * credentials takes it back (session_park_take, the login's cache step). */
#include "proxy/session_private.h"

#include <string.h>
#include <strings.h>

#include "common/capa.h"
#include "common/imap_scan.h"
#include "common/log.h"
#include "common/parkable.h"
#include "proxy/conn.h"
#include "proxy/sesscache.h"

/* session_park_adopt makes a connection from the cache the session's
 * backend; capa (taken) is the list the client is shown. */
static void session_park_adopt(struct session *s, struct conn *conn, char *capa)
{
    s->backend = conn;
    conn_set_ops(conn, &session_backend_ops, s);
    s->pending++;
    s->cached_capa = capa;
}

/* session_on_cache_ready: a connection this login waited for is reset (conn)
 * or lost (NULL). */
static void session_on_cache_ready(void *ctx, struct conn *conn, char *capa)
{
    struct session *s = ctx;
    s->flags &= ~SESSION_F_CACHE_WAIT;
    if (conn != NULL) {
        session_log(s, LOG_DEBUG, "session cache hit after the reset");
        session_park_adopt(s, conn, capa);
    }
    session_login_cache_ready(s, conn != NULL);
}

enum sesscache_result session_park_take(struct session *s)
{
    char *capa = NULL;
    struct conn *conn = NULL;
    if (s->env->cache == NULL ||
        (s->login_flags & (SESSION_L_UNKNOWN | SESSION_L_BLOCKED | SESSION_L_DISABLED)) ||
        s->auth_user[0] != '\0' || s->route->proxy_protocol != 0) {
        /* a parked connection's PROXY header named the client that opened it */
        return SESSCACHE_MISS;
    }
    sesscache_key(s->cache_key, s->env->cache, s->user, NULL, s->password, s->hash,
                  s->route_name, s->host, s->port);
    s->flags |= SESSION_F_CACHE_KEYED;
    /* the policy decides now, so that a session that will not park keeps
       nothing for it (the capability list) */
    if (sesscache_returning(s->env->cache, s->cache_key) || (s->flags & SESSION_F_PARK_CLIENT)) {
        s->flags |= SESSION_F_PARK_OK;
    }
    enum sesscache_result r = sesscache_take(s->env->cache, s->user, s->cache_key, &conn, &capa,
                                             session_on_cache_ready, s);
    switch (r) {
    case SESSCACHE_MISS:
        break;
    case SESSCACHE_WAIT:
        session_log(s, LOG_DEBUG, "session cache: waiting for a parked connection's reset");
        s->flags |= SESSION_F_CACHE_WAIT;
        break;
    case SESSCACHE_HIT:
        session_log(s, LOG_DEBUG, "session cache hit");
        session_park_adopt(s, conn, capa);
        break;
    }
    return r;
}

void session_park_cancel(struct session *s)
{
    if (s->flags & SESSION_F_CACHE_WAIT) {
        sesscache_cancel(s->env->cache, s);
        s->flags &= ~SESSION_F_CACHE_WAIT;
    }
}

void session_park_note_command(struct session *s, const char *name)
{
    if (s->env->cache != NULL && !parkable_name(name)) {
        s->flags |= SESSION_F_NO_PARK;
    }
}

int session_park_try(struct session *s, const uint8_t *data, size_t len)
{
    if (s->env->cache == NULL || !(s->flags & SESSION_F_CACHE_KEYED)) {
        return 0;
    }
    if (!(s->flags & SESSION_F_PARK_OK)) {
        /* no return was likely: the LOGOUT goes to the backend, and this
           one counts as a sight for the user's next login */
        sesscache_seen(s->env->cache, s->cache_key, 0);
        return 0;
    }
    if (s->shown_capa == NULL ||
        (s->flags & (SESSION_F_NO_PARK | SESSION_F_KICK | SESSION_F_BACKEND_BYE |
                     SESSION_F_WAITS_CLIENT | SESSION_F_CLIENT_PAUSE | SESSION_F_BACK_PAUSE |
                     SESSION_F_AUDIT_FULL)) ||
        s->commands != s->completions || s->cin != NULL ||
        conn_write_queue_len(s->backend) > 0 ||
        !capa_has(s->shown_capa, strlen(s->shown_capa), "UNSELECT")) {
        return 0;
    }
    size_t tag_len = parkable_logout(data, len, SESSION_MAX_TAG_LEN);
    if (tag_len == 0) {
        return 0;
    }
    char tag[SESSION_MAX_TAG_LEN + 1];
    memcpy(tag, data, tag_len);
    tag[tag_len] = '\0';
    if (sesscache_park(s->env->cache, s->user, s->cache_key, s->backend, s->shown_capa) != 0) {
        return 0;
    }
    sesscache_seen(s->env->cache, s->cache_key, 1);
    /* the backend conn is the cache's now */
    s->backend = NULL;
    s->pending--;
    s->bytes_in += len;
    s->commands++;
    metrics_relay_command("LOGOUT", 0);
    (void)session_tap_in(s, data, len);
    session_sendf(s, "* BYE Logging out\r\n%s OK Logout completed.\r\n", tag);
    session_close(s, "logged out (backend connection parked)");
    return 1;
}

/* session_park_id_is: arg is an ID string (quoted or literal) equal to text,
 * any case. */
static int session_park_id_is(const struct imap_arg *arg, const char *text, size_t len)
{
    return (arg->type == IMAP_ARG_QUOTED || arg->type == IMAP_ARG_LITERAL) && arg->len == len &&
           strncasecmp(arg->data, text, len) == 0;
}

void session_park_note_id(struct session *s, const struct imap_arg *args, size_t num_args)
{
    const struct config_session_cache *sc = &s->cfg->session_cache;
    if (s->env->cache == NULL || sc->num_park_clients == 0 || num_args < 4 ||
        args[0].type != IMAP_ARG_LIST_BEGIN) {
        return;
    }
    /* ( field value field value ... ): the pairs sit between the parentheses */
    for (size_t i = 1; i + 2 < num_args; i += 2) {
        if (!session_park_id_is(&args[i], "name", 4)) {
            continue;
        }
        const struct imap_arg *v = &args[i + 1];
        for (size_t j = 0; j < sc->num_park_clients; j++) {
            if (session_park_id_is(v, sc->park_clients[j], strlen(sc->park_clients[j]))) {
                s->flags |= SESSION_F_PARK_CLIENT;
                session_log(s, LOG_DEBUG, "ID name %s: its logins park at LOGOUT",
                            sc->park_clients[j]);
                return;
            }
        }
        return;
    }
}
