/* sesslimit: limits on logged-in sessions per login and per (login, client
 * address), counted across every instance in Redis with leases.
 *
 * Each login has a sorted set <prefix>sess:<login> of its sessions: member
 * "<address key>|<instance>/<pid>/<session id>", score the lease's expiry in
 * Redis server time (ms).  A login takes a lease with one script (drop the
 * expired members, count, compare with the user's, the domain's or the
 * configured limit, add); each worker renews all its leases every third of
 * limits.session_lease_ms in one script per batch; a session's end removes
 * its member.  An instance that dies stops renewing: its sessions stop
 * counting at most session_lease_ms after their last renewal.
 *
 * One instance of this per worker, with a Redis connection of its own. */
#ifndef IMAPMUX_PROXY_SESSLIMIT_H
#define IMAPMUX_PROXY_SESSLIMIT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/config.h"

#define SESSLIMIT_RENEW_BATCH 256      /* leases renewed by one script */
#define SESSLIMIT_MAX_MEMBER_LEN 512   /* bytes of a member: address key, instance, ids */

struct sesslimit;
struct sesslimit_lease;

enum sesslimit_verdict {
    SESSLIMIT_OK,         /* counted; the lease is held */
    SESSLIMIT_OVER_USER,  /* the login has as many sessions as its limit allows */
    SESSLIMIT_OVER_IP,    /* ... from this client address (limits.max_sessions_per_user_ip) */
    SESSLIMIT_REDIS_DOWN, /* Redis did not answer (or failed): limits.on_redis_error decides */
};

/* Counters of one worker (sesslimit_stats). */
struct sesslimit_stats {
    uint64_t acquired;       /* leases taken (SESSLIMIT_OK) */
    uint64_t refused_user;   /* SESSLIMIT_OVER_USER answers */
    uint64_t refused_ip;     /* SESSLIMIT_OVER_IP answers */
    uint64_t redis_errors;   /* SESSLIMIT_REDIS_DOWN answers */
    uint64_t released;       /* leases given back */
    uint64_t renewals;       /* leases renewed (sent in a batch that Redis ran) */
    uint64_t renew_failures; /* batches that failed (Redis down or an error) */
    uint64_t leases;         /* leases held now */
};

/* On an answer other than SESSLIMIT_OVER_*, lease is the session's place
 * (owned by the caller from now on: give it back with sesslimit_release);
 * else NULL.  A lease taken under SESSLIMIT_REDIS_DOWN is added to Redis by
 * the next renewal that reaches it. */
typedef void (*sesslimit_cb)(void *ctx, enum sesslimit_verdict v, unsigned limit,
                             struct sesslimit_lease *lease);

/* sesslimit_new: cfg (borrowed) outlives it; worker_id and the process id
 * make its members unique.  Returns NULL when out of memory, or when cfg
 * tracks no sessions (no Redis, or limits.session_lease_ms 0). */
struct sesslimit *sesslimit_new(uv_loop_t *loop, const struct config *cfg, unsigned worker_id);

/* sesslimit_acquire counts a session of login (normalised) from client_ip
 * (session_id names it in its member): cb is called exactly once, possibly
 * before this returns.  max_user and max_ip are the configured limits (0:
 * none); a max_sessions field of the user's hash, else of the domain's,
 * replaces max_user.  Returns 0, or UV_ENOMEM (cb is never called). */
int sesslimit_acquire(struct sesslimit *l, const char *login, const char *client_ip,
                      const char *session_id, unsigned max_user, unsigned max_ip,
                      sesslimit_cb cb, void *ctx);

/* sesslimit_release removes *lease from Redis (fire and forget), frees it and
 * clears *lease.  l or *lease NULL: nothing. */
void sesslimit_release(struct sesslimit *l, struct sesslimit_lease **lease);

/* sesslimit_stats copies the counters; l NULL gives zeros. */
void sesslimit_stats(const struct sesslimit *l, struct sesslimit_stats *out);

/* sesslimit_free closes the connection and frees what is left (NULL
 * accepted); leases still held are freed, not released (they expire). */
void sesslimit_free(struct sesslimit *l);

#endif
