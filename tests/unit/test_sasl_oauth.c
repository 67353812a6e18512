/* Tests of common/sasl_oauth: OAUTHBEARER and XOAUTH2 messages. */
#include <string.h>

#include <criterion/criterion.h>

#include <openssl/base64.h>

#include "common/sasl_oauth.h"

static char b64buf[4096];

static const char *b64(const char *raw, size_t len)
{
    EVP_EncodeBlock((uint8_t *)b64buf, (const uint8_t *)raw, len);
    return b64buf;
}

#define B64(lit) b64(lit, sizeof(lit) - 1)

static int dec(struct sasl_oauth *o, enum sasl_oauth_mech m, const char *s)
{
    return sasl_oauth_decode(o, m, s, strlen(s));
}

Test(sasl_oauth, bearer_with_authzid)
{
    struct sasl_oauth o;
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER,
                     B64("n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
                         "auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01")),
                 0);
    cr_assert_str_eq(o.user, "user@example.com");
    cr_assert_str_eq(o.token, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
    cr_assert_eq(o.token_len, strlen(o.token));
    sasl_oauth_cleanup(&o);
    cr_assert_null(o.buf);
}

Test(sasl_oauth, bearer_without_authzid_and_escapes)
{
    struct sasl_oauth o;
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, B64("n,,\x01" "auth=Bearer abc.def.ghi\x01\x01")), 0);
    cr_assert_str_eq(o.user, "");
    cr_assert_str_eq(o.token, "abc.def.ghi");
    sasl_oauth_cleanup(&o);
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, B64("y,a=a=2Cb=3Dc,\x01" "auth=bearer t\x01\x01")), 0);
    cr_assert_str_eq(o.user, "a,b=c");
    sasl_oauth_cleanup(&o);
}

Test(sasl_oauth, bearer_refusals)
{
    struct sasl_oauth o;
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, B64("p=tls-unique,,\x01" "auth=Bearer t\x01\x01")),
                 SASL_OAUTH_E_GS2);
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, B64("n,a=x=41,\x01" "auth=Bearer t\x01\x01")),
                 SASL_OAUTH_E_GS2);
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, B64("n,,\x01" "auth=Basic dDp0\x01\x01")),
                 SASL_OAUTH_E_NO_TOKEN);
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, B64("n,,\x01host=x\x01\x01")), SASL_OAUTH_E_NO_TOKEN);
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, B64("n,,\x01" "auth=Bearer t\x01")), SASL_OAUTH_E_FORMAT);
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, B64("n,,\x01" "auth=Bearer t\x01\x01x")),
                 SASL_OAUTH_E_FORMAT);
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, B64("n,,\x01" "auth=Bearer t t\x01\x01")),
                 SASL_OAUTH_E_NO_TOKEN);
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, B64("n,,\x01" "auth=Bearer a\x01" "auth=Bearer b\x01\x01")),
                 SASL_OAUTH_E_FORMAT);
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, "\x01"), SASL_OAUTH_E_BASE64);
    cr_assert_eq(dec(&o, SASL_OAUTH_BEARER, "AQ=="), SASL_OAUTH_E_GS2); /* the dummy reply */
    cr_assert_null(o.buf);
}

Test(sasl_oauth, xoauth2)
{
    struct sasl_oauth o;
    cr_assert_eq(dec(&o, SASL_OAUTH_XOAUTH2, B64("user=someuser@example.com\x01" "auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01")), 0);
    cr_assert_str_eq(o.user, "someuser@example.com");
    cr_assert_str_eq(o.token, "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
    sasl_oauth_cleanup(&o);
    cr_assert_eq(dec(&o, SASL_OAUTH_XOAUTH2, B64("auth=Bearer t\x01\x01")), SASL_OAUTH_E_USER);
}

Test(sasl_oauth, encode_round_trip)
{
    enum sasl_oauth_mech ms[] = {SASL_OAUTH_BEARER, SASL_OAUTH_XOAUTH2};
    for (int i = 0; i < 2; i++) {
        size_t n = 0;
        char *e = sasl_oauth_encode(&n, ms[i], "a,b=c@example.com", "tok.en-_~+/=");
        cr_assert_not_null(e);
        cr_assert_eq(n, strlen(e));
        struct sasl_oauth o;
        cr_assert_eq(sasl_oauth_decode(&o, ms[i], e, n), 0);
        cr_assert_str_eq(o.user, "a,b=c@example.com");
        cr_assert_str_eq(o.token, "tok.en-_~+/=");
        sasl_oauth_cleanup(&o);
        free(e);
    }
}

Test(sasl_oauth, error_json)
{
    char *e = sasl_oauth_error_b64("invalid_token", "openid \"mail\"", NULL);
    uint8_t raw[512];
    size_t n = 0;
    cr_assert(EVP_DecodeBase64(raw, &n, sizeof(raw), (const uint8_t *)e, strlen(e)));
    raw[n] = '\0';
    cr_assert_str_eq((char *)raw,
                     "{\"status\":\"invalid_token\",\"schemes\":\"bearer\",\"scope\":\"openid \\\"mail\\\"\"}");
    free(e);
}
