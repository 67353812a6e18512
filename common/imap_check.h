/* imap_check: a strict IMAP grammar gate for the relayed client stream.
 *
 * After login imapmux relays the client's bytes to the backend.  The backend
 * decides what is a literal by its own parser; a tap that guesses by another
 * rule can be told a different story (a literal the backend never reads, an
 * announcement ending in a bare LF, a message line ending in "{n}").  This
 * module decides first, by the command grammar of RFC 3501 / RFC 9051 and
 * the extensions imapmux relays, and only lets through what has one reading:
 * every line part is validated whole before a byte of it is forwarded,
 * literals are recognised only where the grammar has a string, and literal
 * data goes through only once the backend has asked for it (synchronising)
 * or the announcement was validated (non-synchronising).  The audit can then
 * use the validated tag and command name instead of a heuristic.
 *
 * Use: the caller keeps the bytes of the current line part that have no
 * verdict yet (the "held" part, never more than opts.max_line_len bytes) and
 * calls imap_check_feed() with newly read client bytes.  Each call gives one
 * verdict over the first *out_len bytes of its input; the caller acts on it
 * and calls again with the rest (see enum imap_check_action).  The backend's
 * side is told through imap_check_server_continuation() and
 * imap_check_server_tagged().  Pure code: no I/O, no libuv; any split of the
 * input gives the same verdicts. */
#ifndef IMAPMUX_COMMON_IMAP_CHECK_H
#define IMAPMUX_COMMON_IMAP_CHECK_H

#include <stddef.h>
#include <stdint.h>

#define IMAP_CHECK_TAG_MAX_LEN 64        /* bytes of a tag, at most (opts may lower it) */
#define IMAP_CHECK_NAME_MAX_LEN 31       /* bytes of a command name kept */
#define IMAP_CHECK_MAX_DEPTH 16          /* grammar frames: nested lists and rules */
#define IMAP_CHECK_MAX_PENDING 128       /* forwarded commands awaiting their answer */
#define IMAP_CHECK_LITERAL_MINUS_MAX 4096 /* bytes of a {n+} under LITERAL- (RFC 7888) */

/* Fixed reason texts (sent in the tagged BAD or the BYE). */
#define IMAP_CHECK_E_CRLF "Line must end in CRLF"
#define IMAP_CHECK_E_CHAR "Invalid character in command"
#define IMAP_CHECK_E_EMPTY "Empty command"
#define IMAP_CHECK_E_TAG "Invalid tag"
#define IMAP_CHECK_E_TAG_LONG "Tag too long"
#define IMAP_CHECK_E_TAG_IN_USE "Tag already in use"
#define IMAP_CHECK_E_PENDING "Too many commands in progress"
#define IMAP_CHECK_E_NO_NAME "Missing command name"
#define IMAP_CHECK_E_UNKNOWN "Unknown command"
#define IMAP_CHECK_E_UID "Command not allowed after UID"
#define IMAP_CHECK_E_LOGGED_IN "Already logged in"
#define IMAP_CHECK_E_STARTTLS "STARTTLS not allowed after login"
#define IMAP_CHECK_E_UNAUTHENTICATE "UNAUTHENTICATE not supported"
#define IMAP_CHECK_E_SPACE "Missing or extra space"
#define IMAP_CHECK_E_ARGS "Invalid arguments"
#define IMAP_CHECK_E_LITERAL_HERE "Literal not allowed here"
#define IMAP_CHECK_E_LITERAL8_HERE "literal8 not allowed here"
#define IMAP_CHECK_E_LITERAL "Invalid literal"
#define IMAP_CHECK_E_LITERAL_SIZE "Literal too large"
#define IMAP_CHECK_E_NONSYNC "Non-synchronizing literal not allowed"
#define IMAP_CHECK_E_NONSYNC_SIZE "Non-synchronizing literal too large"
#define IMAP_CHECK_E_NONSYNC_REJECTED "Non-synchronizing literal in a rejected command"
#define IMAP_CHECK_E_QUOTED "Invalid quoted string"
#define IMAP_CHECK_E_LINE_LONG "Line too long"
#define IMAP_CHECK_E_DEPTH "Command nested too deeply"
#define IMAP_CHECK_E_SEARCH_KEY "Unknown search key"
#define IMAP_CHECK_E_FETCH_ITEM "Invalid fetch item"
#define IMAP_CHECK_E_DONE "Expected DONE"

#define IMAP_CHECK_E_NOT_SUPPORTED "Command not supported by the server"
#define IMAP_CHECK_E_EXT_NOT_SUPPORTED "Extension not supported by the server"

/* Extensions the backend announced (opts.server_exts).  A command or a
 * literal-bearing syntax of an extension the backend lacks is refused here:
 * the backend would take such a command as unknown and skip the rest of its
 * line without reading the literals it announces, which is exactly how
 * commands get hidden in literal data. */
#define IMAP_CHECK_EXT_ACL (1u << 0)         /* GETACL SETACL DELETEACL LISTRIGHTS MYRIGHTS */
#define IMAP_CHECK_EXT_QUOTA (1u << 1)       /* GETQUOTA GETQUOTAROOT SETQUOTA */
#define IMAP_CHECK_EXT_METADATA (1u << 2)    /* GETMETADATA SETMETADATA */
#define IMAP_CHECK_EXT_SORT (1u << 3)        /* SORT, UID SORT */
#define IMAP_CHECK_EXT_THREAD (1u << 4)      /* THREAD, UID THREAD */
#define IMAP_CHECK_EXT_MULTISEARCH (1u << 5) /* the ESEARCH command */
#define IMAP_CHECK_EXT_REPLACE (1u << 6)     /* REPLACE, UID REPLACE */
#define IMAP_CHECK_EXT_ID (1u << 7)          /* ID */
#define IMAP_CHECK_EXT_NAMESPACE (1u << 8)   /* NAMESPACE */
#define IMAP_CHECK_EXT_UNSELECT (1u << 9)    /* UNSELECT */
#define IMAP_CHECK_EXT_MOVE (1u << 10)       /* MOVE, UID MOVE */
#define IMAP_CHECK_EXT_ENABLE (1u << 11)     /* ENABLE */
#define IMAP_CHECK_EXT_IDLE (1u << 12)       /* IDLE */
#define IMAP_CHECK_EXT_UIDPLUS (1u << 13)    /* UID EXPUNGE */
#define IMAP_CHECK_EXT_CATENATE (1u << 14)   /* APPEND ... CATENATE (...) */
#define IMAP_CHECK_EXT_BINARY (1u << 15)     /* literal8 ~{n} */
#define IMAP_CHECK_EXT_MULTIAPPEND (1u << 16) /* several messages in one APPEND */
#define IMAP_CHECK_EXT_ALL 0x1ffffu

/* One verdict over the first *out_len bytes of a feed's input. */
enum imap_check_action {
    IMAP_CHECK_HOLD,         /* the bytes belong to the current line part, not yet
                                validated: append them to the held part (the
                                module guarantees held <= max_line_len) */
    IMAP_CHECK_FORWARD,      /* a validated line part ending in a literal
                                announcement: send the held part, then the bytes;
                                empty the held part.  Literal data or a
                                WAIT_CONTINUATION follows */
    IMAP_CHECK_FORWARD_END,  /* the command's last line part (through its CRLF):
                                send held + bytes, empty the held part; the command
                                (imap_check_tag/name) is complete */
    IMAP_CHECK_LITERAL,      /* literal data: send the bytes as they are, hold
                                nothing, inspect nothing (zero copy) */
    IMAP_CHECK_WAIT_CONTINUATION, /* *out_len == 0: a synchronising literal (or
                                IDLE) was forwarded; stop reading the client and
                                do not feed until imap_check_server_continuation()
                                or imap_check_server_tagged() resumes */
    IMAP_CHECK_LOCAL,        /* a complete valid command imapmux handles itself
                                (COMPRESS): drop held + bytes, handle it, and feed
                                what follows only once it is handled */
    IMAP_CHECK_REJECT,       /* the command is invalid and nothing of it was
                                forwarded: drop held + bytes, answer
                                "<tag> BAD <reason>" ("* BAD" when imap_check_tag()
                                is NULL); DROP verdicts follow up to the line's LF */
    IMAP_CHECK_DROP,         /* the rest of a rejected line: drop the bytes */
    IMAP_CHECK_FATAL,        /* invalid after part of the command was forwarded, or
                                literal data follows that cannot be told from
                                commands: send "* BYE <reason>", close the backend
                                without sending anything more, end the session.
                                Every later feed gives FATAL again */
};

/* What a validated command is, for the session and the audit. */
enum imap_check_cmd {
    IMAP_CHECK_CMD_NONE,     /* no command name read yet */
    IMAP_CHECK_CMD_RELAYED,  /* a command of the grammar, relayed */
    IMAP_CHECK_CMD_IDLE,     /* IDLE: relayed, then only DONE */
    IMAP_CHECK_CMD_DONE,     /* the DONE line that ends an IDLE (tag is the IDLE's) */
    IMAP_CHECK_CMD_COMPRESS, /* COMPRESS: imapmux terminates it itself (LOCAL) */
    IMAP_CHECK_CMD_REFUSED,  /* LOGIN, AUTHENTICATE, STARTTLS, UNAUTHENTICATE:
                                always REJECT after login */
    IMAP_CHECK_CMD_VENDOR,   /* unknown but in opts.allowed_commands: relayed as
                                one line with no literals */
    IMAP_CHECK_CMD_UNKNOWN,  /* unknown, not allowed: REJECT */
};

/* How the backend takes {n+} (from its capabilities). */
enum imap_check_nonsync {
    IMAP_CHECK_NONSYNC_NONE,  /* neither LITERAL+ nor LITERAL-: any {n+} is FATAL */
    IMAP_CHECK_NONSYNC_MINUS, /* LITERAL-: {n+} up to 4096 bytes, above it FATAL */
    IMAP_CHECK_NONSYNC_PLUS,  /* LITERAL+: {n+} up to the literal limits */
};

struct imap_check_opts {
    size_t max_line_len;         /* bytes of one command: its line parts (CRLF
                                    and literal announcements included) and its
                                    string literals' data, not message data; at
                                    most the backend's own limit (Dovecot's
                                    imap_max_line_length, 65536) */
    uint64_t max_literal_len;    /* bytes of message data: APPEND, REPLACE,
                                    CATENATE TEXT, literal8 (e.g. 64 MiB) */
    uint64_t max_arg_literal_len; /* bytes of any other string literal (mailbox,
                                    search value, metadata value; e.g. 1 MiB) */
    size_t max_tag_len;          /* bytes of a tag, 1..IMAP_CHECK_TAG_MAX_LEN
                                    (0 means the maximum) */
    size_t max_pending;          /* commands forwarded and unanswered, at most
                                    IMAP_CHECK_MAX_PENDING (0 means the maximum) */
    enum imap_check_nonsync nonsync;
    uint32_t server_exts;        /* IMAP_CHECK_EXT_* the backend has (see
                                    imap_check_opts_from_capability) */
    const char *const *allowed_commands; /* upper-case names of vendor commands
                                    relayed as plain lines; borrowed for the
                                    checker's lifetime; may be NULL */
    size_t num_allowed_commands;
};

struct imap_check;

/* imap_check_opts_from_capability sets opts->server_exts and opts->nonsync
 * from the backend's capability list (the atoms after "CAPABILITY",
 * space-separated, any case; IMAP4rev2 counts as NAMESPACE, UNSELECT, MOVE,
 * ENABLE, IDLE and UIDPLUS).  The other fields are left alone. */
void imap_check_opts_from_capability(struct imap_check_opts *opts, const char *caps,
                                     size_t caps_len);

/* imap_check_new returns a checker at a line start with a copy of opts, or
 * NULL when out of memory or when opts are out of range (max_line_len < 16).
 * Free it with imap_check_free (NULL accepted). */
struct imap_check *imap_check_new(const struct imap_check_opts *opts);
void imap_check_free(struct imap_check *c);

/* imap_check_feed gives the verdict on the first *out_len bytes of
 * data[0..len) (client bytes after login, in order).  The caller acts on the
 * verdict and calls again with data + *out_len until its input is used up or
 * the verdict is WAIT_CONTINUATION, LOCAL or FATAL.  *out_len is 0 only for
 * WAIT_CONTINUATION and for HOLD or FATAL with len 0; a feed after FATAL
 * covers all of its input.  A feed with len 0 is allowed (it reports a
 * pending WAIT_CONTINUATION).  Nothing is kept from data after the call
 * returns: the module holds no client byte, only its parse state. */
enum imap_check_action imap_check_feed(struct imap_check *c, size_t *out_len,
                                       const uint8_t *data, size_t len);

/* imap_check_blocked returns 1 while the checker waits for the backend
 * (after WAIT_CONTINUATION) or after FATAL: the caller must not read the
 * client.  Returns 0 otherwise. */
int imap_check_blocked(const struct imap_check *c);

/* imap_check_server_continuation: the backend sent a "+" continuation
 * request.  Returns 1 when it accepted the pending synchronising literal (its
 * data now comes as LITERAL verdicts) or began the pending IDLE (only DONE is
 * valid now); 0 when nothing waited for it (the session may treat a stray "+"
 * as a protocol error). */
int imap_check_server_continuation(struct imap_check *c);

/* imap_check_server_tagged: the backend sent a tagged completion (OK, NO or
 * BAD) with this tag.  The tag stops being in use.  Returns 1 when it ended
 * the command the checker waited on (a refused synchronising literal or
 * IDLE, or the end of IDLE): the checker is back at a line start and the
 * client may be read again; 0 otherwise. */
int imap_check_server_tagged(struct imap_check *c, const uint8_t *tag, size_t tag_len);

/* Accessors for the current (or just completed/rejected) command, valid
 * until the next imap_check_feed():
 * imap_check_tag returns the tag (NUL-terminated, *out_len its bytes) or NULL
 * when no valid tag was read; imap_check_name the upper-case command name
 * ("" before one was read; "DONE" for the line ending IDLE), without the UID
 * prefix; imap_check_uid 1 when it had the UID prefix; imap_check_reason the
 * fixed reason of the last REJECT or FATAL, or NULL. */
const char *imap_check_tag(const struct imap_check *c, size_t *out_len);
const char *imap_check_name(const struct imap_check *c);
int imap_check_uid(const struct imap_check *c);
enum imap_check_cmd imap_check_cmd(const struct imap_check *c);
const char *imap_check_reason(const struct imap_check *c);

/* Names for logs: "HOLD", "FORWARD", ... and "RELAYED", "IDLE", ... */
const char *imap_check_action_name(enum imap_check_action a);
const char *imap_check_cmd_name(enum imap_check_cmd k);

#endif
