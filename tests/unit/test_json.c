#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/audit_tap.h"
#include "common/json.h"
#include "common/json_check.h"

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

/* --- records built from hostile values are always one valid object ---------- */

static int valid(const char *s, size_t n)
{
    return json_check_object(NULL, NULL, s, n) == 0;
}

Test(json, an_object_whose_every_field_was_cut_is_valid)
{
    char buf[64];
    char big[200];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct json j;
    json_begin(&j, buf, sizeof(buf));
    json_str(&j, "mailbox", big);
    size_t n = json_end(&j);
    cr_assert_str_eq(buf, "{\"truncated\":true}");
    cr_assert(valid(buf, n));
}

Test(json, fields_of_a_cut_object_carry_their_mark_once)
{
    char inner[64], buf[128];
    char big[200];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct json f, j;

    /* every field of the inner object was cut: the tap's fields of a long name */
    json_begin(&f, inner, sizeof(inner));
    json_str(&f, "mailbox", big);
    json_end(&f);
    inner[f.len - 1] = '\0';
    json_begin(&j, buf, sizeof(buf));
    json_str(&j, "a", "1");
    json_fields(&j, inner + 1);
    json_str(&j, "b", "2");
    size_t n = json_end(&j);
    cr_assert_str_eq(buf, "{\"a\":\"1\",\"b\":\"2\",\"truncated\":true}");
    cr_assert(valid(buf, n));

    /* one kept, one cut; and the outer object cut as well */
    json_begin(&f, inner, sizeof(inner));
    json_str(&f, "m", "x");
    json_str(&f, "mailbox", big);
    json_end(&f);
    inner[f.len - 1] = '\0';
    json_begin(&j, buf, sizeof(buf));
    json_fields(&j, inner + 1);
    json_str(&j, "big", big);
    json_str(&j, "b", "2");
    n = json_end(&j);
    cr_assert_str_eq(buf, "{\"m\":\"x\",\"b\":\"2\",\"truncated\":true}");
    cr_assert(valid(buf, n));
}

/* a tap record, built as the session builds a command record */
struct tap_out {
    char rec[8192];
    size_t len;
    int count;
    int all_valid;
};

static void on_tap_cmd(void *ctx, const struct audit_cmd *c)
{
    struct tap_out *o = ctx;
    struct json j;
    json_begin(&j, o->rec, sizeof(o->rec));
    json_str(&j, "time", "2026-12-01T00:00:00.000000Z");
    json_str(&j, "type", "command");
    json_str(&j, "tag", c->tag);
    json_str(&j, "command", c->name);
    json_bool(&j, "uid", c->uid);
    json_fields(&j, c->fields);
    json_str(&j, "status", c->status[0] != '\0' ? c->status : "none");
    if (c->code[0] != '\0') {
        json_str(&j, "code", c->code);
    }
    json_u64(&j, "duration_us", c->end_us - c->start_us);
    o->len = json_end(&j);
    o->count++;
    if (!valid(o->rec, o->len)) {
        o->all_valid = 0;
        cr_log_error("not valid JSON: %s", o->rec);
    }
}

Test(json, a_hostile_mailbox_name_through_the_tap_is_a_valid_record)
{
    static const struct audit_tap_opts opts = {.seqset_max = 16, .max_pending = 8};
    struct tap_out o = {.all_valid = 1};
    struct audit_tap *t = audit_tap_new(&opts, on_tap_cmd, &o);
    cr_assert_not_null(t);
    char cmd[700];
    size_t n = 0;
    /* a quoted name of 600 control characters (the tap keeps 512): 3072
     * bytes escaped, more than the tap's fields may hold; it once gave
     * ,,"truncated":true */
    n += (size_t)snprintf(cmd, sizeof(cmd), "a1 SELECT \"");
    for (int i = 0; i < 600; i++) {
        cmd[n++] = (char)(i % 2 == 0 ? 0x02 : 0x1f);
    }
    n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, "\"\r\n");
    cr_assert_eq(audit_tap_client(t, (const uint8_t *)cmd, n, 1), 0);
    audit_tap_server(t, (const uint8_t *)"a1 NO no\r\n", 10, 2);
    cr_assert_eq(o.count, 1);
    cr_assert(o.all_valid);
    cr_assert_not_null(strstr(o.rec, "\"truncated\":true"), "%s", o.rec);

    /* quotes, backslashes and 8-bit in a literal name that fits */
    static const char name[] = "\"q\\\x01\x7f\xff\xfe\xc3\xa9&AOk-\"\\\"\x1b[2J\x80\x81\x82";
    char lit[128];
    size_t lit_len = (size_t)snprintf(lit, sizeof(lit), "a2 DELETE {%zu}\r\n%s\r\n",
                                      sizeof(name) - 1, name);
    cr_assert_eq(audit_tap_client(t, (const uint8_t *)lit, lit_len, 3), 0);
    audit_tap_server(t, (const uint8_t *)"a2 OK done\r\n", 12, 4);
    cr_assert_eq(o.count, 2);
    cr_assert(o.all_valid);
    cr_assert_not_null(strstr(o.rec, "\"mailbox\":\"\\\"q\\\\\\u0001\\u007f\xef\xbf\xbd"),
                       "%s", o.rec);
    audit_tap_free(t);
}

/* prng: xorshift, so every run makes the same cases */
static uint32_t prng(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* hostile_value fills v with len bytes drawn from the worst kinds */
static void hostile_value(uint32_t *s, char *v, size_t len)
{
    static const char *const bits[] = {"\"", "\\", "\x00", "\x01", "\x1f", "\x7f", "\n", "\r",
                                       "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80", "\xc3",
                                       "\xed\xa0\x80", "\xff", "\xc0\xaf", "\\u0000", "a",
                                       "\"truncated\":true", ",", "}"};
    size_t o = 0;
    while (o < len) {
        uint32_t r = prng(s);
        if (r % 4 == 0) {
            v[o++] = (char)(prng(s) & 0xff);
            continue;
        }
        const char *b = bits[r % (sizeof(bits) / sizeof(bits[0]))];
        size_t bl = b[0] == '\0' ? 1 : strlen(b);
        for (size_t k = 0; k < bl && o < len; k++) {
            v[o++] = b[k];
        }
    }
}

/* make_record builds a record of hostile fields in buf (cap bytes) */
static size_t make_record(uint32_t *s, char *buf, size_t cap)
{
    /* distinct names: the session never writes one twice (nor json_fields twice) */
    static const char *const keys[] = {"time", "user", "mailbox", "tag", "command", "search",
                                       "n", "uid", "fields"};
    char v[1200], inner[3072];
    struct json j, f;
    json_begin(&j, buf, cap);
    int nf = (int)(prng(s) % (sizeof(keys) / sizeof(keys[0])));
    for (int i = 0; i < nf; i++) {
        size_t len = prng(s) % (prng(s) % 4 == 0 ? sizeof(v) : 40);
        hostile_value(s, v, len);
        switch (i) {
        case 6:
            json_u64(&j, "n", ((uint64_t)prng(s) << 32) | prng(s));
            break;
        case 7:
            json_bool(&j, "uid", (int)(prng(s) & 1));
            break;
        case 8: {
            /* tap-like fields from a smaller object, maybe cut */
            size_t icap = 64 + prng(s) % (sizeof(inner) - 64);
            json_begin(&f, inner, icap);
            json_strn(&f, "box", v, len);
            json_strn(&f, "set", v, len / 2);
            json_end(&f);
            inner[f.len - 1] = '\0';
            json_fields(&j, inner + 1);
            break;
        }
        default:
            json_strn(&j, keys[i], v, len);
            break;
        }
    }
    return json_end(&j);
}

Test(json, hostile_values_make_valid_records_at_every_size)
{
    uint32_t s = 0x2545f491;
    char buf[8192];
    for (int i = 0; i < 20000; i++) {
        size_t cap = 64 + prng(&s) % (sizeof(buf) - 64);
        size_t n = make_record(&s, buf, cap);
        cr_assert_lt(n, cap);
        cr_assert_eq(strlen(buf), n);
        size_t off;
        const char *why;
        cr_assert_eq(json_check_object(&off, &why, buf, n), 0, "cap %zu: %s at %zu: %s", cap, why,
                     off, buf);
    }
}

/* put_case writes "<verdict> <hex>" of text to f */
static void put_case(FILE *f, const char *text, size_t n)
{
    fprintf(f, "%d ", valid(text, n) ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%02x", (unsigned char)text[i]);
    }
    fprintf(f, "%s\n", n == 0 ? "-" : "");
}

Test(json, json_check_agrees_with_python)
{
    char path[] = "/tmp/imapmux-json-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    cr_assert_not_null(f);
    uint32_t s = 0x9e3779b9;
    char buf[8192];
    int valid_ones = 0, invalid_ones = 0;
    for (int i = 0; i < 3000; i++) {
        size_t n = make_record(&s, buf, 64 + prng(&s) % 2000);
        put_case(f, buf, n);
        /* near misses: one byte changed, dropped or added */
        for (int m = 0; m < 3 && n > 0; m++) {
            size_t at = prng(&s) % n;
            static const char some[] = "\"\\{}[]:,0-eE.tfn\x01\x1f\x7f\x80\xc3 u";
            /* snippets that make a near miss of another kind: a name twice, a
             * lone surrogate, a constant Python knows, a number at an edge */
            static const char *const snips[] = {
                "\"time\":1,", ",\"time\":1", "\\ud800", "\\udc00", "\\ud83d\\ude00", "NaN",
                "Infinity", "-0", "1e5", "0.5", "01", "\\u00e9", "\\u0000", "\xed\xa0\x80",
                "\xf4\x90\x80\x80", "\xc3\xa9", "\"x\":[1,{}]", "\"\\u0074ime\":0,", "\t", "\r\n"};
            char c = prng(&s) % 3 == 0 ? (char)prng(&s) : some[prng(&s) % (sizeof(some) - 1)];
            switch (prng(&s) % 4) {
            case 0:
                buf[at] = c;
                break;
            case 1:
                memmove(buf + at, buf + at + 1, n - at);
                n--;
                break;
            case 2:
                memmove(buf + at + 1, buf + at, n - at + 1);
                buf[at] = c;
                n++;
                break;
            default: {
                const char *sn = snips[prng(&s) % (sizeof(snips) / sizeof(snips[0]))];
                size_t sl = strlen(sn);
                if (n + sl < sizeof(buf)) {
                    memmove(buf + at + sl, buf + at, n - at + 1);
                    memcpy(buf + at, sn, sl);
                    n += sl;
                }
                break;
            }
            }
            put_case(f, buf, n);
            if (valid(buf, n)) {
                valid_ones++;
            } else {
                invalid_ones++;
            }
        }
    }
    cr_assert_gt(invalid_ones, 1000);
    cr_assert_gt(valid_ones, 100); /* a changed digit or letter inside a string stays valid */
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "python3 %s/../unit/json_crosscheck.py %s", TEST_DATA_DIR, path);
    int rc = system(cmd);
    unlink(path);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 127) {
        cr_skip_test("no python3");
    }
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "json_check and Python disagree");
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
