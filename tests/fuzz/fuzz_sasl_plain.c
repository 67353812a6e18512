/* Fuzz target of SASL PLAIN.  The input is used twice:
 * - as base64 a client sends: a decoded message has a non-empty authcid and
 *   password, three NUL-terminated parts inside the buffer that fill it, and
 *   encodes back to exactly the input (strict base64 has one spelling); a
 *   refusal leaves the struct zeroed and says why;
 * - split at its first two NULs into authzid, authcid and password, which
 *   are encoded and decoded again: decode(encode(x)) == x. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/sasl_plain.h"
#include "common/secret.h"

static int fuzz_is_zero(const struct sasl_plain *p)
{
    return p->authzid == NULL && p->authcid == NULL && p->passwd == NULL && p->buf == NULL &&
           p->buf_len == 0;
}

static void fuzz_decode(const uint8_t *data, size_t size)
{
    struct sasl_plain p;
    int r = sasl_plain_decode(&p, (const char *)data, size);

    if (r != 0) {
        if (r > 0 || !fuzz_is_zero(&p) || strcmp(sasl_plain_strerror(r), "unknown error") == 0 ||
            (size > SASL_PLAIN_MAX_B64_LEN && r != SASL_PLAIN_E_TOO_LONG)) {
            abort();
        }
        sasl_plain_cleanup(&p);
        return;
    }
    size_t zl = strlen(p.authzid), cl = strlen(p.authcid), pl = strlen(p.passwd);
    if (size > SASL_PLAIN_MAX_B64_LEN || p.buf == NULL || p.authzid != p.buf ||
        p.authcid != p.buf + zl + 1 || p.passwd != p.authcid + cl + 1 ||
        zl + 1 + cl + 1 + pl >= p.buf_len || p.buf[zl + 1 + cl + 1 + pl] != '\0' || cl == 0 ||
        pl == 0 || zl + 1 + cl + 1 + pl > size / 4 * 3) {
        abort();
    }
    size_t b64_len = 0;
    char *b64 = sasl_plain_encode(&b64_len, p.authzid, p.authcid, p.passwd);
    if (b64 == NULL || b64_len != size || memcmp(b64, data, size) != 0 || b64[b64_len] != '\0') {
        abort(); /* another spelling of the same message was accepted */
    }
    secret_free(b64, b64_len + 1);
    sasl_plain_cleanup(&p);
    if (!fuzz_is_zero(&p)) {
        abort();
    }
}

static void fuzz_encode(const uint8_t *data, size_t size)
{
    char *parts[3] = {NULL, NULL, NULL};
    size_t off = 0;

    for (int i = 0; i < 3; i++) {
        const uint8_t *end = i < 2 ? memchr(data + off, '\0', size - off) : NULL;
        size_t n = end != NULL ? (size_t)(end - (data + off)) : size - off;
        parts[i] = malloc(n + 1);
        if (parts[i] == NULL) {
            goto done;
        }
        memcpy(parts[i], data + off, n);
        parts[i][n] = '\0';
        off += n + (end != NULL);
    }
    size_t b64_len = 0;
    char *b64 = sasl_plain_encode(&b64_len, parts[0], parts[1], parts[2]);
    if (b64 == NULL) {
        goto done;
    }
    size_t raw_len = strlen(parts[0]) + strlen(parts[1]) + strlen(parts[2]) + 2;
    if (b64_len != strlen(b64) || b64_len != (raw_len + 2) / 3 * 4) {
        abort();
    }
    struct sasl_plain p;
    int r = sasl_plain_decode(&p, b64, b64_len);
    if (b64_len > SASL_PLAIN_MAX_B64_LEN) {
        if (r != SASL_PLAIN_E_TOO_LONG) {
            abort();
        }
    } else if (parts[1][0] == '\0' || parts[2][0] == '\0') {
        if (r != SASL_PLAIN_E_EMPTY) {
            abort();
        }
    } else if (r != 0 || strcmp(p.authzid, parts[0]) != 0 || strcmp(p.authcid, parts[1]) != 0 ||
               strcmp(p.passwd, parts[2]) != 0) {
        abort();
    }
    sasl_plain_cleanup(&p);
    free(b64);
done:
    for (int i = 0; i < 3; i++) {
        free(parts[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_decode(data, size);
    fuzz_encode(data, size);
    return 0;
}
