/* admin: the admin HTTP listener (configuration section admin), served by
 * libmicrohttpd on threads of its own, never on a worker's loop:
 *   GET /metrics  the Prometheus text format (metrics.h)
 *   GET /healthz  200 "ok" while the process answers
 *   GET /readyz   200 "ready", or 503 "not ready: <what>": the listeners are
 *                 bound and not draining, every worker's Redis connection is
 *                 up (when Redis is configured), a host of the default
 *                 backend accepts a TCP connection (probed on each request)
 * Clients outside admin.allow are refused at accept; with a token_file,
 * /metrics and /readyz want "Authorization: Bearer <token>" (401 else). */
#ifndef IMAPMUX_PROXY_ADMIN_H
#define IMAPMUX_PROXY_ADMIN_H

#include <stddef.h>

#include "common/config.h"

struct admin;
struct conncap;

#define ADMIN_MAX_CONNECTIONS 16      /* admin clients served at once */
#define ADMIN_CONNECTION_TIMEOUT_S 10 /* an idle admin client is dropped after this */
#define ADMIN_PROBE_TIMEOUT_MS 1000   /* the readiness probe's connect to a backend host */

/* admin_start binds cfg->admin's address and serves it.  cfg is referenced
 * (for listener names and readiness); conncap is borrowed and must outlive
 * the admin listener (NULL: no connection cap counters).  Returns the
 * listener, or NULL with the reason in err. */
struct admin *admin_start(char *err, size_t err_len, struct config *cfg, struct conncap *conncap);

/* admin_set_serving: 1 once the workers' listeners are bound, 0 when the
 * process drains (/readyz then says not ready).  Any thread. */
void admin_set_serving(struct admin *a, int serving);

/* admin_set_config swaps the snapshot the listener reads (listener names,
 * readiness, token and allow-list; not the address it listens on) for a
 * reference to cfg, after a reload.  Any thread. */
void admin_set_config(struct admin *a, struct config *cfg);

/* admin_stop stops serving, waits for the admin threads and frees a (NULL
 * accepted). */
void admin_stop(struct admin *a);

#endif
