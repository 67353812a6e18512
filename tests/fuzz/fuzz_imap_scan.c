/* Fuzz target of imap_scan, the line scanner of the relay (the audit tap
 * target covers its use inside the tap; this one covers the line heads the
 * session and the session cache act on).  Input: 1 byte of flags (bit 0:
 * no_literals), 8 bytes of chunk sizes, then the stream.  The stream is
 * scanned whole and in chunks, and compared with a reference written from
 * the header's description over the whole buffer: the same text, literal
 * and line events in the same order, the same state at the end, whatever
 * the split.  Heads are at most IMAP_SCAN_HEAD_LEN bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/imap_scan.h"

#define FUZZ_NUM_SIZES 8
#define FUZZ_MAX_DIGITS 19 /* longest literal size the scanner reads */

struct fuzz_log {
    uint64_t hash;    /* FNV-1a over every event */
    uint64_t lines;   /* hash over line events only */
    size_t num_lines;
    size_t bytes;     /* text + literal bytes + LFs outside literals */
};

static void fuzz_mix(uint64_t *h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        *h = (*h ^ b[i]) * 1099511628211ULL;
    }
}

static void fuzz_init(struct fuzz_log *l)
{
    memset(l, 0, sizeof(*l));
    l->hash = l->lines = 14695981039346656037ULL;
}

/* text and literal data are mixed byte by byte: any split gives one hash */
static void fuzz_on_text(void *ctx, const uint8_t *p, size_t n)
{
    struct fuzz_log *l = ctx;
    for (size_t i = 0; i < n; i++) {
        uint8_t ev[2] = {'T', p[i]};
        fuzz_mix(&l->hash, ev, 2);
    }
    l->bytes += n;
}

static void fuzz_on_literal_data(void *ctx, const uint8_t *p, size_t n)
{
    struct fuzz_log *l = ctx;
    for (size_t i = 0; i < n; i++) {
        uint8_t ev[2] = {'D', p[i]};
        fuzz_mix(&l->hash, ev, 2);
    }
    l->bytes += n;
}

static void fuzz_on_literal(void *ctx, uint64_t size)
{
    struct fuzz_log *l = ctx;
    fuzz_mix(&l->hash, "L", 1);
    fuzz_mix(&l->hash, &size, sizeof(size));
    l->bytes++; /* its LF */
}

static void fuzz_on_line(void *ctx, const uint8_t *head, size_t head_len)
{
    struct fuzz_log *l = ctx;
    uint8_t n = (uint8_t)head_len;
    if (head_len > IMAP_SCAN_HEAD_LEN) {
        abort();
    }
    fuzz_mix(&l->hash, "N", 1);
    fuzz_mix(&l->hash, &n, 1);
    fuzz_mix(&l->hash, head, head_len);
    fuzz_mix(&l->lines, &n, 1);
    fuzz_mix(&l->lines, head, head_len);
    l->num_lines++;
    l->bytes++; /* its LF */
}

static const struct imap_scan_ops fuzz_ops = {
    .text = fuzz_on_text,
    .literal = fuzz_on_literal,
    .literal_data = fuzz_on_literal_data,
    .line = fuzz_on_line,
};

static void fuzz_on_line_only(void *ctx, const uint8_t *head, size_t head_len)
{
    struct fuzz_log *l = ctx;
    uint8_t n = (uint8_t)head_len;
    fuzz_mix(&l->lines, &n, 1);
    fuzz_mix(&l->lines, head, head_len);
    l->num_lines++;
}

/* fuzz_ref_literal: the segment s[0..n) ends in "{digits}\r", "{digits+}\r"
 * or "~{digits}\r" with 1..FUZZ_MAX_DIGITS digits. */
static int fuzz_ref_literal(const uint8_t *s, size_t n, uint64_t *size)
{
    size_t d = 0;
    if (n < 4 || s[n - 1] != '\r' || s[n - 2] != '}') {
        return 0;
    }
    n -= 2;
    if (s[n - 1] == '+') {
        n--;
    }
    while (d < n && s[n - 1 - d] >= '0' && s[n - 1 - d] <= '9') {
        d++;
    }
    if (d == 0 || d > FUZZ_MAX_DIGITS || d == n || s[n - 1 - d] != '{') {
        return 0;
    }
    *size = 0;
    for (size_t i = n - d; i < n; i++) {
        *size = *size * 10 + (uint64_t)(s[i] - '0');
    }
    return 1;
}

/* fuzz_reference: the scanner's contract, over the whole buffer at once.
 * Returns 1 if the stream ends between two logical lines. */
static int fuzz_reference(struct fuzz_log *l, const uint8_t *data, size_t len, int no_literals)
{
    size_t pos = 0, seg = 0; /* seg: start of the current line part */
    uint64_t left = 0;
    int in_line = 0, have_head = 0;
    uint8_t head[IMAP_SCAN_HEAD_LEN];
    size_t head_len = 0;

    while (pos < len) {
        if (left > 0) {
            size_t n = len - pos < left ? len - pos : (size_t)left;
            fuzz_on_literal_data(l, data + pos, n);
            left -= n;
            pos += n;
            seg = pos;
            continue;
        }
        const uint8_t *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl != NULL ? (size_t)(nl - data) : len;
        if (end > pos) {
            fuzz_on_text(l, data + pos, end - pos);
            in_line = 1;
        }
        if (nl == NULL) {
            break;
        }
        if (!have_head) {
            /* the first part up to its CRLF, without the CR, cut short */
            size_t n = end - seg;
            if (n > 0 && data[end - 1] == '\r') {
                n--;
            }
            head_len = n < IMAP_SCAN_HEAD_LEN ? n : IMAP_SCAN_HEAD_LEN;
            memcpy(head, data + seg, head_len);
            have_head = 1;
        }
        pos = end + 1;
        uint64_t size;
        if (!no_literals && fuzz_ref_literal(data + seg, end - seg, &size)) {
            fuzz_on_literal(l, size);
            left = size;
            in_line = 1;
            seg = pos;
            continue;
        }
        fuzz_on_line(l, head, head_len);
        in_line = 0;
        have_head = 0;
        seg = pos;
    }
    return !in_line && left == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_log whole, chunked, ref, lines_only;
    struct imap_scan a, b, c;

    if (size < 1 + FUZZ_NUM_SIZES) {
        return 0;
    }
    int no_literals = data[0] & 1;
    const uint8_t *sizes = data + 1;
    const uint8_t *s = data + 1 + FUZZ_NUM_SIZES;
    size_t len = size - 1 - FUZZ_NUM_SIZES;

    fuzz_init(&whole);
    fuzz_init(&chunked);
    fuzz_init(&ref);
    fuzz_init(&lines_only);
    imap_scan_init(&a);
    imap_scan_init(&b);
    imap_scan_init(&c);
    a.no_literals = b.no_literals = c.no_literals = (uint8_t)no_literals;

    imap_scan_feed_ops(&a, s, len, &fuzz_ops, &whole);
    for (size_t off = 0, k = 0; off < len; k++) {
        size_t n = (size_t)sizes[k % FUZZ_NUM_SIZES] % 23; /* empty feeds too */
        if (n == 0 && k % FUZZ_NUM_SIZES == FUZZ_NUM_SIZES - 1) {
            n = 1; /* progress at least once a round */
        }
        if (n > len - off) {
            n = len - off;
        }
        imap_scan_feed_ops(&b, s + off, n, &fuzz_ops, &chunked);
        imap_scan_feed(&c, s + off, n, fuzz_on_line_only, &lines_only);
        off += n;
    }
    int at_start = fuzz_reference(&ref, s, len, no_literals);

    if (whole.hash != chunked.hash || whole.hash != ref.hash ||
        whole.num_lines != ref.num_lines || chunked.lines != lines_only.lines ||
        chunked.num_lines != lines_only.num_lines ||
        imap_scan_at_line_start(&a) != at_start || imap_scan_at_line_start(&b) != at_start ||
        imap_scan_at_line_start(&c) != at_start || whole.bytes > len || ref.bytes != whole.bytes) {
        abort();
    }
    return 0;
}
