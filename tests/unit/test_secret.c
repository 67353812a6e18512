/* secret: blocks are wiped before they are freed, growth copies and wipes
 * the old block, and the observer sees what goes back to the allocator. */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/secret.h"
#include "secret_watch.h"

Test(secret, free_wipes_before_freeing)
{
    struct secret_watch w;
    char *p = strdup("hunter2 and more");
    cr_assert_not_null(p);
    secret_watch_start(&w);
    secret_free(p, strlen(p));
    secret_free(NULL, 10);
    secret_watch_stop();
    cr_assert_eq(w.blocks, 1);
    cr_assert_eq(w.bytes, strlen("hunter2 and more"));
    cr_assert_eq(w.dirty, 0);
}

Test(secret, free_str_wipes_the_string_and_its_nul)
{
    struct secret_watch w;
    char *p = strdup("pw");
    cr_assert_not_null(p);
    secret_watch_start(&w);
    secret_free_str(p);
    secret_free_str(NULL);
    secret_watch_stop();
    cr_assert_eq(w.blocks, 1);
    cr_assert_eq(w.bytes, 3);
    cr_assert_eq(w.dirty, 0);
}

Test(secret, grow_copies_and_wipes_the_old_block)
{
    struct secret_watch w;
    char *p = malloc(8);
    cr_assert_not_null(p);
    memcpy(p, "secret!", 8);
    secret_watch_start(&w);
    char *n = secret_grow(p, 8, 64);
    secret_watch_stop();
    cr_assert_not_null(n);
    cr_assert_str_eq(n, "secret!");
    cr_assert_eq(w.blocks, 1);
    cr_assert_eq(w.bytes, 8);
    cr_assert_eq(w.dirty, 0);

    /* shrinking keeps the first bytes only; from NULL it is a fresh block */
    secret_watch_start(&w);
    char *s = secret_grow(n, 64, 4);
    secret_watch_stop();
    cr_assert_not_null(s);
    cr_assert_eq(memcmp(s, "secr", 4), 0);
    cr_assert_eq(w.blocks, 1);
    cr_assert_eq(w.bytes, 64);
    secret_free(s, 4);
    char *f = secret_grow(NULL, 0, 16);
    cr_assert_not_null(f);
    secret_free(f, 16);
}
