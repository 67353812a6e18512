/* Fuzz target of imap_check: the input is checked once whole and once in
 * chunks whose sizes come from its first bytes; both runs must give the same
 * verdicts over the same bytes (held bytes join the verdict that ends them,
 * runs of LITERAL and DROP merge), every input byte must be forwarded,
 * passed as literal, dropped or still held (no byte lost or doubled), and
 * the held part must never pass the line limit.  The flags byte picks the
 * server's answers to each wait ("+" or the tagged refusal) and the
 * LITERAL+/LITERAL- mode.  Input: 1 byte of flags, 8 bytes of chunk sizes,
 * the client bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/imap_check.h"

#define FUZZ_NUM_SIZES 8
#define FUZZ_LINE_LEN 48

struct fuzz_run {
    uint64_t hash;       /* FNV-1a over the normalised verdicts */
    size_t held_len;     /* bytes held, not yet verdicted */
    uint8_t held[FUZZ_LINE_LEN];
    int run;             /* open LITERAL or DROP run: its action + 1, else 0 */
    size_t accounted;    /* bytes forwarded, passed, dropped */
    size_t waits;        /* WAIT verdicts answered */
    int stopped;
};

static void fuzz_mix(struct fuzz_run *r, const void *data, size_t len)
{
    const uint8_t *b = data;

    for (size_t i = 0; i < len; i++) {
        r->hash = (r->hash ^ b[i]) * 1099511628211ULL;
    }
}

static void fuzz_mix_str(struct fuzz_run *r, const char *s)
{
    fuzz_mix(r, s != NULL ? s : "\xff", s != NULL ? strlen(s) + 1 : 1);
}

static void fuzz_verdict(struct fuzz_run *r, struct imap_check *c, enum imap_check_action a,
                         const uint8_t *p, size_t n)
{
    int code = (int)a;

    if (a == IMAP_CHECK_HOLD) {
        if (r->held_len + n > FUZZ_LINE_LEN) {
            abort(); /* the held part passed the limit */
        }
        memcpy(r->held + r->held_len, p, n);
        r->held_len += n;
        return;
    }
    if (a == IMAP_CHECK_LITERAL || a == IMAP_CHECK_DROP) {
        if (r->held_len != 0) {
            abort();
        }
        if (r->run != code + 1) {
            r->run = code + 1;
            fuzz_mix(r, &code, sizeof(code));
        }
        fuzz_mix(r, p, n);
        r->accounted += n;
        return;
    }
    r->run = 0;
    fuzz_mix(r, &code, sizeof(code));
    if (a == IMAP_CHECK_WAIT_CONTINUATION) {
        if (n != 0 || r->held_len != 0 || !imap_check_blocked(c)) {
            abort();
        }
        return;
    }
    if (a == IMAP_CHECK_REJECT || a == IMAP_CHECK_FATAL) {
        fuzz_mix_str(r, imap_check_reason(c));
    }
    if (a == IMAP_CHECK_FORWARD_END || a == IMAP_CHECK_LOCAL || a == IMAP_CHECK_REJECT) {
        fuzz_mix_str(r, imap_check_tag(c, NULL));
        fuzz_mix_str(r, imap_check_name(c));
    }
    fuzz_mix(r, r->held, r->held_len);
    fuzz_mix(r, p, n);
    r->accounted += r->held_len + n;
    r->held_len = 0;
}

/* fuzz_wait answers a wait the way the flags say; returns 0 to stop. */
static int fuzz_wait(struct fuzz_run *r, struct imap_check *c, uint8_t flags)
{
    size_t tag_len = 0;
    const char *tag = imap_check_tag(c, &tag_len);

    if (r->waits++ > 64) {
        return 0;
    }
    if ((flags >> (r->waits % 6)) & 1 && tag != NULL) {
        if (imap_check_server_tagged(c, (const uint8_t *)tag, tag_len) != 1) {
            abort();
        }
    } else if (imap_check_server_continuation(c) != 1) {
        abort();
    }
    fuzz_mix(r, &r->waits, sizeof(r->waits));
    return 1;
}

static void fuzz_chunk(struct fuzz_run *r, struct imap_check *c, uint8_t flags,
                       const uint8_t *p, size_t n)
{
    size_t off = 0;

    while (!r->stopped) {
        size_t used = 0;
        enum imap_check_action a = imap_check_feed(c, &used, p + off, n - off);

        if (used > n - off) {
            abort();
        }
        fuzz_verdict(r, c, a, p + off, used);
        off += used;
        /* tell the checker the answers of what was forwarded, so tags free up */
        if (a == IMAP_CHECK_FORWARD_END && (flags & 0x80) && imap_check_cmd(c) != IMAP_CHECK_CMD_IDLE) {
            size_t tag_len = 0;
            const char *tag = imap_check_tag(c, &tag_len);

            if (tag != NULL) {
                (void)imap_check_server_tagged(c, (const uint8_t *)tag, tag_len);
            }
        }
        if (a == IMAP_CHECK_FATAL) {
            r->stopped = 1;
        } else if (a == IMAP_CHECK_WAIT_CONTINUATION) {
            if (!fuzz_wait(r, c, flags)) {
                r->stopped = 1;
            }
        } else if (off == n) {
            break;
        } else if (used == 0) {
            abort(); /* no progress */
        }
    }
}

static void fuzz_run(struct fuzz_run *r, uint8_t flags, const uint8_t *sizes, const uint8_t *data,
                     size_t len)
{
    static const char *const allowed[] = {"XFOO"};
    struct imap_check_opts opts = {
        .max_line_len = FUZZ_LINE_LEN,
        .max_literal_len = 64,
        .max_arg_literal_len = 16,
        .max_tag_len = 8,
        .max_pending = 4,
        .allowed_commands = allowed,
        .num_allowed_commands = 1,
        .server_exts = IMAP_CHECK_EXT_ALL,
    };
    struct imap_check *c;
    size_t off = 0, k = 0;

    opts.nonsync = (enum imap_check_nonsync)((flags >> 6) % 3);
    if (flags & 0x20) {
        opts.server_exts = IMAP_CHECK_EXT_MOVE | IMAP_CHECK_EXT_IDLE; /* a bare backend */
    }
    memset(r, 0, sizeof(*r));
    r->hash = 14695981039346656037ULL;
    c = imap_check_new(&opts);
    if (c == NULL) {
        abort();
    }
    while (off < len && !r->stopped) {
        size_t chunk = sizes == NULL ? len - off : (size_t)sizes[k++ % FUZZ_NUM_SIZES] % 17 + 1;

        if (chunk > len - off) {
            chunk = len - off;
        }
        fuzz_chunk(r, c, flags, data + off, chunk);
        off += chunk;
    }
    fuzz_chunk(r, c, flags, data + len, 0); /* a pending WAIT shows on the next feed */
    if (!r->stopped && r->accounted + r->held_len != len) {
        abort(); /* a byte lost or doubled */
    }
    fuzz_mix(r, r->held, r->held_len);
    imap_check_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fuzz_run whole, chunked;

    if (size < 1 + FUZZ_NUM_SIZES) {
        return 0;
    }
    fuzz_run(&whole, data[0], NULL, data + 1 + FUZZ_NUM_SIZES, size - 1 - FUZZ_NUM_SIZES);
    fuzz_run(&chunked, data[0], data + 1, data + 1 + FUZZ_NUM_SIZES, size - 1 - FUZZ_NUM_SIZES);
    if (whole.hash != chunked.hash || whole.stopped != chunked.stopped) {
        abort();
    }
    return 0;
}
