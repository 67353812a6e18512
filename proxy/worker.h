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
struct snapshot;

/* worker_start starts worker id on its own thread with a reference to snap
 * (configuration and TLS contexts), the shared audit and connection caps
 * (borrowed, or NULL; they outlive the worker).  It returns once the
 * worker's listeners are bound: the worker, or NULL with the reason in err. */
struct worker *worker_start(char *err, size_t err_len, unsigned id, struct snapshot *snap,
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
/* worker_reload hands snap (the worker takes its own reference) to the
 * worker's loop (thread-safe): listeners are added and removed, the warm pool
 * and the session cache rebuilt, and new sessions start on it; sessions in
 * progress keep the snapshot they started with.  Ignored once draining. */
void worker_reload(struct worker *w, struct snapshot *snap);

/* worker_join waits for the worker's thread to end and frees the worker. */
void worker_join(struct worker *w);

#endif
