#include "common/capa.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
        if (capa_removed_match(capas + start, tl)) {
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

int capa_has(const char *capas, size_t len, const char *name)
{
    size_t nl = strlen(name), i = 0, start, tl;
    while ((tl = capa_next(&start, &i, capas, len)) > 0) {
        if (tl == nl && strncasecmp(capas + start, name, nl) == 0) {
            return 1;
        }
    }
    return 0;
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
