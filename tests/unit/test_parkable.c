#include <string.h>

#include <criterion/criterion.h>

#include "common/parkable.h"

static int cmd(const char *name)
{
    return parkable_name(name);
}

static size_t logout(const char *line)
{
    return parkable_logout((const uint8_t *)line, strlen(line), 64);
}

Test(parkable, mailbox_commands_are_parkable)
{
    cr_assert(cmd("SELECT"));
    cr_assert(cmd("FETCH"));
    cr_assert(cmd("NOOP"));
    cr_assert(cmd("IDLE"));
    cr_assert(cmd("LOGOUT"));
}

Test(parkable, sticky_commands_are_not)
{
    cr_assert_not(cmd("ENABLE"));
    cr_assert_not(cmd("enable"));
    cr_assert_not(cmd("COMPRESS"));
    cr_assert_not(cmd("NOTIFY"));
    cr_assert_not(cmd("LANGUAGE"));
    cr_assert_not(cmd("UNAUTHENTICATE"));
    cr_assert_not(cmd("CONTEXT"));
    cr_assert_not(cmd("STARTTLS"));
    cr_assert_not(cmd("XLIST"));
    cr_assert_not(cmd("xyz"));
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
