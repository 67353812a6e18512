#include "proxy/compress.h"

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include <zlib.h>

#define COMPRESS_OUT_CHUNK_LEN 16384 /* bytes of deflate output per sink call */
#define COMPRESS_ZLIB_MAX_LEN (1u << 30) /* bytes per zlib call (uInt counts) */

/* Deflate output lands here before the sink copies it: one per thread, so an
 * engine holds no output buffer of its own. */
static _Thread_local uint8_t compress_out[COMPRESS_OUT_CHUNK_LEN];

/* bytes zlib holds for all engines of the process (every worker thread) */
static atomic_size_t compress_mem_all_len;

struct compress {
    z_stream in;          /* inflate: the peer's stream */
    z_stream out;         /* deflate: ours */
    int in_ready;         /* inflateInit2 succeeded (inflateEnd due) */
    int out_ready;        /* deflateInit2 succeeded (deflateEnd due) */
    int in_more;          /* the last inflate filled its output: zlib may hold more */
    int in_ended;         /* the peer ended its stream (a final block) */
    int in_failed;        /* COMPRESS_ERROR given; every call fails again */
    int out_dirty;        /* bytes deflated since the last sync flush */
    int out_failed;       /* deflate broke; every call fails again */
    int in_borrowed;      /* in.next_in points into the caller's buffer */
    uint8_t *in_kept;     /* owned copy of unused input, or NULL; in.next_in
                             points into it when set */
    size_t in_kept_len;   /* bytes allocated at in_kept */
    size_t mem_len;       /* bytes zlib holds through compress_zalloc */
    size_t mem_peak;      /* most bytes mem_len ever was */
    size_t mem_limit;     /* bytes; 0: none */
    struct compress_opts opts; /* to set deflate up again after a trim */
    const char *err;      /* reason of the last failure */
    int err_code;         /* its code: COMPRESS_E_DATA, UV_ENOMEM, UV_EPROTO */
    struct compress_stats stats;
};

/* Each block handed to zlib carries its size in front, so that zfree can
 * count it back; the header keeps zlib's block maximally aligned. */
union compress_mem_hdr {
    size_t len;
    max_align_t align;
};

static voidpf compress_zalloc(voidpf opaque, uInt items, uInt size)
{
    struct compress *z = opaque;
    size_t len;
    union compress_mem_hdr *h;

    if (size != 0 && items > (SIZE_MAX - sizeof(*h)) / size) {
        return Z_NULL;
    }
    len = (size_t)items * size;
    if (z->mem_limit != 0 && len > z->mem_limit - z->mem_len) {
        return Z_NULL;
    }
    h = malloc(sizeof(*h) + len);
    if (h == NULL) {
        return Z_NULL;
    }
    h->len = len;
    z->mem_len += len;
    atomic_fetch_add_explicit(&compress_mem_all_len, len, memory_order_relaxed);
    if (z->mem_len > z->mem_peak) {
        z->mem_peak = z->mem_len;
    }
    return h + 1;
}

static void compress_zfree(voidpf opaque, voidpf p)
{
    struct compress *z = opaque;
    if (p == Z_NULL) {
        return;
    }
    union compress_mem_hdr *h = (union compress_mem_hdr *)p - 1;
    assert(z->mem_len >= h->len);
    z->mem_len -= h->len;
    atomic_fetch_sub_explicit(&compress_mem_all_len, h->len, memory_order_relaxed);
    free(h);
}

/* compress_out_init sets the deflate stream up.  Returns 0 or UV_ENOMEM. */
static int compress_out_init(struct compress *z)
{
    /* negative window bits: raw deflate, as RFC 4978 says */
    if (deflateInit2(&z->out, z->opts.level, Z_DEFLATED, -z->opts.window_bits,
                     z->opts.mem_level, Z_DEFAULT_STRATEGY) != Z_OK) {
        z->err = "out of memory for the deflate state";
        z->err_code = UV_ENOMEM;
        return UV_ENOMEM;
    }
    z->out_ready = 1;
    return 0;
}

void compress_opts_default(struct compress_opts *opts)
{
    opts->level = COMPRESS_LEVEL;
    opts->window_bits = COMPRESS_WINDOW_BITS;
    opts->mem_level = COMPRESS_MEM_LEVEL;
    opts->mem_limit = 0;
}

struct compress *compress_new(const struct compress_opts *opts)
{
    struct compress_opts def;
    struct compress *z;

    if (opts == NULL) {
        compress_opts_default(&def);
        opts = &def;
    }
    /* zlib turns a raw window of 2^8 into 2^9 on its own; say 9 and up */
    if (opts->level < 0 || opts->level > 9 || opts->window_bits < 9 || opts->window_bits > 15 ||
        opts->mem_level < 1 || opts->mem_level > 9) {
        return NULL;
    }
    z = calloc(1, sizeof(*z));
    if (z == NULL) {
        return NULL;
    }
    z->mem_limit = opts->mem_limit;
    z->opts = *opts;
    z->in.zalloc = z->out.zalloc = compress_zalloc;
    z->in.zfree = z->out.zfree = compress_zfree;
    z->in.opaque = z->out.opaque = z;
    if (inflateInit2(&z->in, -COMPRESS_INFLATE_WINDOW_BITS) != Z_OK) {
        goto fail;
    }
    z->in_ready = 1;
    if (compress_out_init(z) != 0) {
        goto fail;
    }
    return z;
fail:
    compress_free(z);
    return NULL;
}

void compress_free(struct compress *z)
{
    if (z == NULL) {
        return;
    }
    if (z->in_ready) {
        inflateEnd(&z->in);
    }
    if (z->out_ready) {
        deflateEnd(&z->out); /* Z_DATA_ERROR mid-stream is fine: freed all the same */
    }
    assert(z->mem_len == 0);
    free(z->in_kept);
    free(z);
}

/* compress_in_release frees the kept input once zlib has used all of it. */
static void compress_in_release(struct compress *z)
{
    if (z->in_kept != NULL && z->in.avail_in == 0) {
        free(z->in_kept);
        z->in_kept = NULL;
        z->in_kept_len = 0;
        z->in.next_in = Z_NULL;
    }
}

/* compress_in_copy replaces zlib's input with one owned copy of what is left
 * of it followed by data. */
static int compress_in_copy(struct compress *z, const uint8_t *data, size_t len)
{
    size_t left = z->in.avail_in;
    if (left + len > COMPRESS_MAX_IN_LEN) {
        return UV_ENOBUFS;
    }
    uint8_t *p = malloc(left + len);
    if (p == NULL) {
        return UV_ENOMEM;
    }
    if (left > 0) {
        memcpy(p, z->in.next_in, left);
    }
    if (len > 0) {
        memcpy(p + left, data, len);
    }
    free(z->in_kept);
    z->in_kept = p;
    z->in_kept_len = left + len;
    z->in.next_in = p;
    z->in.avail_in = (uInt)(left + len);
    z->in_borrowed = 0;
    return 0;
}

int compress_in_feed(struct compress *z, const uint8_t *data, size_t len)
{
    if (len == 0) {
        return 0;
    }
    z->stats.in_z += len;
    if (z->in.avail_in > 0) {
        return compress_in_copy(z, data, len);
    }
    if (len > COMPRESS_MAX_IN_LEN) {
        return UV_ENOBUFS;
    }
    compress_in_release(z);
    z->in.next_in = (Bytef *)data; /* borrowed; zlib does not write through it */
    z->in.avail_in = (uInt)len;
    z->in_borrowed = 1;
    return 0;
}

int compress_in_keep(struct compress *z)
{
    if (z->in.avail_in == 0) {
        compress_in_release(z);
        z->in_borrowed = 0;
        z->in.next_in = Z_NULL;
        return 0;
    }
    if (!z->in_borrowed) {
        return 0; /* already ours */
    }
    return compress_in_copy(z, NULL, 0);
}

size_t compress_in_len(const struct compress *z)
{
    return z->in.avail_in;
}

int compress_in_pending(const struct compress *z)
{
    return !z->in_failed && (z->in.avail_in > 0 || z->in_more);
}

static enum compress_result compress_in_fail(struct compress *z, int code, const char *why)
{
    z->in_failed = 1;
    z->err = why;
    z->err_code = code;
    return COMPRESS_ERROR;
}

enum compress_result compress_inflate(struct compress *z, size_t *out_len, uint8_t *out,
                                      size_t cap)
{
    assert(cap > 0);
    if (z->in_failed) {
        return COMPRESS_ERROR;
    }
    if (z->in_ended) {
        if (z->in.avail_in > 0) {
            return compress_in_fail(z, COMPRESS_E_DATA,
                                    "data after the end of the compressed stream");
        }
        return COMPRESS_WANT;
    }
    if (z->in.avail_in == 0 && !z->in_more) {
        return COMPRESS_WANT;
    }
    z->in.next_out = out;
    z->in.avail_out = cap > COMPRESS_ZLIB_MAX_LEN ? COMPRESS_ZLIB_MAX_LEN : (uInt)cap;
    size_t room = z->in.avail_out;
    /* with output room left, zlib stops only when the input is used up, at
       the stream's end, or on an error: one call is enough */
    int r = inflate(&z->in, Z_SYNC_FLUSH);
    size_t n = room - z->in.avail_out;
    z->in_more = z->in.avail_out == 0;
    compress_in_release(z);
    switch (r) {
    case Z_OK:
        break;
    case Z_STREAM_END:
        z->in_ended = 1;
        z->in_more = 0;
        break;
    case Z_BUF_ERROR:
        /* no progress possible: all input used, nothing held */
        z->in_more = 0;
        break;
    case Z_MEM_ERROR:
        return compress_in_fail(z, UV_ENOMEM, "out of memory for the inflate window");
    default:
        /* Z_DATA_ERROR, or Z_NEED_DICT (a raw stream cannot ask for one) */
        return compress_in_fail(z, COMPRESS_E_DATA,
                                z->in.msg != NULL ? z->in.msg : "corrupt compressed stream");
    }
    if (n == 0) {
        return COMPRESS_WANT;
    }
    z->stats.in_plain += n;
    *out_len = n;
    return COMPRESS_DONE;
}

/* compress_run feeds zlib's deflate output to sink until it has taken all
 * input and, for a flush, given all output. */
static int compress_run(struct compress *z, int flush, compress_sink_cb sink, void *ctx)
{
    int r;
    do {
        z->out.next_out = compress_out;
        z->out.avail_out = sizeof(compress_out);
        r = deflate(&z->out, flush);
        if (r == Z_STREAM_ERROR) {
            z->out_failed = 1;
            z->err = "deflate stream broken";
            z->err_code = UV_EPROTO;
            return UV_EPROTO;
        }
        size_t n = sizeof(compress_out) - z->out.avail_out;
        if (n > 0) {
            z->stats.out_z += n;
            int sr = sink(ctx, compress_out, n);
            if (sr != 0) {
                return sr;
            }
        }
        /* Z_BUF_ERROR: nothing to do (a flush with nothing new) */
    } while (r != Z_BUF_ERROR && (z->out.avail_out == 0 || z->out.avail_in > 0));
    return 0;
}

int compress_deflate(struct compress *z, const uint8_t *data, size_t len,
                     compress_sink_cb sink, void *ctx)
{
    if (z->out_failed) {
        return UV_EPROTO;
    }
    if (len > 0 && !z->out_ready && compress_out_init(z) != 0) {
        return UV_ENOMEM;
    }
    while (len > 0) {
        size_t chunk = len > COMPRESS_ZLIB_MAX_LEN ? COMPRESS_ZLIB_MAX_LEN : len;
        z->out.next_in = (Bytef *)data; /* zlib does not write through it */
        z->out.avail_in = (uInt)chunk;
        z->out_dirty = 1;
        z->stats.out_plain += chunk;
        int r = compress_run(z, Z_NO_FLUSH, sink, ctx);
        /* the caller's bytes are borrowed for this call only */
        z->out.next_in = Z_NULL;
        z->out.avail_in = 0;
        if (r != 0) {
            return r;
        }
        data += chunk;
        len -= chunk;
    }
    return 0;
}

int compress_flush(struct compress *z, compress_sink_cb sink, void *ctx)
{
    if (z->out_failed) {
        return UV_EPROTO;
    }
    if (!z->out_dirty) {
        return 0;
    }
    int r = compress_run(z, Z_SYNC_FLUSH, sink, ctx);
    if (r == 0) {
        z->out_dirty = 0;
        z->stats.flushes++;
    }
    return r;
}

void compress_out_trim(struct compress *z)
{
    if (z->out_ready && !z->out_dirty) {
        deflateEnd(&z->out);
        z->out_ready = 0;
    }
}

size_t compress_out_pending(const struct compress *z)
{
    unsigned pending = 0;
    int bits = 0;
    if (!z->out_ready) {
        return 0;
    }
    /* deflatePending takes a non-const stream but only reads it */
    if (deflatePending((z_streamp)&z->out, &pending, &bits) != Z_OK) {
        return 0;
    }
    return (size_t)pending + (bits > 0 ? 1 : 0);
}

size_t compress_mem_len(const struct compress *z)
{
    return z->mem_len;
}

size_t compress_mem_peak(const struct compress *z)
{
    return z->mem_peak;
}

size_t compress_mem_all(void)
{
    return atomic_load_explicit(&compress_mem_all_len, memory_order_relaxed);
}

void compress_get_stats(const struct compress *z, struct compress_stats *out)
{
    *out = z->stats;
}

int compress_error_code(const struct compress *z)
{
    return z->err_code;
}

const char *compress_error(const struct compress *z)
{
    return z->err != NULL ? z->err : "no compression error";
}
