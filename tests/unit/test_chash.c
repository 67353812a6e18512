#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/chash.h"

#define NUM_LOGINS 10000

static void mkhosts(struct schema_host *h, size_t n)
{
    memset(h, 0, n * sizeof(*h));
    for (size_t i = 0; i < n; i++) {
        snprintf(h[i].host, sizeof(h[i].host), "store%zu.example.net", i + 1);
        h[i].port = 143;
    }
}

static void login(char *out, size_t len, unsigned i)
{
    snprintf(out, len, "user%u@example.com", i);
}

Test(chash, same_login_same_host)
{
    struct schema_host h[4];
    mkhosts(h, 4);
    long first = chash_pick(h, 4, "alice@example.com");
    cr_assert(first >= 0 && first < 4);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(chash_pick(h, 4, "alice@example.com"), first);
    }
    /* the order of the list does not matter: the score belongs to the host */
    struct schema_host r[4] = {h[3], h[2], h[1], h[0]};
    cr_assert_str_eq(r[chash_pick(r, 4, "alice@example.com")].host, h[first].host);
}

Test(chash, spreads_evenly)
{
    struct schema_host h[4];
    unsigned count[4] = {0};
    char l[64];
    mkhosts(h, 4);
    for (unsigned i = 0; i < NUM_LOGINS; i++) {
        login(l, sizeof(l), i);
        count[chash_pick(h, 4, l)]++;
    }
    for (int i = 0; i < 4; i++) {
        /* 2500 expected; +-15% is far outside chance for a sound hash */
        cr_assert(count[i] > 2125 && count[i] < 2875, "host %d got %u", i, count[i]);
    }
}

Test(chash, down_host_moves_only_its_logins)
{
    struct schema_host h[4];
    char l[64];
    long before[NUM_LOGINS];
    mkhosts(h, 4);
    for (unsigned i = 0; i < NUM_LOGINS; i++) {
        login(l, sizeof(l), i);
        before[i] = chash_pick(h, 4, l);
    }
    h[2].down = 1;
    unsigned moved = 0;
    for (unsigned i = 0; i < NUM_LOGINS; i++) {
        login(l, sizeof(l), i);
        long now = chash_pick(h, 4, l);
        cr_assert_neq(now, 2);
        if (before[i] != 2) {
            cr_assert_eq(now, before[i], "login %u moved off a healthy host", i);
        } else {
            moved++;
        }
    }
    cr_assert(moved > 0);
}

Test(chash, added_host_takes_a_fair_share_only)
{
    struct schema_host h[5];
    char l[64];
    long before[NUM_LOGINS];
    mkhosts(h, 5);
    for (unsigned i = 0; i < NUM_LOGINS; i++) {
        login(l, sizeof(l), i);
        before[i] = chash_pick(h, 4, l);
    }
    unsigned moved = 0;
    for (unsigned i = 0; i < NUM_LOGINS; i++) {
        login(l, sizeof(l), i);
        long now = chash_pick(h, 5, l);
        if (now != before[i]) {
            cr_assert_eq(now, 4, "login %u moved between old hosts", i);
            moved++;
        }
    }
    /* about a fifth */
    cr_assert(moved > 1600 && moved < 2400, "moved %u", moved);
}

Test(chash, all_down_and_empty)
{
    struct schema_host h[2];
    mkhosts(h, 2);
    h[0].down = h[1].down = 1;
    cr_assert_eq(chash_pick(h, 2, "alice"), -1);
    cr_assert_eq(chash_pick(h, 0, "alice"), -1);
    /* the port is part of the identity */
    cr_assert_neq(chash_score("a", 143, "x"), chash_score("a", 993, "x"));
}
