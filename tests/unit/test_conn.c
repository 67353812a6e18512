/* conn over real loopback TCP in one loop: accept, connect, TLS both ways,
 * data, backpressure's drain callback, close.  Each test runs its loop to the
 * end and checks that no handle leaked. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

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
    /* inherited from the listener (conn_tune_listener), not set per accept */
    int on = 0;
    socklen_t on_len = sizeof(on);
    cr_assert_eq(getsockopt(conn_fileno(p->srv.c), IPPROTO_TCP, TCP_NODELAY, &on, &on_len), 0);
    cr_assert_eq(on, 1, "accepted socket without TCP_NODELAY");
    cr_assert_eq(getsockopt(conn_fileno(p->srv.c), SOL_SOCKET, SO_KEEPALIVE, &on, &on_len), 0);
    cr_assert_eq(on, 1, "accepted socket without SO_KEEPALIVE");
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
    cr_assert_eq(conn_tune_listener(&p->server), 0);
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

/* --- COMPRESS=DEFLATE over loopback ------------------------------------------
 * The server side is the conn under test, as the session uses it; the client
 * is a plain conn with zlib on the test side, as a mail client.  The client
 * asks for COMPRESS, gets the tagged OK in clear and a greeting compressed in
 * the same burst, plays PING/PONG rounds that each need the server's sync
 * flush (the test would hang without one; a timer bounds it), then sends a
 * bulk payload the server reads with pauses, and gets 2 MB back. */

#include <zlib.h>

#include "proxy/compress.h"

#define Z_PINGS 50                      /* PING/PONG rounds */
#define Z_MIX_LEN (2 * 1024 * 1024)     /* bytes of the bulk payloads */
#define Z_BOMB_LEN (64u * 1024 * 1024)  /* zeros the bomb inflates to */
#define Z_PAUSE_EVERY (1024 * 1024)     /* bytes the server reads between pauses */
#define Z_TIMEOUT_MS 60000              /* the whole test, at most */
#define Z_QUEUE_MARK (256 * 1024)       /* bytes queued before waiting for a drain */
#define Z_NOISE_LEN 30000               /* random bytes in each "* pause" note */

enum z_mode { Z_MODE_MIX, Z_MODE_BOMB, Z_MODE_CORRUPT };

struct zbuf {
    uint8_t *p;
    size_t len, cap;
};

static void zbuf_put(struct zbuf *b, const void *data, size_t len)
{
    if (len == 0) {
        return;
    }
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert(b->p != NULL);
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

struct zpair {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_timer_t timeout, resume;
    struct conn *srv, *cli;
    SSL_CTX *sctx, *cctx;
    int tls;
    enum z_mode mode;
    struct zbuf mix;            /* the bulk plaintext both ways */
    uint8_t noise[Z_NOISE_LEN]; /* incompressible: the pause note's body */
    /* server (the proxy's side) */
    struct zbuf srv_in;         /* inflated lines not yet handled */
    int srv_compressing, srv_pings, srv_bulk, srv_paused, srv_pauses, srv_eofs, srv_eof_status;
    size_t srv_bulk_len;        /* payload bytes received */
    size_t srv_max_piece, srv_max_mem, srv_min_mem_seen;
    int srv_bad_bytes, srv_read_while_paused, srv_flush_mismatch;
    size_t srv_sent;            /* bytes of the reply written */
    int srv_drains;
    uint64_t srv_writes;
    /* client (the mail client's side) */
    struct zbuf cli_clear;      /* bytes before compression */
    int cli_compressing;
    z_stream cli_inf, cli_def;
    struct zbuf cli_plain;      /* inflated bytes from the server */
    size_t cli_used;            /* of cli_plain, handled */
    int cli_pongs, cli_hello, cli_done;
    struct zbuf cli_z;          /* compressed payload to send */
    size_t cli_z_sent;
    int closes;
};

static void zsrv_read(void *ctx, const uint8_t *data, size_t len);
static void zsrv_eof(void *ctx, int status);
static void zsrv_drain(void *ctx);
static void zcli_connect(void *ctx, int status);
static void zcli_handshake(void *ctx, int status);
static void zcli_read(void *ctx, const uint8_t *data, size_t len);
static void zcli_eof(void *ctx, int status);
static void zcli_drain(void *ctx);
static void z_close(void *ctx);

static void z_unused_connect(void *ctx, int status)
{
    (void)ctx;
    (void)status;
}

static void z_unused_handshake(void *ctx, int status)
{
    cr_assert_eq(status, 0);
}

static const struct conn_ops zsrv_ops = {
    .on_connect = z_unused_connect,
    .on_handshake = z_unused_handshake,
    .on_read = zsrv_read,
    .on_eof = zsrv_eof,
    .on_drain = zsrv_drain,
    .on_close = z_close,
};

static const struct conn_ops zcli_ops = {
    .on_connect = zcli_connect,
    .on_handshake = zcli_handshake,
    .on_read = zcli_read,
    .on_eof = zcli_eof,
    .on_drain = zcli_drain,
    .on_close = z_close,
};

static void z_close(void *ctx)
{
    struct zpair *p = ctx;
    if (++p->closes == 2) {
        uv_close((uv_handle_t *)&p->timeout, NULL);
        uv_close((uv_handle_t *)&p->resume, NULL);
    }
}

static void z_on_timeout(uv_timer_t *t)
{
    struct zpair *p = t->data;
    cr_assert_fail("timed out: pongs %d, hello %d, bulk %zu, reply %zu", p->cli_pongs,
                   p->cli_hello, p->srv_bulk_len, p->cli_plain.len);
}

/* --- server ---------------------------------------------------------------- */

static void zsrv_send_reply(struct zpair *p)
{
    while (p->srv_sent < p->mix.len && conn_write_queue_len(p->srv) < Z_QUEUE_MARK) {
        size_t n = p->mix.len - p->srv_sent < 20000 ? p->mix.len - p->srv_sent : 20000;
        cr_assert_eq(conn_write(p->srv, p->mix.p + p->srv_sent, n), 0);
        p->srv_sent += n;
    }
    if (p->srv_sent < p->mix.len) {
        conn_want_drain(p->srv, Z_QUEUE_MARK / 4);
    }
}

static void zsrv_drain(void *ctx)
{
    struct zpair *p = ctx;
    p->srv_drains++;
    zsrv_send_reply(ctx);
}

static void z_on_resume(uv_timer_t *t)
{
    struct zpair *p = t->data;
    p->srv_paused = 0;
    cr_assert_eq(conn_read_start(p->srv), 0);
}

static void zsrv_bulk(struct zpair *p, const uint8_t *data, size_t len)
{
    size_t want = p->mode == Z_MODE_BOMB ? Z_BOMB_LEN : p->mix.len;
    cr_assert_leq(p->srv_bulk_len + len, want);
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p->mode == Z_MODE_BOMB ? 0 : p->mix.p[p->srv_bulk_len + i];
        if (data[i] != c) {
            p->srv_bad_bytes++;
        }
    }
    size_t before = p->srv_bulk_len;
    p->srv_bulk_len += len;
    if (p->srv_bulk_len == want) {
        zsrv_send_reply(p);
    } else if (before / Z_PAUSE_EVERY != p->srv_bulk_len / Z_PAUSE_EVERY) {
        /* the session's backpressure: stop, and come back a little later */
        conn_read_stop(p->srv);
        p->srv_paused = 1;
        p->srv_pauses++;
        /* the client reads this meanwhile, in the same thread: read scratch
           buffers are reused while the server holds unused input */
        cr_assert_eq(conn_write(p->srv, "* pause ", 8), 0);
        cr_assert_eq(conn_write(p->srv, p->noise, sizeof(p->noise)), 0);
        cr_assert_eq(uv_timer_start(&p->resume, z_on_resume, 1, 0), 0);
    }
}

static void zsrv_line(struct zpair *p, const char *line)
{
    char reply[64];
    unsigned n;
    if (!p->srv_compressing) {
        cr_assert_str_eq(line, "a COMPRESS DEFLATE");
        static const char ok[] = "a OK DEFLATE active\r\n";
        cr_assert_eq(conn_start_compress(p->srv, ok, sizeof(ok) - 1), 0);
        cr_assert_eq(conn_start_compress(p->srv, ok, sizeof(ok) - 1), UV_EALREADY);
        cr_assert(conn_is_compressed(p->srv));
        cr_assert_gt(compress_mem_all(), 0);
        p->srv_compressing = 1;
        cr_assert_eq(conn_write(p->srv, "* hello\r\n", 9), 0);
        return;
    }
    if (sscanf(line, "PING %u", &n) == 1) {
        struct compress_stats st;
        cr_assert_eq(n, (unsigned)p->srv_pings);
        /* one flush per burst so far: the greeting's, then one per PING */
        conn_compress_stats(p->srv, &st);
        if (st.flushes != (uint64_t)n + 1) {
            p->srv_flush_mismatch++;
        }
        p->srv_pings++;
        int len = snprintf(reply, sizeof(reply), "PONG %u\r\n", n);
        /* three writes in one burst */
        cr_assert_eq(conn_write(p->srv, reply, 2), 0);
        cr_assert_eq(conn_write(p->srv, reply + 2, (size_t)len - 4), 0);
        cr_assert_eq(conn_write(p->srv, "\r\n", 2), 0);
        p->srv_writes += 3;
        return;
    }
    cr_assert_str_eq(line, "BULK");
    p->srv_bulk = 1;
}

static void zsrv_read(void *ctx, const uint8_t *data, size_t len)
{
    struct zpair *p = ctx;
    if (p->srv_paused) {
        p->srv_read_while_paused++;
    }
    if (p->srv_compressing) {
        size_t mem = conn_compress_mem_len(p->srv);
        p->srv_max_piece = len > p->srv_max_piece ? len : p->srv_max_piece;
        p->srv_max_mem = mem > p->srv_max_mem ? mem : p->srv_max_mem;
    }
    if (p->srv_bulk) {
        zsrv_bulk(p, data, len);
        return;
    }
    zbuf_put(&p->srv_in, data, len);
    for (;;) {
        uint8_t *eol = p->srv_in.len > 0 ? memchr(p->srv_in.p, '\n', p->srv_in.len) : NULL;
        if (eol == NULL || p->srv_bulk) {
            break;
        }
        size_t line_len = (size_t)(eol - p->srv_in.p) + 1;
        char line[128];
        cr_assert_lt(line_len, sizeof(line));
        cr_assert_geq(line_len, 2);
        memcpy(line, p->srv_in.p, line_len - 2);
        line[line_len - 2] = '\0';
        memmove(p->srv_in.p, p->srv_in.p + line_len, p->srv_in.len - line_len);
        p->srv_in.len -= line_len;
        int was_clear = !p->srv_compressing;
        zsrv_line(p, line);
        if (was_clear) {
            /* the client waits for the OK: nothing followed in clear */
            cr_assert_eq(p->srv_in.len, 0);
        }
    }
    if (p->srv_bulk && p->srv_in.len > 0) {
        /* payload in the same piece as BULK */
        size_t n = p->srv_in.len;
        p->srv_in.len = 0;
        zsrv_bulk(p, p->srv_in.p, n);
    }
}

static void zsrv_eof(void *ctx, int status)
{
    struct zpair *p = ctx;
    p->srv_eofs++;
    p->srv_eof_status = status;
    if (status == COMPRESS_E_DATA) {
        cr_assert(strstr(conn_compress_error(p->srv), "invalid") != NULL, "%s",
                  conn_compress_error(p->srv));
    }
    conn_close(p->srv, CONN_CLOSE_NOW);
}

static void z_on_connection(uv_stream_t *server, int status)
{
    struct zpair *p = server->data;
    cr_assert_eq(status, 0);
    p->srv = conn_new(&p->loop, &zsrv_ops, p);
    cr_assert_eq(conn_accept(p->srv, server), 0);
    if (p->tls) {
        cr_assert_eq(conn_start_tls(p->srv, p->sctx, CONN_TLS_SERVER, NULL), 0);
    }
    cr_assert_eq(conn_read_start(p->srv), 0);
    uv_close((uv_handle_t *)server, NULL);
}

/* --- client ---------------------------------------------------------------- */

static void zcli_send_payload(struct zpair *p)
{
    while (p->cli_z_sent < p->cli_z.len && conn_write_queue_len(p->cli) < Z_QUEUE_MARK) {
        size_t n = 1 + (p->cli_z_sent * 7919) % 30000;
        if (n > p->cli_z.len - p->cli_z_sent) {
            n = p->cli_z.len - p->cli_z_sent;
        }
        cr_assert_eq(conn_write(p->cli, p->cli_z.p + p->cli_z_sent, n), 0);
        p->cli_z_sent += n;
    }
    if (p->cli_z_sent < p->cli_z.len) {
        conn_want_drain(p->cli, Z_QUEUE_MARK / 4);
    }
}

static void zcli_drain(void *ctx)
{
    zcli_send_payload(ctx);
}

/* zcli_deflate appends the client's compressed form of data to out */
static void zcli_deflate(struct zpair *p, struct zbuf *out, const void *data, size_t len,
                         int flush)
{
    uint8_t tmp[65536];
    p->cli_def.next_in = (Bytef *)data;
    p->cli_def.avail_in = (uInt)len;
    do {
        p->cli_def.next_out = tmp;
        p->cli_def.avail_out = sizeof(tmp);
        cr_assert_neq(deflate(&p->cli_def, flush), Z_STREAM_ERROR);
        zbuf_put(out, tmp, sizeof(tmp) - p->cli_def.avail_out);
    } while (p->cli_def.avail_out == 0);
}

static void zcli_send_line(struct zpair *p, const char *line)
{
    struct zbuf z = {0};
    zcli_deflate(p, &z, line, strlen(line), Z_SYNC_FLUSH);
    cr_assert_eq(conn_write(p->cli, z.p, z.len), 0);
    free(z.p);
}

static void zcli_start_bulk(struct zpair *p)
{
    static uint8_t zeros[1 << 20];
    zcli_deflate(p, &p->cli_z, "BULK\r\n", 6, Z_NO_FLUSH);
    if (p->mode == Z_MODE_BOMB) {
        for (unsigned i = 0; i < Z_BOMB_LEN / sizeof(zeros); i++) {
            zcli_deflate(p, &p->cli_z, zeros, sizeof(zeros), Z_NO_FLUSH);
        }
        zcli_deflate(p, &p->cli_z, "", 0, Z_SYNC_FLUSH);
        cr_assert_lt(p->cli_z.len, Z_BOMB_LEN / 500, "a bomb: %zu bytes", p->cli_z.len);
    } else {
        zcli_deflate(p, &p->cli_z, p->mix.p, p->mix.len, Z_SYNC_FLUSH);
    }
    zcli_send_payload(p);
}

static void zcli_handle(struct zpair *p)
{
    char line[64];
    for (;;) {
        uint8_t *base = p->cli_plain.p + p->cli_used;
        size_t avail = p->cli_plain.len - p->cli_used;
        if (p->cli_pongs == Z_PINGS && avail >= 8 && memcmp(base, "* pause ", 8) == 0) {
            if (avail < 8 + Z_NOISE_LEN) {
                return;
            }
            cr_assert_eq(memcmp(base + 8, p->noise, Z_NOISE_LEN), 0);
            p->cli_used += 8 + Z_NOISE_LEN;
            continue;
        }
        if (p->cli_pongs == Z_PINGS) {
            /* the reply: the mix */
            if (avail == p->mix.len && !p->cli_done) {
                cr_assert_eq(memcmp(base, p->mix.p, p->mix.len), 0, "reply differs");
                p->cli_done = 1;
                conn_close(p->cli, CONN_CLOSE_GRACEFUL);
            }
            cr_assert_leq(avail, p->mix.len);
            return;
        }
        uint8_t *eol = avail > 0 ? memchr(base, '\n', avail) : NULL;
        if (eol == NULL) {
            return;
        }
        size_t n = (size_t)(eol - base) + 1;
        cr_assert_lt(n, sizeof(line));
        memcpy(line, base, n);
        line[n] = '\0';
        p->cli_used += n;
        if (!p->cli_hello) {
            cr_assert_str_eq(line, "* hello\r\n");
            p->cli_hello = 1;
        } else {
            char want[32];
            snprintf(want, sizeof(want), "PONG %d\r\n", p->cli_pongs);
            cr_assert_str_eq(line, want);
            p->cli_pongs++;
        }
        if (p->cli_pongs == Z_PINGS) {
            zcli_start_bulk(p);
        } else {
            snprintf(line, sizeof(line), "PING %d\r\n", p->cli_pongs);
            zcli_send_line(p, line);
        }
    }
}

static void zcli_inflate(struct zpair *p, const uint8_t *data, size_t len)
{
    uint8_t tmp[65536];
    p->cli_inf.next_in = (Bytef *)data;
    p->cli_inf.avail_in = (uInt)len;
    do {
        p->cli_inf.next_out = tmp;
        p->cli_inf.avail_out = sizeof(tmp);
        int r = inflate(&p->cli_inf, Z_SYNC_FLUSH);
        cr_assert(r == Z_OK || r == Z_BUF_ERROR, "client inflate: %d", r);
        zbuf_put(&p->cli_plain, tmp, sizeof(tmp) - p->cli_inf.avail_out);
    } while (p->cli_inf.avail_out == 0 || p->cli_inf.avail_in > 0);
}

static void zcli_read(void *ctx, const uint8_t *data, size_t len)
{
    struct zpair *p = ctx;
    if (!p->cli_compressing) {
        static const char ok[] = "a OK DEFLATE active\r\n";
        size_t take = sizeof(ok) - 1 - p->cli_clear.len;
        take = take < len ? take : len;
        zbuf_put(&p->cli_clear, data, take);
        data += take;
        len -= take;
        if (p->cli_clear.len < sizeof(ok) - 1) {
            return;
        }
        cr_assert_eq(memcmp(p->cli_clear.p, ok, sizeof(ok) - 1), 0, "the OK comes in clear");
        p->cli_compressing = 1;
        if (p->mode == Z_MODE_CORRUPT) {
            cr_assert_eq(conn_write(p->cli, "\xff\xff\xff\xff\xff\xff", 6), 0);
            p->cli_done = 1;
            return;
        }
    }
    if (len > 0 && p->mode != Z_MODE_CORRUPT) {
        zcli_inflate(p, data, len);
        zcli_handle(p);
    }
}

static void zcli_eof(void *ctx, int status)
{
    struct zpair *p = ctx;
    cr_assert_eq(p->mode, Z_MODE_CORRUPT, "client lost the server: %d", status);
    conn_close(p->cli, CONN_CLOSE_NOW);
}

static void zcli_ready(struct zpair *p)
{
    cr_assert_eq(conn_write(p->cli, "a COMPRESS DEFLATE\r\n", 20), 0);
}

static void zcli_connect(void *ctx, int status)
{
    struct zpair *p = ctx;
    cr_assert_eq(status, 0);
    cr_assert_eq(conn_read_start(p->cli), 0);
    if (p->tls) {
        cr_assert_eq(conn_start_tls(p->cli, p->cctx, CONN_TLS_CLIENT, "localhost"), 0);
    } else {
        zcli_ready(p);
    }
}

static void zcli_handshake(void *ctx, int status)
{
    cr_assert_eq(status, 0);
    zcli_ready(ctx);
}

static void make_mix(struct zbuf *b, size_t len)
{
    uint64_t x = 0x1234567887654321ull;
    static const char text[] = "* 3 FETCH (UID 17 BODY[] {1024}\r\nSubject: budget\r\n";
    while (b->len < len) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint8_t c = (uint8_t)((x * 0x2545f4914f6cdd1dull) >> 56);
        if ((b->len / 3000) % 2 == 0) {
            zbuf_put(b, &c, 1);
        } else {
            zbuf_put(b, &text[b->len % (sizeof(text) - 1)], 1);
        }
    }
}

static void run_zpair(int tls, enum z_mode mode)
{
    struct zpair p;
    struct sockaddr_in addr;
    int len = sizeof(addr);
    char err[256];

    memset(&p, 0, sizeof(p));
    p.tls = tls;
    p.mode = mode;
    make_mix(&p.mix, Z_MIX_LEN);
    for (size_t i = 0; i < sizeof(p.noise); i++) {
        p.noise[i] = (uint8_t)((i * 2654435761u) >> 13);
    }
    cr_assert_eq(inflateInit2(&p.cli_inf, -15), Z_OK);
    cr_assert_eq(deflateInit2(&p.cli_def, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    if (tls) {
        p.sctx = tls_server_ctx_new(err, sizeof(err), DATA("cert.pem"), DATA("key.pem"));
        p.cctx = tls_client_ctx_new(err, sizeof(err), DATA("cert.pem"), 1);
        cr_assert(p.sctx != NULL && p.cctx != NULL);
    }
    cr_assert_eq(uv_loop_init(&p.loop), 0);
    uv_timer_init(&p.loop, &p.timeout);
    uv_timer_init(&p.loop, &p.resume);
    p.timeout.data = p.resume.data = &p;
    uv_timer_start(&p.timeout, z_on_timeout, Z_TIMEOUT_MS, 0);
    uv_tcp_init(&p.loop, &p.server);
    p.server.data = &p;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    cr_assert_eq(uv_tcp_bind(&p.server, (const struct sockaddr *)&addr, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&p.server, 8, z_on_connection), 0);
    uv_tcp_getsockname(&p.server, (struct sockaddr *)&addr, &len);

    p.cli = conn_new(&p.loop, &zcli_ops, &p);
    cr_assert_eq(conn_connect(p.cli, (const struct sockaddr *)&addr), 0);
    uv_run(&p.loop, UV_RUN_DEFAULT);

    cr_assert_eq(p.closes, 2);
    cr_assert(p.cli_done);
    cr_assert_eq(p.srv_eofs, 1);
    if (mode == Z_MODE_CORRUPT) {
        cr_assert_eq(p.srv_eof_status, COMPRESS_E_DATA, "status %d", p.srv_eof_status);
    } else {
        cr_assert_eq(p.srv_eof_status, UV_EOF);
        cr_assert_eq(p.srv_pings, Z_PINGS);
        cr_assert_eq(p.srv_flush_mismatch, 0, "one sync flush per burst of three writes");
        cr_assert_eq(p.srv_bulk_len, mode == Z_MODE_BOMB ? Z_BOMB_LEN : Z_MIX_LEN);
        cr_assert_eq(p.srv_bad_bytes, 0);
        cr_assert_eq(p.srv_read_while_paused, 0, "nothing delivered while paused");
        cr_assert_geq(p.srv_pauses, (int)(p.srv_bulk_len / Z_PAUSE_EVERY) - 1);
        if (tls) {
            /* the reply is written during a read: its compressed records
               wait in the queue past the mark, and drain (in clear, the
               loopback socket takes 2 MB at once) */
            cr_assert_gt(p.srv_drains, 0);
        }
        cr_assert_leq(p.srv_max_piece, 16384, "pieces of at most 16 KiB: %zu", p.srv_max_piece);
        /* zlib's two streams and at most one read of kept input */
        cr_assert_leq(p.srv_max_mem, 96 * 1024 + 65536, "held %zu", p.srv_max_mem);
        cr_assert_gt(p.srv_max_mem, 32768);
    }
    /* the conn freed its zlib state when it closed */
    cr_assert_eq(compress_mem_all(), 0, "zlib still holds %zu bytes", compress_mem_all());
    cr_assert_eq(uv_loop_close(&p.loop), 0, "a handle leaked");
    inflateEnd(&p.cli_inf);
    deflateEnd(&p.cli_def);
    free(p.mix.p);
    free(p.srv_in.p);
    free(p.cli_clear.p);
    free(p.cli_plain.p);
    free(p.cli_z.p);
    SSL_CTX_free(p.sctx);
    SSL_CTX_free(p.cctx);
}

Test(conn, compress_cleartext_pings_bulk_and_reply)
{
    run_zpair(0, Z_MODE_MIX);
}

Test(conn, compress_tls_pings_bulk_and_reply)
{
    run_zpair(1, Z_MODE_MIX);
}

Test(conn, compress_tls_bomb_read_with_pauses)
{
    run_zpair(1, Z_MODE_BOMB);
}

Test(conn, compress_cleartext_bomb_read_with_pauses)
{
    run_zpair(0, Z_MODE_BOMB);
}

Test(conn, compress_corrupt_stream_ends_the_conn)
{
    run_zpair(1, Z_MODE_CORRUPT);
}
