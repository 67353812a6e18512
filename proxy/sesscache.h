/* sesscache: logged-in backend connections parked at a client's LOGOUT, for
 * the next login of the same user with the same credential (one worker).
 * An entry is keyed by the login and an HMAC-SHA256, under a random key of
 * the process, of the credential and what it was checked against; a parked
 * connection has its mailbox state reset with UNSELECT before it can be
 * taken, is dropped when the backend says BYE or closes, after ttl_ms, and
 * past max_per_user (per login) or max_total, oldest first. */
#ifndef IMAPMUX_PROXY_SESSCACHE_H
#define IMAPMUX_PROXY_SESSCACHE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/config.h"

#define SESSCACHE_KEY_LEN 32

struct sesscache;
struct conn;

struct sesscache_stats {
    uint64_t size;          /* parked now */
    uint64_t parked;        /* connections parked at LOGOUT */
    uint64_t hits;          /* logins that reused one */
    uint64_t waits;         /* of those, logins that waited for its reset */
    uint64_t misses;        /* cacheable logins that found none */
    uint64_t evicted_ttl;   /* dropped after ttl_ms */
    uint64_t evicted_limit; /* dropped for max_per_user or max_total */
    uint64_t evicted_lost;  /* the backend closed or said BYE, or the reset failed */
    uint64_t evicted_event; /* a kick or routing event for the user */
    uint64_t not_parked;    /* parkable LOGOUTs relayed: no return was likely (park policy) */
};

/* sesscache_new: the cache of one worker; NULL when cfg does not enable it
 * (or on OOM, logged). */
struct sesscache *sesscache_new(uv_loop_t *loop, struct config *cfg);

/* sesscache_key derives an entry key from what a login was checked with:
 * login, authorization identity, password, the stored hash (NULL when the
 * backend checked the password), and the backend host it went to.  Any
 * change of one of them gives another key.  NULL strings count as "". */
void sesscache_key(uint8_t out[SESSCACHE_KEY_LEN], const struct sesscache *c, const char *user,
                   const char *authzid, const char *password, const char *hash,
                   const char *backend, const char *host, uint16_t port);

/* sesscache_park takes over conn, a logged-in backend connection with
 * nothing in flight whose client just logged out; capa is the capability
 * list its client was shown (copied).  The caller must not touch conn after
 * 0.  -1: not parked (OOM); conn is still the caller's. */
int sesscache_park(struct sesscache *c, const char *user, const uint8_t key[SESSCACHE_KEY_LEN],
                   struct conn *conn, const char *capa);

/* sesscache_ready_cb: the end of a wait (see sesscache_take).  conn is the
 * reset connection, handed over (the caller conn_set_ops it at once), with
 * the capability list capa (malloc'd, the caller frees); or both NULL: the
 * entry waited for was lost, the login goes on without the cache.  Called
 * from within the cache's own callbacks: the callee must not call back into
 * the cache, only note the result (and go on from a timer). */
typedef void (*sesscache_ready_cb)(void *ctx, struct conn *conn, char *capa);

enum sesscache_result {
    SESSCACHE_MISS = 0,
    SESSCACHE_HIT,
    SESSCACHE_WAIT,
};

/* sesscache_take looks for a connection parked for user with key.
 * SESSCACHE_HIT: *out_conn is a reset one, handed over (the caller
 * conn_set_ops it at once), and *out_capa the capability list shown at its
 * first login (malloc'd, the caller frees).  SESSCACHE_WAIT: one is parked
 * but its UNSELECT is not answered yet (the client logged out a moment
 * ago); cb(ctx, ...) is called exactly once when it is, or when the entry is
 * lost (at most SESSCACHE_RESET_MAX_MS later), unless sesscache_cancel(c,
 * ctx) comes first.  SESSCACHE_MISS otherwise.  NULL c: a miss. */
enum sesscache_result sesscache_take(struct sesscache *c, const char *user,
                                     const uint8_t key[SESSCACHE_KEY_LEN], struct conn **out_conn,
                                     char **out_capa, sesscache_ready_cb cb, void *ctx);

/* sesscache_cancel forgets the wait of ctx (its session ended first). */
void sesscache_cancel(struct sesscache *c, void *ctx);

#define SESSCACHE_RESET_MAX_MS 5000 /* a parked connection not reset by then is dropped */

/* sesscache_returning: the parking policy's question at a login keyed with
 * key ("is a return likely?").  Returns 1 under park: always, or when the
 * same key was seen (at a login or a LOGOUT) within ttl_ms; 0 otherwise.
 * Notes key as seen now either way.  NULL c: 0. */
int sesscache_returning(struct sesscache *c, const uint8_t key[SESSCACHE_KEY_LEN]);

/* sesscache_seen notes key as seen now (a LOGOUT, parked or not); counts
 * a LOGOUT the policy did not park when parked is 0.  NULL c: nothing. */
void sesscache_seen(struct sesscache *c, const uint8_t key[SESSCACHE_KEY_LEN], int parked);

/* sesscache_evict_user drops the connections parked for user (a kick or a
 * route change); sesscache_evict_all drops every one (domain and backend
 * events, shutdown). */
void sesscache_evict_user(struct sesscache *c, const char *user);
void sesscache_evict_all(struct sesscache *c);

void sesscache_stats(const struct sesscache *c, struct sesscache_stats *out);

/* sesscache_free drops every entry and closes the cache's handles on the
 * loop's next turns.  NULL accepted. */
void sesscache_free(struct sesscache *c);

#endif
