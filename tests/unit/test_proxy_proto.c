#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/proxy_proto.h"

/* feed_all gives the parser data in pieces of step bytes (0: all at once)
 * and returns the result; *out_used is the header's length when DONE. */
static enum proxy_proto_result feed_all(struct proxy_proto *p, size_t *out_used,
                                        const uint8_t *data, size_t len, size_t step)
{
    size_t off = 0;
    enum proxy_proto_result r = PROXY_PROTO_MORE;
    while (off < len) {
        size_t n = step == 0 || step > len - off ? len - off : step;
        size_t used = 0;
        r = proxy_proto_feed(p, &used, data + off, n);
        cr_assert_leq(used, n);
        off += used;
        if (r != PROXY_PROTO_MORE) {
            break;
        }
        cr_assert_eq(used, n, "MORE takes every byte");
    }
    *out_used = off;
    return r;
}

/* expect_header parses text + "rest" with every split size and checks the
 * header ends where the rest begins. */
static void expect_header(const uint8_t *hdr, size_t hdr_len, void (*check)(const struct proxy_proto_info *))
{
    uint8_t buf[2048];
    cr_assert_lt(hdr_len + 4, sizeof(buf));
    memcpy(buf, hdr, hdr_len);
    memcpy(buf + hdr_len, "A01 ", 4); /* the client's first bytes */
    for (size_t step = 0; step <= hdr_len + 4; step++) {
        struct proxy_proto *p = proxy_proto_new();
        size_t used = 0;
        enum proxy_proto_result r = feed_all(p, &used, buf, hdr_len + 4, step);
        cr_assert_eq(r, PROXY_PROTO_DONE, "step %zu: %s", step, proxy_proto_error(p));
        cr_assert_eq(used, hdr_len, "step %zu: took %zu of a %zu byte header", step, used, hdr_len);
        check(proxy_proto_info(p));
        /* after DONE nothing more is taken */
        size_t more = 99;
        cr_assert_eq(proxy_proto_feed(p, &more, buf + hdr_len, 4), PROXY_PROTO_DONE);
        cr_assert_eq(more, 0);
        proxy_proto_free(p);
    }
}

static void expect_error(const uint8_t *data, size_t len)
{
    for (size_t step = 0; step <= len; step++) {
        struct proxy_proto *p = proxy_proto_new();
        size_t used = 0;
        cr_assert_eq(feed_all(p, &used, data, len, step), PROXY_PROTO_ERROR,
                     "step %zu accepted a bad header", step);
        cr_assert_neq(proxy_proto_error(p)[0], '\0');
        proxy_proto_free(p);
    }
}

#define S(x) (const uint8_t *)(x), sizeof(x) - 1

static void check_v1_tcp4(const struct proxy_proto_info *i)
{
    cr_assert_eq(i->version, 1);
    cr_assert_eq(i->local, 0);
    cr_assert_str_eq(i->src_ip, "192.0.2.7");
    cr_assert_str_eq(i->dst_ip, "198.51.100.1");
    cr_assert_eq(i->src_port, 56324);
    cr_assert_eq(i->dst_port, 993);
}

Test(proxy_proto, v1_tcp4_any_split_keeps_the_rest)
{
    expect_header(S("PROXY TCP4 192.0.2.7 198.51.100.1 56324 993\r\n"), check_v1_tcp4);
}

static void check_v1_tcp6(const struct proxy_proto_info *i)
{
    cr_assert_eq(i->ipv6, 1);
    cr_assert_str_eq(i->src_ip, "2001:db8::1");
    cr_assert_str_eq(i->dst_ip, "2001:db8::2");
    cr_assert_eq(i->src_port, 0);
    cr_assert_eq(i->dst_port, 65535);
}

Test(proxy_proto, v1_tcp6)
{
    expect_header(S("PROXY TCP6 2001:db8:0::1 2001:db8::2 0 65535\r\n"), check_v1_tcp6);
}

static void check_local(const struct proxy_proto_info *i)
{
    cr_assert_eq(i->local, 1);
    cr_assert_str_eq(i->src_ip, "");
}

Test(proxy_proto, v1_unknown)
{
    expect_header(S("PROXY UNKNOWN\r\n"), check_local);
    expect_header(S("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), check_local);
}

Test(proxy_proto, v1_malformed)
{
    expect_error(S("PROXY TCP4 192.0.2.7 198.51.100.1 56324 993\n"));    /* LF alone */
    expect_error(S("PROXY TCP4 192.0.2.7 198.51.100.1 56324 993\rX\r\n")); /* CR inside */
    expect_error(S("PROXY TCP4 192.0.2.7  198.51.100.1 56324 993\r\n"));  /* two spaces */
    expect_error(S("PROXY TCP4 192.0.2.7 198.51.100.1 56324 993 \r\n"));  /* trailing space */
    expect_error(S("PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n"));      /* family */
    expect_error(S("PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n"));
    expect_error(S("PROXY TCP4 192.0.2.7 198.51.100.1 65536 993\r\n"));  /* port range */
    expect_error(S("PROXY TCP4 192.0.2.7 198.51.100.1 0993 993\r\n"));   /* leading zero */
    expect_error(S("PROXY TCP4 192.0.2.7 198.51.100.1 -1 993\r\n"));
    expect_error(S("PROXY TCP4 192.0.2.7 198.51.100.1 993\r\n"));        /* a port missing */
    expect_error(S("PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n"));
    expect_error(S("PROXY TCP4 192.0.2.7 198.51.100.1 1 2 3\r\n"));
    expect_error(S("PROXY\r\n"));
    expect_error(S("PROXY \r\n"));
    expect_error(S("PROXX TCP4"));
    expect_error(S("A01 LOGIN a b\r\n"));     /* a client speaking without a header */
    expect_error(S("\x16\x03\x01\x02\x00")); /* a ClientHello without a header */
    expect_error(S("proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n"));
    expect_error(S("PROXY TCP4 192.0.2.7 198.51.100.1 1 2\0\r\n"));
}

Test(proxy_proto, v1_bounded_at_107_bytes)
{
    uint8_t line[200];
    memcpy(line, "PROXY UNKNOWN ", 14);
    memset(line + 14, 'x', sizeof(line) - 14);
    /* 105 bytes and CRLF: the longest line there is */
    line[105] = '\r';
    line[106] = '\n';
    struct proxy_proto *p = proxy_proto_new();
    size_t used = 0;
    cr_assert_eq(feed_all(p, &used, line, 107, 1), PROXY_PROTO_DONE);
    cr_assert_eq(used, 107);
    proxy_proto_free(p);
    /* one more byte before the CRLF: refused, and no more than 107 are read */
    memset(line + 14, 'x', sizeof(line) - 14);
    line[106] = '\r';
    line[107] = '\n';
    p = proxy_proto_new();
    cr_assert_eq(proxy_proto_feed(p, &used, line, 108), PROXY_PROTO_ERROR);
    cr_assert_leq(used, 107);
    proxy_proto_free(p);
}

/* --- version 2 ------------------------------------------------------------ */

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static size_t v2_fixed(uint8_t *out, uint8_t ver_cmd, uint8_t fam, size_t body_len)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(body_len >> 8);
    out[15] = (uint8_t)body_len;
    return 16;
}

static struct proxy_proto_info full_info(void)
{
    struct proxy_proto_info i;
    memset(&i, 0, sizeof(i));
    strcpy(i.src_ip, "192.0.2.7");
    i.src_port = 40000;
    strcpy(i.dst_ip, "198.51.100.1");
    i.dst_port = 143;
    strcpy(i.authority, "imap.example.org");
    memcpy(i.unique_id, "w1-42", 5);
    i.unique_id_len = 5;
    i.has_ssl = 1;
    i.ssl_client = PROXY_PROTO_CLIENT_SSL;
    strcpy(i.ssl_version, "TLSv1.3");
    strcpy(i.ssl_cipher, "TLS_AES_256_GCM_SHA384");
    return i;
}

static void check_full(const struct proxy_proto_info *i)
{
    cr_assert_eq(i->version, 2);
    cr_assert_eq(i->local, 0);
    cr_assert_str_eq(i->src_ip, "192.0.2.7");
    cr_assert_eq(i->src_port, 40000);
    cr_assert_str_eq(i->dst_ip, "198.51.100.1");
    cr_assert_eq(i->dst_port, 143);
    cr_assert_str_eq(i->authority, "imap.example.org");
    cr_assert_eq(i->unique_id_len, 5);
    cr_assert_eq(memcmp(i->unique_id, "w1-42", 5), 0);
    cr_assert_eq(i->has_ssl, 1);
    cr_assert_eq(i->ssl_client, PROXY_PROTO_CLIENT_SSL);
    cr_assert_str_eq(i->ssl_version, "TLSv1.3");
    cr_assert_str_eq(i->ssl_cipher, "TLS_AES_256_GCM_SHA384");
}

Test(proxy_proto, v2_build_and_parse_every_split)
{
    uint8_t hdr[1024];
    struct proxy_proto_info in = full_info();
    int n = proxy_proto_v2_build(hdr, sizeof(hdr), &in);
    cr_assert_gt(n, 16);
    cr_assert_eq(memcmp(hdr, sig, 12), 0);
    cr_assert_eq(hdr[12], 0x21);
    cr_assert_eq(hdr[13], 0x11);
    cr_assert_eq((size_t)((hdr[14] << 8) | hdr[15]), (size_t)n - 16);
    expect_header(hdr, (size_t)n, check_full);
    /* too small a buffer: refused, not cut */
    cr_assert_eq(proxy_proto_v2_build(hdr, (size_t)n - 1, &in), -1);
}

static void check_v6(const struct proxy_proto_info *i)
{
    cr_assert_eq(i->ipv6, 1);
    cr_assert_str_eq(i->src_ip, "2001:db8::7");
    cr_assert_str_eq(i->dst_ip, "::1");
    cr_assert_str_eq(i->authority, "");
    cr_assert_eq(i->has_ssl, 0);
}

Test(proxy_proto, v2_ipv6_and_local)
{
    uint8_t hdr[256];
    struct proxy_proto_info in;
    memset(&in, 0, sizeof(in));
    strcpy(in.src_ip, "2001:db8::7");
    strcpy(in.dst_ip, "::1");
    int n = proxy_proto_v2_build(hdr, sizeof(hdr), &in);
    cr_assert_eq(n, 16 + 36);
    cr_assert_eq(hdr[13], 0x21);
    expect_header(hdr, (size_t)n, check_v6);
    /* mixed families cannot be said: LOCAL */
    strcpy(in.dst_ip, "127.0.0.1");
    n = proxy_proto_v2_build(hdr, sizeof(hdr), &in);
    cr_assert_eq(n, 16);
    cr_assert_eq(hdr[12], 0x20);
    expect_header(hdr, (size_t)n, check_local);
    /* a LOCAL command with an address block: ignored, the whole block read */
    size_t m = v2_fixed(hdr, 0x20, 0x11, 12);
    memset(hdr + m, 7, 12);
    expect_header(hdr, m + 12, check_local);
    /* UNSPEC under PROXY: no address */
    m = v2_fixed(hdr, 0x21, 0x00, 3);
    memset(hdr + m, 0, 3);
    expect_header(hdr, m + 3, check_local);
}

/* tlv4 builds a TCP4 header whose TLV part is tlvs. */
static size_t tlv4(uint8_t *out, const uint8_t *tlvs, size_t tlvs_len)
{
    size_t n = v2_fixed(out, 0x21, 0x11, 12 + tlvs_len);
    static const uint8_t addrs[12] = {127, 0, 0, 9, 127, 0, 0, 1, 0x12, 0x34, 0, 143};
    memcpy(out + n, addrs, 12);
    memcpy(out + n + 12, tlvs, tlvs_len);
    return n + 12 + tlvs_len;
}

static void check_tlv4(const struct proxy_proto_info *i)
{
    cr_assert_str_eq(i->src_ip, "127.0.0.9");
    cr_assert_eq(i->src_port, 0x1234);
}

Test(proxy_proto, v2_tlvs_unknown_skipped_bad_refused)
{
    uint8_t hdr[512];
    /* NOOP, ALPN, a custom type: skipped */
    expect_header(hdr, tlv4(hdr, S("\x04\x00\x02xx\x01\x00\x04imap\xe0\x00\x00")), check_tlv4);
    /* cut TLVs */
    expect_error(hdr, tlv4(hdr, S("\x04\x00")));
    expect_error(hdr, tlv4(hdr, S("\x04\x00\x05xx")));
    /* AUTHORITY: empty, a space, a NUL, twice */
    expect_error(hdr, tlv4(hdr, S("\x02\x00\x00")));
    expect_error(hdr, tlv4(hdr, S("\x02\x00\x03" "a b")));
    expect_error(hdr, tlv4(hdr, S("\x02\x00\x03" "a\0b")));
    expect_error(hdr, tlv4(hdr, S("\x02\x00\x01" "a\x02\x00\x01" "b")));
    /* UNIQUE_ID longer than 128 */
    uint8_t big[3 + 129];
    big[0] = 0x05;
    big[1] = 0;
    big[2] = 129;
    memset(big + 3, 'u', 129);
    expect_error(hdr, tlv4(hdr, big, sizeof(big)));
    /* SSL: too short, sub-TLV overrunning, a cipher name with a space */
    expect_error(hdr, tlv4(hdr, S("\x20\x00\x04\x01\x00\x00\x00")));
    expect_error(hdr, tlv4(hdr, S("\x20\x00\x08\x01\x00\x00\x00\x00\x21\x00\x09")));
    expect_error(hdr, tlv4(hdr, S("\x20\x00\x0a\x01\x00\x00\x00\x00\x23\x00\x02" "a ")));
    /* address block too short; unknown version, command, family */
    size_t n = v2_fixed(hdr, 0x21, 0x11, 11);
    memset(hdr + n, 0, 11);
    expect_error(hdr, n + 11);
    n = v2_fixed(hdr, 0x11, 0x11, 0);
    expect_error(hdr, n);
    n = v2_fixed(hdr, 0x22, 0x11, 0);
    expect_error(hdr, n);
    n = v2_fixed(hdr, 0x21, 0x31, 216); /* AF_UNIX */
    memset(hdr + n, 0, 216);
    expect_error(hdr, n + 216);
    n = v2_fixed(hdr, 0x21, 0x12, 12); /* UDP */
    memset(hdr + n, 0, 12);
    expect_error(hdr, n + 12);
    /* a broken signature */
    n = v2_fixed(hdr, 0x21, 0x11, 0);
    hdr[7] = 'q';
    expect_error(hdr, n);
}

/* crc32c of data (the spec's example: "123456789" -> 0xE3069283) */
static uint32_t crc32c(const uint8_t *d, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= d[i];
        for (int k = 0; k < 8; k++) {
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        }
    }
    return ~c;
}

Test(proxy_proto, v2_crc32c_checked)
{
    uint8_t hdr[128];
    cr_assert_eq(crc32c((const uint8_t *)"123456789", 9), 0xE3069283u);
    size_t n = tlv4(hdr, S("\x03\x00\x04\x00\x00\x00\x00"));
    uint32_t c = crc32c(hdr, n);
    hdr[n - 4] = (uint8_t)(c >> 24);
    hdr[n - 3] = (uint8_t)(c >> 16);
    hdr[n - 2] = (uint8_t)(c >> 8);
    hdr[n - 1] = (uint8_t)c;
    expect_header(hdr, n, check_tlv4);
    hdr[n - 1] ^= 1;
    expect_error(hdr, n);
}

Test(proxy_proto, v2_largest_header)
{
    size_t len = PROXY_PROTO_V2_MAX_LEN;
    uint8_t *hdr = malloc(len + 3);
    cr_assert_not_null(hdr);
    size_t n = v2_fixed(hdr, 0x21, 0x11, 65535);
    memset(hdr + n, 0, 12);
    /* one NOOP TLV filling the rest */
    size_t t = 65535 - 12 - 3;
    hdr[n + 12] = 0x04;
    hdr[n + 13] = (uint8_t)(t >> 8);
    hdr[n + 14] = (uint8_t)t;
    memset(hdr + n + 15, 'n', t);
    memcpy(hdr + len, "A01", 3);
    struct proxy_proto *p = proxy_proto_new();
    size_t used = 0;
    cr_assert_eq(proxy_proto_feed(p, &used, hdr, len + 3), PROXY_PROTO_DONE, "%s",
                 proxy_proto_error(p));
    cr_assert_eq(used, len);
    proxy_proto_free(p);
    free(hdr);
}

/* --- trusted networks ----------------------------------------------------- */

Test(proxy_proto, trusted_networks)
{
    struct proxy_proto_net nets[3];
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "127.0.0.0/8"), 0);
    cr_assert_eq(proxy_proto_net_parse(&nets[1], "2001:db8:1::/48"), 0);
    cr_assert_eq(proxy_proto_net_parse(&nets[2], "192.0.2.77"), 0);
    cr_assert(proxy_proto_trusted(nets, 3, "127.1.2.3"));
    cr_assert(proxy_proto_trusted(nets, 3, "::ffff:127.0.0.1"));
    cr_assert(proxy_proto_trusted(nets, 3, "2001:db8:1:ffff::1"));
    cr_assert(proxy_proto_trusted(nets, 3, "192.0.2.77"));
    cr_assert_not(proxy_proto_trusted(nets, 3, "192.0.2.78"));
    cr_assert_not(proxy_proto_trusted(nets, 3, "128.0.0.1"));
    cr_assert_not(proxy_proto_trusted(nets, 3, "2001:db8:2::1"));
    cr_assert_not(proxy_proto_trusted(nets, 3, "::1"));
    cr_assert_not(proxy_proto_trusted(nets, 3, "garbage"));
    cr_assert_not(proxy_proto_trusted(nets, 0, "127.0.0.1"));
    /* odd prefix lengths */
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "10.1.128.0/17"), 0);
    cr_assert(proxy_proto_trusted(nets, 1, "10.1.255.1"));
    cr_assert_not(proxy_proto_trusted(nets, 1, "10.1.127.1"));
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "0.0.0.0/0"), 0);
    cr_assert(proxy_proto_trusted(nets, 1, "203.0.113.9"));
    cr_assert_not(proxy_proto_trusted(nets, 1, "::2"));
    /* host bits are cleared, not refused */
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "127.9.9.9/8"), 0);
    cr_assert(proxy_proto_trusted(nets, 1, "127.0.0.1"));
    /* bad ones */
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "127.0.0.0/33"), -1);
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "127.0.0.0/"), -1);
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "127.0.0.0/08"), -1);
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "::/129"), -1);
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "localhost"), -1);
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "/8"), -1);
    cr_assert_eq(proxy_proto_net_parse(&nets[0], "fe80::1%eth0/64"), -1);
}
