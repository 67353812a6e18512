#include <criterion/criterion.h>

#include <string.h>

#include "common/mutf7.h"

static void ok(const char *in, const char *want)
{
    char out[256];
    cr_assert_eq(mutf7_decode(out, sizeof(out), in, strlen(in)), 0, "%s", in);
    cr_assert_str_eq(out, want);
}

static void bad(const char *in)
{
    char out[256];
    cr_assert_eq(mutf7_decode(out, sizeof(out), in, strlen(in)), -1, "%s", in);
}

Test(mutf7, decodes_the_rfc_example_and_others)
{
    ok("INBOX", "INBOX");
    ok("&-", "&");
    ok("a&-b&-", "a&b&");
    ok("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
                                          "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
    ok("&AOQ-", "\xc3\xa4");
    ok("&2D3eAA-", "\xf0\x9f\x98\x80"); /* a surrogate pair */
    ok("", "");
}

Test(mutf7, refuses_what_is_not_modified_utf7)
{
    bad("&AOQ");       /* no "-" */
    bad("&A*Q-");      /* not base64 */
    bad("&2D0-");      /* a lone high surrogate */
    bad("&3gA-");      /* a lone low surrogate */
    bad("&AOQA-");     /* leftover bits that are not zero */
    bad("\xc3\xa4");   /* 8-bit bytes */
    bad("a\tb");       /* control characters */
    bad("&-&");        /* a shift that never ends */
}

Test(mutf7, a_short_buffer_fails_cleanly)
{
    char out[4];
    cr_assert_eq(mutf7_decode(out, sizeof(out), "ABCDE", 5), -1);
    cr_assert_lt(strlen(out), sizeof(out));
    cr_assert_eq(mutf7_decode(out, sizeof(out), "&ZeVnLIqe-", 10), -1);
    cr_assert_lt(strlen(out), sizeof(out));
}

Test(mutf7, plain_means_nothing_to_decode)
{
    cr_assert(mutf7_is_plain("INBOX/Sent", 10));
    cr_assert(!mutf7_is_plain("a&-", 3));
    cr_assert(!mutf7_is_plain("\xc3\xa4", 2));
}
