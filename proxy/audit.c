#include "proxy/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/sha.h>

#include "common/audit_chain.h"
#include "common/json.h"
#include "common/log.h"
#include "proxy/metrics.h"

#define AUDIT_RETRY_MS 1000         /* pause before a sink is tried again */
#define AUDIT_STOP_GIVE_UP_MS 5000  /* at exit, a sink down this long loses what is left */
#define AUDIT_FAIL_LOG_MS 30000     /* a sink that stays down is logged this often */
#define AUDIT_HARD_FACTOR 4         /* policy block: over this many queue_bytes, drop */
#define AUDIT_REDIS_BATCH 512       /* XADDs pipelined at once */
#define AUDIT_TAIL_STEP 4096        /* bytes of the file's end read first at open */
#define AUDIT_ASIDE_TRIES 16        /* names tried for a file moved aside */
#define AUDIT_ASIDE_NAME_LEN 4200   /* bytes of its name (a path and a suffix) */
#define AUDIT_BATCH_MS 10           /* the writer lets records gather this long */
#define AUDIT_TURN_MAX_BYTES 65536  /* bytes of one queue's records written per turn */

struct audit_buf {
    char *p;
    size_t len, cap;
    size_t count; /* records */
};

struct audit_queue {
    struct audit *a;
    struct audit_queue *next;
    uv_async_t async;
    audit_resume_cb on_resume;
    void *ctx;
    /* under a->mu */
    struct audit_buf buf;   /* records waiting, each followed by '\n' */
    struct audit_buf out;   /* records the writer took from buf, written from out_off
                               on in turns; its buffer is buf's next when done */
    size_t out_off;         /* bytes of out written */
    size_t inflight;        /* bytes of out not written yet (out.len - out_off) */
    int blocked;            /* the worker waits for on_resume */
    int closing;            /* audit_queue_close ran: no more async sends */
    int closed;             /* the handle is closed: the writer frees the queue */
    /* counters */
    atomic_uint_least64_t records, dropped, blocks;
    uint64_t drop_logged_ms; /* worker only */
};

struct audit {
    struct config *cfg;
    const struct config_audit *ac;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cond;
    struct audit_queue *queues;
    struct audit_queue *turn; /* the queue whose turn is next (NULL: the first) */
    int stop;
    atomic_int reopen;

    /* writer thread only */
    int fd;
    struct audit_chain chain;
    uint64_t file_records;
    redisContext *rc;
    char *seal;
    size_t seal_cap;
    uint64_t fail_logged_ms;
    uint64_t stop_fail_ms;    /* the first failure seen while stopping (0: none) */
};

/* --- time -------------------------------------------------------------------- */

uint64_t audit_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void audit_time(char out[32], uint64_t unix_us)
{
    /* the date and time change once a second: each thread keeps the last */
    static _Thread_local time_t last = (time_t)-1;
    static _Thread_local char prefix[24];
    static _Thread_local size_t prefix_len;
    time_t s = (time_t)(unix_us / 1000000u);
    if (s != last) {
        struct tm tm;
        gmtime_r(&s, &tm);
        prefix_len = strftime(prefix, sizeof(prefix), "%Y-%m-%dT%H:%M:%S", &tm);
        last = s;
    }
    memcpy(out, prefix, prefix_len);
    unsigned us = (unsigned)(unix_us % 1000000u);
    char *p = out + prefix_len;
    *p++ = '.';
    for (int i = 5; i >= 0; i--) {
        p[i] = (char)('0' + us % 10);
        us /= 10;
    }
    p[6] = 'Z';
    p[7] = '\0';
}

static uint64_t audit_mono_ms(void)
{
    return uv_hrtime() / 1000000u;
}

/* --- buffers ------------------------------------------------------------------- */

static int audit_buf_add(struct audit_buf *b, const char *rec, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t ncap = b->cap == 0 ? 16384 : b->cap;
        while (ncap < b->len + len + 1) {
            ncap *= 2;
        }
        char *np = realloc(b->p, ncap);
        if (np == NULL) {
            return -1;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, rec, len);
    b->p[b->len + len] = '\n';
    b->len += len + 1;
    b->count++;
    return 0;
}

/* --- the file sink ----------------------------------------------------------------- */

/* What the end of the file holds, as audit_file_tail found it. */
struct audit_tail {
    enum audit_chain_tail kind;
    uint8_t chain[AUDIT_CHAIN_LEN];   /* OK, CUT, UNENDED: the value to go on from */
    size_t cut_len;                   /* CUT: bytes of the record cut short */
    uint8_t cut_sha[SHA256_DIGEST_LENGTH]; /* CUT: their SHA-256 */
    int ended;                        /* the last record is a chain_end */
    int read_errno;                   /* BROKEN: the read failed with this (0: it did not) */
};

/* audit_pread_all reads n bytes at off into p; 0 or -1 (errno; EIO when
 * the file got shorter). */
static int audit_pread_all(int fd, char *p, size_t n, off_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            if (r == 0) {
                errno = EIO;
            }
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

/* audit_file_tail reads the file's end backwards, AUDIT_TAIL_STEP bytes at
 * first and twice as many each time up to AUDIT_CHAIN_TAIL_MAX, until
 * audit_chain_tail can tell what it holds: a large file costs one small
 * read.  A failed read, or a last line longer than AUDIT_CHAIN_TAIL_MAX,
 * is BROKEN. */
static void audit_file_tail(struct audit_tail *out, int fd, off_t size)
{
    memset(out, 0, sizeof(*out));
    out->kind = AUDIT_TAIL_EMPTY;
    if (size == 0) {
        return;
    }
    out->kind = AUDIT_TAIL_BROKEN;
    char *buf = malloc(AUDIT_CHAIN_TAIL_MAX);
    if (buf == NULL) {
        out->read_errno = ENOMEM;
        return;
    }
    /* buf holds the file's last have bytes at its end */
    char *end = buf + AUDIT_CHAIN_TAIL_MAX;
    size_t have = 0, want = AUDIT_TAIL_STEP;
    for (;;) {
        size_t n = (off_t)want < size ? want : (size_t)size;
        if (audit_pread_all(fd, end - n, n - have, size - (off_t)n) != 0) {
            out->read_errno = errno;
            break;
        }
        have = n;
        enum audit_chain_tail k = audit_chain_tail(out->chain, &out->cut_len, &out->ended,
                                                   end - have, have, (off_t)have == size);
        if (k != AUDIT_TAIL_MORE) {
            out->kind = k;
            break;
        }
        if ((off_t)have == size || have == AUDIT_CHAIN_TAIL_MAX) {
            break; /* BROKEN: a line longer than any record */
        }
        want = want * 2 < AUDIT_CHAIN_TAIL_MAX ? want * 2 : AUDIT_CHAIN_TAIL_MAX;
    }
    if (out->kind == AUDIT_TAIL_CUT) {
        SHA256((const uint8_t *)end - out->cut_len, out->cut_len, out->cut_sha);
    }
    free(buf);
}

/* audit_aside_name writes "<file>.broken-<UTC time>[-n]" to out; 0 or -1. */
static int audit_aside_name(char *out, size_t cap, const char *file, unsigned n)
{
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
    int w = n == 0 ? snprintf(out, cap, "%s.broken-%s", file, ts)
                   : snprintf(out, cap, "%s.broken-%s-%u", file, ts, n);
    return w > 0 && (size_t)w < cap ? 0 : -1;
}

/* audit_file_aside moves the file to a name of its own (never over an older
 * one: link fails where rename would replace); 0 with the name in out, or -1
 * (errno). */
static int audit_file_aside(char *out, size_t cap, const char *file)
{
    for (unsigned n = 0; n < AUDIT_ASIDE_TRIES; n++) {
        if (audit_aside_name(out, cap, file, n) != 0) {
            errno = ENAMETOOLONG;
            return -1;
        }
        if (link(file, out) == 0) {
            return unlink(file);
        }
        if (errno != EEXIST) {
            return -1;
        }
    }
    errno = EEXIST;
    return -1;
}

/* audit_write_all writes p[*done..n), advancing *done; 0 or -1 (errno). */
static int audit_write_all(int fd, const char *p, size_t n, size_t *done)
{
    while (*done < n) {
        ssize_t w = write(fd, p + *done, n - *done);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        *done += (size_t)w;
    }
    return 0;
}

/* audit_file_mark writes a chain_start or chain_end record; fields (JSON
 * text from json_end without its braces, or "") go into a chain_start. */
static int audit_file_mark(struct audit *a, const char *type, const char *fields)
{
    char rec[AUDIT_RECORD_MAX], sealed[AUDIT_RECORD_MAX + 128], ts[32];
    char hex[AUDIT_CHAIN_HEX_LEN + 1];
    struct json j;
    audit_time(ts, audit_now_us());
    json_begin(&j, rec, sizeof(rec));
    json_str(&j, "time", ts);
    json_str(&j, "instance", a->cfg->instance);
    json_str(&j, "type", type);
    if (strcmp(type, "chain_start") == 0) {
        audit_chain_hex(hex, a->chain.prev);
        json_str(&j, "prev", hex);
        json_fields(&j, fields);
    } else {
        json_u64(&j, "records", a->file_records);
    }
    size_t len = json_end(&j);
    size_t n = audit_chain_seal(&a->chain, rec, len, sealed, sizeof(sealed));
    size_t done = 0;
    return n > 0 ? audit_write_all(a->fd, sealed, n, &done) : -1;
}

/* audit_file_fd opens the file for appending and, when it is a regular one,
 * for reading its end; the fd or -1 (errno).  *out_size: its size, or -1
 * when it is no regular file (a pipe, /dev/null: no chain to go on from). */
static int audit_file_fd(const char *file, off_t *out_size)
{
    int fd = open(file, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    int readable = fd >= 0;
    if (fd < 0 && errno == EACCES) {
        fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    }
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        errno = e;
        return -1;
    }
    *out_size = S_ISREG(st.st_mode) ? st.st_size : -1;
    if (*out_size > 0 && !readable) {
        /* its end cannot be read: going on would start the chain again in it */
        close(fd);
        errno = EACCES;
        return -1;
    }
    return fd;
}

/* audit_file_open opens the file and writes its chain_start, going on from
 * the chain value its last record holds (a restart), or from the one this
 * process wrote last when it is empty (a rotation; zero at the first start).
 * A record cut short at its end (the writer died) is cut off; an end that
 * cannot be read or is no chained record moves the file aside, and a new
 * chain starts in a new file.  Each case is logged and named in the
 * chain_start.  0, or -1 with the reason in err. */
static int audit_file_open(struct audit *a, char *err, size_t err_len)
{
    const char *file = a->ac->file;
    char fields[AUDIT_ASIDE_NAME_LEN + 256], aside[AUDIT_ASIDE_NAME_LEN];
    struct json fj;
    off_t size = -1;
    struct audit_tail t;
    json_begin(&fj, fields, sizeof(fields));
    for (int tries = 0;; tries++) {
        a->fd = audit_file_fd(file, &size);
        if (a->fd < 0) {
            snprintf(err, err_len, "audit file %s: %s", file, strerror(errno));
            return -1;
        }
        if (size < 0) {
            t.kind = AUDIT_TAIL_EMPTY;
            break;
        }
        audit_file_tail(&t, a->fd, size);
        if (t.kind != AUDIT_TAIL_BROKEN) {
            break;
        }
        close(a->fd);
        a->fd = -1;
        if (tries > 0) {
            snprintf(err, err_len, "audit file %s: its end is no chained record again after "
                     "it was moved aside", file);
            return -1;
        }
        if (audit_file_aside(aside, sizeof(aside), file) != 0) {
            snprintf(err, err_len, "audit file %s: its end is no chained record and it cannot "
                     "be moved aside: %s", file, strerror(errno));
            return -1;
        }
        log_msg(LOG_WARNING, "audit file %s: its end %s; moved aside to %s, a new chain "
                "starts in a new file", file,
                t.read_errno != 0 ? "cannot be read" : "is no chained record", aside);
        json_str(&fj, "broken_aside", aside);
        if (t.read_errno != 0) {
            json_str(&fj, "broken_reason", strerror(t.read_errno));
        }
    }
    switch (t.kind) {
    case AUDIT_TAIL_OK:
        memcpy(a->chain.prev, t.chain, sizeof(t.chain));
        break;
    case AUDIT_TAIL_UNENDED: {
        size_t done = 0;
        if (audit_write_all(a->fd, "\n", 1, &done) != 0) {
            snprintf(err, err_len, "audit file %s: %s", file, strerror(errno));
            goto fail;
        }
        memcpy(a->chain.prev, t.chain, sizeof(t.chain));
        log_msg(LOG_NOTICE, "audit file %s: its last record had no newline; added", file);
        break;
    }
    case AUDIT_TAIL_CUT: {
        char sha[2 * SHA256_DIGEST_LENGTH + 1];
        audit_chain_hex(sha, t.cut_sha);
        if (ftruncate(a->fd, size - (off_t)t.cut_len) != 0) {
            snprintf(err, err_len, "audit file %s: cannot cut its last, cut short record: %s",
                     file, strerror(errno));
            goto fail;
        }
        memcpy(a->chain.prev, t.chain, sizeof(t.chain));
        log_msg(LOG_WARNING, "audit file %s: its last record was cut short (%zu bytes, "
                "SHA-256 %s: the writer died mid-write); those bytes were removed, the chain "
                "goes on from the record before", file, t.cut_len, sha);
        json_u64(&fj, "cut_bytes", t.cut_len);
        json_str(&fj, "cut_sha256", sha);
        break;
    }
    default:
        break; /* EMPTY: go on from what this process wrote last, if anything */
    }
    json_end(&fj);
    fields[fj.len - 1] = '\0';
    a->file_records = 0;
    if (audit_file_mark(a, "chain_start", fields + 1) != 0) {
        snprintf(err, err_len, "audit file %s: %s", file, strerror(errno));
        goto fail;
    }
    return 0;

fail:
    close(a->fd);
    a->fd = -1;
    return -1;
}

static void audit_file_reopen(struct audit *a)
{
    char err[512];
    if (a->fd >= 0) {
        (void)audit_file_mark(a, "chain_end", "");
        close(a->fd);
        a->fd = -1;
    }
    if (audit_file_open(a, err, sizeof(err)) != 0) {
        log_msg(LOG_ERR, "%s; records wait until it can be written", err);
    } else {
        log_msg(LOG_INFO, "audit file %s reopened", a->ac->file);
    }
}

/* --- the Redis sink ----------------------------------------------------------------- */

static void audit_redis_drop(struct audit *a)
{
    if (a->rc != NULL) {
        redisFree(a->rc);
        a->rc = NULL;
    }
}

static int audit_redis_cmd_ok(redisReply *r)
{
    int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (r != NULL) {
        freeReplyObject(r);
    }
    return ok;
}

static int audit_redis_connect(struct audit *a, char *why, size_t why_len)
{
    const struct config_audit *ac = a->ac;
    struct timeval tv = {2, 0};
    a->rc = redisConnectWithTimeout(ac->redis_host, ac->redis_port, tv);
    if (a->rc == NULL || a->rc->err) {
        snprintf(why, why_len, "%s", a->rc != NULL ? a->rc->errstr : "out of memory");
        audit_redis_drop(a);
        return -1;
    }
    redisSetTimeout(a->rc, tv);
    if (ac->redis_password != NULL &&
        !audit_redis_cmd_ok(redisCommand(a->rc, "AUTH %s", ac->redis_password))) {
        snprintf(why, why_len, "AUTH refused");
        audit_redis_drop(a);
        return -1;
    }
    if (ac->redis_db != 0 && !audit_redis_cmd_ok(redisCommand(a->rc, "SELECT %u", ac->redis_db))) {
        snprintf(why, why_len, "SELECT refused");
        audit_redis_drop(a);
        return -1;
    }
    return 0;
}

/* audit_redis_send XADDs the records of p[0..len) from *done on; advances
 * *done past each record Redis took.  0 when all went, -1 otherwise. */
static int audit_redis_send(struct audit *a, const char *p, size_t len, size_t *done,
                            char *why, size_t why_len)
{
    const struct config_audit *ac = a->ac;
    char maxlen[24];
    snprintf(maxlen, sizeof(maxlen), "%lu", ac->redis_maxlen);
    if (a->rc == NULL && audit_redis_connect(a, why, why_len) != 0) {
        return -1;
    }
    while (*done < len) {
        size_t off = *done, n = 0;
        size_t ends[AUDIT_REDIS_BATCH];
        while (off < len && n < AUDIT_REDIS_BATCH) {
            const char *nl = memchr(p + off, '\n', len - off);
            size_t rl = (size_t)(nl - (p + off));
            const char *argv[] = {"XADD", ac->redis_key, "MAXLEN", "~", maxlen, "*", "record",
                                  p + off};
            size_t argl[] = {4, strlen(ac->redis_key), 6, 1, strlen(maxlen), 1, 6, rl};
            if (redisAppendCommandArgv(a->rc, 8, argv, argl) != REDIS_OK) {
                snprintf(why, why_len, "out of memory");
                audit_redis_drop(a);
                return -1;
            }
            off += rl + 1;
            ends[n++] = off;
        }
        for (size_t i = 0; i < n; i++) {
            redisReply *r = NULL;
            if (redisGetReply(a->rc, (void **)&r) != REDIS_OK) {
                snprintf(why, why_len, "%s", a->rc->errstr);
                audit_redis_drop(a);
                return -1;
            }
            if (r->type == REDIS_REPLY_ERROR) {
                snprintf(why, why_len, "%s", r->str);
                freeReplyObject(r);
                audit_redis_drop(a); /* replies still pending: start afresh */
                return -1;
            }
            freeReplyObject(r);
            *done = ends[i];
        }
    }
    return 0;
}

/* --- delivery ------------------------------------------------------------------------ */

/* audit_seal turns a batch into chained lines for the file. */
static int audit_seal(struct audit *a, const struct audit_buf *b, size_t *out_len)
{
    size_t need = b->len + b->count * (AUDIT_CHAIN_HEX_LEN + 16) + 1;
    if (need > a->seal_cap) {
        char *np = realloc(a->seal, need);
        if (np == NULL) {
            return -1;
        }
        a->seal = np;
        a->seal_cap = need;
    }
    size_t o = 0, off = 0;
    while (off < b->len) {
        const char *nl = memchr(b->p + off, '\n', b->len - off);
        size_t rl = (size_t)(nl - (b->p + off));
        o += audit_chain_seal(&a->chain, b->p + off, rl, a->seal + o, a->seal_cap - o);
        off += rl + 1;
        a->file_records++;
    }
    *out_len = o;
    return 0;
}

/* audit_deliver gives a batch to every sink, retrying a failed one; at
 * stop it gives up after AUDIT_STOP_GIVE_UP_MS. */
static void audit_deliver(struct audit *a, const struct audit_buf *b)
{
    const struct config_audit *ac = a->ac;
    size_t sealed_len = 0, file_done = 0, out_done = 0, redis_done = 0;
    int file_left = ac->file != NULL, out_left = ac->to_stdout, redis_left = ac->to_redis;
    uint64_t first_fail = 0;
    char why[256];

    if (ac->to_syslog) {
        size_t off = 0;
        while (off < b->len) {
            const char *nl = memchr(b->p + off, '\n', b->len - off);
            int rl = (int)(nl - (b->p + off));
            syslog(ac->syslog_facility | LOG_INFO, "%.*s", rl, b->p + off);
            off += (size_t)rl + 1;
        }
        metrics_audit_sink(METRICS_SINK_SYSLOG, b->count, 0, 1);
    }
    /* a reopen goes between batches: a sealed batch belongs to one file */
    if (atomic_exchange(&a->reopen, 0) && ac->file != NULL) {
        audit_file_reopen(a);
    }
    int sealed = 0;
    for (;;) {
        why[0] = '\0';
        if (file_left && a->fd < 0 && !sealed) {
            audit_file_reopen(a);
        }
        if (file_left && a->fd >= 0 && !sealed) {
            if (audit_seal(a, b, &sealed_len) != 0) {
                log_msg(LOG_ERR, "audit: out of memory; %zu records not written to the file",
                        b->count);
                metrics_audit_sink(METRICS_SINK_FILE, 0, b->count, 0);
                file_left = 0;
            }
            sealed = 1;
        }
        if (file_left && sealed) {
            /* what was written stays; the rest goes on the next try */
            if (audit_write_all(a->fd, a->seal, sealed_len, &file_done) == 0) {
                file_left = 0;
                metrics_audit_sink(METRICS_SINK_FILE, b->count, 0, 1);
            } else {
                snprintf(why, sizeof(why), "file %s: %s", ac->file, strerror(errno));
                metrics_audit_sink(METRICS_SINK_FILE, 0, 0, 0);
            }
        } else if (file_left) {
            snprintf(why, sizeof(why), "file %s cannot be opened", ac->file);
            metrics_audit_sink(METRICS_SINK_FILE, 0, 0, 0);
        }
        if (out_left) {
            if (audit_write_all(STDOUT_FILENO, b->p, b->len, &out_done) == 0) {
                out_left = 0;
                metrics_audit_sink(METRICS_SINK_STDOUT, b->count, 0, 1);
            } else {
                snprintf(why, sizeof(why), "stdout: %s", strerror(errno));
                metrics_audit_sink(METRICS_SINK_STDOUT, 0, 0, 0);
            }
        }
        if (redis_left) {
            char rwhy[200];
            if (audit_redis_send(a, b->p, b->len, &redis_done, rwhy, sizeof(rwhy)) == 0) {
                redis_left = 0;
                metrics_audit_sink(METRICS_SINK_REDIS, b->count, 0, 1);
            } else {
                snprintf(why, sizeof(why), "redis stream %s: %s", ac->redis_key, rwhy);
                metrics_audit_sink(METRICS_SINK_REDIS, 0, 0, 0);
            }
        }
        if (!file_left && !out_left && !redis_left) {
            if (first_fail != 0) {
                log_msg(LOG_NOTICE, "audit: sinks writable again");
                a->fail_logged_ms = 0;
            }
            return;
        }
        uint64_t now = audit_mono_ms();
        if (first_fail == 0) {
            first_fail = now;
        }
        if (a->fail_logged_ms == 0 || now - a->fail_logged_ms >= AUDIT_FAIL_LOG_MS) {
            a->fail_logged_ms = now;
            log_msg(LOG_ERR, "audit: cannot write: %s; %zu records wait (retrying)", why,
                    b->count);
        }
        uv_mutex_lock(&a->mu);
        int stopping = a->stop;
        uv_mutex_unlock(&a->mu);
        if (stopping && a->stop_fail_ms == 0) {
            a->stop_fail_ms = now; /* once for all batches still queued */
        }
        if (stopping && now - a->stop_fail_ms >= AUDIT_STOP_GIVE_UP_MS) {
            log_msg(LOG_ERR, "audit: stopping; %zu records lost: %s", b->count, why);
            if (file_left) {
                metrics_audit_sink(METRICS_SINK_FILE, 0, b->count, 0);
            }
            if (out_left) {
                metrics_audit_sink(METRICS_SINK_STDOUT, 0, b->count, 0);
            }
            if (redis_left) {
                metrics_audit_sink(METRICS_SINK_REDIS, 0, b->count, 0);
            }
            return;
        }
        uv_sleep(AUDIT_RETRY_MS);
    }
}

/* --- the writer thread ------------------------------------------------------------- */

static void audit_queue_free(struct audit_queue *q)
{
    free(q->buf.p);
    free(q->out.p);
    free(q);
}

/* audit_queue_has_work: records wait in q, taken or not.  Under a->mu. */
static int audit_queue_has_work(const struct audit_queue *q)
{
    return q->buf.len > 0 || q->out_off < q->out.len;
}

/* audit_next_turn returns the first queue with records from a->turn on,
 * round the list, or NULL; *out_alone says no other queue has any.  Under
 * a->mu. */
static struct audit_queue *audit_next_turn(struct audit *a, int *out_alone)
{
    struct audit_queue *start = a->turn != NULL ? a->turn : a->queues;
    struct audit_queue *found = NULL, *x = start;
    *out_alone = 1;
    if (x == NULL) {
        return NULL;
    }
    do {
        if (audit_queue_has_work(x)) {
            if (found != NULL) {
                *out_alone = 0;
                break;
            }
            found = x;
        }
        x = x->next != NULL ? x->next : a->queues;
    } while (x != start);
    return found;
}

/* audit_turn_slice: the whole records of q->out from out_off on that one
 * turn writes (at most AUDIT_TURN_MAX_BYTES, at least one record), as a
 * view into q->out.  Under a->mu. */
static struct audit_buf audit_turn_slice(const struct audit_queue *q)
{
    struct audit_buf v = {.p = q->out.p + q->out_off};
    size_t end = q->out_off;
    while (end < q->out.len) {
        const char *nl = memchr(q->out.p + end, '\n', q->out.len - end);
        size_t next = (size_t)(nl - q->out.p) + 1;
        if (v.count > 0 && next - q->out_off > AUDIT_TURN_MAX_BYTES) {
            break;
        }
        end = next;
        v.count++;
    }
    v.len = end - q->out_off;
    return v;
}

static void audit_writer(void *arg)
{
    struct audit *a = arg;
    uv_mutex_lock(&a->mu);
    for (;;) {
        int alone = 1;
        struct audit_queue *q = audit_next_turn(a, &alone);
        if (q == NULL) {
            /* free queues their workers gave back */
            struct audit_queue **pp = &a->queues;
            while (*pp != NULL) {
                struct audit_queue *x = *pp;
                if (x->closed && !audit_queue_has_work(x)) {
                    *pp = x->next;
                    if (a->turn == x) {
                        a->turn = x->next;
                    }
                    audit_queue_free(x);
                } else {
                    pp = &x->next;
                }
            }
            if (a->stop) {
                break;
            }
            if (atomic_load(&a->reopen)) {
                uv_mutex_unlock(&a->mu);
                if (atomic_exchange(&a->reopen, 0) && a->ac->file != NULL) {
                    audit_file_reopen(a);
                }
                uv_mutex_lock(&a->mu);
                continue;
            }
            uv_cond_wait(&a->cond, &a->mu);
            continue;
        }
        if (q->out_off == q->out.len) {
            if (alone && !a->stop && q->buf.len < a->ac->queue_bytes / 2 && !q->blocked) {
                /* let more records gather: one write (and one wake-up) per
                 * batch, not per record; only when no other queue waits */
                uv_mutex_unlock(&a->mu);
                uv_sleep(AUDIT_BATCH_MS);
                uv_mutex_lock(&a->mu);
            }
            /* take what the worker queued; its buffer takes the old out's */
            struct audit_buf empty = q->out;
            q->out = q->buf;
            q->out_off = 0;
            q->buf = empty;
            q->buf.len = 0;
            q->buf.count = 0;
            q->inflight = q->out.len;
        }
        struct audit_buf slice = audit_turn_slice(q);
        a->turn = q->next; /* the next queue's turn, whatever this one still holds */
        uv_mutex_unlock(&a->mu);

        audit_deliver(a, &slice);

        uv_mutex_lock(&a->mu);
        q->out_off += slice.len;
        q->inflight -= slice.len;
        if (q->out_off == q->out.len) {
            q->out.len = 0;
            q->out.count = 0;
            q->out_off = 0;
        }
        if (q->blocked && !q->closing && q->buf.len + q->inflight <= a->ac->queue_bytes / 2) {
            q->blocked = 0;
            uv_async_send(&q->async);
        }
    }
    uv_mutex_unlock(&a->mu);
}

/* --- the worker's side ---------------------------------------------------------------- */

static void audit_on_async(uv_async_t *h)
{
    struct audit_queue *q = h->data;
    q->on_resume(q->ctx);
}

struct audit_queue *audit_queue_new(struct audit *a, uv_loop_t *loop, audit_resume_cb on_resume,
                                    void *ctx)
{
    struct audit_queue *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return NULL;
    }
    q->a = a;
    q->on_resume = on_resume;
    q->ctx = ctx;
    if (uv_async_init(loop, &q->async, audit_on_async) != 0) {
        free(q);
        return NULL;
    }
    q->async.data = q;
    uv_mutex_lock(&a->mu);
    q->next = a->queues;
    a->queues = q;
    uv_mutex_unlock(&a->mu);
    return q;
}

static void audit_on_queue_close(uv_handle_t *h)
{
    struct audit_queue *q = h->data;
    struct audit *a = q->a;
    uv_mutex_lock(&a->mu);
    q->closed = 1;
    uv_cond_signal(&a->cond);
    uv_mutex_unlock(&a->mu);
}

void audit_queue_close(struct audit_queue *q)
{
    if (q == NULL) {
        return;
    }
    uv_mutex_lock(&q->a->mu);
    q->closing = 1;
    uv_mutex_unlock(&q->a->mu);
    uv_close((uv_handle_t *)&q->async, audit_on_queue_close);
}

enum audit_push audit_push(struct audit_queue *q, const char *record, size_t len)
{
    struct audit *a = q->a;
    const struct config_audit *ac = a->ac;
    enum audit_push r = AUDIT_PUSHED;

    uv_mutex_lock(&a->mu);
    size_t used = q->buf.len + q->inflight;
    int full = used + len + 1 > ac->queue_bytes;
    if (full && (ac->policy != CONFIG_AUDIT_BLOCK ||
                 used + len + 1 > ac->queue_bytes * AUDIT_HARD_FACTOR)) {
        r = ac->policy == CONFIG_AUDIT_CLOSE ? AUDIT_CLOSE : AUDIT_DROPPED;
    } else if (audit_buf_add(&q->buf, record, len) != 0) {
        r = AUDIT_DROPPED;
    } else {
        /* the writer needs a wake-up for a first record, and to hurry when
         * the queue fills; else it comes by itself */
        int wake = q->buf.count == 1 || used + len + 1 > ac->queue_bytes / 2;
        if (full) {
            if (!q->blocked) {
                atomic_fetch_add(&q->blocks, 1);
            }
            q->blocked = 1;
            r = AUDIT_BLOCKED;
        }
        if (wake) {
            uv_cond_signal(&a->cond);
        }
    }
    uv_mutex_unlock(&a->mu);

    if (r == AUDIT_PUSHED || r == AUDIT_BLOCKED) {
        atomic_fetch_add(&q->records, 1);
        return r;
    }
    uint64_t n = atomic_fetch_add(&q->dropped, 1) + 1;
    uint64_t now = audit_mono_ms();
    if (q->drop_logged_ms == 0 || now - q->drop_logged_ms >= 10000) {
        q->drop_logged_ms = now;
        log_msg(LOG_ERR, "audit: queue full (policy %s): %llu records not logged so far",
                r == AUDIT_CLOSE ? "close" : "drop", (unsigned long long)n);
    }
    return r;
}

enum audit_push audit_push_preauth(struct audit_queue *q, const char *record, size_t len)
{
    struct audit *a = q->a;
    size_t share = a->ac->queue_bytes / 4 * AUDIT_PREAUTH_SHARE_QUARTERS;
    enum audit_push r = AUDIT_NO_ROOM;

    uv_mutex_lock(&a->mu);
    size_t used = q->buf.len + q->inflight;
    if (used + len + 1 <= share && audit_buf_add(&q->buf, record, len) == 0) {
        r = AUDIT_PUSHED;
        if (q->buf.count == 1 || used + len + 1 > a->ac->queue_bytes / 2) {
            uv_cond_signal(&a->cond);
        }
    }
    uv_mutex_unlock(&a->mu);
    if (r == AUDIT_PUSHED) {
        atomic_fetch_add(&q->records, 1);
    }
    return r;
}

int audit_queue_blocked(const struct audit_queue *q)
{
    uv_mutex_lock(&q->a->mu);
    int b = q->blocked;
    uv_mutex_unlock(&q->a->mu);
    return b;
}

void audit_queue_stats(const struct audit_queue *q, struct audit_stats *out)
{
    out->records = atomic_load(&q->records);
    out->dropped = atomic_load(&q->dropped);
    out->blocks = atomic_load(&q->blocks);
}

/* --- life ---------------------------------------------------------------------------- */

struct audit *audit_new(const struct config *cfg, char *err, size_t err_len)
{
    struct audit *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    a->cfg = config_ref((struct config *)cfg);
    a->ac = &a->cfg->audit;
    a->fd = -1;
    atomic_init(&a->reopen, 0);
    if (a->ac->file != NULL && audit_file_open(a, err, err_len) != 0) {
        config_unref(&a->cfg);
        free(a);
        return NULL;
    }
    if (a->ac->to_redis) {
        char why[200];
        if (audit_redis_connect(a, why, sizeof(why)) != 0) {
            /* not fatal: records wait (or the policy applies) until it is up */
            log_msg(LOG_WARNING, "audit: redis stream %s:%u not reachable yet: %s",
                    a->ac->redis_host, (unsigned)a->ac->redis_port, why);
        }
    }
    uv_mutex_init(&a->mu);
    uv_cond_init(&a->cond);
    if (uv_thread_create(&a->thread, audit_writer, a) != 0) {
        snprintf(err, err_len, "cannot start the audit writer thread");
        uv_cond_destroy(&a->cond);
        uv_mutex_destroy(&a->mu);
        if (a->fd >= 0) {
            close(a->fd);
        }
        audit_redis_drop(a);
        config_unref(&a->cfg);
        free(a);
        return NULL;
    }
    return a;
}

void audit_reopen(struct audit *a)
{
    atomic_store(&a->reopen, 1);
    uv_mutex_lock(&a->mu);
    uv_cond_signal(&a->cond);
    uv_mutex_unlock(&a->mu);
}

void audit_free(struct audit *a)
{
    if (a == NULL) {
        return;
    }
    uv_mutex_lock(&a->mu);
    a->stop = 1;
    uv_cond_signal(&a->cond);
    uv_mutex_unlock(&a->mu);
    uv_thread_join(&a->thread);
    while (a->queues != NULL) { /* queues never closed: their workers failed to start */
        struct audit_queue *q = a->queues;
        a->queues = q->next;
        audit_queue_free(q);
    }
    if (a->fd >= 0) {
        (void)audit_file_mark(a, "chain_end", "");
        close(a->fd);
    }
    audit_redis_drop(a);
    free(a->seal);
    uv_cond_destroy(&a->cond);
    uv_mutex_destroy(&a->mu);
    config_unref(&a->cfg);
    free(a);
}

size_t audit_queue_bytes(const struct audit_queue *q)
{
    uv_mutex_lock(&q->a->mu);
    size_t n = q->buf.len + q->inflight;
    uv_mutex_unlock(&q->a->mu);
    return n;
}
