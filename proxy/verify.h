/* verify: password verification on a pool of threads of its own.  Hashes
 * are slow on purpose; a loop must never wait for one, and neither must the
 * libuv threadpool, which resolves backend names: a flood of password checks
 * would delay every login, pass-through ones included.
 *
 * The pool is bounded: at most max_jobs checks are queued or running, and at
 * most max_per_client of them for one client address (IPv6 addresses grouped
 * by their prefix), so one client cannot fill the queue for everyone.  A check
 * beyond either bound is refused at once with UV_EBUSY.  Completions go back
 * to the loop that submitted them through one uv_async_t per loop.
 *
 * A login without a stored hash (unknown user) is verified against a dummy
 * hash made at start-up, so that it costs the same work as a wrong password.
 *
 * Lifetime: verify_init (main thread, before the workers), verify_loop_open
 * (each loop, on its thread), verify_start_for ..., verify_loop_close (each
 * loop, when it stops), verify_cleanup (main thread, after every loop). */
#ifndef IMAPMUX_PROXY_VERIFY_H
#define IMAPMUX_PROXY_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* Results handed to verify_cb. */
#define VERIFY_MATCH 1
#define VERIFY_MISMATCH 0     /* always for the dummy */
#define VERIFY_ERROR (-1)     /* unusable hash, or out of memory */
#define VERIFY_CANCELED (-2)  /* verify_cancel took the check out of the queue */

#define VERIFY_DEFAULT_QUEUE 256    /* checks queued or running */
#define VERIFY_DEFAULT_PER_CLIENT 4 /* of those per client address or IPv6 prefix */

struct verify_limits {
    unsigned num_threads;     /* hashing threads; 0: one per CPU */
    size_t max_jobs;          /* checks queued or running, at most; 0: VERIFY_DEFAULT_QUEUE */
    size_t max_per_client;    /* of those per client; 0: no per-client share */
    unsigned ipv6_prefix_len; /* IPv6 clients are one client per prefix this long (bits) */
};

/* Counters since verify_init, read with verify_stats. */
struct verify_stats {
    uint64_t started;         /* checks accepted */
    uint64_t busy_queue;      /* refused: the queue was full */
    uint64_t busy_client;     /* refused: the client's share was full */
    uint64_t canceled;        /* taken out of the queue by verify_cancel */
    size_t jobs;              /* queued or running now */
    unsigned num_threads;     /* threads of the pool */
};

/* verify_init makes the dummy hash and starts the pool's threads (main
 * thread, once, before any loop opens).  Returns 0, UV_EALREADY when the pool
 * runs already, or another UV_E* code (nothing is left running then). */
int verify_init(const struct verify_limits *lim);

/* verify_cleanup stops the pool and frees it (main thread, after every loop
 * closed its side with verify_loop_close and ran to its end).  Does nothing
 * when the pool does not run. */
void verify_cleanup(void);

/* verify_loop_open prepares loop to receive completions (on loop's thread,
 * before its first verify_start_for).  Returns 0 (also when the pool does not
 * run: nothing is done then), UV_EEXIST when loop is open already, or
 * UV_ENOMEM. */
int verify_loop_open(uv_loop_t *loop);

/* verify_loop_close stops taking checks for loop (on loop's thread).  Checks
 * of loop still in flight complete as usual; its uv_async_t closes after the
 * last callback ran, so the loop ends only then.  Does nothing for a loop
 * that is not open. */
void verify_loop_close(uv_loop_t *loop);

/* result: VERIFY_MATCH, VERIFY_MISMATCH, VERIFY_ERROR or VERIFY_CANCELED. */
typedef void (*verify_cb)(void *ctx, int result);

/* verify_start_for copies hash (NULL: the dummy) and password and verifies
 * them on the pool, counted against client_ip's share (a numeric address as
 * the session holds it; NULL: no share).  cb runs on loop afterwards,
 * exactly once, never from within this call.  Returns 0, or (cb not called):
 * UV_EBUSY when the queue or the client's share is full, UV_EINVAL when the
 * pool does not run or loop is not open, UV_ENOMEM. */
int verify_start_for(uv_loop_t *loop, const char *client_ip, const char *hash,
                     const char *password, verify_cb cb, void *ctx);

/* verify_start is verify_start_for without a client address (no share). */
int verify_start(uv_loop_t *loop, const char *hash, const char *password, verify_cb cb,
                 void *ctx);

/* verify_cancel takes loop's checks for ctx that still wait in the queue out
 * of it (on loop's thread): their callbacks come with VERIFY_CANCELED, later
 * on loop, still exactly once.  A check already running completes as usual.
 * For a closing session, so that the queue does not hash for the gone. */
void verify_cancel(uv_loop_t *loop, void *ctx);

/* verify_stats copies the pool's counters to out (thread-safe). */
void verify_stats(struct verify_stats *out);

#endif
