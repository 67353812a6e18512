/* netaddr: client addresses as the caps and counters group them.  A textual
 * IPv4 or IPv6 address is parsed and reduced to the canonical text of its
 * prefix, so that every address of one IPv6 /64 (or one IPv4 host) gives the
 * same key.  IPv4-mapped IPv6 addresses (::ffff:192.0.2.1, as a dual-stack
 * socket reports IPv4 clients) are IPv4.  Pure code. */
#ifndef IMAPMUX_COMMON_NETADDR_H
#define IMAPMUX_COMMON_NETADDR_H

#include <stddef.h>
#include <stdint.h>

/* Longest key with its NUL: a full IPv6 address (45 bytes) plus "/128". */
#define NETADDR_MAX_KEY_LEN 64

/* The key of an address that does not parse: all of them share one group,
 * so that garbage cannot open a group of its own per spelling. */
#define NETADDR_UNPARSED_KEY "?"

enum netaddr_family {
    NETADDR_V4 = 4,
    NETADDR_V6 = 6,
};

struct netaddr {
    enum netaddr_family family;
    uint8_t bytes[16]; /* network order; IPv4 in the first 4 */
};

/* netaddr_parse reads a numeric IPv4 or IPv6 address; an IPv6 zone
 * ("fe80::1%eth0") is ignored.  IPv4-mapped IPv6 becomes NETADDR_V4.
 * Returns 0, or -1 when text is not such an address (out is then zeroed). */
int netaddr_parse(struct netaddr *out, const char *text);

/* netaddr_prefix_key writes the canonical text of a's first prefix_len bits
 * (host bits cleared) to out: the bare address when prefix_len covers the
 * whole address ("192.0.2.7", "2001:db8::1"), else "address/len"
 * ("2001:db8:1:2::/64").  prefix_len above the family's width is the full
 * width.  Returns 0, or -1 when out_len is too short (out is then ""). */
int netaddr_prefix_key(char *out, size_t out_len, const struct netaddr *a, unsigned prefix_len);

/* netaddr_key parses text and writes its key: v4_prefix_len bits for IPv4,
 * v6_prefix_len for IPv6; NETADDR_UNPARSED_KEY when text does not parse.
 * Returns 0 (parsed), 1 (unparsed: the shared key was written) or -1
 * (out_len too short). */
int netaddr_key(char *out, size_t out_len, const char *text, unsigned v4_prefix_len,
                unsigned v6_prefix_len);

/* netaddr_cidr_parse reads "address" or "address/len" (an IPv4-mapped IPv6
 * network becomes IPv4, its length less 96).  Returns 0 with the network in
 * *out and its length in *out_len (host bits kept as written), or -1 when
 * text is not such a network (out zeroed). */
int netaddr_cidr_parse(struct netaddr *out, unsigned *out_len, const char *text);

/* netaddr_in_prefix: 1 when a lies in the network net/len (same family and
 * the first len bits equal), else 0. */
int netaddr_in_prefix(const struct netaddr *a, const struct netaddr *net, unsigned len);

#endif
