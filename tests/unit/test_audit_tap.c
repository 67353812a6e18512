/* The audit tap fed real transcripts: whole, split at every byte offset of
 * every chunk, and a byte at a time; each way must give the same records. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/audit_tap.h"

struct chunk {
    char dir; /* 'C' client, 'S' server */
    const char *data;
    size_t len; /* 0: strlen(data) */
};

struct out {
    char text[16384];
    size_t len;
};

static void on_cmd(void *ctx, const struct audit_cmd *c)
{
    struct out *o = ctx;
    int n = snprintf(o->text + o->len, sizeof(o->text) - o->len, "%s|%s|%d|%s|%s|%s|%llu|%llu\n",
                     c->tag, c->name, c->uid, c->fields, c->status, c->code,
                     (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out);
    cr_assert(n > 0 && (size_t)n < sizeof(o->text) - o->len);
    o->len += (size_t)n;
}

static const struct audit_tap_opts default_opts = {
    .seqset_max = 16,
    .search_values = 0,
    .max_pending = 64,
};

static size_t chunk_len(const struct chunk *c)
{
    return c->len != 0 ? c->len : strlen(c->data);
}

static void feed(struct audit_tap *t, char dir, const char *p, size_t n)
{
    if (dir == 'C') {
        cr_assert_eq(audit_tap_client(t, (const uint8_t *)p, n, 1), 0);
    } else {
        audit_tap_server(t, (const uint8_t *)p, n, 2);
    }
}

/* run feeds the transcript with chunk split_chunk cut at split_at (or byte
 * by byte when split_at is (size_t)-1) and returns the records. */
static void run(const struct audit_tap_opts *opts, const struct chunk *tr, size_t n,
                size_t split_chunk, size_t split_at, struct out *o)
{
    memset(o, 0, sizeof(*o));
    struct audit_tap *t = audit_tap_new(opts, on_cmd, o);
    cr_assert_not_null(t);
    for (size_t i = 0; i < n; i++) {
        size_t len = chunk_len(&tr[i]);
        if (split_at == (size_t)-1) {
            for (size_t k = 0; k < len; k++) {
                feed(t, tr[i].dir, tr[i].data + k, 1);
            }
        } else if (i == split_chunk) {
            feed(t, tr[i].dir, tr[i].data, split_at);
            feed(t, tr[i].dir, tr[i].data + split_at, len - split_at);
        } else {
            feed(t, tr[i].dir, tr[i].data, len);
        }
    }
    audit_tap_finish(t, 3);
    audit_tap_free(t);
}

/* check: every way of feeding gives exactly want. */
static void check(const struct audit_tap_opts *opts, const struct chunk *tr, size_t n,
                  const char *want)
{
    struct out o;
    run(opts, tr, n, 0, 0, &o);
    cr_assert_str_eq(o.text, want);
    run(opts, tr, n, 0, (size_t)-1, &o);
    cr_assert_str_eq(o.text, want, "byte by byte");
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k <= chunk_len(&tr[i]); k++) {
            run(opts, tr, n, i, k, &o);
            cr_assert_str_eq(o.text, want, "chunk %zu split at %zu", i, k);
        }
    }
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

Test(audit_tap, pipelining_literal_plus_and_fetch_literals)
{
    /* the server literal holds a line that looks like a tagged answer */
    const struct chunk tr[] = {
        {'C', "a1 SELECT INBOX\r\na2 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)])\r\n"
              "a3 APPEND Drafts (\\Seen) {12+}\r\nHello World!\r\n", 0},
        {'S', "* 3 EXISTS\r\na1 OK [READ-WRITE] SELECT completed\r\n"
              "* 1 FETCH (FLAGS (\\Seen) BODY[HEADER.FIELDS (FROM TO)] {21}\r\n"
              "From: a\r\na2 OK fake\r\n)\r\na2 OK Fetch completed\r\n"
              "a3 OK [APPENDUID 1 5] Append completed\r\n", 0},
    };
    check(&default_opts, tr, N(tr),
          "a1|SELECT|0|\"mailbox\":\"INBOX\"|OK|READ-WRITE|17|49\n"
          "a2|FETCH|0|\"seqset\":\"1:*\",\"items\":[\"FLAGS\",\"BODY.PEEK[HEADER.FIELDS (FROM "
          "TO)]\"]|OK||57|108\n"
          "a3|APPEND|0|\"mailbox\":\"Drafts\",\"append_size\":12|OK|APPENDUID|46|40\n");
}

Test(audit_tap, idle_and_done)
{
    const struct chunk tr[] = {
        {'C', "i1 IDLE\r\n", 0},
        {'S', "+ idling\r\n* 4 EXISTS\r\n", 0},
        {'C', "DONE\r\n", 0},
        {'S', "i1 OK Idle completed\r\n", 0},
        {'C', "i2 noop\r\n", 0},
        {'S', "i2 OK NOOP completed\r\n", 0},
    };
    check(&default_opts, tr, N(tr),
          "i1|IDLE|0||OK||15|44\n"
          "i2|NOOP|0||OK||9|22\n");
}

Test(audit_tap, authenticate_data_is_never_a_command)
{
    const struct chunk tr[] = {
        {'C', "x1 AUTHENTICATE PLAIN\r\n", 0},
        {'S', "+ \r\n", 0},
        {'C', "AGJvYgBzZWNyZXQ=\r\n", 0},
        {'S', "x1 OK [CAPABILITY IMAP4rev1] done\r\n", 0},
        /* data that looks like a literal header is still one line */
        {'C', "x2 AUTHENTICATE PLAIN\r\n", 0},
        {'S', "+ \r\n", 0},
        {'C', "{5}\r\n", 0},
        {'S', "x2 BAD Invalid base64\r\n", 0},
        {'C', "x3 LOGIN bob secret\r\nx4 AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\n", 0},
        {'S', "x3 NO [AUTHENTICATIONFAILED] nope\r\nx4 NO nope\r\n", 0},
        {'C', "x5 NOOP\r\n", 0},
        {'S', "x5 OK\r\n", 0},
    };
    struct out o;
    check(&default_opts, tr, N(tr),
          "x1|AUTHENTICATE|0|\"mechanism\":\"PLAIN\"|OK|CAPABILITY|41|39\n"
          "x2|AUTHENTICATE|0|\"mechanism\":\"PLAIN\"|BAD||28|27\n"
          "x3|LOGIN|0||NO|AUTHENTICATIONFAILED|21|35\n"
          "x4|AUTHENTICATE|0|\"mechanism\":\"PLAIN\"|NO||40|12\n"
          "x5|NOOP|0||OK||9|7\n");
    run(&default_opts, tr, N(tr), 0, (size_t)-1, &o);
    cr_assert_null(strstr(o.text, "secret"));
    cr_assert_null(strstr(o.text, "AGJvYgBzZWNyZXQ"));
}

Test(audit_tap, command_pipelined_after_an_initial_response)
{
    /* no "+" came, and the line has the form of a command */
    const struct chunk tr[] = {
        {'C', "p1 AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\np2 SELECT INBOX\r\n", 0},
        {'S', "p1 OK done\r\np2 OK [READ-WRITE] done\r\n", 0},
    };
    check(&default_opts, tr, N(tr),
          "p1|AUTHENTICATE|0|\"mechanism\":\"PLAIN\"|OK||40|12\n"
          "p2|SELECT|0|\"mailbox\":\"INBOX\"|OK|READ-WRITE|17|25\n");
}

Test(audit_tap, binary_literal8_in_a_response)
{
    static const char srv[] = "* 1 FETCH (BINARY[] ~{11}\r\n\0\1b1 OK x\r\n)\r\nb1 OK done\r\n";
    const struct chunk tr[] = {
        {'C', "b1 UID FETCH 7 (BINARY[])\r\n", 0},
        {'S', srv, sizeof(srv) - 1},
    };
    check(&default_opts, tr, N(tr),
          "b1|FETCH|1|\"seqset\":\"7\",\"items\":[\"BINARY[]\"]|OK||27|53\n");
}

Test(audit_tap, mailbox_names)
{
    const struct chunk tr[] = {
        {'C', "m1 SELECT {5}\r\n", 0},
        {'S', "+ Ready\r\n", 0},
        {'C', "INBOX\r\n", 0},
        {'S', "m1 OK [READ-ONLY] done\r\n", 0},
        {'C', "m2 CREATE \"&ZeVnLIqe-\"\r\nm3 RENAME \"a \\\"b\\\"\" {3+}\r\nnew\r\n"
              "m4 uid copy 1:3,9 Trash\r\nm5 MOVE 2 \"x&-y\"\r\nm6 STATUS INBOX (MESSAGES)\r\n"
              "m7 EXAMINE \"\xff\"\r\n", 0},
        {'S', "m2 OK\r\nm3 OK\r\nm4 NO [TRYCREATE] no\r\nm5 OK\r\n* STATUS INBOX (MESSAGES 1)\r\n"
              "m6 OK\r\nm7 NO [NONEXISTENT] no\r\n", 0},
    };
    check(&default_opts, tr, N(tr),
          "m1|SELECT|0|\"mailbox\":\"INBOX\"|OK|READ-ONLY|22|24\n"
          "m2|CREATE|0|\"mailbox\":\"日本語\"|OK||24|7\n"
          "m3|RENAME|0|\"mailbox\":\"a \\\"b\\\"\",\"new_mailbox\":\"new\"|OK||31|7\n"
          "m4|COPY|1|\"mailbox\":\"Trash\",\"seqset\":\"1:3,9\"|NO|TRYCREATE|25|22\n"
          "m5|MOVE|0|\"mailbox\":\"x&y\",\"seqset\":\"2\"|OK||18|7\n"
          "m6|STATUS|0|\"mailbox\":\"INBOX\"|OK||28|36\n"
          "m7|EXAMINE|0|\"mailbox\":\"\xef\xbf\xbd\"|NO|NONEXISTENT|16|24\n");
}

Test(audit_tap, store_flags_seqset_cut_and_expunge)
{
    const struct chunk tr[] = {
        {'C', "s1 STORE 1:2 +FLAGS.SILENT (\\Deleted \\Seen)\r\n"
              "s2 UID STORE 5 (UNCHANGEDSINCE 7) FLAGS \\Flagged\r\n"
              "s3 UID FETCH 1,3,5,7,9,11,13,15,17 FLAGS\r\ns4 UID EXPUNGE 1:5\r\ns5 EXPUNGE\r\n", 0},
        {'S', "s1 OK\r\ns2 OK\r\ns3 OK\r\ns4 OK\r\ns5 OK\r\n", 0},
    };
    check(&default_opts, tr, N(tr),
          "s1|STORE|0|\"seqset\":\"1:2\",\"flags\":\"+FLAGS.SILENT (\\\\Deleted \\\\Seen)\"|OK||45|7\n"
          "s2|STORE|1|\"seqset\":\"5\",\"flags\":\"FLAGS \\\\Flagged\"|OK||50|7\n"
          "s3|FETCH|1|\"seqset\":\"1,3,5,7,9,11,13,\",\"seqset_truncated\":true,"
          "\"items\":[\"FLAGS\"]|OK||42|7\n"
          "s4|EXPUNGE|1|\"seqset\":\"1:5\"|OK||20|7\n"
          "s5|EXPUNGE|0||OK||12|7\n");
}

Test(audit_tap, search_values_redacted_unless_allowed)
{
    const struct chunk tr[] = {
        {'C', "q1 UID SEARCH CHARSET UTF-8 FROM \"boss\" SUBJECT {6}\r\n", 0},
        {'S', "+ go\r\n", 0},
        {'C', "merger NOT SEEN 1:4\r\n", 0},
        {'S', "* SEARCH 4\r\nq1 OK done\r\n", 0},
    };
    check(&default_opts, tr, N(tr),
          "q1|SEARCH|1|\"search\":\"CHARSET ? FROM ? SUBJECT ? NOT SEEN ?\"|OK||74|24\n");
    struct audit_tap_opts show = default_opts;
    show.search_values = 1;
    check(&show, tr, N(tr),
          "q1|SEARCH|1|\"search\":\"CHARSET UTF-8 FROM \\\"boss\\\" SUBJECT merger NOT SEEN "
          "1:4\"|OK||74|24\n");
}

Test(audit_tap, appended_message_is_never_kept)
{
    const struct chunk tr[] = {
        {'C', "ap APPEND INBOX {32}\r\n", 0},
        {'S', "+ go\r\n", 0},
        {'C', "Subject: hush\r\n\r\nthe body text\r\n {4+}\r\nabcd\r\n", 0},
        {'S', "ap OK [APPENDUID 3 4] done\r\n", 0},
    };
    struct out o;
    check(&default_opts, tr, N(tr),
          "ap|APPEND|0|\"mailbox\":\"INBOX\",\"append_size\":36,\"append_messages\":2|OK|"
          "APPENDUID|67|28\n");
    run(&default_opts, tr, N(tr), 0, 0, &o);
    cr_assert_null(strstr(o.text, "hush"));
    cr_assert_null(strstr(o.text, "body"));
}

Test(audit_tap, unanswered_commands_and_the_pending_limit)
{
    struct out o;
    memset(&o, 0, sizeof(o));
    struct audit_tap_opts opts = default_opts;
    opts.max_pending = 3;
    struct audit_tap *t = audit_tap_new(&opts, on_cmd, &o);
    const char *in = "u1 NOOP\r\nu2 NOOP\r\nu3 NOOP\r\n";
    cr_assert_eq(audit_tap_client(t, (const uint8_t *)in, strlen(in), 1), 0);
    cr_assert_eq(audit_tap_pending(t), 3);
    audit_tap_server(t, (const uint8_t *)"u2 OK\r\n", 7, 5);
    cr_assert_eq(audit_tap_pending(t), 2);
    cr_assert_str_eq(o.text, "u2|NOOP|0||OK||9|7\n");
    cr_assert_eq(audit_tap_client(t, (const uint8_t *)"u4 NOOP\r\n", 9, 6), 0);
    cr_assert_eq(audit_tap_client(t, (const uint8_t *)"u5 NOOP\r\n", 9, 6), -1);
    audit_tap_finish(t, 9);
    cr_assert_str_eq(o.text, "u2|NOOP|0||OK||9|7\nu1|NOOP|0||||9|0\nu3|NOOP|0||||9|0\n"
                             "u4|NOOP|0||||9|0\n");
    audit_tap_free(t);
}

Test(audit_tap, junk_is_bounded)
{
    /* a line far over the kept length, NUL bytes, a tag-only line */
    struct out o;
    memset(&o, 0, sizeof(o));
    struct audit_tap *t = audit_tap_new(&default_opts, on_cmd, &o);
    char *big = malloc(100000);
    memset(big, 'A', 100000);
    memcpy(big, "j1 SELECT ", 10);
    cr_assert_eq(audit_tap_client(t, (const uint8_t *)big, 100000, 1), 0);
    cr_assert_eq(audit_tap_client(t, (const uint8_t *)"\r\nj2 \0\1\r\n\r\n", 11, 1), 0);
    audit_tap_server(t, (const uint8_t *)"j1 BAD too long\r\nj2 BAD what\r\n", 30, 2);
    cr_assert_eq(audit_tap_pending(t), 0);
    cr_assert_not_null(strstr(o.text, "j1|SELECT|0|\"mailbox\":\"AAAA"));
    cr_assert_not_null(strstr(o.text, "|BAD||100002|17\nj2|"));
    audit_tap_free(t);
    free(big);
}

Test(audit_tap, control_characters_in_a_command)
{
    /* found by the fuzzer: a byte that starts no token once looped forever */
    const struct chunk tr[] = {
        {'C', "t1 SELECT \tINBOX\x7f\r\r\n", 0},
        {'S', "t1 OK\r\n", 0},
    };
    check(&default_opts, tr, N(tr), "t1|SELECT|0|\"mailbox\":\"INBOX\"|OK||20|7\n");
}

Test(audit_tap, a_refused_literal_ends_its_command)
{
    /* the backend answers a synchronising literal with NO instead of "+": the
       client sends no data, and its next line is a command */
    struct out o, without;
    memset(&o, 0, sizeof(o));
    memset(&without, 0, sizeof(without));
    struct audit_tap *t = audit_tap_new(&default_opts, on_cmd, &o);
    struct audit_tap *u = audit_tap_new(&default_opts, on_cmd, &without);
    cr_assert_not_null(t);
    cr_assert_not_null(u);
    const char *c1 = "a APPEND Nowhere {5}\r\n", *s1 = "a NO [TRYCREATE] No such mailbox\r\n";
    const char *c2 = "b NOOP\r\n", *s2 = "b OK done\r\n";
    feed(t, 'C', c1, strlen(c1));
    audit_tap_client_cut(t);
    feed(t, 'S', s1, strlen(s1));
    feed(t, 'C', c2, strlen(c2));
    feed(t, 'S', s2, strlen(s2));
    /* without the cut the tap takes "b NOO" for the literal */
    feed(u, 'C', c1, strlen(c1));
    feed(u, 'S', s1, strlen(s1));
    feed(u, 'C', c2, strlen(c2));
    feed(u, 'S', s2, strlen(s2));
    audit_tap_finish(t, 3);
    audit_tap_finish(u, 3);
    cr_assert(strstr(o.text, "a|APPEND|0|") != NULL, "%s", o.text);
    cr_assert(strstr(o.text, "|NO|TRYCREATE|") != NULL, "%s", o.text);
    cr_assert(strstr(o.text, "b|NOOP|0||OK|") != NULL, "%s", o.text);
    cr_assert(strstr(without.text, "b|NOOP") == NULL, "%s", without.text);
    audit_tap_free(t);
    audit_tap_free(u);
}

Test(audit_tap, a_command_cut_after_its_literal_is_recorded_without_an_answer)
{
    /* the session ends inside an APPEND's message (the gate refused what
       followed, or the client went away): the backend had its first line
       part and part of the message, so it is a command without an answer;
       a command still on its first line part reached no one */
    const struct chunk tr[] = {
        {'C', "a1 NOOP\r\na2 APPEND INBOX (\\Seen) {11}\r\n", 0},
        {'S', "a1 OK done\r\n+ OK\r\n", 0},
        {'C', "Hello", 0},
    };
    check(&default_opts, tr, N(tr),
          "a1|NOOP|0||OK||9|12\n"
          "a2|APPEND|0|\"mailbox\":\"INBOX\",\"append_size\":11|||35|0\n");
    const struct chunk tr2[] = {
        {'C', "b1 SEARCH SUBJECT {4}\r\n", 0},
        {'S', "+ OK\r\n", 0},
        {'C', "diff FROM {2}\r\nab", 0},
        {'C', " TO x", 0},
    };
    check(&default_opts, tr2, N(tr2), "b1|SEARCH|0|\"search\":\"SUBJECT ? FROM ? TO ?\"|||45|0\n");
    const struct chunk tr3[] = {
        {'C', "c1 SELECT INB", 0},
    };
    check(&default_opts, tr3, N(tr3), "");
}

Test(audit_tap, a_long_command_cut_after_its_literal_is_recorded_too)
{
    /* the text kept of a command is bounded; its literals beyond that still
       make a cut command one the backend had part of */
    struct out o;
    memset(&o, 0, sizeof(o));
    struct audit_tap *t = audit_tap_new(&default_opts, on_cmd, &o);
    cr_assert_not_null(t);
    size_t n = AUDIT_TAP_TEXT_LEN + 100;
    char *big = malloc(n + 64);
    cr_assert_not_null(big);
    memcpy(big, "L1 SEARCH TEXT \"", 16);
    memset(big + 16, 'x', n);
    static const char tail[] = "\" TEXT {5+}\r\nhello TEXT \"qq";
    memcpy(big + 16 + n, tail, sizeof(tail) - 1);
    cr_assert_eq(audit_tap_client(t, (const uint8_t *)big, 16 + n + sizeof(tail) - 1, 1), 0);
    audit_tap_finish(t, 3);
    cr_assert(strncmp(o.text, "L1|SEARCH|0|", 12) == 0, "%s", o.text);
    audit_tap_free(t);
    free(big);
}

Test(audit_tap, brackets_in_a_tag_and_a_mailbox_name)
{
    /* "[" is an ATOM-CHAR: a tag or a mailbox may hold one without a "]";
       found by the differential test against Dovecot, where the tag took
       the rest of the line and the answer found no command */
    const struct chunk tr[] = {
        {'C', "K4[0 SELECT INBOX (CONDSTORE)\r\nK5 SELECT a[b (CONDSTORE)\r\n"
              "K6 FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM)])\r\n", 0},
        {'S', "K4[0 OK [READ-WRITE] done\r\nK5 NO [NONEXISTENT] no\r\nK6 OK done\r\n", 0},
    };
    check(&default_opts, tr, N(tr),
          "K4[0|SELECT|0|\"mailbox\":\"INBOX\"|OK|READ-WRITE|31|27\n"
          "K5|SELECT|0|\"mailbox\":\"a[b\"|NO|NONEXISTENT|27|24\n"
          "K6|FETCH|0|\"seqset\":\"1\",\"items\":[\"BODY.PEEK[HEADER.FIELDS (FROM)]\"]|OK||46|12\n");
}
