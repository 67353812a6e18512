/* Fuzz target of the audit records: builds them from fuzzed values with the
 * json.c calls the session makes (session_audit_begin's context fields, a
 * session event, and one command record per command the audit tap reports
 * from a fuzzed transcript, its fields included), at the record size the
 * daemon uses and at a small one that cuts fields; every record must be one
 * strictly valid JSON object (json_check), and so must its sealed line,
 * whose chain must check.  The raw input also goes through json_check and
 * audit_chain_tail, which read files a verifier is handed.
 *
 * Input: one byte of flags, then the string values of FUZZ_NUM_VALUES
 * fields, each a 2-byte little-endian length and its bytes, then a
 * transcript as fuzz_audit_tap reads it (each chunk: 1 byte whose low bit
 * says the side and whose other bits give the length, then the bytes). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/audit_chain.h"
#include "common/audit_tap.h"
#include "common/json.h"
#include "common/json_check.h"
#include "proxy/audit.h"

#define FUZZ_NUM_VALUES 13      /* string values read before the transcript */
#define FUZZ_VALUE_MAX 12000    /* bytes of one value kept (longer than any record) */
#define FUZZ_SMALL_BASE 64      /* the small record size is this plus 8 * a flag value */

enum fuzz_value {
    FV_TIME, FV_INSTANCE, FV_TYPE, FV_SESSION, FV_CLIENT, FV_LISTENER, FV_TLS, FV_CIPHER,
    FV_USER, FV_BACKEND, FV_BACKEND_HOST, FV_RESULT, FV_REASON,
};

struct fuzz_ctx {
    char values[FUZZ_NUM_VALUES][FUZZ_VALUE_MAX + 1]; /* NUL-terminated: the session's strings */
    size_t lens[FUZZ_NUM_VALUES];                     /* their bytes, NULs included */
    uint8_t flags;
    size_t cap;                                       /* record size of this run */
    struct audit_chain chain;
};

static struct fuzz_ctx fuzz_ctx;

/* fuzz_check: rec is one valid object, and so is its sealed line */
static void fuzz_check(struct fuzz_ctx *f, const char *rec, size_t len)
{
    static char sealed[AUDIT_RECORD_MAX + 128];
    if (len >= f->cap || strlen(rec) != len || json_check_object(NULL, NULL, rec, len) != 0) {
        abort();
    }
    struct audit_chain before = f->chain;
    size_t n = audit_chain_seal(&f->chain, rec, len, sealed, sizeof(sealed));
    if (n < 2 || sealed[n - 1] != '\n' || json_check_object(NULL, NULL, sealed, n - 1) != 0 ||
        audit_chain_check(&before, sealed, n - 1) != 0 ||
        memcmp(before.prev, f->chain.prev, AUDIT_CHAIN_LEN) != 0) {
        abort();
    }
    uint8_t last[AUDIT_CHAIN_LEN];
    size_t cut;
    int ended;
    if (audit_chain_tail(last, &cut, &ended, sealed, n, 1) != AUDIT_TAIL_OK ||
        memcmp(last, f->chain.prev, AUDIT_CHAIN_LEN) != 0) {
        abort();
    }
}

/* fuzz_begin: session_audit_begin's fields */
static void fuzz_begin(struct fuzz_ctx *f, struct json *j, char *buf, const char *type)
{
    json_begin(j, buf, f->cap);
    json_str(j, "time", f->values[FV_TIME]);
    json_str(j, "instance", f->values[FV_INSTANCE]);
    json_str(j, "type", type);
    json_str(j, "session", f->values[FV_SESSION]);
    json_str(j, "client", f->values[FV_CLIENT]);
    json_u64(j, "client_port", f->lens[FV_CLIENT] * 977u);
    json_str(j, "listener", f->values[FV_LISTENER]);
    if (f->flags & 1) {
        json_str(j, "tls", f->values[FV_TLS]);
        json_str(j, "cipher", f->values[FV_CIPHER]);
    }
    if (f->flags & 2) {
        json_str(j, "user", f->values[FV_USER]);
    }
    if (f->flags & 4) {
        json_str(j, "backend", f->values[FV_BACKEND]);
        json_str(j, "backend_host", f->values[FV_BACKEND_HOST]);
    }
}

/* fuzz_on_cmd: session_on_audit_cmd */
static void fuzz_on_cmd(void *ctx, const struct audit_cmd *c)
{
    struct fuzz_ctx *f = ctx;
    static char buf[AUDIT_RECORD_MAX];
    struct json j;
    fuzz_begin(f, &j, buf, "command");
    json_str(&j, "tag", c->tag);
    json_str(&j, "command", c->name);
    json_bool(&j, "uid", c->uid);
    json_fields(&j, c->fields);
    json_str(&j, "status", c->status[0] != '\0' ? c->status : "none");
    if (c->code[0] != '\0') {
        json_str(&j, "code", c->code);
    }
    json_u64(&j, "duration_us", c->end_us - c->start_us);
    json_u64(&j, "bytes_in", c->bytes_in);
    json_u64(&j, "bytes_out", c->bytes_out);
    fuzz_check(f, buf, json_end(&j));
}

/* fuzz_event: session_audit_event, with the reason also as raw bytes
 * (NULs and all) through json_strn */
static void fuzz_event(struct fuzz_ctx *f)
{
    static char buf[AUDIT_RECORD_MAX];
    struct json j;
    fuzz_begin(f, &j, buf, f->values[FV_TYPE]);
    json_str(&j, "result", f->values[FV_RESULT]);
    json_str(&j, "reason", f->values[FV_REASON]);
    json_strn(&j, "reason_raw", f->values[FV_REASON], f->lens[FV_REASON]);
    json_u64(&j, "duration_us", UINT64_MAX);
    json_u64(&j, "commands", 0);
    fuzz_check(f, buf, json_end(&j));
}

static void fuzz_tap(struct fuzz_ctx *f, const uint8_t *data, size_t size)
{
    const struct audit_tap_opts opts = {.seqset_max = 32, .search_values = f->flags & 8,
                                        .max_pending = 64};
    struct audit_tap *t = audit_tap_new(&opts, fuzz_on_cmd, f);
    if (t == NULL) {
        return;
    }
    size_t i = 0;
    while (i < size) {
        int server = data[i] & 1;
        size_t n = data[i] >> 1;
        i++;
        if (n > size - i) {
            n = size - i;
        }
        if (server) {
            audit_tap_server(t, data + i, n, 2);
        } else {
            (void)audit_tap_client(t, data + i, n, 1);
        }
        i += n;
    }
    audit_tap_finish(t, 3);
    audit_tap_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the raw input as a file's end and as a line: no crash, and the
     * verdicts agree with each other */
    uint8_t last[AUDIT_CHAIN_LEN];
    size_t cut;
    int ended;
    int whole = json_check_object(NULL, NULL, (const char *)data, size) == 0;
    if (whole && json_check_prefix((const char *)data, size)) {
        abort();
    }
    if (audit_chain_tail(last, &cut, &ended, (const char *)data, size, 1) == AUDIT_TAIL_CUT &&
        (cut == 0 || cut >= size)) {
        abort();
    }

    if (size < 1) {
        return 0;
    }
    struct fuzz_ctx *f = &fuzz_ctx;
    f->flags = data[0];
    size_t i = 1;
    for (size_t v = 0; v < FUZZ_NUM_VALUES; v++) {
        size_t n = 0;
        if (i + 2 <= size) {
            n = (size_t)data[i] | (size_t)data[i + 1] << 8;
            i += 2;
        } else {
            i = size;
        }
        n = n < size - i ? n : size - i;
        size_t kept = n < FUZZ_VALUE_MAX ? n : FUZZ_VALUE_MAX;
        memcpy(f->values[v], data + i, kept);
        f->values[v][kept] = '\0';
        f->lens[v] = kept;
        i += n;
    }
    size_t caps[2] = {AUDIT_RECORD_MAX, FUZZ_SMALL_BASE + 8 * (size_t)(f->flags >> 4)};
    for (size_t k = 0; k < 2; k++) {
        f->cap = caps[k];
        memset(&f->chain, 0, sizeof(f->chain));
        fuzz_event(f);
        fuzz_tap(f, data + i, size - i);
    }
    return 0;
}
