/* proxy_proto: the PROXY protocol (versions 1 and 2, as HAProxy's
 * proxy-protocol.txt specifies them) that a load balancer puts in front of a
 * connection to say who the client is.
 *
 * In: an incremental parser fed the first bytes of an accepted connection.
 * It takes exactly the header's bytes and no more (what follows belongs to
 * the client: its first TLS or IMAP bytes), keeps its own copy, so that the
 * header may come one byte at a time, and is bounded: PROXY_PROTO_V1_MAX_LEN
 * bytes for a version 1 line, PROXY_PROTO_V2_MAX_LEN for a version 2 block.
 * Anything that is not a well-formed header is an error, never a guess.
 *
 * Out: a version 2 header built for a backend connection.
 *
 * Trust: a list of networks (CIDR) the header is accepted from.
 *
 * Pure code: no sockets, no libuv. */
#ifndef IMAPMUX_COMMON_PROXY_PROTO_H
#define IMAPMUX_COMMON_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/netaddr.h"

#define PROXY_PROTO_V1_MAX_LEN 107          /* bytes of a v1 line with its CRLF (the spec's bound) */
#define PROXY_PROTO_V2_FIXED_LEN 16         /* signature, version/command, family, length */
#define PROXY_PROTO_V2_MAX_LEN (16 + 65535) /* the fixed part and the largest length field */
#define PROXY_PROTO_MAX_IP_LEN 64           /* buffer for an address as text, with its NUL */
#define PROXY_PROTO_MAX_AUTHORITY_LEN 255   /* bytes of a host name (AUTHORITY TLV) */
#define PROXY_PROTO_MAX_TLS_NAME_LEN 63     /* bytes of the SSL TLV's version or cipher name */
#define PROXY_PROTO_MAX_UNIQUE_ID_LEN 128   /* bytes of a UNIQUE_ID TLV (the spec's bound) */

/* Version 2 TLV types and the SSL TLV's client bits (the spec's numbers). */
#define PROXY_PROTO_TLV_ALPN 0x01
#define PROXY_PROTO_TLV_AUTHORITY 0x02
#define PROXY_PROTO_TLV_CRC32C 0x03
#define PROXY_PROTO_TLV_NOOP 0x04
#define PROXY_PROTO_TLV_UNIQUE_ID 0x05
#define PROXY_PROTO_TLV_SSL 0x20
#define PROXY_PROTO_TLV_SSL_VERSION 0x21
#define PROXY_PROTO_TLV_SSL_CN 0x22
#define PROXY_PROTO_TLV_SSL_CIPHER 0x23
#define PROXY_PROTO_TLV_SSL_SIG_ALG 0x24
#define PROXY_PROTO_TLV_SSL_KEY_ALG 0x25
#define PROXY_PROTO_TLV_NETNS 0x30
#define PROXY_PROTO_CLIENT_SSL 0x01       /* the client connected over TLS */
#define PROXY_PROTO_CLIENT_CERT_CONN 0x02 /* ... and sent a certificate on this connection */
#define PROXY_PROTO_CLIENT_CERT_SESS 0x04 /* ... or on the TLS session it resumed */

/* What a header says.  Strings are NUL-terminated; "" when absent. */
struct proxy_proto_info {
    int version;                            /* 1 or 2 */
    int local;                              /* 1: no addresses (v2 LOCAL, UNSPEC, or v1
                                               UNKNOWN): the connection's own hold */
    int ipv6;                               /* with addresses: 1 for TCP over IPv6 */
    char src_ip[PROXY_PROTO_MAX_IP_LEN];    /* the client */
    uint16_t src_port;
    char dst_ip[PROXY_PROTO_MAX_IP_LEN];    /* the address the client connected to */
    uint16_t dst_port;
    char authority[PROXY_PROTO_MAX_AUTHORITY_LEN + 1]; /* the host name the client asked for */
    int has_ssl;                            /* an SSL TLV came */
    uint8_t ssl_client;                     /* its PROXY_PROTO_CLIENT_* bits */
    uint32_t ssl_verify;                    /* 0: the client's certificate verified */
    char ssl_version[PROXY_PROTO_MAX_TLS_NAME_LEN + 1]; /* "TLSv1.3" */
    char ssl_cipher[PROXY_PROTO_MAX_TLS_NAME_LEN + 1];  /* "TLS_AES_256_GCM_SHA384" */
    uint8_t unique_id[PROXY_PROTO_MAX_UNIQUE_ID_LEN];
    size_t unique_id_len;                   /* 0: none */
};

enum proxy_proto_result {
    PROXY_PROTO_MORE,  /* every byte given was taken; the header is not complete yet */
    PROXY_PROTO_DONE,  /* the header is complete; *out_used says where it ended */
    PROXY_PROTO_ERROR, /* not a well-formed header: close the connection */
};

struct proxy_proto;

/* proxy_proto_new returns a parser, or NULL when out of memory.  Free it
 * with proxy_proto_free (NULL accepted). */
struct proxy_proto *proxy_proto_new(void);
void proxy_proto_free(struct proxy_proto *p);

/* proxy_proto_feed gives the parser the next len bytes of the connection.
 * *out_used is set to the bytes it took: all of them with PROXY_PROTO_MORE,
 * the header's last ones with PROXY_PROTO_DONE (the caller keeps the rest:
 * the client's).  After DONE, proxy_proto_info holds the header; after
 * ERROR, proxy_proto_error says why (static text).  Feeding after DONE or
 * ERROR returns the same result and takes nothing. */
enum proxy_proto_result proxy_proto_feed(struct proxy_proto *p, size_t *out_used,
                                         const uint8_t *data, size_t len);

/* proxy_proto_info: the header once DONE (borrowed from p). */
const struct proxy_proto_info *proxy_proto_info(const struct proxy_proto *p);

/* proxy_proto_error: why the header was refused (static), "" before. */
const char *proxy_proto_error(const struct proxy_proto *p);

/* proxy_proto_v2_build writes a version 2 PROXY header for info into out
 * (cap bytes): addresses from src_ip/dst_ip and their ports (both of one
 * family; info->local or unparsable addresses give a LOCAL header), then
 * the TLVs AUTHORITY (when not ""), UNIQUE_ID (when unique_id_len > 0), and
 * SSL with version and cipher (when has_ssl).  Returns the header's length,
 * or -1 when a field is out of bounds or cap is too small. */
int proxy_proto_v2_build(uint8_t *out, size_t cap, const struct proxy_proto_info *info);

/* One trusted network. */
struct proxy_proto_net {
    struct netaddr addr;  /* host bits cleared */
    unsigned prefix_len;  /* 0-32 for IPv4, 0-128 for IPv6 */
};

/* proxy_proto_net_parse reads "192.0.2.0/24", "2001:db8::/32" or a bare
 * address (a host).  Returns 0, or -1 when text is not such a network. */
int proxy_proto_net_parse(struct proxy_proto_net *out, const char *text);

/* proxy_proto_trusted returns 1 when ip (numeric text; IPv4-mapped IPv6 is
 * IPv4) is in one of the num networks, else 0. */
int proxy_proto_trusted(const struct proxy_proto_net *nets, size_t num, const char *ip);

#endif
