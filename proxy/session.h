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
#include "common/list.h"
#include "common/schema.h"

struct session;
struct dir;
struct audit_queue;
struct warm;
struct sesscache;
struct conncap;
struct sesslimit;
struct snapshot;

/* Counters of one worker, written to the log periodically and at exit. */
struct session_stats {
    uint64_t logins_ok;
    uint64_t logins_failed;      /* refused: wrong password, unknown user, blocked, disabled */
    uint64_t logins_unavailable; /* Redis or backend unavailable */
    uint64_t bf_delayed;         /* logins delayed by the brute-force counters */
    uint64_t bf_blocked;         /* logins refused by them */
    uint64_t kicks;              /* sessions ended by kick or route events */
    uint64_t warm_retries;       /* logins on a warm connection that failed and went on
                                    on a new one */
    uint64_t commands_refused;   /* relayed commands the gate refused (BAD or BYE) */
};

/* What a worker shares with its sessions.  Owned by the worker; outlives
 * every session of that worker. */
struct session_env {
    uv_loop_t *loop;
    unsigned worker_id;
    struct config *cfg;          /* snapshot; sessions take their own reference */
    SSL_CTX *server_ctx;         /* for client TLS; shared by workers */
    SSL_CTX *const *backend_ctx; /* per cfg->backends index; NULL for tls none */
    struct list_link sessions;   /* of live sessions (struct session), newest first */
    size_t num_sessions;
    uint64_t next_id;            /* session ids: worker_id and this counter */
    struct dir *dir;             /* routing table of this worker */
    struct audit_queue *audit;   /* this worker's audit queue, or NULL */
    struct warm *warm;           /* warm backend connections, or NULL */
    struct sesscache *cache;     /* parked logged-in connections, or NULL */
    struct conncap *conncap;     /* connection caps shared by all workers (borrowed from
                                    main, outlives the workers), or NULL: no caps */
    int audit_paused;            /* the queue is full (policy block): clients not read */
    struct session_stats stats;
    struct sesslimit *limits;    /* sessions per login across instances, or NULL: none */
    struct snapshot *snap;       /* the worker's reference to the snapshot in force (cfg,
                                    server_ctx and backend_ctx are its); sessions take
                                    their own */
};

/* session_accept accepts one pending connection of server and starts its
 * session.  Returns 0 or a UV_E* code (the connection is then dropped). */
int session_accept(struct session_env *env, uv_stream_t *server,
                   const struct config_listener *listener);

/* session_drain_all tells every session of env that the server is stopping:
 * pre-auth sessions get "* BYE" and close at once; with final set, logged-in
 * sessions too. */
void session_drain_all(struct session_env *env, int final);

/* session_audit_resume: the audit queue drained; read the clients again. */
void session_audit_resume(struct session_env *env);

/* session_on_event applies a routing-table event to env's sessions:
 * kick ends every session of the login; route, domain and backend look the
 * affected sessions up again and end those whose backend host changed.  A
 * session ends after the command in flight (or at once when that command
 * waits for the client, such as IDLE) with "* BYE [UNAVAILABLE] reason". */
void session_on_event(struct session_env *env, enum schema_event_type type, const char *arg);

/* session_on_resync: routing-table events may have been missed (the events
 * channel was away).  Every logged-in session is looked up again, spread
 * over two seconds, and ended when it moved or was kicked
 * meanwhile. */
void session_on_resync(struct session_env *env);

#endif
