/* jwt_mint: keys and tokens made by the tests themselves (RSA 2048, EC
 * P-256, Ed25519), with BoringSSL: the unit test of common/jwt and the
 * jwtmint tool of the integration tests include it.  Test code: aborts on
 * out of memory. */
#ifndef IMAPMUX_TESTS_JWT_MINT_H
#define IMAPMUX_TESTS_JWT_MINT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/curve25519.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "common/jwt.h"

struct jwt_mint_keys {
    RSA *rsa;
    EC_KEY *ec;
    uint8_t ed_pub[32], ed_priv[64];
};

static void jwt_mint_generate(struct jwt_mint_keys *k)
{
    BIGNUM *e = BN_new();
    k->rsa = RSA_new();
    if (e == NULL || k->rsa == NULL || !BN_set_word(e, RSA_F4) ||
        !RSA_generate_key_ex(k->rsa, 2048, e, NULL)) {
        abort();
    }
    BN_free(e);
    k->ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    if (k->ec == NULL || !EC_KEY_generate_key(k->ec)) {
        abort();
    }
    ED25519_keypair(k->ed_pub, k->ed_priv);
}

static void jwt_mint_free(struct jwt_mint_keys *k)
{
    RSA_free(k->rsa);
    EC_KEY_free(k->ec);
    memset(k, 0, sizeof(*k));
}

static char *jwt_mint_b64_bn(const BIGNUM *bn, size_t pad)
{
    size_t n = pad > 0 ? pad : BN_num_bytes(bn);
    uint8_t *buf = malloc(n);
    if (buf == NULL || !BN_bn2bin_padded(buf, n, bn)) {
        abort();
    }
    char *s = jwt_b64url_encode(buf, n);
    free(buf);
    return s;
}

/* jwt_mint_jwks writes the key set of k (kids prefix "rsa", "ec", "ed") into
 * a malloc'd string. */
static char *jwt_mint_jwks(const struct jwt_mint_keys *k, const char *rsa_kid,
                           const char *ec_kid, const char *ed_kid)
{
    const BIGNUM *n = NULL, *e = NULL;
    RSA_get0_key(k->rsa, &n, &e, NULL);
    char *ns = jwt_mint_b64_bn(n, 0), *es = jwt_mint_b64_bn(e, 0);
    BIGNUM *x = BN_new(), *y = BN_new();
    if (x == NULL || y == NULL ||
        !EC_POINT_get_affine_coordinates_GFp(EC_KEY_get0_group(k->ec), EC_KEY_get0_public_key(k->ec),
                                             x, y, NULL)) {
        abort();
    }
    char *xs = jwt_mint_b64_bn(x, 32), *ys = jwt_mint_b64_bn(y, 32);
    char *eds = jwt_b64url_encode(k->ed_pub, 32);
    size_t len = strlen(ns) + strlen(es) + strlen(xs) + strlen(ys) + strlen(eds) + 512;
    char *out = malloc(len);
    if (out == NULL) {
        abort();
    }
    snprintf(out, len,
             "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"alg\":\"RS256\","
             "\"n\":\"%s\",\"e\":\"%s\"},"
             "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},"
             "{\"kty\":\"OKP\",\"kid\":\"%s\",\"crv\":\"Ed25519\",\"x\":\"%s\"}]}",
             rsa_kid, ns, es, ec_kid, xs, ys, ed_kid, eds);
    free(ns);
    free(es);
    free(xs);
    free(ys);
    free(eds);
    BN_free(x);
    BN_free(y);
    return out;
}

/* jwt_mint_sign returns "b64(header).b64(payload).b64(sig)" signed by k's
 * key for alg (the header is written as given: tests lie in it). */
static char *jwt_mint_sign(const struct jwt_mint_keys *k, enum jwt_alg alg, const char *header,
                           const char *payload)
{
    char *h = jwt_b64url_encode((const uint8_t *)header, strlen(header));
    char *p = jwt_b64url_encode((const uint8_t *)payload, strlen(payload));
    size_t in_len = strlen(h) + 1 + strlen(p);
    char *in = malloc(in_len + 1);
    uint8_t sig[512], digest[SHA256_DIGEST_LENGTH];
    size_t sig_len = 0;
    if (h == NULL || p == NULL || in == NULL) {
        abort();
    }
    snprintf(in, in_len + 1, "%s.%s", h, p);
    SHA256((const uint8_t *)in, in_len, digest);
    if (alg == JWT_ALG_RS256) {
        unsigned sl = 0;
        if (!RSA_sign(NID_sha256, digest, sizeof(digest), sig, &sl, k->rsa)) {
            abort();
        }
        sig_len = sl;
    } else if (alg == JWT_ALG_ES256) {
        ECDSA_SIG *es = ECDSA_do_sign(digest, sizeof(digest), k->ec);
        if (es == NULL || !BN_bn2bin_padded(sig, 32, es->r) || !BN_bn2bin_padded(sig + 32, 32, es->s)) {
            abort();
        }
        ECDSA_SIG_free(es);
        sig_len = 64;
    } else {
        if (!ED25519_sign(sig, (const uint8_t *)in, in_len, k->ed_priv)) {
            abort();
        }
        sig_len = 64;
    }
    char *s = jwt_b64url_encode(sig, sig_len);
    size_t out_len = in_len + 1 + strlen(s) + 1;
    char *out = malloc(out_len);
    if (s == NULL || out == NULL) {
        abort();
    }
    snprintf(out, out_len, "%s.%s", in, s);
    free(h);
    free(p);
    free(in);
    free(s);
    return out;
}

#endif
