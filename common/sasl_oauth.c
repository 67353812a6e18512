/* sasl_oauth: OAUTHBEARER and XOAUTH2 client messages, the RFC 7628 error. */
#include "common/sasl_oauth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/base64.h>
#include <openssl/mem.h>

#include "common/secret.h"

#define SASL_OAUTH_KVSEP '\x01'

void sasl_oauth_cleanup(struct sasl_oauth *p)
{
    secret_free(p->buf, p->buf_len);
    memset(p, 0, sizeof(*p));
}

const char *sasl_oauth_strerror(int err)
{
    switch (err) {
    case SASL_OAUTH_E_BASE64:
        return "invalid base64";
    case SASL_OAUTH_E_GS2:
        return "invalid GS2 header";
    case SASL_OAUTH_E_FORMAT:
        return "malformed message";
    case SASL_OAUTH_E_NO_TOKEN:
        return "no bearer token";
    case SASL_OAUTH_E_TOO_LONG:
        return "message too long";
    case SASL_OAUTH_E_NOMEM:
        return "out of memory";
    case SASL_OAUTH_E_USER:
        return "no user";
    default:
        return "unknown error";
    }
}

/* sasl_oauth_is_b64token: RFC 6750 section 2.1's b64token. */
static int sasl_oauth_is_b64token(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && (((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z') ||
                       (s[i] >= '0' && s[i] <= '9') || strchr("-._~+/", s[i]) != NULL)) {
        i++;
    }
    if (i == 0) {
        return 0;
    }
    while (i < len && s[i] == '=') {
        i++;
    }
    return i == len;
}

/* sasl_oauth_unescape turns a saslname's "=2C" and "=3D" back into ',' and
 * '=' in place (RFC 5801 section 4); returns 0 or -1 for another '='. */
static int sasl_oauth_unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r != '\0'; r++) {
        if (*r == '=') {
            if (r[1] == '2' && r[2] == 'C') {
                *w++ = ',';
            } else if (r[1] == '3' && r[2] == 'D') {
                *w++ = '=';
            } else {
                return -1;
            }
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return 0;
}

/* sasl_oauth_pairs reads key=value pairs from p (up to end), each ended by
 * 0x01, then the final 0x01 at end - 1.  Values are NUL-terminated in place.
 * Sets out->token, and with want_user out->user from "user=". */
static int sasl_oauth_pairs(struct sasl_oauth *out, char *p, char *end, int want_user)
{
    while (p < end && *p != SASL_OAUTH_KVSEP) {
        char *sep = memchr(p, SASL_OAUTH_KVSEP, (size_t)(end - p));
        char *eq = sep != NULL ? memchr(p, '=', (size_t)(sep - p)) : NULL;
        if (sep == NULL || eq == NULL || eq == p) {
            return SASL_OAUTH_E_FORMAT;
        }
        for (char *k = p; k < eq; k++) {
            if (((*k | 0x20) < 'a' || (*k | 0x20) > 'z')) {
                return SASL_OAUTH_E_FORMAT;
            }
        }
        for (char *v = eq + 1; v < sep; v++) {
            unsigned char c = (unsigned char)*v;
            if (!((c >= 0x21 && c <= 0x7e) || c == ' ' || c == '\t' || c == '\r' || c == '\n' ||
                  (want_user && c >= 0x80))) {
                return SASL_OAUTH_E_FORMAT;
            }
        }
        *sep = '\0';
        size_t klen = (size_t)(eq - p);
        char *val = eq + 1;
        if (klen == 4 && strncasecmp(p, "auth", 4) == 0) {
            if (out->token != NULL) {
                return SASL_OAUTH_E_FORMAT;
            }
            if (strncasecmp(val, "Bearer ", 7) != 0) {
                return SASL_OAUTH_E_NO_TOKEN;
            }
            char *tok = val + 7;
            while (*tok == ' ') {
                tok++;
            }
            if (!sasl_oauth_is_b64token(tok, strlen(tok))) {
                return SASL_OAUTH_E_NO_TOKEN;
            }
            out->token = tok;
            out->token_len = strlen(tok);
        } else if (want_user && klen == 4 && strncasecmp(p, "user", 4) == 0) {
            if (out->user != NULL) {
                return SASL_OAUTH_E_FORMAT;
            }
            out->user = val;
        }
        p = sep + 1;
    }
    if (p + 1 != end || *p != SASL_OAUTH_KVSEP) {
        return SASL_OAUTH_E_FORMAT; /* the closing 0x01, and nothing after it */
    }
    return out->token != NULL ? 0 : SASL_OAUTH_E_NO_TOKEN;
}

int sasl_oauth_decode(struct sasl_oauth *out, enum sasl_oauth_mech mech, const char *b64,
                      size_t b64_len)
{
    size_t max_len = 0, len = 0;
    int r;

    memset(out, 0, sizeof(*out));
    if (b64_len > SASL_OAUTH_MAX_B64_LEN) {
        return SASL_OAUTH_E_TOO_LONG;
    }
    if (!EVP_DecodedLength(&max_len, b64_len) || b64_len % 4 != 0) {
        return SASL_OAUTH_E_BASE64;
    }
    out->buf_len = max_len + 1;
    out->buf = malloc(out->buf_len);
    if (out->buf == NULL) {
        out->buf_len = 0;
        return SASL_OAUTH_E_NOMEM;
    }
    if (!EVP_DecodeBase64((uint8_t *)out->buf, &len, max_len, (const uint8_t *)b64, b64_len)) {
        r = SASL_OAUTH_E_BASE64;
        goto fail;
    }
    out->buf[len] = '\0';
    if (memchr(out->buf, '\0', len) != NULL) {
        r = SASL_OAUTH_E_FORMAT;
        goto fail;
    }
    char *p = out->buf, *end = out->buf + len;
    if (mech == SASL_OAUTH_BEARER) {
        /* gs2-header: ("n" / "y") "," ["a=" saslname] "," ; "p=" is channel
           binding, which OAUTHBEARER does not have */
        if (len < 3 || (p[0] != 'n' && p[0] != 'y') || p[1] != ',') {
            r = SASL_OAUTH_E_GS2;
            goto fail;
        }
        p += 2;
        char *comma = memchr(p, ',', (size_t)(end - p));
        if (comma == NULL) {
            r = SASL_OAUTH_E_GS2;
            goto fail;
        }
        if (comma == p) {
            out->user = "";
        } else if (comma - p > 2 && p[0] == 'a' && p[1] == '=') {
            *comma = '\0';
            out->user = p + 2;
            if (sasl_oauth_unescape(out->user) != 0 ||
                memchr(out->user, SASL_OAUTH_KVSEP, strlen(out->user)) != NULL) {
                r = SASL_OAUTH_E_GS2;
                goto fail;
            }
        } else {
            r = SASL_OAUTH_E_GS2;
            goto fail;
        }
        p = comma + 1;
        if (p >= end || *p != SASL_OAUTH_KVSEP) {
            r = SASL_OAUTH_E_FORMAT;
            goto fail;
        }
        p++;
        r = sasl_oauth_pairs(out, p, end, 0);
    } else {
        r = sasl_oauth_pairs(out, p, end, 1);
        if (r == 0 && (out->user == NULL || out->user[0] == '\0')) {
            r = SASL_OAUTH_E_USER;
        }
    }
    if (r != 0) {
        goto fail;
    }
    if (out->user == NULL) {
        out->user = "";
    }
    return 0;
fail:
    sasl_oauth_cleanup(out);
    return r;
}

/* sasl_oauth_json_str appends s as a JSON string to out (room checked by
 * the caller: 6 bytes per input byte plus 2). */
static size_t sasl_oauth_json_str(char *out, const char *s)
{
    size_t o = 0;
    out[o++] = '"';
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)sprintf(out + o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    return o;
}

char *sasl_oauth_error_b64(const char *status, const char *scope, const char *oidc)
{
    size_t room = 64 + 6 * (strlen(status) + (scope ? strlen(scope) : 0) +
                            (oidc ? strlen(oidc) : 0));
    char *json = malloc(room);
    size_t o = 0, b64_len = 0;
    if (json == NULL) {
        return NULL;
    }
    o += (size_t)sprintf(json, "{\"status\":");
    o += sasl_oauth_json_str(json + o, status);
    o += (size_t)sprintf(json + o, ",\"schemes\":\"bearer\"");
    if (scope != NULL) {
        o += (size_t)sprintf(json + o, ",\"scope\":");
        o += sasl_oauth_json_str(json + o, scope);
    }
    if (oidc != NULL) {
        o += (size_t)sprintf(json + o, ",\"openid-configuration\":");
        o += sasl_oauth_json_str(json + o, oidc);
    }
    json[o++] = '}';
    char *b64 = NULL;
    if (EVP_EncodedLength(&b64_len, o) && (b64 = malloc(b64_len)) != NULL) {
        EVP_EncodeBlock((uint8_t *)b64, (const uint8_t *)json, o);
    }
    free(json);
    return b64;
}

char *sasl_oauth_encode(size_t *out_len, enum sasl_oauth_mech mech, const char *user,
                        const char *token)
{
    size_t ulen = strlen(user), tlen = strlen(token);
    size_t room = 3 * ulen + tlen + 64, o = 0, b64_len = 0;
    char *raw, *b64 = NULL;

    *out_len = 0;
    if (memchr(user, SASL_OAUTH_KVSEP, ulen) != NULL) {
        return NULL;
    }
    raw = malloc(room);
    if (raw == NULL) {
        return NULL;
    }
    if (mech == SASL_OAUTH_BEARER) {
        o += (size_t)snprintf(raw, room, "n,a=");
        for (const char *s = user; *s != '\0'; s++) {
            if (*s == ',') {
                memcpy(raw + o, "=2C", 3);
                o += 3;
            } else if (*s == '=') {
                memcpy(raw + o, "=3D", 3);
                o += 3;
            } else {
                raw[o++] = *s;
            }
        }
        o += (size_t)snprintf(raw + o, room - o, ",\x01" "auth=Bearer %s\x01\x01", token);
    } else {
        o += (size_t)snprintf(raw, room, "user=%s\x01" "auth=Bearer %s\x01\x01", user, token);
    }
    if (EVP_EncodedLength(&b64_len, o) && (b64 = malloc(b64_len)) != NULL) {
        *out_len = EVP_EncodeBlock((uint8_t *)b64, (const uint8_t *)raw, o);
    }
    secret_free(raw, room);
    return b64;
}
