/* Tests of common/http_answer: HTTP answers split at every offset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/http_answer.h"

/* parse copies text into a buffer with one spare byte, as the client has. */
static enum http_answer_result parse(struct http_answer *a, char **keep, const char *text,
                                     size_t len, int eof)
{
    char *buf = malloc(len + 1);
    memcpy(buf, text, len);
    *keep = buf;
    return http_answer_parse(a, buf, len, eof);
}

static void expect_body(const char *text, int status, const char *body)
{
    size_t len = strlen(text);
    struct http_answer a;
    char *buf;
    /* every prefix before the end of the stream wants more (or is done
       early by Content-Length), the whole at EOF is the answer */
    for (size_t i = 0; i < len; i++) {
        enum http_answer_result r = parse(&a, &buf, text, i, 0);
        cr_assert(r == HTTP_ANSWER_MORE || r == HTTP_ANSWER_DONE, "prefix %zu: %d", i, r);
        if (r == HTTP_ANSWER_DONE) {
            cr_assert_str_eq(a.body, body, "prefix %zu", i);
        }
        free(buf);
    }
    cr_assert_eq(parse(&a, &buf, text, len, 1), HTTP_ANSWER_DONE);
    cr_assert_eq(a.status, status);
    cr_assert_eq(a.body_len, strlen(body));
    cr_assert_str_eq(a.body, body);
    free(buf);
}

Test(http_answer, content_length)
{
    expect_body("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                "{\"keys\":[]}",
                200, "{\"keys\":[]}");
}

Test(http_answer, to_the_end_of_the_stream)
{
    expect_body("HTTP/1.0 200 OK\r\nServer: x\r\n\r\n{\"active\":false}", 200, "{\"active\":false}");
}

Test(http_answer, chunked)
{
    expect_body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"ke\r\n"
                "7\r\nys\":[]}\r\n0\r\n\r\n",
                200, "{\"keys\":[]}");
}

Test(http_answer, errors)
{
    struct http_answer a;
    char *buf;
    const char *bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 099 x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n",
        "HTTP/1.1 200 OK\r\n",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(parse(&a, &buf, bad[i], strlen(bad[i]), 1), HTTP_ANSWER_ERROR, "%zu", i);
        cr_assert_not_null(a.error);
        free(buf);
    }
    /* headers without an end, past the limit */
    size_t n = HTTP_ANSWER_MAX_HEAD_LEN + 100;
    char *big = malloc(n);
    memset(big, 'a', n);
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    cr_assert_eq(parse(&a, &buf, big, n, 0), HTTP_ANSWER_ERROR);
    free(buf);
    free(big);
}

Test(http_answer, status_kept)
{
    expect_body("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}", 503, "{}");
}
