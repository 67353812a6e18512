/* pool: warm backend connections of one worker.  Per host of every backend
 * with pool_size > 0, that many connections are kept connected, greeted, past
 * TLS or STARTTLS and with their capabilities known, so that a login saves
 * those round trips.  They are refilled in the background (with a backoff
 * while the host fails), health-checked with NOOP every
 * pool_check_interval_ms and replaced once older than pool_max_idle_ms
 * (backends drop connections that never log in). */
#ifndef IMAPMUX_PROXY_POOL_H
#define IMAPMUX_PROXY_POOL_H

#include <stdint.h>

#include <uv.h>

#include <openssl/ssl.h>

#include "common/config.h"

struct pool;
struct backend;

struct pool_stats {
    uint64_t size;             /* warm connections now (all hosts) */
    uint64_t hits;             /* logins that took a warm connection */
    uint64_t misses;           /* logins to a pooled host that found none ready */
    uint64_t connects;         /* warm connections made ready */
    uint64_t connect_failures; /* attempts that failed before ready */
    uint64_t lost;             /* ready connections that failed (BYE, EOF, ping) */
    uint64_t recycled;         /* replaced for age */
};

/* pool_new starts the pools of cfg's backends on loop; backend_ctx is the
 * TLS client context per backend index (borrowed, outlives the pool).
 * Returns NULL on OOM; a pool with nothing to keep is valid and idle. */
struct pool *pool_new(uv_loop_t *loop, struct config *cfg, SSL_CTX *const *backend_ctx);

/* pool_take hands over a ready connection to host:port of backend cfg (the
 * caller continues with backend_resume_login and later backend_free), or
 * returns NULL.  A refill starts at once.  NULL pool accepted. */
struct backend *pool_take(struct pool *p, const struct config_backend *cfg, const char *host,
                          uint16_t port);

void pool_stats(const struct pool *p, struct pool_stats *out);

/* pool_free closes every warm connection; the pool's handles close on the
 * loop's next turns.  NULL accepted. */
void pool_free(struct pool *p);

#endif
