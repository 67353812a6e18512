#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <criterion/criterion.h>

#include "common/imap_parser.h"
#include "secret_watch.h"

#define TEST_TRANSCRIPT_LEN 4096

static const struct imap_parser_limits test_limits = {
    .max_line_len = 100,
    .max_literal_len = 50,
    .max_command_len = 200,
    .max_args = 16,
    .max_depth = 3,
    .max_tag_len = 10,
};

struct transcript {
    char text[TEST_TRANSCRIPT_LEN]; /* results, "; "-separated */
    size_t text_len;
    size_t consumed; /* bytes consumed in all */
    int fatal;       /* a FATAL ended the feeding */
};

static void transcript_add(struct transcript *t, const char *s, size_t len)
{
    cr_assert_lt(t->text_len + len, sizeof(t->text), "transcript overflow");
    memcpy(t->text + t->text_len, s, len);
    t->text_len += len;
    t->text[t->text_len] = '\0';
}

static void transcript_str(struct transcript *t, const char *s)
{
    transcript_add(t, s, strlen(s));
}

/* transcript_bytes appends data with bytes outside printable ASCII as \xHH. */
static void transcript_bytes(struct transcript *t, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        char hex[8];

        if (c >= 0x20 && c < 0x7f) {
            transcript_add(t, data + i, 1);
        } else {
            snprintf(hex, sizeof(hex), "\\x%02x", c);
            transcript_str(t, hex);
        }
    }
}

static void transcript_args(struct transcript *t, const struct imap_parser *p)
{
    size_t num = 0;
    const struct imap_arg *args = imap_parser_get_args(p, &num);

    for (size_t i = 0; i < num; i++) {
        cr_assert_not_null(args[i].data);
        cr_assert_eq(args[i].data[args[i].len], '\0', "argument not NUL-terminated");
        transcript_str(t, " ");
        switch (args[i].type) {
        case IMAP_ARG_ATOM:
            transcript_str(t, imap_arg_is_nil(&args[i]) ? "NIL(" : "A(");
            break;
        case IMAP_ARG_QUOTED:
            transcript_str(t, "Q(");
            break;
        case IMAP_ARG_LITERAL:
            transcript_str(t, "L(");
            break;
        case IMAP_ARG_LIST_BEGIN:
            cr_assert_eq(args[i].len, 0);
            transcript_str(t, "(");
            continue;
        case IMAP_ARG_LIST_END:
            cr_assert_eq(args[i].len, 0);
            transcript_str(t, ")");
            continue;
        }
        transcript_bytes(t, args[i].data, args[i].len);
        transcript_str(t, ")");
    }
}

/* transcript_result records one non-MORE result; returns 1 when the
 * command ended (the caller resets). Emulates the session: after an
 * AUTHENTICATE without initial response, the next line is raw. */
static int transcript_result(struct transcript *t, struct imap_parser *p,
                             enum imap_parse_result r)
{
    const char *tag = imap_parser_get_tag(p);
    const char *name = imap_parser_get_name(p);
    size_t num = 0;

    if (t->text_len > 0 && r != IMAP_PARSE_MORE) {
        transcript_str(t, "; ");
    }
    switch (r) {
    case IMAP_PARSE_MORE:
        return 0;
    case IMAP_PARSE_LITERAL_WAIT:
        transcript_str(t, "W");
        return 0;
    case IMAP_PARSE_COMMAND:
        cr_assert_not_null(tag);
        cr_assert_not_null(name);
        transcript_str(t, "C ");
        transcript_str(t, tag);
        transcript_str(t, " ");
        transcript_str(t, name);
        transcript_args(t, p);
        cr_assert_null(imap_parser_get_error(p));
        (void)imap_parser_get_args(p, &num);
        if (strcmp(name, "AUTHENTICATE") == 0 && num == 1) {
            imap_parser_set_line_mode(p);
        }
        return 1;
    case IMAP_PARSE_LINE:
        transcript_str(t, "N");
        transcript_args(t, p);
        return 1;
    case IMAP_PARSE_ERROR:
        cr_assert_not_null(imap_parser_get_error(p));
        transcript_str(t, "E ");
        transcript_str(t, tag != NULL ? tag : "-");
        transcript_str(t, " ");
        transcript_str(t, imap_parser_get_error(p));
        return 1;
    case IMAP_PARSE_FATAL:
        cr_assert_not_null(imap_parser_get_error(p));
        transcript_str(t, "F ");
        transcript_str(t, imap_parser_get_error(p));
        t->fatal = 1;
        return 0;
    }
    return 0;
}

/* feed_chunk feeds one chunk the way the session does: until it is used up
 * or the parser is fatal. */
static void feed_chunk(struct transcript *t, struct imap_parser *p, const uint8_t *data,
                       size_t len)
{
    size_t off = 0;

    while (off < len && !t->fatal) {
        size_t used = 0;
        enum imap_parse_result r = imap_parser_feed(p, &used, data + off, len - off);

        cr_assert_leq(used, len - off);
        if (r == IMAP_PARSE_MORE) {
            cr_assert_eq(used, len - off, "MORE must consume all its input");
        } else {
            cr_assert_gt(used, 0, "a result consumes at least one byte");
        }
        off += used;
        t->consumed += used;
        if (transcript_result(t, p, r)) {
            imap_parser_reset(p);
        }
    }
}

/* run_cuts parses input cut at the given offsets (ascending). */
static void run_cuts(struct transcript *t, const struct imap_parser_limits *lim, int line_mode,
                     const char *input, size_t len, const size_t *cuts, size_t num_cuts)
{
    struct imap_parser *p = imap_parser_new(lim);
    size_t start = 0;

    cr_assert_not_null(p);
    memset(t, 0, sizeof(*t));
    if (line_mode) {
        imap_parser_set_line_mode(p);
    }
    for (size_t i = 0; i <= num_cuts; i++) {
        size_t end = i < num_cuts ? cuts[i] : len;
        feed_chunk(t, p, (const uint8_t *)input + start, end - start);
        start = end;
    }
    imap_parser_free(p);
}

/* check_all_splits asserts the same transcript for the whole input, every
 * split in two and byte by byte. */
static void check_all_splits(const struct imap_parser_limits *lim, int line_mode,
                             const char *input, size_t len, const char *want,
                             size_t want_consumed)
{
    struct transcript whole, t;
    size_t *cuts = malloc((len + 1) * sizeof(*cuts));

    cr_assert_not_null(cuts);
    run_cuts(&whole, lim, line_mode, input, len, NULL, 0);
    cr_assert_str_eq(whole.text, want, "input %zu bytes: got [%s] want [%s]", len, whole.text, want);
    cr_assert_eq(whole.consumed, want_consumed, "consumed %zu, want %zu (%s)", whole.consumed,
                 want_consumed, want);
    for (size_t cut = 1; cut < len; cut++) {
        run_cuts(&t, lim, line_mode, input, len, &cut, 1);
        cr_assert_str_eq(t.text, want, "split at %zu: got [%s] want [%s]", cut, t.text, want);
        cr_assert_eq(t.consumed, want_consumed, "split at %zu", cut);
    }
    for (size_t i = 0; i + 1 < len; i++) {
        cuts[i] = i + 1;
    }
    run_cuts(&t, lim, line_mode, input, len, cuts, len > 0 ? len - 1 : 0);
    cr_assert_str_eq(t.text, want, "byte by byte: got [%s] want [%s]", t.text, want);
    cr_assert_eq(t.consumed, want_consumed, "byte by byte");
    free(cuts);
}

struct parse_case {
    const char *input;
    size_t len;           /* 0: strlen(input) */
    const char *want;     /* transcript */
    long consumed;        /* -1: the whole input */
    int line_mode;        /* start in line mode */
};

static void check_cases(const struct parse_case *cases, size_t num,
                        const struct imap_parser_limits *lim)
{
    for (size_t i = 0; i < num; i++) {
        size_t len = cases[i].len != 0 ? cases[i].len : strlen(cases[i].input);
        size_t consumed = cases[i].consumed < 0 ? len : (size_t)cases[i].consumed;
        check_all_splits(lim, cases[i].line_mode, cases[i].input, len, cases[i].want,
                         consumed);
    }
}

#define BIN(s) s, sizeof(s) - 1
#define NUM(a) (sizeof(a) / sizeof((a)[0]))

Test(imap_parser, commands_at_every_split)
{
    static const struct parse_case cases[] = {
        {"a NOOP\r\n", 0, "C a NOOP", -1, 0},
        {"A1 capability\r\n", 0, "C A1 capability", -1, 0},
        {"a1 LOGIN user secret\r\n", 0, "C a1 LOGIN A(user) A(secret)", -1, 0},
        {"a LOGIN \"us\\\"er\" \"p\\\\a ss\"\r\n", 0, "C a LOGIN Q(us\"er) Q(p\\a ss)", -1, 0},
        {"a LOGIN \"\" \"\"\r\n", 0, "C a LOGIN Q() Q()", -1, 0},
        {"a LOGIN {4}\r\nuser {6}\r\nsecret\r\n", 0, "W; W; C a LOGIN L(user) L(secret)", -1,
         0},
        {"a LOGIN {4+}\r\nuser {6+}\r\nsecret\r\n", 0, "C a LOGIN L(user) L(secret)", -1, 0},
        {"a LOGIN {4}\r\nuser \"x y\"\r\n", 0, "W; C a LOGIN L(user) Q(x y)", -1, 0},
        {"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n", 0,
         "C a AUTHENTICATE A(PLAIN) A(AGFsaWNlAHNlY3JldA==)", -1, 0},
        {"a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nb NOOP\r\n", 0,
         "C a AUTHENTICATE A(PLAIN); N A(AGFsaWNlAHNlY3JldA==); C b NOOP", -1, 0},
        {"a AUTHENTICATE PLAIN\r\n\r\nb NOOP\r\n", 0,
         "C a AUTHENTICATE A(PLAIN); N A(); C b NOOP", -1, 0},
        {"a ID (\"name\" \"mua\" \"os\" NIL (\"x\" (\"y\")))\r\n", 0,
         "C a ID ( Q(name) Q(mua) Q(os) NIL(NIL) ( Q(x) ( Q(y) ) ) )", -1, 0},
        {"a ID nil\r\n", 0, "C a ID NIL(nil)", -1, 0},
        {"a ID ()\r\n", 0, "C a ID ( )", -1, 0},
        {"a NOOP\r\nb CAPABILITY\r\nc LOGIN x y\r\nd LOGOUT\r\n", 0,
         "C a NOOP; C b CAPABILITY; C c LOGIN A(x) A(y); C d LOGOUT", -1, 0},
        {"a X ~{3}\r\nabc ~{2+}\r\nxy\r\n", 0, "W; C a X L(abc) L(xy)", -1, 0},
        {"a X {0}\r\n {0+}\r\n\r\n", 0, "W; C a X L() L()", -1, 0},
        {BIN("a X {4}\r\n\r\n\0\xff\r\n"), "W; C a X L(\\x0d\\x0a\\x00\\xff)", -1, 0},
        {"a NOOP\nb LOGIN x y\n", 0, "E a Line must end in CRLF; E b Line must end in CRLF", -1,
         0},
        /* the LF-only LOGIN that hid its password in a "tag" */
        {"a LOGIN {5}\nalice {6}\nsecret\n", 0,
         "E a Line must end in CRLF; E alice Invalid command name; E - Line must end in CRLF", -1,
         0},
        {"a X ~foo b]c \\Seen %* 12\r\n", 0, "C a X A(~foo) A(b]c) A(\\Seen) A(%*) A(12)", -1,
         0},
        {"a] X  y \r\n", 0, "C a] X A(y)", -1, 0},
        {"a X (a b)(c)\r\n", 0, "E a Missing space between arguments", -1, 0},
        /* a sync literal's data may come before the continuation */
        {"a LOGIN {1}\r\nu p\r\nb NOOP\r\n", 0, "W; C a LOGIN L(u) A(p); C b NOOP", -1, 0},
        {BIN("raw line \x01 with \0 bytes\r\n"), "N A(raw line \\x01 with \\x00 bytes)", -1, 1},
    };

    check_cases(cases, NUM(cases), &test_limits);
}

Test(imap_parser, errors_at_every_split)
{
    static const struct parse_case cases[] = {
        {"\r\nb NOOP\r\n", 0, "E - Empty command; C b NOOP", -1, 0},
        {"\n", 0, "E - Line must end in CRLF", -1, 0},
        {"a\r\n", 0, "E a Missing command name", -1, 0},
        {"a \r\nb NOOP\r\n", 0, "E a Missing command name; C b NOOP", -1, 0},
        {"+a NOOP\r\nb NOOP\r\n", 0, "E - Invalid tag; C b NOOP", -1, 0},
        {"a+ NOOP\r\n", 0, "E - Invalid tag", -1, 0},
        {"a(b NOOP\r\n", 0, "E - Invalid tag", -1, 0},
        {" NOOP\r\n", 0, "E - Invalid tag", -1, 0},
        {"a*b NOOP\r\n", 0, "E - Invalid tag", -1, 0},
        {"abcdefghij NOOP\r\nabcdefghijk NOOP\r\n", 0, "C abcdefghij NOOP; E - Invalid tag", -1,
         0},
        {"a\x01 NOOP\r\n", 0, "E - Invalid tag", -1, 0},
        {"a NO\x01OP\r\n", 0, "E a Invalid characters in command", -1, 0},
        {"a NO(OP\r\n", 0, "E a Invalid command name", -1, 0},
        {"a LOGIN us\x01r x\r\nb NOOP\r\n", 0, "E a Invalid characters in command; C b NOOP",
         -1, 0},
        {"a LOGIN us\x7fr x\r\n", 0, "E a Invalid characters in command", -1, 0},
        {BIN("a LOGIN \0 x\r\n"), "E a Invalid characters in command", -1, 0},
        {"a LOGIN us\tr x\r\n", 0, "E a Invalid characters in command", -1, 0},
        {"a LOGIN us\xc3\xa9r x\r\n", 0, "E a Invalid characters in command", -1, 0},
        {"a LOGIN \"us\xc3\xa9r\" x\r\nb NOOP\r\n", 0,
         "E a Invalid characters in quoted string; C b NOOP", -1, 0},
        {BIN("a LOGIN \"a\0b\" x\r\n"), "E a Invalid characters in quoted string", -1, 0},
        {"a LOGIN \"a\rb\" x\r\nb NOOP\r\n", 0,
         "E a Invalid characters in quoted string; C b NOOP", -1, 0},
        {"a LOGIN \"ab\nb NOOP\r\n", 0, "E a Invalid characters in quoted string; C b NOOP", -1,
         0},
        {"a LOGIN \"a\\b\" x\r\n", 0, "E a Invalid escape in quoted string", -1, 0},
        {"a NO\rOP\r\nb NOOP\r\n", 0, "E a Invalid characters in command; C b NOOP", -1, 0},
        {"a X (((a)))\r\na X ((((a))))\r\n", 0,
         "C a X ( ( ( A(a) ) ) ); E a Lists nested too deeply", -1, 0},
        {"a X a)\r\n", 0, "E a Unbalanced ')'", -1, 0},
        {"a X ())\r\n", 0, "E a Unbalanced ')'", -1, 0},
        {"a X (a\r\nb NOOP\r\n", 0, "E a Missing ')'; C b NOOP", -1, 0},
        {"a X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\r\n", 0,
         "C a X A(1) A(2) A(3) A(4) A(5) A(6) A(7) A(8) A(9) A(10) A(11) A(12) A(13) A(14) "
         "A(15) A(16)",
         -1, 0},
        {"a X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\r\nb NOOP\r\n", 0,
         "E a Too many arguments; C b NOOP", -1, 0},
        /* a rejected line announcing a sync literal: no '+' went out, no data comes */
        {"a X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 {3}\r\nb NOOP\r\n", 0,
         "E a Too many arguments; C b NOOP", -1, 0},
        /* ... a non-sync one: its data follows regardless, cannot resync */
        {"a X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 {3+}\r\nabc\r\n", 0,
         "F Too many arguments", 49, 0},
        {"a X {50}\r\n", 0, "W", -1, 0},
        {"a X {51}\r\nb NOOP\r\n", 0, "E a Literal too large; C b NOOP", -1, 0},
        {"a X ~{51}\r\nb NOOP\r\n", 0, "E a Literal too large; C b NOOP", -1, 0},
        {"a X {99999999999999999999999999999}\r\nb NOOP\r\n", 0,
         "E a Literal too large; C b NOOP", -1, 0},
        {"a X {51+}\r\nb NOOP\r\n", 0, "F Non-synchronizing literal too large", 11, 0},
        {"a X {99999999999999999999999999999+}\r\nabc\r\n", 0,
         "F Non-synchronizing literal too large", 38, 0},
        {"a X {}\r\nb NOOP\r\n", 0, "E a Invalid literal; C b NOOP", -1, 0},
        {"a X {+}\r\n", 0, "E a Invalid literal", -1, 0},
        {"a X {3}x\r\nb NOOP\r\n", 0, "E a Invalid literal; C b NOOP", -1, 0},
        {"a X {3\r\n", 0, "E a Invalid literal", -1, 0},
        {"a X {3}\rx\r\n", 0, "E a Invalid characters in command", -1, 0},
        {"a X \"ab\" c\r\n", 0, "C a X Q(ab) A(c)", -1, 0},
        {"a X \"ab\"c\r\n", 0, "E a Missing space between arguments", -1, 0},
        {"a X b\"c\r\n", 0, "E a Invalid characters in command", -1, 0},
        /* total argument bytes: 4 x 50 fit in max_command_len, the fifth does not */
        {"a X {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {1}\r\nb NOOP\r\n",
         0, "E a Command too long; C b NOOP", -1, 0},
        {"a X {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " x\r\n",
         0, "E a Command too long", -1, 0},
        {"a X {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {50+}\r\n0123456789012345678901234567890123456789012345678\n"
         " {1+}\r\nx\r\n",
         0, "F Command too long", 242, 0},
        /* line mode */
        {"\r\n", 0, "N A()", -1, 1},
        {"a\rb\r\nb NOOP\r\n", 0, "E - Invalid characters in command; C b NOOP", -1, 1},
    };

    check_cases(cases, NUM(cases), &test_limits);
}

/* line_of builds "prefix" + n times c + "suffix" in a new buffer. */
static char *line_of(size_t *out_len, const char *prefix, char c, size_t n, const char *suffix)
{
    size_t plen = strlen(prefix), slen = strlen(suffix);
    char *s = malloc(plen + n + slen + 1);

    cr_assert_not_null(s);
    memcpy(s, prefix, plen);
    memset(s + plen, c, n);
    memcpy(s + plen + n, suffix, slen + 1);
    *out_len = plen + n + slen;
    return s;
}

Test(imap_parser, line_length_limit)
{
    size_t len;
    char *s;

    /* exactly max_line_len bytes before the CRLF pass */
    s = line_of(&len, "a X ", 'x', 96, "\r\n");
    check_all_splits(&test_limits, 0, s, len, "C a X A(xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                              "xxxxxxxx)",
                     len);
    free(s);
    s = line_of(&len, "a X ", 'x', 97, "\r\nb NOOP\r\n");
    check_all_splits(&test_limits, 0, s, len, "E a Line too long; C b NOOP", len);
    free(s);
    s = line_of(&len, "a X ", 'x', 300, "\nb NOOP\r\n");
    check_all_splits(&test_limits, 0, s, len, "E a Line too long; C b NOOP", len);
    free(s);
    /* a too long line announcing a non-sync literal cannot be skipped */
    s = line_of(&len, "a X ", 'x', 300, " {3+}\r\nabc\r\n");
    check_all_splits(&test_limits, 0, s, len, "F Line too long", len - 5);
    free(s);
    s = line_of(&len, "a X ", 'x', 300, " {3}\r\nb NOOP\r\n");
    check_all_splits(&test_limits, 0, s, len, "E a Line too long; C b NOOP", len);
    free(s);
    /* line mode */
    s = line_of(&len, "", 'x', 100, "\r\n");
    check_all_splits(&test_limits, 1, s, len, "N A(xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                              "xxxxxx)",
                     len);
    free(s);
    s = line_of(&len, "", 'x', 101, "\r\nb NOOP\r\n");
    check_all_splits(&test_limits, 1, s, len, "E - Line too long; C b NOOP", len);
    free(s);
    /* a raw line's end is no literal announcement */
    s = line_of(&len, "", 'x', 101, "{3+}\r\nb NOOP\r\n");
    check_all_splits(&test_limits, 1, s, len, "E - Line too long; C b NOOP", len);
    free(s);
}

Test(imap_parser, line_too_long_lf_in_later_chunk)
{
    struct imap_parser *p = imap_parser_new(&test_limits);
    size_t len, used = 0;
    char *s = line_of(&len, "a X ", 'x', 300, "");

    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)s, len), IMAP_PARSE_MORE);
    cr_assert_eq(used, len);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"yyy\r", 4), IMAP_PARSE_MORE);
    cr_assert_eq(used, 4);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"\nb NOOP\r\n", 9),
                 IMAP_PARSE_ERROR);
    cr_assert_eq(used, 1);
    cr_assert_str_eq(imap_parser_get_error(p), "Line too long");
    cr_assert_str_eq(imap_parser_get_tag(p), "a");
    imap_parser_reset(p);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"b NOOP\r\n", 8),
                 IMAP_PARSE_COMMAND);
    cr_assert_eq(used, 8);
    imap_parser_free(p);
    free(s);
}

Test(imap_parser, megabyte_line_in_4k_chunks_gets_one_error)
{
    struct imap_parser_limits lim = {
        .max_line_len = 8192,
        .max_literal_len = 65536,
        .max_command_len = 8192 + 2 * 65536,
        .max_args = 64,
        .max_depth = 8,
        .max_tag_len = 64,
    };
    struct imap_parser *p = imap_parser_new(&lim);
    size_t len, off = 0, errors = 0, commands = 0, more = 0;
    char *s = line_of(&len, "a LOGIN ", 'x', 1024 * 1024, "\r\nb NOOP\r\n");

    cr_assert_not_null(p);
    while (off < len) {
        size_t chunk = len - off < 4096 ? len - off : 4096;
        size_t coff = 0;

        while (coff < chunk) {
            size_t used = 0;
            enum imap_parse_result r =
                imap_parser_feed(p, &used, (const uint8_t *)s + off + coff, chunk - coff);

            coff += used;
            if (r == IMAP_PARSE_ERROR) {
                errors++;
                cr_assert_str_eq(imap_parser_get_error(p), "Line too long");
                cr_assert_str_eq(imap_parser_get_tag(p), "a");
                imap_parser_reset(p);
            } else if (r == IMAP_PARSE_COMMAND) {
                commands++;
                cr_assert_str_eq(imap_parser_get_name(p), "NOOP");
                imap_parser_reset(p);
            } else {
                cr_assert_eq(r, IMAP_PARSE_MORE);
                more++;
            }
        }
        off += chunk;
    }
    cr_assert_eq(errors, 1);
    cr_assert_eq(commands, 1);
    cr_assert_gt(more, 200);
    imap_parser_free(p);
    free(s);
}

Test(imap_parser, cr_at_chunk_end_waits)
{
    struct imap_parser *p = imap_parser_new(&test_limits);
    size_t used = 0;

    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"a NOOP\r", 7), IMAP_PARSE_MORE);
    cr_assert_eq(used, 7);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"\nb", 2), IMAP_PARSE_COMMAND);
    cr_assert_eq(used, 1);
    cr_assert_str_eq(imap_parser_get_tag(p), "a");
    cr_assert_str_eq(imap_parser_get_name(p), "NOOP");
    imap_parser_reset(p);
    /* a CR ending the announcing line of a literal */
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"b X {2}\r", 8), IMAP_PARSE_MORE);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"\n\r\n\r\n", 5),
                 IMAP_PARSE_LITERAL_WAIT);
    cr_assert_eq(used, 1);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"\r\n\r\n", 4),
                 IMAP_PARSE_COMMAND);
    cr_assert_eq(used, 4);
    imap_parser_free(p);
}

Test(imap_parser, literal_wait_is_returned_once)
{
    struct imap_parser *p = imap_parser_new(&test_limits);
    size_t used = 0, num = 0;
    const struct imap_arg *args;

    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"a LOGIN {5}\r\n", 13),
                 IMAP_PARSE_LITERAL_WAIT);
    cr_assert_eq(used, 13);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"us", 2), IMAP_PARSE_MORE);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"er1", 3), IMAP_PARSE_MORE);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)" pw\r\nc", 6), IMAP_PARSE_COMMAND);
    cr_assert_eq(used, 5);
    args = imap_parser_get_args(p, &num);
    cr_assert_eq(num, 2);
    cr_assert_eq(args[0].type, IMAP_ARG_LITERAL);
    cr_assert_str_eq(args[0].data, "user1");
    cr_assert_eq(args[1].type, IMAP_ARG_ATOM);
    cr_assert_str_eq(args[1].data, "pw");
    imap_parser_reset(p);
    /* after login the literal limit grows */
    imap_parser_set_literal_limit(p, 100);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"a X {80}\r\n", 10),
                 IMAP_PARSE_LITERAL_WAIT);
    imap_parser_free(p);
}

Test(imap_parser, error_accessors)
{
    struct imap_parser *p = imap_parser_new(&test_limits);
    size_t used = 0, num = 5;

    cr_assert_null(imap_parser_get_tag(p));
    cr_assert_null(imap_parser_get_name(p));
    cr_assert_null(imap_parser_get_error(p));
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"\r\n", 2), IMAP_PARSE_ERROR);
    cr_assert_null(imap_parser_get_tag(p));
    cr_assert_str_eq(imap_parser_get_error(p), "Empty command");
    (void)imap_parser_get_args(p, &num);
    cr_assert_eq(num, 0);
    imap_parser_reset(p);
    cr_assert_null(imap_parser_get_error(p));
    /* feeding nothing is harmless */
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"", 0), IMAP_PARSE_MORE);
    cr_assert_eq(used, 0);
    /* FATAL sticks */
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"a X {51+}\r\nxx", 13),
                 IMAP_PARSE_FATAL);
    cr_assert_eq(used, 11);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)"xx", 2), IMAP_PARSE_FATAL);
    cr_assert_eq(used, 0);
    imap_parser_free(p);
    imap_parser_free(NULL);
}

Test(imap_parser, nil_is_an_atom)
{
    struct imap_arg a = {IMAP_ARG_ATOM, "nIl", 3};
    struct imap_arg q = {IMAP_ARG_QUOTED, "NIL", 3};
    struct imap_arg b = {IMAP_ARG_ATOM, "NILS", 4};

    cr_assert(imap_arg_is_nil(&a));
    cr_assert_not(imap_arg_is_nil(&q));
    cr_assert_not(imap_arg_is_nil(&b));
}

Test(imap_parser, unterminated_line_is_fatal_past_the_skip_limit)
{
    struct imap_parser *p = imap_parser_new(&test_limits);
    uint8_t chunk[65536];
    size_t fed = 0;
    enum imap_parse_result r = IMAP_PARSE_MORE;

    cr_assert_not_null(p);
    memset(chunk, 'x', sizeof(chunk));
    memcpy(chunk, "a NOOP ", 7);
    /* 32 MiB offered in 64 KiB reads: the parser gives up at the skip limit */
    while (fed < (32u << 20) && r == IMAP_PARSE_MORE) {
        size_t used = 0;
        r = imap_parser_feed(p, &used, chunk, sizeof(chunk));
        fed += used;
        memset(chunk, 'x', 7);
    }
    cr_assert_eq(r, IMAP_PARSE_FATAL);
    cr_assert_str_eq(imap_parser_get_error(p), "Line too long");
    cr_assert_leq(fed, IMAP_PARSER_MAX_SKIP_LEN + test_limits.max_line_len + 2, "fed %zu", fed);
    cr_assert_geq(fed, IMAP_PARSER_MAX_SKIP_LEN);
    imap_parser_free(p);
}

/* id_command builds "t ID (" + pairs of ("fieldNN" "<value of vlen bytes>") + ")" CRLF. */
static char *id_command(size_t *out_len, const char *name, int pairs, size_t vlen)
{
    size_t cap = 64 + (size_t)pairs * (vlen + 48);
    char *s = malloc(cap);
    size_t off = (size_t)snprintf(s, cap, "t %s (", name);
    cr_assert_not_null(s);
    for (int i = 0; i < pairs; i++) {
        off += (size_t)snprintf(s + off, cap - off, "%s\"field%02d\" \"", i ? " " : "", i);
        memset(s + off, 'v', vlen);
        off += vlen;
        s[off++] = '"';
    }
    off += (size_t)snprintf(s + off, cap - off, ")\r\n");
    *out_len = off;
    return s;
}

Test(imap_parser, id_at_rfc2971_limits)
{
    struct imap_parser_limits lim = {
        .max_line_len = 8192,
        .max_literal_len = 8192,
        .max_command_len = 8192 + 2 * 8192,
        .max_args = 32,
        .max_depth = 4,
        .max_tag_len = 64,
    };
    struct imap_parser *p = imap_parser_new(&lim);
    size_t len, used, num = 0;
    char *s = id_command(&len, "ID", 30, 1024);

    cr_assert_not_null(p);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)s, len), IMAP_PARSE_COMMAND);
    cr_assert_eq(used, len);
    const struct imap_arg *a = imap_parser_get_args(p, &num);
    cr_assert_eq(num, 62); /* ( 30 pairs ) */
    cr_assert_eq(a[60].len, 1024);
    imap_parser_reset(p);
    free(s);

    /* the raised limits are the ID command's alone */
    s = id_command(&len, "XID", 30, 1024);
    enum imap_parse_result r = imap_parser_feed(p, &used, (const uint8_t *)s, len);
    cr_assert_eq(r, IMAP_PARSE_ERROR);
    cr_assert_eq(used, len);
    imap_parser_reset(p);
    free(s);

    s = id_command(&len, "id", 30, 1024);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)s, len), IMAP_PARSE_COMMAND);
    imap_parser_reset(p);
    free(s);
    imap_parser_free(p);
}

/* Limits of a real pre-auth parser: the storage starts at 256 bytes and a
 * long password makes it grow twice. */
static const struct imap_parser_limits login_limits = {
    .max_line_len = 8192,
    .max_literal_len = 65536,
    .max_command_len = 8192,
    .max_args = 64,
    .max_depth = 8,
    .max_tag_len = 64,
};
#define TEST_LONG_PASSWORD_LEN 600 /* bytes: past 256 and 512 */

Test(imap_parser, storage_wiped_after_growth_and_reset)
{
    struct imap_parser *p = imap_parser_new(&login_limits);
    struct secret_watch w;
    char line[TEST_LONG_PASSWORD_LEN + 32];
    size_t used = 0, num = 0;

    int n = snprintf(line, sizeof(line), "a LOGIN alice ");
    memset(line + n, 'P', TEST_LONG_PASSWORD_LEN);
    memcpy(line + n + TEST_LONG_PASSWORD_LEN, "\r\n", 2);
    size_t len = (size_t)n + TEST_LONG_PASSWORD_LEN + 2;

    secret_watch_start(&w);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)line, len), IMAP_PARSE_COMMAND);
    const struct imap_arg *args = imap_parser_get_args(p, &num);
    cr_assert_eq(num, 2);
    cr_assert_eq(args[1].len, TEST_LONG_PASSWORD_LEN);
    /* the 256 and 512 byte blocks went while growing, wiped */
    cr_assert_eq(w.blocks, 2, "blocks released while growing: %zu", w.blocks);
    cr_assert_eq(w.dirty, 0);
    imap_parser_reset(p);
    cr_assert_eq(w.blocks, 3);
    cr_assert_eq(w.bytes, 256 + 512 + 1024);
    cr_assert_eq(w.dirty, 0, "a released block still held command bytes");
    secret_watch_stop();
    imap_parser_free(p);
}

Test(imap_parser, storage_wiped_after_error_and_on_free)
{
    struct imap_parser *p = imap_parser_new(&login_limits);
    struct secret_watch w;
    size_t used = 0;
    static const char bad[] = "a LOGIN alice secret-pw\x01\r\n"; /* a CTL in the atom */
    static const char partial[] = "b LOGIN alice secret-pw";

    secret_watch_start(&w);
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)bad, sizeof(bad) - 1),
                 IMAP_PARSE_ERROR);
    imap_parser_reset(p);
    cr_assert_eq(w.blocks, 1);
    cr_assert_eq(w.dirty, 0);
    /* a command cut short by the connection's end goes with the parser */
    cr_assert_eq(imap_parser_feed(p, &used, (const uint8_t *)partial, sizeof(partial) - 1),
                 IMAP_PARSE_MORE);
    imap_parser_free(p);
    cr_assert_eq(w.blocks, 2);
    cr_assert_eq(w.dirty, 0);
    secret_watch_stop();
}
