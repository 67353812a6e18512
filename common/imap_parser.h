/* imap_parser: incremental parser of IMAP client commands (RFC 9051 syntax).
 *
 * The parser is fed bytes as they arrive; all its state lives in the struct,
 * so any split of the input yields the same results.  It copies the bytes of
 * the current command's arguments into its own bounded storage (allocated on
 * the first byte of a command, released by imap_parser_reset()), so the caller
 * may drop its input after each feed.  Pure code: no I/O, no libuv. */
#ifndef IMAPMUX_COMMON_IMAP_PARSER_H
#define IMAPMUX_COMMON_IMAP_PARSER_H

#include <stddef.h>
#include <stdint.h>

struct imap_parser;

enum imap_parse_result {
    IMAP_PARSE_MORE,         /* all input consumed, command not complete yet */
    IMAP_PARSE_COMMAND,      /* a complete command is available (get_tag/get_name/get_args) */
    IMAP_PARSE_LITERAL_WAIT, /* a synchronizing literal {n} was accepted: caller sends
                                "+ ..." and feeds more */
    IMAP_PARSE_LINE,         /* line mode: one raw line (without CRLF) in arg 0 */
    IMAP_PARSE_ERROR,        /* bad command; the line was skipped up to and including
                                its LF; get_error() and get_tag() (may be NULL) say more */
    IMAP_PARSE_FATAL,        /* cannot resync (e.g. a non-synchronizing literal over
                                the limit, whose data would be read as commands):
                                caller sends BYE with get_error() and closes */
};

enum imap_arg_type {
    IMAP_ARG_ATOM,       /* also numbers and NIL; see imap_arg_is_nil() */
    IMAP_ARG_QUOTED,     /* unescaped content of a quoted string */
    IMAP_ARG_LITERAL,    /* content of a literal, {n} or {n+} (or literal8 ~{n}) */
    IMAP_ARG_LIST_BEGIN, /* '(' ; data empty */
    IMAP_ARG_LIST_END,   /* ')' ; data empty */
};

struct imap_arg {
    enum imap_arg_type type;
    const char *data; /* points into parser storage; NUL-terminated for convenience;
                         valid until the next feed or reset */
    size_t len;       /* bytes in data, not counting the terminating NUL */
};

/* A bad line is discarded up to its LF and answered with BAD; one that is
 * still without a line end after this many bytes ends the session (FATAL,
 * "Line too long"): a line without an end would be read forever. */
#define IMAP_PARSER_MAX_SKIP_LEN (4u << 20)

/* ID (RFC 2971) may carry 30 field-value pairs of up to 30 and 1024 bytes:
 * for an ID command the line and argument limits are at least these. */
#define IMAP_PARSER_ID_MAX_LINE_LEN 65536
#define IMAP_PARSER_ID_MAX_ARGS 64

struct imap_parser_limits {
    size_t max_line_len;    /* bytes of one line, excluding literal contents (e.g. 8192) */
    size_t max_literal_len; /* bytes of one literal (e.g. 65536 before login) */
    size_t max_command_len; /* total bytes of all arguments of one command */
    size_t max_args;        /* arguments per command, list markers included (e.g. 64) */
    size_t max_depth;       /* nesting depth of parenthesized lists (e.g. 8) */
    size_t max_tag_len;     /* bytes of a tag (e.g. 64) */
};

/* imap_parser_new returns a parser with the given limits (copied), or NULL
 * when out of memory.  Free it with imap_parser_free (NULL accepted). */
struct imap_parser *imap_parser_new(const struct imap_parser_limits *limits);
void imap_parser_free(struct imap_parser *p);

/* imap_parser_feed parses up to len bytes of data.  It stops right after the
 * end of a command (or of a skipped bad line) so pipelined bytes stay with the
 * caller; *out_consumed says how many bytes it used.  On IMAP_PARSE_COMMAND,
 * IMAP_PARSE_LINE or IMAP_PARSE_ERROR the caller handles the result and then
 * calls imap_parser_reset() before feeding the next command.  After
 * IMAP_PARSE_LITERAL_WAIT the caller just keeps feeding. After IMAP_PARSE_FATAL
 * the parser must not be fed again. */
enum imap_parse_result imap_parser_feed(struct imap_parser *p, size_t *out_consumed,
                                        const uint8_t *data, size_t len);

/* imap_parser_reset forgets the current command and frees its storage. */
void imap_parser_reset(struct imap_parser *p);

/* imap_parser_set_line_mode makes the next feed return one raw line
 * (IMAP_PARSE_LINE, arg 0 is an ATOM with the line without CRLF, which may be
 * empty) instead of a command; used for AUTHENTICATE continuations.  The mode
 * lasts for one line, until reset. Line length limit applies. */
void imap_parser_set_line_mode(struct imap_parser *p);

/* imap_parser_set_literal_limit changes max_literal_len (e.g. after login). */
void imap_parser_set_literal_limit(struct imap_parser *p, size_t max_literal_len);

/* Accessors; valid after COMMAND, LINE or ERROR until the next feed or reset. */
const char *imap_parser_get_tag(const struct imap_parser *p);  /* NULL if none */
const char *imap_parser_get_name(const struct imap_parser *p); /* command name as sent,
                                                                  NULL if none */
const struct imap_arg *imap_parser_get_args(const struct imap_parser *p, size_t *out_num);
const char *imap_parser_get_error(const struct imap_parser *p); /* fixed reason text,
                                                                    NULL if none */

/* imap_arg_is_nil returns 1 if arg is the atom NIL (any case), 0 otherwise. */
int imap_arg_is_nil(const struct imap_arg *arg);

#endif
