#include <string.h>

#include <criterion/criterion.h>

#include "common/imap_syntax.h"

static int is_bye(const char *s)
{
    return imap_syntax_is_bye((const uint8_t *)s, strlen(s));
}

static int is_tag(const char *s)
{
    return imap_syntax_is_tag((const uint8_t *)s, strlen(s));
}

Test(imap_syntax, bye_in_any_case)
{
    cr_assert(is_bye("* BYE Logging out"));
    cr_assert(is_bye("* bye logging out"));
    cr_assert(is_bye("* ByE"));
    cr_assert(is_bye("* BYE\r"));
    cr_assert(is_bye("* BYE\r\n"));
}

Test(imap_syntax, not_a_bye)
{
    cr_assert_not(is_bye("* BYEFOO x"));
    cr_assert_not(is_bye("* OK BYE"));
    cr_assert_not(is_bye("a BYE"));
    cr_assert_not(is_bye("*  BYE"));
    cr_assert_not(is_bye("* BY"));
    cr_assert_not(is_bye(""));
    cr_assert_not(is_bye("+ BYE"));
}

Test(imap_syntax, tag_chars)
{
    cr_assert(is_tag("a1"));
    cr_assert(is_tag("A.001"));
    cr_assert(is_tag("x]"));   /* resp-specials are ASTRING-CHARs */
    cr_assert(is_tag("#-_!"));
    cr_assert_not(is_tag(""));
    cr_assert_not(is_tag("a+"));
    cr_assert_not(is_tag("a b"));
    cr_assert_not(is_tag("a*"));
    cr_assert_not(is_tag("a%"));
    cr_assert_not(is_tag("(a"));
    cr_assert_not(is_tag("a)"));
    cr_assert_not(is_tag("a{"));
    cr_assert_not(is_tag("\"a"));
    cr_assert_not(is_tag("a\\"));
    cr_assert_not(is_tag("a\x7f"));
    cr_assert_not(is_tag("a\x01"));
    cr_assert_not(is_tag("\xc3\xa9"));
}

Test(imap_syntax, every_byte_once)
{
    /* exactly the bytes of RFC 9051's tag rule, counted */
    int n = 0;
    for (int c = 0; c < 256; c++) {
        n += imap_syntax_is_tag_char((uint8_t)c);
    }
    /* 0x21..0x7e is 94 bytes, minus ( ) { % * " \ + */
    cr_assert_eq(n, 94 - 8);
}
