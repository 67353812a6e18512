/* tls_certificates: the server certificates of one configuration snapshot,
 * chosen per connection by the client's server name (SNI) and by what the
 * client can verify (ECDSA or RSA), and their expiry times.
 *
 * BoringSSL (API 17, Debian's android-libboringssl) holds one certificate per
 * SSL_CTX, so each certificate gets a context of its own and the default
 * context's select_certificate_cb switches a connection to the chosen one
 * with SSL_set_SSL_CTX before the handshake goes on. */
#ifndef IMAPMUX_PROXY_TLS_CERTIFICATES_H
#define IMAPMUX_PROXY_TLS_CERTIFICATES_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common/config.h"

#define TLS_CERTIFICATES_MAX_FILE_LEN 256 /* bytes of a file name in an expiry entry */
#define TLS_CERTIFICATES_MAX_NAME_LEN 256 /* bytes of the names shown in an expiry entry */

/* tls_certificates_ctx_new loads every certificate of cfg: tls.cert/tls.key
 * as the default (else the first of tls.certificates), and each entry of
 * tls.certificates for its names.  Every key is checked against its
 * certificate.  Returns the context to create server connections on, with
 * one reference; the other contexts belong to it and go with its last
 * reference.  NULL with the reason in err. */
SSL_CTX *tls_certificates_ctx_new(char *err, size_t err_len, const struct config *cfg);

/* tls_certificates_hint gives a server connection a name to choose its
 * certificate by when its ClientHello carries no server name (the AUTHORITY
 * of a PROXY header: the name the client asked the balancer for).  name is
 * copied; NULL or "" is no hint.  Returns 0, or -1 out of memory. */
int tls_certificates_hint(SSL *ssl, const char *name);

/* One certificate's expiry, for metrics and readiness checks. */
struct tls_cert_expiry {
    char file[TLS_CERTIFICATES_MAX_FILE_LEN];  /* the certificate file */
    char names[TLS_CERTIFICATES_MAX_NAME_LEN]; /* its configured names, comma-separated;
                                                  "default" for the default */
    int64_t not_after;        /* Unix time (s) the leaf certificate expires */
    int is_ecdsa;             /* 1: ECDSA key, 0: RSA */
};

/* tls_certificates_publish makes ctx's certificates (a context from
 * tls_certificates_ctx_new) the ones tls_certificates_expiry reports, and
 * logs a warning for each that expires within warn_days days (0: none).
 * Called at start and after each reload, from one thread. */
void tls_certificates_publish(SSL_CTX *ctx, unsigned warn_days);

/* tls_certificates_warn_expiring logs a warning for each published
 * certificate that expires within warn_days days; returns how many. */
size_t tls_certificates_warn_expiring(unsigned warn_days);

/* tls_certificates_expiry copies up to max published entries into out and
 * returns how many are published (which may exceed max).  Thread-safe. */
size_t tls_certificates_expiry(struct tls_cert_expiry *out, size_t max);

#endif
