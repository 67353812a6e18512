#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "common/json_check.h"

/* nest writes {"a":[[...]]} with depth containers in all; its length */
static size_t nest(char *out, int depth)
{
    size_t o = 0;
    memcpy(out, "{\"a\":", 5);
    o = 5;
    for (int i = 1; i < depth; i++) {
        out[o++] = '[';
    }
    for (int i = 1; i < depth; i++) {
        out[o++] = ']';
    }
    out[o++] = '}';
    return o;
}

Test(json_check, valid_objects)
{
    static const char *const good[] = {
        "{}",
        " {} ",
        "{\"a\":1}",
        "{\"a\":-0.5e+10,\"b\":0,\"c\":1E3,\"d\":-12.25}",
        "{\"a\":[1,\"x\",true,false,null,{},[]]}",
        "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\u00e9\\ud83d\\ude00\"}",
        "{\"a\":\"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80\x7f\"}",
        "{ \"a\" : [ 1 , 2 ] , \"b\" : { \"c\" : \"d\" } }",
        "{\"a\":1,\"A\":2,\"a \":3}",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        size_t off = 99;
        const char *why = "x";
        cr_expect_eq(json_check_object(&off, &why, good[i], strlen(good[i])), 0, "%s: %s", good[i],
                     why);
        cr_expect_null(why);
    }
}

Test(json_check, invalid_texts)
{
    static const char *const bad[] = {
        "", "[]", "1", "\"a\"", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{,\"a\":1}",
        "{,,\"truncated\":true}", "{\"a\":1,,\"b\":2}", "{\"a\":1}{}", "{\"a\":1} x",
        "{a:1}", "{'a':1}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":+1}",
        "{\"a\":1e}", "{\"a\":-}", "{\"a\":NaN}", "{\"a\":Infinity}", "{\"a\":tru}",
        "{\"a\":nul}", "{\"a\":True}", "{\"a\":\"\\x41\"}", "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\u12g4\"}", "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}",
        "{\"a\":\"\\ud800\\u0041\"}", "{\"a\":\"\x01\"}", "{\"a\":\"\t\"}",
        "{\"a\":\"\x80\"}", "{\"a\":\"\xc0\xaf\"}", "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":\"\xf4\x90\x80\x80\"}", "{\"a\":\"\xe6\x97\"}", "{\"a\":[1,]}", "{\"a\":[1 2]}",
        "{\"a\":1,\"a\":2}", "{\"a\":1,\"\\u0061\":2}", "{\"b\":{\"x\":1,\"x\":1}}",
        "{\"\xc3\xa9\":1,\"\\u00e9\":2}", "\xef\xbb\xbf{}", "{\"a\":1}\n\n{}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = NULL;
        cr_expect_eq(json_check_object(NULL, &why, bad[i], strlen(bad[i])), -1, "%s", bad[i]);
        cr_expect_not_null(why, "%s", bad[i]);
    }
}

Test(json_check, a_nul_byte_and_the_length_count)
{
    static const char t[] = "{\"a\":\"x\0y\"}";
    cr_assert_eq(json_check_object(NULL, NULL, t, sizeof(t) - 1), -1);
    /* the length decides, not a NUL */
    cr_assert_eq(json_check_object(NULL, NULL, "{}garbage", 2), 0);
}

Test(json_check, the_fault_offset_points_at_it)
{
    size_t off;
    const char *why;
    cr_assert_eq(json_check_object(&off, &why, "{\"a\":1,,\"b\":2}", 14), -1);
    cr_assert_eq(off, 7);
    cr_assert_eq(json_check_object(&off, &why, "{\"a\":1,\"a\":2}", 13), -1);
    cr_assert_eq(off, 7);
    cr_assert_str_eq(why, "a member name twice in one object");
}

Test(json_check, depth_and_member_limits)
{
    char deep[2 * JSON_CHECK_MAX_DEPTH + 16];
    size_t o = nest(deep, JSON_CHECK_MAX_DEPTH);
    cr_assert_eq(json_check_object(NULL, NULL, deep, o), 0);
    o = nest(deep, JSON_CHECK_MAX_DEPTH + 1);
    cr_assert_eq(json_check_object(NULL, NULL, deep, o), -1);

    char many[JSON_CHECK_MAX_MEMBERS * 12 + 16];
    o = 0;
    many[o++] = '{';
    for (int i = 0; i <= JSON_CHECK_MAX_MEMBERS; i++) {
        o += (size_t)sprintf(many + o, "%s\"k%d\":1", i > 0 ? "," : "", i);
        if (i == JSON_CHECK_MAX_MEMBERS - 1) {
            many[o] = '}';
            cr_assert_eq(json_check_object(NULL, NULL, many, o + 1), 0);
        }
    }
    many[o++] = '}';
    cr_assert_eq(json_check_object(NULL, NULL, many, o), -1);
}

Test(json_check, every_cut_of_a_valid_object_is_a_prefix)
{
    static const char rec[] =
        "{\"time\":\"2026-12-01T10:00:00.000001Z\",\"n\":-12.5e+3,\"b\":true,\"z\":null,"
        "\"f\":false,\"s\":\"a\\\"\\\\\\u00e9\\ud83d\\ude00\xc3\xa9\xf0\x9f\x98\x80\","
        "\"a\":[1,{\"x\":[]}],\"chain\":\"00ff\"}";
    size_t n = sizeof(rec) - 1;
    cr_assert_eq(json_check_object(NULL, NULL, rec, n), 0);
    cr_assert_eq(json_check_prefix(rec, n), 0); /* whole: not a cut one */
    for (size_t k = 1; k < n; k++) {
        cr_expect_eq(json_check_prefix(rec, k), 1, "cut at %zu: %.*s", k, (int)k, rec);
    }
}

Test(json_check, garbage_is_no_prefix)
{
    static const char *const bad[] = {
        "garbage", "{\"a\":1,,", "{\"a\"x", "{\"a\":tx", "{\"a\":\"\x01", "{\"a\":\"\\x",
        "{\"a\":\"\\u12g", "{\"a\":\"\xc3\x41", "{\"a\":\"\\udc00", "{\"a\":\"\\ud800\\u0041",
        "{\"a\":1}x", "{\"a\":1,\"a\"", "[1,", "\x80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(json_check_prefix(bad[i], strlen(bad[i])), 0, "%s", bad[i]);
    }
    static const char *const cut[] = {"{\"a\":\"\\ud800", "{\"a\":\"\\ud800\\",
                                      "{\"a\":\"\\ud800\\u", "{\"a\":\"\\ud800\\udc"};
    for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
        cr_expect_eq(json_check_prefix(cut[i], strlen(cut[i])), 1, "%s", cut[i]);
    }
}
