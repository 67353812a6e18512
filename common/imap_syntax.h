/* imap_syntax: small facts of the IMAP grammar (RFC 9051 section 9) that
 * several modules need to agree on: which bytes make a tag, and what an
 * untagged BYE looks like.  Pure code. */
#ifndef IMAPMUX_COMMON_IMAP_SYNTAX_H
#define IMAPMUX_COMMON_IMAP_SYNTAX_H

#include <stddef.h>
#include <stdint.h>

/* imap_syntax_is_tag_char: c may stand in a tag (any ASTRING-CHAR except
 * "+": no CTL, 8-bit, SP, "(", ")", "{", "%", "*", '"' or "\"; "]" is
 * allowed).  Returns 1 or 0. */
int imap_syntax_is_tag_char(uint8_t c);

/* imap_syntax_is_tag: the len bytes at p are a whole valid tag (len > 0).
 * Returns 1 or 0. */
int imap_syntax_is_tag(const uint8_t *p, size_t len);

/* imap_syntax_is_bye: the len bytes at line start an untagged BYE response:
 * "* BYE" in any case, followed by SP, CR, LF or the end of what is given
 * (a line's head may be cut).  "* BYEFOO" is not one.  Returns 1 or 0. */
int imap_syntax_is_bye(const uint8_t *line, size_t len);

#endif
