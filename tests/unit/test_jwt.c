/* Tests of common/jwt: key sets and tokens minted here with BoringSSL. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include <openssl/hmac.h>

#include "common/jwt.h"
#include "../oauth/jwt_mint.h"

#define NOW 1800000000L

static struct jwt_mint_keys keys;
static struct jwt_keyset *ks;

static void setup(void)
{
    jwt_mint_generate(&keys);
    char *doc = jwt_mint_jwks(&keys, "rsa1", "ec1", "ed1");
    cr_assert_eq(jwt_keyset_parse(&ks, doc, strlen(doc)), 0);
    cr_assert_eq(jwt_keyset_count(ks), 3);
    free(doc);
}

static void teardown(void)
{
    jwt_keyset_free(ks);
    ks = NULL;
    jwt_mint_free(&keys);
}

static const struct jwt_policy policy = {
    .issuer = "https://idp.test", .audience = "imap", .identity_claim = "email", .skew_s = 30,
};

#define CLAIMS(extra) \
    "{\"iss\":\"https://idp.test\",\"aud\":\"imap\",\"email\":\"alice@example.com\"," \
    "\"exp\":1800000600" extra "}"

/* check runs the whole validation of a token and returns its result. */
static int check(const char *token, char *id, time_t *exp)
{
    struct jwt t;
    char idbuf[JWT_MAX_IDENTITY_LEN + 1];
    time_t e = 0;
    int r = jwt_parse(&t, token, strlen(token));
    if (r != 0) {
        return r;
    }
    r = jwt_verify_signature(&t, token, ks);
    if (r == 0) {
        r = jwt_check_claims(&t, &policy, NOW, id != NULL ? id : idbuf, sizeof(idbuf),
                             exp != NULL ? exp : &e);
    }
    jwt_cleanup(&t);
    return r;
}

static int mint_check(enum jwt_alg alg, const char *hdr, const char *claims)
{
    char *tok = jwt_mint_sign(&keys, alg, hdr, claims);
    int r = check(tok, NULL, NULL);
    free(tok);
    return r;
}

TestSuite(jwt, .init = setup, .fini = teardown);

Test(jwt, valid_each_algorithm)
{
    const char *hdrs[] = {"{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"typ\":\"JWT\"}",
                          "{\"alg\":\"ES256\",\"kid\":\"ec1\"}", "{\"alg\":\"EdDSA\",\"kid\":\"ed1\"}"};
    enum jwt_alg algs[] = {JWT_ALG_RS256, JWT_ALG_ES256, JWT_ALG_EDDSA};
    for (int i = 0; i < 3; i++) {
        char *tok = jwt_mint_sign(&keys, algs[i], hdrs[i], CLAIMS(""));
        char id[JWT_MAX_IDENTITY_LEN + 1];
        time_t exp = 0;
        cr_assert_eq(check(tok, id, &exp), 0, "%s", jwt_alg_name(algs[i]));
        cr_assert_str_eq(id, "alice@example.com");
        cr_assert_eq(exp, 1800000600);
        free(tok);
    }
}

Test(jwt, time_claims)
{
    const char *h = "{\"alg\":\"ES256\",\"kid\":\"ec1\"}";
    cr_assert_eq(mint_check(JWT_ALG_ES256, h,
                            "{\"iss\":\"https://idp.test\",\"aud\":\"imap\",\"email\":\"a@b\","
                            "\"exp\":1799999000}"),
                 JWT_E_EXPIRED);
    /* within the skew: still valid */
    cr_assert_eq(mint_check(JWT_ALG_ES256, h,
                            "{\"iss\":\"https://idp.test\",\"aud\":\"imap\",\"email\":\"a@b\","
                            "\"exp\":1800000010}"),
                 0);
    cr_assert_eq(mint_check(JWT_ALG_ES256, h, CLAIMS(",\"nbf\":1800000100")), JWT_E_NOT_YET_VALID);
    cr_assert_eq(mint_check(JWT_ALG_ES256, h, CLAIMS(",\"nbf\":1800000020")), 0);
    cr_assert_eq(mint_check(JWT_ALG_ES256, h, "{\"iss\":\"https://idp.test\",\"aud\":\"imap\","
                                              "\"email\":\"a@b\"}"),
                 JWT_E_NO_EXP);
    cr_assert_eq(mint_check(JWT_ALG_ES256, h, CLAIMS(",\"nbf\":\"soon\"")), JWT_E_FORMAT);
}

Test(jwt, issuer_audience_identity)
{
    const char *h = "{\"alg\":\"EdDSA\",\"kid\":\"ed1\"}";
    cr_assert_eq(mint_check(JWT_ALG_EDDSA, h,
                            "{\"iss\":\"https://evil.test\",\"aud\":\"imap\",\"email\":\"a@b\","
                            "\"exp\":1800000600}"),
                 JWT_E_ISSUER);
    cr_assert_eq(mint_check(JWT_ALG_EDDSA, h,
                            "{\"iss\":\"https://idp.test\",\"aud\":\"smtp\",\"email\":\"a@b\","
                            "\"exp\":1800000600}"),
                 JWT_E_AUDIENCE);
    cr_assert_eq(mint_check(JWT_ALG_EDDSA, h,
                            "{\"iss\":\"https://idp.test\",\"aud\":[\"smtp\",\"imap\"],"
                            "\"email\":\"a@b\",\"exp\":1800000600}"),
                 0);
    cr_assert_eq(mint_check(JWT_ALG_EDDSA, h,
                            "{\"iss\":\"https://idp.test\",\"aud\":\"imap\",\"sub\":\"x\","
                            "\"exp\":1800000600}"),
                 JWT_E_IDENTITY);
    cr_assert_eq(mint_check(JWT_ALG_EDDSA, h,
                            "{\"iss\":\"https://idp.test\",\"aud\":\"imap\",\"email\":\"a\\u0000b\","
                            "\"exp\":1800000600}"),
                 JWT_E_FORMAT); /* jansson refuses a NUL in a string */
}

Test(jwt, keys_pin_the_algorithm)
{
    /* unknown kid */
    cr_assert_eq(mint_check(JWT_ALG_RS256, "{\"alg\":\"RS256\",\"kid\":\"rsa2\"}", CLAIMS("")),
                 JWT_E_UNKNOWN_KID);
    cr_assert_eq(mint_check(JWT_ALG_RS256, "{\"alg\":\"RS256\"}", CLAIMS("")), JWT_E_NO_KID);
    /* an EC signature under the RSA key's kid */
    cr_assert_eq(mint_check(JWT_ALG_ES256, "{\"alg\":\"ES256\",\"kid\":\"rsa1\"}", CLAIMS("")),
                 JWT_E_ALG_MISMATCH);
    /* alg none, and the HMAC-with-the-public-key attack */
    const char *none = "{\"alg\":\"none\",\"kid\":\"rsa1\"}";
    char *h = jwt_b64url_encode((const uint8_t *)none, strlen(none));
    char *p = jwt_b64url_encode((const uint8_t *)CLAIMS(""), strlen(CLAIMS("")));
    char tok[4096];
    snprintf(tok, sizeof(tok), "%s.%s.", h, p);
    cr_assert_eq(check(tok, NULL, NULL), JWT_E_ALG); /* refused before the empty signature */
    snprintf(tok, sizeof(tok), "%s.%s.AAAA", h, p);
    cr_assert_eq(check(tok, NULL, NULL), JWT_E_ALG);
    free(h);
    const char *hs = "{\"alg\":\"HS256\",\"kid\":\"rsa1\"}";
    h = jwt_b64url_encode((const uint8_t *)hs, strlen(hs));
    snprintf(tok, sizeof(tok), "%s.%s", h, p);
    uint8_t mac[32];
    unsigned mac_len = 0;
    const BIGNUM *n = NULL;
    RSA_get0_key(keys.rsa, &n, NULL, NULL);
    uint8_t nbuf[256];
    BN_bn2bin_padded(nbuf, sizeof(nbuf), n);
    HMAC(EVP_sha256(), nbuf, sizeof(nbuf), (const uint8_t *)tok, strlen(tok), mac, &mac_len);
    char *m = jwt_b64url_encode(mac, mac_len);
    strcat(tok, ".");
    strcat(tok, m);
    cr_assert_eq(check(tok, NULL, NULL), JWT_E_ALG);
    free(m);
    free(h);
    free(p);
}

Test(jwt, tampered)
{
    char *tok = jwt_mint_sign(&keys, JWT_ALG_RS256, "{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", CLAIMS(""));
    char *d1 = strchr(tok, '.');
    char *d2 = strchr(d1 + 1, '.');
    /* another user in the payload, same signature */
    const char *evil = CLAIMS("") ;
    char *ev = strdup(evil);
    char *at = strstr(ev, "alice");
    memcpy(at, "mallo", 5);
    char *p = jwt_b64url_encode((const uint8_t *)ev, strlen(ev));
    char out[4096];
    snprintf(out, sizeof(out), "%.*s.%s%s", (int)(d1 - tok), tok, p, d2);
    cr_assert_eq(check(out, NULL, NULL), JWT_E_SIGNATURE);
    /* a flipped signature bit */
    char *last = tok + strlen(tok) - 3;
    *last = *last == 'A' ? 'B' : 'A';
    cr_assert_eq(check(tok, NULL, NULL), JWT_E_SIGNATURE);
    free(p);
    free(ev);
    free(tok);
}

Test(jwt, every_prefix_is_refused)
{
    char *tok = jwt_mint_sign(&keys, JWT_ALG_EDDSA, "{\"alg\":\"EdDSA\",\"kid\":\"ed1\"}", CLAIMS(""));
    size_t len = strlen(tok);
    for (size_t i = 0; i < len; i++) {
        struct jwt t;
        int r = jwt_parse(&t, tok, i);
        if (r == 0) {
            cr_assert_neq(jwt_verify_signature(&t, tok, ks), 0, "prefix %zu verified", i);
            jwt_cleanup(&t);
        }
    }
    free(tok);
}

Test(jwt, keyset_rules)
{
    struct jwt_keyset *k2 = NULL;
    const char *dup = "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"a\","
                      "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"},"
                      "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"a\","
                      "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}";
    cr_assert_eq(jwt_keyset_parse(&k2, dup, strlen(dup)), JWT_E_KEY);
    cr_assert_null(k2);
    const char *skip = "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"AAAA\"},"
                       "{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"p384\",\"x\":\"AA\",\"y\":\"AA\"},"
                       "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"use\":\"enc\",\"kid\":\"e\","
                       "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"},"
                       "{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                       "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}";
    cr_assert_eq(jwt_keyset_parse(&k2, skip, strlen(skip)), 0);
    cr_assert_eq(jwt_keyset_count(k2), 0);
    jwt_keyset_free(k2);
    const char *badalg = "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"a\",\"alg\":\"HS256\","
                         "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}";
    cr_assert_eq(jwt_keyset_parse(&k2, badalg, strlen(badalg)), JWT_E_KEY);
    const char *notcurve = "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"a\","
                           "\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
                           "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\"}]}";
    cr_assert_eq(jwt_keyset_parse(&k2, notcurve, strlen(notcurve)), JWT_E_KEY);
    cr_assert_eq(jwt_keyset_parse(&k2, "[]", 2), JWT_E_KEY);
}

Test(jwt, base64url)
{
    size_t n = 0;
    uint8_t *d = jwt_b64url_decode(&n, "YWI", 3);
    cr_assert_not_null(d);
    cr_assert_eq(n, 2);
    cr_assert_eq(memcmp(d, "ab", 2), 0);
    free(d);
    cr_assert_null(jwt_b64url_decode(&n, "YWJ", 3)); /* non-zero spare bits */
    cr_assert_null(jwt_b64url_decode(&n, "YW=", 3));
    cr_assert_null(jwt_b64url_decode(&n, "Y", 1));
}
