/* capa: IMAP capability lists (space-separated atoms, RFC 9051 section 7.2.2):
 * searching them and filtering out what the proxy does not carry.  Pure code. */
#ifndef IMAPMUX_COMMON_CAPA_H
#define IMAPMUX_COMMON_CAPA_H

#include <stddef.h>

/* capa_filter returns a malloc'd NUL-terminated copy of the list capas (len
 * bytes) without the capabilities the proxy does not carry (see capa.c), in
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

#endif
