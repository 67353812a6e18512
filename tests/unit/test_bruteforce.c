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
        .block_login_after = 10,
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

Test(bruteforce, off)
{
    struct config_bruteforce b = bf();
    b.enabled = 0;
    cr_assert_eq(bruteforce_delay_ms(&b, 100), 0);
    cr_assert_not(bruteforce_blocked(&b, 1000, 1000));
    b = bf();
    b.delay_ms = 0;
    cr_assert_eq(bruteforce_delay_ms(&b, 100), 0);
}

Test(bruteforce, blocks_at_either_threshold)
{
    struct config_bruteforce b = bf();
    cr_assert_not(bruteforce_blocked(&b, 49, 9));
    cr_assert(bruteforce_blocked(&b, 50, 0));
    cr_assert(bruteforce_blocked(&b, 0, 10));
}
