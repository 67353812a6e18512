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
    uint64_t misses;        /* cacheable logins that found none */
    uint64_t evicted_ttl;   /* dropped after ttl_ms */
    uint64_t evicted_limit; /* dropped for max_per_user or max_total */
    uint64_t evicted_lost;  /* the backend closed or said BYE, or the reset failed */
    uint64_t evicted_event; /* a kick or routing event for the user */
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

/* sesscache_take returns a reset connection parked for user with key and
 * hands it over (the caller conn_set_ops it at once), with the capability
 * list shown at its first login in *out_capa (malloc'd, the caller frees),
 * or NULL (a miss).  NULL c accepted. */
struct conn *sesscache_take(struct sesscache *c, const char *user,
                            const uint8_t key[SESSCACHE_KEY_LEN], char **out_capa);

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
