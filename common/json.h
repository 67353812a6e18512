/* json: builds one JSON object as text in a caller-owned buffer, for audit
 * records.  Strings are escaped and made valid UTF-8 (an invalid byte becomes
 * U+FFFD), so a client's bytes can never break a record or the log line it
 * is on.  A record that does not fit is cut at a field boundary and marked
 * with "truncated":true.  Pure code. */
#ifndef IMAPMUX_COMMON_JSON_H
#define IMAPMUX_COMMON_JSON_H

#include <stddef.h>
#include <stdint.h>

struct json {
    char *buf;      /* NUL-terminated text so far */
    size_t cap;     /* bytes of buf */
    size_t len;     /* bytes used, without the NUL */
    size_t mark;    /* len before the field being written */
    int fields;     /* fields written */
    int full;       /* a field did not fit and was left out */
};

/* json_begin starts an object in buf (cap >= 64). */
void json_begin(struct json *j, char *buf, size_t cap);

/* Fields.  key is a plain ASCII name from our code. */
void json_str(struct json *j, const char *key, const char *val);
void json_strn(struct json *j, const char *key, const char *val, size_t len);
void json_u64(struct json *j, const char *key, uint64_t val);
void json_bool(struct json *j, const char *key, int val);
/* json_raw adds a field whose value is already JSON text (an array, say). */
void json_raw(struct json *j, const char *key, const char *json_text);

/* json_fields adds fields already written as JSON text ("a":1,"b":"x"),
 * as the audit tap makes them; "" adds nothing.  Fields that end in the
 * mark of an object cut short ("truncated":true) lose it and this object
 * gets it instead, so a record never holds the key twice.  The text must be
 * our own code's (json_begin/json_end output without its braces): it is
 * copied as it is. */
void json_fields(struct json *j, const char *fields);

/* json_end closes the object; returns its length (without the NUL).  The
 * result is one valid JSON object whatever the values were; when fields were
 * left out its last field is "truncated":true ({"truncated":true} when all
 * were). */
size_t json_end(struct json *j);

/* json_escape appends the JSON string literal of val[0..len) (with quotes)
 * to out (at most cap bytes, NUL-terminated); returns the bytes the full
 * literal needs, like snprintf. */
size_t json_escape(char *out, size_t cap, const char *val, size_t len);

/* json_utf8_decode decodes the UTF-8 sequence at p (n bytes available) by
 * RFC 3629 (no overlong forms, surrogates or code points past U+10FFFF):
 * returns its length (1 to 4) with the code point in *out_cp, or 0. */
size_t json_utf8_decode(uint32_t *out_cp, const unsigned char *p, size_t n);

#endif
