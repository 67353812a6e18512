/* Fuzz target of capability lists.  The input is a capability list and also
 * a response text.  Properties of capa_filter: the output is NUL-terminated
 * at out_len, no longer than the input, single-space separated without
 * leading or trailing space, the input's tokens minus the removed ones in
 * their order, and filtering again changes nothing.  capa_has finds each
 * token of the input (case-insensitive) and, in the output, exactly the kept
 * ones.  capa_find_in_text returns a slice of the text right after
 * "[CAPABILITY " up to the first ']'. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/capa.h"

#define FUZZ_MAX_TOKEN_LEN 64 /* tokens checked with capa_has */

/* fuzz_removed: the proxy's list, written out again as the README states it. */
static int fuzz_removed(const char *t, size_t n)
{
    return (n == 8 && strncasecmp(t, "STARTTLS", 8) == 0) ||
           (n == 13 && strncasecmp(t, "LOGINDISABLED", 13) == 0) ||
           (n >= 5 && strncasecmp(t, "AUTH=", 5) == 0) ||
           (n == 7 && strncasecmp(t, "SASL-IR", 7) == 0) ||
           (n >= 9 && strncasecmp(t, "COMPRESS=", 9) == 0) ||
           (n == 14 && strncasecmp(t, "UNAUTHENTICATE", 14) == 0);
}

static void fuzz_filter(const char *in, size_t len)
{
    size_t out_len = 0;
    char *out = capa_filter(&out_len, in, len);
    if (out == NULL) {
        return;
    }
    if (out_len > len || out[out_len] != '\0' ||
        (out_len > 0 && (out[0] == ' ' || out[out_len - 1] == ' '))) {
        abort();
    }
    /* walk input tokens; the kept ones must come out in order */
    size_t i = 0, o = 0;
    while (i < len) {
        while (i < len && in[i] == ' ') {
            i++;
        }
        size_t s = i;
        while (i < len && in[i] != ' ') {
            i++;
        }
        size_t n = i - s;
        if (n == 0) {
            break;
        }
        int has_nul = memchr(in + s, '\0', n) != NULL;
        if (n <= FUZZ_MAX_TOKEN_LEN && !has_nul) {
            char tok[FUZZ_MAX_TOKEN_LEN + 1];
            memcpy(tok, in + s, n);
            tok[n] = '\0';
            if (!capa_has(in, len, tok)) {
                abort();
            }
            if (fuzz_removed(tok, n) && capa_has(out, out_len, tok)) {
                abort();
            }
        }
        if (fuzz_removed(in + s, n)) {
            continue;
        }
        if (o > 0) {
            if (o >= out_len || out[o] != ' ') {
                abort();
            }
            o++;
        }
        if (o + n > out_len || memcmp(out + o, in + s, n) != 0) {
            abort();
        }
        o += n;
    }
    if (o != out_len) {
        abort();
    }
    size_t again_len = 0;
    char *again = capa_filter(&again_len, out, out_len);
    if (again != NULL && (again_len != out_len || memcmp(again, out, out_len) != 0)) {
        abort();
    }
    free(again);
    free(out);
}

static void fuzz_find(const char *text, size_t len)
{
    size_t n = 0;
    const char *list = capa_find_in_text(&n, text, len);
    if (list == NULL) {
        return;
    }
    if (list < text + 12 || list + n >= text + len + 1 || list + n > text + len ||
        strncasecmp(list - 12, "[CAPABILITY ", 12) != 0 || memchr(list, ']', n) != NULL ||
        list[n] != ']') {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* copies of exactly size bytes, so that ASan sees any read past them */
    char *buf = malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data, size);
    fuzz_filter(buf, size);
    fuzz_find(buf, size);
    free(buf);
    return 0;
}
