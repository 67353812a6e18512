/* warm: the warm pool, backend connections of one worker kept ready.  Per
 * host of every backend with pool_size > 0, that many connections are kept
 * connected, greeted, past TLS or STARTTLS and with their capabilities
 * known, so that a login saves those round trips.  They are refilled in the background (with a backoff
 * while the host fails), health-checked with NOOP every
 * pool_check_interval_ms and replaced once older than pool_max_idle_ms
 * (backends drop connections that never log in). */
#ifndef IMAPMUX_PROXY_WARM_H
#define IMAPMUX_PROXY_WARM_H

#include <stdint.h>

#include <uv.h>

#include <openssl/ssl.h>

#include "common/config.h"

struct warm;
struct backend;

struct warm_stats {
    uint64_t size;             /* warm connections now (all hosts) */
    uint64_t hits;             /* logins that took a warm connection */
    uint64_t misses;           /* logins to a pooled host that found none ready */
    uint64_t connects;         /* warm connections made ready */
    uint64_t connect_failures; /* attempts that failed before ready */
    uint64_t lost;             /* ready connections that failed (BYE, EOF, ping) */
    uint64_t recycled;         /* replaced for age */
};

/* warm_new starts the pools of cfg's backends on loop; backend_ctx is the
 * TLS client context per backend index (borrowed, outlives the pool).
 * Returns NULL on OOM; a pool with nothing to keep is valid and idle. */
struct warm *warm_new(uv_loop_t *loop, struct config *cfg, SSL_CTX *const *backend_ctx);

/* warm_take hands over a ready connection to host:port of backend cfg (the
 * caller continues with backend_resume_login and later backend_free), or
 * returns NULL.  A refill starts at once.  NULL pool accepted. */
struct backend *warm_take(struct warm *p, const struct config_backend *cfg, const char *host,
                          uint16_t port);

void warm_stats(const struct warm *p, struct warm_stats *out);

/* warm_renew makes the pools of cfg (a reload's) as warm_new does, but
 * first takes over old's ready connections to every host whose backend kept
 * its name and connection settings (up to the new pool_size) and old's
 * counters; then frees old (closing the rest: removed or changed backends).
 * Returns the new pool, or NULL on OOM (old is freed either way). */
struct warm *warm_renew(struct warm *old, uv_loop_t *loop, struct config *cfg,
                        SSL_CTX *const *backend_ctx);

/* warm_free closes every warm connection; the pool's handles close on the
 * loop's next turns.  NULL accepted. */
void warm_free(struct warm *p);

#endif
