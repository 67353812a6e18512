/* passwd: password hashes in the formats a routing table may hold --
 * SHA-512-crypt ($6$), bcrypt ($2b$, also $2a$/$2y$), yescrypt ($y$) through
 * libcrypt's crypt_r, and argon2id ($argon2id$) through libargon2.  Pure,
 * thread-safe code: verification is slow on purpose and runs on the verify
 * pool's threads, never on a loop. */
#ifndef IMAPMUX_COMMON_PASSWD_H
#define IMAPMUX_COMMON_PASSWD_H

#include <stddef.h>

enum passwd_scheme {
    PASSWD_UNKNOWN = 0,
    PASSWD_SHA512_CRYPT, /* $6$ */
    PASSWD_BCRYPT,       /* $2b$ ($2a$, $2y$ verified too) */
    PASSWD_YESCRYPT,     /* $y$ */
    PASSWD_ARGON2ID,     /* $argon2id$ */
};

/* passwd_detect names the scheme of a stored hash by its prefix. */
enum passwd_scheme passwd_detect(const char *hash);

/* passwd_scheme_name: "sha512-crypt", "bcrypt", "yescrypt", "argon2id",
 * "unknown".  passwd_scheme_parse is its inverse: 0, or -1 for an unknown
 * name. */
const char *passwd_scheme_name(enum passwd_scheme scheme);
int passwd_scheme_parse(const char *name, enum passwd_scheme *out);

/* passwd_verify checks password against hash in constant time with respect
 * to the password.  Returns 1 on a match, 0 on a mismatch, -1 when the hash
 * is unusable (unknown scheme, malformed).  Thread-safe. */
int passwd_verify(const char *hash, const char *password);

/* passwd_hash returns a new hash of password with a random salt and the
 * module's default cost for scheme (malloc'd, the caller frees), or NULL on
 * failure.  Thread-safe. */
char *passwd_hash(enum passwd_scheme scheme, const char *password);

#endif
