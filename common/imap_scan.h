/* imap_scan: where the lines of a relayed IMAP stream end, without copying
 * it.  A logical line (a command, a response) may carry literals ({n},
 * {n+}, ~{n}); their bytes are skipped by length, so that a literal holding
 * CRLF or text like "* BYE" is never taken for a line.  For each logical line
 * that ends, the first bytes of its first part (its head: up to the first CRLF,
 * without the CR, at most IMAP_SCAN_HEAD_LEN bytes) are reported: enough to
 * tell a tag from "*" or "+", or to spot "* BYE" and "DONE".  Pure code;
 * any byte boundary may fall anywhere. */
#ifndef IMAPMUX_COMMON_IMAP_SCAN_H
#define IMAPMUX_COMMON_IMAP_SCAN_H

#include <stddef.h>
#include <stdint.h>

/* bytes of a line's head kept: a tag of 64 bytes, SP and the status word */
#define IMAP_SCAN_HEAD_LEN 72

struct imap_scan {
    uint64_t literal_left;            /* literal bytes still to skip */
    uint8_t tail[24];                 /* last bytes of the current segment */
    uint8_t tail_len;
    uint8_t head[IMAP_SCAN_HEAD_LEN]; /* first bytes of the logical line */
    uint8_t head_len;
    uint8_t in_line;                  /* bytes of a logical line were seen */
    uint8_t head_done;                /* the line's first part ended */
    uint8_t head_over;                /* the first part is longer than head */
    uint8_t no_literals;              /* set by the owner: "{n}" ends no line part
                                         (AUTHENTICATE data, which the server
                                         reads as plain lines) */
};

/* on_line: a logical line ended; head holds its first head_len bytes. */
typedef void (*imap_scan_line_cb)(void *ctx, const uint8_t *head, size_t head_len);

/* Finer events, for a tap that looks inside the lines (all optional):
 * text: bytes of a logical line outside literals, CR included, LF not; a
 *   literal's header ("{5}\r") is text, reported before literal();
 * literal: the line part just reported ends in a literal of size bytes;
 * literal_data: bytes of that literal;
 * line: a logical line ended, as with imap_scan_feed. */
struct imap_scan_ops {
    void (*text)(void *ctx, const uint8_t *p, size_t n);
    void (*literal)(void *ctx, uint64_t size);
    void (*literal_data)(void *ctx, const uint8_t *p, size_t n);
    imap_scan_line_cb line;
};

/* imap_scan_init zeroes the scanner (at a line start). */
void imap_scan_init(struct imap_scan *sc);

void imap_scan_feed(struct imap_scan *sc, const uint8_t *data, size_t len, imap_scan_line_cb cb,
                    void *ctx);

void imap_scan_feed_ops(struct imap_scan *sc, const uint8_t *data, size_t len,
                        const struct imap_scan_ops *ops, void *ctx);

/* imap_scan_literal_end reads a literal header ("{123}", "{123+}" or
 * "~{123}", then CR) at the end of t[0..n); returns the bytes of the header
 * with its CR and sets *size, or returns 0. */
size_t imap_scan_literal_end(const uint8_t *t, size_t n, uint64_t *size);

/* imap_scan_at_line_start: the stream is between two logical lines. */
int imap_scan_at_line_start(const struct imap_scan *sc);

#endif
