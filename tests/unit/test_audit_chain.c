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
