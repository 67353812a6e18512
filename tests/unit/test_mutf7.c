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

Test(mutf7, refuses_what_is_not_the_canonical_spelling)
{
    /* found by fuzz_mutf7: each decoded to a name that encodes otherwise */
    bad("&AAA-");       /* U+0000 cut the name short ... */
    bad("INBOX&AAA-x"); /* ... so that this one read "INBOX" */
    bad("&AGE-");       /* "a" must stand for itself */
    bad("&ACY-");       /* so must "&" ("&-") */
    bad("&AOQ-&APY-");  /* two runs in a row are one run: "&AOQA9g-" */
    ok("&AOQA9g-", "\xc3\xa4\xc3\xb6");
    ok("&AOQ-&-&APY-", "\xc3\xa4&\xc3\xb6"); /* "&-" between runs is fine */
    ok("&AAE-", "\x01");                      /* controls are not printable */
}

Test(mutf7, a_failure_leaves_a_terminated_prefix)
{
    char out[16];
    memset(out, 'X', sizeof(out));
    cr_assert_eq(mutf7_decode(out, sizeof(out), "ab\tc", 4), -1);
    cr_assert_str_eq(out, "ab");
    memset(out, 'X', sizeof(out));
    cr_assert_eq(mutf7_decode(out, sizeof(out), "ab&A*Q-", 7), -1);
    cr_assert_str_eq(out, "ab");
}

static void enc_ok(const char *in, const char *want)
{
    char out[256], back[256];
    cr_assert_eq(mutf7_encode(out, sizeof(out), in, strlen(in)), 0, "%s", in);
    cr_assert_str_eq(out, want);
    cr_assert_eq(mutf7_decode(back, sizeof(back), out, strlen(out)), 0, "%s", out);
    cr_assert_str_eq(back, in);
}

static void enc_bad(const char *in, size_t len)
{
    char out[256];
    memset(out, 'X', sizeof(out));
    cr_assert_eq(mutf7_encode(out, sizeof(out), in, len), -1);
    cr_assert_lt(strlen(out), sizeof(out));
}

Test(mutf7, encodes_utf8)
{
    enc_ok("INBOX", "INBOX");
    enc_ok("&", "&-");
    enc_ok("a&b&", "a&-b&-");
    enc_ok("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
           "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    enc_ok("\xc3\xa4", "&AOQ-");
    enc_ok("\xc3\xa4\xc3\xb6", "&AOQA9g-");
    enc_ok("\xf0\x9f\x98\x80", "&2D3eAA-");
    enc_ok("\x01", "&AAE-");
    enc_ok("", "");
}

Test(mutf7, encode_refuses_what_is_not_utf8)
{
    enc_bad("a\0b", 3);              /* NUL */
    enc_bad("\xc3", 1);              /* truncated */
    enc_bad("\xc0\x80", 2);          /* overlong NUL */
    enc_bad("\xe0\x80\xaf", 3);      /* overlong '/' */
    enc_bad("\xed\xa0\x80", 3);      /* a surrogate */
    enc_bad("\xf4\x90\x80\x80", 4);  /* past U+10FFFF */
    enc_bad("\x80", 1);              /* a lone continuation byte */
    char out[6];
    cr_assert_eq(mutf7_encode(out, 5, "\xc3\xa4", 2), -1); /* "&AOQ-" needs 6 */
    cr_assert_lt(strlen(out), 5);
    cr_assert_eq(mutf7_encode(out, 6, "\xc3\xa4", 2), 0);
}
