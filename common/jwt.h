/* jwt: JSON Web Tokens (RFC 7519) signed with RS256, ES256 or EdDSA
 * (Ed25519), and the JSON Web Key Sets (RFC 7517) that hold their public
 * keys.  Parsing with jansson, signatures with BoringSSL.  Pure code: no
 * I/O, no clock (the caller passes the time).
 *
 * The rules: a token's header must name a kid and an algorithm; the key
 * with that kid must exist, and the algorithm is the key's (pinned by its
 * type and curve, and by its "alg" when the JWK gives one): "none", HMAC and
 * every other algorithm are refused whatever the header says. */
#ifndef IMAPMUX_COMMON_JWT_H
#define IMAPMUX_COMMON_JWT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define JWT_MAX_LEN 16384         /* bytes of a compact token we parse at most */
#define JWT_MAX_KID_LEN 128       /* bytes of a key id */
#define JWKS_MAX_LEN (1u << 20)   /* bytes of a key set document */
#define JWKS_MAX_KEYS 64          /* keys of one set */
#define JWT_MAX_IDENTITY_LEN 320  /* bytes of the identity claim's value */

enum jwt_alg {
    JWT_ALG_RS256 = 1,
    JWT_ALG_ES256,
    JWT_ALG_EDDSA,
};

/* Negative results; see jwt_strerror.  None of the texts holds token data. */
enum jwt_error {
    JWT_E_FORMAT = -1,       /* not three base64url parts, or bad JSON */
    JWT_E_TOO_LONG = -2,
    JWT_E_ALG = -3,          /* none, HMAC, or an algorithm we do not take */
    JWT_E_NO_KID = -4,
    JWT_E_UNKNOWN_KID = -5,
    JWT_E_ALG_MISMATCH = -6, /* the header's algorithm is not the key's */
    JWT_E_SIGNATURE = -7,
    JWT_E_EXPIRED = -8,
    JWT_E_NOT_YET_VALID = -9,
    JWT_E_ISSUER = -10,
    JWT_E_AUDIENCE = -11,
    JWT_E_IDENTITY = -12,    /* no usable identity claim */
    JWT_E_NOMEM = -13,
    JWT_E_KEY = -14,         /* a key set that cannot be used */
    JWT_E_NO_EXP = -15,      /* no exp claim */
};

struct jwt_keyset;

/* jwt_keyset_parse reads a JWKS document ({"keys": [...]}; len bytes).  Keys
 * of types or curves we do not verify with, and keys for encryption ("use":
 * "enc"), are skipped; a key without kid, or a kid given twice, is an error.
 * Returns 0 with *out owned by the caller (jwt_keyset_free), or a negative
 * JWT_E_* (*out NULL). */
int jwt_keyset_parse(struct jwt_keyset **out, const char *json, size_t len);

/* jwt_keyset_free frees a set; NULL accepted. */
void jwt_keyset_free(struct jwt_keyset *ks);

/* jwt_keyset_count returns the number of usable keys. */
size_t jwt_keyset_count(const struct jwt_keyset *ks);

/* jwt_keyset_has returns 1 when the set holds a key with kid. */
int jwt_keyset_has(const struct jwt_keyset *ks, const char *kid);

/* A parsed token.  The claims are jansson's; the rest points into buf. */
struct jwt {
    char kid[JWT_MAX_KID_LEN + 1]; /* from the header */
    enum jwt_alg alg;              /* from the header, one of ours */
    void *claims;                  /* json_t object; owned */
    uint8_t *sig;                  /* decoded signature; owned */
    size_t sig_len;
    size_t signed_len;             /* bytes of "header.payload" at the token's start */
};

/* jwt_parse splits a compact token (len bytes) into header, claims and
 * signature, without checking the signature.  Returns 0 (free out with
 * jwt_cleanup) or a negative JWT_E_* (out zeroed; nothing to free). */
int jwt_parse(struct jwt *out, const char *token, size_t len);

/* jwt_cleanup frees what jwt_parse allocated; safe on a zeroed struct. */
void jwt_cleanup(struct jwt *t);

/* jwt_verify_signature checks t's signature over the first t->signed_len
 * bytes of token with the key of t->kid in ks.  Returns 0 or JWT_E_UNKNOWN_KID,
 * JWT_E_ALG_MISMATCH, JWT_E_SIGNATURE. */
int jwt_verify_signature(const struct jwt *t, const char *token, const struct jwt_keyset *ks);

/* What the claims must say. */
struct jwt_policy {
    const char *issuer;        /* iss must equal it; NULL: not checked */
    const char *audience;      /* aud (string or array) must hold it; NULL: not checked */
    const char *identity_claim;/* claim holding the login ("email", "sub", ...) */
    unsigned skew_s;           /* clock skew allowed for exp and nbf */
};

/* jwt_check_claims checks exp (required), nbf, iss and aud against now, and
 * copies the identity claim's string into out_identity (out_len bytes with
 * its NUL) and exp into *out_exp.  Returns 0 or a negative JWT_E_*. */
int jwt_check_claims(const struct jwt *t, const struct jwt_policy *p, time_t now,
                     char *out_identity, size_t out_len, time_t *out_exp);

/* jwt_strerror returns a fixed reason for a JWT_E_* code. */
const char *jwt_strerror(int err);

/* jwt_alg_name returns "RS256", "ES256", "EdDSA", or "?". */
const char *jwt_alg_name(enum jwt_alg alg);

/* jwt_b64url_decode decodes unpadded base64url (len bytes) into a new
 * buffer (*out_len bytes, plus a NUL not counted).  Returns it (malloc'd)
 * or NULL for bad input or OOM. */
uint8_t *jwt_b64url_decode(size_t *out_len, const char *in, size_t len);

/* jwt_b64url_encode encodes len bytes into a new NUL-terminated string
 * without padding (malloc'd), or NULL on OOM. */
char *jwt_b64url_encode(const uint8_t *in, size_t len);

#endif
