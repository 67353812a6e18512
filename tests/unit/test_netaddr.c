/* Client addresses to the keys the caps and counters group them by. */
#include <string.h>

#include <criterion/criterion.h>

#include "common/netaddr.h"

static void expect_key(const char *ip, unsigned v4_len, unsigned v6_len, const char *want)
{
    char key[NETADDR_MAX_KEY_LEN];
    int r = netaddr_key(key, sizeof(key), ip, v4_len, v6_len);
    cr_assert_eq(r, 0, "%s", ip);
    cr_assert_str_eq(key, want, "%s /%u /%u", ip, v4_len, v6_len);
}

Test(netaddr, parse)
{
    struct netaddr a;
    cr_assert_eq(netaddr_parse(&a, "192.0.2.7"), 0);
    cr_assert_eq(a.family, NETADDR_V4);
    cr_assert_eq(a.bytes[0], 192);
    cr_assert_eq(a.bytes[3], 7);
    cr_assert_eq(netaddr_parse(&a, "2001:db8::1"), 0);
    cr_assert_eq(a.family, NETADDR_V6);
    cr_assert_eq(a.bytes[0], 0x20);
    cr_assert_eq(a.bytes[15], 1);
    cr_assert_eq(netaddr_parse(&a, "fe80::1%eth0"), 0, "a zone is ignored");
    cr_assert_eq(a.family, NETADDR_V6);
    cr_assert_eq(netaddr_parse(&a, "::ffff:198.51.100.9"), 0);
    cr_assert_eq(a.family, NETADDR_V4, "IPv4-mapped is IPv4");
    cr_assert_eq(a.bytes[0], 198);
    cr_assert_eq(a.bytes[3], 9);
    cr_assert_eq(a.bytes[4], 0);

    const char *bad[] = {"", "localhost", "1.2.3", "1.2.3.4.5", "256.1.1.1", "::g",
                         "1.2.3.4%eth0", "%eth0", "1:2:3:4:5:6:7:8:9",
                         "0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        a.family = NETADDR_V6;
        cr_assert_eq(netaddr_parse(&a, bad[i]), -1, "%s", bad[i]);
        cr_assert_eq(a.family, 0, "zeroed on failure");
    }
    cr_assert_eq(netaddr_parse(&a, NULL), -1);
}

Test(netaddr, keys)
{
    /* a full-length prefix is the bare canonical address */
    expect_key("192.0.2.7", 32, 128, "192.0.2.7");
    expect_key("2001:DB8:0:0::1", 32, 128, "2001:db8::1");
    /* IPv6 by prefix: host bits cleared, canonical text, the length after it */
    expect_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 32, 64, "2001:db8:1:2::/64");
    expect_key("2001:db8:1:2::1", 32, 64, "2001:db8:1:2::/64");
    expect_key("2001:db8:1:2ff::1", 32, 56, "2001:db8:1:200::/56");
    expect_key("2001:db8:1:2ff::1", 32, 60, "2001:db8:1:2f0::/60");
    expect_key("2001:db8:1:2ff::1", 32, 1, "::/1");
    expect_key("ffff::1", 32, 1, "8000::/1");
    expect_key("2001:db8::1", 32, 200, "2001:db8::1"); /* clamped to 128 */
    /* IPv4 and IPv4-mapped take the IPv4 length, not the IPv6 one */
    expect_key("::ffff:192.0.2.7", 32, 64, "192.0.2.7");
    expect_key("::FFFF:192.0.2.7", 24, 64, "192.0.2.0/24");
    expect_key("192.0.2.7", 24, 64, "192.0.2.0/24");
    expect_key("192.0.2.255", 31, 64, "192.0.2.254/31");
    expect_key("192.0.2.7", 0, 64, "0.0.0.0/0");
    /* not IPv4-mapped: ::ffff:0:a.b.c.d is IPv4-translated, a distinct IPv6 */
    expect_key("::ffff:0:192.0.2.7", 32, 128, "::ffff:0:c000:207");
}

Test(netaddr, same_prefix_same_key)
{
    char a[NETADDR_MAX_KEY_LEN], b[NETADDR_MAX_KEY_LEN];
    cr_assert_eq(netaddr_key(a, sizeof(a), "2001:db8:5:6:1::", 32, 64), 0);
    cr_assert_eq(netaddr_key(b, sizeof(b), "2001:0db8:0005:0006:ffff:ffff:ffff:ffff", 32, 64), 0);
    cr_assert_str_eq(a, b);
    cr_assert_eq(netaddr_key(b, sizeof(b), "2001:db8:5:7::1", 32, 64), 0);
    cr_assert_str_neq(a, b);
}

Test(netaddr, unparsed_and_short_buffers)
{
    char key[NETADDR_MAX_KEY_LEN];
    cr_assert_eq(netaddr_key(key, sizeof(key), "not an address", 32, 64), 1);
    cr_assert_str_eq(key, NETADDR_UNPARSED_KEY);
    cr_assert_eq(netaddr_key(key, sizeof(key), "", 32, 64), 1);
    cr_assert_str_eq(key, NETADDR_UNPARSED_KEY);

    char small[8];
    cr_assert_eq(netaddr_key(small, sizeof(small), "192.0.2.7", 32, 64), -1);
    cr_assert_str_eq(small, "");
    cr_assert_eq(netaddr_key(small, sizeof(small), "1.2.3.4", 32, 64), 0);
    cr_assert_str_eq(small, "1.2.3.4");
    cr_assert_eq(netaddr_key(small, 1, "junk", 32, 64), -1);
    cr_assert_str_eq(small, "");

    /* the longest key fits NETADDR_MAX_KEY_LEN */
    cr_assert_eq(netaddr_key(key, sizeof(key), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 32, 127),
                 0);
    cr_assert_str_eq(key, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127");
}

Test(netaddr, cidr_parse_and_match)
{
    struct netaddr net, a;
    unsigned len;
    cr_assert_eq(netaddr_cidr_parse(&net, &len, "10.1.0.0/16"), 0);
    cr_assert_eq(net.family, NETADDR_V4);
    cr_assert_eq(len, 16);
    cr_assert_eq(netaddr_parse(&a, "10.1.200.3"), 0);
    cr_assert_eq(netaddr_in_prefix(&a, &net, len), 1);
    cr_assert_eq(netaddr_parse(&a, "10.2.0.1"), 0);
    cr_assert_eq(netaddr_in_prefix(&a, &net, len), 0);
    cr_assert_eq(netaddr_parse(&a, "::ffff:10.1.2.3"), 0); /* mapped: IPv4 */
    cr_assert_eq(netaddr_in_prefix(&a, &net, len), 1);

    cr_assert_eq(netaddr_cidr_parse(&net, &len, "127.0.0.1"), 0);
    cr_assert_eq(len, 32);
    cr_assert_eq(netaddr_cidr_parse(&net, &len, "2001:db8::/33"), 0);
    cr_assert_eq(len, 33);
    cr_assert_eq(netaddr_parse(&a, "2001:db8:7fff::1"), 0);
    cr_assert_eq(netaddr_in_prefix(&a, &net, len), 1);
    cr_assert_eq(netaddr_parse(&a, "2001:db8:8000::1"), 0);
    cr_assert_eq(netaddr_in_prefix(&a, &net, len), 0);
    cr_assert_eq(netaddr_parse(&a, "10.0.0.1"), 0); /* another family */
    cr_assert_eq(netaddr_in_prefix(&a, &net, len), 0);
    cr_assert_eq(netaddr_cidr_parse(&net, &len, "::ffff:192.0.2.0/120"), 0);
    cr_assert_eq(net.family, NETADDR_V4);
    cr_assert_eq(len, 24);
    cr_assert_eq(netaddr_cidr_parse(&net, &len, "0.0.0.0/0"), 0);
    cr_assert_eq(netaddr_parse(&a, "203.0.113.9"), 0);
    cr_assert_eq(netaddr_in_prefix(&a, &net, len), 1);

    const char *bad[] = {"", "/8", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/-1",
                         "::/129", "::ffff:1.2.3.4/95", "fe80::1%eth0/64", "host/8",
                         "10.0.0.0/0008", "10.0.0.0/8/8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(netaddr_cidr_parse(&net, &len, bad[i]), -1, "%s", bad[i]);
    }
}
