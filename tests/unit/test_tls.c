/* The TLS engine between two instances of itself, in memory: no sockets. */
#include <string.h>

#include <criterion/criterion.h>

#include <openssl/ssl.h>

#include "proxy/tls.h"

#define DATA(f) TEST_DATA_DIR "/" f

/* pump moves ciphertext both ways until neither side has any to send. */
static void pump(struct tls *a, struct tls *b)
{
    uint8_t buf[32768];
    for (int i = 0; i < 100; i++) {
        size_t n1 = tls_take_out(a, buf, sizeof(buf));
        if (n1 > 0) {
            cr_assert_eq(tls_feed(b, buf, n1), 0);
        }
        size_t n2 = tls_take_out(b, buf, sizeof(buf));
        if (n2 > 0) {
            cr_assert_eq(tls_feed(a, buf, n2), 0);
        }
        if (n1 == 0 && n2 == 0) {
            return;
        }
        (void)tls_handshake(a);
        (void)tls_handshake(b);
    }
}

static SSL_CTX *server_ctx(const char *cert, const char *key)
{
    char err[256];
    SSL_CTX *ctx = tls_server_ctx_new(err, sizeof(err), cert, key);
    cr_assert_not_null(ctx, "%s", err);
    return ctx;
}

static void handshake_and_echo(const char *cert, const char *key)
{
    char err[256];
    SSL_CTX *sctx = server_ctx(cert, key);
    SSL_CTX *cctx = tls_client_ctx_new(err, sizeof(err), cert, 1);
    cr_assert_not_null(cctx, "%s", err);
    struct tls *s = tls_new(sctx, 1, NULL);
    struct tls *c = tls_new(cctx, 0, "localhost");
    cr_assert_eq(tls_handshake(c), TLS_WANT);
    pump(c, s);
    cr_assert_eq(tls_handshake(c), TLS_DONE);
    cr_assert_eq(tls_handshake(s), TLS_DONE);
    cr_assert_str_eq(tls_version(s), "TLSv1.3");

    const char msg[] = "a1 NOOP\r\n";
    cr_assert_eq(tls_write(c, (const uint8_t *)msg, sizeof(msg) - 1), 0);
    pump(c, s);
    uint8_t out[64];
    size_t n = 0;
    cr_assert_eq(tls_read(s, &n, out, sizeof(out)), TLS_DONE);
    cr_assert_eq(n, sizeof(msg) - 1);
    cr_assert_eq(memcmp(out, msg, n), 0);
    cr_assert_eq(tls_read(s, &n, out, sizeof(out)), TLS_WANT);

    tls_shutdown(c);
    pump(c, s);
    cr_assert_eq(tls_read(s, &n, out, sizeof(out)), TLS_CLOSED);
    tls_free(c);
    tls_free(s);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

Test(tls, ecdsa_handshake_data_close)
{
    handshake_and_echo(DATA("cert.pem"), DATA("key.pem"));
}

Test(tls, rsa_handshake_data_close)
{
    handshake_and_echo(DATA("rsa-cert.pem"), DATA("rsa-key.pem"));
}

Test(tls, wrong_host_name_fails_verification)
{
    char err[256];
    SSL_CTX *sctx = server_ctx(DATA("cert.pem"), DATA("key.pem"));
    SSL_CTX *cctx = tls_client_ctx_new(err, sizeof(err), DATA("cert.pem"), 1);
    struct tls *s = tls_new(sctx, 1, NULL);
    struct tls *c = tls_new(cctx, 0, "mail.example.com");
    (void)tls_handshake(c);
    pump(c, s);
    cr_assert_eq(tls_handshake(c), TLS_ERROR);
    tls_free(c);
    tls_free(s);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

Test(tls, ip_address_verifies_against_ip_san)
{
    char err[256];
    SSL_CTX *sctx = server_ctx(DATA("cert.pem"), DATA("key.pem"));
    SSL_CTX *cctx = tls_client_ctx_new(err, sizeof(err), DATA("cert.pem"), 1);
    struct tls *s = tls_new(sctx, 1, NULL);
    struct tls *c = tls_new(cctx, 0, "127.0.0.1");
    (void)tls_handshake(c);
    pump(c, s);
    cr_assert_eq(tls_handshake(c), TLS_DONE);
    tls_free(c);
    tls_free(s);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

Test(tls, tls11_client_is_refused)
{
    SSL_CTX *sctx = server_ctx(DATA("cert.pem"), DATA("key.pem"));
    SSL_CTX *old = SSL_CTX_new(TLS_method());
    SSL_CTX_set_min_proto_version(old, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION);
    SSL_CTX_set_verify(old, SSL_VERIFY_NONE, NULL);
    struct tls *s = tls_new(sctx, 1, NULL);
    struct tls *c = tls_new(old, 0, NULL);
    (void)tls_handshake(c);
    pump(c, s);
    cr_assert_eq(tls_handshake(s), TLS_ERROR);
    cr_assert_neq(tls_handshake(c), TLS_DONE);
    tls_free(c);
    tls_free(s);
    SSL_CTX_free(old);
    SSL_CTX_free(sctx);
}

Test(tls, bad_files_give_reasons)
{
    char err[256];
    cr_assert_null(tls_server_ctx_new(err, sizeof(err), DATA("missing.pem"), DATA("key.pem")));
    cr_assert(strstr(err, "missing.pem") != NULL, "%s", err);
    cr_assert_null(tls_server_ctx_new(err, sizeof(err), DATA("cert.pem"), DATA("rsa-key.pem")));
    cr_assert(strstr(err, "rsa-key.pem") != NULL, "%s", err);
}

/* ticket_bytes_after_handshake: what a server context with
 * tls_server_ctx_set_tickets(on), or without the call (on < 0), sends with
 * its first record after the handshake (BoringSSL sends its tickets then,
 * with the greeting). */
static size_t ticket_bytes_after_handshake(int on)
{
    char err[256];
    uint8_t buf[32768];
    SSL_CTX *sctx = server_ctx(DATA("cert.pem"), DATA("key.pem"));
    if (on >= 0) {
        tls_server_ctx_set_tickets(sctx, on);
    }
    SSL_CTX *cctx = tls_client_ctx_new(err, sizeof(err), DATA("cert.pem"), 1);
    cr_assert_not_null(cctx, "%s", err);
    struct tls *s = tls_new(sctx, 1, NULL);
    struct tls *c = tls_new(cctx, 0, "localhost");
    /* ClientHello; the server's flight; the client's Finished */
    cr_assert_eq(tls_handshake(c), TLS_WANT);
    size_t n = tls_take_out(c, buf, sizeof(buf));
    cr_assert_eq(tls_feed(s, buf, n), 0);
    cr_assert_eq(tls_handshake(s), TLS_WANT);
    n = tls_take_out(s, buf, sizeof(buf));
    cr_assert_eq(tls_feed(c, buf, n), 0);
    cr_assert_eq(tls_handshake(c), TLS_DONE);
    n = tls_take_out(c, buf, sizeof(buf));
    cr_assert_eq(tls_feed(s, buf, n), 0);
    cr_assert_eq(tls_handshake(s), TLS_DONE);
    const char greeting[] = "* OK ready\r\n";
    cr_assert_eq(tls_write(s, (const uint8_t *)greeting, sizeof(greeting) - 1), 0);
    size_t after = tls_out_len(s);
    /* and the connection carries data after its configuration was shed */
    pump(c, s);
    const char msg[] = "a1 NOOP\r\n";
    cr_assert_eq(tls_write(c, (const uint8_t *)msg, sizeof(msg) - 1), 0);
    pump(c, s);
    uint8_t out[64];
    cr_assert_eq(tls_read(s, &n, out, sizeof(out)), TLS_DONE);
    cr_assert_eq(n, sizeof(msg) - 1);
    cr_assert_str_eq(tls_version(s), "TLSv1.3");
    cr_assert_str_neq(tls_cipher(s), "");
    tls_free(c);
    tls_free(s);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    return after;
}

Test(tls, no_session_ticket_unless_asked_for)
{
    size_t off = ticket_bytes_after_handshake(0), on = ticket_bytes_after_handshake(1);
    size_t dflt = ticket_bytes_after_handshake(-1);
    /* the greeting alone is one record: 5 bytes of header, the text, a type
       byte and a 16-byte tag */
    cr_assert_eq(off, 5 + 12 + 1 + 16, "tickets off: %zu bytes (on %zu, default %zu)", off, on,
                 dflt);
    cr_assert_gt(on, off, "tickets on: no ticket sent");
    /* BoringSSL's own default sends two: more than the one asked for */
    cr_assert_gt(dflt, on, "default %zu bytes, one ticket %zu", dflt, on);
}
