/* Fuzz target of the JSON record builder: the input gives a buffer size and
 * a list of values (each one length byte then its bytes), written as string
 * fields, plus a number and a boolean.  Properties: json_end's text is its
 * length, fits the buffer, and is one valid JSON object of valid UTF-8;
 * each string field reads back as its value with every byte that is not
 * UTF-8 replaced by U+FFFD; fields come in order, and when some did not fit
 * the object says "truncated":true.  json_escape returns the length the
 * whole literal needs, whatever the room. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"

#define FUZZ_MAX_VALUES 16
#define FUZZ_MIN_CAP 64 /* json_begin's minimum */

/* fuzz_clean writes what json promises for v: invalid UTF-8 bytes as U+FFFD
 * (an independent reading of RFC 3629); returns its length.  out has room
 * for 3 * n bytes. */
static size_t fuzz_clean(uint8_t *out, const uint8_t *v, size_t n)
{
    size_t o = 0, i = 0;
    while (i < n) {
        uint8_t c = v[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                                  : (c & 0xf8) == 0xf0 ? 4 : 0;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1fu : len == 3 ? c & 0x0fu : c & 0x07u;
        int ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) {
            ok = (v[i + k] & 0xc0) == 0x80;
            cp = cp << 6 | (v[i + k] & 0x3f);
        }
        if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
                   (len == 4 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) {
            ok = 0;
        }
        if (!ok) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(out + o, v + i, len);
        o += len;
        i += len;
    }
    return o;
}

struct fuzz_reader {
    const char *p, *end;
};

static int fuzz_hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* fuzz_string reads a JSON string into out (NULL: skip); returns its length
 * or aborts when it is not valid JSON. */
static size_t fuzz_string(struct fuzz_reader *r, uint8_t *out)
{
    size_t o = 0;
    if (r->p >= r->end || *r->p != '"') {
        abort();
    }
    r->p++;
    while (r->p < r->end && *r->p != '"') {
        uint8_t c = (uint8_t)*r->p;
        if (c < 0x20) {
            abort(); /* raw control characters are not JSON */
        }
        if (c == '\\') {
            if (r->end - r->p < 2) {
                abort();
            }
            char e = r->p[1];
            if (e == '"' || e == '\\' || e == '/') {
                c = (uint8_t)e;
                r->p += 2;
            } else if (e == 'u') {
                if (r->end - r->p < 6) {
                    abort();
                }
                int v = 0;
                for (int k = 2; k < 6; k++) {
                    int h = fuzz_hex(r->p[k]);
                    if (h < 0) {
                        abort();
                    }
                    v = v * 16 + h;
                }
                if (v >= 0x80) {
                    abort(); /* json only escapes ASCII controls */
                }
                c = (uint8_t)v;
                r->p += 6;
            } else {
                abort(); /* json writes no other escape */
            }
        } else {
            r->p++;
        }
        if (out != NULL) {
            out[o] = c;
        }
        o++;
    }
    if (r->p >= r->end) {
        abort();
    }
    r->p++;
    return o;
}

static void fuzz_expect(struct fuzz_reader *r, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, s, n) != 0) {
        abort();
    }
    r->p += n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *vals[FUZZ_MAX_VALUES];
    size_t lens[FUZZ_MAX_VALUES], num = 0, off = 2;
    char keys[FUZZ_MAX_VALUES][8];

    if (size < 2) {
        return 0;
    }
    size_t cap = FUZZ_MIN_CAP + (size_t)data[0] * 8;
    int with_extras = data[1] & 1;
    while (off < size && num < FUZZ_MAX_VALUES) {
        size_t n = data[off++];
        if (n > size - off) {
            n = size - off;
        }
        vals[num] = data + off;
        lens[num] = n;
        num++;
        off += n;
    }

    char *buf = malloc(cap);
    uint8_t *got = malloc(3 * 256 + 1), *want = malloc(3 * 256 + 1);
    if (buf == NULL || got == NULL || want == NULL) {
        goto done;
    }
    struct json j;
    json_begin(&j, buf, cap);
    for (size_t i = 0; i < num; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
        json_strn(&j, keys[i], (const char *)vals[i], lens[i]);
    }
    if (with_extras) {
        json_u64(&j, "n", UINT64_MAX);
        json_bool(&j, "b", 1);
    }
    size_t len = json_end(&j);
    if (len >= cap || strlen(buf) != len) {
        abort();
    }

    /* read it back */
    struct fuzz_reader r = {buf, buf + len};
    size_t next = 0;
    int truncated = 0, first = 1;
    fuzz_expect(&r, "{");
    while (r.p < r.end && *r.p != '}') {
        if (!first) {
            fuzz_expect(&r, ",");
        }
        first = 0;
        uint8_t key[16];
        size_t kl = fuzz_string(&r, NULL);
        if (kl >= sizeof(key)) {
            abort();
        }
        r.p -= kl + 2;
        fuzz_string(&r, key);
        key[kl] = '\0';
        fuzz_expect(&r, ":");
        if (strcmp((char *)key, "truncated") == 0) {
            fuzz_expect(&r, "true");
            truncated = 1;
        } else if (strcmp((char *)key, "n") == 0) {
            fuzz_expect(&r, "18446744073709551615");
        } else if (strcmp((char *)key, "b") == 0) {
            fuzz_expect(&r, "true");
        } else {
            /* fields come in order; one that did not fit may be skipped */
            size_t i = next;
            while (i < num && strcmp(keys[i], (char *)key) != 0) {
                i++;
            }
            if (i == num || truncated) {
                abort();
            }
            next = i + 1;
            size_t gl = fuzz_string(&r, got);
            size_t wl = fuzz_clean(want, vals[i], lens[i]);
            if (gl != wl || memcmp(got, want, gl) != 0) {
                abort();
            }
        }
    }
    fuzz_expect(&r, "}");
    if (r.p != r.end || (next < num && !truncated)) {
        abort(); /* trailing bytes, or a field lost without saying so */
    }

    /* json_escape's length does not depend on the room */
    for (size_t i = 0; i < num; i++) {
        char small[8];
        size_t need = json_escape(small, sizeof(small), (const char *)vals[i], lens[i]);
        char *full = malloc(need + 1);
        if (full == NULL) {
            continue;
        }
        if (json_escape(full, need + 1, (const char *)vals[i], lens[i]) != need ||
            strlen(full) != need || strlen(small) >= sizeof(small) ||
            strncmp(full, small, strlen(small)) != 0) {
            abort();
        }
        free(full);
    }
done:
    free(buf);
    free(got);
    free(want);
    return 0;
}
