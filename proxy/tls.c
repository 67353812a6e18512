#include "proxy/tls.h"
#include "proxy/tls_certificates.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/buf.h>
#include <openssl/mem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>

struct tls {
    SSL *ssl;       /* owns both memory BIOs */
    BIO *rbio;      /* ciphertext from the peer (borrowed from ssl) */
    BIO *wbio;      /* ciphertext to the peer (borrowed from ssl) */
    char *err;      /* reason of the last TLS_ERROR (malloc'd), or NULL: an idle
                       connection holds no room for one */
};

static void tls_errstr(char *err, size_t err_len, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[120];
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(err, err_len, "%s: %s", what, buf);
    } else {
        snprintf(err, err_len, "%s", what);
    }
    ERR_clear_error();
}

#define TLS_ERR_LEN 160 /* bytes of a kept error reason */

/* tls_set_err keeps the reason of a TLS_ERROR (out of memory: none, and
 * tls_error says "TLS error"). */
static void tls_set_err(struct tls *t, const char *what)
{
    if (t->err == NULL) {
        t->err = malloc(TLS_ERR_LEN);
    }
    if (t->err != NULL) {
        tls_errstr(t->err, TLS_ERR_LEN, what);
    } else {
        ERR_clear_error();
    }
}

static int tls_ctx_common(SSL_CTX *ctx)
{
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
        return -1;
    }
    /* Idle connections must not keep record buffers (memory per idle
     * connection is the capacity limit: docs/ARCHITECTURE.md). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return 0;
}

SSL_CTX *tls_server_ctx_new(char *err, size_t err_len, const char *cert_file,
                            const char *key_file)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    char what[512];

    if (ctx == NULL || tls_ctx_common(ctx) != 0) {
        tls_errstr(err, err_len, "cannot create TLS context");
        goto fail;
    }
    if (!SSL_CTX_use_certificate_chain_file(ctx, cert_file)) {
        snprintf(what, sizeof(what), "%s: cannot load certificate chain", cert_file);
        tls_errstr(err, err_len, what);
        goto fail;
    }
    if (!SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM)) {
        snprintf(what, sizeof(what), "%s: cannot load private key", key_file);
        tls_errstr(err, err_len, what);
        goto fail;
    }
    if (!SSL_CTX_check_private_key(ctx)) {
        snprintf(what, sizeof(what), "%s: key does not match the certificate", key_file);
        tls_errstr(err, err_len, what);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void tls_server_ctx_set_tickets(SSL_CTX *ctx, int on)
{
    if (on) {
        SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 1);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
}

SSL_CTX *tls_client_ctx_new(char *err, size_t err_len, const char *ca_file, int verify)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    char what[512];

    if (ctx == NULL || tls_ctx_common(ctx) != 0) {
        tls_errstr(err, err_len, "cannot create TLS context");
        goto fail;
    }
    if (verify) {
        int ok = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);
        if (!ok) {
            snprintf(what, sizeof(what), "%s: cannot load CA file",
                     ca_file != NULL ? ca_file : "default CA paths");
            tls_errstr(err, err_len, what);
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct tls *tls_new(SSL_CTX *ctx, int is_server, const char *server_name)
{
    struct tls *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        goto fail;
    }
    /* What the handshake was configured with (cipher and group lists, the
     * certificate and key references, verify parameters) is not needed once
     * it is done: freed then, a few hundred bytes per idle connection. */
    SSL_set_shed_handshake_config(t->ssl, 1);
    /* An empty read BIO must mean "want read", not EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set0_rbio(t->ssl, t->rbio);
    SSL_set0_wbio(t->ssl, t->wbio);
    if (is_server) {
        SSL_set_accept_state(t->ssl);
        if (tls_certificates_hint(t->ssl, server_name) != 0) {
            goto fail;
        }
    } else {
        SSL_set_connect_state(t->ssl);
        if (server_name != NULL && server_name[0] != '\0') {
            unsigned char ip[16];
            int is_ip = inet_pton(AF_INET, server_name, ip) == 1 ||
                        inet_pton(AF_INET6, server_name, ip) == 1;
            X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
            if (is_ip) {
                if (!X509_VERIFY_PARAM_set1_ip_asc(param, server_name)) {
                    tls_free(t);
                    return NULL;
                }
            } else {
                if (!SSL_set_tlsext_host_name(t->ssl, server_name) ||
                    !X509_VERIFY_PARAM_set1_host(param, server_name, strlen(server_name))) {
                    tls_free(t);
                    return NULL;
                }
            }
        }
    }
    return t;
fail:
    /* the BIOs are not yet given to the SSL here */
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    SSL_free(t->ssl);
    free(t);
    return NULL;
}

void tls_free(struct tls *t)
{
    if (t == NULL) {
        return;
    }
    SSL_free(t->ssl); /* frees both BIOs */
    free(t->err);
    free(t);
}

int tls_feed(struct tls *t, const uint8_t *data, size_t len)
{
    while (len > 0) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        int n = BIO_write(t->rbio, data, chunk);
        if (n <= 0) {
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static enum tls_result tls_map(struct tls *t, int ret, const char *what)
{
    int e = SSL_get_error(t->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_CLOSED;
    default:
        tls_set_err(t, what);
        return TLS_ERROR;
    }
}

enum tls_result tls_handshake(struct tls *t)
{
    int ret = SSL_do_handshake(t->ssl);
    if (ret == 1) {
        return TLS_DONE;
    }
    return tls_map(t, ret, "handshake failed");
}

enum tls_result tls_read(struct tls *t, size_t *out_len, uint8_t *out, size_t cap)
{
    int n = SSL_read(t->ssl, out, cap > (1u << 30) ? (1 << 30) : (int)cap);
    if (n > 0) {
        *out_len = (size_t)n;
        return TLS_DONE;
    }
    return tls_map(t, n, "read failed");
}

int tls_write(struct tls *t, const uint8_t *data, size_t len)
{
    while (len > 0) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        int n = SSL_write(t->ssl, data, chunk);
        if (n <= 0) {
            tls_set_err(t, "write failed");
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

void tls_shutdown(struct tls *t)
{
    if (SSL_is_init_finished(t->ssl)) {
        SSL_shutdown(t->ssl);
    }
}

size_t tls_out_len(const struct tls *t)
{
    return BIO_pending(t->wbio);
}

size_t tls_take_out(struct tls *t, uint8_t *out, size_t cap)
{
    int n = BIO_read(t->wbio, out, cap > (1u << 30) ? (1 << 30) : (int)cap);
    return n > 0 ? (size_t)n : 0;
}

size_t tls_out_peek(struct tls *t, const uint8_t **out)
{
    BUF_MEM *bm = NULL;
    if (BIO_get_mem_ptr(t->wbio, &bm) != 1 || bm == NULL) {
        *out = NULL;
        return 0;
    }
    *out = (const uint8_t *)bm->data;
    return bm->length;
}

void tls_out_clear(struct tls *t)
{
    BUF_MEM *bm = NULL;
    if (BIO_get_mem_ptr(t->wbio, &bm) == 1 && bm != NULL) {
        bm->length = 0;
    }
}

/* tls_release_bio frees the storage of an empty memory BIO: a memory BIO
 * keeps its largest size for good, which per idle connection is the
 * handshake's flights or the last burst of data. */
static void tls_release_bio(BIO *b)
{
    BUF_MEM *bm = NULL;
    if (BIO_get_mem_ptr(b, &bm) == 1 && bm != NULL && bm->length == 0 && bm->data != NULL) {
        OPENSSL_free(bm->data);
        bm->data = NULL;
        bm->max = 0;
    }
}

void tls_trim(struct tls *t)
{
    tls_release_bio(t->rbio);
    tls_release_bio(t->wbio);
}

int tls_has_buffered(const struct tls *t)
{
    return BIO_pending(t->rbio) > 0 || SSL_pending(t->ssl) > 0;
}

const char *tls_version(const struct tls *t)
{
    return SSL_is_init_finished(t->ssl) ? SSL_get_version(t->ssl) : "";
}

const char *tls_cipher(const struct tls *t)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
    return c != NULL ? SSL_CIPHER_get_name(c) : "";
}

const char *tls_error(struct tls *t)
{
    return t->err != NULL && t->err[0] != '\0' ? t->err : "TLS error";
}

const char *tls_server_name(const struct tls *t)
{
    const char *name = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
    return name != NULL ? name : "";
}
