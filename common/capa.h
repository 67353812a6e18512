/* capa: IMAP capability lists (space-separated atoms, RFC 9051 section 7.2.2):
 * searching them and filtering out what the proxy does not carry.  Pure code. */
#ifndef IMAPMUX_COMMON_CAPA_H
#define IMAPMUX_COMMON_CAPA_H

#include <stddef.h>
#include <stdint.h>

/* capa_filter returns a malloc'd NUL-terminated copy of the list capas (len
 * bytes) without the capabilities the proxy does not carry (see capa.c) and
 * without tokens that are no atom because they hold '{', in
 * their order and case, single-space separated; *out_len gets its length.
 * NULL on OOM. */
char *capa_filter(size_t *out_len, const char *capas, size_t len);

/* capa_has returns 1 if the list holds name (case-insensitive, whole
 * token), else 0. */
int capa_has(const char *capas, size_t len, const char *name);

/* capa_find_in_text finds "[CAPABILITY list]" in a response text (e.g. "OK
 * [CAPABILITY IMAP4rev1 ...] Logged in" or the text after the status) and
 * returns a pointer to the list within text with its length in *out_len, or
 * NULL if the text has no such response code. */
const char *capa_find_in_text(size_t *out_len, const char *text, size_t len);

/* --- the backend's capability lines after login ------------------------------ */

#define CAPA_REWRITE_MAX_TAG_LEN 64    /* bytes of a tag on a line that may carry a list */
#define CAPA_REWRITE_HEAD_LEN (CAPA_REWRITE_MAX_TAG_LEN + 32) /* bytes of a line's start
                                          that tell whether it carries a list */
#define CAPA_REWRITE_MAX_LIST_LEN 8192 /* bytes of a rewritten list; capabilities past
                                          it are left out */
#define CAPA_REWRITE_TAIL_LEN 24       /* bytes of a line part kept to find a literal */

/* A relayed response stream (backend to client) in which every capability
 * list is filtered as capa_filter does and gets extra appended: the
 * untagged "* CAPABILITY ..." response and the "[CAPABILITY ...]" response
 * code of any status response (tagged or untagged OK, NO, BAD, PREAUTH,
 * BYE).  Every other byte passes unchanged and uncopied, literals skipped
 * by length, so that a literal holding such text is never rewritten.  Only
 * a line's start that ends a read (up to CAPA_REWRITE_HEAD_LEN bytes) and
 * the list of a line that carries one (up to CAPA_REWRITE_MAX_LIST_LEN) are
 * held, each in a buffer allocated while it is needed: in between the
 * rewriter holds no memory of its own.  A
 * capability that is no atom (a '{' in it: it could read as a literal) is
 * left out. */
struct capa_rewrite {
    const char *extra;          /* appended to each list (space-separated; "" for none);
                                   borrowed for the rewriter's life */
    uint64_t literal_left;      /* literal bytes still to pass */
    uint8_t state;              /* CAPA_RW_* in capa.c */
    uint8_t code;               /* the list is a response code: it ends at ']' */
    uint8_t tok_over;           /* the token being read did not fit: left out */
    uint8_t tail_len;
    uint8_t tail[CAPA_REWRITE_TAIL_LEN]; /* last bytes of the line part, for "{n}" */
    uint8_t head_len;           /* bytes in head */
    uint8_t *head;              /* a line's start held across reads (CAPA_REWRITE_HEAD_LEN
                                   bytes, allocated while one is held), or NULL (owned) */
    char *list;                 /* the rewritten list being built, or NULL (owned) */
    size_t list_len;            /* bytes in list */
    size_t tok_start;           /* where the token being read starts in list (at its ' ') */
};

/* capa_rewrite_out_cb receives the stream to send on: slices of the data
 * fed (borrowed until it returns) and the rewriter's own bytes. */
typedef void (*capa_rewrite_out_cb)(void *ctx, const uint8_t *p, size_t n);

/* capa_rewrite_init sets rw up at a line start; extra (borrowed) is
 * appended to every list ("" or NULL: nothing). */
void capa_rewrite_init(struct capa_rewrite *rw, const char *extra);

/* capa_rewrite_feed passes len bytes on through out, rewritten where they
 * carry a capability list; any split of a stream gives the same output.
 * Returns 0, or -1 when a buffer could not be allocated (the rewriter is
 * then unusable: end the stream). */
int capa_rewrite_feed(struct capa_rewrite *rw, const uint8_t *data, size_t len,
                      capa_rewrite_out_cb out, void *ctx);

/* capa_rewrite_at_line_start: nothing is held, and the stream is between
 * two lines. */
int capa_rewrite_at_line_start(const struct capa_rewrite *rw);

/* capa_rewrite_cleanup frees what rw holds (a list being built). */
void capa_rewrite_cleanup(struct capa_rewrite *rw);

#endif
