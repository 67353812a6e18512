#include "common/chash.h"

#include <string.h>

/* FNV-1a over the bytes, then a 64-bit finaliser so that hosts whose names
 * differ in one character still get unrelated scores. */
static uint64_t chash_fnv(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t chash_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t chash_score(const char *host, uint16_t port, const char *key)
{
    unsigned char p[3] = {(unsigned char)(port >> 8), (unsigned char)port, 0};
    uint64_t h = 0xcbf29ce484222325ull;
    h = chash_fnv(h, host, strlen(host));
    h = chash_fnv(h, p, sizeof(p)); /* the 0 separates host from key */
    h = chash_fnv(h, key, strlen(key));
    return chash_mix(h);
}

long chash_pick(const struct schema_host *hosts, size_t num, const char *key)
{
    long best = -1;
    uint64_t best_score = 0;
    for (size_t i = 0; i < num; i++) {
        if (hosts[i].down) {
            continue;
        }
        uint64_t s = chash_score(hosts[i].host, hosts[i].port, key);
        if (best < 0 || s > best_score) {
            best = (long)i;
            best_score = s;
        }
    }
    return best;
}
