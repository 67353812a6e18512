/* conn over real loopback TCP in one loop: accept, connect, TLS both ways,
 * data, backpressure's drain callback, close.  Each test runs its loop to the
 * end and checks that no handle leaked. */
#include <string.h>

#include <criterion/criterion.h>

#include <uv.h>

#include "proxy/conn.h"
#include "proxy/tls.h"
#include "secret_watch.h"

#define DATA(f) TEST_DATA_DIR "/" f
#define BULK_LEN (64 * 1024 * 1024) /* past what loopback socket buffers hold */

struct side {
    struct conn *c;
    int connected, handshakes, eofs, drains, closes;
    size_t received;
    uint8_t last;          /* last byte received, to check order */
    int order_ok;
    const uint8_t *last_data; /* where the last delivery was (the per-thread buffer) */
    size_t last_len;
    char got[128];            /* with pair.message: what arrived */
    size_t got_len;
    struct pair *pair;
};

struct pair {
    uv_loop_t loop;
    uv_tcp_t server;
    struct side srv, cli;
    SSL_CTX *sctx, *cctx;
    int tls;
    size_t to_send;        /* bytes the client sends in all */
    const char *message;   /* NULL: bulk; else the client sends this line and closes */
    int wipe_srv, wipe_cli;/* conn_set_wipe on the server's or the client's conn */
};

static void side_connect(void *ctx, int status);
static void side_handshake(void *ctx, int status);
static void side_read(void *ctx, const uint8_t *data, size_t len);
static void side_eof(void *ctx, int status);
static void side_drain(void *ctx);
static void side_close(void *ctx);

static const struct conn_ops test_ops = {
    .on_connect = side_connect,
    .on_handshake = side_handshake,
    .on_read = side_read,
    .on_eof = side_eof,
    .on_drain = side_drain,
    .on_close = side_close,
};

static void send_bulk(struct side *s)
{
    static uint8_t buf[65536];
    struct pair *p = s->pair;
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)i;
    }
    /* write until the queue passes a mark, then wait for the drain */
    while (p->to_send > 0 && conn_write_queue_len(s->c) < 256 * 1024) {
        size_t n = p->to_send < sizeof(buf) ? p->to_send : sizeof(buf);
        cr_assert_eq(conn_write(s->c, buf, n), 0);
        p->to_send -= n;
    }
    if (p->to_send > 0) {
        conn_want_drain(s->c, 64 * 1024);
    } else {
        conn_close(s->c, CONN_CLOSE_GRACEFUL);
    }
}

static void side_ready(struct side *s)
{
    struct pair *p = s->pair;
    if (s != &p->cli) {
        return;
    }
    if (p->message != NULL) {
        cr_assert_eq(conn_write(s->c, p->message, strlen(p->message)), 0);
        conn_close(s->c, CONN_CLOSE_GRACEFUL);
        return;
    }
    send_bulk(s);
}

static void side_connect(void *ctx, int status)
{
    struct side *s = ctx;
    cr_assert_eq(status, 0);
    s->connected++;
    cr_assert_eq(conn_read_start(s->c), 0);
    if (s->pair->tls) {
        cr_assert_eq(conn_start_tls(s->c, s->pair->cctx, CONN_TLS_CLIENT, "localhost"), 0);
    } else {
        side_ready(s);
    }
}

static void side_handshake(void *ctx, int status)
{
    struct side *s = ctx;
    cr_assert_eq(status, 0, "handshake failed: %s", conn_tls_error(s->c));
    s->handshakes++;
    cr_assert_str_eq(conn_tls_version(s->c), "TLSv1.3");
    side_ready(s);
}

static void side_read(void *ctx, const uint8_t *data, size_t len)
{
    struct side *s = ctx;
    s->last_data = data;
    s->last_len = len;
    if (s->pair->message != NULL) {
        cr_assert_leq(s->got_len + len, sizeof(s->got));
        memcpy(s->got + s->got_len, data, len);
        s->got_len += len;
        s->received += len;
        return;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t want = (uint8_t)((s->received + i) % 65536);
        if (data[i] != want) {
            s->order_ok = 0;
        }
    }
    s->received += len;
}

static void side_eof(void *ctx, int status)
{
    struct side *s = ctx;
    cr_assert_eq(status, UV_EOF);
    s->eofs++;
    conn_close(s->c, CONN_CLOSE_NOW);
}

static void side_drain(void *ctx)
{
    struct side *s = ctx;
    s->drains++;
    send_bulk(s);
}

static void side_close(void *ctx)
{
    struct side *s = ctx;
    s->closes++;
    s->c = NULL;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct pair *p = server->data;
    cr_assert_eq(status, 0);
    p->srv.c = conn_new(&p->loop, &test_ops, &p->srv);
    cr_assert_eq(conn_accept(p->srv.c, server), 0);
    conn_set_wipe(p->srv.c, p->wipe_srv);
    if (p->tls) {
        cr_assert_eq(conn_start_tls(p->srv.c, p->sctx, CONN_TLS_SERVER, NULL), 0);
    }
    cr_assert_eq(conn_read_start(p->srv.c), 0);
    uv_close((uv_handle_t *)server, NULL); /* one connection is all we take */
}

/* run_loop runs p (set up by the caller) to its end. */
static void run_loop(struct pair *p)
{
    struct sockaddr_in addr;
    int len = sizeof(addr);
    char err[256];

    p->srv.pair = p->cli.pair = p;
    p->srv.order_ok = p->cli.order_ok = 1;
    if (p->tls) {
        p->sctx = tls_server_ctx_new(err, sizeof(err), DATA("cert.pem"), DATA("key.pem"));
        p->cctx = tls_client_ctx_new(err, sizeof(err), DATA("cert.pem"), 1);
        cr_assert(p->sctx != NULL && p->cctx != NULL);
    }
    cr_assert_eq(uv_loop_init(&p->loop), 0);
    uv_tcp_init(&p->loop, &p->server);
    p->server.data = p;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    cr_assert_eq(uv_tcp_bind(&p->server, (const struct sockaddr *)&addr, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&p->server, 8, on_connection), 0);
    uv_tcp_getsockname(&p->server, (struct sockaddr *)&addr, &len);

    p->cli.c = conn_new(&p->loop, &test_ops, &p->cli);
    conn_set_wipe(p->cli.c, p->wipe_cli);
    cr_assert_eq(conn_connect(p->cli.c, (const struct sockaddr *)&addr), 0);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&p->loop), 0, "a handle leaked");
    SSL_CTX_free(p->sctx);
    SSL_CTX_free(p->cctx);
}

static void run_pair(int tls)
{
    struct pair p;

    memset(&p, 0, sizeof(p));
    p.tls = tls;
    p.to_send = BULK_LEN;
    run_loop(&p);

    cr_assert_eq(p.cli.connected, 1);
    cr_assert_eq(p.srv.received, BULK_LEN, "server got %zu bytes", p.srv.received);
    cr_assert(p.srv.order_ok, "bytes arrived in order");
    cr_assert_gt(p.cli.drains, 0, "backpressure asked for a drain and got it");
    cr_assert_eq(p.srv.eofs, 1);
    cr_assert_eq(p.srv.closes, 1);
    cr_assert_eq(p.cli.closes, 1);
    if (tls) {
        cr_assert_eq(p.srv.handshakes, 1);
        cr_assert_eq(p.cli.handshakes, 1);
    }
}

#define TEST_LOGIN_LINE "a LOGIN alice s3cret-pw\r\n"

/* run_login sends one LOGIN line to a server conn that wipes (or not) and
 * returns whether the line's bytes were still in the read buffer after the
 * loop ended: the last delivery's place is looked at after the callback,
 * which only a test may do (the bytes are borrowed for the call). */
static int run_login(int tls, int wipe)
{
    struct pair p;

    memset(&p, 0, sizeof(p));
    p.tls = tls;
    p.message = TEST_LOGIN_LINE;
    p.wipe_srv = wipe;
    run_loop(&p);

    cr_assert_eq(p.srv.got_len, strlen(TEST_LOGIN_LINE));
    cr_assert_eq(memcmp(p.srv.got, TEST_LOGIN_LINE, p.srv.got_len), 0, "the owner got the line");
    cr_assert_not_null(p.srv.last_data);
    cr_assert_gt(p.srv.last_len, 0);
    for (size_t i = 0; i < p.srv.last_len; i++) {
        if (p.srv.last_data[i] != 0) {
            return 1;
        }
    }
    return 0;
}

Test(conn, wiped_reads_leave_nothing_in_the_read_buffer)
{
    cr_assert_eq(run_login(0, 1), 0, "cleartext: the LOGIN line stayed in the read buffer");
    cr_assert_eq(run_login(1, 1), 0, "TLS: the LOGIN line stayed in the plaintext buffer");
}

Test(conn, unwiped_reads_stay_in_the_read_buffer)
{
    /* the control: without wiping the line is there, so the test above sees */
    cr_assert_eq(run_login(0, 0), 1);
    cr_assert_eq(run_login(1, 0), 1);
}

Test(conn, queued_writes_of_a_wiping_conn_are_wiped)
{
    struct pair p;
    struct secret_watch w;

    memset(&p, 0, sizeof(p));
    p.to_send = BULK_LEN;
    p.wipe_cli = 1;
    secret_watch_start(&w);
    run_loop(&p);
    secret_watch_stop();
    cr_assert_eq(p.srv.received, BULK_LEN);
    cr_assert(p.srv.order_ok, "wiping happens after the write, not before");
    /* the socket buffers fill up, so writes were queued: each copy wiped */
    cr_assert_gt(w.blocks, 0, "no queued write was released through secret_free");
    cr_assert_eq(w.dirty, 0);
}

Test(conn, cleartext_bulk_with_drain_and_graceful_close)
{
    run_pair(0);
}

Test(conn, tls_bulk_with_drain_and_close_notify)
{
    run_pair(1);
}
