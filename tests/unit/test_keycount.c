/* Counts per key with a limit; entries live while their count is above 0. */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/keycount.h"

Test(keycount, limit_and_release)
{
    struct keycount *kc = keycount_new();
    struct keycount_entry *e[4];
    struct keycount_entry *x = (struct keycount_entry *)1;
    cr_assert_not_null(kc);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(keycount_acquire(kc, &e[i], "192.0.2.1", 3), KEYCOUNT_OK);
        cr_assert_not_null(e[i]);
    }
    cr_assert_eq(e[0], e[1], "one entry per key");
    cr_assert_eq(keycount_acquire(kc, &x, "192.0.2.1", 3), KEYCOUNT_FULL);
    cr_assert_null(x);
    cr_assert_eq(keycount_get(kc, "192.0.2.1"), 3);
    cr_assert_eq(keycount_acquire(kc, &e[3], "192.0.2.2", 3), KEYCOUNT_OK, "other keys unaffected");
    cr_assert_eq(keycount_num_keys(kc), 2);

    keycount_release(kc, e[0]);
    cr_assert_eq(keycount_get(kc, "192.0.2.1"), 2);
    cr_assert_eq(keycount_acquire(kc, &e[0], "192.0.2.1", 3), KEYCOUNT_OK, "room again");
    for (int i = 0; i < 3; i++) {
        keycount_release(kc, e[i]);
    }
    cr_assert_eq(keycount_get(kc, "192.0.2.1"), 0);
    cr_assert_eq(keycount_num_keys(kc), 1, "the entry is gone at zero");
    keycount_release(kc, NULL);
    keycount_free(kc); /* frees the remaining 192.0.2.2 */
    keycount_free(NULL);
}

Test(keycount, no_limit_and_long_keys)
{
    struct keycount *kc = keycount_new();
    struct keycount_entry *e;
    char key[KEYCOUNT_MAX_KEY_LEN + 2];
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(keycount_acquire(kc, &e, "k", 0), KEYCOUNT_OK);
    }
    cr_assert_eq(keycount_get(kc, "k"), 1000);
    memset(key, 'a', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    cr_assert_eq(keycount_acquire(kc, &e, key, 0), KEYCOUNT_NOMEM, "too long a key");
    cr_assert_eq(keycount_get(kc, key), 0);
    key[KEYCOUNT_MAX_KEY_LEN] = '\0';
    cr_assert_eq(keycount_acquire(kc, &e, key, 0), KEYCOUNT_OK, "the longest key");
    keycount_free(kc);
}

Test(keycount, many_keys_grow)
{
    enum { N = 20000 };
    static struct keycount_entry *e[N];
    struct keycount *kc = keycount_new();
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        cr_assert_eq(keycount_acquire(kc, &e[i], key, 1), KEYCOUNT_OK);
    }
    cr_assert_eq(keycount_num_keys(kc), N);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        struct keycount_entry *x;
        cr_assert_eq(keycount_acquire(kc, &x, key, 1), KEYCOUNT_FULL, "%s", key);
        cr_assert_eq(keycount_get(kc, key), 1);
    }
    for (int i = 0; i < N; i += 2) {
        keycount_release(kc, e[i]);
    }
    cr_assert_eq(keycount_num_keys(kc), N / 2);
    cr_assert_eq(keycount_get(kc, "10.0.0.0"), 0);
    cr_assert_eq(keycount_get(kc, "10.0.0.1"), 1);
    for (int i = 1; i < N; i += 2) {
        keycount_release(kc, e[i]);
    }
    cr_assert_eq(keycount_num_keys(kc), 0);
    keycount_free(kc);
}
