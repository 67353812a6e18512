#include <criterion/criterion.h>

#include <string.h>

#include "common/json.h"

Test(json, fields_and_escapes)
{
    char buf[256];
    struct json j;
    json_begin(&j, buf, sizeof(buf));
    json_str(&j, "a", "x\"y\\z\n\t\x01");
    json_u64(&j, "n", 18446744073709551615ULL);
    json_bool(&j, "b", 1);
    json_raw(&j, "r", "[1,2]");
    json_fields(&j, "\"f\":\"g\"");
    json_fields(&j, "");
    size_t n = json_end(&j);
    cr_assert_str_eq(buf, "{\"a\":\"x\\\"y\\\\z\\u000a\\u0009\\u0001\",\"n\":18446744073709551615,"
                          "\"b\":true,\"r\":[1,2],\"f\":\"g\"}");
    cr_assert_eq(n, strlen(buf));
}

Test(json, invalid_utf8_becomes_replacement)
{
    char out[64];
    /* a lone continuation byte, an overlong form, a surrogate, a cut sequence */
    const char in[] = "\x80" "a" "\xc0\xaf" "\xed\xa0\x80" "\xe6\x97";
    json_escape(out, sizeof(out), in, sizeof(in) - 1);
    cr_assert_str_eq(out, "\"\xef\xbf\xbd" "a" "\xef\xbf\xbd\xef\xbf\xbd"
                          "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "\xef\xbf\xbd\xef\xbf\xbd\"");
    json_escape(out, sizeof(out), "\xe6\x97\xa5 \xf0\x9f\x98\x80", 8);
    cr_assert_str_eq(out, "\"\xe6\x97\xa5 \xf0\x9f\x98\x80\"");
}

Test(json, a_field_that_does_not_fit_is_left_out_and_marked)
{
    char buf[80];
    char big[200];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct json j;
    json_begin(&j, buf, sizeof(buf));
    json_str(&j, "a", "1");
    json_str(&j, "big", big);
    json_str(&j, "c", "2");
    json_end(&j);
    cr_assert_str_eq(buf, "{\"a\":\"1\",\"c\":\"2\",\"truncated\":true}");
}

Test(json, escape_reports_the_length_it_needs)
{
    char small[4];
    size_t need = json_escape(small, sizeof(small), "abcdef", 6);
    cr_assert_eq(need, 8);
    cr_assert_str_eq(small, "\"ab");
    cr_assert_eq(json_escape(NULL, 0, "\"", 1), 4);
}

Test(json, a_record_whose_first_field_does_not_fit_is_still_json)
{
    /* it was {,"truncated":true} (found by fuzz_json) */
    char buf[64], big[100];
    struct json j;
    memset(big, 'x', sizeof(big));
    json_begin(&j, buf, sizeof(buf));
    json_strn(&j, "a", big, sizeof(big));
    json_u64(&j, "n", 1);
    size_t n = json_end(&j);
    cr_assert_str_eq(buf, "{\"n\":1,\"truncated\":true}");
    cr_assert_eq(n, strlen(buf));
    json_begin(&j, buf, sizeof(buf));
    json_strn(&j, "a", big, sizeof(big));
    json_end(&j);
    cr_assert_str_eq(buf, "{\"truncated\":true}");
}
