/* jwt: parsing and verifying JSON Web Tokens and their key sets.  See jwt.h
 * for the rules; the why of each check is next to it. */
#include "common/jwt.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <openssl/bn.h>
#include <openssl/curve25519.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "common/b64.h"

#define JWT_MIN_RSA_BITS 2048   /* smaller moduli are refused in a key set */
#define JWT_ES256_SIG_LEN 64    /* r || s, 32 bytes each (RFC 7518 section 3.4) */
#define JWT_P256_COORD_LEN 32

struct jwt_key {
    char kid[JWT_MAX_KID_LEN + 1];
    enum jwt_alg alg;           /* pinned by the key's type and curve */
    RSA *rsa;                   /* RS256 */
    EC_KEY *ec;                 /* ES256 */
    uint8_t ed[32];             /* EdDSA: the Ed25519 public key */
};

struct jwt_keyset {
    struct jwt_key *keys;
    size_t num_keys;
};

/* --- base64url ------------------------------------------------------------ */

uint8_t *jwt_b64url_decode(size_t *out_len, const char *in, size_t len)
{
    *out_len = 0;
    if (len % 4 == 1) {
        return NULL;
    }
    uint8_t *out = malloc(len / 4 * 3 + 3 + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_digit((unsigned char)in[i], '-', '_');
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* the bits left over must be zero: one spelling per value */
    if ((acc & ((1u << bits) - 1)) != 0) {
        OPENSSL_cleanse(out, o);
        free(out);
        return NULL;
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

char *jwt_b64url_encode(const uint8_t *in, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(len / 3 * 4 + 4 + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tab[(acc >> bits) & 63];
        }
    }
    if (bits > 0) {
        out[o++] = tab[(acc << (6 - bits)) & 63];
    }
    out[o] = '\0';
    return out;
}

/* --- names ------------------------------------------------------------------ */

const char *jwt_alg_name(enum jwt_alg alg)
{
    switch (alg) {
    case JWT_ALG_RS256:
        return "RS256";
    case JWT_ALG_ES256:
        return "ES256";
    case JWT_ALG_EDDSA:
        return "EdDSA";
    }
    return "?";
}

static int jwt_alg_from_name(enum jwt_alg *out, const char *name)
{
    /* exact, case-sensitive names (RFC 7515 section 4.1.1); "none", HS*,
       PS*, ES384 ... are not ours */
    if (strcmp(name, "RS256") == 0) {
        *out = JWT_ALG_RS256;
    } else if (strcmp(name, "ES256") == 0) {
        *out = JWT_ALG_ES256;
    } else if (strcmp(name, "EdDSA") == 0) {
        *out = JWT_ALG_EDDSA;
    } else {
        return JWT_E_ALG;
    }
    return 0;
}

const char *jwt_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case JWT_E_FORMAT:
        return "malformed token";
    case JWT_E_TOO_LONG:
        return "token too long";
    case JWT_E_ALG:
        return "algorithm not accepted";
    case JWT_E_NO_KID:
        return "no key id";
    case JWT_E_UNKNOWN_KID:
        return "unknown key id";
    case JWT_E_ALG_MISMATCH:
        return "algorithm is not the key's";
    case JWT_E_SIGNATURE:
        return "bad signature";
    case JWT_E_EXPIRED:
        return "expired";
    case JWT_E_NOT_YET_VALID:
        return "not yet valid";
    case JWT_E_ISSUER:
        return "wrong issuer";
    case JWT_E_AUDIENCE:
        return "wrong audience";
    case JWT_E_IDENTITY:
        return "no identity claim";
    case JWT_E_NOMEM:
        return "out of memory";
    case JWT_E_KEY:
        return "unusable key set";
    case JWT_E_NO_EXP:
        return "no expiry";
    default:
        return "unknown error";
    }
}

/* --- key sets ----------------------------------------------------------------- */

static void jwt_key_cleanup(struct jwt_key *k)
{
    RSA_free(k->rsa);
    EC_KEY_free(k->ec);
    memset(k, 0, sizeof(*k));
}

void jwt_keyset_free(struct jwt_keyset *ks)
{
    if (ks == NULL) {
        return;
    }
    for (size_t i = 0; i < ks->num_keys; i++) {
        jwt_key_cleanup(&ks->keys[i]);
    }
    free(ks->keys);
    free(ks);
}

size_t jwt_keyset_count(const struct jwt_keyset *ks)
{
    return ks != NULL ? ks->num_keys : 0;
}

static const struct jwt_key *jwt_keyset_find(const struct jwt_keyset *ks, const char *kid)
{
    if (ks == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < ks->num_keys; i++) {
        if (strcmp(ks->keys[i].kid, kid) == 0) {
            return &ks->keys[i];
        }
    }
    return NULL;
}

int jwt_keyset_has(const struct jwt_keyset *ks, const char *kid)
{
    return jwt_keyset_find(ks, kid) != NULL;
}

/* jwt_member_b64 decodes the base64url string member name of o; NULL when
 * absent or bad. */
static uint8_t *jwt_member_b64(size_t *out_len, json_t *o, const char *name)
{
    const char *s = json_string_value(json_object_get(o, name));
    if (s == NULL) {
        *out_len = 0;
        return NULL;
    }
    return jwt_b64url_decode(out_len, s, strlen(s));
}

/* jwt_key_from_jwk fills k from one JWK.  Returns 1 (usable key), 0 (a key
 * we skip: other type, curve or use) or a negative JWT_E_*. */
static int jwt_key_from_jwk(struct jwt_key *k, json_t *jwk)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *kid = json_string_value(json_object_get(jwk, "kid"));
    const char *use = json_string_value(json_object_get(jwk, "use"));
    json_t *algj = json_object_get(jwk, "alg");
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    uint8_t *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;
    int r = 0;

    if (!json_is_object(jwk) || kty == NULL) {
        return JWT_E_KEY;
    }
    if (kid == NULL || kid[0] == '\0' || strlen(kid) > JWT_MAX_KID_LEN) {
        return 0; /* tokens name their key: a key without a usable kid is never chosen */
    }
    if (use != NULL && strcmp(use, "sig") != 0) {
        return 0;
    }
    memset(k, 0, sizeof(*k));
    snprintf(k->kid, sizeof(k->kid), "%s", kid);
    if (strcmp(kty, "RSA") == 0) {
        k->alg = JWT_ALG_RS256;
        a = jwt_member_b64(&a_len, jwk, "n");
        b = jwt_member_b64(&b_len, jwk, "e");
        if (a == NULL || b == NULL || a_len * 8 < JWT_MIN_RSA_BITS || b_len == 0 || b_len > 8) {
            r = JWT_E_KEY;
            goto done;
        }
        BIGNUM *n = BN_bin2bn(a, a_len, NULL), *e = BN_bin2bn(b, b_len, NULL);
        k->rsa = RSA_new();
        if (n == NULL || e == NULL || k->rsa == NULL || !RSA_set0_key(k->rsa, n, e, NULL)) {
            BN_free(n);
            BN_free(e);
            r = JWT_E_NOMEM;
            goto done;
        }
        r = 1;
    } else if (strcmp(kty, "EC") == 0) {
        if (crv == NULL || strcmp(crv, "P-256") != 0) {
            goto done; /* 0: skipped */
        }
        k->alg = JWT_ALG_ES256;
        a = jwt_member_b64(&a_len, jwk, "x");
        b = jwt_member_b64(&b_len, jwk, "y");
        if (a == NULL || b == NULL || a_len != JWT_P256_COORD_LEN || b_len != JWT_P256_COORD_LEN) {
            r = JWT_E_KEY;
            goto done;
        }
        BIGNUM *x = BN_bin2bn(a, a_len, NULL), *y = BN_bin2bn(b, b_len, NULL);
        k->ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
        /* checks that the point is on the curve */
        int ok = x != NULL && y != NULL && k->ec != NULL &&
                 EC_KEY_set_public_key_affine_coordinates(k->ec, x, y);
        BN_free(x);
        BN_free(y);
        r = ok ? 1 : JWT_E_KEY;
    } else if (strcmp(kty, "OKP") == 0) {
        if (crv == NULL || strcmp(crv, "Ed25519") != 0) {
            goto done;
        }
        k->alg = JWT_ALG_EDDSA;
        a = jwt_member_b64(&a_len, jwk, "x");
        if (a == NULL || a_len != sizeof(k->ed)) {
            r = JWT_E_KEY;
            goto done;
        }
        memcpy(k->ed, a, sizeof(k->ed));
        r = 1;
    }
    if (r == 1 && algj != NULL) {
        /* a JWK that names its algorithm must name the one its type implies */
        enum jwt_alg named;
        if (!json_is_string(algj) || jwt_alg_from_name(&named, json_string_value(algj)) != 0 ||
            named != k->alg) {
            r = JWT_E_KEY;
        }
    }
done:
    free(a);
    free(b);
    if (r <= 0) {
        jwt_key_cleanup(k);
    }
    return r;
}

int jwt_keyset_parse(struct jwt_keyset **out, const char *json, size_t len)
{
    json_error_t jerr;
    json_t *root = NULL;
    struct jwt_keyset *ks = NULL;
    int r = 0;

    *out = NULL;
    if (len > JWKS_MAX_LEN) {
        return JWT_E_TOO_LONG;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *keys = json_object_get(root, "keys");
    if (root == NULL || !json_is_array(keys) || json_array_size(keys) > JWKS_MAX_KEYS) {
        r = JWT_E_KEY;
        goto fail;
    }
    ks = calloc(1, sizeof(*ks));
    if (ks == NULL || (json_array_size(keys) > 0 &&
                       (ks->keys = calloc(json_array_size(keys), sizeof(*ks->keys))) == NULL)) {
        r = JWT_E_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < json_array_size(keys); i++) {
        struct jwt_key *k = &ks->keys[ks->num_keys];
        int kr = jwt_key_from_jwk(k, json_array_get(keys, i));
        if (kr < 0) {
            r = kr;
            goto fail;
        }
        if (kr == 0) {
            continue;
        }
        if (jwt_keyset_find(ks, k->kid) != NULL) {
            /* which of the two would sign? neither is taken */
            jwt_key_cleanup(k);
            r = JWT_E_KEY;
            goto fail;
        }
        ks->num_keys++;
    }
    json_decref(root);
    *out = ks;
    return 0;
fail:
    json_decref(root);
    jwt_keyset_free(ks);
    return r;
}

/* --- tokens --------------------------------------------------------------------- */

void jwt_cleanup(struct jwt *t)
{
    json_decref(t->claims);
    if (t->sig != NULL) {
        free(t->sig);
    }
    memset(t, 0, sizeof(*t));
}

/* jwt_decode_json decodes one base64url part into a JSON object. */
static json_t *jwt_decode_json(const char *part, size_t len)
{
    size_t n = 0;
    uint8_t *raw = jwt_b64url_decode(&n, part, len);
    if (raw == NULL) {
        return NULL;
    }
    json_error_t jerr;
    json_t *o = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, &jerr);
    OPENSSL_cleanse(raw, n);
    free(raw);
    if (o != NULL && !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int jwt_parse(struct jwt *out, const char *token, size_t len)
{
    json_t *hdr = NULL;
    int r = JWT_E_FORMAT;

    memset(out, 0, sizeof(*out));
    if (len > JWT_MAX_LEN) {
        return JWT_E_TOO_LONG;
    }
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 != NULL ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) != NULL ||
        d1 == token || d2 == d1 + 1) {
        return JWT_E_FORMAT; /* a JWE has five parts; an empty part is nothing */
    }
    hdr = jwt_decode_json(token, (size_t)(d1 - token));
    if (hdr == NULL) {
        goto fail;
    }
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    const char *kid = json_string_value(json_object_get(hdr, "kid"));
    if (alg == NULL) {
        goto fail;
    }
    if (json_object_get(hdr, "crit") != NULL) {
        goto fail; /* extensions we would have to understand: we understand none */
    }
    if (jwt_alg_from_name(&out->alg, alg) != 0) {
        r = JWT_E_ALG;
        goto fail;
    }
    if (kid == NULL || kid[0] == '\0' || strlen(kid) > JWT_MAX_KID_LEN) {
        r = JWT_E_NO_KID;
        goto fail;
    }
    snprintf(out->kid, sizeof(out->kid), "%s", kid);
    out->claims = jwt_decode_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (out->claims == NULL) {
        goto fail;
    }
    out->sig = jwt_b64url_decode(&out->sig_len, d2 + 1, len - (size_t)(d2 + 1 - token));
    if (out->sig == NULL || out->sig_len == 0) {
        goto fail;
    }
    out->signed_len = (size_t)(d2 - token);
    json_decref(hdr);
    return 0;
fail:
    json_decref(hdr);
    jwt_cleanup(out);
    return r;
}

int jwt_verify_signature(const struct jwt *t, const char *token, const struct jwt_keyset *ks)
{
    const struct jwt_key *k = jwt_keyset_find(ks, t->kid);
    uint8_t digest[SHA256_DIGEST_LENGTH];
    int ok = 0;

    if (k == NULL) {
        return JWT_E_UNKNOWN_KID;
    }
    if (k->alg != t->alg) {
        /* the key decides the algorithm, never the token (RFC 8725 section 3.1) */
        return JWT_E_ALG_MISMATCH;
    }
    switch (k->alg) {
    case JWT_ALG_RS256:
        SHA256((const uint8_t *)token, t->signed_len, digest);
        ok = RSA_verify(NID_sha256, digest, sizeof(digest), t->sig, t->sig_len, k->rsa);
        break;
    case JWT_ALG_ES256: {
        if (t->sig_len != JWT_ES256_SIG_LEN) {
            break;
        }
        SHA256((const uint8_t *)token, t->signed_len, digest);
        ECDSA_SIG *sig = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(t->sig, 32, NULL), *s = BN_bin2bn(t->sig + 32, 32, NULL);
        if (sig != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(sig, r, s)) {
            r = s = NULL; /* owned by sig now */
            ok = ECDSA_do_verify(digest, sizeof(digest), sig, k->ec);
        }
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(sig);
        break;
    }
    case JWT_ALG_EDDSA:
        ok = t->sig_len == 64 && ED25519_verify((const uint8_t *)token, t->signed_len, t->sig, k->ed);
        break;
    }
    return ok == 1 ? 0 : JWT_E_SIGNATURE;
}

/* jwt_num_claim reads a NumericDate; returns 1 when present and a number,
 * 0 when absent, -1 when of another type. */
static int jwt_num_claim(json_t *claims, const char *name, double *out)
{
    json_t *v = json_object_get(claims, name);
    if (v == NULL) {
        return 0;
    }
    if (!json_is_number(v)) {
        return -1;
    }
    *out = json_number_value(v);
    return 1;
}

int jwt_check_claims(const struct jwt *t, const struct jwt_policy *p, time_t now,
                     char *out_identity, size_t out_len, time_t *out_exp)
{
    json_t *c = t->claims;
    double exp = 0, nbf = 0;
    double tnow = (double)now, skew = (double)p->skew_s;

    out_identity[0] = '\0';
    int he = jwt_num_claim(c, "exp", &exp);
    if (he <= 0) {
        /* a token without an end is valid forever: never */
        return he == 0 ? JWT_E_NO_EXP : JWT_E_FORMAT;
    }
    if (tnow >= exp + skew) {
        return JWT_E_EXPIRED;
    }
    int hn = jwt_num_claim(c, "nbf", &nbf);
    if (hn < 0) {
        return JWT_E_FORMAT;
    }
    if (hn == 1 && tnow + skew < nbf) {
        return JWT_E_NOT_YET_VALID;
    }
    if (p->issuer != NULL) {
        const char *iss = json_string_value(json_object_get(c, "iss"));
        if (iss == NULL || strcmp(iss, p->issuer) != 0) {
            return JWT_E_ISSUER;
        }
    }
    if (p->audience != NULL) {
        json_t *aud = json_object_get(c, "aud");
        int found = 0;
        if (json_is_string(aud)) {
            found = strcmp(json_string_value(aud), p->audience) == 0;
        } else if (json_is_array(aud)) {
            for (size_t i = 0; i < json_array_size(aud) && !found; i++) {
                const char *a = json_string_value(json_array_get(aud, i));
                found = a != NULL && strcmp(a, p->audience) == 0;
            }
        }
        if (!found) {
            return JWT_E_AUDIENCE;
        }
    }
    json_t *idj = json_object_get(c, p->identity_claim != NULL ? p->identity_claim : "sub");
    const char *id = json_string_value(idj);
    size_t id_len = json_is_string(idj) ? json_string_length(idj) : 0;
    if (id == NULL || id_len == 0 || id_len >= out_len || id_len > JWT_MAX_IDENTITY_LEN ||
        strlen(id) != id_len) {
        return JWT_E_IDENTITY;
    }
    memcpy(out_identity, id, id_len + 1);
    *out_exp = exp > 4e18 ? (time_t)4e18 : (time_t)exp;
    return 0;
}
