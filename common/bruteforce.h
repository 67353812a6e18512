/* bruteforce: the arithmetic of the brute-force counters (how long a login
 * waits, whether it is refused), apart from where the counters live (Redis,
 * proxy/directory.c).  Pure code.
 *
 * The model: three counters per window.
 *   per (login, address): attempts that did not prove the password, counted
 *   (incremented) before the attempt is decided, so that guesses in parallel
 *   cannot overshoot its threshold; it blocks that pair;
 *   per client address (an IPv6 address by its prefix): failures; they block
 *   the address and slow it down;
 *   per login, from anywhere: failures; they only slow down, and not at all
 *   from an address that logged in for this login recently ("trusted").
 * Failures, not attempts in flight, decide delays and the address block:
 * many logins at once from one address (a NAT, a webmail host) are no
 * attack.
 * So a stranger can slow a login down but never lock its owner out: the
 * owner's own address is blocked only by failures from that address. */
#ifndef IMAPMUX_COMMON_BRUTEFORCE_H
#define IMAPMUX_COMMON_BRUTEFORCE_H

#include "common/config.h"

/* The counters as read for one attempt. */
struct bruteforce_counts {
    unsigned long ip;    /* failures from the address (or IPv6 prefix) so far */
    unsigned long pair;  /* attempts for this login from that address, this one
                            included (failed or in flight) */
    unsigned long login; /* failures for this login from anywhere so far */
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

/* bruteforce_decide fills out for an attempt with counts c: blocked at
 * block_ip_after failures from the address or past block_pair_after attempts
 * for the pair; delayed by the failures from the address and (for an address
 * that is not trusted) for the login. */
void bruteforce_decide(struct bruteforce_verdict *out, const struct config_bruteforce *bf,
                       const struct bruteforce_counts *c);

#endif
