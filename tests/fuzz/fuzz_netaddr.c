/* Fuzz target of client address parsing and prefix keys (common/netaddr),
 * which the connection caps, the password check shares and the brute-force
 * counters key on.  Properties: a key fits and is NUL-terminated; an address
 * that parses has a full-length key that parses back to the same address
 * (one spelling per address); every prefix of it keys to a text whose
 * address part parses and whose host bits are zero; text that does not
 * parse gets the one shared key.  A network that netaddr_cidr_parse takes
 * has a length within its family's width and contains its own address. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/netaddr.h"

#define FUZZ_MAX_TEXT 128

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[FUZZ_MAX_TEXT + 1], key[NETADDR_MAX_KEY_LEN], again[NETADDR_MAX_KEY_LEN];
    struct netaddr a, b;
    if (size > FUZZ_MAX_TEXT) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    unsigned net_len;
    if (netaddr_cidr_parse(&a, &net_len, text) == 0) {
        if (net_len > (a.family == NETADDR_V4 ? 32u : 128u) || !netaddr_in_prefix(&a, &a, net_len)) {
            abort();
        }
        if (netaddr_prefix_key(key, sizeof(key), &a, net_len) != 0 ||
            netaddr_parse(&b, strtok(key, "/")) != 0 || !netaddr_in_prefix(&b, &a, net_len)) {
            abort();
        }
    }
    int r = netaddr_key(key, sizeof(key), text, 32, 64);
    if (r < 0 || strlen(key) >= sizeof(key)) {
        abort();
    }
    if (netaddr_parse(&a, text) != 0) {
        if (r != 1 || strcmp(key, NETADDR_UNPARSED_KEY) != 0) {
            abort();
        }
        return 0;
    }
    if (r != 0) {
        abort();
    }
    unsigned width = a.family == NETADDR_V4 ? 32 : 128;
    if (netaddr_prefix_key(key, sizeof(key), &a, width) != 0 || netaddr_parse(&b, key) != 0 ||
        b.family != a.family || memcmp(a.bytes, b.bytes, width / 8) != 0) {
        abort();
    }
    /* the canonical text is a fixed point */
    if (netaddr_prefix_key(again, sizeof(again), &b, width) != 0 || strcmp(key, again) != 0) {
        abort();
    }
    for (unsigned len = 0; len <= width; len++) {
        if (netaddr_prefix_key(key, sizeof(key), &a, len) != 0) {
            abort();
        }
        char *slash = strchr(key, '/');
        if (len < width) {
            if (slash == NULL || (unsigned)atoi(slash + 1) != len) {
                abort();
            }
            *slash = '\0';
        } else if (slash != NULL) {
            abort();
        }
        if (netaddr_parse(&b, key) != 0 || b.family != a.family) {
            abort();
        }
        for (unsigned bit = len; bit < width; bit++) {
            if (b.bytes[bit / 8] & (0x80u >> (bit % 8))) {
                abort(); /* host bits set */
            }
        }
        for (unsigned bit = 0; bit < len; bit++) {
            uint8_t m = (uint8_t)(0x80u >> (bit % 8));
            if ((b.bytes[bit / 8] & m) != (a.bytes[bit / 8] & m)) {
                abort(); /* network bits changed */
            }
        }
    }
    return 0;
}
