#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/capa.h"

static void expect_filter(const char *in, const char *want)
{
    size_t len = 0;
    char *out = capa_filter(&len, in, strlen(in));
    cr_assert_not_null(out);
    cr_assert_str_eq(out, want, "filter(%s)", in);
    cr_assert_eq(len, strlen(want));
    free(out);
}

Test(capa, removes_what_the_proxy_does_not_carry)
{
    expect_filter("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE STARTTLS AUTH=PLAIN "
                  "AUTH=SCRAM-SHA-256 LOGINDISABLED COMPRESS=DEFLATE LITERAL+",
                  "IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE LITERAL+");
    expect_filter("IMAP4rev2 LITERAL- UNAUTHENTICATE MOVE", "IMAP4rev2 LITERAL- MOVE");
}

Test(capa, case_and_spacing)
{
    expect_filter("  imap4rev2  starttls   auth=xoauth2 Idle ", "imap4rev2 Idle");
    expect_filter("", "");
    expect_filter("STARTTLS", "");
}

Test(capa, keeps_similar_names)
{
    /* prefixes only match where the pattern says so */
    expect_filter("STARTTLSX AUTHX COMPRESS SASL-IRX", "STARTTLSX AUTHX COMPRESS SASL-IRX");
    /* no atom: left out here as the stream rewriter leaves it out */
    expect_filter("IMAP4rev1 X{5} {3} IDLE", "IMAP4rev1 IDLE");
}

Test(capa, has)
{
    const char *l = "IMAP4rev1 SASL-IR AUTH=PLAIN LITERAL+";
    cr_assert(capa_has(l, strlen(l), "auth=plain"));
    cr_assert(capa_has(l, strlen(l), "LITERAL+"));
    cr_assert_not(capa_has(l, strlen(l), "AUTH"));
    cr_assert_not(capa_has(l, strlen(l), "LITERAL"));
    cr_assert_not(capa_has(l, strlen(l), ""));
}

Test(capa, find_in_text)
{
    const char *t = "[CAPABILITY IMAP4rev1 IDLE] Logged in";
    size_t n = 0;
    const char *p = capa_find_in_text(&n, t, strlen(t));
    cr_assert_not_null(p);
    cr_assert_eq(n, strlen("IMAP4rev1 IDLE"));
    cr_assert_eq(strncmp(p, "IMAP4rev1 IDLE", n), 0);
    cr_assert_null(capa_find_in_text(&n, "Logged in", 9));
    cr_assert_null(capa_find_in_text(&n, "[CAPABILITY IMAP4rev1", 21)); /* unterminated */
    t = "Dovecot ready. [capability IMAP4rev1]";
    cr_assert_not_null(capa_find_in_text(&n, t, strlen(t)));
}

/* --- capa_rewrite: the backend's capability lines after login ---------------- */

struct rw_out {
    char buf[65536];
    size_t len;
    size_t calls;
};

static void rw_collect(void *ctx, const uint8_t *p, size_t n)
{
    struct rw_out *o = ctx;
    cr_assert(n > 0, "empty output");
    cr_assert(o->len + n <= sizeof(o->buf));
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    o->calls++;
}

/* rw_run feeds in cut into pieces of step bytes (0: whole, first piece of
 * split bytes then the rest when split > 0). */
static void rw_run(struct rw_out *o, const char *extra, const char *in, size_t len, size_t split,
                   size_t step)
{
    struct capa_rewrite rw;
    capa_rewrite_init(&rw, extra);
    memset(o, 0, sizeof(*o));
    if (step > 0) {
        for (size_t i = 0; i < len; i += step) {
            size_t n = len - i < step ? len - i : step;
            cr_assert_eq(capa_rewrite_feed(&rw, (const uint8_t *)in + i, n, rw_collect, o), 0);
        }
    } else {
        cr_assert_eq(capa_rewrite_feed(&rw, (const uint8_t *)in, split, rw_collect, o), 0);
        cr_assert_eq(capa_rewrite_feed(&rw, (const uint8_t *)in + split, len - split, rw_collect,
                                       o),
                     0);
    }
    cr_assert(capa_rewrite_at_line_start(&rw), "not at a line start after %s", in);
    capa_rewrite_cleanup(&rw);
}

/* expect_rewrite checks the output of in for every split in two and byte
 * by byte. */
static void expect_rewrite(const char *extra, const char *in, const char *want)
{
    size_t len = strlen(in);
    struct rw_out o;
    for (size_t split = 0; split <= len; split++) {
        rw_run(&o, extra, in, len, split, 0);
        cr_assert(o.len == strlen(want) && memcmp(o.buf, want, o.len) == 0,
                  "split %zu of %s:\ngot  %.*s\nwant %s", split, in, (int)o.len, o.buf, want);
    }
    rw_run(&o, extra, in, len, 0, 1);
    cr_assert(o.len == strlen(want) && memcmp(o.buf, want, o.len) == 0,
              "byte by byte: %s:\ngot  %.*s", in, (int)o.len, o.buf);
}

Test(capa_rewrite, untagged_capability)
{
    expect_rewrite("COMPRESS=DEFLATE",
                   "* CAPABILITY IMAP4rev1 SASL-IR STARTTLS AUTH=PLAIN COMPRESS=DEFLATE "
                   "UNAUTHENTICATE LOGINDISABLED IDLE LITERAL+\r\n",
                   "* CAPABILITY IMAP4rev1 IDLE LITERAL+ COMPRESS=DEFLATE\r\n");
    expect_rewrite("", "* capability IMAP4rev2  starttls idle\r\n", "* capability IMAP4rev2 idle\r\n");
    expect_rewrite("COMPRESS=DEFLATE", "* CAPABILITY\r\n", "* CAPABILITY COMPRESS=DEFLATE\r\n");
    /* what imapmux adds is never doubled */
    expect_rewrite("COMPRESS=DEFLATE", "* CAPABILITY compress=deflate IMAP4rev1\r\n",
                   "* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE\r\n");
}

Test(capa_rewrite, response_code)
{
    expect_rewrite("COMPRESS=DEFLATE",
                   "a1 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN COMPRESS=DEFLATE IDLE] Done\r\n",
                   "a1 OK [CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE] Done\r\n");
    expect_rewrite("", "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
                   "* OK [CAPABILITY IMAP4rev1] ready\r\n");
    expect_rewrite("X", "t.7 no [capability SASL-IR] nope\r\n", "t.7 no [capability X] nope\r\n");
    expect_rewrite("", "* BYE [CAPABILITY STARTTLS IMAP4rev1] bye\r\n",
                   "* BYE [CAPABILITY IMAP4rev1] bye\r\n");
}

Test(capa_rewrite, everything_else_unchanged)
{
    const char *same[] = {
        "* OK [PERMANENTFLAGS (\\Seen)] Flags\r\n",
        "* 3 EXISTS\r\n* CAPABILITYX STARTTLS\r\n",
        "a OK [CAPABILITYX STARTTLS]\r\n",
        "a OK CAPABILITY completed STARTTLS\r\n",
        "+ [CAPABILITY STARTTLS]\r\n",
        "a XOK [CAPABILITY STARTTLS]\r\n",
        "a OK  [CAPABILITY STARTTLS]\r\n",
        "* LIST () \"/\" \"[CAPABILITY STARTTLS]\"\r\n",
        "\r\n\n* 1 FETCH (BODY[] {30}\r\n* CAPABILITY STARTTLS AUTH=X\r\n)\r\n",
        "* 1 FETCH (BODY[] {0}\r\n)\r\n",
        "* 2 FETCH (BODY[1] ~{24}\r\na OK [CAPABILITY AUTH=X] BODY[2] {5}\r\nab\r\nc)\r\n",
    };
    for (size_t k = 0; k < sizeof(same) / sizeof(same[0]); k++) {
        expect_rewrite("COMPRESS=DEFLATE", same[k], same[k]);
    }
}

Test(capa_rewrite, literal_then_capability)
{
    expect_rewrite("Z",
                   "* 1 FETCH (BODY[] {16}\r\n* CAPABILITY A\r\n)\r\n* CAPABILITY A STARTTLS\r\n"
                   "b OK [CAPABILITY B AUTH=PLAIN] x\r\n",
                   "* 1 FETCH (BODY[] {16}\r\n* CAPABILITY A\r\n)\r\n* CAPABILITY A Z\r\n"
                   "b OK [CAPABILITY B Z] x\r\n");
}

Test(capa_rewrite, tags_and_atoms)
{
    /* a tag as long as imapmux lets through is recognised; no atom is left out */
    char in[512], want[512];
    char tag[CAPA_REWRITE_MAX_TAG_LEN + 1];
    memset(tag, 't', CAPA_REWRITE_MAX_TAG_LEN);
    tag[CAPA_REWRITE_MAX_TAG_LEN] = '\0';
    snprintf(in, sizeof(in), "%s PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] x\r\n", tag);
    snprintf(want, sizeof(want), "%s PREAUTH [CAPABILITY IMAP4rev1] x\r\n", tag);
    expect_rewrite("", in, want);
    expect_rewrite("", "* CAPABILITY A {5} B\r\n", "* CAPABILITY A B\r\n");
    /* a tag longer than any imapmux relays: passes as it is */
    snprintf(in, sizeof(in), "%st OK [CAPABILITY STARTTLS] x\r\n", tag);
    expect_rewrite("", in, in);
}

Test(capa_rewrite, bounded_list)
{
    /* a list longer than the bound keeps what fits, whole tokens only */
    static char in[CAPA_REWRITE_MAX_LIST_LEN * 2 + 64];
    size_t o = (size_t)snprintf(in, sizeof(in), "* CAPABILITY");
    size_t tokens = 0;
    while (o + 12 < CAPA_REWRITE_MAX_LIST_LEN * 2) {
        o += (size_t)snprintf(in + o, sizeof(in) - o, " X%07zu", tokens++);
    }
    snprintf(in + o, sizeof(in) - o, "\r\n");
    struct rw_out out;
    rw_run(&out, "COMPRESS=DEFLATE", in, strlen(in), 100, 0);
    cr_assert(out.len <= CAPA_REWRITE_MAX_LIST_LEN + 64);
    const char *tail = " COMPRESS=DEFLATE\r\n";
    cr_assert_eq(memcmp(out.buf + out.len - strlen(tail), tail, strlen(tail)), 0);
    cr_assert_eq(memcmp(out.buf, in, out.len - strlen(tail)), 0); /* a prefix, whole tokens */
    cr_assert_eq(out.buf[out.len - strlen(tail)], ' ');
}

Test(capa_rewrite, bulk_passes_in_one_piece)
{
    /* no copy and no extra write for lines without a list */
    const char *in = "* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS ())\r\na3 OK Fetch done\r\n";
    struct rw_out o;
    rw_run(&o, "COMPRESS=DEFLATE", in, strlen(in), strlen(in), 0);
    cr_assert_eq(o.calls, 1);
}
