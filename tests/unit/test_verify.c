/* The password check pool: results, the queue's bound, the per-client share,
 * completions on the submitting loop's thread, the libuv threadpool left free
 * for getaddrinfo, cancellation and shutdown.  Each test runs its own loops
 * to the end and checks that uv_loop_close() returns 0. */
#include <crypt.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "common/passwd.h"
#include "proxy/verify.h"

#define MAX_JOBS 16

struct job {
    int calls;          /* callbacks received: must end at exactly 1 */
    int result;
    uint64_t done_ns;   /* uv_hrtime() at the callback */
    uv_thread_t thread; /* the thread the callback ran on */
};

struct run {
    uv_loop_t loop;
    struct job jobs[MAX_JOBS];
    int num_started;
    int num_done;
    int close_after;    /* close the loop's side after this many callbacks (0: never) */
};

static void on_verified(void *ctx, int result)
{
    struct job *j = ctx;
    j->calls++;
    j->result = result;
    j->done_ns = uv_hrtime();
    j->thread = uv_thread_self();
}

/* the run a job belongs to: its job array is inside it */
static struct run *run_of(struct run *runs, size_t num_runs, struct job *j)
{
    for (size_t i = 0; i < num_runs; i++) {
        if (j >= runs[i].jobs && j < runs[i].jobs + MAX_JOBS) {
            return &runs[i];
        }
    }
    return NULL;
}

static struct run *current_runs;
static size_t current_num_runs;

static void on_counted(void *ctx, int result)
{
    struct job *j = ctx;
    struct run *r = run_of(current_runs, current_num_runs, j);
    on_verified(ctx, result);
    r->num_done++;
    if (r->close_after != 0 && r->num_done == r->close_after) {
        verify_loop_close(&r->loop);
    }
}

static void start_pool(unsigned threads, size_t max_jobs, size_t per_client)
{
    struct verify_limits lim = {
        .num_threads = threads,
        .max_jobs = max_jobs,
        .max_per_client = per_client,
        .ipv6_prefix_len = 64,
    };
    cr_assert_eq(verify_init(&lim), 0);
}

static void run_init(struct run *r, int close_after)
{
    memset(r, 0, sizeof(*r));
    cr_assert_eq(uv_loop_init(&r->loop), 0);
    cr_assert_eq(verify_loop_open(&r->loop), 0);
    r->close_after = close_after;
    current_runs = r;
    current_num_runs = 1;
}

static int submit(struct run *r, const char *ip, const char *hash, const char *pw)
{
    cr_assert_lt(r->num_started, MAX_JOBS);
    int rc = verify_start_for(&r->loop, ip, hash, pw, on_counted, &r->jobs[r->num_started]);
    if (rc == 0) {
        r->num_started++;
    }
    return rc;
}

/* run_finish runs the loop to its end and checks that nothing was left. */
static void run_finish(struct run *r)
{
    cr_assert_eq(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(uv_loop_close(&r->loop), 0, "a handle was left open");
    for (int i = 0; i < r->num_started; i++) {
        cr_assert_eq(r->jobs[i].calls, 1, "job %d: %d callbacks", i, r->jobs[i].calls);
    }
}

/* slow_hash returns a bcrypt hash of pw with cost 10 (about a quarter of a
 * second on a small machine), made with libcrypt directly. */
static char *slow_hash(const char *pw)
{
    char setting[64];
    struct crypt_data data;
    memset(&data, 0, sizeof(data));
    cr_assert_not_null(crypt_gensalt_rn("$2b$", 10, NULL, 0, setting, sizeof(setting)));
    const char *h = crypt_r(pw, setting, &data);
    cr_assert(h != NULL && h[0] == '$');
    return strdup(h);
}

Test(verify, results, .timeout = 60)
{
    struct run r;
    char *h[4];
    const enum passwd_scheme schemes[4] = {PASSWD_SHA512_CRYPT, PASSWD_BCRYPT, PASSWD_YESCRYPT,
                                           PASSWD_ARGON2ID};
    start_pool(2, 64, 0);
    run_init(&r, 11);
    for (int i = 0; i < 4; i++) {
        h[i] = passwd_hash(schemes[i], "correct horse");
        cr_assert_not_null(h[i]);
        cr_assert_eq(submit(&r, "192.0.2.1", h[i], "correct horse"), 0);
        cr_assert_eq(submit(&r, "192.0.2.1", h[i], "correct horsf"), 0);
    }
    cr_assert_eq(submit(&r, NULL, "$1$md5$x", "x"), 0);  /* unusable: unknown scheme */
    cr_assert_eq(submit(&r, NULL, NULL, "anything"), 0);  /* the dummy */
    cr_assert_eq(submit(&r, "2001:db8::1", "plain", "plain"), 0);
    cr_assert_eq(r.jobs[0].calls, 0, "never called from within verify_start_for");
    run_finish(&r);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(r.jobs[2 * i].result, VERIFY_MATCH, "%s", h[i]);
        cr_assert_eq(r.jobs[2 * i + 1].result, VERIFY_MISMATCH, "%s", h[i]);
        free(h[i]);
    }
    cr_assert_eq(r.jobs[8].result, VERIFY_ERROR);
    cr_assert_eq(r.jobs[9].result, VERIFY_MISMATCH, "the dummy never matches");
    cr_assert_eq(r.jobs[10].result, VERIFY_ERROR);
    struct verify_stats st;
    verify_stats(&st);
    cr_assert_eq(st.started, 11);
    cr_assert_eq(st.jobs, 0);
    cr_assert_eq(st.num_threads, 2);
    verify_cleanup();
}

Test(verify, queue_bound, .timeout = 60)
{
    struct run r;
    char *slow = slow_hash("pw");
    start_pool(1, 3, 0);
    run_init(&r, 4);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(submit(&r, NULL, slow, "pw"), 0);
    }
    uint64_t t0 = uv_hrtime();
    cr_assert_eq(submit(&r, "192.0.2.9", slow, "pw"), UV_EBUSY, "queue full");
    cr_assert_eq(submit(&r, NULL, NULL, "pw"), UV_EBUSY, "the dummy too");
    cr_assert_lt(uv_hrtime() - t0, 50 * 1000000ull, "refused at once, not after a wait");
    struct verify_stats st;
    verify_stats(&st);
    cr_assert_eq(st.busy_queue, 2);
    cr_assert_eq(st.jobs, 3);
    /* once one is done there is room again: the first callback submits one more */
    while (r.num_done == 0) {
        uv_run(&r.loop, UV_RUN_ONCE);
    }
    cr_assert_eq(submit(&r, NULL, slow, "px"), 0);
    run_finish(&r);
    cr_assert_eq(r.num_started, 4);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r.jobs[i].result, VERIFY_MATCH);
    }
    cr_assert_eq(r.jobs[3].result, VERIFY_MISMATCH);
    free(slow);
    verify_cleanup();
}

Test(verify, per_client_share, .timeout = 60)
{
    struct run r;
    char *slow = slow_hash("pw");
    start_pool(1, 16, 2);
    run_init(&r, 7);
    cr_assert_eq(submit(&r, "192.0.2.1", slow, "pw"), 0);
    cr_assert_eq(submit(&r, "::ffff:192.0.2.1", slow, "pw"), 0);
    cr_assert_eq(submit(&r, "192.0.2.1", slow, "pw"), UV_EBUSY, "its share is full");
    cr_assert_eq(submit(&r, "192.0.2.2", slow, "pw"), 0, "another client is served");
    cr_assert_eq(submit(&r, "2001:db8:1:2::1", slow, "pw"), 0);
    cr_assert_eq(submit(&r, "2001:db8:1:2:ffff::7", slow, "pw"), 0);
    cr_assert_eq(submit(&r, "2001:db8:1:2:abcd::9", slow, "pw"), UV_EBUSY, "the same /64");
    cr_assert_eq(submit(&r, "2001:db8:1:3::1", slow, "pw"), 0, "another /64");
    cr_assert_eq(submit(&r, NULL, NULL, "pw"), 0, "no address: no share");
    struct verify_stats st;
    verify_stats(&st);
    cr_assert_eq(st.busy_client, 2);
    cr_assert_eq(st.busy_queue, 0);
    cr_assert_eq(st.jobs, 7);
    run_finish(&r);
    cr_assert_eq(r.num_done, 7);
    free(slow);
    verify_cleanup();
}

/* --- completions on the submitting loop's thread ----------------------------- */

#define LOOPS 3
#define JOBS_PER_LOOP 6

static struct run thread_runs[LOOPS];
static uv_thread_t loop_threads[LOOPS];
static int wrong_thread[LOOPS];
static int loop_close_rc[LOOPS];

static void loop_thread(void *arg)
{
    struct run *r = arg;
    int idx = (int)(r - thread_runs);
    char *h = passwd_hash(PASSWD_SHA512_CRYPT, "pw");
    (void)uv_loop_init(&r->loop);
    (void)verify_loop_open(&r->loop);
    r->close_after = JOBS_PER_LOOP;
    for (int i = 0; i < JOBS_PER_LOOP; i++) {
        if (verify_start_for(&r->loop, "192.0.2.1", h, i % 2 ? "pw" : "no", on_counted,
                             &r->jobs[i]) == 0) {
            r->num_started++;
        }
    }
    uv_run(&r->loop, UV_RUN_DEFAULT);
    loop_close_rc[idx] = uv_loop_close(&r->loop);
    uv_thread_t self = uv_thread_self();
    for (int i = 0; i < r->num_started; i++) {
        if (!uv_thread_equal(&r->jobs[i].thread, &self)) {
            wrong_thread[idx]++;
        }
    }
    free(h);
}

Test(verify, completions_on_the_submitting_loop, .timeout = 60)
{
    start_pool(2, 64, 0);
    memset(thread_runs, 0, sizeof(thread_runs));
    current_runs = thread_runs;
    current_num_runs = LOOPS;
    for (int i = 0; i < LOOPS; i++) {
        cr_assert_eq(uv_thread_create(&loop_threads[i], loop_thread, &thread_runs[i]), 0);
    }
    for (int i = 0; i < LOOPS; i++) {
        cr_assert_eq(uv_thread_join(&loop_threads[i]), 0);
    }
    for (int i = 0; i < LOOPS; i++) {
        struct run *r = &thread_runs[i];
        cr_assert_eq(r->num_started, JOBS_PER_LOOP, "loop %d", i);
        cr_assert_eq(r->num_done, JOBS_PER_LOOP, "loop %d", i);
        cr_assert_eq(wrong_thread[i], 0, "loop %d: callbacks on another thread", i);
        cr_assert_eq(loop_close_rc[i], 0, "loop %d: a handle was left open", i);
        for (int k = 0; k < JOBS_PER_LOOP; k++) {
            cr_assert_eq(r->jobs[k].calls, 1);
            cr_assert_eq(r->jobs[k].result, k % 2 ? VERIFY_MATCH : VERIFY_MISMATCH);
        }
    }
    verify_cleanup();
}

/* --- the libuv threadpool stays free for backend names ------------------------- */

struct gai_probe {
    uv_getaddrinfo_t req;
    int calls;
    int status;
    uint64_t done_ns;
    int verified_before; /* password checks completed when the name was resolved */
    struct run *run;
};

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct gai_probe *p = req->data;
    p->calls++;
    p->status = status;
    p->done_ns = uv_hrtime();
    p->verified_before = p->run->num_done;
    uv_freeaddrinfo(res);
}

Test(verify, getaddrinfo_while_the_pool_is_saturated, .timeout = 60)
{
    struct run r;
    struct gai_probe p;
    struct addrinfo hints;
    char *slow = slow_hash("pw");
    /* more slow checks than the libuv threadpool has threads (4): had they
     * gone there, the lookup would wait behind them */
    start_pool(1, 16, 0);
    run_init(&r, 6);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(submit(&r, NULL, slow, "pw"), 0);
    }
    memset(&p, 0, sizeof(p));
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    p.req.data = &p;
    p.run = &r;
    uint64_t t0 = uv_hrtime();
    cr_assert_eq(uv_getaddrinfo(&r.loop, &p.req, on_gai, "127.0.0.1", "143", &hints), 0);
    run_finish(&r);
    cr_assert_eq(p.calls, 1);
    cr_assert_eq(p.status, 0);
    cr_assert_eq(p.verified_before, 0, "the lookup waited for %d password checks",
                 p.verified_before);
    cr_assert_lt(p.done_ns, r.jobs[0].done_ns, "resolved in %llu ms, after a password check",
                 (unsigned long long)((p.done_ns - t0) / 1000000));
    free(slow);
    verify_cleanup();
}

/* --- cancellation and shutdown --------------------------------------------------- */

Test(verify, cancel_queued_jobs, .timeout = 60)
{
    struct run r;
    char *slow = slow_hash("pw");
    start_pool(1, 16, 0);
    run_init(&r, 5);
    /* jobs 1 and 3 belong to a "closing session": ctx is the job, so cancel
     * them one by one */
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(submit(&r, "192.0.2.1", slow, "pw"), 0);
    }
    verify_cancel(&r.loop, &r.jobs[1]);
    verify_cancel(&r.loop, &r.jobs[3]);
    verify_cancel(&r.loop, &r.jobs[3]); /* twice is harmless */
    cr_assert_eq(r.jobs[1].calls, 0, "never called from within verify_cancel");
    struct verify_stats st;
    verify_stats(&st);
    cr_assert_eq(st.canceled, 2);
    cr_assert_eq(st.jobs, 3, "the canceled left the queue at once");
    run_finish(&r);
    cr_assert_eq(r.jobs[1].result, VERIFY_CANCELED);
    cr_assert_eq(r.jobs[3].result, VERIFY_CANCELED);
    cr_assert_eq(r.jobs[0].result, VERIFY_MATCH);
    cr_assert_eq(r.jobs[2].result, VERIFY_MATCH);
    cr_assert_eq(r.jobs[4].result, VERIFY_MATCH);
    cr_assert_lt(r.jobs[1].done_ns, r.jobs[2].done_ns, "canceled ones come back first");
    free(slow);
    verify_cleanup();
}

Test(verify, shutdown, .timeout = 60)
{
    struct run r;
    char *slow = slow_hash("pw");
    start_pool(2, 16, 0);
    run_init(&r, 0);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(submit(&r, NULL, slow, i == 2 ? "no" : "pw"), 0);
    }
    /* the loop stops taking checks; those in flight still come back, and
     * the loop ends after the last */
    verify_loop_close(&r.loop);
    verify_loop_close(&r.loop); /* twice is harmless */
    cr_assert_eq(submit(&r, NULL, slow, "pw"), UV_EINVAL, "a closed loop takes no checks");
    run_finish(&r);
    cr_assert_eq(r.num_done, 4);
    cr_assert_eq(r.jobs[2].result, VERIFY_MISMATCH);
    cr_assert_eq(r.jobs[3].result, VERIFY_MATCH);
    verify_cleanup();
    verify_cleanup(); /* twice is harmless */

    /* without a pool: loops open and close as no-ops, checks are refused */
    uv_loop_t loop;
    struct job j;
    memset(&j, 0, sizeof(j));
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(verify_loop_open(&loop), 0);
    cr_assert_eq(verify_start_for(&loop, NULL, slow, "pw", on_verified, &j), UV_EINVAL);
    verify_loop_close(&loop);
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(uv_loop_close(&loop), 0);
    cr_assert_eq(j.calls, 0);

    /* and the pool starts again after a cleanup */
    start_pool(1, 4, 1);
    cr_assert_eq(verify_init(&(struct verify_limits){.num_threads = 1}), UV_EALREADY);
    run_init(&r, 1);
    cr_assert_eq(verify_loop_open(&r.loop), UV_EEXIST);
    cr_assert_eq(submit(&r, "192.0.2.1", NULL, "pw"), 0);
    run_finish(&r);
    cr_assert_eq(r.jobs[0].result, VERIFY_MISMATCH);
    free(slow);
    verify_cleanup();
}
