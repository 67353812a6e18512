/* Fuzz target of imap_parser: the input is parsed once whole and once in
 * chunks whose sizes come from its first bytes; both runs must give the
 * same results (any split gives the same result), and sanitizers watch the
 * memory.  Input: 1 byte of flags, 8 bytes of chunk sizes, the IMAP bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/imap_parser.h"

#define FUZZ_NUM_SIZES 8

struct fuzz_digest {
    uint64_t hash;   /* FNV-1a over every result and its contents */
    size_t consumed; /* bytes consumed in all */
    int fatal;
};

static void fuzz_mix(struct fuzz_digest *d, const void *data, size_t len)
{
    const uint8_t *b = data;

    for (size_t i = 0; i < len; i++) {
        d->hash = (d->hash ^ b[i]) * 1099511628211ULL;
    }
}

static void fuzz_mix_str(struct fuzz_digest *d, const char *s)
{
    if (s == NULL) {
        fuzz_mix(d, "\xff", 1);
        return;
    }
    fuzz_mix(d, s, strlen(s) + 1);
}

/* fuzz_result folds one result in; returns 1 when the caller must reset. */
static int fuzz_result(struct fuzz_digest *d, struct imap_parser *p, enum imap_parse_result r)
{
    size_t num = 0;
    const struct imap_arg *args;

    if (r == IMAP_PARSE_MORE) {
        return 0;
    }
    fuzz_mix(d, &r, sizeof(r));
    if (r == IMAP_PARSE_LITERAL_WAIT) {
        return 0;
    }
    fuzz_mix_str(d, imap_parser_get_error(p));
    if (r == IMAP_PARSE_FATAL) {
        d->fatal = 1;
        return 0;
    }
    fuzz_mix_str(d, imap_parser_get_tag(p));
    fuzz_mix_str(d, imap_parser_get_name(p));
    args = imap_parser_get_args(p, &num);
    for (size_t i = 0; i < num; i++) {
        if (args[i].data == NULL || args[i].data[args[i].len] != '\0') {
            abort();
        }
        fuzz_mix(d, &args[i].type, sizeof(args[i].type));
        fuzz_mix(d, &args[i].len, sizeof(args[i].len));
        fuzz_mix(d, args[i].data, args[i].len);
    }
    if (r == IMAP_PARSE_COMMAND && num == 1 && imap_parser_get_name(p) != NULL &&
        imap_parser_get_name(p)[0] == 'A') {
        /* like AUTHENTICATE without an initial response */
        imap_parser_set_line_mode(p);
    }
    return 1;
}

static void fuzz_run(struct fuzz_digest *d, uint8_t flags, const uint8_t *sizes,
                     const uint8_t *data, size_t len)
{
    static const struct imap_parser_limits lim = {
        .max_line_len = 64,
        .max_literal_len = 32,
        .max_command_len = 128,
        .max_args = 8,
        .max_depth = 3,
        .max_tag_len = 8,
    };
    struct imap_parser *p = imap_parser_new(&lim);
    size_t off = 0, k = 0;

    memset(d, 0, sizeof(*d));
    d->hash = 14695981039346656037ULL;
    if (p == NULL) {
        return;
    }
    if (flags & 1) {
        imap_parser_set_line_mode(p);
    }
    while (off < len && !d->fatal) {
        size_t chunk = sizes == NULL ? len - off : (size_t)sizes[k++ % FUZZ_NUM_SIZES] % 17 + 1;
        size_t coff = 0;

        if (chunk > len - off) {
            chunk = len - off;
        }
        while (coff < chunk && !d->fatal) {
            size_t used = 0;
            enum imap_parse_result r = imap_parser_feed(p, &used, data + off + coff, chunk - coff);

            if (used > chunk - coff || (r == IMAP_PARSE_MORE && used != chunk - coff) ||
                (r != IMAP_PARSE_MORE && r != IMAP_PARSE_FATAL && used == 0)) {
                abort();
            }
            coff += used;
            d->consumed += used;
            if (fuzz_result(d, p, r)) {
                imap_parser_reset(p);
            }
        }
        off += chunk;
    }
    imap_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_digest whole, chunked;

    if (size < 1 + FUZZ_NUM_SIZES) {
        return 0;
    }
    fuzz_run(&whole, data[0], NULL, data + 1 + FUZZ_NUM_SIZES, size - 1 - FUZZ_NUM_SIZES);
    fuzz_run(&chunked, data[0], data + 1, data + 1 + FUZZ_NUM_SIZES, size - 1 - FUZZ_NUM_SIZES);
    if (whole.hash != chunked.hash || whole.consumed != chunked.consumed ||
        whole.fatal != chunked.fatal) {
        abort();
    }
    return 0;
}
