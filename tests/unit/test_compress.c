/* The COMPRESS=DEFLATE engine without sockets: round trips in every split
 * and byte by byte, 2 MB of mixed data against zlib on the test side both
 * ways, sync flushes a reader sees without the stream ending, corrupt input,
 * a decompression bomb held to bounded memory, the allocation counter and
 * allocation failures. */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include <uv.h>

#include <zlib.h>

#include "proxy/compress.h"

#define PIECE_LEN 16384             /* bytes per compress_inflate, as the conn asks */
#define MIX_LEN (2 * 1024 * 1024)   /* the large test's plaintext */
#define BOMB_LEN (256u * 1024 * 1024) /* what the bomb inflates to */

static uint64_t rng_state;

static uint32_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

struct buf {
    uint8_t *p;
    size_t len, cap;
};

static void buf_put(struct buf *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert(b->p != NULL);
    }
    if (len > 0) {
        memcpy(b->p + b->len, data, len);
    }
    b->len += len;
}

static int sink_buf(void *ctx, const uint8_t *data, size_t len)
{
    buf_put(ctx, data, len);
    return 0;
}

/* IMAP-like text and random bytes in alternating runs */
static void make_mix(struct buf *b, size_t len)
{
    static const char *const lines[] = {
        "* 12 FETCH (UID 4711 FLAGS (\\Seen) BODY[] {5120}\r\n",
        "Received: from mx1.example.net by mail.example.org; Tue, 1 Dec 2026\r\n",
        "Subject: the meeting about the budget of next week\r\n",
        "a7 OK FETCH completed.\r\n",
    };
    rng_state = 0x1234567887654321ull;
    while (b->len < len) {
        size_t run = 1 + rng() % 4096;
        if (run > len - b->len) {
            run = len - b->len;
        }
        if (rng() % 2 == 0) {
            for (size_t i = 0; i < run; i++) {
                uint8_t c = (uint8_t)rng();
                buf_put(b, &c, 1);
            }
        } else {
            size_t end = b->len + run;
            while (b->len < end) {
                const char *l = lines[rng() % 4];
                size_t n = strlen(l);
                buf_put(b, l, n < end - b->len ? n : end - b->len);
            }
        }
    }
}

/* zlib on the test side, as a client would use it: raw, 32 KiB window */
static void peer_deflate(struct buf *out, const uint8_t *data, size_t len, int level, int flush)
{
    z_stream s;
    uint8_t tmp[65536];
    memset(&s, 0, sizeof(s));
    cr_assert_eq(deflateInit2(&s, level, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    s.next_in = (Bytef *)data;
    s.avail_in = (uInt)len;
    do {
        s.next_out = tmp;
        s.avail_out = sizeof(tmp);
        int r = deflate(&s, flush);
        cr_assert(r == Z_OK || r == Z_STREAM_END || r == Z_BUF_ERROR);
        buf_put(out, tmp, sizeof(tmp) - s.avail_out);
    } while (s.avail_out == 0);
    deflateEnd(&s);
}

struct peer_inflater {
    z_stream s;
    struct buf out;
};

static void peer_inflate_init(struct peer_inflater *p)
{
    memset(p, 0, sizeof(*p));
    cr_assert_eq(inflateInit2(&p->s, -15), Z_OK);
}

/* peer_inflate feeds len bytes and takes all the output zlib can give */
static void peer_inflate(struct peer_inflater *p, const uint8_t *data, size_t len)
{
    uint8_t tmp[65536];
    p->s.next_in = (Bytef *)data;
    p->s.avail_in = (uInt)len;
    do {
        p->s.next_out = tmp;
        p->s.avail_out = sizeof(tmp);
        int r = inflate(&p->s, Z_SYNC_FLUSH);
        cr_assert(r == Z_OK || r == Z_BUF_ERROR || r == Z_STREAM_END, "peer inflate: %d", r);
        buf_put(&p->out, tmp, sizeof(tmp) - p->s.avail_out);
    } while (p->s.avail_out == 0 || p->s.avail_in > 0);
}

static void peer_inflate_end(struct peer_inflater *p)
{
    inflateEnd(&p->s);
    free(p->out.p);
}

/* engine_drain inflates until the engine wants input; every piece within
 * cap. */
static void engine_drain(struct compress *z, struct buf *out, size_t cap)
{
    static uint8_t piece[PIECE_LEN];
    size_t n = 0;
    enum compress_result r;
    cr_assert(cap <= sizeof(piece));
    for (int guard = 0; guard < 1 << 26; guard++) {
        r = compress_inflate(z, &n, piece, cap);
        if (r != COMPRESS_DONE) {
            cr_assert_eq(r, COMPRESS_WANT, "inflate failed: %s", compress_error(z));
            return;
        }
        cr_assert(n > 0 && n <= cap);
        buf_put(out, piece, n);
    }
    cr_assert_fail("inflate did not stop");
}

static void engine_compress(struct buf *out, const uint8_t *data, size_t len)
{
    struct compress *z = compress_new(NULL);
    cr_assert(z != NULL);
    cr_assert_eq(compress_deflate(z, data, len, sink_buf, out), 0);
    cr_assert_eq(compress_flush(z, sink_buf, out), 0);
    compress_free(z);
}

static void small_text(struct buf *b)
{
    make_mix(b, 3000);
}

Test(compress, inflate_in_every_split)
{
    struct buf plain = {0}, zdata = {0};
    small_text(&plain);
    engine_compress(&zdata, plain.p, plain.len);
    cr_assert_lt(zdata.len, plain.len);
    for (size_t i = 0; i <= zdata.len; i++) {
        struct compress *z = compress_new(NULL);
        struct buf out = {0};
        cr_assert_eq(compress_in_feed(z, zdata.p, i), 0);
        engine_drain(z, &out, PIECE_LEN);
        cr_assert_eq(compress_in_feed(z, zdata.p + i, zdata.len - i), 0);
        engine_drain(z, &out, PIECE_LEN);
        cr_assert_eq(out.len, plain.len, "split %zu", i);
        cr_assert_eq(memcmp(out.p, plain.p, plain.len), 0, "split %zu", i);
        compress_free(z);
        free(out.p);
    }
    free(plain.p);
    free(zdata.p);
}

Test(compress, deflate_in_every_split)
{
    struct buf plain = {0};
    small_text(&plain);
    for (size_t i = 0; i <= plain.len; i++) {
        struct compress *z = compress_new(NULL);
        struct buf zdata = {0};
        struct peer_inflater p;
        cr_assert_eq(compress_deflate(z, plain.p, i, sink_buf, &zdata), 0);
        cr_assert_eq(compress_flush(z, sink_buf, &zdata), 0);
        cr_assert_eq(compress_deflate(z, plain.p + i, plain.len - i, sink_buf, &zdata), 0);
        cr_assert_eq(compress_flush(z, sink_buf, &zdata), 0);
        peer_inflate_init(&p);
        peer_inflate(&p, zdata.p, zdata.len);
        cr_assert_eq(p.out.len, plain.len, "split %zu", i);
        cr_assert_eq(memcmp(p.out.p, plain.p, plain.len), 0, "split %zu", i);
        peer_inflate_end(&p);
        compress_free(z);
        free(zdata.p);
    }
    free(plain.p);
}

Test(compress, byte_by_byte_both_ways)
{
    struct buf plain = {0}, zdata = {0}, out = {0};
    struct compress_stats st;
    small_text(&plain);

    struct compress *w = compress_new(NULL);
    for (size_t i = 0; i < plain.len; i++) {
        cr_assert_eq(compress_deflate(w, plain.p + i, 1, sink_buf, &zdata), 0);
    }
    cr_assert_eq(compress_flush(w, sink_buf, &zdata), 0);
    compress_get_stats(w, &st);
    cr_assert_eq(st.flushes, 1, "one burst, one flush");
    cr_assert_eq(st.out_plain, plain.len);
    cr_assert_eq(st.out_z, zdata.len);

    struct compress *r = compress_new(NULL);
    for (size_t i = 0; i < zdata.len; i++) {
        cr_assert_eq(compress_in_feed(r, zdata.p + i, 1), 0);
        engine_drain(r, &out, 1); /* one byte out at a time, too */
    }
    cr_assert_eq(out.len, plain.len);
    cr_assert_eq(memcmp(out.p, plain.p, plain.len), 0);
    compress_get_stats(r, &st);
    cr_assert_eq(st.in_z, zdata.len);
    cr_assert_eq(st.in_plain, plain.len);
    compress_free(w);
    compress_free(r);
    free(plain.p);
    free(zdata.p);
    free(out.p);
}

Test(compress, two_megabytes_random_splits_and_zlib_peers)
{
    struct buf plain = {0}, zdata = {0}, out = {0}, peer_z = {0}, out2 = {0};
    static uint8_t scratch[70000], piece[PIECE_LEN];
    make_mix(&plain, MIX_LEN);

    /* our deflate: random writes, a flush at random burst ends */
    struct compress *w = compress_new(NULL);
    rng_state = 42;
    for (size_t off = 0; off < plain.len;) {
        size_t n = 1 + rng() % 70000;
        if (n > plain.len - off) {
            n = plain.len - off;
        }
        cr_assert_eq(compress_deflate(w, plain.p + off, n, sink_buf, &zdata), 0);
        off += n;
        if (rng() % 3 == 0) {
            cr_assert_eq(compress_flush(w, sink_buf, &zdata), 0);
        }
    }
    cr_assert_eq(compress_flush(w, sink_buf, &zdata), 0);
    cr_assert_eq(compress_out_pending(w), 0);
    compress_free(w);

    /* zlib on the client side reads it */
    struct peer_inflater p;
    peer_inflate_init(&p);
    peer_inflate(&p, zdata.p, zdata.len);
    cr_assert_eq(p.out.len, plain.len);
    cr_assert_eq(memcmp(p.out.p, plain.p, plain.len), 0);
    peer_inflate_end(&p);

    /* our inflate: random feeds from a scratch that is reused (garbage
       written over it) after a random number of pieces and a keep */
    struct compress *r = compress_new(NULL);
    for (size_t off = 0; off < zdata.len;) {
        size_t n = 1 + rng() % sizeof(scratch);
        if (n > zdata.len - off) {
            n = zdata.len - off;
        }
        memcpy(scratch, zdata.p + off, n);
        cr_assert_eq(compress_in_feed(r, scratch, n), 0);
        off += n;
        /* a reader that takes a few pieces and pauses */
        unsigned pieces = rng() % 8;
        for (unsigned k = 0; k < pieces; k++) {
            size_t m = 0;
            enum compress_result res = compress_inflate(r, &m, piece, 1 + rng() % PIECE_LEN);
            cr_assert_neq(res, COMPRESS_ERROR);
            if (res == COMPRESS_WANT) {
                break;
            }
            buf_put(&out, piece, m);
        }
        cr_assert_eq(compress_in_keep(r), 0);
        memset(scratch, 0xa5, sizeof(scratch));
        if (compress_in_len(r) > COMPRESS_MAX_IN_LEN / 2) {
            engine_drain(r, &out, PIECE_LEN); /* and catches up */
        }
    }
    engine_drain(r, &out, PIECE_LEN);
    cr_assert_eq(out.len, plain.len);
    cr_assert_eq(memcmp(out.p, plain.p, plain.len), 0);

    /* and a client's stream at zlib's strongest setting (32 KiB distances) */
    struct compress *r2 = compress_new(NULL);
    peer_deflate(&peer_z, plain.p, plain.len, 9, Z_SYNC_FLUSH);
    for (size_t off = 0; off < peer_z.len; off += 4096) {
        size_t n = peer_z.len - off < 4096 ? peer_z.len - off : 4096;
        cr_assert_eq(compress_in_feed(r2, peer_z.p + off, n), 0);
        engine_drain(r2, &out2, PIECE_LEN);
    }
    cr_assert_eq(out2.len, plain.len);
    cr_assert_eq(memcmp(out2.p, plain.p, plain.len), 0);

    compress_free(r);
    compress_free(r2);
    free(plain.p);
    free(zdata.p);
    free(out.p);
    free(out2.p);
    free(peer_z.p);
}

Test(compress, sync_flush_gives_the_reader_every_burst)
{
    struct compress *w = compress_new(NULL);
    struct buf zdata = {0}, plain = {0};
    struct peer_inflater p;
    size_t seen = 0;
    char line[128];

    peer_inflate_init(&p);
    rng_state = 7;
    for (int burst = 0; burst < 200; burst++) {
        size_t before = zdata.len;
        int writes = 1 + (int)(rng() % 5);
        for (int k = 0; k < writes; k++) {
            int n = snprintf(line, sizeof(line), "* %d FETCH (UID %u FLAGS (\\Seen))\r\n", burst,
                             rng());
            cr_assert_eq(compress_deflate(w, (const uint8_t *)line, (size_t)n, sink_buf, &zdata), 0);
            buf_put(&plain, line, (size_t)n);
        }
        /* small writes are held, not flushed one by one */
        cr_assert_eq(zdata.len, before, "burst %d: output before the flush", burst);
        cr_assert_eq(compress_flush(w, sink_buf, &zdata), 0);
        cr_assert_eq(compress_flush(w, sink_buf, &zdata), 0); /* a second one adds nothing */
        cr_assert_geq(zdata.len, before + 4);
        cr_assert_eq(memcmp(zdata.p + zdata.len - 4, "\x00\x00\xff\xff", 4), 0,
                     "a sync flush ends with an empty stored block");
        /* the reader has all of it now, the stream still open */
        peer_inflate(&p, zdata.p + seen, zdata.len - seen);
        seen = zdata.len;
        cr_assert_eq(p.out.len, plain.len, "burst %d", burst);
        cr_assert_eq(memcmp(p.out.p, plain.p, plain.len), 0);
    }
    struct compress_stats st;
    compress_get_stats(w, &st);
    cr_assert_eq(st.flushes, 200);
    peer_inflate_end(&p);
    compress_free(w);
    free(zdata.p);
    free(plain.p);
}

static void expect_corrupt(const uint8_t *data, size_t len, const char *reason)
{
    struct compress *z = compress_new(NULL);
    uint8_t out[PIECE_LEN];
    size_t n = 0;
    enum compress_result r = COMPRESS_WANT;
    cr_assert_eq(compress_in_feed(z, data, len), 0);
    for (int guard = 0; guard < 1000 && (r = compress_inflate(z, &n, out, sizeof(out))) ==
                                            COMPRESS_DONE;
         guard++) {
    }
    cr_assert_eq(r, COMPRESS_ERROR, "%s: not an error", reason);
    cr_assert(strstr(compress_error(z), reason) != NULL, "reason: %s", compress_error(z));
    cr_assert_eq(compress_error_code(z), COMPRESS_E_DATA);
    cr_assert_eq(compress_inflate(z, &n, out, sizeof(out)), COMPRESS_ERROR, "errors stay");
    cr_assert_eq(compress_in_pending(z), 0);
    compress_free(z);
}

Test(compress, corrupt_input_is_an_error)
{
    /* block type 3 is reserved */
    static const uint8_t bad_type[] = {0x06, 0x00};
    /* a stored block whose length and its complement disagree */
    static const uint8_t bad_stored[] = {0x00, 0x05, 0x00, 0x00, 0x00, 'h', 'e', 'l', 'l', 'o'};
    static const uint8_t all_ff[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    expect_corrupt(bad_type, sizeof(bad_type), "invalid block type");
    expect_corrupt(bad_stored, sizeof(bad_stored), "invalid stored block lengths");
    expect_corrupt(all_ff, sizeof(all_ff), "invalid");

    /* a good stream, ended, and then more bytes */
    struct buf zdata = {0};
    peer_deflate(&zdata, (const uint8_t *)"a1 NOOP\r\n", 9, 6, Z_FINISH);
    buf_put(&zdata, "x", 1);
    expect_corrupt(zdata.p, zdata.len, "after the end");
    free(zdata.p);
}

Test(compress, bomb_comes_out_in_bounded_pieces)
{
    static uint8_t zeros[1 << 20];
    struct buf zdata = {0};
    z_stream s;
    uint8_t tmp[65536];

    /* a client's 256 MB of zeros: about 250 KB compressed */
    memset(&s, 0, sizeof(s));
    cr_assert_eq(deflateInit2(&s, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    for (unsigned i = 0; i < BOMB_LEN / sizeof(zeros); i++) {
        s.next_in = zeros;
        s.avail_in = sizeof(zeros);
        int last = i + 1 == BOMB_LEN / sizeof(zeros);
        do {
            s.next_out = tmp;
            s.avail_out = sizeof(tmp);
            cr_assert_neq(deflate(&s, last ? Z_SYNC_FLUSH : Z_NO_FLUSH), Z_STREAM_ERROR);
            buf_put(&zdata, tmp, sizeof(tmp) - s.avail_out);
        } while (s.avail_out == 0);
    }
    deflateEnd(&s);
    cr_assert_lt(zdata.len, 512 * 1024);

    struct compress *z = compress_new(NULL);
    size_t start_mem = compress_mem_len(z);
    size_t total = 0, max_piece = 0, max_mem = 0, max_in = 0;
    static uint8_t piece[PIECE_LEN];
    int paused_checked = 0;
    for (size_t off = 0; off < zdata.len; off += 16384) {
        size_t n = zdata.len - off < 16384 ? zdata.len - off : 16384;
        cr_assert_eq(compress_in_feed(z, zdata.p + off, n), 0);
        for (;;) {
            size_t m = 0;
            enum compress_result r = compress_inflate(z, &m, piece, sizeof(piece));
            cr_assert_neq(r, COMPRESS_ERROR, "%s", compress_error(z));
            if (r == COMPRESS_WANT) {
                break;
            }
            cr_assert_eq(memcmp(piece, zeros, m), 0);
            total += m;
            max_piece = m > max_piece ? m : max_piece;
            max_mem = compress_mem_len(z) > max_mem ? compress_mem_len(z) : max_mem;
            max_in = compress_in_len(z) > max_in ? compress_in_len(z) : max_in;
            if (!paused_checked && total >= 8 * 1024 * 1024) {
                /* the reader pauses: what is left is copied, nothing grows */
                paused_checked = 1;
                cr_assert(compress_in_pending(z));
                cr_assert_eq(compress_in_keep(z), 0);
                cr_assert_leq(compress_in_len(z), 16384);
            }
        }
    }
    cr_assert_eq(total, BOMB_LEN);
    cr_assert_eq(max_piece, PIECE_LEN);
    cr_assert(paused_checked);
    cr_assert_leq(max_in, 16384, "input held: %zu", max_in);
    /* the state, the 32 KiB window, nothing that grows with the output */
    cr_assert_leq(max_mem, start_mem + 32768, "zlib held %zu", max_mem);
    cr_assert_leq(compress_mem_peak(z), start_mem + 32768);
    compress_free(z);
    free(zdata.p);
}

Test(compress, memory_is_counted_and_bounded)
{
    struct compress_opts big;
    struct buf zdata = {0}, out = {0};
    struct compress *z = compress_new(NULL);
    size_t start = compress_mem_len(z);

    /* deflate 2^12 window, memLevel 5, and inflate's state: under 64 KiB */
    cr_assert_gt(start, 16 * 1024);
    cr_assert_lt(start, 64 * 1024, "zlib holds %zu bytes", start);
    cr_assert_eq(compress_mem_all(), start, "the process-wide gauge counts the same");
    cr_assert_eq(compress_mem_peak(z), start);

    /* the inflate window comes with the first input: 32 KiB */
    peer_deflate(&zdata, (const uint8_t *)"a1 NOOP\r\n", 9, 6, Z_SYNC_FLUSH);
    cr_assert_eq(compress_in_feed(z, zdata.p, zdata.len), 0);
    engine_drain(z, &out, PIECE_LEN);
    cr_assert_eq(out.len, 9);
    cr_assert_eq(compress_mem_len(z), start + 32768);

    /* trimming the idle compressor gives its state back, writing takes it
       again */
    size_t used = compress_mem_len(z);
    compress_out_trim(z);
    cr_assert_lt(compress_mem_len(z), used - 16 * 1024);
    cr_assert_eq(compress_out_pending(z), 0);
    struct buf sink = {0};
    cr_assert_eq(compress_deflate(z, (const uint8_t *)"* OK\r\n", 6, sink_buf, &sink), 0);
    cr_assert_eq(compress_mem_len(z), used);
    compress_out_trim(z); /* not flushed: nothing freed */
    cr_assert_eq(compress_mem_len(z), used);
    cr_assert_eq(sink.len, 0, "held until the flush");
    compress_free(z);

    cr_assert_eq(compress_mem_all(), 0, "freed");

    /* zlib's defaults would cost several times more */
    compress_opts_default(&big);
    big.window_bits = 15;
    big.mem_level = 8;
    z = compress_new(&big);
    cr_assert_gt(compress_mem_len(z), 4 * start);
    compress_free(z);

    /* out of range settings are refused */
    big.window_bits = 8;
    cr_assert_null(compress_new(&big));
    free(zdata.p);
    free(out.p);
    free(sink.p);
}

Test(compress, trimmed_compressor_goes_on_seamlessly)
{
    struct buf plain = {0}, zdata = {0};
    struct peer_inflater p;
    make_mix(&plain, 200000);
    struct compress *z = compress_new(NULL);
    cr_assert_eq(compress_deflate(z, plain.p, 100000, sink_buf, &zdata), 0);
    cr_assert_eq(compress_flush(z, sink_buf, &zdata), 0);
    compress_out_trim(z);
    cr_assert_eq(compress_deflate(z, plain.p + 100000, 100000, sink_buf, &zdata), 0);
    cr_assert_eq(compress_flush(z, sink_buf, &zdata), 0);
    peer_inflate_init(&p);
    peer_inflate(&p, zdata.p, zdata.len);
    cr_assert_eq(p.out.len, plain.len);
    cr_assert_eq(memcmp(p.out.p, plain.p, plain.len), 0);
    peer_inflate_end(&p);
    compress_free(z);
    free(plain.p);
    free(zdata.p);
}

Test(compress, allocation_failures_are_errors)
{
    struct compress_opts o;
    struct buf zdata = {0}, sink = {0};
    uint8_t out[PIECE_LEN];
    size_t n;

    compress_opts_default(&o);
    o.mem_limit = 1000;
    cr_assert_null(compress_new(&o), "no room for zlib's state: NULL");

    /* room for the states but not for the inflate window */
    struct compress *probe = compress_new(NULL);
    o.mem_limit = compress_mem_len(probe);
    compress_free(probe);
    struct compress *z = compress_new(&o);
    cr_assert(z != NULL);
    peer_deflate(&zdata, (const uint8_t *)"a1 NOOP\r\n", 9, 6, Z_SYNC_FLUSH);
    cr_assert_eq(compress_in_feed(z, zdata.p, zdata.len), 0);
    cr_assert_eq(compress_inflate(z, &n, out, sizeof(out)), COMPRESS_ERROR);
    cr_assert(strstr(compress_error(z), "memory") != NULL, "%s", compress_error(z));
    cr_assert_eq(compress_error_code(z), UV_ENOMEM);
    compress_free(z);

    /* a trimmed compressor that cannot come back */
    z = compress_new(&o);
    compress_out_trim(z);
    cr_assert_eq(compress_in_feed(z, zdata.p, zdata.len), 0);
    cr_assert_eq(compress_inflate(z, &n, out, sizeof(out)), COMPRESS_DONE); /* window fits now */
    cr_assert_eq(compress_deflate(z, (const uint8_t *)"x", 1, sink_buf, &sink), UV_ENOMEM);
    compress_free(z);
    free(zdata.p);
    free(sink.p);
}

Test(compress, input_held_is_bounded)
{
    static uint8_t big[COMPRESS_MAX_IN_LEN + 1];
    struct compress *z = compress_new(NULL);
    cr_assert_eq(compress_in_feed(z, big, sizeof(big)), UV_ENOBUFS);
    cr_assert_eq(compress_in_feed(z, big, COMPRESS_MAX_IN_LEN / 2), 0);
    cr_assert_eq(compress_in_feed(z, big, COMPRESS_MAX_IN_LEN / 2), 0); /* kept in front */
    cr_assert_eq(compress_in_len(z), COMPRESS_MAX_IN_LEN);
    cr_assert_eq(compress_in_feed(z, big, 1), UV_ENOBUFS);
    compress_free(z);
}
