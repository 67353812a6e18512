/* metrics: the daemon's counters, gauges and histograms, and their
 * exposition in the Prometheus text format (version 0.0.4) for the admin
 * listener's /metrics.
 *
 * Who writes what, and why nothing on the data path takes a lock:
 * - Each worker thread attaches to a slot of its own (metrics_thread_attach);
 *   the hooks below write only the calling thread's slot, found through a
 *   thread-local pointer.  A slot has one writer, so an increment is a
 *   relaxed atomic load and store (a plain add on x86, no lock prefix); the
 *   scraping thread reads the same fields with relaxed loads.  A thread
 *   without a slot (the main thread, the password check pool) writes
 *   nothing: its hooks return at once.
 * - What a worker keeps in structures of its own (its session_stats, warm
 *   pool, session cache and audit queue counters) is copied into its slot by
 *   the worker itself: a scrape wakes every registered worker with its
 *   uv_async_t and waits (at most METRICS_REFRESH_WAIT_MS) until each has
 *   published (metrics_publish); a worker that does not answer in time is
 *   shown with what it published last.
 * - Process-wide values (the host table, backend host up/down, the audit
 *   sinks, reloads, certificates) are atomics written by any thread; new
 *   backend hosts take a mutex once, when first seen.
 * Slots live until metrics_cleanup: counters never go backwards, also when a
 * worker ends.
 *
 * Label sets are bounded: listeners by configuration index (at most
 * METRICS_MAX_LISTENERS), backend hosts by an interned table (at most
 * METRICS_MAX_HOSTS, the rest share host="other"), commands from a fixed
 * list ("other" for the rest), reasons from fixed lists.  No label holds a
 * login, an address of a client or anything secret. */
#ifndef IMAPMUX_PROXY_METRICS_H
#define IMAPMUX_PROXY_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/config.h"

#define METRICS_MAX_SLOTS 258        /* worker threads (MAIN_MAX_WORKERS) and two spare */
#define METRICS_MAX_LISTENERS 16     /* listeners with counters of their own */
#define METRICS_MAX_HOSTS 64         /* backend hosts with labels of their own */
#define METRICS_MAX_NAMED 32         /* labels of a family named at first use */
#define METRICS_MAX_CERTS 16         /* certificates with an expiry gauge */
#define METRICS_NUM_BUCKETS 15       /* finite histogram buckets (METRICS_BUCKETS_S) */
#define METRICS_REFRESH_WAIT_MS 200  /* a scrape waits this long for the workers */

/* The finite upper bounds of every duration histogram, in seconds. */
#define METRICS_BUCKETS_S                                                                \
    {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, \
     30.0}

enum metrics_tls_result {
    METRICS_TLS_OK,           /* handshake completed */
    METRICS_TLS_EOF,          /* the client closed during the handshake */
    METRICS_TLS_TIMEOUT,      /* the pre-auth deadline passed during it */
    METRICS_TLS_VERSION,      /* no common protocol version */
    METRICS_TLS_CIPHER,       /* no common cipher or group */
    METRICS_TLS_NOT_TLS,      /* the client did not speak TLS (HTTP, plain IMAP...) */
    METRICS_TLS_ALERT,        /* the client sent an alert (it refused our certificate...) */
    METRICS_TLS_PROTOCOL,     /* any other handshake error */
};
#define METRICS_TLS_NUM (METRICS_TLS_PROTOCOL + 1)

enum metrics_login_result {
    METRICS_LOGIN_OK,
    METRICS_LOGIN_FAILED,      /* refused: credentials, blocks, disabled... */
    METRICS_LOGIN_UNAVAILABLE, /* Redis, the backend or the check queue was unavailable */
};
#define METRICS_LOGIN_NUM (METRICS_LOGIN_UNAVAILABLE + 1)

enum metrics_mech {
    METRICS_MECH_LOGIN, /* the LOGIN command */
    METRICS_MECH_PLAIN, /* AUTHENTICATE PLAIN */
    METRICS_MECH_OAUTHBEARER, /* AUTHENTICATE OAUTHBEARER */
    METRICS_MECH_XOAUTH2,     /* AUTHENTICATE XOAUTH2 */
};
#define METRICS_MECH_NUM (METRICS_MECH_XOAUTH2 + 1)

/* Where a backend connection failed. */
enum metrics_backend_phase {
    METRICS_BE_RESOLVE,  /* the host name did not resolve */
    METRICS_BE_CONNECT,  /* TCP connect failed or timed out */
    METRICS_BE_TLS,      /* TLS handshake (implicit or after STARTTLS) */
    METRICS_BE_GREETING, /* greeting, STARTTLS or CAPABILITY exchange */
    METRICS_BE_LOGIN,    /* the login command failed (not a refusal) */
    METRICS_BE_REFUSED,  /* the backend refused the credentials */
    METRICS_BE_LOST,     /* a ready (warm) connection failed: BYE, EOF, ping */
};
#define METRICS_BE_NUM (METRICS_BE_LOST + 1)

enum metrics_audit_sink {
    METRICS_SINK_FILE,
    METRICS_SINK_STDOUT,
    METRICS_SINK_SYSLOG,
    METRICS_SINK_REDIS,
};
#define METRICS_SINK_NUM (METRICS_SINK_REDIS + 1)

/* What a worker publishes of its own structures (metrics_publish). */
struct metrics_worker_stats {
    uint64_t sessions;            /* client connections of the worker now */
    uint64_t kicks, bf_delayed, bf_blocked, warm_retries, commands_refused; /* session_stats */
    uint64_t pool_size, pool_hits, pool_misses, pool_connects, pool_connect_failures,
        pool_lost, pool_recycled; /* warm_stats */
    uint64_t cache_size, cache_parked, cache_hits, cache_waits, cache_misses,
        cache_evicted_ttl, cache_evicted_limit, cache_evicted_lost,
        cache_evicted_event; /* sesscache_stats */
    uint64_t audit_records, audit_dropped, audit_blocks; /* audit_stats */
    uint64_t audit_queue_bytes;   /* bytes queued or being written */
    uint64_t audit_blocked;       /* 1: the worker waits for the writer (policy block) */
    uint64_t leases, lease_renewals, lease_renew_failures; /* sesslimit_stats */
};

/* --- lifetime (main thread) ----------------------------------------------------- */

/* metrics_init records the start time and the build; call once before any
 * thread attaches.  metrics_cleanup frees every slot (after the threads
 * ended and the admin listener stopped). */
void metrics_init(void);
void metrics_cleanup(void);

/* metrics_thread_attach makes slot (a worker id) the calling thread's, made
 * on first use and kept until metrics_cleanup.  Returns 0, or -1 (slot out of
 * range, out of memory): the thread's hooks then do nothing. */
int metrics_thread_attach(unsigned slot);

/* metrics_worker_register lets scrapes wake the worker of slot through a
 * (the worker's loop's handle; its callback calls metrics_publish).
 * metrics_worker_unregister, before a is closed, stops that.  Any thread. */
void metrics_worker_register(unsigned slot, uv_async_t *a);
void metrics_worker_unregister(unsigned slot);

/* --- hooks (a worker's thread; nothing when it has no slot) ---------------------- */

/* metrics_publish stores st (copied) in the calling worker's slot. */
void metrics_publish(const struct metrics_worker_stats *st);
/* metrics_listener_accepted/closed: a session of listener (its index in the
 * configuration; at most METRICS_MAX_LISTENERS count) began, was freed. */
void metrics_listener_accepted(size_t listener);
void metrics_listener_closed(size_t listener);
/* metrics_tls_handshake counts a client handshake's end. */
void metrics_tls_handshake(enum metrics_tls_result r);

/* metrics_tls_reason sorts a TLS error text (tls_error) into a reason. */
enum metrics_tls_result metrics_tls_reason(const char *error);

/* metrics_login_done: a login ended with r after ns nanoseconds. */
void metrics_login_done(enum metrics_login_result r, enum metrics_mech mech, uint64_t ns);

/* metrics_login_refused counts a refusal; idx < METRICS_MAX_NAMED and name
 * (static, snake_case) name one reason, the same pair every time. */
void metrics_login_refused(unsigned idx, const char *name);

/* metrics_login_step: the login spent ns in step idx called name (static). */
void metrics_login_step(unsigned idx, const char *name, uint64_t ns);

/* metrics_backend_host returns the id of backend's host:port (strings
 * copied), interned process-wide; hosts past METRICS_MAX_HOSTS share the id
 * METRICS_MAX_HOSTS ("other").  Any thread. */
int metrics_backend_host(const char *backend, const char *host, uint16_t port);

/* A connection to host id was ready for a login after ns (connect, TLS,
 * greeting, capabilities); marks the host up. */
void metrics_backend_connected(int id, uint64_t ns);
/* A login on host id was answered with OK after ns. */
void metrics_backend_logged_in(int id, uint64_t ns);
/* A connection to host id failed in phase p; phases before a ready
 * connection mark the host down. */
void metrics_backend_failed(int id, enum metrics_backend_phase p);
/* metrics_backend_set_up marks host id up (1) or down (0); any thread. */
void metrics_backend_set_up(int id, int up);

/* metrics_redis_client: a Redis client of this worker for commands (events
 * 0) or subscribed to events (1) exists (present 1) or is gone (0);
 * metrics_redis_up: it became usable (1) or stopped being so (0). */
void metrics_redis_client(int events, int present);
void metrics_redis_up(int events, int up);
/* A Redis command was answered (ok 1) or failed (0) after ns. */
void metrics_redis_command(uint64_t ns, int ok);

/* metrics_relay_bytes: n bytes relayed client to backend (to_backend 1) or
 * back. */
void metrics_relay_bytes(int to_backend, uint64_t n);
/* metrics_relay_command counts one relayed command by its upper-case name
 * (without UID); names outside the fixed list count as "other". */
void metrics_relay_command(const char *name, int uid);

/* --- process-wide (any thread) ---------------------------------------------------- */

/* metrics_audit_sink: sink took written records, lost dropped ones, and is
 * writable (up 1) or failing (0). */
void metrics_audit_sink(enum metrics_audit_sink sink, uint64_t written, uint64_t dropped, int up);

/* metrics_note_reload: a configuration reload ended (ok or not) after
 * seconds.  For the reload's code to call. */
void metrics_note_reload(bool ok, double seconds);

/* metrics_set_certificate sets the expiry gauge of certificate name (copied;
 * at most METRICS_MAX_CERTS names) to not_after (Unix seconds). */
void metrics_set_certificate(const char *name, int64_t not_after);

/* metrics_clear_certificates forgets every certificate's expiry gauge
 * (before the certificates of a new configuration are set). */
void metrics_clear_certificates(void);

/* --- reading (the admin thread) -------------------------------------------------- */

/* metrics_refresh wakes every registered worker to publish and waits for
 * them, at most wait_ms. */
void metrics_refresh(unsigned wait_ms);

/* metrics_redis_ready: every worker's command client is usable (1), some
 * is not (0), or there is none (-1). */
int metrics_redis_ready(void);

/* A growing text buffer. */
struct metrics_buf {
    char *p;
    size_t len, cap;
    int failed; /* an allocation failed: the text is incomplete */
};
/* metrics_buf_free frees b's text (b itself is the caller's); metrics_buf_printf
 * appends, growing the text (b->failed on OOM; the text stays as it was). */
void metrics_buf_free(struct metrics_buf *b);
void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* metrics_family writes the HELP and TYPE lines of a family (type
 * "counter", "gauge" or "histogram"). */
void metrics_family(struct metrics_buf *b, const char *name, const char *type, const char *help);

/* metrics_sample writes "name{labels} value": labels is NULL or
 * alternating names and values ending with NULL (values escaped here). */
void metrics_sample(struct metrics_buf *b, const char *name, const char *const *labels,
                    double value);

/* metrics_histogram writes one histogram's _bucket (cumulative, with
 * le="+Inf"), _sum and _count lines from per-bucket counts (counts has
 * METRICS_NUM_BUCKETS + 1 entries, the last above every bound), the sum in
 * nanoseconds. */
void metrics_histogram(struct metrics_buf *b, const char *name, const char *const *labels,
                       const uint64_t *counts, uint64_t sum_ns);

/* metrics_bucket_of returns the bucket index of a duration in ns. */
unsigned metrics_bucket_of(uint64_t ns);

/* metrics_render writes every family of the process to b; cfg (borrowed)
 * names the listeners. */
void metrics_render(struct metrics_buf *b, const struct config *cfg);

#endif
