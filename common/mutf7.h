/* mutf7: IMAP's modified UTF-7 mailbox names (RFC 3501 section 5.1.3)
 * decoded to UTF-8, for audit records, and UTF-8 encoded to them.  "&" starts
 * a shifted run of modified base64 (',' for '/', no padding) holding UTF-16,
 * "-" ends it, "&-" is "&".  Only the canonical spelling is accepted: printable
 * ASCII stands for itself, runs are as long as they can be (never "-&" between
 * two), no U+0000.  Pure code, no allocation. */
#ifndef IMAPMUX_COMMON_MUTF7_H
#define IMAPMUX_COMMON_MUTF7_H

#include <stddef.h>

/* mutf7_decode writes in[0..in_len) as NUL-terminated UTF-8 to out; 0, or
 * -1 when in is not canonical modified UTF-7 or out_len is too small (out
 * then holds a NUL-terminated prefix, when out_len > 0). */
int mutf7_decode(char *out, size_t out_len, const char *in, size_t in_len);

/* mutf7_encode writes the UTF-8 in[0..in_len) as NUL-terminated modified
 * UTF-7 to out; 0, or -1 when in is not UTF-8 (overlong forms, surrogates,
 * past U+10FFFF, a NUL) or out_len is too small (out as with mutf7_decode).
 * 5 * in_len + 1 bytes are always enough. */
int mutf7_encode(char *out, size_t out_len, const char *in, size_t in_len);

/* mutf7_is_plain: no '&' and only printable ASCII (decoding changes nothing). */
int mutf7_is_plain(const char *in, size_t len);

#endif
