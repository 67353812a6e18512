/* seenset: a bounded set of recently seen 64-bit tags with the time each
 * was last seen, for the session cache's parking policy ("was this login
 * seen lately?").  The tags are keyed hashes (the caller's HMAC), never
 * logins in clear.  Fixed size, chosen at creation: a full set forgets the
 * older of two tags in a bucket, so it may answer "not seen" for a tag it
 * saw (the caller then does without the cache once), and answers "seen"
 * for an unseen tag only when two 64-bit tags collide.  Pure code: the
 * caller passes the time. */
#ifndef IMAPMUX_COMMON_SEENSET_H
#define IMAPMUX_COMMON_SEENSET_H

#include <stddef.h>
#include <stdint.h>

#define SEENSET_WAYS 2 /* slots per bucket: a tag lives in one of them */

struct seenset;

/* seenset_new: a set of at least num_slots slots (rounded up to a power
 * of two, at least SEENSET_WAYS; 16 bytes each, untouched pages cost
 * nothing until used).  NULL on OOM or num_slots above 2^28.  The caller
 * frees it with seenset_free. */
struct seenset *seenset_new(size_t num_slots);

/* seenset_check_note: returns 1 when tag was noted at most window_ms
 * before now_ms (and not later than now_ms), 0 otherwise; either way tag is
 * noted as seen at now_ms. */
int seenset_check_note(struct seenset *s, uint64_t tag, uint64_t now_ms, uint64_t window_ms);

/* seenset_note notes tag as seen at now_ms. */
void seenset_note(struct seenset *s, uint64_t tag, uint64_t now_ms);

/* seenset_num_slots: the slots allocated. */
size_t seenset_num_slots(const struct seenset *s);

/* seenset_free frees s; NULL accepted. */
void seenset_free(struct seenset *s);

#endif
