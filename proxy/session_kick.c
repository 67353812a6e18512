#include "proxy/session_private.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include <openssl/mem.h>

#include "common/imap_scan.h"
#include "common/log.h"
#include "common/schema.h"
#include "proxy/conn.h"
#include "proxy/directory.h"
#include "proxy/sesscache.h"

/* --- kicks and re-routing ----------------------------------------------------- */

/* session_kick_check ends a kicked session when no command is in flight (or
 * the one in flight waits for the client) and the backend has been quiet
 * for a moment at a line end; else it looks again soon. */
void session_kick_check(struct session *s)
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
    session_set_deadline(s, SESSION_KICK_QUIET_MS);
}

static void session_kick(struct session *s, const char *reason)
{
    if (s->flags & SESSION_F_KICK) {
        return;
    }
    if (s->state == SESSION_LOGGING_IN) {
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
    if (res->kick_gen > s->kick_gen) {
        /* a kick this instance did not hear of (it was away from Redis) */
        session_log(s, LOG_INFO, "kicked while the events channel was away");
        session_kick(s, "Session ended by the administrator");
        return;
    }
    if (res->backend != s->route || res->port != s->port || strcmp(res->host, s->host) != 0 ||
        strcmp(res->backend_name, s->route_name) != 0) {
        session_log(s, LOG_INFO, "route changed to %s(%s:%u)", res->backend_name, res->host,
                    (unsigned)res->port);
        session_kick(s, "Mailbox moved, please reconnect");
    }
}

void session_on_event(struct session_env *env, enum schema_event_type type, const char *arg)
{
    /* parked connections follow the same events: a kicked or moved user's
       go; domain and backend changes drop them all (they are cheap to redo) */
    if (type == SCHEMA_EV_KICK || type == SCHEMA_EV_ROUTE) {
        sesscache_evict_user(env->cache, arg);
    } else {
        sesscache_evict_all(env->cache);
    }
    struct list_link *l, *n;
    LIST_FOREACH_SAFE(l, n, &env->sessions) { /* sessions are never freed from here */
        struct session *s = SESSION_OF(l);
        if (s->state != SESSION_RELAY && s->state != SESSION_LOGGING_IN) {
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
            match = s->route != NULL && strcmp(s->route_name, arg) == 0;
            break;
        }
        if (!match) {
            continue;
        }
        if (type == SCHEMA_EV_KICK) {
            session_kick(s, "Session ended by the administrator");
        } else if (s->state == SESSION_RELAY) {
            s->pending++;
            if (dir_lookup_in(env->dir, s->cfg, s->user, NULL, session_on_recheck, s) != 0) {
                s->pending--;
            }
        }
    }
}

/* session_kick_recheck looks a logged-in session up again. */
static void session_kick_recheck(struct session *s)
{
    if (s->state != SESSION_RELAY || (s->flags & SESSION_F_KICK)) {
        return;
    }
    s->pending++;
    if (dir_lookup_in(s->env->dir, s->cfg, s->user, NULL, session_on_recheck, s) != 0) {
        s->pending--;
    }
}

void session_on_resync(struct session_env *env)
{
    struct list_link *l, *n;
    size_t num = 0;
    uint64_t seed = uv_hrtime();
    LIST_FOREACH_SAFE(l, n, &env->sessions) {
        struct session *s = SESSION_OF(l);
        if (s->state != SESSION_RELAY) {
            continue;
        }
        /* spread: Redis is just back, and every instance asks at once */
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        if (session_after(s, (seed >> 33) % SESSION_RESYNC_SPREAD_MS, session_kick_recheck) == 0) {
            num++;
        }
    }
    if (num > 0) {
        log_msg(LOG_INFO, "worker %u: events channel back: looking %zu sessions up again",
                env->worker_id, num);
    }
}
