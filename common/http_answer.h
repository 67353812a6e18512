/* http_answer: an HTTP/1.1 answer read to its end (status line, headers,
 * body by Content-Length, by chunked transfer coding, or to the end of the
 * stream), as the oauth thread's client receives it from a key server or an
 * introspection endpoint.  Pure code; the body is decoded in place. */
#ifndef IMAPMUX_COMMON_HTTP_ANSWER_H
#define IMAPMUX_COMMON_HTTP_ANSWER_H

#include <stddef.h>

#define HTTP_ANSWER_MAX_HEAD_LEN 16384  /* bytes of the status line and headers */
#define HTTP_ANSWER_MAX_CHUNK_HEX 8     /* hex digits of a chunk size */

enum http_answer_result {
    HTTP_ANSWER_DONE,  /* status and body are set */
    HTTP_ANSWER_MORE,  /* incomplete: read more (only before the end of the stream) */
    HTTP_ANSWER_ERROR, /* malformed or incomplete at the end: a fixed reason is set */
};

struct http_answer {
    int status;        /* 100-599 */
    char *body;        /* into the caller's buffer, NUL-terminated */
    size_t body_len;
    const char *error; /* with HTTP_ANSWER_ERROR */
};

/* http_answer_parse looks at the len bytes read so far in buf (which has
 * room for one more byte: a NUL is written after the body).  eof says the
 * stream ended.  On HTTP_ANSWER_DONE a chunked body was decoded in place. */
enum http_answer_result http_answer_parse(struct http_answer *out, char *buf, size_t len,
                                          int eof);

#endif
