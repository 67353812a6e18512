/* compress: the COMPRESS=DEFLATE engine (RFC 4978) over zlib, one raw
 * deflate stream (RFC 1951, no zlib header) each way.  It knows nothing of
 * sockets or IMAP: compressed input goes in with compress_in_feed() and comes
 * out inflated, in bounded pieces, from compress_inflate(); plaintext goes in
 * with compress_deflate() and leaves through a sink callback, completed by
 * compress_flush() at the end of each write burst.  zlib's 0/Z_* conventions
 * stay inside compress.c.
 *
 * Memory: every byte zlib allocates goes through a counting allocator
 * (compress_mem_len); with the defaults below one engine holds about 77 KiB
 * (deflate 38 KiB, inflate 7 KiB of state plus its 32 KiB window once the
 * peer sends data), all freed by compress_free. */
#ifndef IMAPMUX_PROXY_COMPRESS_H
#define IMAPMUX_PROXY_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Deflate (our output), measured by tests/bench/deflate_cost.c on FETCH
 * output with a sync flush every 16 KiB (README): level 1 costs 15 ms of CPU
 * per MB of header blocks (ratio 0.345) where level 6 costs 21 (0.304); on
 * whole messages, mostly base64 attachments, 28 against 30 for 0.705 against
 * 0.701.  That is ten times what the whole relay, TLS included, costs per
 * MB fetched, so level 1.
 * Window 2^12 and memLevel 5 hold 38 KiB instead of zlib's default 262 KiB
 * (2^15, 8) for 0.345 against 0.324 on headers.  RFC 1951 lets the
 * compressor use a smaller window than the peer's inflater. */
#define COMPRESS_LEVEL 1
#define COMPRESS_WINDOW_BITS 12
#define COMPRESS_MEM_LEVEL 5
/* Inflate (the peer's output): the peer chooses its window, up to 32 KiB
 * distances, so ours must be 2^15. */
#define COMPRESS_INFLATE_WINDOW_BITS 15
/* bytes of compressed input kept across a pause of the reader; the conn
 * keeps at most one read's worth (64 KiB), this is a guard */
#define COMPRESS_MAX_IN_LEN (256 * 1024)

/* Project codes below libuv's range (libuv's lowest is UV_EOF, -4095). */
#define COMPRESS_E_DATA IMAPMUX_E_COMPRESS /* the peer's compressed stream is corrupt */

struct compress;

struct compress_opts {
    int level;        /* deflate level 0..9 */
    int window_bits;  /* deflate window 9..15 (2^n bytes) */
    int mem_level;    /* deflate memLevel 1..9 */
    size_t mem_limit; /* bytes zlib may hold in all; 0: no limit (tests make
                         allocations fail with it) */
};

/* compress_opts_default fills opts with the COMPRESS_* defaults. */
void compress_opts_default(struct compress_opts *opts);

/* compress_new returns an engine with both streams set up (opts NULL: the
 * defaults), or NULL when memory for it cannot be had (within
 * opts->mem_limit) or opts are out of range.  Free with compress_free. */
struct compress *compress_new(const struct compress_opts *opts);

/* compress_free releases the engine and all zlib memory; NULL is fine. */
void compress_free(struct compress *z);

enum compress_result {
    COMPRESS_DONE,  /* inflated bytes produced */
    COMPRESS_WANT,  /* all input used, nothing more to produce: feed more */
    COMPRESS_ERROR, /* corrupt stream or no memory; compress_error says which */
};

/* compress_in_feed gives the engine len bytes of compressed input, borrowed:
 * they must stay valid until the engine has used them all (compress_inflate
 * says COMPRESS_WANT) or until compress_in_keep.  Input left from an earlier
 * feed is kept in front of it (copied).  Returns 0, UV_ENOMEM, or UV_ENOBUFS
 * past COMPRESS_MAX_IN_LEN unused bytes. */
int compress_in_feed(struct compress *z, const uint8_t *data, size_t len);

/* compress_in_keep copies the unused part of borrowed input into the engine,
 * so that the caller's buffer may be reused.  Returns 0 or UV_ENOMEM. */
int compress_in_keep(struct compress *z);

/* compress_in_len returns the bytes of compressed input fed and not yet
 * used; compress_in_pending returns 1 if compress_inflate may produce bytes
 * without new input (input left, or output zlib still holds). */
size_t compress_in_len(const struct compress *z);
int compress_in_pending(const struct compress *z);

/* compress_inflate writes up to cap (> 0) inflated bytes to out, so that a
 * small input that inflates to a lot comes out in pieces, as fast as the
 * caller takes them.  *out_len is set on COMPRESS_DONE.  After
 * COMPRESS_ERROR every call fails again. */
enum compress_result compress_inflate(struct compress *z, size_t *out_len, uint8_t *out,
                                      size_t cap);

/* compress_sink_cb takes compressed output, borrowed for the call; it
 * returns 0, or a negative code that stops the engine's call and is returned
 * by it. */
typedef int (*compress_sink_cb)(void *ctx, const uint8_t *data, size_t len);

/* compress_deflate compresses len bytes; zlib may hold some of its output
 * until compress_flush.  Pieces of output go to sink.  Returns 0, the sink's
 * code, or UV_EPROTO if the stream is broken. */
int compress_deflate(struct compress *z, const uint8_t *data, size_t len,
                     compress_sink_cb sink, void *ctx);

/* compress_flush ends a write burst: a sync flush (an empty stored block)
 * gives the peer every byte written so far, byte aligned.  Does nothing if
 * nothing was written since the last flush.  Returns as compress_deflate. */
int compress_flush(struct compress *z, compress_sink_cb sink, void *ctx);

/* compress_out_trim frees the deflate state if everything written was
 * flushed; the next compress_deflate sets up a new one (which then may fail
 * with UV_ENOMEM).  The peer sees no seam: after a sync flush a fresh raw
 * deflate stream goes on as a valid continuation, it only cannot refer to
 * earlier output.  For a session going idle: saves the deflate state's
 * bytes for as long as nothing is written. */
void compress_out_trim(struct compress *z);

/* compress_out_pending returns the bytes of compressed output zlib holds
 * (a lower bound of what a flush would emit); 0 right after a flush. */
size_t compress_out_pending(const struct compress *z);

/* compress_mem_len returns the bytes zlib holds now through the counting
 * allocator (its state and windows, not the engine's struct or kept input);
 * compress_mem_peak the most it held at once. */
size_t compress_mem_len(const struct compress *z);
size_t compress_mem_peak(const struct compress *z);

/* compress_mem_all returns the bytes zlib holds for all engines of the
 * process, every thread's (a gauge for metrics; 0 when none lives). */
size_t compress_mem_all(void);

struct compress_stats {
    uint64_t in_z;      /* compressed bytes fed */
    uint64_t in_plain;  /* bytes inflated */
    uint64_t out_plain; /* bytes given to compress_deflate */
    uint64_t out_z;     /* compressed bytes given to the sink */
    uint64_t flushes;   /* sync flushes made (write bursts) */
};

/* compress_get_stats copies the byte counters into out. */
void compress_get_stats(const struct compress *z, struct compress_stats *out);

/* compress_error returns a short reason for the last COMPRESS_ERROR (static
 * text, or zlib's, valid while the engine lives). */
const char *compress_error(const struct compress *z);

/* compress_error_code returns the last failure's code: COMPRESS_E_DATA for
 * the peer's corrupt stream, UV_ENOMEM, UV_EPROTO; 0 if none. */
int compress_error_code(const struct compress *z);

#endif
