/* chash: the host of a multi-host backend for a login, by rendezvous
 * (highest random weight) hashing.  Every login scores every host; the best
 * host that is not down wins.  A login therefore always lands on the same
 * host while the host list stays the same; removing or marking down a host
 * moves only the logins that were on it, and adding a host takes about 1/n
 * of the logins, each from wherever it was.  Pure code. */
#ifndef IMAPMUX_COMMON_CHASH_H
#define IMAPMUX_COMMON_CHASH_H

#include <stddef.h>
#include <stdint.h>

#include "common/schema.h"

/* chash_score is the weight of host:port for key (exposed for tests). */
uint64_t chash_score(const char *host, uint16_t port, const char *key);

/* chash_pick returns the index in hosts of the host for key, skipping hosts
 * marked down, or -1 when there is none. */
long chash_pick(const struct schema_host *hosts, size_t num, const char *key);

#endif
