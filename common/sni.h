/* sni: server names for choosing a certificate.  The names a certificate is
 * configured for (exact, or a wildcard "*.example.com" standing for exactly
 * one label), matching a client's name against them, and reading the parts
 * of a TLS ClientHello that the choice needs (server_name, signature
 * algorithms, supported versions, cipher suites).  Pure code: the bytes come
 * from the TLS library's early callback; nothing here knows BoringSSL. */
#ifndef IMAPMUX_COMMON_SNI_H
#define IMAPMUX_COMMON_SNI_H

#include <stddef.h>
#include <stdint.h>

#define SNI_MAX_NAME_LEN 253  /* bytes of a DNS name without the trailing dot */
#define SNI_MAX_LABEL_LEN 63  /* bytes of one label */

enum sni_match {
    SNI_MATCH_NONE,     /* the pattern does not cover the name */
    SNI_MATCH_WILDCARD, /* "*.example.com" covers "a.example.com" */
    SNI_MATCH_EXACT,    /* the same name, ignoring case */
};

/* sni_pattern_valid returns 1 when pattern is a name a certificate can be
 * configured for: lowercase-insensitive letters, digits and '-' in labels of
 * 1-63 bytes that neither start nor end with '-', at most 253 bytes, no
 * trailing dot; a wildcard only as the whole first label ("*.a.b", with at
 * least two labels after it).  0 otherwise. */
int sni_pattern_valid(const char *pattern);

/* sni_match compares a client's server name (name_len bytes, not
 * necessarily NUL-terminated; one trailing dot ignored) with a valid
 * pattern, ignoring ASCII case.  A wildcard covers exactly one label: not the
 * bare suffix, not two labels.  A name holding '*' or a NUL matches nothing. */
enum sni_match sni_match(const char *pattern, const char *name, size_t name_len);

/* sni_parse_server_name reads the body of a server_name extension (RFC 6066
 * 3: a list of (type, name)) and copies the first host_name entry, lowercased
 * and NUL-terminated, into out (cap >= SNI_MAX_NAME_LEN + 2).  Returns 0, or
 * -1 when the extension is malformed or has no usable host name (empty, too
 * long, a NUL or a byte outside printable ASCII). */
int sni_parse_server_name(char *out, size_t cap, const uint8_t *ext, size_t ext_len);

/* What a ClientHello says the client can verify and negotiate. */
struct sni_client_caps {
    int have_sigalgs;   /* a signature_algorithms extension was sent */
    int sigalg_ecdsa;   /* it lists an ECDSA scheme */
    int sigalg_rsa;     /* it lists an RSA (PKCS#1 or PSS with an rsaEncryption key) scheme */
    int tls13;          /* supported_versions lists TLS 1.3 */
};

/* sni_parse_sigalgs reads a signature_algorithms extension body into caps.
 * Returns 0, or -1 when malformed (caps then unchanged). */
int sni_parse_sigalgs(struct sni_client_caps *caps, const uint8_t *ext, size_t ext_len);

/* sni_parse_versions reads a supported_versions extension body (ClientHello
 * form) into caps->tls13.  Returns 0, or -1 when malformed. */
int sni_parse_versions(struct sni_client_caps *caps, const uint8_t *ext, size_t ext_len);

#endif
