/* sasl_plain: the SASL PLAIN message (RFC 4616) in base64, as carried by IMAP
 * AUTHENTICATE: decoding what a client sends, encoding what we send to a
 * backend.  Pure code. */
#ifndef IMAPMUX_COMMON_SASL_PLAIN_H
#define IMAPMUX_COMMON_SASL_PLAIN_H

#include <stddef.h>

#define SASL_PLAIN_MAX_B64_LEN 8192 /* bytes of base64 we decode at most */

/* Negative results of sasl_plain_decode; see sasl_plain_strerror. */
enum sasl_plain_error {
    SASL_PLAIN_E_BASE64 = -1,   /* not strict base64 */
    SASL_PLAIN_E_FORMAT = -2,   /* not authzid NUL authcid NUL passwd */
    SASL_PLAIN_E_EMPTY = -3,    /* empty authcid or password */
    SASL_PLAIN_E_TOO_LONG = -4, /* over SASL_PLAIN_MAX_B64_LEN */
    SASL_PLAIN_E_NOMEM = -5,
};

struct sasl_plain {
    char *authzid; /* NUL-terminated, "" when absent; all three point into buf */
    char *authcid;
    char *passwd;
    char *buf;     /* owned; wiped and freed by sasl_plain_cleanup */
    size_t buf_len;/* bytes allocated in buf (the decoded message and more) */
};

/* sasl_plain_decode decodes b64 (b64_len bytes, no whitespace; empty means an
 * empty message) into out.  Returns 0, with out owning its buffer, or a
 * negative SASL_PLAIN_E_* with out zeroed. */
int sasl_plain_decode(struct sasl_plain *out, const char *b64, size_t b64_len);

/* sasl_plain_cleanup wipes and frees what sasl_plain_decode allocated; safe
 * on a zeroed struct. */
void sasl_plain_cleanup(struct sasl_plain *p);

/* sasl_plain_strerror returns a fixed reason for a SASL_PLAIN_E_* code. */
const char *sasl_plain_strerror(int err);

/* sasl_plain_encode returns the base64 of authzid NUL authcid NUL passwd as a
 * NUL-terminated malloc'd string with its length in *out_len, or NULL on OOM.
 * The caller wipes and frees it (secret_free(b64, *out_len + 1)). */
char *sasl_plain_encode(size_t *out_len, const char *authzid, const char *authcid,
                        const char *passwd);

#endif
