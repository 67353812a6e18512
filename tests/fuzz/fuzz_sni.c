/* Fuzz target of the ClientHello extension readers and the name matching
 * (common/sni), which read what a client sends before any handshake.
 * Properties: no read past the input; a parsed server name is NUL-terminated,
 * lowercase, within SNI_MAX_NAME_LEN + 1 bytes and matches itself as a
 * pattern whenever it is a valid pattern without '*' (a name holding '*'
 * matches nothing, itself included); a wildcard match implies the name has
 * one more label than the pattern's suffix. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/sni.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char name[SNI_MAX_NAME_LEN + 2];
    struct sni_client_caps caps;
    memset(&caps, 0, sizeof(caps));
    sni_parse_sigalgs(&caps, data, size);
    sni_parse_versions(&caps, data, size);
    if (sni_parse_server_name(name, sizeof(name), data, size) == 0) {
        size_t len = strlen(name);
        if (len == 0 || len > SNI_MAX_NAME_LEN + 1) {
            abort();
        }
        for (size_t i = 0; i < len; i++) {
            if (name[i] >= 'A' && name[i] <= 'Z') {
                abort();
            }
        }
        int star = strchr(name, '*') != NULL;
        if (sni_pattern_valid(name) && !star && sni_match(name, name, len) != SNI_MATCH_EXACT) {
            abort();
        }
        if (star && sni_match(name, name, len) != SNI_MATCH_NONE) {
            abort();
        }
        size_t bare = name[len - 1] == '.' ? len - 1 : len; /* one trailing dot ignored */
        if (sni_match("*.example.com", name, len) == SNI_MATCH_WILDCARD &&
            (bare <= strlen(".example.com") || strchr(name, '.') != name + bare - 12)) {
            abort();
        }
    }
    /* the input itself as a name against fixed patterns */
    enum sni_match r = sni_match("*.example.com", (const char *)data, size);
    if (r == SNI_MATCH_EXACT) {
        abort();
    }
    return 0;
}
