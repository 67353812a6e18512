/* The grammar gate fed client streams as a session would: one chunk, split
 * at every offset, and a byte at a time; each way must give the same
 * verdicts over the same bytes.  The attacks that fool the naive scanner of
 * the audit tap are shown to fool it (audit_tap misses the command) and to
 * be stopped here. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/audit_tap.h"
#include "common/imap_check.h"

#define TEST_LINE_LEN 128
#define TEST_OUT_LEN 16384

static const struct imap_check_opts test_opts = {
    .max_line_len = TEST_LINE_LEN,
    .max_literal_len = 1000,
    .max_arg_literal_len = 100,
    .max_tag_len = 16,
    .max_pending = 8,
    .nonsync = IMAP_CHECK_NONSYNC_PLUS,
    .server_exts = IMAP_CHECK_EXT_ALL,
};

/* A normalised transcript: held bytes join the verdict that ends them, runs
 * of LITERAL and DROP merge, so every split of the input gives one text. */
struct tr {
    char out[TEST_OUT_LEN];
    size_t out_len;
    char held[TEST_LINE_LEN + 1];
    size_t held_len;
    char run_kind;        /* 'L' or 'D' while a run is open, else 0 */
    const char *const *events; /* server events for WAIT: "+" or a tag */
    size_t num_events, next_event;
    int stopped;          /* FATAL, or WAIT with no event left */
    size_t fwd_bytes, lit_bytes, drop_bytes;
};

static void tr_add(struct tr *t, const char *s, size_t n)
{
    cr_assert_lt(t->out_len + n, sizeof(t->out), "transcript overflow");
    memcpy(t->out + t->out_len, s, n);
    t->out_len += n;
    t->out[t->out_len] = '\0';
}

static void tr_str(struct tr *t, const char *s)
{
    tr_add(t, s, strlen(s));
}

static void tr_bytes(struct tr *t, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char buf[8];

        if (p[i] == '\r') {
            tr_str(t, "\\r");
        } else if (p[i] == '\n') {
            tr_str(t, "\\n");
        } else if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] >= 0x7f) {
            snprintf(buf, sizeof(buf), "\\x%02x", (unsigned char)p[i]);
            tr_str(t, buf);
        } else {
            tr_add(t, p + i, 1);
        }
    }
}

static void tr_close_run(struct tr *t)
{
    if (t->run_kind != 0) {
        tr_str(t, "] ");
        t->run_kind = 0;
    }
}

/* tr_verdict records one verdict over p[0..n). */
static void tr_verdict(struct tr *t, struct imap_check *c, enum imap_check_action a,
                       const char *p, size_t n)
{
    const char *reason = imap_check_reason(c);
    char run = a == IMAP_CHECK_LITERAL ? 'L' : a == IMAP_CHECK_DROP ? 'D' : 0;

    if (a == IMAP_CHECK_HOLD) {
        cr_assert_leq(t->held_len + n, TEST_LINE_LEN, "held part over the limit");
        memcpy(t->held + t->held_len, p, n);
        t->held_len += n;
        return;
    }
    if (run != 0) {
        cr_assert_eq(t->held_len, 0, "bytes held across a literal or drop");
        if (t->run_kind != run) {
            tr_close_run(t);
            tr_add(t, &run, 1);
            tr_str(t, "[");
            t->run_kind = run;
        }
        tr_bytes(t, p, n);
        if (run == 'L') {
            t->lit_bytes += n;
        } else {
            t->drop_bytes += n;
        }
        return;
    }
    tr_close_run(t);
    switch (a) {
    case IMAP_CHECK_FORWARD:
        tr_str(t, "F[");
        t->fwd_bytes += t->held_len + n;
        break;
    case IMAP_CHECK_FORWARD_END:
        tr_str(t, "E(");
        tr_str(t, imap_check_uid(c) ? "UID " : "");
        tr_str(t, imap_check_name(c));
        tr_str(t, ")[");
        t->fwd_bytes += t->held_len + n;
        break;
    case IMAP_CHECK_LOCAL:
        tr_str(t, "C(");
        tr_str(t, imap_check_name(c));
        tr_str(t, ")[");
        t->drop_bytes += t->held_len + n;
        break;
    case IMAP_CHECK_REJECT:
        tr_str(t, "R(");
        tr_str(t, reason != NULL ? reason : "?");
        tr_str(t, ")[");
        t->drop_bytes += t->held_len + n;
        break;
    case IMAP_CHECK_FATAL:
        tr_str(t, "X(");
        tr_str(t, reason != NULL ? reason : "?");
        tr_str(t, ")[");
        t->drop_bytes += t->held_len + n;
        break;
    case IMAP_CHECK_WAIT_CONTINUATION:
        cr_assert_eq(n, 0);
        cr_assert_eq(t->held_len, 0);
        cr_assert(imap_check_blocked(c));
        tr_str(t, "W ");
        return;
    default:
        cr_assert_fail("unexpected action %d", (int)a);
    }
    tr_bytes(t, t->held, t->held_len);
    tr_bytes(t, p, n);
    tr_str(t, "] ");
    t->held_len = 0;
}

/* tr_on_wait applies the next server event; returns 0 when none is left. */
static int tr_on_wait(struct tr *t, struct imap_check *c)
{
    const char *ev;

    if (t->next_event >= t->num_events) {
        return 0;
    }
    ev = t->events[t->next_event++];
    if (strcmp(ev, "+") == 0) {
        cr_assert_eq(imap_check_server_continuation(c), 1);
        tr_str(t, "<+> ");
    } else {
        cr_assert_eq(imap_check_server_tagged(c, (const uint8_t *)ev, strlen(ev)), 1);
        tr_str(t, "<");
        tr_str(t, ev);
        tr_str(t, "> ");
    }
    return 1;
}

/* tr_chunk feeds one chunk to the end (or to a stop). */
static void tr_chunk(struct tr *t, struct imap_check *c, const char *p, size_t n)
{
    size_t off = 0;
    int loops = 0;

    while (!t->stopped) {
        size_t used = 0;
        enum imap_check_action a = imap_check_feed(c, &used, (const uint8_t *)p + off, n - off);

        cr_assert_lt(++loops, 100000, "feed does not progress");
        cr_assert_leq(used, n - off);
        tr_verdict(t, c, a, p + off, used);
        off += used;
        if (a == IMAP_CHECK_FATAL) {
            t->stopped = 1;
            break;
        }
        if (a == IMAP_CHECK_WAIT_CONTINUATION) {
            if (!tr_on_wait(t, c)) {
                t->stopped = 1;
            }
            continue;
        }
        if (off == n) {
            break;
        }
        cr_assert_gt(used, 0, "no progress with %s", imap_check_action_name(a));
    }
}

/* tr_run: cut 0 is byte by byte, cut k two chunks at k, cut len one chunk */
static void tr_run(struct tr *t, const struct imap_check_opts *opts, const char *in, size_t len,
                   size_t cut, const char *const *events, size_t num_events)
{
    struct imap_check *c = imap_check_new(opts);

    cr_assert_not_null(c);
    memset(t, 0, sizeof(*t));
    t->events = events;
    t->num_events = num_events;
    if (cut == 0) {
        for (size_t i = 0; i < len && !t->stopped; i++) {
            tr_chunk(t, c, in + i, 1);
        }
    } else {
        tr_chunk(t, c, in, cut);
        tr_chunk(t, c, in + cut, len - cut);
    }
    /* a WAIT is seen only on the next feed: give one with nothing */
    tr_chunk(t, c, in + len, 0);
    tr_close_run(t);
    if (t->held_len > 0) {
        tr_str(t, "H[");
        tr_bytes(t, t->held, t->held_len);
        tr_str(t, "]");
    }
    if (!t->stopped) {
        cr_assert_eq(t->fwd_bytes + t->lit_bytes + t->drop_bytes + t->held_len, len,
                     "bytes lost or doubled");
    }
    imap_check_free(c);
}

/* expect: every split and byte by byte give `want` (trailing space cut). */
static void expect_ev(const struct imap_check_opts *opts, const char *in, size_t len,
                      const char *const *events, size_t num_events, const char *want)
{
    static struct tr t;
    char want_buf[TEST_OUT_LEN];

    snprintf(want_buf, sizeof(want_buf), "%s", want);
    for (size_t cut = 0; cut <= len; cut++) {
        size_t n;

        tr_run(&t, opts, in, len, cut, events, num_events);
        n = t.out_len;
        while (n > 0 && t.out[n - 1] == ' ') {
            t.out[--n] = '\0';
        }
        cr_assert_str_eq(t.out, want_buf, "cut %zu of %s\ngot  %s\nwant %s", cut, in, t.out, want_buf);
    }
}

static void expect(const char *in, const char *want)
{
    expect_ev(&test_opts, in, strlen(in), NULL, 0, want);
}

static void expect_plus(const char *in, const char *want)
{
    static const char *const plus[] = {"+", "+", "+", "+", "+", "+", "+", "+"};
    expect_ev(&test_opts, in, strlen(in), plus, 8, want);
}

/* ---- the naive scanner: what audit_tap records for a stream -------------- */

struct audit_out {
    char text[2048];
    size_t len;
};

static void on_audit(void *ctx, const struct audit_cmd *cmd)
{
    struct audit_out *o = ctx;
    int n = snprintf(o->text + o->len, sizeof(o->text) - o->len, "%s %s;", cmd->tag, cmd->name);
    cr_assert(n > 0 && (size_t)n < sizeof(o->text) - o->len);
    o->len += (size_t)n;
}

static void audit_of(struct audit_out *o, const char *client, const char *server)
{
    static const struct audit_tap_opts opts = {.seqset_max = 16, .max_pending = 64};
    struct audit_tap *t;

    memset(o, 0, sizeof(*o));
    t = audit_tap_new(&opts, on_audit, o);
    cr_assert_not_null(t);
    audit_tap_client(t, (const uint8_t *)client, strlen(client), 1);
    audit_tap_server(t, (const uint8_t *)server, strlen(server), 2);
    audit_tap_finish(t, 3);
    audit_tap_free(t);
}

/* ---- the attacks ------------------------------------------------------------ */

Test(imap_check, attack_unknown_command_with_literal_hides_delete)
{
    /* Dovecot skips the rest of an unknown command's line without reading
     * its literal, then runs B2 DELETE; the naive tap takes B2 as literal */
    const char *in = "B1 XFOO {19+}\r\nB2 DELETE Finance\r\n";
    struct audit_out o;

    audit_of(&o, in, "B1 BAD Unknown command\r\nB2 OK Delete completed.\r\n");
    cr_assert_null(strstr(o.text, "DELETE"), "the naive tap now sees it: %s", o.text);
    /* here: the {19+} of a refused command is data that cannot be placed */
    expect(in, "R(Unknown command)[B1 XFOO ] D[{19+}\\r] "
               "X(Non-synchronizing literal in a rejected command)[\\n]");
    /* with a synchronising literal the line is refused and the DELETE,
     * validated on its own, is forwarded: audit and backend agree */
    expect("B1 XFOO {19}\r\nB2 DELETE Finance\r\n",
           "R(Unknown command)[B1 XFOO ] D[{19}\\r\\n] E(DELETE)[B2 DELETE Finance\\r\\n]");
    /* an allowed vendor command is one line without literals */
    static const char *const allowed[] = {"XFOO"};
    struct imap_check_opts opts = test_opts;
    opts.allowed_commands = allowed;
    opts.num_allowed_commands = 1;
    const char *in2 = "B1 XFOO {19}\r\nB2 DELETE Finance\r\n";
    expect_ev(&opts, in2, strlen(in2), NULL, 0,
              "R(Literal not allowed here)[B1 XFOO {19}] D[\\r\\n] E(DELETE)[B2 DELETE Finance\\r\\n]");
    const char *in3 = "B1 XFOO a \"b c\" (d (e)) NIL\r\n";
    expect_ev(&opts, in3, strlen(in3), NULL, 0, "E(XFOO)[B1 XFOO a \"b c\" (d (e)) NIL\\r\\n]");
}

Test(imap_check, attack_append_announcement_with_bare_lf)
{
    /* Dovecot takes LF as a line end: the 36 bytes after "{36}" LF are the
     * message; the naive tap wants CRLF and reads the body as commands */
    const char *in = "A1 APPEND INBOX {36}\n"
                     "A2 DELETE Finance\r\nA3 NOOP\r\nxxxxx\r\n";
    struct audit_out o;

    audit_of(&o, in, "+ OK\r\nA1 OK Append completed.\r\n");
    cr_assert_not_null(strstr(o.text, "A2 DELETE"), "the naive tap reads the body: %s", o.text);
    /* here: refused without forwarding; what follows is validated as
     * commands (a conforming client sends no data after a BAD) */
    expect(in, "R(Line must end in CRLF)[A1 APPEND INBOX {36}\\n] E(DELETE)[A2 DELETE Finance\\r\\n] "
               "E(NOOP)[A3 NOOP\\r\\n] R(Missing command name)[xxxxx\\r] D[\\n]");
    expect("A1 APPEND INBOX {3+}\nabc\r\n",
           "X(Line must end in CRLF)[A1 APPEND INBOX {3+}\\n]");
}

Test(imap_check, attack_body_line_ending_in_huge_literal)
{
    /* once the tap reads a body as commands, a body line ending in
     * {999999999999} makes it skip everything after it as "literal" */
    const char *in = "A1 APPEND INBOX {25}\n"
                     "Subject: {999999999999}\r\n\r\n"
                     "A2 DELETE Finance\r\n";
    struct audit_out o;

    audit_of(&o, in, "+ OK\r\nA1 OK Append completed.\r\nA2 OK Delete completed.\r\n");
    cr_assert_null(strstr(o.text, "DELETE"), "the naive tap now sees it: %s", o.text);
    expect(in, "R(Line must end in CRLF)[A1 APPEND INBOX {25}\\n] "
               "R(Literal not allowed here)[Subject: {999999999999}] D[\\r\\n] "
               "R(Empty command)[\\r] D[\\n] E(DELETE)[A2 DELETE Finance\\r\\n]");
    /* a well-formed message is counted by its length and never scanned */
    expect_plus("A1 APPEND INBOX {25}\r\nSubject: {999999999999}\r\n\r\nA2 DELETE Finance\r\n",
                "F[A1 APPEND INBOX {25}\\r\\n] W <+> L[Subject: {999999999999}\\r\\n] "
                "E(APPEND)[\\r\\n] E(DELETE)[A2 DELETE Finance\\r\\n]");
}

/* ---- line ends and characters ---------------------------------------------- */

Test(imap_check, crlf_only)
{
    expect("a NOOP\r\nb NOOP\r\n", "E(NOOP)[a NOOP\\r\\n] E(NOOP)[b NOOP\\r\\n]");
    expect("a NOOP\nb NOOP\r\n", "R(Line must end in CRLF)[a NOOP\\n] E(NOOP)[b NOOP\\r\\n]");
    expect("a NOOP\rb NOOP\r\n", "R(Line must end in CRLF)[a NOOP\\rb] D[ NOOP\\r\\n]");
    expect("a SELECT \"IN\nBOX\"\r\nb NOOP\r\n",
           "R(Invalid quoted string)[a SELECT \"IN\\n] R(Invalid tag)[BOX\"] D[\\r\\n] "
           "E(NOOP)[b NOOP\\r\\n]");
    expect("\r\n", "R(Empty command)[\\r] D[\\n]");
    expect("a\r\n", "R(Missing command name)[a\\r] D[\\n]");
    expect("a \r\n", "R(Missing command name)[a \\r\\n]");
}

Test(imap_check, control_and_8bit_bytes)
{
    static const char nul[] = "a SELECT IN\0BOX\r\nb NOOP\r\n";
    expect_ev(&test_opts, nul, sizeof(nul) - 1, NULL, 0,
              "R(Invalid character in command)[a SELECT IN\\x00] D[BOX\\r\\n] E(NOOP)[b NOOP\\r\\n]");
    expect("a SELECT INB\x01OX\r\n", "R(Invalid character in command)[a SELECT INB\\x01] D[OX\\r\\n]");
    expect("a SELECT Entw\xc3\xbcrfe\r\n",
           "R(Invalid character in command)[a SELECT Entw\\xc3] D[\\xbcrfe\\r\\n]");
    /* 8-bit inside a quoted string is allowed (UTF8=ACCEPT), CTL is not */
    expect("a SELECT \"Entw\xc3\xbcrfe\"\r\n", "E(SELECT)[a SELECT \"Entw\\xc3\\xbcrfe\"\\r\\n]");
    expect("a SELECT \"a\tb\"\r\n", "R(Invalid quoted string)[a SELECT \"a\\x09] D[b\"\\r\\n]");
    expect("a SELECT \"a\\\"b\\\\\"\r\n", "E(SELECT)[a SELECT \"a\\\"b\\\\\"\\r\\n]");
    expect("a SELECT \"a\\b\"\r\n", "R(Invalid quoted string)[a SELECT \"a\\b] D[\"\\r\\n]");
    expect("a\x7f NOOP\r\n", "R(Invalid tag)[a\\x7f] D[ NOOP\\r\\n]");
}

Test(imap_check, spaces_are_exact)
{
    expect("a  NOOP\r\n", "R(Missing or extra space)[a  ] D[NOOP\\r\\n]");
    expect("a NOOP \r\n", "R(Missing or extra space)[a NOOP \\r\\n]");
    expect("a SELECT  INBOX\r\n", "R(Missing or extra space)[a SELECT  ] D[INBOX\\r\\n]");
    expect("a FETCH 1 ( FLAGS)\r\n", "R(Missing or extra space)[a FETCH 1 ( FLAGS)] D[\\r\\n]");
    expect("a FETCH 1 (FLAGS )\r\n", "R(Missing or extra space)[a FETCH 1 (FLAGS )] D[\\r\\n]");
    expect("a SELECT\"INBOX\"\r\n", "R(Missing or extra space)[a SELECT\"INBOX\"] D[\\r\\n]");
}

/* ---- tags and names ----------------------------------------------------------- */

Test(imap_check, tags)
{
    expect("a.1-x NOOP\r\n", "E(NOOP)[a.1-x NOOP\\r\\n]");
    /* "]" is an ASTRING-CHAR, but Dovecot 2.3 answers such a tag with an
       untagged BAD that ends nothing: refused before the backend sees it */
    expect("a.1]x NOOP\r\n", "R(Invalid tag)[a.1]] D[x NOOP\\r\\n]");
    expect("x] IDLE\r\n", "R(Invalid tag)[x]] D[ IDLE\\r\\n]");
    expect("a+ NOOP\r\n", "R(Invalid tag)[a+] D[ NOOP\\r\\n]");
    expect("a* NOOP\r\n", "R(Invalid tag)[a*] D[ NOOP\\r\\n]");
    expect("a% NOOP\r\n", "R(Invalid tag)[a%] D[ NOOP\\r\\n]");
    expect("a{ NOOP\r\n", "R(Invalid tag)[a{] D[ NOOP\\r\\n]");
    expect("{3} NOOP\r\n", "R(Invalid tag)[{] D[3} NOOP\\r\\n]");
    expect(" NOOP\r\n", "R(Invalid tag)[ ] D[NOOP\\r\\n]");
    expect("\"a\" NOOP\r\n", "R(Invalid tag)[\"] D[a\" NOOP\\r\\n]");
    expect("0123456789abcdefg NOOP\r\n", "R(Tag too long)[0123456789abcdefg] D[ NOOP\\r\\n]");
    expect("0123456789abcdef NOOP\r\n", "E(NOOP)[0123456789abcdef NOOP\\r\\n]");
}

Test(imap_check, names_case_and_uid)
{
    expect("a nOoP\r\n", "E(NOOP)[a nOoP\\r\\n]");
    expect("a uid fetch 1:* flags\r\n", "E(UID FETCH)[a uid fetch 1:* flags\\r\\n]");
    expect("a UID EXPUNGE 1:3\r\n", "E(UID EXPUNGE)[a UID EXPUNGE 1:3\\r\\n]");
    expect("a EXPUNGE 1:3\r\n", "R(Invalid arguments)[a EXPUNGE 1:3\\r] D[\\n]");
    expect("a UID SELECT INBOX\r\n", "R(Command not allowed after UID)[a UID SELECT ] D[INBOX\\r\\n]");
    expect("a UID UID FETCH 1 FLAGS\r\n", "R(Command not allowed after UID)[a UID UID ] D[FETCH 1 FLAGS\\r\\n]");
    expect("a UID\r\n", "R(Missing command name)[a UID\\r\\n]");
    expect("a {4}\r\n", "R(Literal not allowed here)[a {4}] D[\\r\\n]");
    expect("a \"NOOP\"\r\n", "R(Missing command name)[a \"NOOP\"] D[\\r\\n]");
    expect("a XYZZY\r\n", "R(Unknown command)[a XYZZY\\r] D[\\n]");
    expect("a NOOP extra\r\n", "R(Invalid arguments)[a NOOP extra\\r] D[\\n]");
}

Test(imap_check, refused_and_local_commands)
{
    struct imap_check *c = imap_check_new(&test_opts);
    size_t n;

    expect("a LOGIN bob secret\r\n", "R(Already logged in)[a LOGIN ] D[bob secret\\r\\n]");
    expect("a AUTHENTICATE PLAIN\r\n", "R(Already logged in)[a AUTHENTICATE ] D[PLAIN\\r\\n]");
    expect("a STARTTLS\r\n", "R(STARTTLS not allowed after login)[a STARTTLS\\r] D[\\n]");
    expect("a UNAUTHENTICATE\r\n", "R(UNAUTHENTICATE not supported)[a UNAUTHENTICATE\\r] D[\\n]");
    /* a literal password in a refused LOGIN: sync, no data comes; non-sync: BYE */
    expect("a LOGIN {3}\r\n", "R(Already logged in)[a LOGIN ] D[{3}\\r\\n]");
    expect("a LOGIN {3+}\r\nbob\r\n",
           "R(Already logged in)[a LOGIN ] D[{3+}\\r] X(Non-synchronizing literal in a rejected command)[\\n]");
    expect("a COMPRESS DEFLATE\r\nb NOOP\r\n", "C(COMPRESS)[a COMPRESS DEFLATE\\r\\n] E(NOOP)[b NOOP\\r\\n]");
    expect("a COMPRESS {7}\r\n", "R(Literal not allowed here)[a COMPRESS {7}] D[\\r\\n]");
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"t1 COMPRESS DEFLATE\r\n", 21),
                 IMAP_CHECK_LOCAL);
    cr_assert_eq(imap_check_cmd(c), IMAP_CHECK_CMD_COMPRESS);
    cr_assert_str_eq(imap_check_tag(c, NULL), "t1");
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"t2 LOGIN a b\r\n", 14), IMAP_CHECK_REJECT);
    cr_assert_eq(imap_check_cmd(c), IMAP_CHECK_CMD_REFUSED);
    cr_assert_str_eq(imap_check_tag(c, NULL), "t2");
    cr_assert_str_eq(imap_check_name(c), "LOGIN");
    imap_check_free(c);
}

/* ---- literals ------------------------------------------------------------------ */

Test(imap_check, literal_positions)
{
    expect_plus("a SELECT {5}\r\nINBOX\r\n", "F[a SELECT {5}\\r\\n] W <+> L[INBOX] E(SELECT)[\\r\\n]");
    expect("a SELECT {5+}\r\nINBOX\r\n", "F[a SELECT {5+}\\r\\n] L[INBOX] E(SELECT)[\\r\\n]");
    expect("a FETCH {1}\r\n", "R(Literal not allowed here)[a FETCH {1}] D[\\r\\n]");
    expect("a FETCH 1 {5}\r\n", "R(Literal not allowed here)[a FETCH 1 {5}] D[\\r\\n]");
    expect("a STORE 1 +FLAGS {5}\r\n", "R(Literal not allowed here)[a STORE 1 +FLAGS {5}] D[\\r\\n]");
    expect("a STORE 1 +FLAGS ({5}\r\n", "R(Literal not allowed here)[a STORE 1 +FLAGS ({5}] D[\\r\\n]");
    expect("a STORE 1 {5}\r\n", "R(Literal not allowed here)[a STORE 1 {5}] D[\\r\\n]");
    expect("a NOOP {5}\r\n", "R(Literal not allowed here)[a NOOP {5}] D[\\r\\n]");
    expect("a SELECT INBOX ({5}\r\n", "R(Literal not allowed here)[a SELECT INBOX ({5}] D[\\r\\n]");
    expect("a STATUS INBOX ({8}\r\n", "R(Literal not allowed here)[a STATUS INBOX ({8}] D[\\r\\n]");
    expect("a SELECT x{5}\r\n", "R(Literal not allowed here)[a SELECT x{5}] D[\\r\\n]");
    /* a literal must end its line part */
    expect("a SELECT {5} x\r\n", "R(Line must end in CRLF)[a SELECT {5} ] D[x\\r\\n]");
    expect("a SELECT {5+} x\r\n", "X(Line must end in CRLF)[a SELECT {5+} ]");
    expect("a SELECT {5}\rx\r\n", "R(Line must end in CRLF)[a SELECT {5}\\rx] D[\\r\\n]");
    expect("a SELECT {}\r\n", "R(Invalid literal)[a SELECT {}] D[\\r\\n]");
    expect("a SELECT {+}\r\n", "R(Invalid literal)[a SELECT {+] D[}\\r\\n]");
    expect("a SELECT {1x}\r\n", "R(Invalid literal)[a SELECT {1x] D[}\\r\\n]");
    expect("a SELECT {1++}\r\n", "R(Invalid literal)[a SELECT {1++] D[}\\r] "
           "X(Non-synchronizing literal in a rejected command)[\\n]");
    /* a literal8 only in message data */
    expect("a SELECT ~{5}\r\n", "R(literal8 not allowed here)[a SELECT ~{5}] D[\\r\\n]");
    expect("a SELECT ~x\r\n", "E(SELECT)[a SELECT ~x\\r\\n]");
    /* zero-length literals */
    expect_plus("a SELECT {0}\r\n\r\n", "F[a SELECT {0}\\r\\n] W <+> E(SELECT)[\\r\\n]");
    expect("a SELECT {0+}\r\n\r\n", "F[a SELECT {0+}\\r\\n] E(SELECT)[\\r\\n]");
}

Test(imap_check, literal_sizes)
{
    struct imap_check_opts minus = test_opts, none = test_opts;

    minus.nonsync = IMAP_CHECK_NONSYNC_MINUS;
    minus.max_arg_literal_len = 10000;
    minus.max_line_len = 20000; /* a string literal counts towards the command */
    none.nonsync = IMAP_CHECK_NONSYNC_NONE;
    /* sync over the limit: refused before the "+", no data comes */
    expect("a SELECT {101}\r\nb NOOP\r\n", "R(Literal too large)[a SELECT {101}] D[\\r\\n] E(NOOP)[b NOOP\\r\\n]");
    expect_plus("a SELECT {100}\r\n", "F[a SELECT {100}\\r\\n] W <+>");
    expect("a APPEND INBOX {1001}\r\n", "R(Literal too large)[a APPEND INBOX {1001}] D[\\r\\n]");
    expect_plus("a APPEND INBOX {1000}\r\n", "F[a APPEND INBOX {1000}\\r\\n] W <+>");
    /* more digits than fit */
    expect("a SELECT {99999999999999999999}\r\nb NOOP\r\n",
           "R(Literal too large)[a SELECT {99999999999999999999] D[}\\r\\n] E(NOOP)[b NOOP\\r\\n]");
    expect("a SELECT {99999999999999999999+}\r\nxx\r\n",
           "R(Literal too large)[a SELECT {99999999999999999999] D[+}\\r] "
           "X(Non-synchronizing literal in a rejected command)[\\n]");
    expect("a SELECT {18446744073709551615}\r\n",
           "R(Literal too large)[a SELECT {18446744073709551615] D[}\\r\\n]");
    /* non-sync over the limit: its data follows, BYE */
    expect("a SELECT {101+}\r\n", "X(Literal too large)[a SELECT {101+}]");
    /* LITERAL-: 4096 at most */
    const char *m1 = "a SELECT {4096+}\r\n";
    expect_ev(&minus, m1, strlen(m1), NULL, 0, "F[a SELECT {4096+}\\r\\n]");
    const char *m2 = "a SELECT {4097+}\r\n";
    expect_ev(&minus, m2, strlen(m2), NULL, 0, "X(Non-synchronizing literal too large)[a SELECT {4097+}]");
    const char *m3 = "a SELECT {4097}\r\n";
    static const char *const plus[] = {"+"};
    expect_ev(&minus, m3, strlen(m3), plus, 1, "F[a SELECT {4097}\\r\\n] W <+>");
    const char *n1 = "a SELECT {1+}\r\n";
    expect_ev(&none, n1, strlen(n1), NULL, 0, "X(Non-synchronizing literal not allowed)[a SELECT {1+}]");
}

Test(imap_check, refused_literal_and_continuation)
{
    /* the backend refuses a sync literal: the client's next bytes are a
     * new command; nothing is forwarded while waiting */
    static const char *const no[] = {"a"};
    const char *in = "a APPEND INBOX {5}\r\nb NOOP\r\n";
    expect_ev(&test_opts, in, strlen(in), no, 1,
              "F[a APPEND INBOX {5}\\r\\n] W <a> E(NOOP)[b NOOP\\r\\n]");
    /* accepted: the same bytes are message data */
    expect_plus(in, "F[a APPEND INBOX {5}\\r\\n] W <+> L[b NOO] X(Invalid arguments)[P\\r]");
    /* a tagged answer of another command does not end the wait */
    struct imap_check *c = imap_check_new(&test_opts);
    size_t n;
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)in, strlen(in)), IMAP_CHECK_FORWARD);
    cr_assert_eq(n, 20);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)in + 20, strlen(in) - 20),
                 IMAP_CHECK_WAIT_CONTINUATION);
    cr_assert_eq(n, 0);
    cr_assert(imap_check_blocked(c));
    cr_assert_eq(imap_check_server_tagged(c, (const uint8_t *)"z", 1), 0);
    cr_assert(imap_check_blocked(c));
    cr_assert_eq(imap_check_server_tagged(c, (const uint8_t *)"a", 1), 1);
    cr_assert(!imap_check_blocked(c));
    cr_assert_eq(imap_check_server_continuation(c), 0, "a stray + is not taken");
    imap_check_free(c);
}

Test(imap_check, invalid_after_a_forwarded_part_is_fatal)
{
    expect("a SELECT {5+}\r\nINBOX x\r\n", "F[a SELECT {5+}\\r\\n] L[INBOX] X(Invalid arguments)[ x\\r]");
    expect("a SELECT {5+}\r\nINBOX\n", "F[a SELECT {5+}\\r\\n] L[INBOX] X(Line must end in CRLF)[\\n]");
    expect("a LIST {1+}\r\nx {5}\r\n", "F[a LIST {1+}\\r\\n] L[x] F[ {5}\\r\\n] W");
    expect("a RENAME {1+}\r\nx y{2}\r\n", "F[a RENAME {1+}\\r\\n] L[x] X(Literal not allowed here)[ y{2}]");
}

Test(imap_check, line_length)
{
    char in[512];
    char want[1024];

    /* exactly the limit (CRLF included) passes; one more is refused and
     * nothing more than the limit is ever held */
    memset(in, 0, sizeof(in));
    strcpy(in, "a SELECT ");
    memset(in + 9, 'x', TEST_LINE_LEN - 11);
    strcat(in, "\r\n");
    cr_assert_eq(strlen(in), TEST_LINE_LEN);
    snprintf(want, sizeof(want), "E(SELECT)[%.*s\\r\\n]", TEST_LINE_LEN - 2, in);
    expect(in, want);
    memset(in, 0, sizeof(in));
    strcpy(in, "a SELECT ");
    memset(in + 9, 'x', TEST_LINE_LEN - 5);
    strcat(in, "\r\n");
    snprintf(want, sizeof(want), "R(Line too long)[%.*s] D[xxx\\r\\n]", TEST_LINE_LEN + 1, in);
    expect(in, want);
    /* in a later part of a command: BYE; the limit is on the command, its
       first part (15 bytes) and its literal (1) count */
    memset(in, 0, sizeof(in));
    strcpy(in, "a RENAME {1+}\r\nx ");
    memset(in + 17, 'y', TEST_LINE_LEN);
    strcat(in, "\r\n");
    snprintf(want, sizeof(want), "F[a RENAME {1+}\\r\\n] L[x] X(Line too long)[ %.*s]",
             TEST_LINE_LEN - 16, in + 17);
    expect(in, want);
}

Test(imap_check, line_length_is_per_command)
{
    char in[512];
    char want[1024];

    /* Dovecot counts every part of a command against one line limit and
       answers a command that passes it inside a part with BAD, skipping to
       the next LF: the end of the "{n+}" announcement, whose data it then
       runs as commands.  Two parts of 70 bytes each, a literal between */
    memset(in, 0, sizeof(in));
    strcpy(in, "a SEARCH TEXT \"");
    memset(in + 15, 'x', 46);
    strcat(in, "\" TEXT {5+}\r\nhello TEXT \"");
    memset(in + strlen(in), 'q', 50);
    strcat(in, "\" TEXT {20+}\r\n\r\nB2 DELETE Finance\r\n\r\n");
    expect(in, "F[a SEARCH TEXT \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\" TEXT {5+}\\r\\n] "
               "L[hello] X(Line too long)[ TEXT \"qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq]");
    /* a string literal's data counts: announced past the limit, refused
       before its data is asked for */
    memset(in, 0, sizeof(in));
    strcpy(in, "b SEARCH TEXT \"");
    memset(in + 15, 'x', 80);
    strcat(in, "\" TEXT {40}\r\n");
    snprintf(want, sizeof(want), "R(Line too long)[%.*s] D[\\r\\n]", (int)strlen(in) - 2, in);
    expect(in, want);
    /* ... and its data and the rest of the line reach the limit together */
    expect("c SEARCH TEXT {100+}\r\n"
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "xxxx TEXT y\r\n",
           "F[c SEARCH TEXT {100+}\\r\\n] L[xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx] X(Line too long)[ TEXT y]");
    /* message data does not count: Dovecot streams it */
    memset(in, 0, sizeof(in));
    strcpy(in, "d APPEND INBOX {200+}\r\n");
    memset(in + strlen(in), 'm', 200);
    strcat(in, " {150+}\r\n");
    memset(in + strlen(in), 'n', 150);
    strcat(in, "\r\n");
    cr_assert_lt(strlen(in), sizeof(in));
    snprintf(want, sizeof(want), "F[d APPEND INBOX {200+}\\r\\n] L[%.200s] F[ {150+}\\r\\n] L[%.150s] "
             "E(APPEND)[\\r\\n]", in + 23, in + 232);
    expect(in, want);
}

/* ---- the command grammar ---------------------------------------------------- */

/* valid: each line is forwarded whole as one command */
static void expect_valid(const char *line)
{
    char in[512], want[1024];
    struct imap_check *c;
    size_t n;
    char name[64];

    snprintf(in, sizeof(in), "%s\r\n", line);
    c = imap_check_new(&test_opts);
    cr_assert_not_null(c);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)in, strlen(in)), IMAP_CHECK_FORWARD_END,
                 "%s: %s", line, imap_check_reason(c));
    snprintf(name, sizeof(name), "%s", imap_check_name(c));
    imap_check_free(c);
    snprintf(want, sizeof(want), "E(%s%s)[%s\\r\\n]", strstr(line, " UID ") == line + 1 ? "UID " : "",
             name, line);
    if (strncasecmp(line + 2, "UID ", 4) == 0) {
        snprintf(want, sizeof(want), "E(UID %s)[%s\\r\\n]", name, line);
    }
    expect(in, want);
}

/* invalid: the first verdict is REJECT with this reason */
static void expect_invalid(const char *line, const char *reason)
{
    char in[512];
    struct imap_check *c = imap_check_new(&test_opts);
    size_t n, off = 0;
    enum imap_check_action a;

    snprintf(in, sizeof(in), "%s\r\n", line);
    do {
        a = imap_check_feed(c, &n, (const uint8_t *)in + off, strlen(in) - off);
        off += n;
    } while (a == IMAP_CHECK_HOLD && off < strlen(in));
    cr_assert_eq(a, IMAP_CHECK_REJECT, "%s: %s", line, imap_check_action_name(a));
    cr_assert_str_eq(imap_check_reason(c), reason, "%s: got %s", line, imap_check_reason(c));
    imap_check_free(c);
}

Test(imap_check, simple_commands)
{
    static const char *const ok[] = {
        "a CAPABILITY", "a NOOP", "a CHECK", "a CLOSE", "a UNSELECT", "a EXPUNGE", "a NAMESPACE",
        "a LOGOUT", "a CREATE Archive/2024", "a CREATE \"a b\" (USE (\\Archive))",
        "a DELETE Finance", "a DELETE \"\"", "a RENAME a b", "a RENAME \"a\" \"b c\"",
        "a SUBSCRIBE INBOX.x", "a UNSUBSCRIBE x]y", "a SELECT INBOX", "a EXAMINE INBOX",
        "a SELECT INBOX (CONDSTORE)", "a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211 (1:5 1:5)))",
        "a STATUS INBOX (MESSAGES UNSEEN UIDNEXT)", "a COPY 1:3,5 Trash", "a MOVE * \"Junk\"",
        "a UID COPY 1:* Trash", "a UID MOVE $ x", "a UID EXPUNGE 3000:3002", "a ENABLE QRESYNC",
        "a ENABLE CONDSTORE UTF8=ACCEPT", "a GETQUOTA \"\"", "a GETQUOTAROOT INBOX",
        "a SETQUOTA \"\" (STORAGE 512)", "a SETQUOTA x ()", "a GETACL INBOX",
        "a SETACL INBOX bob +lrswi", "a DELETEACL INBOX bob", "a LISTRIGHTS INBOX bob",
        "a MYRIGHTS INBOX", "a ID NIL", "a ID (\"name\" \"mbsync\" \"version\" NIL)", "a ID ()",
        "a LSUB \"\" *", "a LSUB \"\" %/x",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        expect_valid(ok[i]);
    }
    expect_invalid("a CREATE", IMAP_CHECK_E_ARGS);
    expect_invalid("a CREATE (x)", IMAP_CHECK_E_ARGS);
    expect_invalid("a RENAME a", IMAP_CHECK_E_ARGS);
    expect_invalid("a SELECT *", IMAP_CHECK_E_ARGS);
    expect_invalid("a SELECT a%", IMAP_CHECK_E_ARGS);
    expect_invalid("a STATUS INBOX MESSAGES", IMAP_CHECK_E_ARGS);
    expect_invalid("a STATUS INBOX (MESSAGES", IMAP_CHECK_E_ARGS);
    expect_invalid("a STATUS INBOX (MESSAGES))", IMAP_CHECK_E_ARGS);
    expect_invalid("a COPY x Trash", IMAP_CHECK_E_ARGS);
    expect_invalid("a COPY \"1\" Trash", IMAP_CHECK_E_ARGS);
    expect_invalid("a ENABLE", IMAP_CHECK_E_ARGS);
    expect_invalid("a ENABLE \"X\"", IMAP_CHECK_E_ARGS);
    expect_invalid("a ID (\"name\")", IMAP_CHECK_E_ARGS);
    expect_invalid("a ID (name \"x\")", IMAP_CHECK_E_ARGS);
    expect_invalid("a ID", IMAP_CHECK_E_ARGS);
    expect_invalid("a SETQUOTA x (STORAGE x)", IMAP_CHECK_E_ARGS);
    expect_invalid("a SETACL INBOX bob", IMAP_CHECK_E_ARGS);
    expect_invalid("a LSUB \"\"", IMAP_CHECK_E_ARGS);
    expect_invalid("a IDLE x", IMAP_CHECK_E_ARGS);
    expect_invalid("a SELECT INBOX (CONDSTORE) x", IMAP_CHECK_E_ARGS);
    expect_invalid("a SELECT INBOX ((((((((((((((((x))))))))))))))))", IMAP_CHECK_E_DEPTH);
}

Test(imap_check, string_commands_take_literals)
{
    expect_plus("a ID ({4}\r\nname {6}\r\nmbsync)\r\n",
                "F[a ID ({4}\\r\\n] W <+> L[name] F[ {6}\\r\\n] W <+> L[mbsync] E(ID)[)\\r\\n]");
    expect("a RENAME {1+}\r\na {1+}\r\nb\r\n",
           "F[a RENAME {1+}\\r\\n] L[a] F[ {1+}\\r\\n] L[b] E(RENAME)[\\r\\n]");
    expect("a SETACL {1+}\r\nx {3+}\r\nbob lr\r\n",
           "F[a SETACL {1+}\\r\\n] L[x] F[ {3+}\\r\\n] L[bob] E(SETACL)[ lr\\r\\n]");
    expect("a UID COPY 1 {5+}\r\nTrash\r\n", "F[a UID COPY 1 {5+}\\r\\n] L[Trash] E(UID COPY)[\\r\\n]");
    expect("a STATUS {1+}\r\nx (MESSAGES)\r\n",
           "F[a STATUS {1+}\\r\\n] L[x] E(STATUS)[ (MESSAGES)\\r\\n]");
    expect("a GETQUOTA {1+}\r\nx\r\n", "F[a GETQUOTA {1+}\\r\\n] L[x] E(GETQUOTA)[\\r\\n]");
    expect_invalid("a SETQUOTA x ({7}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a ENABLE {4}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a ID NIL {4}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a COPY {1}", IMAP_CHECK_E_LITERAL_HERE);
}

Test(imap_check, list)
{
    static const char *const ok[] = {
        "a LIST \"\" *", "a LIST \"\" %", "a LIST INBOX/ x*%]", "a LIST \"\" (INBOX Drafts*)",
        "a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" *",
        "a LIST \"\" * RETURN (STATUS (MESSAGES UNSEEN) SPECIAL-USE CHILDREN)",
        "a LIST () \"\" \"%\" RETURN ()",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        expect_valid(ok[i]);
    }
    expect("a LIST {1+}\r\nx {1+}\r\n*\r\n", "F[a LIST {1+}\\r\\n] L[x] F[ {1+}\\r\\n] L[*] E(LIST)[\\r\\n]");
    expect_invalid("a LIST \"\"", IMAP_CHECK_E_ARGS);
    expect_invalid("a LIST \"\" * RETURN", IMAP_CHECK_E_ARGS);
    expect_invalid("a LIST \"\" * STATUS", IMAP_CHECK_E_ARGS);
    expect_invalid("a LIST \"\" ()", IMAP_CHECK_E_ARGS);
    expect_invalid("a LIST ({3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a LIST \"\" * RETURN ({3}", IMAP_CHECK_E_LITERAL_HERE);
}

Test(imap_check, append_multiappend_catenate_replace)
{
    expect_plus("a APPEND INBOX (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {3}\r\nabc\r\n",
                "F[a APPEND INBOX (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {3}\\r\\n] W <+> L[abc] "
                "E(APPEND)[\\r\\n]");
    /* MULTIAPPEND: several messages */
    expect("a APPEND INBOX {2+}\r\nab (\\Draft) {2+}\r\ncd \"01-Jan-2024 10:00:00 +0000\" ~{2+}\r\nef\r\n",
           "F[a APPEND INBOX {2+}\\r\\n] L[ab] F[ (\\Draft) {2+}\\r\\n] L[cd] "
           "F[ \"01-Jan-2024 10:00:00 +0000\" ~{2+}\\r\\n] L[ef] E(APPEND)[\\r\\n]");
    /* BINARY literal8 as message data */
    static const char bin[] = "a APPEND INBOX ~{3+}\r\n\x00\r\n\r\n";
    expect_ev(&test_opts, bin, sizeof(bin) - 1, NULL, 0,
              "F[a APPEND INBOX ~{3+}\\r\\n] L[\\x00\\r\\n] E(APPEND)[\\r\\n]");
    /* CATENATE (RFC 4469) */
    expect("a APPEND Drafts CATENATE (URL \"/Drafts;UIDVALIDITY=385759045/;UID=20\" TEXT {3+}\r\nabc)\r\n",
           "F[a APPEND Drafts CATENATE (URL \"/Drafts;UIDVALIDITY=385759045/;UID=20\" TEXT {3+}\\r\\n] "
           "L[abc] E(APPEND)[)\\r\\n]");
    expect("a APPEND Drafts CATENATE (TEXT ~{1+}\r\nx URL {3+}\r\n/x;)\r\n",
           "F[a APPEND Drafts CATENATE (TEXT ~{1+}\\r\\n] L[x] F[ URL {3+}\\r\\n] L[/x;] E(APPEND)[)\\r\\n]");
    /* REPLACE (RFC 8508): one message */
    expect("a UID REPLACE 17 Drafts (\\Draft) {3+}\r\nabc\r\n",
           "F[a UID REPLACE 17 Drafts (\\Draft) {3+}\\r\\n] L[abc] E(UID REPLACE)[\\r\\n]");
    expect("a REPLACE 1 Drafts {1+}\r\na {1+}\r\nb\r\n",
           "F[a REPLACE 1 Drafts {1+}\\r\\n] L[a] X(Literal not allowed here)[ {1+}]");
    expect_invalid("a APPEND INBOX", IMAP_CHECK_E_ARGS);
    expect_invalid("a APPEND INBOX (\\Seen)", IMAP_CHECK_E_ARGS);
    expect_invalid("a APPEND INBOX abc", IMAP_CHECK_E_ARGS);
    expect_invalid("a APPEND INBOX (\\Seen) (\\Seen) {1}", IMAP_CHECK_E_ARGS);
    expect_invalid("a APPEND INBOX (\"x\") {1}", IMAP_CHECK_E_ARGS);
    expect_invalid("a APPEND INBOX ({1}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a APPEND INBOX CATENATE (URL", IMAP_CHECK_E_ARGS);
    expect_invalid("a APPEND INBOX CATENATE ()", IMAP_CHECK_E_ARGS);
    expect_invalid("a APPEND INBOX CATENATE (TEXT \"abc\")", IMAP_CHECK_E_ARGS);
    expect_invalid("a APPEND ~{5}", IMAP_CHECK_E_LITERAL8_HERE);
}

Test(imap_check, append_flags_and_date_as_the_backend_reads_them)
{
    /* Dovecot 2.3 parses an APPEND's flags and date before the message and
       answers BAD for one it cannot parse, skipping to the next LF: the end
       of "{n+}", so the message would run as commands there.  Only what it
       parses passes; found by the differential test against Dovecot */
    expect_plus("a APPEND INBOX \" 1-Jan-2024 10:00:00 +0000\" {3}\r\n",
                "F[a APPEND INBOX \" 1-Jan-2024 10:00:00 +0000\" {3}\\r\\n] W <+>");
    expect_plus("a APPEND INBOX \"9-dec-2024 23:59:60 -1200\" {3}\r\n",
                "F[a APPEND INBOX \"9-dec-2024 23:59:60 -1200\" {3}\\r\\n] W <+>");
    static const char *const dates[] = {
        "01-Jan~-2026 10:00:00 +0000", "01-Jan-99999 10:00:00 +0000", "01-Jan-2026  10:00:00 +0000",
        "", "x", "01-Foo-2026 10:00:00 +0000", "00-Jan-2026 10:00:00 +0000",
        "32-Jan-2026 10:00:00 +0000", "01-Jan-2026 24:00:00 +0000", "01-Jan-2026 10:00:00 0000",
        "01-Jan-2026 10:00:00 +00a0", "01-Jan-2026 10:0:00 +0000", "01-Jan-2026 10:00:00 +0060",
        "01-Jan-2026 10:00:00 +0000 ",
    };
    char line[128];
    for (size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++) {
        snprintf(line, sizeof(line), "a APPEND INBOX \"%s\" {3}", dates[i]);
        expect_invalid(line, IMAP_CHECK_E_ARGS);
    }
    expect("a APPEND INBOX \"01-Jan~-2026 10:00:00 +0000\" {11+}\r\n\r\nH1 NOOP\r\n\r\n",
           "R(Invalid arguments)[a APPEND INBOX \"01-Jan~-2026 10:00:00 +0000\"] D[ {11+}\\r] "
           "X(Non-synchronizing literal in a rejected command)[\\n]");
    expect_invalid("a APPEND INBOX (\\Recent) {3}", IMAP_CHECK_E_ARGS);
    expect_invalid("a APPEND INBOX (\\Seen \\Foo) {3}", IMAP_CHECK_E_ARGS);
    expect_invalid("a APPEND INBOX (\\*) {3}", IMAP_CHECK_E_ARGS);
    expect_plus("a APPEND INBOX (\\seen \\Answered \\FLAGGED \\Deleted \\Draft $Junk kw) {3}\r\n",
                "F[a APPEND INBOX (\\seen \\Answered \\FLAGGED \\Deleted \\Draft $Junk kw) {3}\\r\\n] "
                "W <+>");
}

Test(imap_check, search_sort_thread_esearch)
{
    static const char *const ok[] = {
        "a SEARCH ALL", "a SEARCH 1:5,7 UNSEEN", "a UID SEARCH UID 1:*",
        "a SEARCH CHARSET UTF-8 FROM \"bob\" SUBJECT hello",
        "a SEARCH OR (FROM a TO b) NOT SEEN", "a SEARCH HEADER X-Spam yes",
        "a SEARCH SINCE 1-Feb-2024 BEFORE \"10-Feb-2024\" LARGER 100 SMALLER 9000",
        "a SEARCH KEYWORD $Forwarded UNKEYWORD Junk", "a SEARCH RETURN (MIN MAX COUNT) UNSEEN",
        "a SEARCH RETURN () ALL", "a SEARCH MODSEQ 620162338",
        "a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338", "a SEARCH $", "a SEARCH YOUNGER 3600",
        "a SEARCH (SEEN (DELETED))", "a SORT (REVERSE ARRIVAL) UTF-8 ALL",
        "a UID SORT RETURN (ALL) (DATE) US-ASCII SINCE 1-Feb-2024",
        "a THREAD REFERENCES UTF-8 ALL", "a UID THREAD ORDEREDSUBJECT UTF-8 SUBJECT x",
        "a ESEARCH IN (PERSONAL) RETURN (COUNT) UNSEEN",
        "a ESEARCH IN (SUBTREE \"Lists\" MAILBOXES (a \"b\")) CHARSET UTF-8 ALL",
        "a SEARCH TEXT \"\\\"quoted\\\"\"",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        expect_valid(ok[i]);
    }
    /* astring values take literals, charset too */
    expect("a SEARCH CHARSET {5+}\r\nUTF-8 SUBJECT {3+}\r\nabc FROM x\r\n",
           "F[a SEARCH CHARSET {5+}\\r\\n] L[UTF-8] F[ SUBJECT {3+}\\r\\n] L[abc] E(SEARCH)[ FROM x\\r\\n]");
    expect("a SEARCH HEADER {1+}\r\nX {1+}\r\ny\r\n",
           "F[a SEARCH HEADER {1+}\\r\\n] L[X] F[ {1+}\\r\\n] L[y] E(SEARCH)[\\r\\n]");
    expect_invalid("a SEARCH", IMAP_CHECK_E_ARGS);
    expect_invalid("a SEARCH CHARSET UTF-8", IMAP_CHECK_E_ARGS);
    expect_invalid("a SEARCH SEEN {3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a SEARCH BEFORE {3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a SEARCH LARGER {3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a SEARCH KEYWORD {3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a SEARCH UID {3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a SEARCH {3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a SEARCH FOO", IMAP_CHECK_E_SEARCH_KEY);
    expect_invalid("a SEARCH NOT", IMAP_CHECK_E_ARGS);
    expect_invalid("a SEARCH OR SEEN", IMAP_CHECK_E_ARGS);
    expect_invalid("a SEARCH HEADER x", IMAP_CHECK_E_ARGS);
    expect_invalid("a SEARCH LARGER x", IMAP_CHECK_E_ARGS);
    expect_invalid("a SEARCH ()", IMAP_CHECK_E_ARGS);
    expect_invalid("a SEARCH RETURN ({3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a SORT ARRIVAL UTF-8 ALL", IMAP_CHECK_E_ARGS);
    expect_invalid("a SORT (ARRIVAL) ALL", IMAP_CHECK_E_ARGS);
    expect_invalid("a SORT ({3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a THREAD {3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a THREAD REFERENCES UTF-8", IMAP_CHECK_E_ARGS);
    expect_invalid("a ESEARCH IN ({3}", IMAP_CHECK_E_LITERAL_HERE);
}

Test(imap_check, fetch)
{
    static const char *const ok[] = {
        "a FETCH 1 ALL", "a FETCH 1:* FAST", "a FETCH 1 FULL", "a FETCH 1 FLAGS",
        "a FETCH 1 (FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)",
        "a FETCH 1 BODY[]", "a FETCH 1 BODY.PEEK[]<0.1024>", "a FETCH 1 (BODY[1.2.MIME] BINARY[1]<5>)",
        "a FETCH 1 (BODY.PEEK[HEADER.FIELDS (From To \"Subject\")])",
        "a FETCH 1 BODY[1.HEADER.FIELDS.NOT (X-Spam)]<0.100>",
        "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)", "a FETCH 1 BINARY.SIZE[2]",
        "a FETCH 1 (MODSEQ EMAILID)",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        expect_valid(ok[i]);
    }
    /* header-list astrings take literals */
    expect("a FETCH 1 (BODY[HEADER.FIELDS ({4+}\r\nFrom)])\r\n",
           "F[a FETCH 1 (BODY[HEADER.FIELDS ({4+}\\r\\n] L[From] E(FETCH)[)])\\r\\n]");
    expect_invalid("a FETCH 1 BODY[HEADER.FIELDS {4}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a FETCH 1 BODY[HEADER.FIELDS ()]", IMAP_CHECK_E_ARGS);
    expect_invalid("a FETCH 1 BODY[HEADER.FIELDS (From)", IMAP_CHECK_E_FETCH_ITEM);
    expect_invalid("a FETCH 1 BODY[HEADER.FIELDS (From)] ", IMAP_CHECK_E_SPACE);
    expect_invalid("a FETCH 1 BODY[HEADER", IMAP_CHECK_E_FETCH_ITEM);
    expect_invalid("a FETCH 1 BODY[]<>", IMAP_CHECK_E_FETCH_ITEM);
    expect_invalid("a FETCH 1 BODY[]<1.>", IMAP_CHECK_E_FETCH_ITEM);
    expect_invalid("a FETCH 1 BODY[]x", IMAP_CHECK_E_FETCH_ITEM);
    expect_invalid("a FETCH 1 FOO[]", IMAP_CHECK_E_FETCH_ITEM);
    expect_invalid("a FETCH 1 BODY[a b]", IMAP_CHECK_E_FETCH_ITEM);
    expect_invalid("a FETCH 1 ()", IMAP_CHECK_E_ARGS);
    expect_invalid("a FETCH 1 \"FLAGS\"", IMAP_CHECK_E_FETCH_ITEM);
    expect_invalid("a FETCH 1 {5}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a FETCH 1 (FLAGS {5}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a FETCH 1 FLAGS ({5}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a FETCH FLAGS", IMAP_CHECK_E_ARGS);
}

Test(imap_check, store)
{
    static const char *const ok[] = {
        "a STORE 1 +FLAGS (\\Seen)", "a STORE 1:* -FLAGS.SILENT (\\Seen \\Deleted $Junk)",
        "a STORE 1 FLAGS ()", "a UID STORE 5 +FLAGS \\Seen \\Flagged",
        "a STORE 1 (UNCHANGEDSINCE 12345) +FLAGS (\\Seen)", "a STORE 1 FLAGS \\draft \\ANSWERED",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        expect_valid(ok[i]);
    }
    expect_invalid("a STORE 1 +FLAGS", IMAP_CHECK_E_ARGS);
    expect_invalid("a STORE 1 +FLAGS (\"x\")", IMAP_CHECK_E_ARGS);
    expect_invalid("a STORE 1 +FLAGS \"x\"", IMAP_CHECK_E_ARGS);
    expect_invalid("a STORE 1 +FLAGS (\\Seen) x", IMAP_CHECK_E_ARGS);
    expect_invalid("a STORE 1 +FLAGS {3}", IMAP_CHECK_E_LITERAL_HERE);
    expect_invalid("a STORE 1 +FLAGS \\Seen {3}", IMAP_CHECK_E_LITERAL_HERE);
    /* \\* is no flag of a command; other system flags are Dovecot's BAD */
    expect_invalid("a STORE 1 FLAGS \\*", IMAP_CHECK_E_ARGS);
    expect_invalid("a STORE 1 FLAGS (\\Recent)", IMAP_CHECK_E_ARGS);
}

Test(imap_check, metadata)
{
    static const char *const ok[] = {
        "a GETMETADATA INBOX /private/comment",
        "a GETMETADATA (MAXSIZE 1024 DEPTH infinity) \"\" (/private/note /private/x)",
        "a SETMETADATA INBOX (/private/comment \"hello\")",
        "a SETMETADATA INBOX (/private/comment NIL /private/y \"y\")",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        expect_valid(ok[i]);
    }
    /* values may be literals or literal8 (RFC 5464) */
    expect("a SETMETADATA INBOX (/private/comment {5+}\r\nhello /private/y ~{2+}\r\n\x01\x02)\r\n",
           "F[a SETMETADATA INBOX (/private/comment {5+}\\r\\n] L[hello] "
           "F[ /private/y ~{2+}\\r\\n] L[\\x01\\x02] E(SETMETADATA)[)\\r\\n]");
    expect_invalid("a SETMETADATA INBOX (/private/comment)", IMAP_CHECK_E_ARGS);
    expect_invalid("a SETMETADATA INBOX (~{3}", IMAP_CHECK_E_LITERAL8_HERE);
    expect_invalid("a GETMETADATA INBOX ~{3}", IMAP_CHECK_E_LITERAL8_HERE);
    expect_invalid("a GETMETADATA ({3}", IMAP_CHECK_E_LITERAL_HERE);
}

/* ---- IDLE, tags in use, the audit's view ------------------------------------- */

Test(imap_check, idle_then_only_done)
{
    static const char *const plus[] = {"+"};
    static const char *const refused[] = {"i"};
    const char *in = "i IDLE\r\nb NOOP\r\ndone\r\nc NOOP\r\n";

    /* after "+", only DONE; anything else is refused, IDLE goes on */
    expect_ev(&test_opts, in, strlen(in), plus, 1,
              "E(IDLE)[i IDLE\\r\\n] W <+> R(Expected DONE)[b] D[ NOOP\\r\\n] "
              "E(DONE)[done\\r\\n] E(NOOP)[c NOOP\\r\\n]");
    /* refused IDLE: lines are commands again */
    const char *in2 = "i IDLE\r\nDONE\r\nc NOOP\r\n";
    expect_ev(&test_opts, in2, strlen(in2), refused, 1,
              "E(IDLE)[i IDLE\\r\\n] W <i> R(Missing command name)[DONE\\r] D[\\n] E(NOOP)[c NOOP\\r\\n]");
    const char *in3 = "i IDLE\r\nDONE x\r\nDONE\n";
    expect_ev(&test_opts, in3, strlen(in3), plus, 1,
              "E(IDLE)[i IDLE\\r\\n] W <+> R(Expected DONE)[DONE ] D[x\\r\\n] R(Expected DONE)[DONE\\n]");

    /* the DONE line carries the IDLE's tag; the backend's tagged answer
     * while IDLE runs ends it */
    struct imap_check *c = imap_check_new(&test_opts);
    size_t n;
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"i IDLE\r\n", 8), IMAP_CHECK_FORWARD_END);
    cr_assert_eq(imap_check_cmd(c), IMAP_CHECK_CMD_IDLE);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"DONE\r\n", 6), IMAP_CHECK_WAIT_CONTINUATION);
    cr_assert_eq(imap_check_server_continuation(c), 1);
    cr_assert(!imap_check_blocked(c));
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"DONE\r\n", 6), IMAP_CHECK_FORWARD_END);
    cr_assert_eq(imap_check_cmd(c), IMAP_CHECK_CMD_DONE);
    cr_assert_str_eq(imap_check_tag(c, NULL), "i");
    cr_assert_str_eq(imap_check_name(c), "DONE");
    cr_assert_eq(imap_check_server_tagged(c, (const uint8_t *)"i", 1), 0);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"j IDLE\r\n", 8), IMAP_CHECK_FORWARD_END);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"", 0), IMAP_CHECK_WAIT_CONTINUATION);
    cr_assert_eq(imap_check_server_continuation(c), 1);
    cr_assert_eq(imap_check_server_tagged(c, (const uint8_t *)"j", 1), 1, "server ended IDLE");
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"k NOOP\r\n", 8), IMAP_CHECK_FORWARD_END);
    /* a partial DONE held when the server ends IDLE is finished as DONE */
    cr_assert_eq(imap_check_server_tagged(c, (const uint8_t *)"k", 1), 0);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"l IDLE\r\n", 8), IMAP_CHECK_FORWARD_END);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"", 0), IMAP_CHECK_WAIT_CONTINUATION);
    cr_assert_eq(imap_check_server_continuation(c), 1);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"DO", 2), IMAP_CHECK_HOLD);
    cr_assert_eq(imap_check_server_tagged(c, (const uint8_t *)"l", 1), 1);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"NE\r\nm NOOP\r\n", 12), IMAP_CHECK_FORWARD_END);
    cr_assert_eq(n, 4);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"m NOOP\r\n", 8), IMAP_CHECK_FORWARD_END);
    cr_assert_str_eq(imap_check_name(c), "NOOP");
    imap_check_free(c);
}

Test(imap_check, tags_in_use_and_pending_limit)
{
    struct imap_check *c = imap_check_new(&test_opts);
    size_t n;
    char line[32];

    /* a tag is in use from its first forwarded byte to its tagged answer:
     * a duplicate could make a refused literal look accepted */
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"a NOOP\r\n", 8), IMAP_CHECK_FORWARD_END);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"a APPEND x {5}\r\n", 16), IMAP_CHECK_REJECT);
    cr_assert_str_eq(imap_check_reason(c), IMAP_CHECK_E_TAG_IN_USE);
    cr_assert_str_eq(imap_check_tag(c, NULL), "a");
    cr_assert_eq(n, 2);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"APPEND x {5}\r\n", 14), IMAP_CHECK_DROP);
    cr_assert_eq(n, 14);
    cr_assert_eq(imap_check_server_tagged(c, (const uint8_t *)"a", 1), 0);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"a NOOP\r\n", 8), IMAP_CHECK_FORWARD_END);
    cr_assert_eq(imap_check_server_tagged(c, (const uint8_t *)"a", 1), 0);
    /* at most max_pending (8) unanswered */
    for (int i = 0; i < 8; i++) {
        snprintf(line, sizeof(line), "t%d NOOP\r\n", i);
        cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)line, strlen(line)),
                     IMAP_CHECK_FORWARD_END);
    }
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"t9 NOOP\r\n", 9), IMAP_CHECK_REJECT);
    cr_assert_str_eq(imap_check_reason(c), IMAP_CHECK_E_PENDING);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"NOOP\r\n", 6), IMAP_CHECK_DROP);
    cr_assert_eq(imap_check_server_tagged(c, (const uint8_t *)"t3", 2), 0);
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"t9 NOOP\r\n", 9), IMAP_CHECK_FORWARD_END);
    imap_check_free(c);
}

Test(imap_check, fatal_is_final)
{
    struct imap_check *c = imap_check_new(&test_opts);
    size_t n;

    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"a SELECT {9999+}\r\n", 18), IMAP_CHECK_FATAL);
    cr_assert_str_eq(imap_check_reason(c), IMAP_CHECK_E_LITERAL_SIZE);
    cr_assert(imap_check_blocked(c));
    cr_assert_eq(imap_check_feed(c, &n, (const uint8_t *)"b NOOP\r\n", 8), IMAP_CHECK_FATAL);
    cr_assert_eq(n, 8);
    cr_assert_eq(imap_check_server_continuation(c), 0);
    imap_check_free(c);
}

Test(imap_check, names_for_logs)
{
    cr_assert_str_eq(imap_check_action_name(IMAP_CHECK_WAIT_CONTINUATION), "WAIT_CONTINUATION");
    cr_assert_str_eq(imap_check_action_name(IMAP_CHECK_FATAL), "FATAL");
    cr_assert_str_eq(imap_check_action_name((enum imap_check_action)99), "?");
    cr_assert_str_eq(imap_check_cmd_name(IMAP_CHECK_CMD_VENDOR), "VENDOR");
    cr_assert_str_eq(imap_check_cmd_name((enum imap_check_cmd)99), "?");
}

Test(imap_check, options_are_checked)
{
    struct imap_check_opts o = test_opts;

    o.max_line_len = 15;
    cr_assert_null(imap_check_new(&o));
    o = test_opts;
    o.max_tag_len = IMAP_CHECK_TAG_MAX_LEN + 1;
    cr_assert_null(imap_check_new(&o));
    o = test_opts;
    o.max_pending = IMAP_CHECK_MAX_PENDING + 1;
    cr_assert_null(imap_check_new(&o));
    o = test_opts;
    o.num_allowed_commands = 1;
    cr_assert_null(imap_check_new(&o));
    imap_check_free(NULL);
}

/* A session's worth of valid and invalid commands, pipelined: every split
 * offset and byte by byte give the same verdicts. */
Test(imap_check, pipelined_stream_every_split)
{
    static const char *const ev[] = {"+", "c", "+"};
    const char *in = "a SELECT INBOX\r\n"
                     "b UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From {4+}\r\nDate)])\r\n"
                     "c APPEND Sent {3}\r\n"
                     "d BOGUS\r\n"
                     "e APPEND Sent (\\Seen) {4}\r\nabcd\r\n"
                     "f STORE 1 +FLAGS ({3}\r\n"
                     "g LOGOUT\r\n";

    expect_ev(&test_opts, in, strlen(in), ev, 3,
              "E(SELECT)[a SELECT INBOX\\r\\n] "
              "F[b UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From {4+}\\r\\n] L[Date] "
              "E(UID FETCH)[)])\\r\\n] "
              "F[c APPEND Sent {3}\\r\\n] W <+> L[d B] X(Invalid arguments)[OGUS\\r]");
    static const char *const ev2[] = {"c", "+"};
    expect_ev(&test_opts, in, strlen(in), ev2, 2,
              "E(SELECT)[a SELECT INBOX\\r\\n] "
              "F[b UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From {4+}\\r\\n] L[Date] "
              "E(UID FETCH)[)])\\r\\n] "
              "F[c APPEND Sent {3}\\r\\n] W <c> R(Unknown command)[d BOGUS\\r] D[\\n] "
              "F[e APPEND Sent (\\Seen) {4}\\r\\n] W <+> L[abcd] E(APPEND)[\\r\\n] "
              "R(Literal not allowed here)[f STORE 1 +FLAGS ({3}] D[\\r\\n] E(LOGOUT)[g LOGOUT\\r\\n]");
}

/* ---- what the backend supports ------------------------------------------------- */

Test(imap_check, commands_the_backend_lacks)
{
    struct imap_check_opts o = test_opts;
    const char *caps = "IMAP4rev1 LITERAL+ SASL-IR IDLE ID UIDPLUS";

    imap_check_opts_from_capability(&o, caps, strlen(caps));
    cr_assert_eq(o.nonsync, IMAP_CHECK_NONSYNC_PLUS);
    cr_assert_eq(o.server_exts, IMAP_CHECK_EXT_IDLE | IMAP_CHECK_EXT_ID | IMAP_CHECK_EXT_UIDPLUS);
    /* the XFOO evasion through a real extension the backend does not have:
     * it would skip the line unread and run B2 */
    const char *in = "B1 SETMETADATA INBOX (/private/x {19+}\r\nB2 DELETE Finance\r\n)\r\n";
    expect_ev(&o, in, strlen(in), NULL, 0,
              "R(Command not supported by the server)[B1 SETMETADATA ] D[INBOX (/private/x {19+}\\r] "
              "X(Non-synchronizing literal in a rejected command)[\\n]");
    const char *in2 = "a MOVE 1 x\r\na UID EXPUNGE 1\r\n";
    expect_ev(&o, in2, strlen(in2), NULL, 0,
              "R(Command not supported by the server)[a MOVE ] D[1 x\\r\\n] E(UID EXPUNGE)[a UID EXPUNGE 1\\r\\n]");
    const char *in3 = "a APPEND x ~{1}\r\nb APPEND x CATENATE (TEXT {1}\r\nc APPEND x {1+}\r\ny {1}\r\n";
    expect_ev(&o, in3, strlen(in3), NULL, 0,
              "R(Extension not supported by the server)[a APPEND x ~{1}] D[\\r\\n] "
              "R(Extension not supported by the server)[b APPEND x CATENATE ] D[(TEXT {1}\\r\\n] "
              "F[c APPEND x {1+}\\r\\n] L[y] X(Extension not supported by the server)[ {1}]");

    const char *rev2 = "imap4rev2 LITERAL- QUOTA=RES-STORAGE SORT=DISPLAY THREAD=REFERENCES "
                       "METADATA-SERVER MULTIAPPEND CATENATE BINARY ACL REPLACE MULTISEARCH";
    imap_check_opts_from_capability(&o, rev2, strlen(rev2));
    cr_assert_eq(o.nonsync, IMAP_CHECK_NONSYNC_MINUS);
    cr_assert_eq(o.server_exts, IMAP_CHECK_EXT_ALL & ~IMAP_CHECK_EXT_ID);
    imap_check_opts_from_capability(&o, "", 0);
    cr_assert_eq(o.nonsync, IMAP_CHECK_NONSYNC_NONE);
    cr_assert_eq(o.server_exts, 0);
}
