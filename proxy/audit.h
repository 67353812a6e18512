/* audit: the audit log's way out.  Workers put finished records (JSON
 * objects) into their own bounded queue; one writer thread takes them to
 * every configured sink: a file with a hash chain (reopened on request, for
 * logrotate), standard output, syslog and a Redis stream (XADD with a length
 * cap).  A loop never waits on a sink.  When a worker's queue is full the
 * configured policy applies: block (the worker stops reading its clients
 * until the writer catches up), drop (counted, logged) or close (the session
 * ends).  A record leaves the queue only when every sink has taken it.  The
 * writer serves the queues in turn, a bounded batch of one queue's records
 * per turn (AUDIT_TURN_MAX_BYTES in audit.c), so that no worker's records
 * wait behind another worker's. */
#ifndef IMAPMUX_PROXY_AUDIT_H
#define IMAPMUX_PROXY_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/config.h"

#define AUDIT_RECORD_MAX 8192 /* bytes of one record */

struct audit;
struct audit_queue;

/* audit_new opens the sinks of cfg->audit and starts the writer; NULL with a
 * reason in err when a sink cannot be opened. */
struct audit *audit_new(const struct config *cfg, char *err, size_t err_len);

/* audit_reopen asks the writer to reopen the file (SIGUSR1).  Any thread. */
void audit_reopen(struct audit *a);

/* audit_free writes what is queued (giving up on a sink that stays down for
 * a few seconds, logged with the count), ends the file's chain and stops the
 * writer.  Call after every queue was closed. */
void audit_free(struct audit *a);

/* on_resume: the queue drained after a block; the worker reads clients again. */
typedef void (*audit_resume_cb)(void *ctx);

/* audit_queue_new makes a worker's queue on its loop. */
struct audit_queue *audit_queue_new(struct audit *a, uv_loop_t *loop, audit_resume_cb on_resume,
                                    void *ctx);

/* audit_queue_close gives the queue back (its records still go out);
 * on the worker's loop, which must run once more to close the handle. */
void audit_queue_close(struct audit_queue *q);

enum audit_push {
    AUDIT_PUSHED,  /* queued */
    AUDIT_BLOCKED, /* queued; the queue is full: stop reading clients until on_resume */
    AUDIT_DROPPED, /* not queued (policy drop, or far over the limit) */
    AUDIT_CLOSE,   /* not queued; policy close: end the session */
    AUDIT_NO_ROOM, /* not queued: a pre-auth record past its share (the caller counts it) */
};

/* audit_push queues one record (len bytes, no newline). */
enum audit_push audit_push(struct audit_queue *q, const char *record, size_t len);

/* Pre-auth command records may fill a queue up to this share of queue_bytes
 * (in quarters); the rest is kept for the records of the other sessions. */
#define AUDIT_PREAUTH_SHARE_QUARTERS 3

/* audit_push_preauth queues a record of a session that has not logged in:
 * AUDIT_PUSHED, or AUDIT_NO_ROOM when it would take the queue past
 * AUDIT_PREAUTH_SHARE_QUARTERS of queue_bytes, whatever the policy (it
 * never blocks, drops or closes; the caller counts what did not fit). */
enum audit_push audit_push_preauth(struct audit_queue *q, const char *record, size_t len);

/* audit_queue_blocked: the worker waits for on_resume. */
int audit_queue_blocked(const struct audit_queue *q);

/* Counters of one queue (any thread may read them roughly). */
struct audit_stats {
    uint64_t records;  /* queued */
    uint64_t dropped;  /* not queued */
    uint64_t blocks;   /* times the queue filled under policy block */
};
void audit_queue_stats(const struct audit_queue *q, struct audit_stats *out);

/* audit_queue_bytes: bytes of q's records queued or being written now. */
size_t audit_queue_bytes(const struct audit_queue *q);

/* audit_time writes now as RFC 3339 UTC with microseconds. */
void audit_time(char out[32], uint64_t unix_us);

/* audit_now_us: the wall clock in microseconds. */
uint64_t audit_now_us(void);

#endif
