/* sasl_oauth: the client messages of the SASL mechanisms OAUTHBEARER
 * (RFC 7628: a GS2 header, then key=value pairs separated by 0x01, the
 * token in "auth=Bearer <token>") and XOAUTH2 (Google's: "user=<login>",
 * "auth=Bearer <token>"), in base64 as IMAP AUTHENTICATE carries them, and
 * the server's error message of RFC 7628 section 3.2.2.  Pure code. */
#ifndef IMAPMUX_COMMON_SASL_OAUTH_H
#define IMAPMUX_COMMON_SASL_OAUTH_H

#include <stddef.h>

#define SASL_OAUTH_MAX_B64_LEN 24576 /* bytes of base64 we decode at most */

enum sasl_oauth_mech {
    SASL_OAUTH_BEARER = 1, /* OAUTHBEARER */
    SASL_OAUTH_XOAUTH2,    /* XOAUTH2 */
};

/* Negative results of sasl_oauth_decode; see sasl_oauth_strerror. */
enum sasl_oauth_error {
    SASL_OAUTH_E_BASE64 = -1,   /* not strict base64 */
    SASL_OAUTH_E_GS2 = -2,      /* OAUTHBEARER: a bad or unsupported GS2 header */
    SASL_OAUTH_E_FORMAT = -3,   /* the key=value pairs are malformed */
    SASL_OAUTH_E_NO_TOKEN = -4, /* no "auth=Bearer <token>" */
    SASL_OAUTH_E_TOO_LONG = -5,
    SASL_OAUTH_E_NOMEM = -6,
    SASL_OAUTH_E_USER = -7,     /* XOAUTH2 without user= */
};

struct sasl_oauth {
    char *user;   /* authzid (OAUTHBEARER, unescaped) or user= (XOAUTH2), "" when absent */
    char *token;  /* the bearer token, NUL-terminated; both point into buf */
    size_t token_len;
    char *buf;    /* owned; wiped and freed by sasl_oauth_cleanup */
    size_t buf_len;
};

/* sasl_oauth_decode decodes the base64 client message b64 (b64_len bytes)
 * of mechanism mech into out.  Returns 0 with out owning its buffer, or a
 * negative SASL_OAUTH_E_* with out zeroed (every copy wiped). */
int sasl_oauth_decode(struct sasl_oauth *out, enum sasl_oauth_mech mech, const char *b64,
                      size_t b64_len);

/* sasl_oauth_cleanup wipes and frees; safe on a zeroed struct. */
void sasl_oauth_cleanup(struct sasl_oauth *p);

/* sasl_oauth_strerror returns a fixed reason (no message data in it). */
const char *sasl_oauth_strerror(int err);

/* sasl_oauth_error_b64 returns the base64 of the JSON error of RFC 7628
 * section 3.2.2: {"status":status,"schemes":"bearer"[,"scope":scope]
 * [,"openid-configuration":oidc]}; status, scope and oidc come from the
 * configuration (scope and oidc may be NULL) and are JSON-escaped.  Returns a
 * malloc'd NUL-terminated string, or NULL on OOM. */
char *sasl_oauth_error_b64(const char *status, const char *scope, const char *oidc);

/* sasl_oauth_encode builds the base64 client message for a backend: mech's
 * message for user and token.  Returns a malloc'd NUL-terminated string with
 * its length in *out_len (the caller wipes it: secret_free(b64, len + 1)),
 * or NULL on OOM or a user that the GS2 header cannot carry (',' or '=' are
 * escaped; a NUL or 0x01 cannot be). */
char *sasl_oauth_encode(size_t *out_len, enum sasl_oauth_mech mech, const char *user,
                        const char *token);

#endif
