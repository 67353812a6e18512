/* Fuzz target of the token parser and the key set parser.  The input is a
 * compact token (then checked against a fixed key set: a random input must
 * never verify), then a JWKS document, then a SASL OAUTHBEARER / XOAUTH2
 * message (whose decoded token goes through the token parser again). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/jwt.h"
#include "common/sasl_oauth.h"

static const char fuzz_jwks[] =
    "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"k\","
    "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}";

static void fuzz_token(const char *data, size_t size, const struct jwt_keyset *ks)
{
    struct jwt t;
    int r = jwt_parse(&t, data, size);
    if (r > 0 || strcmp(jwt_strerror(r), "unknown error") == 0) {
        abort();
    }
    if (r != 0) {
        return;
    }
    if (t.signed_len >= size || t.sig == NULL || t.claims == NULL || t.kid[0] == '\0') {
        abort();
    }
    if (jwt_verify_signature(&t, data, ks) == 0) {
        abort(); /* a forgery of the fixed key */
    }
    struct jwt_policy p = {.issuer = "i", .audience = "a", .identity_claim = "email", .skew_s = 5};
    char id[JWT_MAX_IDENTITY_LEN + 1];
    time_t exp = 0;
    if (jwt_check_claims(&t, &p, 1000, id, sizeof(id), &exp) == 0 && id[0] == '\0') {
        abort();
    }
    jwt_cleanup(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct jwt_keyset *ks;
    if (ks == NULL && jwt_keyset_parse(&ks, fuzz_jwks, strlen(fuzz_jwks)) != 0) {
        abort();
    }
    fuzz_token((const char *)data, size, ks);

    struct jwt_keyset *k2 = NULL;
    if (jwt_keyset_parse(&k2, (const char *)data, size) == 0) {
        if (k2 == NULL) {
            abort();
        }
        jwt_keyset_free(k2);
    } else if (k2 != NULL) {
        abort();
    }

    for (int m = SASL_OAUTH_BEARER; m <= SASL_OAUTH_XOAUTH2; m++) {
        struct sasl_oauth o;
        int r = sasl_oauth_decode(&o, (enum sasl_oauth_mech)m, (const char *)data, size);
        if (r == 0) {
            if (o.token == NULL || o.user == NULL || strlen(o.token) != o.token_len) {
                abort();
            }
            fuzz_token(o.token, o.token_len, ks);
            sasl_oauth_cleanup(&o);
        } else if (o.buf != NULL || strcmp(sasl_oauth_strerror(r), "unknown error") == 0) {
            abort();
        }
    }
    return 0;
}
