/* Unit tests of common/sni: certificate name patterns, matching a client's
 * server name, and the ClientHello extension readers. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/sni.h"

static enum sni_match m(const char *pattern, const char *name)
{
    return sni_match(pattern, name, strlen(name));
}

Test(sni, exact_ignores_case_and_trailing_dot)
{
    cr_assert_eq(m("mail.example.com", "mail.example.com"), SNI_MATCH_EXACT);
    cr_assert_eq(m("mail.example.com", "MAIL.Example.COM"), SNI_MATCH_EXACT);
    cr_assert_eq(m("mail.example.com", "mail.example.com."), SNI_MATCH_EXACT);
    cr_assert_eq(m("mail.example.com", "mail.example.co"), SNI_MATCH_NONE);
    cr_assert_eq(m("mail.example.com", "xmail.example.com"), SNI_MATCH_NONE);
    cr_assert_eq(m("mail.example.com", ""), SNI_MATCH_NONE);
    cr_assert_eq(m("mail.example.com", "."), SNI_MATCH_NONE);
}

Test(sni, wildcard_covers_one_label)
{
    cr_assert_eq(m("*.example.com", "a.example.com"), SNI_MATCH_WILDCARD);
    cr_assert_eq(m("*.example.com", "IMAP.EXAMPLE.com"), SNI_MATCH_WILDCARD);
    cr_assert_eq(m("*.example.com", "a.example.com."), SNI_MATCH_WILDCARD);
    /* not the bare suffix, not two labels, not a look-alike suffix */
    cr_assert_eq(m("*.example.com", "example.com"), SNI_MATCH_NONE);
    cr_assert_eq(m("*.example.com", ".example.com"), SNI_MATCH_NONE);
    cr_assert_eq(m("*.example.com", "a.b.example.com"), SNI_MATCH_NONE);
    cr_assert_eq(m("*.example.com", "aexample.com"), SNI_MATCH_NONE);
    cr_assert_eq(m("*.example.com", "a.example.com.evil"), SNI_MATCH_NONE);
    cr_assert_eq(m("*.example.com", "a.badexample.com"), SNI_MATCH_NONE);
}

Test(sni, embedded_nul_never_matches)
{
    cr_assert_eq(sni_match("a.example.com", "a.example.com\0x", 15), SNI_MATCH_NONE);
    cr_assert_eq(sni_match("*.example.com", "a\0.example.com", 15), SNI_MATCH_NONE);
}

Test(sni, a_client_name_is_never_a_pattern)
{
    cr_assert_eq(m("*.example.com", "*.example.com"), SNI_MATCH_NONE);
    cr_assert_eq(m("a.example.com", "*.example.com"), SNI_MATCH_NONE);
}

Test(sni, pattern_validity)
{
    cr_assert(sni_pattern_valid("mail.example.com"));
    cr_assert(sni_pattern_valid("localhost"));
    cr_assert(sni_pattern_valid("*.example.com"));
    cr_assert(sni_pattern_valid("Mail.Example.com"));
    cr_assert_not(sni_pattern_valid(""));
    cr_assert_not(sni_pattern_valid("*"));
    cr_assert_not(sni_pattern_valid("*.com"));          /* two labels after the wildcard */
    cr_assert_not(sni_pattern_valid("a.*.example.com")); /* only the first label */
    cr_assert_not(sni_pattern_valid("*a.example.com"));
    cr_assert_not(sni_pattern_valid("**.example.com"));
    cr_assert_not(sni_pattern_valid("mail..example.com"));
    cr_assert_not(sni_pattern_valid("mail.example.com."));
    cr_assert_not(sni_pattern_valid("-mail.example.com"));
    cr_assert_not(sni_pattern_valid("mail-.example.com"));
    cr_assert_not(sni_pattern_valid("ma_il.example.com"));
    char big[300];
    memset(big, 'a', 64);
    strcpy(big + 64, ".example.com");
    cr_assert_not(sni_pattern_valid(big)); /* a 64-byte label */
    for (int i = 0; i < 255; i++) {
        big[i] = (i % 2) ? '.' : 'a';
    }
    big[255] = '\0';
    cr_assert_not(sni_pattern_valid(big)); /* longer than 253 */
}

Test(sni, server_name_extension)
{
    char out[SNI_MAX_NAME_LEN + 2];
    /* list len 16, type 0, len 13 "Mail.Test.ORG" */
    const uint8_t ok[] = {0, 16, 0, 0, 13, 'M', 'a', 'i', 'l', '.', 'T', 'e', 's', 't', '.', 'O', 'R', 'G'};
    cr_assert_eq(sni_parse_server_name(out, sizeof(out), ok, sizeof(ok)), 0);
    cr_assert_str_eq(out, "mail.test.org");
    /* every truncation is refused, never read past the end */
    for (size_t n = 0; n < sizeof(ok); n++) {
        cr_assert_eq(sni_parse_server_name(out, sizeof(out), ok, n), -1, "length %zu", n);
    }
    /* an unknown name type first, then the host name */
    const uint8_t two[] = {0, 9, 7, 0, 1, 'x', 0, 0, 2, 'a', 'b'};
    cr_assert_eq(sni_parse_server_name(out, sizeof(out), two, sizeof(two)), 0);
    cr_assert_str_eq(out, "ab");
    const uint8_t nul[] = {0, 5, 0, 0, 2, 'a', 0};
    cr_assert_eq(sni_parse_server_name(out, sizeof(out), nul, sizeof(nul)), -1);
    const uint8_t empty[] = {0, 3, 0, 0, 0};
    cr_assert_eq(sni_parse_server_name(out, sizeof(out), empty, sizeof(empty)), -1);
    cr_assert_eq(sni_parse_server_name(out, 10, ok, sizeof(ok)), -1); /* cap too small */
}

Test(sni, sigalgs_and_versions)
{
    struct sni_client_caps c;
    memset(&c, 0, sizeof(c));
    const uint8_t rsa_only[] = {0, 4, 0x08, 0x04, 0x04, 0x01};
    cr_assert_eq(sni_parse_sigalgs(&c, rsa_only, sizeof(rsa_only)), 0);
    cr_assert(c.have_sigalgs && c.sigalg_rsa && !c.sigalg_ecdsa);
    const uint8_t ec_only[] = {0, 2, 0x04, 0x03};
    cr_assert_eq(sni_parse_sigalgs(&c, ec_only, sizeof(ec_only)), 0);
    cr_assert(c.sigalg_ecdsa && !c.sigalg_rsa);
    const uint8_t odd[] = {0, 3, 0x04, 0x03, 0x01};
    cr_assert_eq(sni_parse_sigalgs(&c, odd, sizeof(odd)), -1);
    cr_assert_eq(sni_parse_sigalgs(&c, odd, 1), -1);
    const uint8_t v13[] = {4, 0x03, 0x04, 0x03, 0x03};
    cr_assert_eq(sni_parse_versions(&c, v13, sizeof(v13)), 0);
    cr_assert(c.tls13);
    const uint8_t v12[] = {2, 0x03, 0x03};
    cr_assert_eq(sni_parse_versions(&c, v12, sizeof(v12)), 0);
    cr_assert_not(c.tls13);
    cr_assert_eq(sni_parse_versions(&c, v13, 3), -1);
}
