/* worker: one thread, one uv loop, its own listeners and sessions.  Nothing
 * on the data path is shared between workers. */
#ifndef IMAPMUX_PROXY_WORKER_H
#define IMAPMUX_PROXY_WORKER_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "common/config.h"

struct worker;

struct audit;
struct conncap;

/* worker_start starts worker id on its own thread with the shared TLS
 * contexts, audit and connection caps (borrowed, or NULL; they outlive the
 * worker) and a reference to cfg.  It returns once the worker's listeners are
 * bound: the worker, or NULL with the reason in err. */
struct worker *worker_start(char *err, size_t err_len, unsigned id, struct config *cfg,
                            SSL_CTX *server_ctx, SSL_CTX *const *backend_ctx,
                            struct audit *audit, struct conncap *conncap);

/* worker_drain asks the worker to stop (thread-safe): stop accepting, BYE to
 * pre-auth sessions, BYE to the rest after cfg->drain_timeout_ms. */
void worker_drain(struct worker *w);

/* worker_drain_upgrade drains like worker_drain, but for an upgrade: the
 * listening sockets went to a new process, so pre-auth sessions are not told
 * BYE at once; they may log in and every session gets drain_timeout_ms. */
void worker_drain_upgrade(struct worker *w);

/* worker_listener_fds writes the worker's listening descriptors (borrowed)
 * to out, at most cap, and returns how many.  Valid between worker_start
 * and the drain. */
size_t worker_listener_fds(const struct worker *w, int *out, size_t cap);

/* worker_join waits for the worker's thread to end and frees the worker. */
void worker_join(struct worker *w);

#endif
