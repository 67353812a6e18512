#include <criterion/criterion.h>

#include "common/bruteforce.h"

static struct config_bruteforce bf(void)
{
    struct config_bruteforce b = {
        .enabled = 1,
        .window_s = 300,
        .delay_after = 3,
        .delay_ms = 500,
        .max_delay_ms = 8000,
        .block_ip_after = 50,
        .block_pair_after = 10,
        .trusted_ttl_s = 3600,
    };
    return b;
}

Test(bruteforce, no_delay_below_the_threshold)
{
    struct config_bruteforce b = bf();
    cr_assert_eq(bruteforce_delay_ms(&b, 0), 0);
    cr_assert_eq(bruteforce_delay_ms(&b, 2), 0);
}

Test(bruteforce, doubles_then_caps)
{
    struct config_bruteforce b = bf();
    cr_assert_eq(bruteforce_delay_ms(&b, 3), 500);
    cr_assert_eq(bruteforce_delay_ms(&b, 4), 1000);
    cr_assert_eq(bruteforce_delay_ms(&b, 5), 2000);
    cr_assert_eq(bruteforce_delay_ms(&b, 7), 8000);
    cr_assert_eq(bruteforce_delay_ms(&b, 8), 8000);
    cr_assert_eq(bruteforce_delay_ms(&b, 1000000), 8000);
    cr_assert_eq(bruteforce_delay_ms(&b, (unsigned long)-1), 8000);
}

Test(bruteforce, cap_below_the_first_delay)
{
    struct config_bruteforce b = bf();
    b.max_delay_ms = 300;
    cr_assert_eq(bruteforce_delay_ms(&b, 3), 300);
}

static struct bruteforce_verdict decide(unsigned long ip, unsigned long pair,
                                        unsigned long login, int trusted)
{
    struct config_bruteforce b = bf();
    struct bruteforce_counts c = {.ip = ip, .pair = pair, .login = login, .trusted = trusted};
    struct bruteforce_verdict v;
    bruteforce_decide(&v, &b, &c);
    return v;
}

Test(bruteforce, off)
{
    struct config_bruteforce b = bf();
    struct bruteforce_counts c = {.ip = 1000, .pair = 1000, .login = 1000};
    struct bruteforce_verdict v;
    b.enabled = 0;
    cr_assert_eq(bruteforce_delay_ms(&b, 100), 0);
    bruteforce_decide(&v, &b, &c);
    cr_assert_not(v.blocked);
    cr_assert_eq(v.delay_ms, 0);
    b = bf();
    b.delay_ms = 0;
    cr_assert_eq(bruteforce_delay_ms(&b, 100), 0);
}

Test(bruteforce, the_pair_counts_this_attempt_the_others_count_failures)
{
    /* the 10th attempt of a pair goes on, the 11th is blocked */
    cr_assert_not(decide(0, 10, 0, 0).blocked);
    cr_assert(decide(0, 11, 0, 0).blocked);
    /* 49 failures from the address: on; 50: blocked */
    cr_assert_not(decide(49, 1, 0, 0).blocked);
    cr_assert(decide(50, 1, 0, 0).blocked);
    /* three failures before: the first delay */
    cr_assert_eq(decide(3, 1, 0, 0).delay_ms, 500);
    cr_assert_eq(decide(2, 1, 0, 0).delay_ms, 0);
    /* attempts of one pair in flight at once (a client's parallel
       connections) are no failures: no delay */
    cr_assert_eq(decide(0, 5, 0, 0).delay_ms, 0);
}

Test(bruteforce, strangers_never_block_a_login)
{
    /* a million failures for the login from elsewhere: slowed, never blocked */
    struct bruteforce_verdict v = decide(0, 1, 1000000, 0);
    cr_assert_not(v.blocked);
    cr_assert_eq(v.delay_ms, 8000);
    /* from the owner's trusted address: not even slowed */
    v = decide(0, 1, 1000000, 1);
    cr_assert_not(v.blocked);
    cr_assert_eq(v.delay_ms, 0);
    /* a trusted address still pays for its own failures */
    cr_assert_eq(decide(4, 5, 1000000, 1).delay_ms, 1000);
    cr_assert(decide(0, 11, 11, 1).blocked);
}

Test(bruteforce, blocks_at_either_threshold)
{
    cr_assert_not(decide(49, 10, 0, 0).blocked);
    cr_assert(decide(50, 0, 0, 0).blocked);
    cr_assert(decide(0, 11, 0, 0).blocked);
}
