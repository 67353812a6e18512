#include "common/json_check.h"

#include "common/json.h"

#include <stdint.h>
#include <string.h>

struct jc {
    const unsigned char *p;
    size_t len;
    size_t pos;        /* next byte to read */
    const char *why;   /* the first fault, or NULL */
    int eof;           /* the first fault is the text's end: more text could mend it */
};

static int jc_fail(struct jc *c, const char *why)
{
    if (c->why == NULL) {
        c->why = why;
        c->eof = c->pos >= c->len;
    }
    return -1;
}

/* jc_fail_eof: a fault that more text could mend (a cut escape, say) */
static int jc_fail_eof(struct jc *c, const char *why)
{
    if (c->why == NULL) {
        c->why = why;
        c->eof = 1;
    }
    return -1;
}

/* jc_hex_prefix: p[0..n) are hex digits (a cut \u escape) */
static int jc_hex_prefix(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f') ||
              (p[i] >= 'A' && p[i] <= 'F'))) {
            return 0;
        }
    }
    return 1;
}

/* jc_utf8_cut: p[0..n) is the start of a UTF-8 sequence that the text's end cut */
static int jc_utf8_cut(const unsigned char *p, size_t n)
{
    size_t need = p[0] >= 0xc2 && p[0] <= 0xdf ? 2 : p[0] >= 0xe0 && p[0] <= 0xef ? 3
                : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : 0;
    if (n >= need) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    return 1;
}

static void jc_ws(struct jc *c)
{
    while (c->pos < c->len) {
        unsigned char ch = c->p[c->pos];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
            return;
        }
        c->pos++;
    }
}

static int jc_hex(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

/* jc_u4 reads the 4 hex digits of a \u escape at p; the value, or -1. */
static long jc_u4(const unsigned char *p, size_t avail)
{
    if (avail < 4) {
        return -1;
    }
    long v = 0;
    for (size_t i = 0; i < 4; i++) {
        int h = jc_hex(p[i]);
        if (h < 0) {
            return -1;
        }
        v = v * 16 + h;
    }
    return v;
}

/* jc_utf8 decodes the UTF-8 sequence at p (n bytes available, p[0] not
 * ASCII); its length (2 to 4) with *out_cp, or 0 when it is not valid UTF-8.
 * The same rules as the records are built by (json_utf8_decode). */
static size_t jc_utf8(uint32_t *out_cp, const unsigned char *p, size_t n)
{
    return json_utf8_decode(out_cp, p, n);
}

/* jc_string checks the string literal at pos (its opening quote) and moves
 * past its closing quote; 0 or -1. */
static int jc_string(struct jc *c)
{
    if (c->pos >= c->len || c->p[c->pos] != '"') {
        return jc_fail(c, "a string was expected");
    }
    c->pos++;
    while (c->pos < c->len) {
        unsigned char ch = c->p[c->pos];
        if (ch == '"') {
            c->pos++;
            return 0;
        }
        if (ch < 0x20) {
            return jc_fail(c, "a control character in a string");
        }
        if (ch == '\\') {
            if (c->pos + 1 >= c->len) {
                return jc_fail_eof(c, "a string is not closed");
            }
            unsigned char e = c->p[c->pos + 1];
            if (strchr("\"\\/bfnrt", e) != NULL && e != '\0') {
                c->pos += 2;
                continue;
            }
            if (e != 'u') {
                return jc_fail(c, "an unknown escape in a string");
            }
            size_t avail = c->len - c->pos - 2;
            long u = jc_u4(c->p + c->pos + 2, avail);
            if (u < 0 && avail < 4 && jc_hex_prefix(c->p + c->pos + 2, avail)) {
                return jc_fail_eof(c, "a string is not closed");
            }
            if (u < 0) {
                return jc_fail(c, "a bad \\u escape");
            }
            if (u >= 0xdc00 && u <= 0xdfff) {
                return jc_fail(c, "a lone low surrogate escape");
            }
            c->pos += 6;
            if (u >= 0xd800 && u <= 0xdbff) {
                long lo = -1;
                size_t rest = c->len - c->pos;
                if (rest < 6 && memcmp(c->p + c->pos, "\\u", rest < 2 ? rest : 2) == 0 &&
                    (rest <= 2 || jc_hex_prefix(c->p + c->pos + 2, rest - 2))) {
                    return jc_fail_eof(c, "a string is not closed");
                }
                if (rest >= 6 && c->p[c->pos] == '\\' && c->p[c->pos + 1] == 'u') {
                    lo = jc_u4(c->p + c->pos + 2, rest - 2);
                }
                if (lo < 0xdc00 || lo > 0xdfff) {
                    return jc_fail(c, "a lone high surrogate escape");
                }
                c->pos += 6;
            }
            continue;
        }
        if (ch < 0x80) {
            c->pos++;
            continue;
        }
        uint32_t cp;
        size_t n = jc_utf8(&cp, c->p + c->pos, c->len - c->pos);
        if (n == 0 && jc_utf8_cut(c->p + c->pos, c->len - c->pos)) {
            return jc_fail_eof(c, "a string is not closed");
        }
        if (n == 0) {
            return jc_fail(c, "invalid UTF-8");
        }
        c->pos += n;
    }
    return jc_fail(c, "a string is not closed");
}

/* jc_name_next decodes the next code point of a checked string literal's
 * content at *i; -1 at its closing quote. */
static long jc_name_next(const unsigned char *p, size_t *i)
{
    unsigned char ch = p[*i];
    if (ch == '"') {
        return -1;
    }
    if (ch == '\\') {
        unsigned char e = p[*i + 1];
        static const char from[] = "\"\\/bfnrt";
        static const char to[] = "\"\\/\b\f\n\r\t";
        if (e != 'u') {
            *i += 2;
            return (unsigned char)to[strchr(from, e) - from];
        }
        long u = jc_u4(p + *i + 2, 4);
        *i += 6;
        if (u >= 0xd800 && u <= 0xdbff) {
            long lo = jc_u4(p + *i + 2, 4);
            *i += 6;
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
        }
        return u;
    }
    if (ch < 0x80) {
        *i += 1;
        return ch;
    }
    uint32_t cp = 0;
    *i += jc_utf8(&cp, p + *i, 4);
    return (long)cp;
}

/* jc_same_name: the checked literals at a and b (their opening quotes) name
 * the same member, escapes decoded ("\u0061" is "a"). */
static int jc_same_name(const unsigned char *p, size_t a, size_t b)
{
    size_t i = a + 1, k = b + 1;
    for (;;) {
        long x = jc_name_next(p, &i);
        long y = jc_name_next(p, &k);
        if (x != y) {
            return 0;
        }
        if (x < 0) {
            return 1;
        }
    }
}

static int jc_value(struct jc *c, int depth);

static int jc_object(struct jc *c, int depth)
{
    size_t names[JSON_CHECK_MAX_MEMBERS]; /* offsets of the member names so far */
    size_t num_names = 0;
    if (depth >= JSON_CHECK_MAX_DEPTH) {
        return jc_fail(c, "nested too deep");
    }
    c->pos++; /* '{' */
    jc_ws(c);
    if (c->pos < c->len && c->p[c->pos] == '}') {
        c->pos++;
        return 0;
    }
    for (;;) {
        jc_ws(c);
        size_t at = c->pos;
        if (jc_string(c) != 0) {
            return -1;
        }
        for (size_t i = 0; i < num_names; i++) {
            if (jc_same_name(c->p, names[i], at)) {
                c->pos = at;
                return jc_fail(c, "a member name twice in one object");
            }
        }
        if (num_names == JSON_CHECK_MAX_MEMBERS) {
            c->pos = at;
            return jc_fail(c, "too many members in one object");
        }
        names[num_names++] = at;
        jc_ws(c);
        if (c->pos >= c->len || c->p[c->pos] != ':') {
            return jc_fail(c, "':' was expected");
        }
        c->pos++;
        if (jc_value(c, depth + 1) != 0) {
            return -1;
        }
        jc_ws(c);
        if (c->pos < c->len && c->p[c->pos] == ',') {
            c->pos++;
            continue;
        }
        if (c->pos < c->len && c->p[c->pos] == '}') {
            c->pos++;
            return 0;
        }
        return jc_fail(c, "',' or '}' was expected");
    }
}

static int jc_array(struct jc *c, int depth)
{
    if (depth >= JSON_CHECK_MAX_DEPTH) {
        return jc_fail(c, "nested too deep");
    }
    c->pos++; /* '[' */
    jc_ws(c);
    if (c->pos < c->len && c->p[c->pos] == ']') {
        c->pos++;
        return 0;
    }
    for (;;) {
        if (jc_value(c, depth + 1) != 0) {
            return -1;
        }
        jc_ws(c);
        if (c->pos < c->len && c->p[c->pos] == ',') {
            c->pos++;
            continue;
        }
        if (c->pos < c->len && c->p[c->pos] == ']') {
            c->pos++;
            return 0;
        }
        return jc_fail(c, "',' or ']' was expected");
    }
}

static size_t jc_digits(struct jc *c)
{
    size_t n = 0;
    while (c->pos < c->len && c->p[c->pos] >= '0' && c->p[c->pos] <= '9') {
        c->pos++;
        n++;
    }
    return n;
}

/* jc_number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int jc_number(struct jc *c)
{
    if (c->p[c->pos] == '-') {
        c->pos++;
    }
    if (c->pos < c->len && c->p[c->pos] == '0') {
        c->pos++;
    } else if (jc_digits(c) == 0) {
        return jc_fail(c, "a bad number");
    }
    if (c->pos < c->len && c->p[c->pos] == '.') {
        c->pos++;
        if (jc_digits(c) == 0) {
            return jc_fail(c, "a bad number");
        }
    }
    if (c->pos < c->len && (c->p[c->pos] == 'e' || c->p[c->pos] == 'E')) {
        c->pos++;
        if (c->pos < c->len && (c->p[c->pos] == '+' || c->p[c->pos] == '-')) {
            c->pos++;
        }
        if (jc_digits(c) == 0) {
            return jc_fail(c, "a bad number");
        }
    }
    return 0;
}

static int jc_word(struct jc *c, const char *w)
{
    size_t n = strlen(w);
    size_t rest = c->len - c->pos;
    if (rest < n && memcmp(c->p + c->pos, w, rest) == 0) {
        return jc_fail_eof(c, "a value was expected");
    }
    if (rest < n || memcmp(c->p + c->pos, w, n) != 0) {
        return jc_fail(c, "a value was expected");
    }
    c->pos += n;
    return 0;
}

static int jc_value(struct jc *c, int depth)
{
    jc_ws(c);
    if (c->pos >= c->len) {
        return jc_fail(c, "a value was expected");
    }
    switch (c->p[c->pos]) {
    case '{':
        return jc_object(c, depth);
    case '[':
        return jc_array(c, depth);
    case '"':
        return jc_string(c);
    case 't':
        return jc_word(c, "true");
    case 'f':
        return jc_word(c, "false");
    case 'n':
        return jc_word(c, "null");
    default:
        if (c->p[c->pos] == '-' || (c->p[c->pos] >= '0' && c->p[c->pos] <= '9')) {
            return jc_number(c);
        }
        return jc_fail(c, "a value was expected");
    }
}

/* json_check_run checks text; the state at its end (the first fault) */
static struct jc json_check_run(const char *text, size_t len)
{
    struct jc c = {(const unsigned char *)text, len, 0, NULL, 0};
    jc_ws(&c);
    if (c.pos >= c.len || c.p[c.pos] != '{') {
        jc_fail(&c, "not an object");
    } else if (jc_object(&c, 0) == 0) {
        jc_ws(&c);
        if (c.pos != c.len) {
            jc_fail(&c, "text after the object");
        }
    }
    return c;
}

int json_check_object(size_t *out_off, const char **out_reason, const char *text, size_t len)
{
    struct jc c = json_check_run(text, len);
    if (out_off != NULL) {
        *out_off = c.pos;
    }
    if (out_reason != NULL) {
        *out_reason = c.why;
    }
    return c.why == NULL ? 0 : -1;
}

int json_check_prefix(const char *text, size_t len)
{
    struct jc c = json_check_run(text, len);
    return c.why != NULL && c.eof;
}
