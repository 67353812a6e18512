#include "common/capa.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/imap_scan.h"

/* What the proxy does not carry to the client after login.  A trailing '*'
 * matches any suffix. */
static const char *const capa_removed[] = {
    "STARTTLS",      /* TLS is the proxy's business, done before login */
    "LOGINDISABLED", /* login is over once the list is relayed */
    "AUTH=*",        /* likewise every SASL mechanism */
    "SASL-IR",       /* goes with AUTHENTICATE */
    "COMPRESS=*",    /* imapmux terminates COMPRESS itself; the backend's stays unused */
    "UNAUTHENTICATE", /* a second login behind imapmux's back: refused */
};

static int capa_removed_match(const char *tok, size_t tok_len)
{
    for (size_t i = 0; i < sizeof(capa_removed) / sizeof(capa_removed[0]); i++) {
        const char *pat = capa_removed[i];
        size_t pl = strlen(pat);
        if (pat[pl - 1] == '*') {
            if (tok_len >= pl - 1 && strncasecmp(tok, pat, pl - 1) == 0) {
                return 1;
            }
        } else if (tok_len == pl && strncasecmp(tok, pat, pl) == 0) {
            return 1;
        }
    }
    return 0;
}

/* capa_next finds the token after *pos; returns its length (0: none left)
 * with its start in *out_start, and moves *pos past it. */
static size_t capa_next(size_t *out_start, size_t *pos, const char *capas, size_t len)
{
    size_t i = *pos;
    while (i < len && capas[i] == ' ') {
        i++;
    }
    *out_start = i;
    while (i < len && capas[i] != ' ') {
        i++;
    }
    *pos = i;
    return i - *out_start;
}

char *capa_filter(size_t *out_len, const char *capas, size_t len)
{
    char *out = malloc(len + 1);
    size_t off = 0, i = 0, start, tl;

    if (out == NULL) {
        return NULL;
    }
    while ((tl = capa_next(&start, &i, capas, len)) > 0) {
        /* no atom holds '{': such a token could read as a literal's start */
        if (capa_removed_match(capas + start, tl) || memchr(capas + start, '{', tl) != NULL) {
            continue;
        }
        if (off > 0) {
            out[off++] = ' ';
        }
        memcpy(out + off, capas + start, tl);
        off += tl;
    }
    out[off] = '\0';
    *out_len = off;
    return out;
}

/* capa_has_len: capa_has for a name of nl bytes. */
static int capa_has_len(const char *capas, size_t len, const char *name, size_t nl)
{
    size_t i = 0, start, tl;
    while ((tl = capa_next(&start, &i, capas, len)) > 0) {
        if (tl == nl && strncasecmp(capas + start, name, nl) == 0) {
            return 1;
        }
    }
    return 0;
}

int capa_has(const char *capas, size_t len, const char *name)
{
    return capa_has_len(capas, len, name, strlen(name));
}

const char *capa_find_in_text(size_t *out_len, const char *text, size_t len)
{
    static const char code[] = "[CAPABILITY ";
    size_t cl = sizeof(code) - 1;
    for (size_t i = 0; i + cl <= len; i++) {
        if (strncasecmp(text + i, code, cl) != 0) {
            continue;
        }
        const char *list = text + i + cl;
        const char *end = memchr(list, ']', len - i - cl);
        if (end == NULL) {
            return NULL;
        }
        *out_len = (size_t)(end - list);
        return list;
    }
    return NULL;
}

/* --- the backend's capability lines after login ------------------------------ */

enum {
    CAPA_RW_START,   /* at a line start; head_len bytes of it held */
    CAPA_RW_PASS,    /* in a line that passes unchanged */
    CAPA_RW_LITERAL, /* in a literal of such a line */
    CAPA_RW_LIST,    /* in a capability list: its bytes are rebuilt in list */
};

void capa_rewrite_init(struct capa_rewrite *rw, const char *extra)
{
    memset(rw, 0, sizeof(*rw));
    rw->extra = extra != NULL ? extra : "";
    rw->state = CAPA_RW_START;
}

void capa_rewrite_cleanup(struct capa_rewrite *rw)
{
    free(rw->list);
    rw->list = NULL;
    free(rw->head);
    rw->head = NULL;
    rw->head_len = 0;
}

int capa_rewrite_at_line_start(const struct capa_rewrite *rw)
{
    return rw->state == CAPA_RW_START && rw->head_len == 0;
}

/* capa_rw_word matches word (upper case) case-insensitively at h[*i..n):
 * 1 when it matched (*i moves past it), 0 when the bytes ran out while they
 * agreed, -1 when they differ. */
static int capa_rw_word(const uint8_t *h, size_t n, size_t *i, const char *word)
{
    size_t j = *i;
    for (const char *w = word; *w != '\0'; w++, j++) {
        if (j >= n) {
            return 0;
        }
        uint8_t c = h[j];
        if (c >= 'a' && c <= 'z') {
            c = (uint8_t)(c - 'a' + 'A');
        }
        if (c != (uint8_t)*w) {
            return -1;
        }
    }
    *i = j;
    return 1;
}

/* capa_rw_classify tells from a line's first n bytes whether it carries a
 * capability list: 1 (*out_prefix: the bytes up to the end of the keyword
 * "CAPABILITY" or "[CAPABILITY"; *out_code: a response code), 0 when more
 * bytes are needed, -1 when it does not.  A result other than 0 depends on
 * the bytes up to *out_prefix only, so while it is 0 the prefix is at least
 * n bytes long. */
static int capa_rw_classify(const uint8_t *h, size_t n, size_t *out_prefix, int *out_code)
{
    static const char *const status[] = {"OK ", "NO ", "BAD ", "PREAUTH ", "BYE "};
    size_t i = 0;
    int r;
    if (n == 0) {
        return 0;
    }
    if (h[0] == '*') {
        i = 1;
        if ((r = capa_rw_word(h, n, &i, " ")) != 1) {
            return r;
        }
        r = capa_rw_word(h, n, &i, "CAPABILITY");
        if (r == 0) {
            return 0;
        }
        if (r == 1) {
            if (i >= n) {
                return 0;
            }
            if (h[i] != ' ' && h[i] != '\r' && h[i] != '\n') {
                return -1;
            }
            *out_prefix = i;
            *out_code = 0;
            return 1;
        }
        i = 2; /* "* " then a status word, maybe */
    } else {
        while (i < n && h[i] != ' ') {
            if (h[i] <= 0x20 || h[i] >= 0x7f || h[i] == '+' || i >= CAPA_REWRITE_MAX_TAG_LEN) {
                return -1;
            }
            i++;
        }
        if (i >= n) {
            return 0;
        }
        if (i == 0) {
            return -1;
        }
        i++;
    }
    int more = 0, matched = 0;
    for (size_t k = 0; k < sizeof(status) / sizeof(status[0]) && !matched; k++) {
        size_t j = i;
        r = capa_rw_word(h, n, &j, status[k]);
        if (r == 1) {
            i = j;
            matched = 1;
        } else if (r == 0) {
            more = 1;
        }
    }
    if (!matched) {
        return more ? 0 : -1;
    }
    if ((r = capa_rw_word(h, n, &i, "[CAPABILITY")) != 1) {
        return r;
    }
    if (i >= n) {
        return 0;
    }
    if (h[i] != ' ') {
        return -1;
    }
    *out_prefix = i;
    *out_code = 1;
    return 1;
}

/* capa_rw_tail keeps the last bytes of the line part, where "{n}" would be. */
static void capa_rw_tail(struct capa_rewrite *rw, const uint8_t *p, size_t n)
{
    if (n >= sizeof(rw->tail)) {
        memcpy(rw->tail, p + n - sizeof(rw->tail), sizeof(rw->tail));
        rw->tail_len = sizeof(rw->tail);
        return;
    }
    size_t keep = sizeof(rw->tail) - n;
    if (keep > rw->tail_len) {
        keep = rw->tail_len;
    }
    memmove(rw->tail, rw->tail + rw->tail_len - keep, keep);
    memcpy(rw->tail + keep, p, n);
    rw->tail_len = (uint8_t)(keep + n);
}

/* capa_rw_token_end keeps the token just read in the list, or takes it out:
 * what capa_filter removes, what extra adds anyway, no atom, too long. */
static void capa_rw_token_end(struct capa_rewrite *rw)
{
    if (rw->list_len > rw->tok_start) {
        const char *t = rw->list + rw->tok_start + 1; /* after its ' ' */
        size_t tl = rw->list_len - rw->tok_start - 1;
        if (rw->tok_over || capa_removed_match(t, tl) || memchr(t, '{', tl) != NULL ||
            capa_has_len(rw->extra, strlen(rw->extra), t, tl)) {
            rw->list_len = rw->tok_start;
        }
    }
    rw->tok_start = rw->list_len;
    rw->tok_over = 0;
}

/* capa_rw_list reads list bytes p[0..n); returns how many it took, up to
 * and without the list's end (*out_end set when it found it). */
static size_t capa_rw_list(struct capa_rewrite *rw, const uint8_t *p, size_t n, int *out_end)
{
    for (size_t k = 0; k < n; k++) {
        uint8_t c = p[k];
        int end = c == '\r' || c == '\n' || (rw->code && c == ']');
        if (c == ' ' || end) {
            capa_rw_token_end(rw);
            if (end) {
                *out_end = 1;
                return k;
            }
            continue;
        }
        if (rw->tok_over) {
            continue;
        }
        int first = rw->list_len == rw->tok_start;
        if (rw->list_len + (size_t)first + 1 > CAPA_REWRITE_MAX_LIST_LEN) {
            rw->tok_over = 1;
            continue;
        }
        if (first) {
            rw->list[rw->list_len++] = ' ';
        }
        rw->list[rw->list_len++] = (char)c;
    }
    *out_end = 0;
    return n;
}

int capa_rewrite_feed(struct capa_rewrite *rw, const uint8_t *data, size_t len,
                      capa_rewrite_out_cb out, void *ctx)
{
    size_t i = 0, span = 0; /* data[span..i) passes unchanged, not given to out yet */
    while (i < len) {
        switch (rw->state) {
        case CAPA_RW_LITERAL: {
            size_t n = len - i;
            if (n > rw->literal_left) {
                n = (size_t)rw->literal_left;
            }
            rw->literal_left -= n;
            i += n;
            if (rw->literal_left == 0) {
                rw->state = CAPA_RW_PASS; /* the line goes on after its literal */
            }
            break;
        }
        case CAPA_RW_PASS: {
            const uint8_t *nl = memchr(data + i, '\n', len - i);
            size_t end = nl != NULL ? (size_t)(nl - data) : len;
            capa_rw_tail(rw, data + i, end - i);
            if (nl == NULL) {
                i = len;
                break;
            }
            i = end + 1;
            uint64_t lit = 0;
            if (imap_scan_literal_end(rw->tail, rw->tail_len, &lit) > 0) {
                rw->literal_left = lit;
                rw->state = lit > 0 ? CAPA_RW_LITERAL : CAPA_RW_PASS;
            } else {
                rw->state = CAPA_RW_START;
            }
            rw->tail_len = 0;
            break;
        }
        case CAPA_RW_START: {
            size_t old = rw->head_len;
            size_t room = CAPA_REWRITE_HEAD_LEN - old;
            size_t avail = len - i < room ? len - i : room;
            const uint8_t *nl = memchr(data + i, '\n', avail);
            size_t m = nl != NULL ? (size_t)(nl - (data + i)) : avail;
            int complete = nl != NULL || m == room;
            const uint8_t *h = data + i;
            if (old > 0) {
                memcpy(rw->head + old, data + i, m);
                h = rw->head;
            }
            size_t prefix = 0;
            int code = 0;
            int c = capa_rw_classify(h, old + m, &prefix, &code);
            if (c == 0 && complete) {
                c = -1;
            }
            if (c == 0) {
                /* the read ends within the line's start: hold it */
                if (i > span) {
                    out(ctx, data + span, i - span);
                }
                if (old == 0) {
                    rw->head = malloc(CAPA_REWRITE_HEAD_LEN);
                    if (rw->head == NULL) {
                        return -1;
                    }
                    memcpy(rw->head, data + i, m);
                }
                rw->head_len = (uint8_t)(old + m);
                i += m;
                span = i;
                break;
            }
            if (old > 0) {
                /* what was held goes first; the rest of the line is in data */
                if (i > span) {
                    out(ctx, data + span, i - span);
                }
                span = i;
                out(ctx, rw->head, old);
                if (c < 0) {
                    capa_rw_tail(rw, rw->head, old);
                }
                free(rw->head);
                rw->head = NULL;
                rw->head_len = 0;
            }
            if (c < 0) {
                rw->state = CAPA_RW_PASS;
                break;
            }
            /* a list: the line up to its keyword passes, the list is rebuilt
               (prefix >= old: see capa_rw_classify) */
            i += prefix - old;
            if (i > span) {
                out(ctx, data + span, i - span);
            }
            span = i;
            rw->list = malloc(CAPA_REWRITE_MAX_LIST_LEN + strlen(rw->extra) + 1);
            if (rw->list == NULL) {
                return -1;
            }
            rw->list_len = 0;
            rw->tok_start = 0;
            rw->tok_over = 0;
            rw->code = (uint8_t)code;
            rw->state = CAPA_RW_LIST;
            break;
        }
        case CAPA_RW_LIST: {
            int end = 0;
            i += capa_rw_list(rw, data + i, len - i, &end);
            span = i;
            if (end) {
                size_t el = strlen(rw->extra);
                if (el > 0) {
                    rw->list[rw->list_len++] = ' ';
                    memcpy(rw->list + rw->list_len, rw->extra, el);
                    rw->list_len += el;
                }
                if (rw->list_len > 0) {
                    out(ctx, (const uint8_t *)rw->list, rw->list_len);
                }
                free(rw->list);
                rw->list = NULL;
                rw->state = CAPA_RW_PASS; /* its end and the rest of the line pass */
            }
            break;
        }
        }
    }
    if (i > span) {
        out(ctx, data + span, i - span);
    }
    return 0;
}
