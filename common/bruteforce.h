/* bruteforce: the arithmetic of the brute-force counters (how long a login
 * waits, whether it is refused), apart from where the counters live (Redis,
 * proxy/directory.c).  Pure code.
 *
 * The model: three counters of recent attempts that did not prove the
 * password, each counted (incremented) before the attempt is decided, so
 * that parallel attempts cannot overshoot a threshold:
 *   per client address (an IPv6 address by its prefix): blocks the address;
 *   per (login, address): blocks that pair;
 *   per login, from anywhere: only slows down, and not at all from an address
 *   that logged in successfully for this login recently ("trusted").
 * So a stranger can slow a login down but never lock its owner out: the
 * owner's own address is blocked only by failures from that address. */
#ifndef IMAPMUX_COMMON_BRUTEFORCE_H
#define IMAPMUX_COMMON_BRUTEFORCE_H

#include "common/config.h"

/* The counters as read for one attempt, this attempt included. */
struct bruteforce_counts {
    unsigned long ip;    /* attempts from the address (or IPv6 prefix) */
    unsigned long pair;  /* attempts for this login from that address */
    unsigned long login; /* attempts for this login from anywhere */
    int trusted;         /* the address logged in for this login recently */
};

struct bruteforce_verdict {
    int blocked;         /* refuse like a wrong password, whatever the password */
    unsigned delay_ms;   /* wait this long first */
};

/* bruteforce_delay_ms returns the pause (ms) before a login that has fails
 * recent failures against it: 0 up to delay_after failures, then delay_ms,
 * doubling with each further failure, capped at max_delay_ms.  0 when the
 * counters are disabled. */
unsigned bruteforce_delay_ms(const struct config_bruteforce *bf, unsigned long fails);

/* bruteforce_decide fills out for an attempt with counts c: blocked past
 * block_ip_after attempts from the address or block_pair_after for the
 * pair; the delay from the failures before this attempt (the per-login ones
 * only for an address that is not trusted). */
void bruteforce_decide(struct bruteforce_verdict *out, const struct config_bruteforce *bf,
                       const struct bruteforce_counts *c);

#endif
