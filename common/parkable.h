/* parkable: which relayed commands leave a backend connection in a state
 * that UNSELECT resets, so that the connection may be parked in the session
 * cache at LOGOUT and handed to the user's next login.  Pure code. */
#ifndef IMAPMUX_COMMON_PARKABLE_H
#define IMAPMUX_COMMON_PARKABLE_H

#include <stddef.h>
#include <stdint.h>

/* parkable_name: name is a relayed command's name (as the command gate
 * validated it, without the UID prefix).  Returns 1 when the command changes
 * nothing on the connection but the mailbox selection, 0 when it may change
 * more (ENABLE, COMPRESS, NOTIFY, LANGUAGE, UNAUTHENTICATE, CONTEXT, STARTTLS
 * and any X- vendor command). */
int parkable_name(const char *name);

/* parkable_logout: data (len bytes) is exactly one "<tag> LOGOUT" CRLF line
 * with a valid tag of at most max_tag_len bytes.  Returns the tag's length,
 * or 0 when it is not such a line. */
size_t parkable_logout(const uint8_t *data, size_t len, size_t max_tag_len);

#endif
