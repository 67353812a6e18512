/* mutf7: IMAP's modified UTF-7 mailbox names (RFC 3501 section 5.1.3)
 * decoded to UTF-8, for audit records.  "&" starts a shifted run of
 * modified base64 (',' for '/', no padding) holding UTF-16, "-" ends it,
 * "&-" is "&".  Pure code, no allocation. */
#ifndef IMAPMUX_COMMON_MUTF7_H
#define IMAPMUX_COMMON_MUTF7_H

#include <stddef.h>

/* mutf7_decode writes in[0..in_len) as NUL-terminated UTF-8 to out; 0, or
 * -1 when in is not modified UTF-7 or out_len is too small. */
int mutf7_decode(char *out, size_t out_len, const char *in, size_t in_len);

/* mutf7_is_plain: no '&' and only printable ASCII (decoding changes nothing). */
int mutf7_is_plain(const char *in, size_t len);

#endif
