#include "common/audit_chain.h"

#include <stdio.h>
#include <string.h>

#include <openssl/sha.h>

#include "common/json_check.h"

#define CHAIN_SUFFIX_LEN (sizeof(",\"chain\":\"\"}") - 1 + AUDIT_CHAIN_HEX_LEN)

void audit_chain_hex(char out[AUDIT_CHAIN_HEX_LEN + 1], const uint8_t v[AUDIT_CHAIN_LEN])
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < AUDIT_CHAIN_LEN; i++) {
        out[2 * i] = hex[v[i] >> 4];
        out[2 * i + 1] = hex[v[i] & 15];
    }
    out[AUDIT_CHAIN_HEX_LEN] = '\0';
}

static int chain_unhex(const char *p, uint8_t out[AUDIT_CHAIN_LEN])
{
    for (size_t i = 0; i < AUDIT_CHAIN_HEX_LEN; i++) {
        char ch = p[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (v < 0) {
            return -1;
        }
        if (i % 2 == 0) {
            out[i / 2] = (uint8_t)(v << 4);
        } else {
            out[i / 2] |= (uint8_t)v;
        }
    }
    return 0;
}

/* chain_next: SHA-256(prev || body), where body is the record without chain */
static void chain_next(struct audit_chain *c, const char *head, size_t head_len)
{
    SHA256_CTX sha;
    SHA256_Init(&sha);
    SHA256_Update(&sha, c->prev, sizeof(c->prev));
    SHA256_Update(&sha, head, head_len);
    SHA256_Update(&sha, "}", 1);
    SHA256_Final(c->prev, &sha);
}

size_t audit_chain_seal(struct audit_chain *c, const char *record, size_t len, char *out,
                        size_t cap)
{
    if (len < 2 || record[len - 1] != '}' || len - 1 + CHAIN_SUFFIX_LEN + 2 > cap) {
        return 0;
    }
    chain_next(c, record, len - 1);
    char hex[AUDIT_CHAIN_HEX_LEN + 1];
    audit_chain_hex(hex, c->prev);
    memcpy(out, record, len - 1);
    size_t o = len - 1;
    if (len > 2) {
        out[o++] = ',';
    }
    memcpy(out + o, "\"chain\":\"", 9);
    o += 9;
    memcpy(out + o, hex, AUDIT_CHAIN_HEX_LEN);
    o += AUDIT_CHAIN_HEX_LEN;
    memcpy(out + o, "\"}\n", 3);
    o += 3;
    out[o] = '\0';
    return o;
}

/* chain_last reads the chain field that ends line: ...,"chain":"<hex>"}
 * into out and the length of what precedes it (its comma excluded) into
 * *out_head_len; 0 or -1. */
static int chain_last(uint8_t out[AUDIT_CHAIN_LEN], size_t *out_head_len, const char *line,
                      size_t len)
{
    static const char key[] = "\"chain\":\"";
    size_t tail = sizeof(key) - 1 + AUDIT_CHAIN_HEX_LEN + 2;
    if (len < tail + 1 || line[len - 1] != '}' || line[len - 2] != '"' ||
        memcmp(line + len - tail, key, sizeof(key) - 1) != 0) {
        return -1;
    }
    if (chain_unhex(line + len - 2 - AUDIT_CHAIN_HEX_LEN, out) != 0) {
        return -1;
    }
    size_t head_len = len - tail;
    if (head_len > 1 && line[head_len - 1] == ',') {
        head_len--;
    }
    *out_head_len = head_len;
    return 0;
}

int audit_chain_check(struct audit_chain *c, const char *line, size_t len)
{
    uint8_t got[AUDIT_CHAIN_LEN];
    size_t head_len;
    if (chain_last(got, &head_len, line, len) != 0) {
        return -1;
    }
    chain_next(c, line, head_len);
    if (memcmp(got, c->prev, AUDIT_CHAIN_LEN) != 0) {
        memcpy(c->prev, got, AUDIT_CHAIN_LEN); /* go on from what the file says */
        return -2;
    }
    return 0;
}

int audit_chain_field(const char *line, size_t len, const char *name,
                      uint8_t out[AUDIT_CHAIN_LEN])
{
    char key[64];
    size_t kl = (size_t)snprintf(key, sizeof(key), "\"%s\":\"", name);
    if (kl >= sizeof(key) || len < kl + AUDIT_CHAIN_HEX_LEN + 1) {
        return -1;
    }
    for (size_t i = 0; i + kl + AUDIT_CHAIN_HEX_LEN + 1 <= len; i++) {
        if (memcmp(line + i, key, kl) == 0 && line[i + kl + AUDIT_CHAIN_HEX_LEN] == '"') {
            return chain_unhex(line + i + kl, out);
        }
    }
    return -1;
}

/* chain_record: line is a whole chained record; its chain value and type */
static int chain_record(uint8_t out[AUDIT_CHAIN_LEN], int *out_ended, const char *line,
                        size_t len)
{
    size_t head_len;
    if (json_check_object(NULL, NULL, line, len) != 0 ||
        chain_last(out, &head_len, line, len) != 0) {
        return -1;
    }
    /* in checked JSON '":"' cannot fall inside a string: this is a member
     * "type" whose value is "chain_end" */
    static const char end_type[] = "\"type\":\"chain_end\"";
    size_t n = sizeof(end_type) - 1;
    *out_ended = 0;
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(line + i, end_type, n) == 0) {
            *out_ended = 1;
            break;
        }
    }
    return 0;
}

enum audit_chain_tail audit_chain_tail(uint8_t out_chain[AUDIT_CHAIN_LEN], size_t *out_cut_len,
                                       int *out_ended, const char *buf, size_t len,
                                       int at_start)
{
    *out_cut_len = 0;
    *out_ended = 0;
    if (len == 0) {
        return at_start ? AUDIT_TAIL_EMPTY : AUDIT_TAIL_MORE;
    }
    /* end: one past the last newline; what follows it is a line not ended */
    size_t end = len;
    while (end > 0 && buf[end - 1] != '\n') {
        end--;
    }
    if (end == 0 && !at_start) {
        return AUDIT_TAIL_MORE;
    }
    if (end < len) {
        const char *rest = buf + end;
        size_t rest_len = len - end;
        if (chain_record(out_chain, out_ended, rest, rest_len) == 0) {
            return AUDIT_TAIL_UNENDED;
        }
        if (end == 0 || !json_check_prefix(rest, rest_len)) {
            /* garbage, or a file that holds no whole line: nothing to go on from */
            return AUDIT_TAIL_BROKEN;
        }
        *out_cut_len = rest_len;
    }
    /* the last whole line: buf[start..end - 1) */
    size_t start = end - 1;
    while (start > 0 && buf[start - 1] != '\n') {
        start--;
    }
    if (start == 0 && !at_start) {
        *out_cut_len = 0;
        return AUDIT_TAIL_MORE;
    }
    if (chain_record(out_chain, out_ended, buf + start, end - 1 - start) != 0) {
        *out_cut_len = 0;
        *out_ended = 0;
        return AUDIT_TAIL_BROKEN;
    }
    return *out_cut_len > 0 ? AUDIT_TAIL_CUT : AUDIT_TAIL_OK;
}
