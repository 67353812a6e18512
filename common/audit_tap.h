/* audit_tap: watches both relayed streams of one session and reports each
 * client command together with the backend's tagged answer, for the audit
 * log.  It reads without changing or holding a relayed byte: literals of
 * every kind are skipped by length (a small one is kept only where it may
 * hold a mailbox name or, if allowed, a SEARCH value), AUTHENTICATE data and
 * IDLE's DONE are not commands, and pipelined commands wait in a bounded
 * queue for their answers.  What it reports never holds a password,
 * AUTHENTICATE data, literal contents or message text.  Any byte boundary
 * may fall anywhere.  Pure code. */
#ifndef IMAPMUX_COMMON_AUDIT_TAP_H
#define IMAPMUX_COMMON_AUDIT_TAP_H

#include <stddef.h>
#include <stdint.h>

#define AUDIT_TAP_TAG_LEN 64       /* bytes of a tag kept (and compared) */
#define AUDIT_TAP_NAME_LEN 31      /* bytes of a command name kept */
#define AUDIT_TAP_TEXT_LEN 4096    /* bytes of a command's text kept for its record */
#define AUDIT_TAP_LITERAL_KEEP 512 /* a literal up to this size may be kept (mailbox names) */

struct audit_tap;

struct audit_tap_opts {
    size_t seqset_max;  /* bytes of a sequence set in a record (longer is cut) */
    int search_values;  /* 1: SEARCH criteria as sent; 0: values replaced by "?" */
    size_t max_pending; /* commands awaiting their answer; more is an error */
};

/* One command and its answer. */
struct audit_cmd {
    const char *tag;    /* as sent, cut at AUDIT_TAP_TAG_LEN */
    const char *name;   /* upper case; "" for a line with no command name */
    int uid;            /* sent with the UID prefix */
    const char *fields; /* JSON fields of the arguments ("mailbox":"INBOX",...), or "" */
    const char *status; /* "OK", "NO", "BAD", or "" when no answer came */
    const char *code;   /* response code atom ("TRYCREATE"), or "" */
    uint64_t start_us;  /* first byte of the command (the caller's clock) */
    uint64_t end_us;    /* its answer, or the end of the session */
    uint64_t bytes_in;  /* bytes of the command, literals and continuations included */
    uint64_t bytes_out; /* bytes from the backend while it was the oldest unanswered one */
};

typedef void (*audit_tap_cb)(void *ctx, const struct audit_cmd *cmd);

/* audit_tap_new returns a tap, or NULL when out of memory. */
struct audit_tap *audit_tap_new(const struct audit_tap_opts *opts, audit_tap_cb cb, void *ctx);
void audit_tap_free(struct audit_tap *t);

/* audit_tap_client: bytes from the client.  Returns 0, or -1 when the client
 * has more than max_pending commands unanswered (the caller ends the session). */
int audit_tap_client(struct audit_tap *t, const uint8_t *data, size_t len, uint64_t now_us);

/* audit_tap_client_drop: the client's command in progress was refused by
 * imapmux before anything of it ran: forget what was seen of it, record
 * nothing. */
void audit_tap_client_drop(struct audit_tap *t);

/* audit_tap_client_cut: the client's command in progress ended where its
 * bytes so far end: the backend refused a synchronising literal it
 * announced, so no literal data follows and the client's next bytes are a
 * new command. */
void audit_tap_client_cut(struct audit_tap *t);

/* audit_tap_server: bytes to the client (the backend's, or the proxy's own
 * answers before login).  Reports the commands it completes. */
void audit_tap_server(struct audit_tap *t, const uint8_t *data, size_t len, uint64_t now_us);

/* audit_tap_finish reports every unanswered command with status "" (the
 * session ended), the client's command in progress included once its bytes
 * so far hold a literal (part of it was relayed).  The tap may be fed again
 * afterwards. */
void audit_tap_finish(struct audit_tap *t, uint64_t now_us);

/* audit_tap_pending: commands waiting for their answer. */
size_t audit_tap_pending(const struct audit_tap *t);

#endif
