#include <stdint.h>

#include <criterion/criterion.h>

#include "common/seenset.h"

Test(seenset, first_sight_is_not_seen_second_is)
{
    struct seenset *s = seenset_new(64);
    cr_assert_not_null(s);
    cr_assert_eq(seenset_check_note(s, 0x1234567890abcdefULL, 1000, 30000), 0);
    cr_assert_eq(seenset_check_note(s, 0x1234567890abcdefULL, 2000, 30000), 1);
    cr_assert_eq(seenset_check_note(s, 0x1111111111111111ULL, 2000, 30000), 0);
    seenset_free(s);
}

Test(seenset, window_is_from_the_last_sight)
{
    struct seenset *s = seenset_new(64);
    cr_assert_eq(seenset_check_note(s, 42, 0, 1000), 0);
    cr_assert_eq(seenset_check_note(s, 42, 1000, 1000), 1);  /* exactly the window */
    cr_assert_eq(seenset_check_note(s, 42, 2001, 1000), 0);  /* past it */
    cr_assert_eq(seenset_check_note(s, 42, 2500, 1000), 1);  /* noted again at 2001 */
    seenset_note(s, 42, 9000);
    cr_assert_eq(seenset_check_note(s, 42, 9500, 1000), 1);
    /* a clock that went back does not count as recent */
    cr_assert_eq(seenset_check_note(s, 42, 100, 1000), 0);
    seenset_free(s);
}

Test(seenset, zero_tag_works)
{
    struct seenset *s = seenset_new(16);
    cr_assert_eq(seenset_check_note(s, 0, 5, 100), 0);
    cr_assert_eq(seenset_check_note(s, 0, 6, 100), 1);
    seenset_free(s);
}

Test(seenset, bounded_and_forgets_the_oldest_of_a_bucket)
{
    struct seenset *s = seenset_new(5);
    cr_assert_eq(seenset_num_slots(s), 8);
    /* three tags of one bucket (same high bits): the oldest is forgotten */
    uint64_t a = 1, b = 2, c = 3;
    cr_assert_eq(seenset_check_note(s, a, 10, 1000), 0);
    cr_assert_eq(seenset_check_note(s, b, 20, 1000), 0);
    cr_assert_eq(seenset_check_note(s, c, 30, 1000), 0);
    cr_assert_eq(seenset_check_note(s, b, 40, 1000), 1);
    cr_assert_eq(seenset_check_note(s, c, 50, 1000), 1);
    cr_assert_eq(seenset_check_note(s, a, 60, 1000), 0);
    seenset_free(s);
}

Test(seenset, many_distinct_tags_stay_unseen)
{
    struct seenset *s = seenset_new(1024);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (unsigned i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cr_assert_eq(seenset_check_note(s, x, i, 1000000), 0);
    }
    seenset_free(s);
}

Test(seenset, too_large_is_refused)
{
    cr_assert_null(seenset_new(((size_t)1 << 28) + 1));
    seenset_free(NULL);
}
