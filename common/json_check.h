/* json_check: a strict check of JSON text, for the audit verifier and the
 * tests: the text must be exactly one JSON object (RFC 8259) that also meets
 * I-JSON's rules (RFC 7493): UTF-8 throughout (no overlong form, no encoded
 * surrogate, nothing above U+10FFFF), no escaped lone surrogate, no member
 * name twice in one object.  Whitespace is the RFC's.  Nothing is built or
 * allocated.  Pure code. */
#ifndef IMAPMUX_COMMON_JSON_CHECK_H
#define IMAPMUX_COMMON_JSON_CHECK_H

#include <stddef.h>

#define JSON_CHECK_MAX_DEPTH 16     /* objects and arrays nested at most this deep */
#define JSON_CHECK_MAX_MEMBERS 256  /* members of one object at most */

/* json_check_object checks text[0..len) (it need not be NUL-terminated; a
 * NUL byte in it is an error).  Returns 0 when it is one valid object; -1
 * otherwise, with *out_off (may be NULL) the byte offset where the fault
 * was found and *out_reason (may be NULL) a fixed text that names it. */
int json_check_object(size_t *out_off, const char **out_reason, const char *text, size_t len);

/* json_check_prefix: 1 when text[0..len) is not a valid object but more
 * text could make it one (it is a valid object cut short: the end of a file
 * whose writer died mid-record), else 0. */
int json_check_prefix(const char *text, size_t len);

#endif
