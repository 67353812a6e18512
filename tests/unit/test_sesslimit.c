/* sesslimit against a real redis-server started by the test on a free
 * loopback port: leases counted per login and per address, given back,
 * renewed while held, expiring when no longer renewed, and a Redis that is
 * not there answered as SESSLIMIT_REDIS_DOWN with a lease. */
#include "proxy/sesslimit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "common/config.h"

#define TEST_LEASE_MS 600        /* renewed every 200 ms */
#define TEST_WAIT_MS 5000        /* longest a step may take */

static pid_t redis_pid;
static int redis_port;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *sync_redis(void)
{
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    cr_assert(c != NULL && c->err == 0);
    return c;
}

static long long zcard(const char *key)
{
    redisContext *c = sync_redis();
    redisReply *r = redisCommand(c, "ZCARD %s", key);
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER);
    long long n = r->integer;
    freeReplyObject(r);
    redisFree(c);
    return n;
}

static void start_redis(void)
{
    char port[16];
    redis_port = free_port();
    snprintf(port, sizeof(port), "%d", redis_port);
    redis_pid = fork();
    cr_assert(redis_pid >= 0);
    if (redis_pid == 0) {
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", "--logfile", "/dev/null", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) { /* at most 10 s */
        redisContext *c = redisConnect("127.0.0.1", redis_port);
        int ok = c != NULL && c->err == 0;
        redisFree(c);
        if (ok) {
            return;
        }
        usleep(50000);
    }
    cr_assert_fail("redis-server did not start");
}

static void stop_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
}

TestSuite(sesslimit, .init = start_redis, .fini = stop_redis);

static struct config *make_config(int port)
{
    char text[512], err[256];
    snprintf(text, sizeof(text),
             "instance: unit\n"
             "backends: [{name: x, host: h, port: 1}]\n"
             "redis: {host: 127.0.0.1, port: %d, connect_timeout_ms: 500}\n"
             "limits: {session_lease_ms: %d}\n",
             port, TEST_LEASE_MS);
    struct config *c = config_parse(err, sizeof(err), "unit.yaml", text, strlen(text));
    cr_assert_not_null(c, "%s", err);
    return c;
}

struct answer {
    int done;
    enum sesslimit_verdict v;
    unsigned limit;
    struct sesslimit_lease *lease;
};

static void on_answer(void *ctx, enum sesslimit_verdict v, unsigned limit,
                      struct sesslimit_lease *lease)
{
    struct answer *a = ctx;
    a->done++;
    a->v = v;
    a->limit = limit;
    a->lease = lease;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* run_until turns the loop until *flag is set or ms pass. */
static void run_until(uv_loop_t *loop, const int *flag, uint64_t ms)
{
    uv_timer_t tick;
    uv_update_time(loop); /* the test may have slept */
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    uint64_t end = uv_now(loop) + ms;
    while ((flag == NULL || !*flag) && uv_now(loop) < end) {
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* wait_up lets the client connect: an acquire before that is REDIS_DOWN. */
static void wait_up(uv_loop_t *loop)
{
    run_until(loop, NULL, 300);
}

static struct answer acquire(uv_loop_t *loop, struct sesslimit *l, const char *login,
                             const char *ip, const char *id, unsigned max_user, unsigned max_ip)
{
    struct answer a = {0};
    cr_assert_eq(sesslimit_acquire(l, login, ip, id, max_user, max_ip, on_answer, &a), 0);
    run_until(loop, &a.done, TEST_WAIT_MS);
    cr_assert_eq(a.done, 1);
    return a;
}

static void finish(uv_loop_t *loop, struct sesslimit *l, struct config *c)
{
    sesslimit_free(l);
    uv_run(loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(loop), 0, "a handle was left open");
    config_unref(&c);
}

Test(sesslimit, limit_per_login_and_release)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config *c = make_config(redis_port);
    struct sesslimit *l = sesslimit_new(&loop, c, 0);
    cr_assert_not_null(l);
    wait_up(&loop);

    struct answer a1 = acquire(&loop, l, "ann", "192.0.2.1", "s1", 2, 0);
    struct answer a2 = acquire(&loop, l, "ann", "192.0.2.2", "s2", 2, 0);
    cr_assert_eq(a1.v, SESSLIMIT_OK);
    cr_assert_eq(a2.v, SESSLIMIT_OK);
    cr_assert_not_null(a1.lease);
    cr_assert_eq(zcard("imapmux:sess:ann"), 2);
    struct answer a3 = acquire(&loop, l, "ann", "192.0.2.3", "s3", 2, 0);
    cr_assert_eq(a3.v, SESSLIMIT_OVER_USER);
    cr_assert_eq(a3.limit, 2);
    cr_assert_null(a3.lease);
    /* another login is not affected */
    struct answer b = acquire(&loop, l, "bea", "192.0.2.3", "s4", 2, 0);
    cr_assert_eq(b.v, SESSLIMIT_OK);

    sesslimit_release(l, &a1.lease);
    cr_assert_null(a1.lease);
    struct answer a4 = acquire(&loop, l, "ann", "192.0.2.3", "s5", 2, 0);
    cr_assert_eq(a4.v, SESSLIMIT_OK, "the released place is free again");

    struct sesslimit_stats st;
    sesslimit_stats(l, &st);
    cr_assert_eq(st.acquired, 4);
    cr_assert_eq(st.refused_user, 1);
    cr_assert_eq(st.released, 1);
    cr_assert_eq(st.leases, 3);
    sesslimit_release(l, &a2.lease);
    sesslimit_release(l, &a4.lease);
    sesslimit_release(l, &b.lease);
    finish(&loop, l, c);
}

Test(sesslimit, limit_per_address_and_records)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config *c = make_config(redis_port);
    struct sesslimit *l = sesslimit_new(&loop, c, 1);
    wait_up(&loop);

    struct answer a1 = acquire(&loop, l, "cid", "192.0.2.1", "s1", 0, 1);
    cr_assert_eq(a1.v, SESSLIMIT_OK);
    struct answer a2 = acquire(&loop, l, "cid", "192.0.2.1", "s2", 0, 1);
    cr_assert_eq(a2.v, SESSLIMIT_OVER_IP);
    /* 192.0.2.10 starts with "192.0.2.1": the address part ends with '|' */
    struct answer a3 = acquire(&loop, l, "cid", "192.0.2.10", "s3", 0, 1);
    cr_assert_eq(a3.v, SESSLIMIT_OK);
    /* one IPv6 /64 is one address */
    struct answer a4 = acquire(&loop, l, "cid", "2001:db8::1", "s4", 0, 1);
    struct answer a5 = acquire(&loop, l, "cid", "2001:db8::2", "s5", 0, 1);
    cr_assert_eq(a4.v, SESSLIMIT_OK);
    cr_assert_eq(a5.v, SESSLIMIT_OVER_IP);

    /* the user's hash wins over the configured limit, the domain's next */
    redisContext *r = sync_redis();
    freeReplyObject(redisCommand(r, "HSET imapmux:user:dee@example.net max_sessions 1"));
    freeReplyObject(redisCommand(r, "HSET imapmux:domain:example.net max_sessions 2"));
    redisFree(r);
    struct answer d1 = acquire(&loop, l, "dee@example.net", "192.0.2.1", "s6", 10, 0);
    struct answer d2 = acquire(&loop, l, "dee@example.net", "192.0.2.2", "s7", 10, 0);
    cr_assert_eq(d1.v, SESSLIMIT_OK);
    cr_assert_eq(d2.v, SESSLIMIT_OVER_USER);
    cr_assert_eq(d2.limit, 1);
    struct answer e1 = acquire(&loop, l, "eve@example.net", "192.0.2.1", "s8", 10, 0);
    struct answer e2 = acquire(&loop, l, "eve@example.net", "192.0.2.2", "s9", 10, 0);
    struct answer e3 = acquire(&loop, l, "eve@example.net", "192.0.2.3", "s10", 10, 0);
    cr_assert_eq(e1.v, SESSLIMIT_OK);
    cr_assert_eq(e2.v, SESSLIMIT_OK);
    cr_assert_eq(e3.v, SESSLIMIT_OVER_USER);
    cr_assert_eq(e3.limit, 2);

    struct sesslimit_lease **held[] = {&a1.lease, &a3.lease, &a4.lease, &d1.lease, &e1.lease,
                                       &e2.lease};
    for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++) {
        cr_assert_not_null(*held[i]);
        sesslimit_release(l, held[i]);
    }
    finish(&loop, l, c);
}

Test(sesslimit, renewed_while_held_expire_when_not)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config *c = make_config(redis_port);
    struct sesslimit *l = sesslimit_new(&loop, c, 2);
    wait_up(&loop);

    struct answer a = acquire(&loop, l, "fay", "192.0.2.1", "s1", 1, 0);
    cr_assert_eq(a.v, SESSLIMIT_OK);
    run_until(&loop, NULL, 3 * TEST_LEASE_MS); /* three leases long */
    cr_assert_eq(zcard("imapmux:sess:fay"), 1, "renewals keep a held lease");
    struct sesslimit_stats st;
    sesslimit_stats(l, &st);
    cr_assert_geq(st.renewals, 5);
    struct answer b = acquire(&loop, l, "fay", "192.0.2.1", "s2", 1, 0);
    cr_assert_eq(b.v, SESSLIMIT_OVER_USER);

    /* an instance that dies renews nothing: its lease is gone a lease later */
    sesslimit_free(l); /* frees without releasing, as a crash would */
    uv_run(&loop, UV_RUN_DEFAULT);
    usleep((TEST_LEASE_MS + 100) * 1000);
    l = sesslimit_new(&loop, c, 3);
    wait_up(&loop);
    b = acquire(&loop, l, "fay", "192.0.2.1", "s3", 1, 0);
    cr_assert_eq(b.v, SESSLIMIT_OK, "the dead lease expired (verdict %d)", b.v);
    cr_assert_eq(zcard("imapmux:sess:fay"), 1);
    sesslimit_release(l, &b.lease);
    finish(&loop, l, c);
}

Test(sesslimit, redis_away)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config *c = make_config(free_port()); /* nothing listens there */
    struct sesslimit *l = sesslimit_new(&loop, c, 0);
    wait_up(&loop);
    struct answer a = acquire(&loop, l, "gil", "192.0.2.1", "s1", 1, 1);
    cr_assert_eq(a.v, SESSLIMIT_REDIS_DOWN);
    cr_assert_not_null(a.lease, "the policy may let the session in: it gets a lease");
    struct sesslimit_stats st;
    sesslimit_stats(l, &st);
    cr_assert_eq(st.redis_errors, 1);
    sesslimit_release(l, &a.lease);
    finish(&loop, l, c);
}

Test(sesslimit, off_without_redis_or_lease)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    const char *text = "backends: [{name: x, host: h, port: 1}]\n";
    struct config *c = config_parse(err, sizeof(err), "t.yaml", text, strlen(text));
    cr_assert_not_null(c);
    cr_assert_null(sesslimit_new(&loop, c, 0));
    config_unref(&c);
    text = "backends: [{name: x, host: h, port: 1}]\nredis: {host: 127.0.0.1}\n"
           "limits: {session_lease_ms: 0}\n";
    c = config_parse(err, sizeof(err), "t.yaml", text, strlen(text));
    cr_assert_not_null(c, "%s", err);
    cr_assert_null(sesslimit_new(&loop, c, 0));
    config_unref(&c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
