#include "common/proxy_proto.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define PROXY_PROTO_V1_PREFIX "PROXY "
#define PROXY_PROTO_V1_PREFIX_LEN 6
#define PROXY_PROTO_V1_MAX_TOKENS 6  /* PROXY TCP4 src dst sport dport */
#define PROXY_PROTO_V2_VERSION 0x2   /* high nibble of the 13th byte */
#define PROXY_PROTO_V2_LOCAL 0x0     /* command: the balancer's own connection */
#define PROXY_PROTO_V2_PROXY 0x1     /* command: relayed for a client */
#define PROXY_PROTO_V2_UNSPEC 0x00   /* family and transport: unknown */
#define PROXY_PROTO_V2_TCP4 0x11
#define PROXY_PROTO_V2_TCP6 0x21
#define PROXY_PROTO_V2_ADDR4_LEN 12  /* two IPv4 addresses, two ports */
#define PROXY_PROTO_V2_ADDR6_LEN 36  /* two IPv6 addresses, two ports */
#define PROXY_PROTO_TLV_HEAD_LEN 3   /* type, 16-bit length */
#define PROXY_PROTO_SSL_HEAD_LEN 5   /* client bits, 32-bit verify */

static const uint8_t proxy_proto_v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                               0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

enum proxy_proto_state {
    PP_START,    /* nothing yet */
    PP_V1,       /* "PROXY ..." until LF */
    PP_V2_FIXED, /* the 16 fixed bytes */
    PP_V2_BODY,  /* the length field's bytes */
    PP_DONE,
    PP_ERROR,
};

struct proxy_proto {
    enum proxy_proto_state state;
    uint8_t head[PROXY_PROTO_V1_MAX_LEN]; /* the v1 line, or the v2 fixed part */
    size_t head_len;
    uint8_t *body;                        /* v2: the rest of the header (malloc'd) */
    size_t body_len, body_need;           /* bytes in body, bytes it will hold */
    const char *error;                    /* static; "" until PP_ERROR */
    struct proxy_proto_info info;
};

struct proxy_proto *proxy_proto_new(void)
{
    struct proxy_proto *p = calloc(1, sizeof(*p));
    if (p != NULL) {
        p->error = "";
    }
    return p;
}

void proxy_proto_free(struct proxy_proto *p)
{
    if (p != NULL) {
        free(p->body);
        free(p);
    }
}

const struct proxy_proto_info *proxy_proto_info(const struct proxy_proto *p)
{
    return &p->info;
}

const char *proxy_proto_error(const struct proxy_proto *p)
{
    return p->error;
}

static enum proxy_proto_result proxy_proto_fail(struct proxy_proto *p, const char *why)
{
    p->state = PP_ERROR;
    p->error = why;
    free(p->body);
    p->body = NULL;
    memset(&p->info, 0, sizeof(p->info));
    return PROXY_PROTO_ERROR;
}

/* --- version 1 ------------------------------------------------------------ */

/* proxy_proto_port reads a decimal port: 1-5 digits, no leading zero but
 * for "0", at most 65535.  Returns 0 or -1. */
static int proxy_proto_port(uint16_t *out, const char *s, size_t len)
{
    unsigned long v = 0;
    if (len == 0 || len > 5 || (len > 1 && s[0] == '0')) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535) {
        return -1;
    }
    *out = (uint16_t)v;
    return 0;
}

/* proxy_proto_v1_addr checks a textual address of family af and copies its
 * canonical text.  Returns 0 or -1. */
static int proxy_proto_v1_addr(char *out, const char *s, size_t len, int af)
{
    char text[PROXY_PROTO_MAX_IP_LEN];
    uint8_t bin[16];
    if (len == 0 || len >= sizeof(text)) {
        return -1;
    }
    memcpy(text, s, len);
    text[len] = '\0';
    if (inet_pton(af, text, bin) != 1 || inet_ntop(af, bin, out, PROXY_PROTO_MAX_IP_LEN) == NULL) {
        return -1;
    }
    return 0;
}

/* proxy_proto_v1_parse reads the line in head (without its CRLF). */
static enum proxy_proto_result proxy_proto_v1_parse(struct proxy_proto *p, size_t len)
{
    const char *line = (const char *)p->head;
    const char *tok[PROXY_PROTO_V1_MAX_TOKENS];
    size_t tok_len[PROXY_PROTO_V1_MAX_TOKENS];
    size_t num = 0, i = 0;
    int af;

    for (size_t k = 0; k < len; k++) {
        if ((unsigned char)line[k] < 0x20 || (unsigned char)line[k] > 0x7e) {
            return proxy_proto_fail(p, "PROXY v1: a control or non-ASCII byte in the line");
        }
    }
    /* tokens separated by exactly one space; UNKNOWN takes the rest as is */
    while (i <= len && num < PROXY_PROTO_V1_MAX_TOKENS) {
        size_t start = i;
        while (i < len && line[i] != ' ') {
            i++;
        }
        tok[num] = line + start;
        tok_len[num] = i - start;
        if (tok_len[num] == 0) {
            return proxy_proto_fail(p, "PROXY v1: empty field");
        }
        num++;
        if (num == 2 && tok_len[1] == 7 && memcmp(tok[1], "UNKNOWN", 7) == 0) {
            p->info.version = 1;
            p->info.local = 1;
            return PROXY_PROTO_DONE;
        }
        i++; /* the space, or one past the end */
    }
    if (i <= len) {
        return proxy_proto_fail(p, "PROXY v1: too many fields");
    }
    if (num < 2) {
        return proxy_proto_fail(p, "PROXY v1: no protocol");
    }
    if (tok_len[1] == 4 && memcmp(tok[1], "TCP4", 4) == 0) {
        af = AF_INET;
    } else if (tok_len[1] == 4 && memcmp(tok[1], "TCP6", 4) == 0) {
        af = AF_INET6;
    } else {
        return proxy_proto_fail(p, "PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN");
    }
    if (num != PROXY_PROTO_V1_MAX_TOKENS) {
        return proxy_proto_fail(p, "PROXY v1: expected two addresses and two ports");
    }
    if (proxy_proto_v1_addr(p->info.src_ip, tok[2], tok_len[2], af) != 0 ||
        proxy_proto_v1_addr(p->info.dst_ip, tok[3], tok_len[3], af) != 0) {
        return proxy_proto_fail(p, "PROXY v1: an address is not of the protocol's family");
    }
    if (proxy_proto_port(&p->info.src_port, tok[4], tok_len[4]) != 0 ||
        proxy_proto_port(&p->info.dst_port, tok[5], tok_len[5]) != 0) {
        return proxy_proto_fail(p, "PROXY v1: a port is not a number 0-65535");
    }
    p->info.version = 1;
    p->info.ipv6 = af == AF_INET6;
    return PROXY_PROTO_DONE;
}

/* --- version 2 ------------------------------------------------------------ */

/* proxy_proto_crc32c: CRC-32C (Castagnoli), bitwise; headers are short. */
static uint32_t proxy_proto_crc32c(uint32_t crc, const uint8_t *data, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static uint16_t proxy_proto_be16(const uint8_t *b)
{
    return (uint16_t)((b[0] << 8) | b[1]);
}

/* proxy_proto_hostname: 1 when v (len bytes) is a host name as SNI carries
 * it (letters, digits, '-', '.', '_'; A-labels for international names). */
static int proxy_proto_hostname(const uint8_t *v, size_t len)
{
    if (len == 0 || len > PROXY_PROTO_MAX_AUTHORITY_LEN) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_')) {
            return 0;
        }
    }
    return 1;
}

/* proxy_proto_tls_name copies a TLS version or cipher name: printable
 * ASCII without spaces, 1 to PROXY_PROTO_MAX_TLS_NAME_LEN bytes.  0 or -1. */
static int proxy_proto_tls_name(char *out, const uint8_t *v, size_t len)
{
    if (len == 0 || len > PROXY_PROTO_MAX_TLS_NAME_LEN || out[0] != '\0') {
        return -1; /* empty, too long, or given twice */
    }
    for (size_t i = 0; i < len; i++) {
        if (v[i] < 0x21 || v[i] > 0x7e) {
            return -1;
        }
    }
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

/* proxy_proto_ssl reads the SSL TLV's value. */
static enum proxy_proto_result proxy_proto_ssl(struct proxy_proto *p, const uint8_t *v, size_t len)
{
    if (p->info.has_ssl) {
        return proxy_proto_fail(p, "PROXY v2: SSL TLV given twice");
    }
    if (len < PROXY_PROTO_SSL_HEAD_LEN) {
        return proxy_proto_fail(p, "PROXY v2: SSL TLV too short");
    }
    p->info.has_ssl = 1;
    p->info.ssl_client = v[0];
    p->info.ssl_verify = ((uint32_t)v[1] << 24) | ((uint32_t)v[2] << 16) | ((uint32_t)v[3] << 8) | v[4];
    size_t pos = PROXY_PROTO_SSL_HEAD_LEN;
    while (pos < len) {
        if (len - pos < PROXY_PROTO_TLV_HEAD_LEN) {
            return proxy_proto_fail(p, "PROXY v2: SSL sub-TLV cut short");
        }
        uint8_t type = v[pos];
        size_t tlen = proxy_proto_be16(v + pos + 1);
        pos += PROXY_PROTO_TLV_HEAD_LEN;
        if (tlen > len - pos) {
            return proxy_proto_fail(p, "PROXY v2: SSL sub-TLV longer than the SSL TLV");
        }
        if (type == PROXY_PROTO_TLV_SSL_VERSION &&
            proxy_proto_tls_name(p->info.ssl_version, v + pos, tlen) != 0) {
            return proxy_proto_fail(p, "PROXY v2: bad SSL version sub-TLV");
        }
        if (type == PROXY_PROTO_TLV_SSL_CIPHER &&
            proxy_proto_tls_name(p->info.ssl_cipher, v + pos, tlen) != 0) {
            return proxy_proto_fail(p, "PROXY v2: bad SSL cipher sub-TLV");
        }
        pos += tlen;
    }
    return PROXY_PROTO_DONE;
}

/* proxy_proto_tlvs reads the TLVs in body[from..body_len). */
static enum proxy_proto_result proxy_proto_tlvs(struct proxy_proto *p, size_t from)
{
    const uint8_t *b = p->body;
    size_t len = p->body_len;
    size_t pos = from;
    int seen_authority = 0, seen_unique = 0, seen_crc = 0;

    while (pos < len) {
        if (len - pos < PROXY_PROTO_TLV_HEAD_LEN) {
            return proxy_proto_fail(p, "PROXY v2: TLV cut short");
        }
        uint8_t type = b[pos];
        size_t tlen = proxy_proto_be16(b + pos + 1);
        size_t vpos = pos + PROXY_PROTO_TLV_HEAD_LEN;
        if (tlen > len - vpos) {
            return proxy_proto_fail(p, "PROXY v2: TLV longer than the header");
        }
        const uint8_t *v = b + vpos;
        switch (type) {
        case PROXY_PROTO_TLV_AUTHORITY:
            if (seen_authority++ || !proxy_proto_hostname(v, tlen)) {
                return proxy_proto_fail(p, "PROXY v2: bad AUTHORITY TLV");
            }
            memcpy(p->info.authority, v, tlen);
            p->info.authority[tlen] = '\0';
            break;
        case PROXY_PROTO_TLV_UNIQUE_ID:
            if (seen_unique++ || tlen > PROXY_PROTO_MAX_UNIQUE_ID_LEN) {
                return proxy_proto_fail(p, "PROXY v2: bad UNIQUE_ID TLV");
            }
            memcpy(p->info.unique_id, v, tlen);
            p->info.unique_id_len = tlen;
            break;
        case PROXY_PROTO_TLV_CRC32C: {
            uint8_t zero[4] = {0, 0, 0, 0};
            if (seen_crc++ || tlen != 4) {
                return proxy_proto_fail(p, "PROXY v2: bad CRC32C TLV");
            }
            /* over the whole header with the checksum's own bytes as zeros */
            uint32_t crc = proxy_proto_crc32c(0, p->head, PROXY_PROTO_V2_FIXED_LEN);
            crc = proxy_proto_crc32c(crc, b, vpos);
            crc = proxy_proto_crc32c(crc, zero, 4);
            crc = proxy_proto_crc32c(crc, v + 4, len - vpos - 4);
            uint32_t want = ((uint32_t)v[0] << 24) | ((uint32_t)v[1] << 16) |
                            ((uint32_t)v[2] << 8) | v[3];
            if (crc != want) {
                return proxy_proto_fail(p, "PROXY v2: CRC32C mismatch");
            }
            break;
        }
        case PROXY_PROTO_TLV_SSL:
            if (proxy_proto_ssl(p, v, tlen) != PROXY_PROTO_DONE) {
                return PROXY_PROTO_ERROR;
            }
            break;
        default:
            break; /* ALPN, NOOP, NETNS, a balancer's own: not ours */
        }
        pos = vpos + tlen;
    }
    return PROXY_PROTO_DONE;
}

/* proxy_proto_v2_parse reads the fixed part in head and the body. */
static enum proxy_proto_result proxy_proto_v2_parse(struct proxy_proto *p)
{
    uint8_t cmd = p->head[12] & 0x0f;
    uint8_t fam = p->head[13];
    const uint8_t *b = p->body;
    size_t addr_len;

    p->info.version = 2;
    if (cmd == PROXY_PROTO_V2_LOCAL) {
        /* the balancer's own check: the connection's endpoints hold, and the
           rest of the block is to be ignored (the spec) */
        p->info.local = 1;
        return PROXY_PROTO_DONE;
    }
    if (fam == PROXY_PROTO_V2_UNSPEC) {
        p->info.local = 1;
        return PROXY_PROTO_DONE;
    }
    if (fam == PROXY_PROTO_V2_TCP4) {
        addr_len = PROXY_PROTO_V2_ADDR4_LEN;
    } else if (fam == PROXY_PROTO_V2_TCP6) {
        addr_len = PROXY_PROTO_V2_ADDR6_LEN;
    } else {
        return proxy_proto_fail(p, "PROXY v2: not TCP over IPv4 or IPv6");
    }
    if (p->body_len < addr_len) {
        return proxy_proto_fail(p, "PROXY v2: address block too short");
    }
    int af = fam == PROXY_PROTO_V2_TCP4 ? AF_INET : AF_INET6;
    size_t alen = fam == PROXY_PROTO_V2_TCP4 ? 4 : 16;
    if (inet_ntop(af, b, p->info.src_ip, sizeof(p->info.src_ip)) == NULL ||
        inet_ntop(af, b + alen, p->info.dst_ip, sizeof(p->info.dst_ip)) == NULL) {
        return proxy_proto_fail(p, "PROXY v2: address not printable");
    }
    p->info.src_port = proxy_proto_be16(b + 2 * alen);
    p->info.dst_port = proxy_proto_be16(b + 2 * alen + 2);
    p->info.ipv6 = af == AF_INET6;
    return proxy_proto_tlvs(p, addr_len);
}

/* proxy_proto_v2_fixed checks the fixed part once complete and sizes the body. */
static enum proxy_proto_result proxy_proto_v2_fixed(struct proxy_proto *p)
{
    uint8_t ver = p->head[12] >> 4;
    uint8_t cmd = p->head[12] & 0x0f;
    if (ver != PROXY_PROTO_V2_VERSION) {
        return proxy_proto_fail(p, "PROXY v2: unknown version");
    }
    if (cmd != PROXY_PROTO_V2_LOCAL && cmd != PROXY_PROTO_V2_PROXY) {
        return proxy_proto_fail(p, "PROXY v2: unknown command");
    }
    p->body_need = proxy_proto_be16(p->head + 14);
    p->body_len = 0;
    if (p->body_need == 0) {
        return PROXY_PROTO_DONE;
    }
    p->body = malloc(p->body_need);
    if (p->body == NULL) {
        return proxy_proto_fail(p, "out of memory");
    }
    return PROXY_PROTO_MORE;
}

/* --- the feed ------------------------------------------------------------- */

/* proxy_proto_finish parses a complete header and frees the body. */
static enum proxy_proto_result proxy_proto_finish(struct proxy_proto *p, int v1)
{
    enum proxy_proto_result r = v1 ? proxy_proto_v1_parse(p, p->head_len - 2) : proxy_proto_v2_parse(p);
    if (r == PROXY_PROTO_DONE) {
        p->state = PP_DONE;
        free(p->body);
        p->body = NULL;
    }
    return r;
}

enum proxy_proto_result proxy_proto_feed(struct proxy_proto *p, size_t *out_used,
                                         const uint8_t *data, size_t len)
{
    size_t i = 0;
    *out_used = 0;
    while (i < len) {
        switch (p->state) {
        case PP_START:
            if (data[i] == 'P') {
                p->state = PP_V1;
            } else if (data[i] == proxy_proto_v2_sig[0]) {
                p->state = PP_V2_FIXED;
            } else {
                *out_used = i;
                return proxy_proto_fail(p, "not a PROXY protocol header");
            }
            break;
        case PP_V1: {
            uint8_t c = data[i++];
            p->head[p->head_len++] = c;
            if (p->head_len <= PROXY_PROTO_V1_PREFIX_LEN &&
                c != (uint8_t)PROXY_PROTO_V1_PREFIX[p->head_len - 1]) {
                *out_used = i;
                return proxy_proto_fail(p, "not a PROXY protocol header");
            }
            if (c == '\n') {
                *out_used = i;
                if (p->head_len < 2 || p->head[p->head_len - 2] != '\r') {
                    return proxy_proto_fail(p, "PROXY v1: line not ended by CRLF");
                }
                return proxy_proto_finish(p, 1);
            }
            if (p->head_len > 1 && p->head[p->head_len - 2] == '\r') {
                *out_used = i;
                return proxy_proto_fail(p, "PROXY v1: CR inside the line");
            }
            if (p->head_len == PROXY_PROTO_V1_MAX_LEN) {
                *out_used = i;
                return proxy_proto_fail(p, "PROXY v1: line longer than 107 bytes");
            }
            break;
        }
        case PP_V2_FIXED: {
            uint8_t c = data[i++];
            p->head[p->head_len++] = c;
            if (p->head_len <= sizeof(proxy_proto_v2_sig) &&
                c != proxy_proto_v2_sig[p->head_len - 1]) {
                *out_used = i;
                return proxy_proto_fail(p, "not a PROXY protocol header");
            }
            if (p->head_len == PROXY_PROTO_V2_FIXED_LEN) {
                enum proxy_proto_result r = proxy_proto_v2_fixed(p);
                if (r == PROXY_PROTO_ERROR) {
                    *out_used = i;
                    return r;
                }
                if (r == PROXY_PROTO_DONE) {
                    *out_used = i;
                    return proxy_proto_finish(p, 0);
                }
                p->state = PP_V2_BODY;
            }
            break;
        }
        case PP_V2_BODY: {
            size_t n = p->body_need - p->body_len;
            if (n > len - i) {
                n = len - i;
            }
            memcpy(p->body + p->body_len, data + i, n);
            p->body_len += n;
            i += n;
            if (p->body_len == p->body_need) {
                *out_used = i;
                return proxy_proto_finish(p, 0);
            }
            break;
        }
        case PP_DONE:
            return PROXY_PROTO_DONE;
        case PP_ERROR:
            return PROXY_PROTO_ERROR;
        }
    }
    *out_used = i;
    if (p->state == PP_DONE) {
        return PROXY_PROTO_DONE;
    }
    return p->state == PP_ERROR ? PROXY_PROTO_ERROR : PROXY_PROTO_MORE;
}

/* --- version 2 out -------------------------------------------------------- */

static int proxy_proto_put_tlv(uint8_t *out, size_t cap, size_t *pos, uint8_t type,
                               const void *v, size_t len)
{
    if (len > 0xffff || cap - *pos < PROXY_PROTO_TLV_HEAD_LEN + len) {
        return -1;
    }
    out[*pos] = type;
    out[*pos + 1] = (uint8_t)(len >> 8);
    out[*pos + 2] = (uint8_t)len;
    if (len > 0) {
        memcpy(out + *pos + PROXY_PROTO_TLV_HEAD_LEN, v, len);
    }
    *pos += PROXY_PROTO_TLV_HEAD_LEN + len;
    return 0;
}

int proxy_proto_v2_build(uint8_t *out, size_t cap, const struct proxy_proto_info *info)
{
    uint8_t src[16], dst[16];
    size_t pos = PROXY_PROTO_V2_FIXED_LEN;
    size_t alen = 0;
    int af = 0;

    if (cap < PROXY_PROTO_V2_FIXED_LEN) {
        return -1;
    }
    if (!info->local) {
        if (inet_pton(AF_INET, info->src_ip, src) == 1 && inet_pton(AF_INET, info->dst_ip, dst) == 1) {
            af = AF_INET;
            alen = 4;
        } else if (inet_pton(AF_INET6, info->src_ip, src) == 1 &&
                   inet_pton(AF_INET6, info->dst_ip, dst) == 1) {
            af = AF_INET6;
            alen = 16;
        }
    }
    memcpy(out, proxy_proto_v2_sig, sizeof(proxy_proto_v2_sig));
    if (af == 0) {
        out[12] = (PROXY_PROTO_V2_VERSION << 4) | PROXY_PROTO_V2_LOCAL;
        out[13] = PROXY_PROTO_V2_UNSPEC;
    } else {
        out[12] = (PROXY_PROTO_V2_VERSION << 4) | PROXY_PROTO_V2_PROXY;
        out[13] = af == AF_INET ? PROXY_PROTO_V2_TCP4 : PROXY_PROTO_V2_TCP6;
        if (cap - pos < 2 * alen + 4) {
            return -1;
        }
        memcpy(out + pos, src, alen);
        memcpy(out + pos + alen, dst, alen);
        pos += 2 * alen;
        out[pos++] = (uint8_t)(info->src_port >> 8);
        out[pos++] = (uint8_t)info->src_port;
        out[pos++] = (uint8_t)(info->dst_port >> 8);
        out[pos++] = (uint8_t)info->dst_port;
    }
    size_t auth_len = strlen(info->authority);
    if (auth_len > 0) {
        if (!proxy_proto_hostname((const uint8_t *)info->authority, auth_len) ||
            proxy_proto_put_tlv(out, cap, &pos, PROXY_PROTO_TLV_AUTHORITY, info->authority,
                                auth_len) != 0) {
            return -1;
        }
    }
    if (info->unique_id_len > 0) {
        if (info->unique_id_len > PROXY_PROTO_MAX_UNIQUE_ID_LEN ||
            proxy_proto_put_tlv(out, cap, &pos, PROXY_PROTO_TLV_UNIQUE_ID, info->unique_id,
                                info->unique_id_len) != 0) {
            return -1;
        }
    }
    if (info->has_ssl) {
        size_t vlen = strlen(info->ssl_version), clen = strlen(info->ssl_cipher);
        if (vlen > PROXY_PROTO_MAX_TLS_NAME_LEN || clen > PROXY_PROTO_MAX_TLS_NAME_LEN) {
            return -1;
        }
        size_t ssl_len = PROXY_PROTO_SSL_HEAD_LEN + (vlen > 0 ? PROXY_PROTO_TLV_HEAD_LEN + vlen : 0) +
                         (clen > 0 ? PROXY_PROTO_TLV_HEAD_LEN + clen : 0);
        size_t start = pos;
        if (proxy_proto_put_tlv(out, cap, &pos, PROXY_PROTO_TLV_SSL, NULL, 0) != 0 ||
            cap - pos < ssl_len) {
            return -1;
        }
        out[start + 1] = (uint8_t)(ssl_len >> 8);
        out[start + 2] = (uint8_t)ssl_len;
        out[pos++] = info->ssl_client;
        out[pos++] = (uint8_t)(info->ssl_verify >> 24);
        out[pos++] = (uint8_t)(info->ssl_verify >> 16);
        out[pos++] = (uint8_t)(info->ssl_verify >> 8);
        out[pos++] = (uint8_t)info->ssl_verify;
        if ((vlen > 0 && proxy_proto_put_tlv(out, cap, &pos, PROXY_PROTO_TLV_SSL_VERSION,
                                             info->ssl_version, vlen) != 0) ||
            (clen > 0 && proxy_proto_put_tlv(out, cap, &pos, PROXY_PROTO_TLV_SSL_CIPHER,
                                             info->ssl_cipher, clen) != 0)) {
            return -1;
        }
    }
    size_t body = pos - PROXY_PROTO_V2_FIXED_LEN;
    if (body > 0xffff) {
        return -1;
    }
    out[14] = (uint8_t)(body >> 8);
    out[15] = (uint8_t)body;
    return (int)pos;
}

/* --- trusted networks ----------------------------------------------------- */

int proxy_proto_net_parse(struct proxy_proto_net *out, const char *text)
{
    char buf[PROXY_PROTO_MAX_IP_LEN];
    const char *slash = strchr(text, '/');
    size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);
    unsigned width, prefix;

    memset(out, 0, sizeof(*out));
    if (len == 0 || len >= sizeof(buf) || memchr(text, '%', len) != NULL) {
        return -1;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (netaddr_parse(&out->addr, buf) != 0) {
        return -1;
    }
    width = out->addr.family == NETADDR_V4 ? 32 : 128;
    if (strchr(buf, ':') != NULL && out->addr.family == NETADDR_V4) {
        width = 128; /* ::ffff:a.b.c.d/len counts the mapped prefix's bits */
    }
    prefix = width;
    if (slash != NULL) {
        const char *d = slash + 1;
        unsigned long v = 0;
        size_t n = strlen(d);
        if (n == 0 || n > 3 || (n > 1 && d[0] == '0')) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (d[i] < '0' || d[i] > '9') {
                return -1;
            }
            v = v * 10 + (unsigned long)(d[i] - '0');
        }
        if (v > width) {
            return -1;
        }
        prefix = (unsigned)v;
    }
    if (width == 128 && out->addr.family == NETADDR_V4) {
        if (prefix < 96) {
            return -1; /* wider than the mapped range: not one family */
        }
        prefix -= 96;
    }
    out->prefix_len = prefix;
    /* clear the host bits so that matching compares prefixes only */
    for (unsigned bit = prefix; bit < 128; bit++) {
        out->addr.bytes[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    }
    return 0;
}

int proxy_proto_trusted(const struct proxy_proto_net *nets, size_t num, const char *ip)
{
    struct netaddr a;
    if (netaddr_parse(&a, ip) != 0) {
        return 0;
    }
    for (size_t i = 0; i < num; i++) {
        const struct proxy_proto_net *n = &nets[i];
        unsigned full = n->prefix_len / 8, rest = n->prefix_len % 8;
        if (n->addr.family != a.family) {
            continue;
        }
        if (memcmp(a.bytes, n->addr.bytes, full) != 0) {
            continue;
        }
        if (rest != 0 && (a.bytes[full] & (uint8_t)(0xff << (8 - rest))) != n->addr.bytes[full]) {
            continue;
        }
        return 1;
    }
    return 0;
}
