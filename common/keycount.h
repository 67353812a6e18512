/* keycount: a count per string key, for caps such as "connections per
 * client address".  A key exists while its count is above zero; its entry
 * is freed when the count drops back to zero.  The table grows with the
 * number of keys and hashes them with SipHash under a random key, so that
 * clients cannot choose colliding keys.  Pure code and not thread-safe: the
 * caller locks. */
#ifndef IMAPMUX_COMMON_KEYCOUNT_H
#define IMAPMUX_COMMON_KEYCOUNT_H

#include <stddef.h>

#define KEYCOUNT_MAX_KEY_LEN 255 /* bytes of a key, NUL excluded */

struct keycount;
struct keycount_entry; /* a key and its count; valid while the count is above zero */

enum keycount_result {
    KEYCOUNT_OK = 0, /* counted */
    KEYCOUNT_FULL,   /* the key already has limit: not counted */
    KEYCOUNT_NOMEM,  /* out of memory, or a key longer than KEYCOUNT_MAX_KEY_LEN */
};

/* keycount_new returns an empty table (NULL when out of memory); free it
 * with keycount_free, which accepts NULL and frees the remaining entries. */
struct keycount *keycount_new(void);
void keycount_free(struct keycount *kc);

/* keycount_acquire counts one more for key unless its count is already
 * limit or more (limit 0: no limit).  On KEYCOUNT_OK *out_entry is the key's
 * entry, owned by the table, to be given back to keycount_release once;
 * otherwise *out_entry is NULL. */
enum keycount_result keycount_acquire(struct keycount *kc, struct keycount_entry **out_entry,
                                      const char *key, size_t limit);

/* keycount_release counts one less for e's key and frees e at zero
 * (NULL is accepted and does nothing). */
void keycount_release(struct keycount *kc, struct keycount_entry *e);

/* keycount_get returns the count of key (0 when absent). */
size_t keycount_get(const struct keycount *kc, const char *key);

/* keycount_num_keys returns how many keys have a count above zero. */
size_t keycount_num_keys(const struct keycount *kc);

#endif
