#include "common/mutf7.h"

#include <stdint.h>

#include "common/b64.h"

int mutf7_is_plain(const char *in, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '&' || c < 0x20 || c > 0x7e) {
            return 0;
        }
    }
    return 1;
}

/* mutf7_put writes code point cp as UTF-8; 0 or -1 when out is full. */
static int mutf7_put(char *out, size_t out_len, size_t *o, uint32_t cp)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    if (*o + n >= out_len) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        out[(*o)++] = (char)b[i];
    }
    return 0;
}

/* mutf7_is_direct: printable ASCII, which stands for itself. */
static int mutf7_is_direct(uint32_t c)
{
    return c >= 0x20 && c <= 0x7e;
}

int mutf7_decode(char *out, size_t out_len, const char *in, size_t in_len)
{
    size_t o = 0, i = 0;
    int after_run = 0; /* the last thing read was a shifted run's "-" */

    if (out_len == 0) {
        return -1;
    }
    while (i < in_len) {
        unsigned char c = (unsigned char)in[i];
        if (!mutf7_is_direct(c)) {
            goto fail;
        }
        if (c != '&') {
            if (mutf7_put(out, out_len, &o, c) != 0) {
                goto fail;
            }
            i++;
            after_run = 0;
            continue;
        }
        i++;
        if (i < in_len && in[i] == '-') { /* "&-" is "&" */
            if (mutf7_put(out, out_len, &o, '&') != 0) {
                goto fail;
            }
            i++;
            after_run = 0;
            continue;
        }
        if (after_run) {
            goto fail; /* "-&" between two runs: they are one run */
        }
        uint32_t bits = 0, high = 0;
        unsigned nbits = 0;
        size_t units = 0;
        while (i < in_len && in[i] != '-') {
            int v = b64_digit((unsigned char)in[i], '+', ',');
            if (v < 0) {
                goto fail;
            }
            bits = (bits << 6) | (uint32_t)v;
            nbits += 6;
            i++;
            if (nbits < 16) {
                continue;
            }
            nbits -= 16;
            uint32_t u = (bits >> nbits) & 0xffff;
            bits &= (1u << nbits) - 1;
            units++;
            if (high != 0) {
                if (u < 0xdc00 || u > 0xdfff) {
                    goto fail;
                }
                u = 0x10000 + ((high - 0xd800) << 10) + (u - 0xdc00);
                high = 0;
            } else if (u >= 0xd800 && u <= 0xdbff) {
                high = u;
                continue;
            } else if (u >= 0xdc00 && u <= 0xdfff) {
                goto fail;
            }
            /* printable ASCII stands for itself; U+0000 would end the C
             * string the name becomes (an audit record would have shown
             * "INBOX" for "INBOX&AAA-x") */
            if (u == 0 || mutf7_is_direct(u)) {
                goto fail;
            }
            if (mutf7_put(out, out_len, &o, u) != 0) {
                goto fail;
            }
        }
        /* the run must end with "-", hold whole units, and leave zero bits */
        if (i >= in_len || units == 0 || high != 0 || nbits >= 6 || bits != 0) {
            goto fail;
        }
        i++; /* the '-' */
        after_run = 1;
    }
    out[o] = '\0';
    return 0;
fail:
    out[o] = '\0';
    return -1;
}

static const char mutf7_b64_digits[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* mutf7_emit appends one byte to out, keeping room for the NUL; 0 or -1. */
static int mutf7_emit(char *out, size_t out_len, size_t *o, char c)
{
    if (*o + 1 >= out_len) {
        return -1;
    }
    out[(*o)++] = c;
    return 0;
}

/* mutf7_utf8_next reads one code point of strict UTF-8 at in[*i], moving *i
 * past it; returns it, or -1 for a malformed sequence. */
static int32_t mutf7_utf8_next(const unsigned char *in, size_t len, size_t *i)
{
    unsigned char c = in[*i];
    uint32_t cp, min;
    size_t n;

    if (c < 0x80) {
        (*i)++;
        return c;
    } else if (c >= 0xc2 && c <= 0xdf) {
        n = 1, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3, cp = c & 0x07, min = 0x10000;
    } else {
        return -1;
    }
    if (len - *i - 1 < n) {
        return -1;
    }
    for (size_t k = 1; k <= n; k++) {
        unsigned char d = in[*i + k];
        if ((d & 0xc0) != 0x80) {
            return -1;
        }
        cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return -1;
    }
    *i += n + 1;
    return (int32_t)cp;
}

int mutf7_encode(char *out, size_t out_len, const char *in, size_t in_len)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, i = 0;

    if (out_len == 0) {
        return -1;
    }
    while (i < in_len) {
        if (mutf7_is_direct(s[i])) {
            if (mutf7_emit(out, out_len, &o, (char)s[i]) != 0 ||
                (s[i] == '&' && mutf7_emit(out, out_len, &o, '-') != 0)) {
                goto fail;
            }
            i++;
            continue;
        }
        /* one run for everything up to the next printable ASCII */
        uint32_t bits = 0;
        unsigned nbits = 0;
        if (mutf7_emit(out, out_len, &o, '&') != 0) {
            goto fail;
        }
        while (i < in_len && !mutf7_is_direct(s[i])) {
            int32_t cp = mutf7_utf8_next(s, in_len, &i);
            uint32_t units[2];
            size_t num_units = 1;
            if (cp <= 0) {
                goto fail; /* malformed, or a NUL */
            }
            if (cp >= 0x10000) {
                units[0] = 0xd800 + (((uint32_t)cp - 0x10000) >> 10);
                units[1] = 0xdc00 + (((uint32_t)cp - 0x10000) & 0x3ff);
                num_units = 2;
            } else {
                units[0] = (uint32_t)cp;
            }
            for (size_t k = 0; k < num_units; k++) {
                bits = (bits << 16) | units[k];
                nbits += 16;
                while (nbits >= 6) {
                    nbits -= 6;
                    if (mutf7_emit(out, out_len, &o, mutf7_b64_digits[(bits >> nbits) & 0x3f]) != 0) {
                        goto fail;
                    }
                }
                bits &= (1u << nbits) - 1;
            }
        }
        if (nbits > 0 &&
            mutf7_emit(out, out_len, &o, mutf7_b64_digits[(bits << (6 - nbits)) & 0x3f]) != 0) {
            goto fail;
        }
        if (mutf7_emit(out, out_len, &o, '-') != 0) {
            goto fail;
        }
    }
    out[o] = '\0';
    return 0;
fail:
    out[o] = '\0';
    return -1;
}
