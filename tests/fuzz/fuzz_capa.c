/* Fuzz target of capability lists.  The input is a capability list and also
 * a response text.  Properties of capa_filter: the output is NUL-terminated
 * at out_len, no longer than the input, single-space separated without
 * leading or trailing space, the input's tokens minus the removed ones in
 * their order, and filtering again changes nothing.  capa_has finds each
 * token of the input (case-insensitive) and, in the output, exactly the kept
 * ones.  capa_find_in_text returns a slice of the text right after
 * "[CAPABILITY " up to the first ']'.  The input is also a response stream
 * for capa_rewrite: fed in two pieces (split where its first byte says) and
 * byte by byte, it gives the same output as fed whole, which is the input
 * itself when it does not hold "CAPABILITY". */
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
           (n == 14 && strncasecmp(t, "UNAUTHENTICATE", 14) == 0) || memchr(t, '{', n) != NULL;
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

struct fuzz_out {
    uint8_t *p;
    size_t len, cap;
};

static void fuzz_collect(void *ctx, const uint8_t *p, size_t n)
{
    struct fuzz_out *o = ctx;
    if (o->len + n > o->cap) {
        abort(); /* the output is bounded (below) */
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

/* fuzz_rewrite_run feeds in pieces of at most step bytes after a first one
 * of split bytes; returns the output (malloc'd) and its length. */
static uint8_t *fuzz_rewrite_run(size_t *out_len, const uint8_t *in, size_t len, size_t split,
                                 size_t step)
{
    struct capa_rewrite rw;
    /* each list grows by the extra at most; a list is one per "CAPABILITY" */
    struct fuzz_out o = {.cap = len * 3 + 64};
    o.p = malloc(o.cap);
    if (o.p == NULL) {
        abort();
    }
    capa_rewrite_init(&rw, "COMPRESS=DEFLATE");
    if (capa_rewrite_feed(&rw, in, split, fuzz_collect, &o) != 0) {
        abort();
    }
    for (size_t i = split; i < len; i += step) {
        size_t n = len - i < step ? len - i : step;
        if (capa_rewrite_feed(&rw, in + i, n, fuzz_collect, &o) != 0) {
            abort();
        }
    }
    /* a line's start held at the end would go out with the next bytes */
    if (rw.head_len > 0) {
        fuzz_collect(&o, rw.head, rw.head_len);
    }
    capa_rewrite_cleanup(&rw);
    *out_len = o.len;
    return o.p;
}

static void fuzz_rewrite(const uint8_t *in, size_t len)
{
    size_t whole_len, split_len, bytes_len;
    uint8_t *whole = fuzz_rewrite_run(&whole_len, in, len, len, 1);
    size_t split = len > 0 ? in[0] % (len + 1) : 0;
    uint8_t *split_out = fuzz_rewrite_run(&split_len, in, len, split, len > 0 ? len : 1);
    uint8_t *bytes = fuzz_rewrite_run(&bytes_len, in, len, 0, 1);
    if (split_len != whole_len || memcmp(split_out, whole, whole_len) != 0 ||
        bytes_len != whole_len || memcmp(bytes, whole, whole_len) != 0) {
        abort();
    }
    int has_word = 0;
    for (size_t i = 0; i + 10 <= len && !has_word; i++) {
        has_word = strncasecmp((const char *)in + i, "CAPABILITY", 10) == 0;
    }
    if (!has_word && (whole_len != len || memcmp(whole, in, len) != 0)) {
        abort();
    }
    free(whole);
    free(split_out);
    free(bytes);
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
    fuzz_rewrite((const uint8_t *)buf, size);
    free(buf);
    return 0;
}
