/* takeover: a server on its own loop (a thread, as the running process's
 * main loop) hands listening sockets to takeover_fetch; the shares that
 * takeover_claim gives out; READY ends it; no READY leaves the server
 * serving; a socket that was handed over keeps the connection queued on it. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "proxy/listener.h"
#include "proxy/takeover.h"

#define NUM_SOCKS 5

struct srv {
    uv_loop_t loop;
    uv_async_t stop;
    uv_thread_t thread;
    struct takeover_server *t;
    int fds[NUM_SOCKS];
    uint16_t ports[NUM_SOCKS];
    int done;
    char path[108];
};

static size_t srv_fds(void *ctx, int *out, size_t cap)
{
    struct srv *s = ctx;
    size_t n = 0;
    for (; n < NUM_SOCKS && n < cap; n++) {
        out[n] = s->fds[n];
    }
    return n;
}

static void srv_done(void *ctx)
{
    struct srv *s = ctx;
    s->done++;
}

static void srv_on_stop(uv_async_t *a)
{
    struct srv *s = a->data;
    takeover_server_close(s->t);
    uv_close((uv_handle_t *)&s->stop, NULL);
}

static void srv_main(void *arg)
{
    struct srv *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

/* listen_on makes a listening socket on 127.0.0.1 (port 0: any) */
static int listen_on(uint16_t *out_port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(*out_port);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 16), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *out_port = ntohs(sa.sin_port);
    return fd;
}

static void srv_start(struct srv *s)
{
    char err[256];
    memset(s, 0, sizeof(*s));
    snprintf(s->path, sizeof(s->path), "/tmp/imapmux-takeover-test-%ld.sock", (long)getpid());
    /* sockets 0-2 share one port (SO_REUSEPORT, as three workers); 3 and 4
       have a port each */
    s->ports[0] = 0;
    s->fds[0] = listen_on(&s->ports[0]);
    for (int i = 1; i < 3; i++) {
        s->ports[i] = s->ports[0];
        s->fds[i] = listen_on(&s->ports[i]);
    }
    s->ports[3] = 0;
    s->fds[3] = listen_on(&s->ports[3]);
    s->ports[4] = 0;
    s->fds[4] = listen_on(&s->ports[4]);
    cr_assert_eq(uv_loop_init(&s->loop), 0);
    s->t = takeover_serve(err, sizeof(err), &s->loop, s->path, srv_fds, srv_done, s);
    cr_assert_not_null(s->t, "%s", err);
    uv_async_init(&s->loop, &s->stop, srv_on_stop);
    s->stop.data = s;
    cr_assert_eq(uv_thread_create(&s->thread, srv_main, s), 0);
}

static void srv_stop(struct srv *s)
{
    uv_async_send(&s->stop);
    uv_thread_join(&s->thread);
    cr_assert_eq(uv_loop_close(&s->loop), 0, "a handle leaked");
    for (int i = 0; i < NUM_SOCKS; i++) {
        close(s->fds[i]);
    }
}

Test(takeover, nothing_serves_the_path)
{
    char err[256];
    int conn = 7;
    cr_assert_eq(takeover_fetch(err, sizeof(err), "/tmp/imapmux-takeover-none.sock", 2, &conn), 1);
    cr_assert_eq(conn, -1);
}

Test(takeover, sockets_shared_out_then_ready)
{
    struct srv s;
    char err[256], a[32];
    int conn = -1;
    int got[8];
    srv_start(&s);
    /* a client connects to the second port before the hand-over: it must
       survive the old process closing its copy */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(s.ports[3]);
    cr_assert_eq(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);

    cr_assert_eq(takeover_fetch(err, sizeof(err), s.path, 2, &conn), 0, "%s", err);
    cr_assert_geq(conn, 0);
    snprintf(a, sizeof(a), "127.0.0.1");
    /* two workers: the first gets sockets 0 and 2 of the first port, the second 1 */
    size_t n1 = takeover_claim(a, s.ports[0], got, 8);
    cr_assert_eq(n1, 2);
    size_t n2 = takeover_claim(a, s.ports[0], got + n1, 8 - n1);
    cr_assert_eq(n2, 1);
    cr_assert_eq(takeover_claim(a, s.ports[0], got + 3, 5), 0, "nothing is given twice");
    size_t n3 = takeover_claim(a, s.ports[3], got + 3, 5);
    cr_assert_eq(n3, 1);
    /* the socket of the third port is nobody's (no such listener): closed */
    cr_assert_eq(takeover_release_unclaimed(), 1);
    cr_assert_eq(takeover_claim("::1", s.ports[0], got + 4, 4), 0);
    cr_assert_eq(takeover_ready(conn), 0);
    for (int i = 0; i < 100 && s.done == 0; i++) {
        usleep(10000);
    }
    cr_assert_eq(s.done, 1);
    srv_stop(&s); /* the old side closes its copies */
    /* the connection queued before the hand-over is still there, on the
       socket taken over, though the old side closed its copy */
    cr_assert_eq(fcntl(got[3], F_SETFL, O_NONBLOCK), 0);
    int acc = accept(got[3], NULL, NULL);
    cr_assert_geq(acc, 0, "the queued connection was lost");
    close(acc);
    for (size_t i = 0; i < 4; i++) {
        close(got[i]);
    }
    close(c);
    unlink(s.path);
}

Test(takeover, no_ready_the_server_serves_on)
{
    struct srv s;
    char err[256];
    int conn = -1;
    srv_start(&s);
    cr_assert_eq(takeover_fetch(err, sizeof(err), s.path, 1, &conn), 0, "%s", err);
    cr_assert_eq(takeover_release_unclaimed(), NUM_SOCKS);
    close(conn); /* the new process died */
    usleep(100000);
    cr_assert_eq(s.done, 0);
    /* and a second one can still take over */
    cr_assert_eq(takeover_fetch(err, sizeof(err), s.path, 1, &conn), 0, "%s", err);
    cr_assert_eq(takeover_release_unclaimed(), NUM_SOCKS);
    cr_assert_eq(takeover_ready(conn), 0);
    for (int i = 0; i < 100 && s.done == 0; i++) {
        usleep(10000);
    }
    cr_assert_eq(s.done, 1);
    srv_stop(&s);
}
