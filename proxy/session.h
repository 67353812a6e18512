/* session: one client connection from accept to close.  Pre-auth commands
 * are answered here; the login is passed to the backend; then both
 * directions are relayed byte for byte with backpressure. */
#ifndef IMAPMUX_PROXY_SESSION_H
#define IMAPMUX_PROXY_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <openssl/ssl.h>

#include "common/config.h"

struct session;

/* What a worker shares with its sessions.  Owned by the worker; outlives
 * every session of that worker. */
struct session_env {
    uv_loop_t *loop;
    unsigned worker_id;
    struct config *cfg;          /* snapshot; sessions take their own reference */
    SSL_CTX *server_ctx;         /* for client TLS; shared by workers */
    SSL_CTX *const *backend_ctx; /* per cfg->backends index; NULL for tls none */
    struct session *sessions;    /* list of live sessions (see session_drain_all) */
    size_t num_sessions;
    uint64_t next_id;            /* session ids: worker_id and this counter */
};

/* session_accept accepts one pending connection of server and starts its
 * session.  Returns 0 or a UV_E* code (the connection is then dropped). */
int session_accept(struct session_env *env, uv_stream_t *server,
                   const struct config_listener *listener);

/* session_drain_all tells every session of env that the server is stopping:
 * pre-auth sessions get "* BYE" and close at once; with final set, logged-in
 * sessions too. */
void session_drain_all(struct session_env *env, int final);

#endif
