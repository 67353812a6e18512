/* deflate_cost: what COMPRESS=DEFLATE costs per session on IMAP-like server
 * output (FETCH responses: header blocks with DKIM signatures, text parts and
 * base64 attachments), for several deflate levels, windows and memLevels.
 *
 * For each setting it compresses the same generated stream through the
 * compress engine, flushing (Z_SYNC_FLUSH) after every burst as the proxy
 * does, and prints CPU milliseconds per MB of plaintext, the ratio, and the
 * bytes zlib held (counted by the engine's allocator).  It also inflates the
 * output once, checking it, and prints the inflate side's cost and memory.
 *
 *   deflate_cost [MB of plaintext, default 16] [burst bytes, default 16384]
 *                [bodies (default) | headers]
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/compress.h"

#define DEFLATE_COST_REPEAT 3 /* runs per setting; the fastest counts */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng(void)
{
    /* xorshift64*: reproducible across runs and machines */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

struct out {
    uint8_t *p;
    size_t len, cap;
};

static void out_put(struct out *o, const void *data, size_t len)
{
    if (o->len + len > o->cap) {
        o->cap = (o->len + len) * 2;
        o->p = realloc(o->p, o->cap);
        if (o->p == NULL) {
            abort();
        }
    }
    memcpy(o->p + o->len, data, len);
    o->len += len;
}

static void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(struct out *o, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    out_put(o, buf, (size_t)n);
}

static const char *const words[] = {
    "the", "meeting", "invoice", "attached", "please", "find", "regards", "project",
    "schedule", "update", "thanks", "review", "budget", "team", "report", "next",
    "week", "office", "customer", "order", "delivery", "question", "answer", "draft",
};

static void base64_lines(struct out *o, size_t raw_len)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char line[80];
    size_t col = 0;
    for (size_t i = 0; i < raw_len; i += 3) {
        uint32_t v = rng() & 0xffffff;
        for (int k = 0; k < 4; k++) {
            line[col++] = b64[(v >> (18 - 6 * k)) & 63];
        }
        if (col == 76) {
            out_put(o, line, col);
            out_put(o, "\r\n", 2);
            col = 0;
        }
    }
    if (col > 0) {
        out_put(o, line, col);
        out_put(o, "\r\n", 2);
    }
}

static void text_lines(struct out *o, size_t len)
{
    size_t done = 0;
    while (done < len) {
        size_t col = 0;
        while (col < 68) {
            const char *w = words[rng() % (sizeof(words) / sizeof(words[0]))];
            out_printf(o, "%s ", w);
            col += strlen(w) + 1;
        }
        out_put(o, "\r\n", 2);
        done += col + 2;
    }
}

/* one FETCH BODY[] response (headers_only: BODY[HEADER], as a client
 * syncing a folder list fetches), or a few FLAGS lines */
static void imap_message(struct out *o, unsigned seq, int headers_only)
{
    struct out m = {0};
    if (rng() % 4 == 0) {
        for (int i = 0; i < 20; i++) {
            out_printf(o, "* %u FETCH (UID %u FLAGS (\\Seen%s))\r\n", seq + i, 1000 + seq + i,
                       rng() % 3 == 0 ? " \\Flagged" : "");
        }
        return;
    }
    unsigned id = rng();
    out_printf(&m, "Return-Path: <user%u@example.com>\r\n", rng() % 500);
    for (int h = 0; h < 3; h++) {
        out_printf(&m, "Received: from mx%u.example.net (mx%u.example.net [192.0.2.%u])\r\n"
                       "\tby mail.example.org (Postfix) with ESMTPS id %08X\r\n"
                       "\tfor <user%u@example.org>; Tue, 1 Dec 2026 10:%02u:%02u +0000\r\n",
                   rng() % 9, rng() % 9, rng() % 250, rng(), rng() % 500, rng() % 60,
                   rng() % 60);
    }
    out_printf(&m, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;\r\n"
                   "\ts=sel1; h=from:to:subject:date:message-id; bh=");
    base64_lines(&m, 32);
    out_printf(&m, "\tb=");
    base64_lines(&m, 256);
    out_printf(&m, "From: Sender %u <user%u@example.com>\r\nTo: <user%u@example.org>\r\n"
                   "Subject: %s %s %s\r\nDate: Tue, 1 Dec 2026 10:%02u:%02u +0000\r\n"
                   "Message-ID: <%08X.%08X@example.com>\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: multipart/mixed; boundary=\"b1_%08X\"\r\n\r\n",
               rng() % 500, rng() % 500, rng() % 500, words[rng() % 24], words[rng() % 24],
               words[rng() % 24], rng() % 60, rng() % 60, id, rng(), id);
    if (headers_only) {
        out_printf(o, "* %u FETCH (UID %u FLAGS (\\Seen) BODY[HEADER] {%zu}\r\n", seq, 1000 + seq,
                   m.len);
        out_put(o, m.p, m.len);
        out_printf(o, ")\r\n");
        free(m.p);
        return;
    }
    out_printf(&m, "--b1_%08X\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", id);
    text_lines(&m, 500 + rng() % 4000);
    if (rng() % 2 == 0) {
        out_printf(&m, "--b1_%08X\r\nContent-Type: application/pdf; name=\"doc.pdf\"\r\n"
                       "Content-Transfer-Encoding: base64\r\n\r\n", id);
        base64_lines(&m, 2000 + rng() % 60000);
    }
    out_printf(&m, "--b1_%08X--\r\n", id);
    out_printf(o, "* %u FETCH (UID %u FLAGS (\\Seen) RFC822.SIZE %zu BODY[] {%zu}\r\n", seq,
               1000 + seq, m.len, m.len);
    out_put(o, m.p, m.len);
    out_printf(o, ")\r\n");
    free(m.p);
}

struct sink_state {
    struct out *o; /* NULL: count only */
    size_t len;
};

static int sink(void *ctx, const uint8_t *data, size_t len)
{
    struct sink_state *s = ctx;
    s->len += len;
    if (s->o != NULL) {
        out_put(s->o, data, len);
    }
    return 0;
}

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    size_t mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 16;
    size_t burst = argc > 2 ? strtoul(argv[2], NULL, 10) : 16384;
    int headers_only = argc > 3 && strcmp(argv[3], "headers") == 0;
    struct out plain = {0};
    unsigned seq = 1;

    if (mb == 0 || burst == 0) {
        fprintf(stderr, "usage: deflate_cost [MB] [burst bytes] [bodies|headers]\n");
        return 2;
    }
    while (plain.len < mb * 1024 * 1024) {
        imap_message(&plain, seq, headers_only);
        seq += 20;
    }
    printf("plaintext: %.1f MB of IMAP FETCH output (%s), a sync flush every %zu bytes\n",
           plain.len / 1048576.0, headers_only ? "header blocks" : "whole messages", burst);
    /* zlib bytes: the engine's peak, deflate's state and its idle inflate's
       (7 KiB; its 32 KiB window comes with the first input) */
    printf("%-5s %-6s %-8s %10s %8s %12s\n", "level", "window", "memLevel", "ms/MB", "ratio",
           "zlib bytes");

    static const int settings[][3] = {
        {1, 15, 8}, {6, 15, 8}, {1, 13, 5}, {6, 13, 5},
        {1, 12, 5}, {6, 12, 5}, {1, 11, 5}, {1, 10, 4},
    };
    struct out z_default = {0};
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        struct compress_opts opts;
        compress_opts_default(&opts);
        opts.level = settings[i][0];
        opts.window_bits = settings[i][1];
        opts.mem_level = settings[i][2];
        int is_default = opts.level == COMPRESS_LEVEL && opts.window_bits == COMPRESS_WINDOW_BITS &&
                         opts.mem_level == COMPRESS_MEM_LEVEL;
        double best = 0;
        size_t zlen = 0, mem = 0;
        for (int rep = 0; rep < DEFLATE_COST_REPEAT; rep++) {
            struct compress *z = compress_new(&opts);
            struct sink_state st = {is_default && rep == 0 ? &z_default : NULL, 0};
            if (z == NULL) {
                fprintf(stderr, "compress_new failed\n");
                return 1;
            }
            double t0 = cpu_ms();
            for (size_t off = 0; off < plain.len; off += burst) {
                size_t n = plain.len - off < burst ? plain.len - off : burst;
                if (compress_deflate(z, plain.p + off, n, sink, &st) != 0 ||
                    compress_flush(z, sink, &st) != 0) {
                    fprintf(stderr, "deflate failed\n");
                    return 1;
                }
            }
            double t = cpu_ms() - t0;
            if (rep == 0 || t < best) {
                best = t;
            }
            zlen = st.len;
            mem = compress_mem_peak(z);
            compress_free(z);
        }
        printf("%-5d %-6d %-8d %10.2f %8.3f %12zu%s\n", opts.level, opts.window_bits,
               opts.mem_level, best / (plain.len / 1048576.0), (double)zlen / plain.len, mem,
               is_default ? "  (default)" : "");
    }

    /* inflate what the default setting produced, as the client's side would */
    struct compress *z = compress_new(NULL);
    static uint8_t buf[16384];
    size_t got = 0;
    int same = 1;
    size_t mem_before = compress_mem_len(z);
    double t0 = cpu_ms();
    for (size_t off = 0; off < z_default.len; off += burst) {
        size_t n = z_default.len - off < burst ? z_default.len - off : burst;
        size_t m;
        compress_in_feed(z, z_default.p + off, n);
        enum compress_result r;
        while ((r = compress_inflate(z, &m, buf, sizeof(buf))) == COMPRESS_DONE) {
            if (got + m > plain.len || memcmp(plain.p + got, buf, m) != 0) {
                same = 0;
            }
            got += m;
        }
        if (r == COMPRESS_ERROR) {
            fprintf(stderr, "inflate failed: %s\n", compress_error(z));
            return 1;
        }
    }
    double t = cpu_ms() - t0;
    printf("inflate (default output): %.2f ms/MB of plaintext, %s; engine with both streams: "
           "%zu bytes at start, %zu at peak (inflate window included)\n",
           t / (plain.len / 1048576.0), same && got == plain.len ? "identical" : "MISMATCH",
           mem_before, compress_mem_peak(z));
    compress_free(z);
    free(plain.p);
    free(z_default.p);
    return same && got == plain.len ? 0 : 1;
}
