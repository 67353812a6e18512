/* conn: one network endpoint (a TCP handle, optionally TLS, optionally
 * COMPRESS=DEFLATE above it) with write accounting.  It delivers plaintext to
 * its owner through callbacks and keeps no read buffer of its own: bytes
 * arrive in a per-thread scratch buffer and the owner consumes them during
 * the callback.  Layers: tcp -> tls -> compress -> owner. */
#ifndef IMAPMUX_PROXY_CONN_H
#define IMAPMUX_PROXY_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <openssl/ssl.h>

struct conn;
struct compress_stats;

/* Callbacks; ctx is what conn_new was given.  Any of them may call
 * conn_close() on this conn.  on_connect, on_handshake and on_drain may be
 * NULL for an owner that never asks for them. */
struct conn_ops {
    /* connect finished: status 0 or a UV_E* code (not called once closing) */
    void (*on_connect)(void *ctx, int status);
    /* TLS handshake finished: status 0, or IMAPMUX_E_TLS (reason in conn_tls_error) */
    void (*on_handshake)(void *ctx, int status);
    /* plaintext from the peer; borrowed for the call; all of it is consumed */
    void (*on_read)(void *ctx, const uint8_t *data, size_t len);
    /* the peer is gone: UV_EOF for a clean end, else a UV_E* code,
       IMAPMUX_E_TLS for a TLS failure, or COMPRESS_E_DATA (proxy/compress.h)
       for a corrupt compressed stream (reason in conn_compress_error; UV_ENOMEM
       if the inflate window cannot be had); called at most once, never after
       conn_close */
    void (*on_eof)(void *ctx, int status);
    /* the write queue fell to the mark given to conn_want_drain */
    void (*on_drain)(void *ctx);
    /* the handle is closed; the conn is freed right after this returns */
    void (*on_close)(void *ctx);
};

/* conn_new returns a conn on loop with its TCP handle initialised, or NULL.
 * It is freed after on_close, once conn_close was called. */
struct conn *conn_new(uv_loop_t *loop, const struct conn_ops *ops, void *ctx);

/* conn_set_ops hands the conn to a new owner (e.g. from the backend login
 * to the session). */
void conn_set_ops(struct conn *c, const struct conn_ops *ops, void *ctx);

/* conn_set_wipe turns wiping on or off (off at conn_new).  While it is on,
 * the plaintext this conn delivers is wiped from the per-thread read buffer
 * as soon as on_read returns (the owner must have copied what it keeps), and
 * what a cleartext conn_write has to queue is wiped when the write is done.
 * For the phase in which credentials pass (a client before its login, a
 * backend during the login imapmux makes); the cost is one memset of the
 * bytes delivered or queued. */
void conn_set_wipe(struct conn *c, int on);

/* conn_accept accepts a pending connection of server. Returns 0 or UV_E*.
 * On Linux an accepted socket inherits TCP_NODELAY and the keepalive
 * settings of its listening socket, so conn_accept sets none of them (five
 * system calls per connection): server must have had conn_tune_listener. */
int conn_accept(struct conn *c, uv_stream_t *server);

/* conn_tune_listener gives a listening socket what every accepted
 * connection needs (TCP_NODELAY, keepalive).  Returns 0 or UV_E*. */
int conn_tune_listener(uv_tcp_t *server);

/* conn_fileno: the connection's socket, or -1 (closed, not yet open). */
int conn_fileno(const struct conn *c);

/* conn_connect starts connecting to addr; on_connect reports. 0 or UV_E*. */
int conn_connect(struct conn *c, const struct sockaddr *addr);

enum conn_tls_role {
    CONN_TLS_CLIENT, /* we connected: send the ClientHello, check server_name */
    CONN_TLS_SERVER, /* we accepted */
};

/* conn_start_tls begins a TLS handshake in role on this conn; reads must be
 * (or be started) on.  Returns 0, or UV_ENOMEM. */
int conn_start_tls(struct conn *c, SSL_CTX *ctx, enum conn_tls_role role, const char *server_name);

/* conn_start_compress turns on COMPRESS=DEFLATE (RFC 4978): it sets up
 * zlib, writes reply_len bytes of reply (the tagged OK; may be 0) as they
 * are, then compresses every later write and inflates every byte not yet
 * handed to on_read (within an on_read: the next call's bytes on).  Writes
 * made while the conn is being read are flushed (Z_SYNC_FLUSH) once when
 * the read is done; other writes are flushed each.  The conn's memory for it
 * (compress_mem_len's figures; about 77 KiB) is freed with the conn.
 * Returns 0; UV_ENOMEM with nothing written (zlib's state could not be
 * had: answer NO in clear); UV_EALREADY if already on; UV_EBUSY during a TLS
 * handshake; UV_EPIPE if closing; or conn_write's failure. */
int conn_start_compress(struct conn *c, const void *reply, size_t reply_len);

/* conn_inject hands the conn len bytes that came from the peer but were
 * read by the owner itself (what followed a PROXY protocol header), as if
 * the socket had delivered them now: into the TLS engine when TLS is on,
 * else straight to on_read.  Returns 0; UV_EINVAL once compressing;
 * UV_ENOMEM (reported as on_eof too). */
int conn_inject(struct conn *c, const uint8_t *data, size_t len);

int conn_read_start(struct conn *c);
void conn_read_stop(struct conn *c);

/* conn_write queues len bytes of plaintext (copied).  Returns 0 or UV_E*;
 * after a failure the conn reports on_eof. */
int conn_write(struct conn *c, const void *data, size_t len);

/* conn_write_queue_len returns the bytes queued but not yet given to the
 * kernel (compressed bytes when compressing, with what zlib holds). */
size_t conn_write_queue_len(const struct conn *c);

/* conn_want_drain asks for one on_drain when the queue is at or below mark. */
void conn_want_drain(struct conn *c, size_t low_mark);

enum conn_close_mode {
    CONN_CLOSE_NOW,      /* drop what is queued and close */
    CONN_CLOSE_GRACEFUL, /* send what is queued and a TLS close_notify first */
};

/* conn_close closes the conn (idempotent).  A CONN_CLOSE_NOW after a
 * graceful close cuts it short (e.g. on a timeout). */
void conn_close(struct conn *c, enum conn_close_mode mode);

/* Facts about the connection. */
int conn_is_compressed(const struct conn *c);
/* conn_compress_mem_len returns the bytes zlib holds for this conn plus
 * compressed input kept while the owner pauses (0 when not compressing). */
size_t conn_compress_mem_len(const struct conn *c);
/* conn_compress_trim frees the compressor's state while nothing is written
 * (compress_out_trim): for a session going idle; no effect on the peer. */
void conn_compress_trim(struct conn *c);
/* conn_compress_stats fills out with the byte counters (zero when not
 * compressing). */
void conn_compress_stats(const struct conn *c, struct compress_stats *out);
/* conn_compress_error returns the reason of a COMPRESS_E_DATA (static, or
 * valid while the conn lives). */
const char *conn_compress_error(const struct conn *c);
int conn_is_tls(const struct conn *c);
const char *conn_tls_version(const struct conn *c);
const char *conn_tls_cipher(const struct conn *c);
/* conn_tls_server_name: the SNI a TLS client sent us (tls_server_name). */
const char *conn_tls_server_name(const struct conn *c);
const char *conn_tls_error(const struct conn *c);
enum conn_side {
    CONN_LOCAL, /* our end of the connection */
    CONN_PEER,  /* the other end */
};

/* conn_addr writes the address of side as text to ip and its port to
 * out_port.  Returns 0 or UV_E*. */
int conn_addr(const struct conn *c, enum conn_side side, char *ip, size_t ip_len,
              uint16_t *out_port);

#endif
