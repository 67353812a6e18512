#include "common/json.h"

#include <stdio.h>
#include <string.h>

/* bytes kept free at the end of buf for ',"truncated":true}' and the NUL */
#define JSON_RESERVE 24

/* the field json_end adds to an object that lost fields */
#define JSON_MARK "\"truncated\":true"
#define JSON_MARK_LEN (sizeof(JSON_MARK) - 1)

void json_begin(struct json *j, char *buf, size_t cap)
{
    j->buf = buf;
    j->cap = cap;
    j->len = 1;
    j->mark = 1;
    j->fields = 0;
    j->full = 0;
    buf[0] = '{';
    buf[1] = '\0';
}

size_t json_utf8_decode(uint32_t *out_cp, const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t need;
    uint32_t min, cp;
    if (c < 0x80) {
        *out_cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
        min = 0x80;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        min = 0x800;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        min = 0x10000;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < need) {
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    *out_cp = cp;
    return need;
}

/* json_utf8_len: the length of the valid UTF-8 sequence at p (1 to 4), or 0. */
static size_t json_utf8_len(const unsigned char *p, size_t n)
{
    uint32_t cp;
    return json_utf8_decode(&cp, p, n);
}

size_t json_escape(char *out, size_t cap, const char *val, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)val;
    size_t o = 0;
    char tmp[8];

#define JSON_PUT(s, n)                                                                            \
    do {                                                                                          \
        for (size_t k_ = 0; k_ < (n); k_++) {                                                     \
            if (o + 1 < cap) {                                                                    \
                out[o] = (s)[k_];                                                                 \
            }                                                                                     \
            o++;                                                                                  \
        }                                                                                         \
    } while (0)

    JSON_PUT("\"", 1);
    for (size_t i = 0; i < len;) {
        unsigned c = p[i];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            JSON_PUT(tmp, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            tmp[0] = '\\';
            tmp[1] = 'u';
            tmp[2] = '0';
            tmp[3] = '0';
            tmp[4] = hex[c >> 4];
            tmp[5] = hex[c & 15];
            JSON_PUT(tmp, 6);
            i++;
        } else if (c < 0x80) {
            JSON_PUT(p + i, 1);
            i++;
        } else {
            size_t n = json_utf8_len(p + i, len - i);
            if (n == 0) {
                JSON_PUT("\xef\xbf\xbd", 3); /* U+FFFD */
                i++;
            } else {
                JSON_PUT(p + i, n);
                i += n;
            }
        }
    }
    JSON_PUT("\"", 1);
#undef JSON_PUT
    if (cap > 0) {
        out[o < cap ? o : cap - 1] = '\0';
    }
    return o;
}

/* json_key starts a field; 0, or -1 when even the key does not fit. */
static int json_key(struct json *j, const char *key)
{
    size_t kl = strlen(key);
    size_t n = kl + 3 + (j->fields > 0 ? 1 : 0); /* [,]"key": */
    j->mark = j->len;
    if (j->len + n + JSON_RESERVE >= j->cap) {
        j->full = 1;
        return -1;
    }
    char *p = j->buf + j->len;
    if (j->fields > 0) {
        *p++ = ',';
    }
    *p++ = '"';
    memcpy(p, key, kl);
    p += kl;
    *p++ = '"';
    *p++ = ':';
    *p = '\0';
    j->len += n;
    return 0;
}

/* json_commit keeps the field just written if it fits, else drops it. */
static void json_commit(struct json *j, size_t value_len)
{
    if (j->len + value_len + JSON_RESERVE >= j->cap) {
        j->len = j->mark;
        j->buf[j->len] = '\0';
        j->full = 1;
        return;
    }
    j->len += value_len;
    j->fields++;
}

void json_strn(struct json *j, const char *key, const char *val, size_t len)
{
    if (json_key(j, key) != 0) {
        return;
    }
    json_commit(j, json_escape(j->buf + j->len, j->cap - j->len, val, len));
}

void json_str(struct json *j, const char *key, const char *val)
{
    json_strn(j, key, val, strlen(val));
}

void json_raw(struct json *j, const char *key, const char *json_text)
{
    if (json_key(j, key) != 0) {
        return;
    }
    size_t n = strlen(json_text);
    if (j->len + n + 2 < j->cap) {
        memcpy(j->buf + j->len, json_text, n + 1);
    }
    json_commit(j, n);
}

void json_u64(struct json *j, const char *key, uint64_t val)
{
    char num[24];
    char *p = num + sizeof(num) - 1;
    *p = '\0';
    do {
        *--p = (char)('0' + val % 10);
        val /= 10;
    } while (val > 0);
    json_raw(j, key, p);
}

void json_bool(struct json *j, const char *key, int val)
{
    json_raw(j, key, val ? "true" : "false");
}

void json_fields(struct json *j, const char *fields)
{
    size_t n = strlen(fields);
    /* fields of an object that was itself cut end in its mark: that mark
     * becomes this object's, so that the record has one "truncated" key */
    if (n >= JSON_MARK_LEN && memcmp(fields + n - JSON_MARK_LEN, JSON_MARK, JSON_MARK_LEN) == 0) {
        n -= JSON_MARK_LEN;
        if (n > 0 && fields[n - 1] == ',') {
            n--;
        }
        j->full = 1;
    }
    if (n == 0) {
        return;
    }
    size_t comma = j->fields > 0 ? 1 : 0;
    if (j->len + comma + n + JSON_RESERVE >= j->cap) {
        j->full = 1;
        return;
    }
    if (comma) {
        j->buf[j->len++] = ',';
    }
    memcpy(j->buf + j->len, fields, n);
    j->len += n;
    j->buf[j->len] = '\0';
    j->fields++;
}

size_t json_end(struct json *j)
{
    if (j->full) {
        /* fields stop JSON_RESERVE bytes short of cap: room for this.  The
         * comma only follows a field: an object whose every field was left
         * out is {"truncated":true}, not {,"truncated":true}, which broke
         * every record that took such an object's fields (json_fields). */
        size_t n = JSON_MARK_LEN;
        if (j->fields > 0) {
            j->buf[j->len++] = ',';
        }
        memcpy(j->buf + j->len, JSON_MARK, n);
        j->len += n;
    }
    j->buf[j->len++] = '}';
    j->buf[j->len] = '\0';
    return j->len;
}
