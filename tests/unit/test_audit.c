/* The audit writer's order across workers' queues, and the pre-auth share.
 * The file sink is a FIFO the test reads, kept full until every record is
 * queued, so that what the writer takes first is known. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "common/config.h"
#include "proxy/audit.h"

#define TEST_RECORD_LEN 500      /* bytes of each record of the busy queue */
#define TEST_BUSY_RECORDS 1200   /* 600 KB: many turns of the writer */
#define TEST_READ_TIMEOUT_MS 20000 /* the writer writes within this, or the test fails */

struct fifo_setup {
    char dir[64];
    char path[128];
    int rfd;
    struct config *cfg;
};

static void on_resume(void *ctx)
{
    (void)ctx;
}

static void setup(struct fifo_setup *f, const char *extra)
{
    char err[512] = "", text[1024];
    snprintf(f->dir, sizeof(f->dir), "/tmp/imapmux-test-audit-XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/audit.fifo", f->dir);
    cr_assert_eq(mkfifo(f->path, 0600), 0);
    f->rfd = open(f->path, O_RDONLY | O_NONBLOCK);
    cr_assert(f->rfd >= 0);
    int n = snprintf(text, sizeof(text),
                     "backends: [{name: a, host: h, port: 1}]\n"
                     "audit: {file: %s, queue_bytes: 4194304%s}\n", f->path, extra);
    f->cfg = config_parse(err, sizeof(err), "t.yaml", text, (size_t)n);
    cr_assert_not_null(f->cfg, "%s", err);
}

/* fill_pipe writes junk lines into the FIFO until it is full: the writer's
 * next write waits for the test to read. */
static size_t fill_pipe(const char *path)
{
    int wfd = open(path, O_WRONLY | O_NONBLOCK);
    cr_assert(wfd >= 0);
    char line[64];
    memset(line, 'j', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\n';
    size_t n = 0;
    for (;;) {
        ssize_t w = write(wfd, line, sizeof(line));
        if (w < 0) {
            cr_assert_eq(errno, EAGAIN);
            break;
        }
        n += (size_t)w;
    }
    close(wfd);
    return n;
}

/* read_lines reads the FIFO until want lines holding "rec" have come; writes
 * the order of their queue letters to order. */
static void read_lines(int rfd, char *order, size_t want)
{
    int fl = fcntl(rfd, F_GETFL);
    fcntl(rfd, F_SETFL, fl & ~O_NONBLOCK);
    char buf[65536], line[TEST_RECORD_LEN * 2];
    size_t got = 0, ll = 0;
    while (got < want) {
        struct pollfd pfd = {.fd = rfd, .events = POLLIN};
        cr_assert_eq(poll(&pfd, 1, TEST_READ_TIMEOUT_MS), 1, "nothing written after %zu records",
                     got);
        ssize_t r = read(rfd, buf, sizeof(buf));
        cr_assert(r > 0, "the FIFO ended after %zu records", got);
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] != '\n') {
                if (ll < sizeof(line) - 1) {
                    line[ll++] = buf[i];
                }
                continue;
            }
            line[ll] = '\0';
            const char *p = strstr(line, "\"rec\":\"");
            if (p != NULL) {
                order[got++] = p[7];
            }
            ll = 0;
        }
    }
    order[got] = '\0';
}

static void push(struct audit_queue *q, char letter, size_t i, size_t pad, int preauth,
                 enum audit_push want)
{
    char rec[TEST_RECORD_LEN + 64];
    int n = snprintf(rec, sizeof(rec), "{\"rec\":\"%c%zu\",\"pad\":\"%*s\"}", letter, i, (int)pad,
                     "");
    enum audit_push r = preauth ? audit_push_preauth(q, rec, (size_t)n) : audit_push(q, rec, (size_t)n);
    cr_assert_eq(r, want, "record %c%zu: %d", letter, i, (int)r);
}

static void teardown(struct fifo_setup *f, uv_loop_t *loop, struct audit *a,
                     struct audit_queue **qs, size_t nq)
{
    for (size_t i = 0; i < nq; i++) {
        audit_queue_close(qs[i]);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    /* chain_end goes into the FIFO: read it away meanwhile */
    int fl = fcntl(f->rfd, F_GETFL);
    fcntl(f->rfd, F_SETFL, fl | O_NONBLOCK);
    audit_free(a);
    char buf[4096];
    while (read(f->rfd, buf, sizeof(buf)) > 0) {
    }
    close(f->rfd);
    cr_assert_eq(uv_loop_close(loop), 0);
    config_unref(&f->cfg);
    unlink(f->path);
    rmdir(f->dir);
}

Test(audit, writer_serves_queues_in_turn)
{
    struct fifo_setup f;
    setup(&f, "");
    char err[256];
    struct audit *a = audit_new(f.cfg, err, sizeof(err));
    cr_assert_not_null(a, "%s", err);
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* a queue made later comes first in the writer's list: the busy one */
    struct audit_queue *quiet = audit_queue_new(a, &loop, on_resume, NULL);
    struct audit_queue *busy = audit_queue_new(a, &loop, on_resume, NULL);
    cr_assert(quiet != NULL && busy != NULL);
    (void)fill_pipe(f.path);
    for (size_t i = 0; i < TEST_BUSY_RECORDS; i++) {
        push(busy, 'A', i, TEST_RECORD_LEN - 40, 0, AUDIT_PUSHED);
    }
    push(quiet, 'B', 0, 10, 0, AUDIT_PUSHED);
    static char order[TEST_BUSY_RECORDS + 2];
    read_lines(f.rfd, order, TEST_BUSY_RECORDS + 1);
    const char *b = strchr(order, 'B');
    cr_assert_not_null(b);
    /* the quiet queue's record comes after one turn of the busy queue at
       most (64 KiB of its records, some 130), not after all of them */
    size_t before = (size_t)(b - order);
    cr_assert(before <= 65536 / (TEST_RECORD_LEN - 20), "%zu busy records before it", before);
    struct audit_queue *qs[] = {quiet, busy};
    teardown(&f, &loop, a, qs, 2);
}

Test(audit, preauth_records_keep_out_of_the_reserve)
{
    struct fifo_setup f;
    setup(&f, ", policy: block");
    char err[256];
    struct audit *a = audit_new(f.cfg, err, sizeof(err));
    cr_assert_not_null(a, "%s", err);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct audit_queue *q = audit_queue_new(a, &loop, on_resume, NULL);
    (void)fill_pipe(f.path);
    /* what the writer took (then stuck in the full FIFO) still counts */
    size_t share = 4194304 / 4 * AUDIT_PREAUTH_SHARE_QUARTERS, bytes = 0, n = 0, len = 0;
    enum audit_push r = AUDIT_PUSHED;
    for (; n < share / 100 && r == AUDIT_PUSHED; n++) {
        char rec[TEST_RECORD_LEN];
        len = (size_t)snprintf(rec, sizeof(rec), "{\"rec\":\"P%zu\",\"pad\":\"%*s\"}", n,
                               TEST_RECORD_LEN - 40, "");
        r = audit_push_preauth(q, rec, len);
        bytes += r == AUDIT_PUSHED ? len + 1 : 0;
    }
    cr_assert_eq(r, AUDIT_NO_ROOM);
    n--; /* the refused one */
    cr_assert(bytes <= share && bytes + len + 1 > share, "%zu bytes queued of %zu", bytes, share);
    size_t refused = 0;
    for (size_t i = 0; i < 64; i++) {
        char rec[TEST_RECORD_LEN];
        int l = snprintf(rec, sizeof(rec), "{\"rec\":\"Q%zu\",\"pad\":\"%*s\"}", i,
                         TEST_RECORD_LEN - 40, "");
        refused += audit_push_preauth(q, rec, (size_t)l) == AUDIT_NO_ROOM;
    }
    cr_assert_eq(refused, 64);
    /* the rest of the queue still takes any other record, without a block */
    for (size_t i = 0; i < 100; i++) {
        push(q, 'L', i, TEST_RECORD_LEN - 40, 0, AUDIT_PUSHED);
    }
    static char order[16384];
    cr_assert(n + 100 < sizeof(order));
    read_lines(f.rfd, order, n + 100);
    struct audit_queue *qs[] = {q};
    teardown(&f, &loop, a, qs, 1);
}
