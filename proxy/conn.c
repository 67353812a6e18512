#include "proxy/conn.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include <openssl/mem.h>

#include "common/err.h"
#include "common/secret.h"
#include "proxy/compress.h"
#include "proxy/tls.h"

#define CONN_SCRATCH_LEN 65536      /* bytes of the per-thread read buffer */
#define CONN_TLS_PLAIN_LEN 16384    /* bytes decrypted per tls_read call */
#define CONN_INFLATE_LEN 16384      /* bytes inflated per on_read call */

/* Read scratch: one per worker thread, so idle conns hold no read buffer. */
static _Thread_local uint8_t conn_scratch[CONN_SCRATCH_LEN];
static _Thread_local uint8_t conn_plain[CONN_TLS_PLAIN_LEN];
static _Thread_local uint8_t conn_inflated[CONN_INFLATE_LEN];

#define CONN_F_READING   (1u << 0) /* the owner wants reads */
#define CONN_F_CLOSING   (1u << 1) /* conn_close called */
#define CONN_F_CLOSED    (1u << 2) /* uv_close called */
#define CONN_F_EOF       (1u << 3) /* on_eof delivered (or due) */
#define CONN_F_HANDSHAKE (1u << 4) /* TLS handshake in progress */
#define CONN_F_IN_READ   (1u << 5) /* inside conn_deliver_tls (no re-entry) */
#define CONN_F_DRAIN     (1u << 6) /* on_drain wanted */
#define CONN_F_SHUTDOWN  (1u << 7) /* uv_shutdown pending */
#define CONN_F_WIPE      (1u << 8) /* wipe delivered plaintext and queued copies (conn_set_wipe) */

struct conn {
    uv_tcp_t tcp;                /* tcp.data = this; freed in conn_on_close */
    union {                      /* one request at a time: a shutdown (uv_shutdown
                                    refuses a stream not yet connected) comes only
                                    after the connect is done */
        uv_connect_t connect;    /* one connect per conn */
        uv_shutdown_t shutdown;  /* one shutdown per conn */
    } req;
    const struct conn_ops *ops;
    void *ctx;
    struct tls *tls;             /* NULL for cleartext; owned */
    struct compress *z;          /* NULL until conn_start_compress; owned, freed in
                                    conn_on_close; sits between the owner and tls */
    size_t drain_mark;           /* bytes; see conn_want_drain */
    uint32_t flags;              /* CONN_F_* */
};

struct conn_write_req {
    uv_write_t req;
    struct conn *c;
    uv_buf_t buf;
    int wipe;                    /* data is plaintext of a wiping conn: wiped when freed */
    uint8_t data[];              /* buf.base points here */
};

static void conn_on_close(uv_handle_t *h);
static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void conn_deliver(struct conn *c);

struct conn *conn_new(uv_loop_t *loop, const struct conn_ops *ops, void *ctx)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    if (uv_tcp_init(loop, &c->tcp) != 0) {
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    c->ops = ops;
    c->ctx = ctx;
    return c;
}

void conn_set_ops(struct conn *c, const struct conn_ops *ops, void *ctx)
{
    c->ops = ops;
    c->ctx = ctx;
}

void conn_set_wipe(struct conn *c, int on)
{
    if (on) {
        c->flags |= CONN_F_WIPE;
    } else {
        c->flags &= ~CONN_F_WIPE;
    }
}

#define CONN_KEEPALIVE_S 300 /* idle seconds before TCP keepalive probes */

static void conn_tune(struct conn *c)
{
    /* Nagle would stall each login behind a delayed ACK (docs/ARCHITECTURE.md). */
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, CONN_KEEPALIVE_S);
}

int conn_tune_listener(uv_tcp_t *server)
{
    int r = uv_tcp_nodelay(server, 1);
    return r != 0 ? r : uv_tcp_keepalive(server, 1, CONN_KEEPALIVE_S);
}

int conn_accept(struct conn *c, uv_stream_t *server)
{
    int r = uv_accept(server, (uv_stream_t *)&c->tcp);
#ifndef __linux__
    if (r == 0) {
        conn_tune(c); /* elsewhere the listener's settings may not be inherited */
    }
#endif
    return r;
}

int conn_fileno(const struct conn *c)
{
    uv_os_fd_t fd = -1;
    if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) != 0) {
        return -1;
    }
    return fd;
}

static void conn_on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->handle->data;
    if (c->flags & CONN_F_CLOSING) {
        return;
    }
    if (status == 0) {
        conn_tune(c);
    }
    if (c->ops->on_connect != NULL) {
        c->ops->on_connect(c->ctx, status);
    }
}

int conn_connect(struct conn *c, const struct sockaddr *addr)
{
    return uv_tcp_connect(&c->req.connect, &c->tcp, addr, conn_on_connect);
}

static void conn_report_eof(struct conn *c, int status)
{
    if (c->flags & (CONN_F_EOF | CONN_F_CLOSING)) {
        return;
    }
    c->flags |= CONN_F_EOF;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->ops->on_eof(c->ctx, status);
}

/* conn_write_req_free releases a queued write, wiped if it asked so. */
static void conn_write_req_free(struct conn_write_req *w)
{
    if (w->wipe) {
        secret_free(w, sizeof(*w) + w->buf.len);
    } else {
        free(w);
    }
}

static void conn_on_write(uv_write_t *req, int status)
{
    struct conn_write_req *w = (struct conn_write_req *)req;
    struct conn *c = w->c;
    conn_write_req_free(w);
    if (status < 0) {
        if (status != UV_ECANCELED) {
            conn_report_eof(c, status);
        }
        return;
    }
    if ((c->flags & CONN_F_DRAIN) && !(c->flags & CONN_F_CLOSING) &&
        conn_write_queue_len(c) <= c->drain_mark) {
        c->flags &= ~CONN_F_DRAIN;
        if (c->ops->on_drain != NULL) {
            c->ops->on_drain(c->ctx);
        }
    }
}

/* conn_send_raw hands bytes to libuv: tries a direct write first so that the
 * usual case costs no allocation, and queues the rest. */
static int conn_send_raw(struct conn *c, const uint8_t *data, size_t len)
{
    uv_buf_t b;
    int r;

    if (len == 0) {
        return 0;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        b = uv_buf_init((char *)data, (unsigned)len);
        r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r > 0) {
            data += r;
            len -= (size_t)r;
            if (len == 0) {
                return 0;
            }
        } else if (r != UV_EAGAIN) {
            return r;
        }
    }
    struct conn_write_req *w = malloc(sizeof(*w) + len);
    if (w == NULL) {
        return UV_ENOMEM;
    }
    memcpy(w->data, data, len);
    w->c = c;
    w->buf = uv_buf_init((char *)w->data, (unsigned)len);
    /* through TLS the queue holds ciphertext only: nothing to wipe */
    w->wipe = (c->flags & CONN_F_WIPE) && c->tls == NULL;
    r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &w->buf, 1, conn_on_write);
    if (r != 0) {
        conn_write_req_free(w);
    }
    return r;
}

/* conn_put hands bytes to the layer below compression: the TLS engine, or
 * the socket. */
static int conn_put(struct conn *c, const uint8_t *data, size_t len)
{
    if (c->tls == NULL) {
        return conn_send_raw(c, data, len);
    }
    return tls_write(c->tls, data, len) != 0 ? UV_EPROTO : 0;
}

/* conn_on_deflated is the compressor's sink. */
static int conn_on_deflated(void *ctx, const uint8_t *data, size_t len)
{
    return conn_put(ctx, data, len);
}

/* conn_flush_tls moves the engine's pending ciphertext to the socket,
 * straight from the engine's buffer (conn_send_raw copies what the kernel
 * does not take at once). */
static int conn_flush_tls(struct conn *c)
{
    const uint8_t *p = NULL;
    size_t n = tls_out_peek(c->tls, &p);
    if (n == 0) {
        return 0;
    }
    int r = conn_send_raw(c, p, n);
    tls_out_clear(c->tls);
    return r;
}

/* conn_flush ends a write burst: the compressor's sync flush (so that the
 * client can inflate every byte written so far), then the TLS records. */
static int conn_flush(struct conn *c)
{
    if (c->z != NULL) {
        int r = compress_flush(c->z, conn_on_deflated, c);
        if (r != 0) {
            return r;
        }
    }
    return c->tls != NULL ? conn_flush_tls(c) : 0;
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init((char *)conn_scratch, sizeof(conn_scratch));
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    if (nread == 0 || (c->flags & CONN_F_CLOSING)) {
        return; /* 0 is neither EOF nor error (libuv) */
    }
    if (nread < 0) {
        conn_report_eof(c, (int)nread);
        return;
    }
    if (c->tls == NULL && c->z == NULL) {
        /* the flag as it was before the owner saw the bytes: the owner may
           turn wiping off while handling the very line that needs it */
        int wipe = (c->flags & CONN_F_WIPE) != 0;
        c->ops->on_read(c->ctx, (const uint8_t *)buf->base, (size_t)nread);
        if (wipe) {
            OPENSSL_cleanse(buf->base, (size_t)nread);
        }
        return;
    }
    if (c->tls != NULL) {
        if (tls_feed(c->tls, (const uint8_t *)buf->base, (size_t)nread) != 0) {
            conn_report_eof(c, UV_ENOMEM);
            return;
        }
    } else {
        /* borrowed from the scratch: conn_deliver keeps what is left */
        int r = compress_in_feed(c->z, (const uint8_t *)buf->base, (size_t)nread);
        if (r != 0) {
            conn_report_eof(c, r);
            return;
        }
    }
    conn_deliver(c);
}

/* conn_inflate_step gives the owner one piece of inflated input.  Returns 1
 * if it did (go on), 0 if the inflater wants more input, -1 if the conn
 * failed (reported). */
static int conn_inflate_step(struct conn *c)
{
    size_t n = 0;
    enum compress_result zr = compress_inflate(c->z, &n, conn_inflated, sizeof(conn_inflated));
    if (zr == COMPRESS_WANT) {
        return 0;
    }
    if (zr == COMPRESS_ERROR) {
        conn_report_eof(c, compress_error_code(c->z)); /* COMPRESS_E_DATA, UV_ENOMEM */
        return -1;
    }
    c->ops->on_read(c->ctx, conn_inflated, n);
    return 1;
}

/* conn_deliver runs the handshake, decrypts buffered records and inflates
 * them for the owner, as long as the owner keeps reading.  What the owner
 * writes meanwhile goes out in one flush at the end: one TLS write and one
 * compressor sync flush per read burst. */
static void conn_deliver(struct conn *c)
{
    if (c->flags & CONN_F_IN_READ) {
        return; /* the running loop below picks it up */
    }
    c->flags |= CONN_F_IN_READ;
    while (!(c->flags & (CONN_F_CLOSING | CONN_F_EOF))) {
        if (c->flags & CONN_F_HANDSHAKE) {
            enum tls_result hr = tls_handshake(c->tls);
            /* a finished handshake's last flight (tickets) waits for what
               on_handshake writes (the greeting): one write for both */
            int fr = hr == TLS_DONE ? 0 : conn_flush_tls(c);
            if (hr == TLS_WANT && fr == 0) {
                break;
            }
            c->flags &= ~CONN_F_HANDSHAKE;
            if (fr != 0) {
                conn_report_eof(c, fr);
                break;
            }
            if (c->ops->on_handshake != NULL) {
                c->ops->on_handshake(c->ctx, hr == TLS_DONE ? 0 : IMAPMUX_E_TLS);
            }
            continue;
        }
        if (!(c->flags & CONN_F_READING)) {
            break; /* the rest waits in the engine until conn_read_start */
        }
        if (c->z != NULL) {
            /* inflate first: a bomb's output comes one piece per turn of
               this loop and stops when the owner stops reading */
            int ir = conn_inflate_step(c);
            if (ir > 0) {
                continue;
            }
            if (ir < 0 || c->tls == NULL) {
                break; /* failed, or cleartext: the next read brings more */
            }
        }
        size_t n = 0;
        /* reads can produce output (key updates, alerts): it goes out with
           the owner's answers, below */
        enum tls_result rr = tls_read(c->tls, &n, conn_plain, sizeof(conn_plain));
        if (rr == TLS_WANT) {
            break;
        }
        if (rr == TLS_CLOSED) {
            conn_report_eof(c, UV_EOF);
            break;
        }
        if (rr == TLS_ERROR) {
            conn_report_eof(c, IMAPMUX_E_TLS);
            break;
        }
        if (c->z != NULL) {
            /* borrowed: inflated on the next turn, kept below if not */
            int zr = compress_in_feed(c->z, conn_plain, n);
            if (zr != 0) {
                conn_report_eof(c, zr);
                break;
            }
            continue;
        }
        int wipe = (c->flags & CONN_F_WIPE) != 0; /* as above, in conn_on_read */
        c->ops->on_read(c->ctx, conn_plain, n);
        if (wipe) {
            OPENSSL_cleanse(conn_plain, n);
        }
    }
    c->flags &= ~CONN_F_IN_READ;
    if (c->z != NULL && compress_in_keep(c->z) != 0) {
        /* the owner paused with input left in the scratch, and no copy */
        conn_report_eof(c, UV_ENOMEM);
        return;
    }
    if (!(c->flags & (CONN_F_CLOSING | CONN_F_EOF))) {
        /* what the owner wrote to this conn while reading it, in one go */
        int fr = conn_flush(c);
        if (fr != 0) {
            conn_report_eof(c, fr);
            return;
        }
        if (c->tls != NULL) {
            tls_trim(c->tls); /* read side quiet: drop emptied engine buffers */
        }
        if ((c->flags & CONN_F_DRAIN) && conn_write_queue_len(c) <= c->drain_mark) {
            /* the kernel took it all at once: no write callback will tell */
            c->flags &= ~CONN_F_DRAIN;
            if (c->ops->on_drain != NULL) {
                c->ops->on_drain(c->ctx);
            }
        }
    }
}

int conn_start_tls(struct conn *c, SSL_CTX *ctx, enum conn_tls_role role, const char *server_name)
{
    assert(c->tls == NULL);
    c->tls = tls_new(ctx, role == CONN_TLS_SERVER, server_name);
    if (c->tls == NULL) {
        return UV_ENOMEM;
    }
    c->flags |= CONN_F_HANDSHAKE;
    if (role == CONN_TLS_CLIENT) {
        /* the client speaks first: produce the ClientHello now */
        conn_deliver(c);
    }
    return 0;
}

int conn_start_compress(struct conn *c, const void *reply, size_t reply_len)
{
    struct compress *z;
    int r;

    if (c->flags & (CONN_F_CLOSING | CONN_F_EOF)) {
        return UV_EPIPE;
    }
    if (c->z != NULL) {
        return UV_EALREADY;
    }
    if (c->flags & CONN_F_HANDSHAKE) {
        return UV_EBUSY;
    }
    /* first the memory, so that a refusal can still be said in clear */
    z = compress_new(NULL);
    if (z == NULL) {
        return UV_ENOMEM;
    }
    if (reply_len > 0) {
        r = conn_write(c, reply, reply_len);
        if (r != 0) {
            compress_free(z);
            return r;
        }
    }
    c->z = z;
    return 0;
}

int conn_inject(struct conn *c, const uint8_t *data, size_t len)
{
    if (len == 0 || (c->flags & (CONN_F_CLOSING | CONN_F_EOF))) {
        return 0;
    }
    if (c->z != NULL) {
        return UV_EINVAL; /* only before COMPRESS: nothing is in flight then */
    }
    if (c->tls == NULL) {
        c->ops->on_read(c->ctx, data, len);
        return 0;
    }
    if (tls_feed(c->tls, data, len) != 0) {
        conn_report_eof(c, UV_ENOMEM);
        return UV_ENOMEM;
    }
    conn_deliver(c);
    return 0;
}

int conn_read_start(struct conn *c)
{
    int r;
    if (c->flags & (CONN_F_CLOSING | CONN_F_EOF)) {
        return 0;
    }
    c->flags |= CONN_F_READING;
    r = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read);
    if (r != 0 && r != UV_EALREADY) {
        return r;
    }
    if ((c->tls != NULL && tls_has_buffered(c->tls)) ||
        (c->z != NULL && compress_in_pending(c->z))) {
        conn_deliver(c);
    }
    return 0;
}

void conn_read_stop(struct conn *c)
{
    c->flags &= ~CONN_F_READING;
    /* During a handshake the engine must keep reading. */
    if (!(c->flags & CONN_F_HANDSHAKE)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

int conn_write(struct conn *c, const void *data, size_t len)
{
    int r;
    if (c->flags & (CONN_F_CLOSING | CONN_F_EOF)) {
        return UV_EPIPE;
    }
    if (c->z != NULL) {
        r = compress_deflate(c->z, data, len, conn_on_deflated, c);
    } else {
        r = conn_put(c, data, len);
    }
    if (r == 0 && (c->z != NULL || c->tls != NULL) && !(c->flags & CONN_F_IN_READ)) {
        /* while this conn is being read, its answers are flushed together
           when the read is done (conn_deliver); else this write is a burst */
        r = conn_flush(c);
    }
    if (r != 0) {
        conn_report_eof(c, r);
    }
    return r;
}

size_t conn_write_queue_len(const struct conn *c)
{
    /* compressed bytes: what the kernel still has to take */
    size_t n = uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
    if (c->tls != NULL) {
        n += tls_out_len(c->tls);
    }
    if (c->z != NULL) {
        n += compress_out_pending(c->z);
    }
    return n;
}

void conn_want_drain(struct conn *c, size_t low_mark)
{
    c->drain_mark = low_mark;
    c->flags |= CONN_F_DRAIN;
}

static void conn_on_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->ops->on_close(c->ctx);
    compress_free(c->z);
    tls_free(c->tls);
    free(c);
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->handle->data;
    (void)status;
    c->flags &= ~CONN_F_SHUTDOWN;
    if (!(c->flags & CONN_F_CLOSED)) {
        c->flags |= CONN_F_CLOSED;
        uv_close((uv_handle_t *)&c->tcp, conn_on_close);
    }
}

void conn_close(struct conn *c, enum conn_close_mode mode)
{
    if (c->flags & CONN_F_CLOSED) {
        return;
    }
    int graceful = mode == CONN_CLOSE_GRACEFUL;
    if (c->flags & CONN_F_CLOSING) {
        if (!graceful) {
            c->flags |= CONN_F_CLOSED;
            uv_close((uv_handle_t *)&c->tcp, conn_on_close);
        }
        return;
    }
    c->flags |= CONN_F_CLOSING;
    c->flags &= ~(CONN_F_READING | CONN_F_DRAIN);
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (!(c->flags & CONN_F_EOF)) {
        (void)conn_flush(c); /* answers held back during a read still go */
    }
    if (graceful && !(c->flags & CONN_F_EOF)) {
        if (c->tls != NULL && !(c->flags & CONN_F_HANDSHAKE)) {
            tls_shutdown(c->tls);
            (void)conn_flush_tls(c);
        }
        if (uv_shutdown(&c->req.shutdown, (uv_stream_t *)&c->tcp, conn_on_shutdown) == 0) {
            c->flags |= CONN_F_SHUTDOWN;
            return;
        }
    }
    c->flags |= CONN_F_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
}

int conn_is_compressed(const struct conn *c)
{
    return c->z != NULL;
}

size_t conn_compress_mem_len(const struct conn *c)
{
    return c->z != NULL ? compress_mem_len(c->z) + compress_in_len(c->z) : 0;
}

void conn_compress_trim(struct conn *c)
{
    if (c->z != NULL) {
        compress_out_trim(c->z);
    }
}

void conn_compress_stats(const struct conn *c, struct compress_stats *out)
{
    if (c->z != NULL) {
        compress_get_stats(c->z, out);
    } else {
        memset(out, 0, sizeof(*out));
    }
}

const char *conn_compress_error(const struct conn *c)
{
    return c->z != NULL ? compress_error(c->z) : "no compression";
}

int conn_is_tls(const struct conn *c)
{
    return c->tls != NULL && !(c->flags & CONN_F_HANDSHAKE);
}

const char *conn_tls_version(const struct conn *c)
{
    return c->tls != NULL ? tls_version(c->tls) : "";
}

const char *conn_tls_cipher(const struct conn *c)
{
    return c->tls != NULL ? tls_cipher(c->tls) : "";
}

const char *conn_tls_server_name(const struct conn *c)
{
    return c->tls != NULL ? tls_server_name(c->tls) : "";
}

const char *conn_tls_error(const struct conn *c)
{
    return c->tls != NULL ? tls_error(c->tls) : "no TLS";
}

int conn_addr(const struct conn *c, enum conn_side side, char *ip, size_t ip_len,
              uint16_t *out_port)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    int r = side == CONN_PEER ? uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len)
                 : uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len);
    if (r != 0) {
        return r;
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        *out_port = ntohs(a->sin6_port);
        return uv_ip6_name(a, ip, ip_len);
    }
    const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
    *out_port = ntohs(a->sin_port);
    return uv_ip4_name(a, ip, ip_len);
}
