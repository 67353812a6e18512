#include "common/mutf7.h"

#include <stdint.h>

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

static int mutf7_b64(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == ',') {
        return 63;
    }
    return -1;
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

int mutf7_decode(char *out, size_t out_len, const char *in, size_t in_len)
{
    size_t o = 0, i = 0;
    if (out_len == 0) {
        return -1;
    }
    out[0] = '\0';
    while (i < in_len) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x20 || c > 0x7e) {
            return -1;
        }
        if (c != '&') {
            if (mutf7_put(out, out_len, &o, c) != 0) {
                out[o] = '\0';
                return -1;
            }
            i++;
            continue;
        }
        i++;
        if (i < in_len && in[i] == '-') { /* "&-" is "&" */
            if (mutf7_put(out, out_len, &o, '&') != 0) {
                out[o] = '\0';
                return -1;
            }
            i++;
            continue;
        }
        uint32_t bits = 0, high = 0;
        unsigned nbits = 0;
        size_t units = 0;
        while (i < in_len && in[i] != '-') {
            int v = mutf7_b64((unsigned char)in[i]);
            if (v < 0) {
                return -1;
            }
            bits = (bits << 6) | (uint32_t)v;
            nbits += 6;
            i++;
            if (nbits >= 16) {
                nbits -= 16;
                uint32_t u = (bits >> nbits) & 0xffff;
                bits &= (1u << nbits) - 1;
                units++;
                if (high != 0) {
                    if (u < 0xdc00 || u > 0xdfff) {
                        return -1;
                    }
                    u = 0x10000 + ((high - 0xd800) << 10) + (u - 0xdc00);
                    high = 0;
                } else if (u >= 0xd800 && u <= 0xdbff) {
                    high = u;
                    continue;
                } else if (u >= 0xdc00 && u <= 0xdfff) {
                    return -1;
                }
                if (mutf7_put(out, out_len, &o, u) != 0) {
                    out[o] = '\0';
                    return -1;
                }
            }
        }
        /* the run must end with "-", hold whole units, and leave zero bits */
        if (i >= in_len || units == 0 || high != 0 || nbits >= 6 || bits != 0) {
            out[o] = '\0';
            return -1;
        }
        i++; /* the '-' */
    }
    out[o] = '\0';
    return 0;
}
