#include "common/netaddr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NETADDR_MAX_TEXT_LEN 46 /* INET6_ADDRSTRLEN: the longest text inet_pton reads */

static const uint8_t netaddr_v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int netaddr_parse(struct netaddr *out, const char *text)
{
    char buf[NETADDR_MAX_TEXT_LEN];
    const char *zone;
    size_t len;

    memset(out, 0, sizeof(*out));
    if (text == NULL) {
        return -1;
    }
    zone = strchr(text, '%');
    len = zone != NULL ? (size_t)(zone - text) : strlen(text);
    if (len == 0 || len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (zone == NULL && inet_pton(AF_INET, buf, out->bytes) == 1) {
        out->family = NETADDR_V4;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out->bytes) != 1) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    if (memcmp(out->bytes, netaddr_v4_mapped, sizeof(netaddr_v4_mapped)) == 0) {
        memmove(out->bytes, out->bytes + 12, 4);
        memset(out->bytes + 4, 0, 12);
        out->family = NETADDR_V4;
        return 0;
    }
    out->family = NETADDR_V6;
    return 0;
}

int netaddr_prefix_key(char *out, size_t out_len, const struct netaddr *a, unsigned prefix_len)
{
    uint8_t masked[16];
    char text[NETADDR_MAX_TEXT_LEN];
    unsigned width = a->family == NETADDR_V4 ? 32 : 128;
    int n;

    if (out_len == 0) {
        return -1;
    }
    out[0] = '\0';
    if (prefix_len > width) {
        prefix_len = width;
    }
    memset(masked, 0, sizeof(masked));
    memcpy(masked, a->bytes, prefix_len / 8);
    if (prefix_len % 8 != 0) {
        masked[prefix_len / 8] = (uint8_t)(a->bytes[prefix_len / 8] & (0xff << (8 - prefix_len % 8)));
    }
    if (inet_ntop(a->family == NETADDR_V4 ? AF_INET : AF_INET6, masked, text, sizeof(text)) ==
        NULL) {
        return -1;
    }
    if (prefix_len == width) {
        n = snprintf(out, out_len, "%s", text);
    } else {
        n = snprintf(out, out_len, "%s/%u", text, prefix_len);
    }
    if (n < 0 || (size_t)n >= out_len) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

int netaddr_key(char *out, size_t out_len, const char *text, unsigned v4_prefix_len,
                unsigned v6_prefix_len)
{
    struct netaddr a;
    if (netaddr_parse(&a, text) != 0) {
        if (out_len < sizeof(NETADDR_UNPARSED_KEY)) {
            if (out_len > 0) {
                out[0] = '\0';
            }
            return -1;
        }
        memcpy(out, NETADDR_UNPARSED_KEY, sizeof(NETADDR_UNPARSED_KEY));
        return 1;
    }
    return netaddr_prefix_key(out, out_len, &a,
                              a.family == NETADDR_V4 ? v4_prefix_len : v6_prefix_len);
}

int netaddr_cidr_parse(struct netaddr *out, unsigned *out_len, const char *text)
{
    char buf[NETADDR_MAX_TEXT_LEN];
    const char *slash;
    size_t len;
    unsigned long bits;
    int mapped;

    memset(out, 0, sizeof(*out));
    *out_len = 0;
    if (text == NULL) {
        return -1;
    }
    slash = strchr(text, '/');
    len = slash != NULL ? (size_t)(slash - text) : strlen(text);
    if (len == 0 || len >= sizeof(buf) || memchr(text, '%', len) != NULL) {
        return -1;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    mapped = strchr(buf, ':') != NULL;
    if (netaddr_parse(out, buf) != 0) {
        return -1;
    }
    mapped = mapped && out->family == NETADDR_V4;
    unsigned width = mapped ? 128 : out->family == NETADDR_V4 ? 32 : 128;
    bits = width;
    if (slash != NULL) {
        char *end;
        if (slash[1] < '0' || slash[1] > '9' || strlen(slash + 1) > 3) {
            memset(out, 0, sizeof(*out));
            return -1;
        }
        bits = strtoul(slash + 1, &end, 10);
        if (*end != '\0' || bits > width || (mapped && bits < 96)) {
            memset(out, 0, sizeof(*out));
            return -1;
        }
    }
    *out_len = (unsigned)(mapped ? bits - 96 : bits);
    return 0;
}

int netaddr_in_prefix(const struct netaddr *a, const struct netaddr *net, unsigned len)
{
    unsigned width = net->family == NETADDR_V4 ? 32 : 128;
    if (a->family != net->family) {
        return 0;
    }
    if (len > width) {
        len = width;
    }
    if (memcmp(a->bytes, net->bytes, len / 8) != 0) {
        return 0;
    }
    if (len % 8 != 0) {
        uint8_t mask = (uint8_t)(0xff << (8 - len % 8));
        if ((a->bytes[len / 8] & mask) != (net->bytes[len / 8] & mask)) {
            return 0;
        }
    }
    return 1;
}
