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

void bruteforce_decide(struct bruteforce_verdict *out, const struct config_bruteforce *bf,
                       const struct bruteforce_counts *c)
{
    out->blocked = 0;
    out->delay_ms = 0;
    if (!bf->enabled) {
        return;
    }
    out->blocked = c->ip >= bf->block_ip_after || c->pair > bf->block_pair_after;
    unsigned long fails = c->ip;
    if (!c->trusted && c->login > fails) {
        fails = c->login;
    }
    out->delay_ms = bruteforce_delay_ms(bf, fails);
}
