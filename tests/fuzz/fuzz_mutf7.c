/* Fuzz target of modified UTF-7.  The input is read both ways:
 * - as a mailbox name: a decoded name is strict UTF-8 without NUL and
 *   encodes back to exactly the input (one spelling per name); a plain name
 *   decodes to itself;
 * - as UTF-8: it encodes if and only if it is strict UTF-8 without NUL, to
 *   printable ASCII that decodes back to the input: decode(encode(x)) == x.
 * Both directions fit in strlen(result) + 1 bytes and fail cleanly, with a
 * NUL-terminated prefix of the result, in one byte less. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/mutf7.h"

typedef int (*fuzz_conv_fn)(char *out, size_t out_len, const char *in, size_t in_len);

/* fuzz_utf8_ok: strict UTF-8 (RFC 3629) without NUL, written independently of
 * the code under test. */
static int fuzz_utf8_ok(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp;
        if (c == 0) {
            return 0;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            n = 2, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + n > len) {
            return 0;
        }
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
        i += n;
    }
    return 1;
}

/* fuzz_tight converts again into exactly enough room, then one byte less. */
static void fuzz_tight(fuzz_conv_fn fn, const char *want, const uint8_t *data, size_t size)
{
    size_t n = strlen(want);
    char *buf = malloc(n + 1);
    if (buf == NULL) {
        return;
    }
    if (fn(buf, n + 1, (const char *)data, size) != 0 || strcmp(buf, want) != 0) {
        abort();
    }
    if (n > 0 && (fn(buf, n, (const char *)data, size) != -1 || strlen(buf) >= n ||
                  strncmp(buf, want, strlen(buf)) != 0)) {
        abort();
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cap = 5 * size + 1;
    char *dec = malloc(cap), *enc = malloc(cap), *back = malloc(cap);

    if (dec == NULL || enc == NULL || back == NULL) {
        goto done;
    }
    /* as a mailbox name */
    int r = mutf7_decode(dec, cap, (const char *)data, size);
    if (memchr(dec, '\0', cap) == NULL) {
        abort();
    }
    if (mutf7_is_plain((const char *)data, size) &&
        (r != 0 || strlen(dec) != size || memcmp(dec, data, size) != 0)) {
        abort();
    }
    if (r == 0) {
        size_t n = strlen(dec);
        if (!fuzz_utf8_ok((const uint8_t *)dec, n) ||
            mutf7_encode(back, cap, dec, n) != 0 || strlen(back) != size ||
            memcmp(back, data, size) != 0) {
            abort();
        }
        fuzz_tight(mutf7_decode, dec, data, size);
    }
    /* as UTF-8 */
    r = mutf7_encode(enc, cap, (const char *)data, size);
    if (r != (fuzz_utf8_ok(data, size) ? 0 : -1) || memchr(enc, '\0', cap) == NULL) {
        abort();
    }
    if (r == 0) {
        size_t n = strlen(enc);
        for (size_t i = 0; i < n; i++) {
            if (enc[i] < 0x20 || enc[i] > 0x7e) {
                abort();
            }
        }
        if (mutf7_decode(back, cap, enc, n) != 0 || strlen(back) != size ||
            memcmp(back, data, size) != 0) {
            abort();
        }
        fuzz_tight(mutf7_encode, enc, data, size);
    }
done:
    free(dec);
    free(enc);
    free(back);
    return 0;
}
