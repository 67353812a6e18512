#include "common/imap_scan.h"

#include <string.h>

void imap_scan_init(struct imap_scan *sc)
{
    memset(sc, 0, sizeof(*sc));
}

int imap_scan_at_line_start(const struct imap_scan *sc)
{
    return !sc->in_line && sc->literal_left == 0;
}

size_t imap_scan_literal_end(const uint8_t *t, size_t n, uint64_t *size)
{
    if (n < 4 || t[n - 1] != '\r' || t[n - 2] != '}') {
        return 0;
    }
    size_t end = n - 2; /* index of '}' */
    if (t[end - 1] == '+') {
        end--;
    }
    size_t start = end;
    while (start > 0 && t[start - 1] >= '0' && t[start - 1] <= '9') {
        start--;
    }
    /* at most 19 digits keep the value in 64 bits; longer is not a literal
     * any server or client we relay for would send, and the line goes on */
    if (start == end || start == 0 || t[start - 1] != '{' || end - start > 19) {
        return 0;
    }
    uint64_t v = 0;
    for (size_t i = start; i < end; i++) {
        v = v * 10 + (uint64_t)(t[i] - '0');
    }
    *size = v;
    start--; /* the '{' */
    if (start > 0 && t[start - 1] == '~') {
        start--;
    }
    return n - start;
}

static void imap_scan_keep(struct imap_scan *sc, const uint8_t *p, size_t n)
{
    if (!sc->in_line) {
        sc->in_line = 1;
        sc->head_len = 0;
        sc->head_done = 0;
        sc->head_over = 0;
    }
    if (!sc->head_done) {
        size_t h = IMAP_SCAN_HEAD_LEN - sc->head_len;
        if (h > n) {
            h = n;
        }
        memcpy(sc->head + sc->head_len, p, h);
        sc->head_len = (uint8_t)(sc->head_len + h);
        if (n > h) {
            sc->head_over = 1;
        }
    }
    if (n >= sizeof(sc->tail)) {
        memcpy(sc->tail, p + n - sizeof(sc->tail), sizeof(sc->tail));
        sc->tail_len = sizeof(sc->tail);
        return;
    }
    size_t keep = sizeof(sc->tail) - n;
    if (keep > sc->tail_len) {
        keep = sc->tail_len;
    }
    memmove(sc->tail, sc->tail + sc->tail_len - keep, keep);
    memcpy(sc->tail + keep, p, n);
    sc->tail_len = (uint8_t)(keep + n);
}

void imap_scan_feed_ops(struct imap_scan *sc, const uint8_t *data, size_t len,
                        const struct imap_scan_ops *ops, void *ctx)
{
    size_t i = 0;
    while (i < len) {
        if (sc->literal_left > 0) {
            size_t n = len - i;
            if (n > sc->literal_left) {
                n = (size_t)sc->literal_left;
            }
            if (ops->literal_data != NULL) {
                ops->literal_data(ctx, data + i, n);
            }
            sc->literal_left -= n;
            i += n;
            continue;
        }
        const uint8_t *nl = memchr(data + i, '\n', len - i);
        size_t end = nl != NULL ? (size_t)(nl - data) : len;
        if (end > i) {
            imap_scan_keep(sc, data + i, end - i);
            if (ops->text != NULL) {
                ops->text(ctx, data + i, end - i);
            }
        }
        if (nl == NULL) {
            return;
        }
        i = end + 1;
        if (!sc->head_done) {
            sc->head_done = 1;
            /* the CR of the CRLF only: a CR that happens to be the head's
             * last byte in a longer first part is the line's */
            if (!sc->head_over && sc->head_len > 0 && sc->head[sc->head_len - 1] == '\r') {
                sc->head_len--;
            }
        }
        uint64_t lit;
        if (!sc->no_literals && imap_scan_literal_end(sc->tail, sc->tail_len, &lit) > 0) {
            sc->literal_left = lit;
            sc->tail_len = 0;
            sc->in_line = 1; /* the line goes on after the literal */
            if (ops->literal != NULL) {
                ops->literal(ctx, lit);
            }
            continue;
        }
        if (ops->line != NULL) {
            ops->line(ctx, sc->head, sc->head_len);
        }
        sc->in_line = 0;
        sc->head_len = 0;
        sc->head_done = 0;
        sc->head_over = 0;
        sc->tail_len = 0;
    }
}

void imap_scan_feed(struct imap_scan *sc, const uint8_t *data, size_t len, imap_scan_line_cb cb,
                    void *ctx)
{
    const struct imap_scan_ops ops = {.line = cb};
    imap_scan_feed_ops(sc, data, len, &ops, ctx);
}
