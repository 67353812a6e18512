#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/capa.h"

static void expect_filter(const char *in, const char *want)
{
    size_t len = 0;
    char *out = capa_filter(&len, in, strlen(in));
    cr_assert_not_null(out);
    cr_assert_str_eq(out, want, "filter(%s)", in);
    cr_assert_eq(len, strlen(want));
    free(out);
}

Test(capa, removes_what_the_proxy_does_not_carry)
{
    expect_filter("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE STARTTLS AUTH=PLAIN "
                  "AUTH=SCRAM-SHA-256 LOGINDISABLED COMPRESS=DEFLATE LITERAL+",
                  "IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE LITERAL+");
    expect_filter("IMAP4rev2 LITERAL- UNAUTHENTICATE MOVE", "IMAP4rev2 LITERAL- MOVE");
}

Test(capa, case_and_spacing)
{
    expect_filter("  imap4rev2  starttls   auth=xoauth2 Idle ", "imap4rev2 Idle");
    expect_filter("", "");
    expect_filter("STARTTLS", "");
}

Test(capa, keeps_similar_names)
{
    /* prefixes only match where the pattern says so */
    expect_filter("STARTTLSX AUTHX COMPRESS SASL-IRX", "STARTTLSX AUTHX COMPRESS SASL-IRX");
}

Test(capa, has)
{
    const char *l = "IMAP4rev1 SASL-IR AUTH=PLAIN LITERAL+";
    cr_assert(capa_has(l, strlen(l), "auth=plain"));
    cr_assert(capa_has(l, strlen(l), "LITERAL+"));
    cr_assert_not(capa_has(l, strlen(l), "AUTH"));
    cr_assert_not(capa_has(l, strlen(l), "LITERAL"));
    cr_assert_not(capa_has(l, strlen(l), ""));
}

Test(capa, find_in_text)
{
    const char *t = "[CAPABILITY IMAP4rev1 IDLE] Logged in";
    size_t n = 0;
    const char *p = capa_find_in_text(&n, t, strlen(t));
    cr_assert_not_null(p);
    cr_assert_eq(n, strlen("IMAP4rev1 IDLE"));
    cr_assert_eq(strncmp(p, "IMAP4rev1 IDLE", n), 0);
    cr_assert_null(capa_find_in_text(&n, "Logged in", 9));
    cr_assert_null(capa_find_in_text(&n, "[CAPABILITY IMAP4rev1", 21)); /* unterminated */
    t = "Dovecot ready. [capability IMAP4rev1]";
    cr_assert_not_null(capa_find_in_text(&n, t, strlen(t)));
}
