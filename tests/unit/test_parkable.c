#include <string.h>

#include <criterion/criterion.h>

#include "common/imap_scan.h"
#include "common/parkable.h"

static int cmd(const char *head)
{
    size_t n = strlen(head);
    if (n > IMAP_SCAN_HEAD_LEN) {
        n = IMAP_SCAN_HEAD_LEN; /* what imap_scan reports */
    }
    return parkable_command((const uint8_t *)head, n);
}

static size_t logout(const char *line)
{
    return parkable_logout((const uint8_t *)line, strlen(line), 64);
}

Test(parkable, mailbox_commands_are_parkable)
{
    cr_assert(cmd("a SELECT INBOX"));
    cr_assert(cmd("b UID FETCH 1:*"));
    cr_assert(cmd("c NOOP"));
    cr_assert(cmd("d IDLE"));
    cr_assert(cmd("lonetag"));
}

Test(parkable, sticky_commands_are_not)
{
    cr_assert_not(cmd("a ENABLE QRESYNC"));
    cr_assert_not(cmd("a enable x"));
    cr_assert_not(cmd("a COMPRESS DEFLATE"));
    cr_assert_not(cmd("a NOTIFY SET"));
    cr_assert_not(cmd("a LANGUAGE"));
    cr_assert_not(cmd("a UNAUTHENTICATE"));
    cr_assert_not(cmd("a CONTEXT"));
    cr_assert_not(cmd("a STARTTLS"));
    cr_assert_not(cmd("a XLIST \"\" *"));
    cr_assert_not(cmd("a xyz"));
}

Test(parkable, a_cut_name_is_not_guessed)
{
    /* the head is cut inside the name: it may be anything */
    cr_assert_not(cmd("averyveryverylongtag SELECT"));
    cr_assert_not(cmd("a1234567890 UNAUTH"));
    /* a lone tag as long as the head: cannot tell */
    cr_assert_not(cmd("abcdefghijklmnopq"));
}

Test(parkable, logout_lines)
{
    cr_assert_eq(logout("a LOGOUT\r\n"), 1);
    cr_assert_eq(logout("A001 logout\r\n"), 4);
    cr_assert_eq(logout(" LOGOUT\r\n"), 0);
    cr_assert_eq(logout("a LOGOUT\n"), 0);
    cr_assert_eq(logout("a LOGOUT"), 0);
    cr_assert_eq(logout("a+ LOGOUT\r\n"), 0);
    cr_assert_eq(logout("a b LOGOUT\r\n"), 0);
    cr_assert_eq(logout("a LOGOUTX\r\n"), 0);
    cr_assert_eq(logout("a NOOP\r\nb LOGOUT\r\n"), 0);
    char line[128];
    memset(line, 'x', 65);
    memcpy(line + 65, " LOGOUT\r\n", 10);
    cr_assert_eq(logout(line), 0); /* a tag over the limit */
    memcpy(line + 64, " LOGOUT\r\n", 10);
    cr_assert_eq(logout(line), 64);
}
