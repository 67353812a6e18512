/* Server certificates chosen per connection: in-memory handshakes between a
 * BoringSSL client and a context from tls_certificates_ctx_new, and the
 * expiry getter. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/config.h"
#include "proxy/tls_certificates.h"

#define DATA(f) TEST_DATA_DIR "/" f

static struct config *sni_config(void)
{
    char text[2048], err[512];
    snprintf(text, sizeof(text),
             "backends: [{name: a, host: h, port: 1}]\n"
             "listeners: [{address: 127.0.0.1, port: 993, tls: implicit}]\n"
             "tls:\n"
             "  cert: %s\n  key: %s\n"
             "  certificates:\n"
             "    - {names: [\"*.example.org\"], cert: %s, key: %s}\n"
             "    - {names: [both.test], cert: %s, key: %s}\n"
             "    - {names: [both.test], cert: %s, key: %s}\n",
             DATA("cert.pem"), DATA("key.pem"), DATA("rsa-cert.pem"), DATA("rsa-key.pem"),
             DATA("rsa-cert.pem"), DATA("rsa-key.pem"), DATA("cert.pem"), DATA("key.pem"));
    struct config *c = config_parse(err, sizeof(err), "sni.yaml", text, strlen(text));
    cr_assert_not_null(c, "%s", err);
    return c;
}

/* handshake runs a client (sni and sigalgs may be NULL; tls12 caps the
 * version) against sctx in memory and returns the key type of the
 * certificate it got (EVP_PKEY_EC or EVP_PKEY_RSA), or -1. */
static int handshake(SSL_CTX *sctx, const char *sni, const char *sigalgs, int tls12)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_method());
    cr_assert_not_null(cctx);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    if (sigalgs != NULL) {
        cr_assert(SSL_CTX_set1_sigalgs_list(cctx, sigalgs), "%s", sigalgs);
    }
    if (tls12) {
        cr_assert(SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION));
    }
    SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
    BIO *bc, *bs;
    cr_assert(BIO_new_bio_pair(&bc, 0, &bs, 0));
    SSL_set_bio(c, bc, bc);
    SSL_set_bio(s, bs, bs);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    if (sni != NULL) {
        cr_assert(SSL_set_tlsext_host_name(c, sni));
    }
    int cd = 0, sd = 0;
    for (int i = 0; i < 20 && !(cd && sd); i++) {
        cd = SSL_do_handshake(c) == 1;
        sd = SSL_do_handshake(s) == 1;
    }
    int type = -1;
    if (cd && sd) {
        X509 *peer = SSL_get_peer_certificate(c);
        EVP_PKEY *k = peer != NULL ? X509_get_pubkey(peer) : NULL;
        type = k != NULL ? EVP_PKEY_id(k) : -1;
        EVP_PKEY_free(k);
        X509_free(peer);
    }
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
    return type;
}

Test(tls_certificates, chosen_by_name_and_key_type)
{
    char err[512];
    struct config *cfg = sni_config();
    SSL_CTX *ctx = tls_certificates_ctx_new(err, sizeof(err), cfg);
    cr_assert_not_null(ctx, "%s", err);
    /* the default is ECDSA, the wildcard entry RSA */
    cr_assert_eq(handshake(ctx, NULL, NULL, 0), EVP_PKEY_EC);
    cr_assert_eq(handshake(ctx, "unknown.test", NULL, 0), EVP_PKEY_EC);
    cr_assert_eq(handshake(ctx, "imap.example.org", NULL, 0), EVP_PKEY_RSA);
    cr_assert_eq(handshake(ctx, "IMAP.Example.ORG", NULL, 0), EVP_PKEY_RSA);
    cr_assert_eq(handshake(ctx, "a.imap.example.org", NULL, 0), EVP_PKEY_EC);
    cr_assert_eq(handshake(ctx, "example.org", NULL, 0), EVP_PKEY_EC);
    /* both.test has both: ECDSA first, RSA for a client that verifies only RSA */
    cr_assert_eq(handshake(ctx, "both.test", NULL, 0), EVP_PKEY_EC);
    cr_assert_eq(handshake(ctx, "both.test", "ECDSA+SHA256", 0), EVP_PKEY_EC);
    cr_assert_eq(handshake(ctx, "both.test", "RSA-PSS+SHA256", 0), EVP_PKEY_RSA);
    cr_assert_eq(handshake(ctx, "both.test", "RSA+SHA256", 1), EVP_PKEY_RSA);
    cr_assert_eq(handshake(ctx, "both.test", "ECDSA+SHA256", 1), EVP_PKEY_EC);
    SSL_CTX_free(ctx);
    config_unref(&cfg);
}

Test(tls_certificates, expiry_getter_and_warnings)
{
    char err[512];
    struct config *cfg = sni_config();
    SSL_CTX *ctx = tls_certificates_ctx_new(err, sizeof(err), cfg);
    cr_assert_not_null(ctx, "%s", err);
    tls_certificates_publish(ctx, 0);
    struct tls_cert_expiry e[8];
    size_t n = tls_certificates_expiry(e, 8);
    cr_assert_eq(n, 4, "the default and three entries");
    cr_assert_str_eq(e[0].names, "default");
    cr_assert_str_eq(e[1].names, "*.example.org");
    cr_assert_str_eq(e[1].file, DATA("rsa-cert.pem"));
    cr_assert_eq(e[0].is_ecdsa, 1);
    cr_assert_eq(e[1].is_ecdsa, 0);
    /* the test certificates expire in 2126 */
    int64_t in_50_years = (int64_t)time(NULL) + 50LL * 365 * 86400;
    for (size_t i = 0; i < n; i++) {
        cr_assert_gt(e[i].not_after, in_50_years);
    }
    cr_assert_eq(tls_certificates_warn_expiring(14), 0);
    cr_assert_eq(tls_certificates_warn_expiring(3650 * 100), 4);
    cr_assert_eq(tls_certificates_expiry(e, 1), 4, "the count even when fewer fit");
    /* the getter outlives the context: it holds copies */
    SSL_CTX_free(ctx);
    cr_assert_eq(tls_certificates_expiry(e, 8), 4);
    tls_certificates_publish(NULL, 0);
    cr_assert_eq(tls_certificates_expiry(e, 8), 0);
    config_unref(&cfg);
}

Test(tls_certificates, refused_files)
{
    char err[512], text[1024];
    /* a key that is not the certificate's */
    snprintf(text, sizeof(text),
             "backends: [{name: a, host: h, port: 1}]\n"
             "tls:\n  cert: %s\n  key: %s\n"
             "  certificates: [{names: [x.test], cert: %s, key: %s}]\n",
             DATA("cert.pem"), DATA("key.pem"), DATA("cert.pem"), DATA("rsa-key.pem"));
    struct config *cfg = config_parse(err, sizeof(err), "bad.yaml", text, strlen(text));
    cr_assert_not_null(cfg, "%s", err);
    cr_assert_null(tls_certificates_ctx_new(err, sizeof(err), cfg));
    cr_assert_not_null(strstr(err, "rsa-key.pem"), "%s", err);
    config_unref(&cfg);
}
