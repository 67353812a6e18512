/* bruteforce: the arithmetic of the brute-force counters (how long a login
 * waits, whether it is refused), apart from where the counters live.  Pure
 * code. */
#ifndef IMAPMUX_COMMON_BRUTEFORCE_H
#define IMAPMUX_COMMON_BRUTEFORCE_H

#include "common/config.h"

/* bruteforce_delay_ms returns the pause (ms) before a login that has fails
 * recent failures against it: 0 up to delay_after failures, then delay_ms,
 * doubling with each further failure, capped at max_delay_ms.  0 when the
 * counters are disabled. */
unsigned bruteforce_delay_ms(const struct config_bruteforce *bf, unsigned long fails);

/* bruteforce_blocked: 1 when the failures from the address (fails_ip) or
 * against the login (fails_login) reach their block thresholds, else 0. */
int bruteforce_blocked(const struct config_bruteforce *bf, unsigned long fails_ip,
                       unsigned long fails_login);

#endif
