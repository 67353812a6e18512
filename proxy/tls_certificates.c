#include "proxy/tls_certificates.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "common/sni.h"
#include "proxy/tls.h"

#define TLS_CERTIFICATES_DAY_S 86400
#define TLS_EXT_SERVER_NAME 0
#define TLS_EXT_SIGALGS 13
#define TLS_EXT_VERSIONS 43

/* One loaded certificate. */
struct tls_cert {
    SSL_CTX *ctx;         /* owned: the certificate and key, the default's settings */
    char **names;         /* owned copies; none for the default */
    size_t num_names;
    int is_ecdsa;         /* the key is ECDSA (else RSA) */
    struct tls_cert_expiry expiry;
};

/* The set hangs off the default context as ex_data; freed with it. */
struct tls_cert_set {
    struct tls_cert *certs; /* [0] is the default */
    size_t num_certs;
};

static pthread_once_t tls_certificates_once = PTHREAD_ONCE_INIT;
static int tls_certificates_idx = -1;
static int tls_certificates_hint_idx = -1; /* SSL ex_data: a name to use without SNI */

static pthread_mutex_t tls_certificates_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_cert_expiry *tls_certificates_published; /* under the lock */
static size_t tls_certificates_num_published;

static void tls_cert_set_free(struct tls_cert_set *set)
{
    if (set == NULL) {
        return;
    }
    for (size_t i = 0; i < set->num_certs; i++) {
        SSL_CTX_free(set->certs[i].ctx);
        for (size_t j = 0; j < set->certs[i].num_names; j++) {
            free(set->certs[i].names[j]);
        }
        free(set->certs[i].names);
    }
    free(set->certs);
    free(set);
}

static void tls_certificates_on_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index,
                                        long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)index;
    (void)argl;
    (void)argp;
    tls_cert_set_free(ptr);
}

static void tls_certificates_on_hint_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index,
                                          long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)index;
    (void)argl;
    (void)argp;
    free(ptr);
}

static void tls_certificates_init_once(void)
{
    tls_certificates_idx =
        SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tls_certificates_on_ex_free);
    tls_certificates_hint_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL,
                                                     tls_certificates_on_hint_free);
}

int tls_certificates_hint(SSL *ssl, const char *name)
{
    if (name == NULL || name[0] == '\0') {
        return 0;
    }
    pthread_once(&tls_certificates_once, tls_certificates_init_once);
    if (tls_certificates_hint_idx < 0) {
        return -1;
    }
    char *copy = strdup(name);
    if (copy == NULL) {
        return -1;
    }
    free(SSL_get_ex_data(ssl, tls_certificates_hint_idx));
    if (!SSL_set_ex_data(ssl, tls_certificates_hint_idx, copy)) {
        free(copy);
        return -1;
    }
    return 0;
}

/* tls_cert_caps reads what the ClientHello says the client can verify. */
static void tls_cert_caps(struct sni_client_caps *caps, int *out_cipher_ecdsa,
                          int *out_cipher_rsa, const SSL_CLIENT_HELLO *hello)
{
    const uint8_t *ext;
    size_t ext_len;
    memset(caps, 0, sizeof(*caps));
    if (SSL_early_callback_ctx_extension_get(hello, TLS_EXT_SIGALGS, &ext, &ext_len)) {
        sni_parse_sigalgs(caps, ext, ext_len);
    }
    if (SSL_early_callback_ctx_extension_get(hello, TLS_EXT_VERSIONS, &ext, &ext_len)) {
        sni_parse_versions(caps, ext, ext_len);
    }
    *out_cipher_ecdsa = 0;
    *out_cipher_rsa = 0;
    for (size_t i = 0; i + 1 < hello->cipher_suites_len; i += 2) {
        uint16_t v = (uint16_t)(hello->cipher_suites[i] << 8 | hello->cipher_suites[i + 1]);
        const SSL_CIPHER *c = SSL_get_cipher_by_value(v);
        if (c == NULL) {
            continue;
        }
        int nid = SSL_CIPHER_get_auth_nid(c);
        if (nid == NID_auth_ecdsa) {
            *out_cipher_ecdsa = 1;
        } else if (nid == NID_auth_rsa) {
            *out_cipher_rsa = 1;
        }
    }
}

/* tls_cert_usable says whether the client can verify a certificate of this
 * key type: a signature scheme for it (a client without the extension is
 * taken to accept either) and, below TLS 1.3, a cipher suite for it. */
static int tls_cert_usable(const struct tls_cert *c, const struct sni_client_caps *caps,
                           int cipher_ecdsa, int cipher_rsa)
{
    int sig = !caps->have_sigalgs || (c->is_ecdsa ? caps->sigalg_ecdsa : caps->sigalg_rsa);
    int suite = caps->tls13 || (c->is_ecdsa ? cipher_ecdsa : cipher_rsa);
    return sig && suite;
}

static enum sni_match tls_cert_match(const struct tls_cert *c, const char *name, size_t len)
{
    enum sni_match best = SNI_MATCH_NONE;
    for (size_t i = 0; i < c->num_names; i++) {
        enum sni_match m = sni_match(c->names[i], name, len);
        if (m > best) {
            best = m;
        }
    }
    return best;
}

static enum ssl_select_cert_result_t tls_certificates_on_select(const SSL_CLIENT_HELLO *hello)
{
    SSL *ssl = hello->ssl;
    struct tls_cert_set *set = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_certificates_idx);
    char name[SNI_MAX_NAME_LEN + 2];
    const uint8_t *ext;
    size_t ext_len, name_len = 0;
    enum sni_match best = SNI_MATCH_NONE;

    if (set == NULL || set->num_certs <= 1) {
        return ssl_select_cert_success;
    }
    const char *hint = tls_certificates_hint_idx >= 0
                           ? SSL_get_ex_data(ssl, tls_certificates_hint_idx) : NULL;
    int have = SSL_early_callback_ctx_extension_get(hello, TLS_EXT_SERVER_NAME, &ext, &ext_len) &&
               sni_parse_server_name(name, sizeof(name), ext, ext_len) == 0;
    if (!have && hint != NULL && strlen(hint) < sizeof(name)) {
        /* no SNI in the ClientHello: the name the balancer says the client asked for */
        snprintf(name, sizeof(name), "%s", hint);
        have = 1;
    }
    if (have) {
        name_len = strlen(name);
        for (size_t i = 1; i < set->num_certs; i++) {
            enum sni_match m = tls_cert_match(&set->certs[i], name, name_len);
            if (m > best) {
                best = m;
            }
        }
    }
    if (best == SNI_MATCH_NONE) {
        return ssl_select_cert_success; /* the default, already in place */
    }
    struct sni_client_caps caps;
    int cipher_ecdsa, cipher_rsa;
    tls_cert_caps(&caps, &cipher_ecdsa, &cipher_rsa, hello);
    const struct tls_cert *first = NULL, *ecdsa = NULL, *rsa = NULL;
    for (size_t i = 1; i < set->num_certs; i++) {
        const struct tls_cert *c = &set->certs[i];
        if (tls_cert_match(c, name, name_len) != best) {
            continue;
        }
        if (first == NULL) {
            first = c;
        }
        if (tls_cert_usable(c, &caps, cipher_ecdsa, cipher_rsa)) {
            if (c->is_ecdsa && ecdsa == NULL) {
                ecdsa = c;
            } else if (!c->is_ecdsa && rsa == NULL) {
                rsa = c;
            }
        }
    }
    /* ECDSA first where the client takes it: smaller and cheaper to sign */
    const struct tls_cert *chosen = ecdsa != NULL ? ecdsa : rsa != NULL ? rsa : first;
    if (SSL_set_SSL_CTX(ssl, chosen->ctx) == NULL) {
        return ssl_select_cert_error;
    }
    return ssl_select_cert_success;
}

/* tls_cert_load loads one certificate into c; names are copied. */
static int tls_cert_load(struct tls_cert *c, char *err, size_t err_len, const char *cert_file,
                         const char *key_file, char *const *names, size_t num_names)
{
    c->ctx = tls_server_ctx_new(err, err_len, cert_file, key_file);
    if (c->ctx == NULL) {
        return -1;
    }
    EVP_PKEY *key = SSL_CTX_get0_privatekey(c->ctx);
    int type = key != NULL ? EVP_PKEY_id(key) : EVP_PKEY_NONE;
    if (type != EVP_PKEY_EC && type != EVP_PKEY_RSA) {
        snprintf(err, err_len, "%s: only ECDSA and RSA keys are supported", key_file);
        return -1;
    }
    c->is_ecdsa = type == EVP_PKEY_EC;
    X509 *leaf = SSL_CTX_get0_certificate(c->ctx);
    int days = 0, secs = 0;
    if (leaf == NULL || !ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(leaf))) {
        snprintf(err, err_len, "%s: cannot read the expiry time", cert_file);
        return -1;
    }
    c->expiry.not_after = (int64_t)time(NULL) + (int64_t)days * TLS_CERTIFICATES_DAY_S + secs;
    c->expiry.is_ecdsa = c->is_ecdsa;
    snprintf(c->expiry.file, sizeof(c->expiry.file), "%s", cert_file);
    if (num_names == 0) {
        snprintf(c->expiry.names, sizeof(c->expiry.names), "default");
        return 0;
    }
    c->names = calloc(num_names, sizeof(*c->names));
    if (c->names == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    size_t off = 0;
    for (size_t i = 0; i < num_names; i++) {
        c->names[i] = strdup(names[i]);
        if (c->names[i] == NULL) {
            snprintf(err, err_len, "out of memory");
            return -1;
        }
        c->num_names = i + 1;
        if (off < sizeof(c->expiry.names)) {
            int n = snprintf(c->expiry.names + off, sizeof(c->expiry.names) - off, "%s%s",
                             i > 0 ? "," : "", names[i]);
            off += n > 0 ? (size_t)n : 0;
        }
    }
    return 0;
}

SSL_CTX *tls_certificates_ctx_new(char *err, size_t err_len, const struct config *cfg)
{
    struct tls_cert_set *set = NULL;
    const char *def_cert = cfg->tls_cert_file, *def_key = cfg->tls_key_file;

    pthread_once(&tls_certificates_once, tls_certificates_init_once);
    if (tls_certificates_idx < 0) {
        snprintf(err, err_len, "cannot register the certificate set");
        return NULL;
    }
    if (def_cert == NULL) {
        if (cfg->num_certificates == 0) {
            snprintf(err, err_len, "no certificate configured");
            return NULL;
        }
        def_cert = cfg->certificates[0].cert_file;
        def_key = cfg->certificates[0].key_file;
    }
    set = calloc(1, sizeof(*set));
    if (set == NULL || (set->certs = calloc(cfg->num_certificates + 1, sizeof(*set->certs))) == NULL) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    set->num_certs = 1;
    if (tls_cert_load(&set->certs[0], err, err_len, def_cert, def_key, NULL, 0) != 0) {
        goto fail;
    }
    for (size_t i = 0; i < cfg->num_certificates; i++) {
        const struct config_certificate *ce = &cfg->certificates[i];
        struct tls_cert *c = &set->certs[set->num_certs++];
        if (tls_cert_load(c, err, err_len, ce->cert_file, ce->key_file, ce->names,
                          ce->num_names) != 0) {
            goto fail;
        }
    }
    for (size_t i = 0; i < set->num_certs; i++) {
        tls_server_ctx_set_tickets(set->certs[i].ctx, cfg->tls_session_tickets);
    }
    /* The set is the default context's ex_data, so it must hold no
       reference on that context (a cycle would never be freed): the caller's
       reference is the one, and the set goes with the context. */
    SSL_CTX *ctx = set->certs[0].ctx;
    set->certs[0].ctx = NULL;
    if (!SSL_CTX_set_ex_data(ctx, tls_certificates_idx, set)) {
        SSL_CTX_free(ctx);
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    SSL_CTX_set_select_certificate_cb(ctx, tls_certificates_on_select);
    return ctx;
fail:
    tls_cert_set_free(set);
    return NULL;
}

static int tls_cert_expiring(const struct tls_cert_expiry *e, unsigned warn_days, int64_t now)
{
    return warn_days > 0 && e->not_after - now < (int64_t)warn_days * TLS_CERTIFICATES_DAY_S;
}

size_t tls_certificates_warn_expiring(unsigned warn_days)
{
    int64_t now = (int64_t)time(NULL);
    size_t n = 0;
    pthread_mutex_lock(&tls_certificates_lock);
    for (size_t i = 0; i < tls_certificates_num_published; i++) {
        const struct tls_cert_expiry *e = &tls_certificates_published[i];
        if (tls_cert_expiring(e, warn_days, now)) {
            int64_t left = e->not_after - now;
            if (left <= 0) {
                log_msg(LOG_WARNING, "TLS: certificate %s (%s) has expired", e->file, e->names);
            } else {
                log_msg(LOG_WARNING, "TLS: certificate %s (%s) expires in %lld days (%lld s)",
                        e->file, e->names, (long long)(left / TLS_CERTIFICATES_DAY_S),
                        (long long)left);
            }
            n++;
        }
    }
    pthread_mutex_unlock(&tls_certificates_lock);
    return n;
}

void tls_certificates_publish(SSL_CTX *ctx, unsigned warn_days)
{
    struct tls_cert_set *set = ctx != NULL ? SSL_CTX_get_ex_data(ctx, tls_certificates_idx) : NULL;
    struct tls_cert_expiry *list = NULL;
    size_t num = 0;
    if (set != NULL) {
        list = calloc(set->num_certs, sizeof(*list));
        if (list != NULL) {
            for (size_t i = 0; i < set->num_certs; i++) {
                list[i] = set->certs[i].expiry;
            }
            num = set->num_certs;
        }
    }
    pthread_mutex_lock(&tls_certificates_lock);
    free(tls_certificates_published);
    tls_certificates_published = list;
    tls_certificates_num_published = num;
    pthread_mutex_unlock(&tls_certificates_lock);
    tls_certificates_warn_expiring(warn_days);
}

size_t tls_certificates_expiry(struct tls_cert_expiry *out, size_t max)
{
    pthread_mutex_lock(&tls_certificates_lock);
    size_t num = tls_certificates_num_published;
    for (size_t i = 0; i < num && i < max; i++) {
        out[i] = tls_certificates_published[i];
    }
    pthread_mutex_unlock(&tls_certificates_lock);
    return num;
}
