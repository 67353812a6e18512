#include "common/sasl_plain.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/base64.h>

#include "common/b64.h"
#include "common/secret.h"

/* sasl_plain_b64_canonical: the bits a padded last quantum leaves over are
 * zero (RFC 4648 section 3.5), so that a message has one spelling; the
 * decoder itself ignores them.  b64_len is a non-zero multiple of 4. */
static int sasl_plain_b64_canonical(const char *b64, size_t b64_len)
{
    const char *q = b64 + b64_len - 4;
    int v;
    if (q[2] == '=') {
        v = b64_digit((unsigned char)q[1], '+', '/');
        return v >= 0 && (v & 0x0f) == 0;
    }
    if (q[3] == '=') {
        v = b64_digit((unsigned char)q[2], '+', '/');
        return v >= 0 && (v & 0x03) == 0;
    }
    return 1;
}

int sasl_plain_decode(struct sasl_plain *out, const char *b64, size_t b64_len)
{
    size_t max_len = 0, len = 0;
    uint8_t *buf;
    const uint8_t *nul1, *nul2;

    memset(out, 0, sizeof(*out));
    if (b64_len > SASL_PLAIN_MAX_B64_LEN) {
        return SASL_PLAIN_E_TOO_LONG;
    }
    if (b64_len == 0) {
        return SASL_PLAIN_E_FORMAT; /* an empty message has no NULs */
    }
    if (!EVP_DecodedLength(&max_len, b64_len) || b64_len % 4 != 0 ||
        !sasl_plain_b64_canonical(b64, b64_len)) {
        return SASL_PLAIN_E_BASE64;
    }
    buf = malloc(max_len + 1);
    if (buf == NULL) {
        return SASL_PLAIN_E_NOMEM;
    }
    if (!EVP_DecodeBase64(buf, &len, max_len, (const uint8_t *)b64, b64_len)) {
        /* the groups before the bad one were decoded already */
        secret_free(buf, max_len + 1);
        return SASL_PLAIN_E_BASE64;
    }
    buf[len] = '\0';
    nul1 = memchr(buf, '\0', len);
    nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - buf)) : NULL;
    if (nul1 == NULL || nul2 == NULL ||
        memchr(nul2 + 1, '\0', len - (size_t)(nul2 + 1 - buf)) != NULL) {
        secret_free(buf, max_len + 1);
        return SASL_PLAIN_E_FORMAT;
    }
    if (nul2 == nul1 + 1 || (size_t)(nul2 + 1 - buf) == len) {
        secret_free(buf, max_len + 1);
        return SASL_PLAIN_E_EMPTY;
    }
    out->buf = (char *)buf;
    out->buf_len = max_len + 1;
    out->authzid = (char *)buf;
    out->authcid = (char *)nul1 + 1;
    out->passwd = (char *)nul2 + 1;
    return 0;
}

void sasl_plain_cleanup(struct sasl_plain *p)
{
    secret_free(p->buf, p->buf_len);
    memset(p, 0, sizeof(*p));
}

const char *sasl_plain_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case SASL_PLAIN_E_BASE64:
        return "invalid base64";
    case SASL_PLAIN_E_FORMAT:
        return "expected authzid NUL authcid NUL password";
    case SASL_PLAIN_E_EMPTY:
        return "empty user name or password";
    case SASL_PLAIN_E_TOO_LONG:
        return "message too long";
    case SASL_PLAIN_E_NOMEM:
        return "out of memory";
    default:
        return "unknown error";
    }
}

char *sasl_plain_encode(size_t *out_len, const char *authzid, const char *authcid,
                        const char *passwd)
{
    size_t zl = strlen(authzid), cl = strlen(authcid), pl = strlen(passwd);
    size_t raw_len = zl + 1 + cl + 1 + pl;
    size_t b64_len = 0;
    uint8_t *raw = malloc(raw_len);
    char *b64 = NULL;

    if (raw == NULL || !EVP_EncodedLength(&b64_len, raw_len)) {
        free(raw); /* nothing copied into it yet */
        return NULL;
    }
    memcpy(raw, authzid, zl);
    raw[zl] = '\0';
    memcpy(raw + zl + 1, authcid, cl);
    raw[zl + 1 + cl] = '\0';
    memcpy(raw + zl + 2 + cl, passwd, pl);
    b64 = malloc(b64_len);
    if (b64 != NULL) {
        *out_len = EVP_EncodeBlock((uint8_t *)b64, raw, raw_len);
    }
    secret_free(raw, raw_len);
    return b64;
}
