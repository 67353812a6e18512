/* tls: a memory-BIO TLS engine over BoringSSL.  It knows nothing of sockets
 * or IMAP: ciphertext goes in with tls_feed() and comes out with
 * tls_take_out(); plaintext goes in with tls_write() and out with tls_read().
 * BoringSSL's 1/0 conventions stay inside tls.c. */
#ifndef IMAPMUX_PROXY_TLS_H
#define IMAPMUX_PROXY_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct tls;

enum tls_result {
    TLS_DONE,   /* handshake finished / data produced */
    TLS_WANT,   /* needs more ciphertext from the peer */
    TLS_CLOSED, /* peer sent close_notify */
    TLS_ERROR,  /* fatal; tls_error() says why */
};

/* tls_server_ctx_new loads a PEM chain and key (ECDSA or RSA) into a server
 * context limited to TLS 1.2 and 1.3.  Returns a context with one reference,
 * or NULL with a reason in err. */
SSL_CTX *tls_server_ctx_new(char *err, size_t err_len, const char *cert_file,
                            const char *key_file);

/* tls_server_ctx_set_tickets: with on 0 (imapmux's default: no
 * resumption is configured), the context issues no TLS 1.3 session ticket
 * and keeps no TLS 1.2 session cache: no ticket is sealed and sent after
 * every handshake for clients that never come back with it.  With on 1 one
 * ticket per handshake, under a key of this process (a restart forgets it). */
void tls_server_ctx_set_tickets(SSL_CTX *ctx, int on);

/* tls_client_ctx_new returns a client context (TLS 1.2 and 1.3) that verifies
 * the peer against ca_file (NULL: system default paths) when verify is 1, or
 * NULL with a reason in err. */
SSL_CTX *tls_client_ctx_new(char *err, size_t err_len, const char *ca_file, int verify);

/* tls_new returns an engine on ctx (which it references), or NULL on OOM.
 * For a client, server_name is sent as SNI and, when the context verifies,
 * checked against the certificate (a numeric address is checked as an IP).
 * For a server, server_name (NULL or "" for none) chooses the certificate
 * when the ClientHello names none (tls_certificates_hint). */
struct tls *tls_new(SSL_CTX *ctx, int is_server, const char *server_name);
void tls_free(struct tls *t);

/* tls_feed copies ciphertext received from the peer into the engine.
 * Returns 0, or -1 on OOM. */
int tls_feed(struct tls *t, const uint8_t *data, size_t len);

/* tls_handshake advances the handshake. */
enum tls_result tls_handshake(struct tls *t);

/* tls_read decrypts up to cap bytes into out; *out_len is set on TLS_DONE. */
enum tls_result tls_read(struct tls *t, size_t *out_len, uint8_t *out, size_t cap);

/* tls_write encrypts all len bytes (the memory BIO never refuses). Returns 0
 * or -1 on a fatal error. */
int tls_write(struct tls *t, const uint8_t *data, size_t len);

/* tls_shutdown queues a close_notify. */
void tls_shutdown(struct tls *t);

/* tls_out_len returns the bytes of ciphertext waiting to be sent;
 * tls_take_out moves up to cap of them into out and returns how many. */
size_t tls_out_len(const struct tls *t);
size_t tls_take_out(struct tls *t, uint8_t *out, size_t cap);

/* tls_has_buffered returns 1 if plaintext or ciphertext is already inside the
 * engine, so a tls_read() may produce data without new input. */
/* tls_out_peek points *out at the ciphertext waiting to be sent (in the
 * engine, valid until the next call on t) and returns its length;
 * tls_out_clear marks all of it sent.  Together they save a copy. */
size_t tls_out_peek(struct tls *t, const uint8_t **out);
void tls_out_clear(struct tls *t);

/* tls_trim frees the engine's empty I/O buffers; for a connection going
 * quiet, so that an idle connection holds none. */
void tls_trim(struct tls *t);

int tls_has_buffered(const struct tls *t);

/* tls_version and tls_cipher name the negotiated parameters ("" before). */
const char *tls_version(const struct tls *t);
const char *tls_cipher(const struct tls *t);
/* tls_server_name: on a server engine, the name the client sent as SNI once
 * its ClientHello was read; "" without one. */
const char *tls_server_name(const struct tls *t);

/* tls_error returns a short reason for the last TLS_ERROR (static or owned by
 * the engine until the next call). */
const char *tls_error(struct tls *t);

#endif
