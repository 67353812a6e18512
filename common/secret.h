/* secret: releasing memory that held a secret (a password, an AUTHENTICATE
 * payload or its base64, a key), so that nothing of it stays in freed heap
 * where a later allocation, a core dump or a memory disclosure could find
 * it.  Every such block is wiped with OPENSSL_cleanse before free, and grows
 * by copy, never by realloc (realloc may move the data and free the old
 * block unwiped).  Pure code.
 *
 * For tests, an observer may be set per thread: it sees each block right
 * before it goes back to the allocator, after the wipe, so a test can check
 * that the block is all zero and that the code under test released its
 * secrets this way at all. */
#ifndef IMAPMUX_COMMON_SECRET_H
#define IMAPMUX_COMMON_SECRET_H

#include <stddef.h>

/* secret_free wipes the len bytes at p and frees p.  NULL accepted. */
void secret_free(void *p, size_t len);

/* secret_free_str wipes a NUL-terminated string with its NUL and frees it.
 * NULL accepted. */
void secret_free_str(char *s);

/* secret_grow returns a new block of new_len bytes holding the first
 * min(old_len, new_len) bytes of p (NULL with old_len 0: a fresh block),
 * after wiping and freeing p's old_len bytes; or NULL when out of memory,
 * with p untouched and still the caller's. */
void *secret_grow(void *p, size_t old_len, size_t new_len);

/* secret_observer_cb: block (len bytes, already wiped) is about to be freed. */
typedef void (*secret_observer_cb)(void *ctx, const void *block, size_t len);

/* secret_set_observer installs cb (NULL: none) for the calling thread;
 * tests only. */
void secret_set_observer(secret_observer_cb cb, void *ctx);

#endif
