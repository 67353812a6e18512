/* Fuzz target of the HTTP answer parser: any input, before and at the end
 * of the stream, gives a verdict; a done answer's body lies inside the
 * buffer and is NUL-terminated; an error has a reason; at the end of the
 * stream the parser never asks for more. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/http_answer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (buf == NULL) {
        return 0;
    }
    for (int eof = 0; eof <= 1; eof++) {
        struct http_answer a;
        memcpy(buf, data, size);
        enum http_answer_result r = http_answer_parse(&a, buf, size, eof);
        if (r == HTTP_ANSWER_DONE) {
            if (a.body < buf || a.body + a.body_len > buf + size || a.body[a.body_len] != '\0' ||
                a.status < 100 || a.status > 999) {
                abort();
            }
        } else if (r == HTTP_ANSWER_ERROR) {
            if (a.error == NULL) {
                abort();
            }
        } else if (eof) {
            abort(); /* at the end of the stream there is no "more" */
        }
    }
    free(buf);
    return 0;
}
