#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/imap_scan.h"

struct lines {
    char heads[64][IMAP_SCAN_HEAD_LEN + 1];
    size_t n;
};

static void on_line(void *ctx, const uint8_t *head, size_t len)
{
    struct lines *l = ctx;
    cr_assert_lt(l->n, 64);
    memcpy(l->heads[l->n], head, len);
    l->heads[l->n][len] = '\0';
    l->n++;
}

/* run feeds text split at offset cut (and byte by byte when cut is 0) */
static void run(struct lines *l, const char *text, size_t len, size_t cut, int *at_start)
{
    struct imap_scan sc;
    imap_scan_init(&sc);
    memset(l, 0, sizeof(*l));
    if (cut == 0) {
        for (size_t i = 0; i < len; i++) {
            imap_scan_feed(&sc, (const uint8_t *)text + i, 1, on_line, l);
        }
    } else {
        imap_scan_feed(&sc, (const uint8_t *)text, cut, on_line, l);
        imap_scan_feed(&sc, (const uint8_t *)text + cut, len - cut, on_line, l);
    }
    *at_start = imap_scan_at_line_start(&sc);
}

static void expect_lines(const char *text, const char *const *want, size_t nwant, int end_at_start)
{
    size_t len = strlen(text);
    for (size_t cut = 0; cut < len; cut++) {
        struct lines l;
        int at;
        run(&l, text, len, cut, &at);
        cr_assert_eq(l.n, nwant, "cut %zu: %zu lines", cut, l.n);
        for (size_t i = 0; i < nwant; i++) {
            cr_assert_str_eq(l.heads[i], want[i], "cut %zu line %zu", cut, i);
        }
        cr_assert_eq(at, end_at_start, "cut %zu", cut);
    }
}

Test(imap_scan, server_literals_are_skipped)
{
    /* the FETCH body holds CRLF, "* BYE" and a fake literal: none is a line */
    const char *t = "* 1 FETCH (BODY[] {27}\r\n* BYE fake\r\na OK {5}\r\nxxxxx)\r\n"
                    "a1 OK FETCH completed\r\n";
    static const char *const want[] = {"* 1 FETCH (BODY[] {27}", "a1 OK FETCH completed"};
    expect_lines(t, want, 2, 1);
}

Test(imap_scan, client_literals_of_every_kind)
{
    const char *t = "a LOGIN {5}\r\nalice {3+}\r\npw!\r\n"
                    "b APPEND INBOX ~{4}\r\n\r\n\r\n\r\n"
                    "c IDLE\r\nDONE\r\n";
    static const char *const want[] = {"a LOGIN {5}", "b APPEND INBOX ~{4}", "c IDLE", "DONE"};
    expect_lines(t, want, 4, 1);
}

Test(imap_scan, mid_line_and_mid_literal)
{
    const char *t = "* OK hello\r\n* 2 FETCH (BODY[] {10}\r\n01234";
    static const char *const want[] = {"* OK hello"};
    expect_lines(t, want, 1, 0);
    const char *t2 = "* OK partial";
    expect_lines(t2, want, 0, 0);
}

Test(imap_scan, not_literals)
{
    /* braces that do not end a line, a brace without digits, an empty line */
    const char *t = "* OK {5} text\r\n* OK {}\r\n\r\n* OK {x}\r\nz OK {12a}\r\n";
    static const char *const want[] = {"* OK {5} text", "* OK {}", "", "* OK {x}", "z OK {12a}"};
    expect_lines(t, want, 5, 1);
}

Test(imap_scan, huge_literal_length)
{
    struct imap_scan sc;
    struct lines l;
    memset(&l, 0, sizeof(l));
    imap_scan_init(&sc);
    const char *t = "* 1 FETCH (BODY[] {9999999999999999999}\r\nabc";
    imap_scan_feed(&sc, (const uint8_t *)t, strlen(t), on_line, &l);
    cr_assert_eq(sc.literal_left, 9999999999999999999ull - 3);
    cr_assert_eq(l.n, 0);
    /* 20 digits is no literal: the line simply ends */
    imap_scan_init(&sc);
    const char *t2 = "* OK {12345678901234567890}\r\n";
    imap_scan_feed(&sc, (const uint8_t *)t2, strlen(t2), on_line, &l);
    cr_assert_eq(l.n, 1);
    cr_assert(imap_scan_at_line_start(&sc));
}

Test(imap_scan, only_the_crlf_cr_leaves_the_head)
{
    /* a CR that is the last byte of the head of a longer first part belongs
     * to the line; it was cut as if it were the CRLF's (found by fuzz_imap_scan) */
    char first[IMAP_SCAN_HEAD_LEN + 1], second[IMAP_SCAN_HEAD_LEN];
    char text[4 * IMAP_SCAN_HEAD_LEN];
    for (size_t i = 0; i < IMAP_SCAN_HEAD_LEN - 1; i++) {
        first[i] = second[i] = (char)('a' + i % 26);
    }
    first[IMAP_SCAN_HEAD_LEN - 1] = '\r';
    first[IMAP_SCAN_HEAD_LEN] = '\0';
    second[IMAP_SCAN_HEAD_LEN - 1] = '\0';
    snprintf(text, sizeof(text), "%sX\r\n%s\r\nabc\rd\r\n", first, second);
    const char *const want[] = {first, second, "abc\rd"};
    expect_lines(text, want, 3, 1);
}
