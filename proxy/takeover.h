/* takeover: upgrades without refused connections.  A new imapmux process
 * takes the running one's listening sockets over a unix socket (SCM_RIGHTS)
 * instead of binding its own, so that no listening socket is ever closed
 * while connections wait in its accept queue: the kernel drops (RST) what
 * is queued on a SO_REUSEPORT socket when it is closed, but a socket whose
 * descriptor was passed on stays open, queue and all, as long as one
 * process holds it.
 *
 *   new                                 old (serving PATH)
 *   connect PATH, "TAKEOVER\n"  ──►
 *                               ◄──     "FDS <n>\n" + n descriptors
 *   workers adopt them, polling
 *   "READY\n"                   ──►     stops accepting (its copies are
 *                                       closed: the sockets live on in the
 *                                       new process), drains, exits
 *   serves PATH itself
 *
 * If the new process dies before READY, the old one goes on as before. */
#ifndef IMAPMUX_PROXY_TAKEOVER_H
#define IMAPMUX_PROXY_TAKEOVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define TAKEOVER_MAX_FDS 1024         /* listening sockets handed over, at most */
#define TAKEOVER_IO_TIMEOUT_MS 30000  /* each step of the exchange, at most */

/* takeover_fetch connects to path and receives the running process's
 * listening sockets into this process's pool, to be claimed by
 * listener_open.  num_workers is how many listener_open calls each
 * configured listener will see.  Returns 0 with *out_conn open (give it to
 * takeover_ready), 1 when nothing serves path (a first start; *out_conn -1),
 * or -1 with a reason in err. */
int takeover_fetch(char *err, size_t err_len, const char *path, unsigned num_workers,
                   int *out_conn);

/* takeover_claim gives the caller the inherited sockets bound to address and
 * port that are its share (the n-th call for an address gets every socket
 * whose index is n modulo num_workers).  Returns how many it wrote to out
 * (at most cap; they are the caller's now).  Thread-safe. */
size_t takeover_claim(const char *address, uint16_t port, int *out, size_t cap);

/* takeover_release_unclaimed closes the inherited sockets nobody claimed
 * (a listener no longer configured) and returns how many. */
size_t takeover_release_unclaimed(void);

/* takeover_ready tells the old process that the sockets are polled here
 * and closes conn.  Returns 0 or -1. */
int takeover_ready(int conn);

struct takeover_server;

/* takeover_fds_cb writes the listening descriptors of this process to out
 * (at most cap) and returns how many. */
typedef size_t (*takeover_fds_cb)(void *ctx, int *out, size_t cap);
/* takeover_done_cb: a new process has the sockets and polls them. */
typedef void (*takeover_done_cb)(void *ctx);

/* takeover_serve listens on path (a stale socket file there is replaced)
 * for a new process.  Returns the server, or NULL with a reason in err. */
struct takeover_server *takeover_serve(char *err, size_t err_len, uv_loop_t *loop,
                                       const char *path, takeover_fds_cb fds,
                                       takeover_done_cb done, void *ctx);

/* takeover_server_close stops listening; the socket file is removed only if
 * it is still this server's (a new process may have bound its own). */
void takeover_server_close(struct takeover_server *t);

/* takeover_notify sends state to the service manager ($NOTIFY_SOCKET, the
 * sd_notify protocol), if there is one.  Returns 0, or -1. */
int takeover_notify(const char *state);

#endif
