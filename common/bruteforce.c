#include "common/bruteforce.h"

#include <stdint.h>

unsigned bruteforce_delay_ms(const struct config_bruteforce *bf, unsigned long fails)
{
    if (!bf->enabled || fails < bf->delay_after || bf->delay_ms == 0) {
        return 0;
    }
    unsigned long steps = fails - bf->delay_after;
    uint64_t d = bf->delay_ms;
    while (steps-- > 0 && d < bf->max_delay_ms) {
        d *= 2;
    }
    return d > bf->max_delay_ms ? bf->max_delay_ms : (unsigned)d;
}

int bruteforce_blocked(const struct config_bruteforce *bf, unsigned long fails_ip,
                       unsigned long fails_login)
{
    return bf->enabled &&
           (fails_ip >= bf->block_ip_after || fails_login >= bf->block_login_after);
}
