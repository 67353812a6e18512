#include "common/sni.h"

#include <string.h>

#define SNI_HOST_NAME_TYPE 0   /* NameType host_name (RFC 6066) */
#define SNI_TLS13_VERSION 0x0304

static char sni_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int sni_label_char(char c)
{
    c = sni_lower(c);
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/* sni_labels_valid checks dot-separated labels in s[0..len); returns the
 * number of labels, or -1. */
static int sni_labels_valid(const char *s, size_t len)
{
    size_t start = 0;
    int labels = 0;
    if (len == 0) {
        return -1;
    }
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            size_t l = i - start;
            if (l == 0 || l > SNI_MAX_LABEL_LEN || s[start] == '-' || s[i - 1] == '-') {
                return -1;
            }
            labels++;
            start = i + 1;
        } else if (!sni_label_char(s[i])) {
            return -1;
        }
    }
    return labels;
}

int sni_pattern_valid(const char *pattern)
{
    size_t len = strlen(pattern);
    if (len == 0 || len > SNI_MAX_NAME_LEN) {
        return 0;
    }
    if (pattern[0] == '*') {
        if (len < 2 || pattern[1] != '.') {
            return 0;
        }
        return sni_labels_valid(pattern + 2, len - 2) >= 2;
    }
    return sni_labels_valid(pattern, len) >= 1;
}

static int sni_equal(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (sni_lower(a[i]) != sni_lower(b[i])) {
            return 0;
        }
    }
    return 1;
}

enum sni_match sni_match(const char *pattern, const char *name, size_t name_len)
{
    size_t plen = strlen(pattern);
    if (name_len > 0 && name[name_len - 1] == '.') {
        name_len--;
    }
    /* a client's name is a name, never a pattern: "*" in it matches nothing */
    if (name_len == 0 || memchr(name, '\0', name_len) != NULL ||
        memchr(name, '*', name_len) != NULL) {
        return SNI_MATCH_NONE;
    }
    if (pattern[0] != '*') {
        return plen == name_len && sni_equal(pattern, name, plen) ? SNI_MATCH_EXACT
                                                                  : SNI_MATCH_NONE;
    }
    /* "*.suffix": the name is "label.suffix" with one label of no dot */
    const char *suffix = pattern + 1; /* ".suffix" */
    size_t slen = plen - 1;
    if (name_len <= slen) {
        return SNI_MATCH_NONE;
    }
    size_t label_len = name_len - slen;
    if (memchr(name, '.', label_len) != NULL ||
        !sni_equal(suffix, name + label_len, slen)) {
        return SNI_MATCH_NONE;
    }
    return SNI_MATCH_WILDCARD;
}

static unsigned sni_u16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

int sni_parse_server_name(char *out, size_t cap, const uint8_t *ext, size_t ext_len)
{
    if (cap < SNI_MAX_NAME_LEN + 2 || ext_len < 2) {
        return -1;
    }
    size_t list_len = sni_u16(ext);
    if (list_len != ext_len - 2) {
        return -1;
    }
    const uint8_t *p = ext + 2;
    const uint8_t *end = p + list_len;
    while (end - p >= 3) {
        unsigned type = p[0];
        size_t len = sni_u16(p + 1);
        p += 3;
        if ((size_t)(end - p) < len) {
            return -1;
        }
        if (type == SNI_HOST_NAME_TYPE) {
            if (len == 0 || len > SNI_MAX_NAME_LEN + 1) {
                return -1;
            }
            for (size_t i = 0; i < len; i++) {
                if (p[i] <= 0x20 || p[i] >= 0x7f) {
                    return -1;
                }
                out[i] = sni_lower((char)p[i]);
            }
            out[len] = '\0';
            return 0;
        }
        p += len;
    }
    return -1;
}

int sni_parse_sigalgs(struct sni_client_caps *caps, const uint8_t *ext, size_t ext_len)
{
    int ecdsa = 0, rsa = 0;
    if (ext_len < 2) {
        return -1;
    }
    size_t len = sni_u16(ext);
    if (len != ext_len - 2 || len % 2 != 0) {
        return -1;
    }
    for (size_t i = 2; i + 1 < ext_len; i += 2) {
        unsigned alg = sni_u16(ext + i);
        switch (alg) {
        case 0x0203: /* ecdsa_sha1 */
        case 0x0403: /* ecdsa_secp256r1_sha256 */
        case 0x0503: /* ecdsa_secp384r1_sha384 */
        case 0x0603: /* ecdsa_secp521r1_sha512 */
            ecdsa = 1;
            break;
        case 0x0201: /* rsa_pkcs1_sha1 */
        case 0x0401: /* rsa_pkcs1_sha256 */
        case 0x0501: /* rsa_pkcs1_sha384 */
        case 0x0601: /* rsa_pkcs1_sha512 */
        case 0x0804: /* rsa_pss_rsae_sha256 */
        case 0x0805: /* rsa_pss_rsae_sha384 */
        case 0x0806: /* rsa_pss_rsae_sha512 */
            rsa = 1;
            break;
        default:
            break;
        }
    }
    caps->have_sigalgs = 1;
    caps->sigalg_ecdsa = ecdsa;
    caps->sigalg_rsa = rsa;
    return 0;
}

int sni_parse_versions(struct sni_client_caps *caps, const uint8_t *ext, size_t ext_len)
{
    if (ext_len < 1 || (size_t)ext[0] != ext_len - 1 || ext[0] % 2 != 0) {
        return -1;
    }
    int tls13 = 0;
    for (size_t i = 1; i + 1 < ext_len; i += 2) {
        if (sni_u16(ext + i) == SNI_TLS13_VERSION) {
            tls13 = 1;
        }
    }
    caps->tls13 = tls13;
    return 0;
}
