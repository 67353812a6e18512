/* listener: one listening socket of one worker, bound with SO_REUSEPORT so
 * that every worker accepts on its own socket and the kernel spreads
 * connections. */
#ifndef IMAPMUX_PROXY_LISTENER_H
#define IMAPMUX_PROXY_LISTENER_H

#include <stddef.h>

#include <uv.h>

#include "common/config.h"

struct listener;

/* listener_open binds and listens on cfg's address on loop (or, after a
 * takeover, listens on this worker's share of the sockets taken over for
 * that address, proxy/takeover.h); each accepted
 * connection is passed to on_accept(ctx, server, cfg).  Returns the listener,
 * or NULL with a reason in err. */
struct listener *listener_open(char *err, size_t err_len, uv_loop_t *loop,
                               const struct config_listener *cfg,
                               void (*on_accept)(void *ctx, uv_stream_t *server,
                                                 const struct config_listener *cfg),
                               void *ctx);

/* listener_fds writes the descriptors of l's listening sockets (one, or
 * several taken over; borrowed) to out, at most cap.  Returns how many. */
size_t listener_fds(const struct listener *l, int *out, size_t cap);

/* listener_close stops listening and frees the listener once closed. */
void listener_close(struct listener *l);

/* --- reload: listeners added, kept or removed ---------------------------------- */

/* listener_config_same returns 1 when a and b are the same listener
 * (address, port, mode), so a reload keeps its socket. */
int listener_config_same(const struct config_listener *a, const struct config_listener *b);

/* listener_probe checks that cfg's address and port can be bound (with
 * SO_REUSEPORT, as the workers bind it), binding a socket and closing it.
 * Returns 0, or -1 with the reason in err. */
int listener_probe(char *err, size_t err_len, const struct config_listener *cfg);

/* listener_set_config points l at cfg, the same listener (listener_config_same)
 * in a newer snapshot, whose lifetime must cover l's from now on. */
void listener_set_config(struct listener *l, const struct config_listener *cfg);

#endif
