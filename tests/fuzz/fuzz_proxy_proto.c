/* Fuzz target of the PROXY protocol parser.  The input is fed once whole
 * and once in pieces whose sizes the input's first byte picks; properties:
 * both feeds give the same result, the same header length and the same
 * fields; a finished header never took more than the input nor more than
 * its bound (107 bytes for v1, 16 + 65535 for v2); MORE took every byte;
 * the fields are NUL-terminated within their buffers; and a v2 header
 * built from what was parsed parses back to the same addresses and TLVs. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/proxy_proto.h"

static enum proxy_proto_result fuzz_feed(const uint8_t *data, size_t len, size_t step,
                                         size_t *out_used, struct proxy_proto_info *out)
{
    struct proxy_proto *p = proxy_proto_new();
    enum proxy_proto_result r = PROXY_PROTO_MORE;
    size_t off = 0;
    if (p == NULL) {
        abort();
    }
    while (off < len) {
        size_t n = step == 0 || step > len - off ? len - off : step;
        size_t used = 0;
        r = proxy_proto_feed(p, &used, data + off, n);
        if (used > n || (r == PROXY_PROTO_MORE && used != n)) {
            abort();
        }
        off += used;
        if (r != PROXY_PROTO_MORE) {
            break;
        }
    }
    *out_used = off;
    memset(out, 0, sizeof(*out));
    if (r == PROXY_PROTO_DONE) {
        *out = *proxy_proto_info(p);
    } else if (r == PROXY_PROTO_ERROR && proxy_proto_error(p)[0] == '\0') {
        abort();
    }
    proxy_proto_free(p);
    return r;
}

static void fuzz_strings(const struct proxy_proto_info *i)
{
    if (memchr(i->src_ip, 0, sizeof(i->src_ip)) == NULL ||
        memchr(i->dst_ip, 0, sizeof(i->dst_ip)) == NULL ||
        memchr(i->authority, 0, sizeof(i->authority)) == NULL ||
        memchr(i->ssl_version, 0, sizeof(i->ssl_version)) == NULL ||
        memchr(i->ssl_cipher, 0, sizeof(i->ssl_cipher)) == NULL ||
        i->unique_id_len > PROXY_PROTO_MAX_UNIQUE_ID_LEN) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_proto_info a, b, c;
    size_t used_a = 0, used_b = 0, used_c = 0;
    if (size == 0) {
        return 0;
    }
    size_t step = (size_t)(data[0] % 17) + 1;
    enum proxy_proto_result ra = fuzz_feed(data + 1, size - 1, 0, &used_a, &a);
    enum proxy_proto_result rb = fuzz_feed(data + 1, size - 1, step, &used_b, &b);
    if (ra != rb || (ra != PROXY_PROTO_MORE && used_a != used_b)) {
        abort();
    }
    if (ra != PROXY_PROTO_DONE) {
        return 0;
    }
    if (memcmp(&a, &b, sizeof(a)) != 0 || used_a > size - 1) {
        abort();
    }
    if ((a.version == 1 && used_a > PROXY_PROTO_V1_MAX_LEN) ||
        (a.version == 2 && used_a > PROXY_PROTO_V2_MAX_LEN) || (a.version != 1 && a.version != 2)) {
        abort();
    }
    fuzz_strings(&a);
    /* round trip through the builder */
    uint8_t *out = malloc(2048);
    if (out == NULL) {
        abort();
    }
    int n = proxy_proto_v2_build(out, 2048, &a);
    if (n < 0) {
        abort(); /* everything the parser accepts can be said again */
    }
    if (fuzz_feed(out, (size_t)n, 0, &used_c, &c) != PROXY_PROTO_DONE || used_c != (size_t)n) {
        abort();
    }
    if (c.local != a.local || strcmp(c.authority, a.authority) != 0 ||
        c.unique_id_len != a.unique_id_len || memcmp(c.unique_id, a.unique_id, a.unique_id_len) != 0 ||
        c.has_ssl != a.has_ssl || strcmp(c.ssl_version, a.ssl_version) != 0 ||
        strcmp(c.ssl_cipher, a.ssl_cipher) != 0) {
        abort();
    }
    if (!a.local && (strcmp(c.src_ip, a.src_ip) != 0 || strcmp(c.dst_ip, a.dst_ip) != 0 ||
                     c.src_port != a.src_port || c.dst_port != a.dst_port)) {
        abort();
    }
    free(out);
    return 0;
}
