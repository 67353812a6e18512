/* http_answer: parsing an HTTP/1.1 answer (see http_answer.h). */
#include "common/http_answer.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

/* http_answer_find returns the first occurrence of needle in the n bytes at
 * hay, or NULL (memmem without relying on a NUL). */
static char *http_answer_find(char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; k <= n && i <= n - k; i++) {
        if (memcmp(hay + i, needle, k) == 0) {
            return hay + i;
        }
    }
    return NULL;
}

/* http_answer_dechunk decodes a chunked body in place; returns its length,
 * or -1 for a malformed or incomplete one. */
static long http_answer_dechunk(char *b, size_t len)
{
    size_t in = 0, out = 0;
    for (;;) {
        size_t digits = 0, size = 0;
        while (in < len && digits <= HTTP_ANSWER_MAX_CHUNK_HEX) {
            unsigned char c = (unsigned char)b[in];
            int v = c >= '0' && c <= '9'                       ? c - '0'
                    : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
                                                               : -1;
            if (v < 0) {
                break;
            }
            size = size * 16 + (size_t)v;
            digits++;
            in++;
        }
        if (digits == 0 || digits > HTTP_ANSWER_MAX_CHUNK_HEX) {
            return -1;
        }
        char *eol = memchr(b + in, '\n', len - in); /* chunk extensions are skipped */
        if (eol == NULL) {
            return -1;
        }
        in = (size_t)(eol - b) + 1;
        if (size == 0) {
            return (long)out; /* trailers, if any, are ignored */
        }
        if (size > len - in || len - in - size < 2) {
            return -1;
        }
        memmove(b + out, b + in, size);
        out += size;
        in += size + 2; /* CRLF after the data */
    }
}

static int http_answer_digits(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
    }
    return n > 0;
}

static enum http_answer_result http_answer_fail(struct http_answer *out, const char *why)
{
    out->error = why;
    out->status = 0;
    out->body = NULL;
    out->body_len = 0;
    return HTTP_ANSWER_ERROR;
}

enum http_answer_result http_answer_parse(struct http_answer *out, char *buf, size_t len,
                                          int eof)
{
    memset(out, 0, sizeof(*out));
    size_t scan = len < HTTP_ANSWER_MAX_HEAD_LEN + 4 ? len : HTTP_ANSWER_MAX_HEAD_LEN + 4;
    char *head_end = http_answer_find(buf, scan, "\r\n\r\n");
    if (head_end == NULL) {
        if (len >= HTTP_ANSWER_MAX_HEAD_LEN + 4) {
            return http_answer_fail(out, "HTTP headers too long");
        }
        return eof ? http_answer_fail(out, "incomplete HTTP answer") : HTTP_ANSWER_MORE;
    }
    /* "HTTP/1.x NNN" */
    if (head_end - buf < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ' ||
        !http_answer_digits(buf + 9, 3) || (head_end - buf > 12 && buf[12] != ' ' &&
                                            buf[12] != '\r')) {
        return http_answer_fail(out, "not an HTTP answer");
    }
    int status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (status < 100) {
        return http_answer_fail(out, "not an HTTP answer");
    }
    char *body = head_end + 4;
    size_t have = len - (size_t)(body - buf);
    long long clen = -1;
    int chunked = 0;
    char *l = http_answer_find(buf, (size_t)(head_end - buf) + 2, "\r\n") + 2;
    while (l < head_end + 2) {
        char *e = http_answer_find(l, (size_t)(head_end + 2 - l), "\r\n");
        size_t n = (size_t)(e - l);
        if (n >= 15 && strncasecmp(l, "Content-Length:", 15) == 0) {
            const char *v = l + 15;
            size_t vn = n - 15;
            while (vn > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                vn--;
            }
            while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t')) {
                vn--;
            }
            if (!http_answer_digits(v, vn) || vn > 10 || clen >= 0) {
                return http_answer_fail(out, "bad Content-Length");
            }
            clen = 0;
            for (size_t i = 0; i < vn; i++) {
                clen = clen * 10 + (v[i] - '0');
            }
        } else if (n >= 18 && strncasecmp(l, "Transfer-Encoding:", 18) == 0) {
            chunked = http_answer_find(l, n, "chunked") != NULL;
        }
        l = e + 2;
    }
    if (chunked) {
        if (!eof) {
            return HTTP_ANSWER_MORE; /* the client asks Connection: close */
        }
        long n = http_answer_dechunk(body, have);
        if (n < 0) {
            return http_answer_fail(out, "bad chunked encoding");
        }
        have = (size_t)n;
    } else if (clen >= 0) {
        if ((unsigned long long)clen > have) {
            return eof ? http_answer_fail(out, "incomplete HTTP answer") : HTTP_ANSWER_MORE;
        }
        have = (size_t)clen;
    } else if (!eof) {
        return HTTP_ANSWER_MORE;
    }
    body[have] = '\0';
    out->status = status;
    out->body = body;
    out->body_len = have;
    return HTTP_ANSWER_DONE;
}
