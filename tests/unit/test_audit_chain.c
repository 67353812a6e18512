#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "common/audit_chain.h"

/* make_file seals a chain_start and n records into out (lines). */
static size_t make_file(char lines[][256], size_t n)
{
    struct audit_chain c;
    memset(&c, 0, sizeof(c));
    memset(c.prev, 0xab, sizeof(c.prev));
    char hex[AUDIT_CHAIN_HEX_LEN + 1], rec[200];
    audit_chain_hex(hex, c.prev);
    snprintf(rec, sizeof(rec), "{\"type\":\"chain_start\",\"prev\":\"%s\"}", hex);
    cr_assert_gt(audit_chain_seal(&c, rec, strlen(rec), lines[0], 256), 0);
    for (size_t i = 1; i <= n; i++) {
        snprintf(rec, sizeof(rec), "{\"type\":\"command\",\"tag\":\"a%zu\"}", i);
        cr_assert_gt(audit_chain_seal(&c, rec, strlen(rec), lines[i], 256), 0);
    }
    for (size_t i = 0; i <= n; i++) {
        lines[i][strlen(lines[i]) - 1] = '\0'; /* no newline, as the verifier reads them */
    }
    return n + 1;
}

/* verify returns the 1-based number of the first bad line, or 0. */
static size_t verify(char lines[][256], size_t n)
{
    struct audit_chain c;
    if (audit_chain_field(lines[0], strlen(lines[0]), "prev", c.prev) != 0) {
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (audit_chain_check(&c, lines[i], strlen(lines[i])) != 0) {
            return i + 1;
        }
    }
    return 0;
}

Test(audit_chain, an_intact_file_verifies)
{
    char lines[6][256];
    size_t n = make_file(lines, 5);
    cr_assert_eq(verify(lines, n), 0);
    cr_assert_not_null(strstr(lines[1], ",\"chain\":\""));
}

Test(audit_chain, an_edited_line_is_found)
{
    char lines[6][256];
    size_t n = make_file(lines, 5);
    char *p = strstr(lines[3], "a3");
    p[1] = '9';
    cr_assert_eq(verify(lines, n), 4);
}

Test(audit_chain, a_deleted_line_is_found)
{
    char lines[6][256];
    size_t n = make_file(lines, 5);
    memmove(lines[2], lines[3], sizeof(lines[0]) * 3);
    cr_assert_eq(verify(lines, n - 1), 3);
}

Test(audit_chain, swapped_lines_are_found)
{
    char lines[6][256], tmp[256];
    size_t n = make_file(lines, 5);
    memcpy(tmp, lines[2], sizeof(tmp));
    memcpy(lines[2], lines[4], sizeof(tmp));
    memcpy(lines[4], tmp, sizeof(tmp));
    cr_assert_eq(verify(lines, n), 3);
}

Test(audit_chain, a_forged_chain_value_is_found)
{
    char lines[6][256];
    size_t n = make_file(lines, 5);
    char *p = strstr(lines[2], "\"chain\":\"") + 9;
    *p = *p == '0' ? '1' : '0';
    cr_assert_eq(verify(lines, n), 3);
    /* a line with no chain value at all */
    strcpy(lines[4], "{\"type\":\"command\"}");
    make_file(lines, 5);
    strcpy(lines[4], "{\"type\":\"command\"}");
    struct audit_chain c;
    cr_assert_eq(audit_chain_field(lines[0], strlen(lines[0]), "prev", c.prev), 0);
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(audit_chain_check(&c, lines[i], strlen(lines[i])), 0);
    }
    cr_assert_eq(audit_chain_check(&c, lines[4], strlen(lines[4])), -1);
}

Test(audit_chain, seal_refuses_a_small_buffer_and_non_objects)
{
    struct audit_chain c;
    memset(&c, 0, sizeof(c));
    char out[60];
    cr_assert_eq(audit_chain_seal(&c, "{\"a\":1}", 7, out, sizeof(out)), 0);
    char big[200];
    cr_assert_eq(audit_chain_seal(&c, "[1]", 3, big, sizeof(big)), 0);
}

/* --- the end of a file: where a restart goes on from ------------------------ */

/* file_text seals a chain_start and n records (the last a chain_end when
 * ended) as a file's text into out; the chain value of its last line goes
 * to last.  Returns the length. */
static size_t file_text(char *out, size_t cap, size_t n, int ended, uint8_t last[AUDIT_CHAIN_LEN])
{
    struct audit_chain c;
    memset(&c, 0, sizeof(c));
    char hex[AUDIT_CHAIN_HEX_LEN + 1], rec[300];
    size_t o = 0;
    audit_chain_hex(hex, c.prev);
    for (size_t i = 0; i <= n; i++) {
        if (i == 0) {
            snprintf(rec, sizeof(rec), "{\"type\":\"chain_start\",\"prev\":\"%s\"}", hex);
        } else if (i == n && ended) {
            snprintf(rec, sizeof(rec), "{\"type\":\"chain_end\",\"records\":%zu}", n - 1);
        } else {
            snprintf(rec, sizeof(rec), "{\"type\":\"command\",\"tag\":\"a%zu\",\"mailbox\":"
                     "\"\\u0001\\\"x\\\\ \xc3\xa9\"}", i);
        }
        size_t w = audit_chain_seal(&c, rec, strlen(rec), out + o, cap - o);
        cr_assert_gt(w, 0);
        o += w;
    }
    memcpy(last, c.prev, AUDIT_CHAIN_LEN);
    return o;
}

static enum audit_chain_tail tail_of(const char *buf, size_t len, int at_start,
                                     uint8_t chain[AUDIT_CHAIN_LEN], size_t *cut, int *ended)
{
    return audit_chain_tail(chain, cut, ended, buf, len, at_start);
}

Test(audit_chain, tail_of_an_empty_file)
{
    uint8_t chain[AUDIT_CHAIN_LEN];
    size_t cut = 9;
    int ended = 9;
    cr_assert_eq(tail_of("", 0, 1, chain, &cut, &ended), AUDIT_TAIL_EMPTY);
    cr_assert_eq(cut, 0);
    cr_assert_eq(tail_of("", 0, 0, chain, &cut, &ended), AUDIT_TAIL_MORE);
}

Test(audit_chain, tail_of_a_whole_file_from_every_window)
{
    char text[4096];
    uint8_t last[AUDIT_CHAIN_LEN], chain[AUDIT_CHAIN_LEN];
    size_t cut;
    int ended;
    for (int end = 0; end <= 1; end++) {
        size_t len = file_text(text, sizeof(text), 5, end, last);
        size_t last_start = len - 1;
        while (text[last_start - 1] != '\n') {
            last_start--;
        }
        /* the window grows from the end, as the daemon reads it */
        for (size_t k = 1; k <= len; k++) {
            memset(chain, 0, sizeof(chain));
            enum audit_chain_tail r = tail_of(text + len - k, k, k == len, chain, &cut, &ended);
            if (k < len - last_start + 1) {
                cr_assert_eq(r, AUDIT_TAIL_MORE, "window %zu", k);
            } else {
                cr_assert_eq(r, AUDIT_TAIL_OK, "window %zu", k);
                cr_assert_eq(memcmp(chain, last, sizeof(last)), 0);
                cr_assert_eq(cut, 0);
                cr_assert_eq(ended, end);
            }
        }
    }
}

Test(audit_chain, tail_of_a_record_cut_at_every_byte)
{
    char text[4096], whole[4096];
    uint8_t last[AUDIT_CHAIN_LEN], lastn[AUDIT_CHAIN_LEN], chain[AUDIT_CHAIN_LEN];
    size_t cut;
    int ended;
    size_t len = file_text(text, sizeof(text), 4, 0, last);   /* what was whole */
    size_t wlen = file_text(whole, sizeof(whole), 5, 0, lastn); /* and the record it cut */
    cr_assert_eq(memcmp(text, whole, len), 0);
    for (size_t k = len + 1; k < wlen; k++) {
        enum audit_chain_tail r = tail_of(whole, k, 1, chain, &cut, &ended);
        if (k == wlen - 1) {
            /* whole but its newline: the record counts */
            cr_assert_eq(r, AUDIT_TAIL_UNENDED);
            cr_assert_eq(memcmp(chain, lastn, sizeof(lastn)), 0);
            cr_assert_eq(cut, 0);
        } else {
            cr_assert_eq(r, AUDIT_TAIL_CUT, "cut at %zu: %.*s", k, (int)(k - len), whole + len);
            cr_assert_eq(cut, k - len);
            cr_assert_eq(memcmp(chain, last, sizeof(last)), 0);
        }
        /* and from a window that starts at the newline before the last whole line */
        size_t from = len - 1;
        while (whole[from - 1] != '\n') {
            from--;
        }
        from--;
        cr_assert_eq(tail_of(whole + from, k - from, 0, chain, &cut, &ended), r);
        /* one byte less and the last whole line's start is unknown (an unended
         * record needs no line before it) */
        cr_assert_eq(tail_of(whole + from + 1, k - from - 1, 0, chain, &cut, &ended),
                     r == AUDIT_TAIL_CUT ? AUDIT_TAIL_MORE : r);
    }
}

Test(audit_chain, a_restart_after_a_cut_goes_on_with_the_chain)
{
    char text[8192];
    uint8_t last[AUDIT_CHAIN_LEN], chain[AUDIT_CHAIN_LEN];
    size_t cut;
    int ended;
    size_t len = file_text(text, sizeof(text), 3, 0, last);
    memcpy(text + len, "{\"type\":\"comm", 13); /* the writer died here */
    cr_assert_eq(tail_of(text, len + 13, 1, chain, &cut, &ended), AUDIT_TAIL_CUT);
    cr_assert_eq(cut, 13);
    /* as the daemon does: drop the cut bytes, write chain_start from chain */
    struct audit_chain c;
    memcpy(c.prev, chain, sizeof(chain));
    char hex[AUDIT_CHAIN_HEX_LEN + 1], rec[200];
    audit_chain_hex(hex, chain);
    snprintf(rec, sizeof(rec), "{\"type\":\"chain_start\",\"prev\":\"%s\",\"cut_bytes\":13}", hex);
    size_t w = audit_chain_seal(&c, rec, strlen(rec), text + len, sizeof(text) - len);
    cr_assert_gt(w, 0);
    len += w;
    /* the whole file verifies line by line */
    struct audit_chain v;
    cr_assert_eq(audit_chain_field(text, len, "prev", v.prev), 0);
    size_t off = 0, lines = 0;
    while (off < len) {
        const char *nl = memchr(text + off, '\n', len - off);
        cr_assert_not_null(nl);
        cr_assert_eq(audit_chain_check(&v, text + off, (size_t)(nl - (text + off))), 0,
                     "line %zu", lines + 1);
        off = (size_t)(nl - text) + 1;
        lines++;
    }
    cr_assert_eq(lines, 5);
}

Test(audit_chain, tails_that_are_no_chained_record_are_broken)
{
    char text[4096], bad[4096];
    uint8_t last[AUDIT_CHAIN_LEN], chain[AUDIT_CHAIN_LEN];
    size_t cut;
    int ended;
    size_t len = file_text(text, sizeof(text), 2, 0, last);
    char hex[AUDIT_CHAIN_HEX_LEN + 1];
    audit_chain_hex(hex, last);
    char forged_bad_json[200], no_chain[200];
    snprintf(forged_bad_json, sizeof(forged_bad_json),
             "{\"type\":\"command\",,\"truncated\":true,\"chain\":\"%s\"}\n", hex);
    snprintf(no_chain, sizeof(no_chain), "{\"type\":\"command\"}\n");
    const char *const tails[] = {
        "garbage\n",            /* a line of garbage */
        "garbage",              /* garbage, no newline: not a record cut short */
        "\n",                   /* an empty last line */
        "{\"a\":1}x",           /* not a prefix of a valid object */
        no_chain,               /* valid JSON, no chain value */
        forged_bad_json,        /* a chain value, not valid JSON */
        "\x00\x00\x00\x00",     /* what a crash of the file system may leave (4 NULs) */
    };
    for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
        size_t tl = i == 6 ? 4 : strlen(tails[i]);
        memcpy(bad, text, len);
        memcpy(bad + len, tails[i], tl);
        cr_expect_eq(tail_of(bad, len + tl, 1, chain, &cut, &ended), AUDIT_TAIL_BROKEN,
                     "tail %zu", i);
        cr_expect_eq(cut, 0);
    }
    /* a file that holds no whole line: nothing to go on from */
    cr_assert_eq(tail_of(text, 20, 1, chain, &cut, &ended), AUDIT_TAIL_BROKEN);
    /* a line longer than the window stays MORE: the caller gives up at its limit */
    memset(bad, 'x', 3000);
    cr_assert_eq(tail_of(bad, 3000, 0, chain, &cut, &ended), AUDIT_TAIL_MORE);
    bad[0] = '\n';
    cr_assert_eq(tail_of(bad, 3000, 0, chain, &cut, &ended), AUDIT_TAIL_BROKEN);
}
