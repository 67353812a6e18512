#include "common/imap_check.h"

#include <stdlib.h>
#include <string.h>

/* Bytes of a word kept for matching names (command names, search keys,
 * fetch items); longer words are checked by character class only. */
#define IMAP_CHECK_WORD_KEEP 64
/* Digits of a literal size: 19 always fit in 64 bits. */
#define IMAP_CHECK_LIT_MAX_DIGITS 19

/* The lexer's states, one per byte position kind. */
enum check_state {
    ST_TAG,        /* line start or inside the tag */
    ST_SEP,        /* between tokens: SP, a token's first byte or CR */
    ST_WORD,       /* inside a run of atom-like bytes */
    ST_QUOTED,     /* inside a quoted string */
    ST_QUOTED_ESC, /* after a backslash in a quoted string */
    ST_LIT,        /* after "{" (or "~{"): digits, "+", "}" */
    ST_LIT_CR,     /* after the "}" of an announcement: CR */
    ST_LIT_LF,     /* after its CR: LF */
    ST_CR,         /* after the CR that ends a command: LF */
    ST_LITDATA,    /* literal data, counted down */
    ST_WAIT,       /* waiting for the backend: "+" or the tagged answer */
    ST_IDLE,       /* IDLE accepted: matching "DONE" CRLF */
    ST_SKIP,       /* a rejected line: dropping up to its LF */
    ST_FATAL,      /* the session must end */
};

/* Why ST_WAIT waits. */
enum check_wait {
    WAIT_LITERAL, /* a synchronising literal's "+" */
    WAIT_IDLE,    /* IDLE's "+" */
};

enum tok_type { TOK_WORD, TOK_QUOTED, TOK_LITERAL, TOK_LP, TOK_RP, TOK_EOL };

/* Character classes a word has (each bit: every byte qualifies). */
#define CL_ATOM 0x01u   /* ATOM-CHAR */
#define CL_ATOM1 0x02u  /* ATOM-CHAR from the second byte on */
#define CL_ASTR 0x04u   /* ASTRING-CHAR: ATOM-CHAR or "]" */
#define CL_LISTMB 0x08u /* list-char: ATOM-CHAR, "%", "*", "]" */
#define CL_DIGITS 0x10u /* DIGIT */
#define CL_SEQ 0x20u    /* sequence-set: DIGIT ":" "," "*" "$" */
#define CL_DATE 0x40u   /* date-text: DIGIT ALPHA "-" */
#define CL_ALL 0x7fu

/* Grammar rules; each frame of the stack is one rule at one step. */
enum check_rule {
    R_CMD,      /* name [UID name] ... EOL */
    R_SEQ,      /* a fixed sequence of simple arguments (aux: sequence) */
    R_PLIST,    /* inside "(...)"; aux: element kind */
    R_APPEND,   /* APPEND mailbox messages (aux 1: REPLACE, one message) */
    R_CATPART,  /* TEXT literal / URL astring */
    R_LIST,     /* LIST [(sel)] mailbox patterns [RETURN (...)] */
    R_SEARCH,   /* SEARCH / SORT / THREAD / ESEARCH program (aux: which) */
    R_SKEY,     /* one search key */
    R_ESFILTER, /* one ESEARCH IN filter */
    R_FETCH,    /* FETCH seq items [(modifiers)] */
    R_FATT,     /* one fetch item */
    R_STORE,    /* STORE seq [(mods)] item flags */
    R_ID,       /* ID NIL / (pairs) */
    R_SETQUOTA, /* SETQUOTA root (resources) */
    R_GETMETA,  /* GETMETADATA [(opts)] mailbox entries */
    R_SETMETA,  /* SETMETADATA mailbox (entry value ...) */
    R_XCMD,     /* an allowed vendor command: words, strings, lists, no literals */
};

/* Elements of R_PLIST. */
enum check_elem {
    E_ALIST,    /* atoms, numbers, quoted strings, nested lists; no literal */
    E_ASTR,     /* astrings, at least one */
    E_FLAG,     /* flags */
    E_LISTMB,   /* list-mailbox patterns, at least one */
    E_MBOX,     /* mailboxes, at least one */
    E_ATOM,     /* atoms (sort criteria) */
    E_IDPAIR,   /* string nstring pairs */
    E_QUOTA,    /* atom number pairs */
    E_METAPAIR, /* entry value pairs */
    E_SKEY,     /* search keys, at least one */
    E_FATT,     /* fetch items, at least one */
    E_CATPART,  /* CATENATE parts, at least one */
    E_ESFILTER, /* ESEARCH filters, at least one */
    E_XANY,     /* vendor command list contents */
};

/* Simple argument kinds of R_SEQ, each after one SP. */
enum check_kind {
    K_END,
    K_MBOX,       /* mailbox: astring */
    K_ASTR,       /* astring */
    K_LISTMB,     /* list-mailbox */
    K_SEQ,        /* sequence set */
    K_ATOM,       /* atom */
    K_ATOMS,      /* zero or more atoms, to the end */
    K_OPT_ALIST,  /* optional "(...)" of atoms */
    K_ALIST,      /* "(...)" of atoms */
    K_APPEND_MSG, /* the rest of REPLACE: one message (R_APPEND) */
};

struct check_frame {
    uint8_t rule; /* enum check_rule */
    uint8_t step; /* position inside the rule */
    uint8_t aux;  /* rule parameter */
    uint8_t n;    /* elements so far (R_PLIST), saturating */
    uint16_t key; /* R_SKEY: key table index */
};

struct check_tok {
    enum tok_type type;
    int sp;           /* one SP came before it */
    const char *word; /* TOK_WORD: upper-cased first bytes (NUL-terminated) */
    size_t word_len;  /* TOK_WORD: its full length */
    const char *qtext; /* TOK_QUOTED: upper-cased first bytes of the content,
                          escapes resolved (NUL-terminated) */
    size_t qtext_len; /* TOK_QUOTED: the content's full length */
    unsigned cls;     /* TOK_WORD: CL_* bits */
    int lit8;         /* TOK_LITERAL: ~{n} */
};

struct imap_check {
    struct imap_check_opts opts;
    enum check_state st;
    enum check_wait wait;
    const char *reason;       /* last REJECT/FATAL reason, fixed text */
    uint64_t part_len;        /* bytes of the current line part so far */
    uint64_t cmd_len;         /* bytes of the command so far: line parts and string
                                 literals' data, not message data (max_line_len) */
    uint8_t need_reset;       /* a command ended; reset at the next line start */
    uint8_t fwd;              /* some part of the current command was forwarded */
    uint8_t idling;           /* IDLE running at the backend: lines are DONE */
    uint8_t sp;               /* SP seen before the coming token */
    uint8_t cmd_done;         /* the grammar took the command's EOL */
    uint8_t idle_pos;         /* bytes of "DONE\r\n" matched */
    uint8_t skip_tail;        /* ST_SKIP: progress through "{n+}" CRLF */
    uint8_t tag_done;         /* the tag is complete and valid */
    /* the current word */
    char word[IMAP_CHECK_WORD_KEEP + 1]; /* upper-cased first bytes */
    size_t word_len;                     /* its full length */
    unsigned word_cls;                   /* CL_* bits so far */
    /* the current literal announcement */
    uint64_t lit_size;  /* announced bytes */
    uint64_t lit_left;  /* data bytes still to come */
    uint8_t lit_digits; /* digits read */
    uint8_t lit_plus;   /* "+" read: non-synchronising */
    uint8_t lit8;       /* "~{" */
    uint8_t lit_data;   /* the grammar took it as message data */
    /* the command */
    char tag[IMAP_CHECK_TAG_MAX_LEN + 1];
    size_t tag_len;
    char idle_tag[IMAP_CHECK_TAG_MAX_LEN + 1]; /* the running IDLE's tag */
    size_t idle_tag_len;
    char name[IMAP_CHECK_NAME_MAX_LEN + 1];
    uint8_t uid;
    enum imap_check_cmd cmd;
    /* the grammar */
    struct check_frame stack[IMAP_CHECK_MAX_DEPTH];
    size_t depth;
    /* tags forwarded and not answered, as hashes */
    uint64_t pending[IMAP_CHECK_MAX_PENDING];
    size_t num_pending;
};

/* ---- characters ---------------------------------------------------------- */

static int ch_ctl(uint8_t b)
{
    return b < 0x20 || b == 0x7f;
}

/* Per byte: the CL_* classes it has, and CH_WORD when it continues a word in
 * the lexer (printable ASCII other than SP ( ) " {; what the grammar allows
 * is checked on the class bits).  ATOM-CHAR is any CHAR except atom-specials
 * ( ) { SP CTL % * " \ ].  A table, because this runs for every byte. */
#define CH_WORD 0x80u
static const uint8_t check_ch[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x8f, 0x00, 0x8f, 0xaf, 0x88, 0x8f, 0x8f, 0x00, 0x00, 0xa8, 0x8f, 0xaf, 0xcf, 0x8f, 0x8f,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xaf, 0x8f, 0x8f, 0x8f, 0x8f, 0x8f,
    0x8f, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf,
    0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0x8f, 0x80, 0x8c, 0x8f, 0x8f,
    0x8f, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf,
    0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0xcf, 0x00, 0x8f, 0x8f, 0x8f, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static int ch_word(uint8_t b)
{
    return (check_ch[b] & CH_WORD) != 0;
}

static unsigned ch_class(uint8_t b)
{
    return check_ch[b] & CL_ALL;
}

static uint8_t ch_upper(uint8_t b)
{
    return b >= 'a' && b <= 'z' ? (uint8_t)(b - 'a' + 'A') : b;
}

static uint64_t check_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;

    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 1099511628211ULL;
    }
    return h;
}

/* ---- the command table ----------------------------------------------------- */

static const uint8_t seq_mbox[] = {K_MBOX, K_END};
static const uint8_t seq_mbox_opt[] = {K_MBOX, K_OPT_ALIST, K_END};
static const uint8_t seq_rename[] = {K_MBOX, K_MBOX, K_OPT_ALIST, K_END};
static const uint8_t seq_status[] = {K_MBOX, K_ALIST, K_END};
static const uint8_t seq_lsub[] = {K_MBOX, K_LISTMB, K_END};
static const uint8_t seq_copy[] = {K_SEQ, K_MBOX, K_END};
static const uint8_t seq_seq[] = {K_SEQ, K_END};
static const uint8_t seq_none[] = {K_END};
static const uint8_t seq_astr[] = {K_ASTR, K_END};
static const uint8_t seq_setacl[] = {K_MBOX, K_ASTR, K_ASTR, K_END};
static const uint8_t seq_mbox_astr[] = {K_MBOX, K_ASTR, K_END};
static const uint8_t seq_enable[] = {K_ATOM, K_ATOMS, K_END};
static const uint8_t seq_atom[] = {K_ATOM, K_END};
static const uint8_t seq_replace[] = {K_SEQ, K_MBOX, K_APPEND_MSG, K_END};

enum check_seq {
    SEQ_MBOX,
    SEQ_MBOX_OPT,
    SEQ_RENAME,
    SEQ_STATUS,
    SEQ_LSUB,
    SEQ_COPY,
    SEQ_SEQ,
    SEQ_NONE,
    SEQ_ASTR,
    SEQ_SETACL,
    SEQ_MBOX_ASTR,
    SEQ_ENABLE,
    SEQ_ATOM,
    SEQ_REPLACE,
};

static const uint8_t *const check_seqs[] = {
    [SEQ_MBOX] = seq_mbox,     [SEQ_MBOX_OPT] = seq_mbox_opt,   [SEQ_RENAME] = seq_rename,
    [SEQ_STATUS] = seq_status, [SEQ_LSUB] = seq_lsub,           [SEQ_COPY] = seq_copy,
    [SEQ_SEQ] = seq_seq,       [SEQ_NONE] = seq_none,           [SEQ_ASTR] = seq_astr,
    [SEQ_SETACL] = seq_setacl, [SEQ_MBOX_ASTR] = seq_mbox_astr, [SEQ_ENABLE] = seq_enable,
    [SEQ_ATOM] = seq_atom,     [SEQ_REPLACE] = seq_replace,
};

enum search_variant { SV_SEARCH, SV_SORT, SV_THREAD, SV_ESEARCH };

/* Where a command may stand. */
#define CF_PLAIN 1u /* without UID */
#define CF_UID 2u   /* after UID */

struct check_command {
    const char *name;
    enum imap_check_cmd cmd;
    uint8_t rule; /* R_*, or 0xff: refused */
    uint8_t aux;
    uint8_t where; /* CF_* */
    const char *refusal; /* rule 0xff: the REJECT reason */
};

#define RULE_REFUSED 0xff

static const struct check_command check_commands[] = {
    {"APPEND", IMAP_CHECK_CMD_RELAYED, R_APPEND, 0, CF_PLAIN, NULL},
    {"AUTHENTICATE", IMAP_CHECK_CMD_REFUSED, RULE_REFUSED, 0, CF_PLAIN, IMAP_CHECK_E_LOGGED_IN},
    {"CAPABILITY", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_NONE, CF_PLAIN, NULL},
    {"CHECK", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_NONE, CF_PLAIN, NULL},
    {"CLOSE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_NONE, CF_PLAIN, NULL},
    {"COMPRESS", IMAP_CHECK_CMD_COMPRESS, R_SEQ, SEQ_ATOM, CF_PLAIN, NULL},
    {"COPY", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_COPY, CF_PLAIN | CF_UID, NULL},
    {"CREATE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX_OPT, CF_PLAIN, NULL},
    {"DELETE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX, CF_PLAIN, NULL},
    {"DELETEACL", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX_ASTR, CF_PLAIN, NULL},
    {"ENABLE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_ENABLE, CF_PLAIN, NULL},
    {"ESEARCH", IMAP_CHECK_CMD_RELAYED, R_SEARCH, SV_ESEARCH, CF_PLAIN, NULL},
    {"EXAMINE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX_OPT, CF_PLAIN, NULL},
    {"EXPUNGE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_NONE, CF_PLAIN, NULL},
    {"FETCH", IMAP_CHECK_CMD_RELAYED, R_FETCH, 0, CF_PLAIN | CF_UID, NULL},
    {"GETACL", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX, CF_PLAIN, NULL},
    {"GETMETADATA", IMAP_CHECK_CMD_RELAYED, R_GETMETA, 0, CF_PLAIN, NULL},
    {"GETQUOTA", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_ASTR, CF_PLAIN, NULL},
    {"GETQUOTAROOT", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX, CF_PLAIN, NULL},
    {"ID", IMAP_CHECK_CMD_RELAYED, R_ID, 0, CF_PLAIN, NULL},
    {"IDLE", IMAP_CHECK_CMD_IDLE, R_SEQ, SEQ_NONE, CF_PLAIN, NULL},
    {"LIST", IMAP_CHECK_CMD_RELAYED, R_LIST, 0, CF_PLAIN, NULL},
    {"LISTRIGHTS", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX_ASTR, CF_PLAIN, NULL},
    {"LOGIN", IMAP_CHECK_CMD_REFUSED, RULE_REFUSED, 0, CF_PLAIN, IMAP_CHECK_E_LOGGED_IN},
    {"LOGOUT", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_NONE, CF_PLAIN, NULL},
    {"LSUB", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_LSUB, CF_PLAIN, NULL},
    {"MOVE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_COPY, CF_PLAIN | CF_UID, NULL},
    {"MYRIGHTS", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX, CF_PLAIN, NULL},
    {"NAMESPACE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_NONE, CF_PLAIN, NULL},
    {"NOOP", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_NONE, CF_PLAIN, NULL},
    {"RENAME", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_RENAME, CF_PLAIN, NULL},
    {"REPLACE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_REPLACE, CF_PLAIN | CF_UID, NULL},
    {"SEARCH", IMAP_CHECK_CMD_RELAYED, R_SEARCH, SV_SEARCH, CF_PLAIN | CF_UID, NULL},
    {"SELECT", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX_OPT, CF_PLAIN, NULL},
    {"SETACL", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_SETACL, CF_PLAIN, NULL},
    {"SETMETADATA", IMAP_CHECK_CMD_RELAYED, R_SETMETA, 0, CF_PLAIN, NULL},
    {"SETQUOTA", IMAP_CHECK_CMD_RELAYED, R_SETQUOTA, 0, CF_PLAIN, NULL},
    {"SORT", IMAP_CHECK_CMD_RELAYED, R_SEARCH, SV_SORT, CF_PLAIN | CF_UID, NULL},
    {"STARTTLS", IMAP_CHECK_CMD_REFUSED, RULE_REFUSED, 0, CF_PLAIN, IMAP_CHECK_E_STARTTLS},
    {"STATUS", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_STATUS, CF_PLAIN, NULL},
    {"STORE", IMAP_CHECK_CMD_RELAYED, R_STORE, 0, CF_PLAIN | CF_UID, NULL},
    {"SUBSCRIBE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX, CF_PLAIN, NULL},
    {"THREAD", IMAP_CHECK_CMD_RELAYED, R_SEARCH, SV_THREAD, CF_PLAIN | CF_UID, NULL},
    {"UNAUTHENTICATE", IMAP_CHECK_CMD_REFUSED, RULE_REFUSED, 0, CF_PLAIN,
     IMAP_CHECK_E_UNAUTHENTICATE},
    {"UNSELECT", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_NONE, CF_PLAIN, NULL},
    {"UNSUBSCRIBE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_MBOX, CF_PLAIN, NULL},
    {"EXPUNGE", IMAP_CHECK_CMD_RELAYED, R_SEQ, SEQ_SEQ, CF_UID, NULL},
};

/* The extension a command needs; commands not listed are IMAP4rev1. */
struct check_command_ext {
    const char *name;
    uint8_t where; /* CF_* */
    uint32_t ext;
};

static const struct check_command_ext check_command_exts[] = {
    {"DELETEACL", CF_PLAIN, IMAP_CHECK_EXT_ACL},
    {"ENABLE", CF_PLAIN, IMAP_CHECK_EXT_ENABLE},
    {"ESEARCH", CF_PLAIN, IMAP_CHECK_EXT_MULTISEARCH},
    {"EXPUNGE", CF_UID, IMAP_CHECK_EXT_UIDPLUS},
    {"GETACL", CF_PLAIN, IMAP_CHECK_EXT_ACL},
    {"GETMETADATA", CF_PLAIN, IMAP_CHECK_EXT_METADATA},
    {"GETQUOTA", CF_PLAIN, IMAP_CHECK_EXT_QUOTA},
    {"GETQUOTAROOT", CF_PLAIN, IMAP_CHECK_EXT_QUOTA},
    {"ID", CF_PLAIN, IMAP_CHECK_EXT_ID},
    {"IDLE", CF_PLAIN, IMAP_CHECK_EXT_IDLE},
    {"LISTRIGHTS", CF_PLAIN, IMAP_CHECK_EXT_ACL},
    {"MOVE", CF_PLAIN | CF_UID, IMAP_CHECK_EXT_MOVE},
    {"MYRIGHTS", CF_PLAIN, IMAP_CHECK_EXT_ACL},
    {"NAMESPACE", CF_PLAIN, IMAP_CHECK_EXT_NAMESPACE},
    {"REPLACE", CF_PLAIN | CF_UID, IMAP_CHECK_EXT_REPLACE},
    {"SETACL", CF_PLAIN, IMAP_CHECK_EXT_ACL},
    {"SETMETADATA", CF_PLAIN, IMAP_CHECK_EXT_METADATA},
    {"SETQUOTA", CF_PLAIN, IMAP_CHECK_EXT_QUOTA},
    {"SORT", CF_PLAIN | CF_UID, IMAP_CHECK_EXT_SORT},
    {"THREAD", CF_PLAIN | CF_UID, IMAP_CHECK_EXT_THREAD},
    {"UNSELECT", CF_PLAIN, IMAP_CHECK_EXT_UNSELECT},
};

/* Capability atoms and what they give; a trailing "=" matches a prefix. */
struct check_capability {
    const char *atom;
    uint32_t exts;
};

static const struct check_capability check_capabilities[] = {
    {"ACL", IMAP_CHECK_EXT_ACL},
    {"BINARY", IMAP_CHECK_EXT_BINARY},
    {"CATENATE", IMAP_CHECK_EXT_CATENATE},
    {"ENABLE", IMAP_CHECK_EXT_ENABLE},
    {"ID", IMAP_CHECK_EXT_ID},
    {"IDLE", IMAP_CHECK_EXT_IDLE},
    {"IMAP4REV2", IMAP_CHECK_EXT_NAMESPACE | IMAP_CHECK_EXT_UNSELECT | IMAP_CHECK_EXT_MOVE |
                      IMAP_CHECK_EXT_ENABLE | IMAP_CHECK_EXT_IDLE | IMAP_CHECK_EXT_UIDPLUS},
    {"METADATA", IMAP_CHECK_EXT_METADATA},
    {"METADATA-SERVER", IMAP_CHECK_EXT_METADATA},
    {"MOVE", IMAP_CHECK_EXT_MOVE},
    {"MULTIAPPEND", IMAP_CHECK_EXT_MULTIAPPEND},
    {"MULTISEARCH", IMAP_CHECK_EXT_MULTISEARCH},
    {"NAMESPACE", IMAP_CHECK_EXT_NAMESPACE},
    {"QUOTA", IMAP_CHECK_EXT_QUOTA},
    {"QUOTA=", IMAP_CHECK_EXT_QUOTA},
    {"REPLACE", IMAP_CHECK_EXT_REPLACE},
    {"SORT", IMAP_CHECK_EXT_SORT},
    {"SORT=", IMAP_CHECK_EXT_SORT},
    {"THREAD=", IMAP_CHECK_EXT_THREAD},
    {"UIDPLUS", IMAP_CHECK_EXT_UIDPLUS},
    {"UNSELECT", IMAP_CHECK_EXT_UNSELECT},
};

/* Search keys and their arguments: A astring, D date, N number, S sequence
 * set, F flag keyword (atom), K search key, M the MODSEQ form. */
struct check_search_key {
    const char *name;
    const char *args;
};

static const struct check_search_key check_search_keys[] = {
    {"ALL", ""},         {"ANSWERED", ""},    {"BCC", "A"},         {"BEFORE", "D"},
    {"BODY", "A"},       {"CC", "A"},         {"DELETED", ""},      {"DRAFT", ""},
    {"EMAILID", "F"},    {"FLAGGED", ""},     {"FROM", "A"},        {"FUZZY", "K"},
    {"HEADER", "AA"},    {"KEYWORD", "F"},    {"LARGER", "N"},      {"MODSEQ", "M"},
    {"NEW", ""},         {"NOT", "K"},        {"OLD", ""},          {"OLDER", "N"},
    {"ON", "D"},         {"OR", "KK"},        {"RECENT", ""},       {"SAVEDATESUPPORTED", ""},
    {"SAVEDBEFORE", "D"}, {"SAVEDON", "D"},   {"SAVEDSINCE", "D"},  {"SEEN", ""},
    {"SENTBEFORE", "D"}, {"SENTON", "D"},     {"SENTSINCE", "D"},   {"SINCE", "D"},
    {"SMALLER", "N"},    {"SUBJECT", "A"},    {"TEXT", "A"},        {"THREADID", "F"},
    {"TO", "A"},         {"UID", "S"},        {"UNANSWERED", ""},   {"UNDELETED", ""},
    {"UNDRAFT", ""},     {"UNFLAGGED", ""},   {"UNKEYWORD", "F"},   {"UNSEEN", ""},
    {"YOUNGER", "N"},
};

#define NUM_ITEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- grammar ----------------------------------------------------------------- */

enum g_result {
    G_TAKE,  /* the token was consumed */
    G_POP,   /* the rule is complete; offer the token to the one below */
    G_RETRY, /* a rule was pushed; offer it the token */
    G_ERR,   /* c->reason says why */
};

static enum g_result g_err(struct imap_check *c, const char *reason)
{
    c->reason = reason;
    return G_ERR;
}

static enum g_result g_push(struct imap_check *c, enum check_rule rule, uint8_t aux)
{
    struct check_frame *f;

    if (c->depth >= IMAP_CHECK_MAX_DEPTH) {
        return g_err(c, IMAP_CHECK_E_DEPTH);
    }
    f = &c->stack[c->depth++];
    memset(f, 0, sizeof(*f));
    f->rule = (uint8_t)rule;
    f->aux = aux;
    return G_RETRY;
}

/* g_push_list: the token is "(" opening a list of elem; it is consumed. */
static enum g_result g_push_list(struct imap_check *c, enum check_elem elem)
{
    if (g_push(c, R_PLIST, (uint8_t)elem) == G_ERR) {
        return G_ERR;
    }
    return G_TAKE;
}

static int tok_word_is(const struct check_tok *t, const char *s)
{
    return t->type == TOK_WORD && t->word_len == strlen(s) && strcmp(t->word, s) == 0;
}

/* A non-literal token in a literal-less position gets the literal reason. */
static enum g_result g_bad(struct imap_check *c, const struct check_tok *t)
{
    if (t->type == TOK_LITERAL) {
        return g_err(c, IMAP_CHECK_E_LITERAL_HERE);
    }
    if (t->type == TOK_EOL) {
        return g_err(c, IMAP_CHECK_E_ARGS);
    }
    return g_err(c, IMAP_CHECK_E_ARGS);
}

/* Literal limit: message data or another string. */
static enum g_result g_literal(struct imap_check *c, const struct check_tok *t, int lit8_ok,
                               int is_data)
{
    if (t->lit8 && !lit8_ok) {
        return g_err(c, IMAP_CHECK_E_LITERAL8_HERE);
    }
    if (t->lit8 && !(c->opts.server_exts & IMAP_CHECK_EXT_BINARY)) {
        return g_err(c, IMAP_CHECK_E_EXT_NOT_SUPPORTED);
    }
    c->lit_data = (uint8_t)is_data;
    return G_TAKE;
}

static enum g_result want_astring(struct imap_check *c, const struct check_tok *t)
{
    if (t->type == TOK_WORD && (t->cls & CL_ASTR)) {
        return G_TAKE;
    }
    if (t->type == TOK_QUOTED) {
        return G_TAKE;
    }
    if (t->type == TOK_LITERAL) {
        return g_literal(c, t, 0, 0);
    }
    return g_bad(c, t);
}

static enum g_result want_string(struct imap_check *c, const struct check_tok *t)
{
    if (t->type == TOK_QUOTED) {
        return G_TAKE;
    }
    if (t->type == TOK_LITERAL) {
        return g_literal(c, t, 0, 0);
    }
    return g_bad(c, t);
}

static enum g_result want_nstring(struct imap_check *c, const struct check_tok *t, int lit8_ok)
{
    if (tok_word_is(t, "NIL")) {
        return G_TAKE;
    }
    if (t->type == TOK_LITERAL) {
        return g_literal(c, t, lit8_ok, 0);
    }
    return want_string(c, t);
}

static enum g_result want_listmb(struct imap_check *c, const struct check_tok *t)
{
    if (t->type == TOK_WORD && (t->cls & CL_LISTMB)) {
        return G_TAKE;
    }
    return want_astring(c, t);
}

static enum g_result want_class(struct imap_check *c, const struct check_tok *t, unsigned cls)
{
    if (t->type == TOK_WORD && (t->cls & cls)) {
        return G_TAKE;
    }
    return g_bad(c, t);
}

static enum g_result want_number(struct imap_check *c, const struct check_tok *t)
{
    if (t->type == TOK_WORD && (t->cls & CL_DIGITS) && t->word_len <= 20) {
        return G_TAKE;
    }
    return g_bad(c, t);
}

/* flag: one of the five system flags, or an atom (keyword).  RFC 9051 also
 * has flag-extension ("\" atom), but Dovecot 2.3 reads an APPEND's flags
 * before its message and answers BAD for an unknown system flag (\Recent,
 * \Foo, \*), skipping to the next LF: the end of the message's "{n+}"
 * announcement, whose data it would then run as commands. */
static enum g_result want_flag(struct imap_check *c, const struct check_tok *t)
{
    static const char *const system_flags[] = {"\\ANSWERED", "\\FLAGGED", "\\DELETED",
                                               "\\SEEN", "\\DRAFT"};

    if (t->type == TOK_WORD) {
        if (t->cls & CL_ATOM) {
            return G_TAKE;
        }
        for (size_t i = 0; i < sizeof(system_flags) / sizeof(system_flags[0]); i++) {
            if (tok_word_is(t, system_flags[i])) {
                return G_TAKE;
            }
        }
    }
    return g_bad(c, t);
}

/* check_digits: n decimal digits at p, as a number no greater than max;
 * returns it, or -1. */
static int check_digits(const char *p, size_t n, int max)
{
    int v = 0;

    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        v = v * 10 + (p[i] - '0');
    }
    return v <= max ? v : -1;
}

/* want_date_time: APPEND's quoted date-time, "dd-Mon-yyyy hh:mm:ss +zzzz"
 * (the day also " d" or "d"), checked byte by byte and by range: Dovecot
 * 2.3 answers BAD for one it cannot parse before it reads the message, with
 * the consequence told at want_flag. */
static enum g_result want_date_time(struct imap_check *c, const struct check_tok *t)
{
    static const char months[] = "JANFEBMARAPRMAYJUNJULAUGSEPOCTNOVDEC";
    const char *q = t->qtext;
    size_t n = t->qtext_len, day_len;
    int ok = 1;

    if (t->type != TOK_QUOTED || n < 25 || n > 26) {
        return g_err(c, IMAP_CHECK_E_ARGS);
    }
    day_len = n - 24; /* "d" or "dd" / " d" */
    if (q[0] == ' ' && day_len == 2) {
        ok = check_digits(q + 1, 1, 9) >= 1;
    } else {
        int day = check_digits(q, day_len, 31);
        ok = day >= 1;
    }
    q += day_len;
    ok = ok && q[0] == '-' && q[4] == '-' && q[9] == ' ' && q[12] == ':' && q[15] == ':' &&
         q[18] == ' ' && (q[19] == '+' || q[19] == '-');
    if (ok) {
        int month = 0;
        for (; month < 12; month++) {
            if (memcmp(q + 1, months + 3 * month, 3) == 0) {
                break;
            }
        }
        ok = month < 12 && check_digits(q + 5, 4, 9999) >= 0 && check_digits(q + 10, 2, 23) >= 0 &&
             check_digits(q + 13, 2, 59) >= 0 && check_digits(q + 16, 2, 60) >= 0 &&
             check_digits(q + 20, 2, 99) >= 0 && check_digits(q + 22, 2, 59) >= 0;
    }
    return ok ? G_TAKE : g_err(c, IMAP_CHECK_E_ARGS);
}

/* date: date-text or a quoted date */
static enum g_result want_date(struct imap_check *c, const struct check_tok *t)
{
    if (t->type == TOK_QUOTED) {
        return G_TAKE;
    }
    return want_class(c, t, CL_DATE);
}

/* An element of an atom list: no literal. */
static enum g_result want_alist_elem(struct imap_check *c, const struct check_tok *t)
{
    if (t->type == TOK_WORD || t->type == TOK_QUOTED) {
        return G_TAKE;
    }
    if (t->type == TOK_LP) {
        return g_push_list(c, E_ALIST);
    }
    return g_bad(c, t);
}

static enum g_result rule_plist(struct imap_check *c, struct check_frame *f,
                                const struct check_tok *t)
{
    enum check_elem e = (enum check_elem)f->aux;
    int pairs = e == E_IDPAIR || e == E_QUOTA || e == E_METAPAIR;
    int nonempty = e == E_ASTR || e == E_LISTMB || e == E_MBOX || e == E_SKEY || e == E_FATT ||
                   e == E_CATPART || e == E_ESFILTER || e == E_ATOM;
    unsigned idx = f->n;

    if (t->type == TOK_RP) {
        if (t->sp) {
            return g_err(c, IMAP_CHECK_E_SPACE);
        }
        if ((nonempty && f->n == 0) || (pairs && (f->n & 1))) {
            return g_err(c, IMAP_CHECK_E_ARGS);
        }
        c->depth--; /* the list is done with its ")" */
        return G_TAKE;
    }
    if (t->type == TOK_EOL) {
        return g_err(c, IMAP_CHECK_E_ARGS);
    }
    if ((f->n == 0) != !t->sp) {
        return g_err(c, IMAP_CHECK_E_SPACE);
    }
    if (f->n < 0xff) {
        f->n++;
    }
    switch (e) {
    case E_ALIST:
        return want_alist_elem(c, t);
    case E_ASTR:
    case E_MBOX:
        return want_astring(c, t);
    case E_FLAG:
        return want_flag(c, t);
    case E_LISTMB:
        return want_listmb(c, t);
    case E_ATOM:
        return want_class(c, t, CL_ATOM);
    case E_IDPAIR:
        return (idx & 1) ? want_nstring(c, t, 0) : want_string(c, t);
    case E_QUOTA:
        return (idx & 1) ? want_number(c, t) : want_class(c, t, CL_ATOM);
    case E_METAPAIR:
        return (idx & 1) ? want_nstring(c, t, 1) : want_astring(c, t);
    case E_SKEY:
        return g_push(c, R_SKEY, 0);
    case E_FATT:
        return g_push(c, R_FATT, 0);
    case E_CATPART:
        return g_push(c, R_CATPART, 0);
    case E_ESFILTER:
        return g_push(c, R_ESFILTER, 0);
    case E_XANY:
        if (t->type == TOK_LP) {
            return g_push_list(c, E_XANY);
        }
        if (t->type == TOK_LITERAL) {
            return g_err(c, IMAP_CHECK_E_LITERAL_HERE);
        }
        return G_TAKE;
    }
    return g_err(c, IMAP_CHECK_E_ARGS);
}

static enum g_result rule_seq(struct imap_check *c, struct check_frame *f,
                              const struct check_tok *t)
{
    const uint8_t *seq = check_seqs[f->aux];
    enum check_kind k = (enum check_kind)seq[f->step];

    if (k == K_END) {
        return G_POP;
    }
    if (k == K_ATOMS || k == K_OPT_ALIST) {
        int match = t->sp && (k == K_ATOMS ? t->type == TOK_WORD : t->type == TOK_LP);

        if (!match) {
            f->step++;
            return rule_seq(c, f, t);
        }
    }
    if (!t->sp) {
        return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
    }
    if (k != K_ATOMS) {
        f->step++;
    }
    switch (k) {
    case K_MBOX:
    case K_ASTR:
        return want_astring(c, t);
    case K_LISTMB:
        return want_listmb(c, t);
    case K_SEQ:
        return want_class(c, t, CL_SEQ);
    case K_ATOM:
    case K_ATOMS:
        return want_class(c, t, CL_ATOM);
    case K_OPT_ALIST:
    case K_ALIST:
        if (t->type != TOK_LP) {
            return g_bad(c, t);
        }
        return g_push_list(c, E_ALIST);
    case K_APPEND_MSG:
        /* the message starts with this token: R_APPEND at its options step */
        if (g_push(c, R_APPEND, 1) == G_ERR) {
            return G_ERR;
        }
        c->stack[c->depth - 1].step = 1;
        return G_RETRY;
    case K_END:
        break;
    }
    return g_err(c, IMAP_CHECK_E_ARGS);
}

/* APPEND: step 0 mailbox; 1 message start; 2 after flags; 3 after date;
 * 4 after a message; 5 after CATENATE. aux 1: one message only (REPLACE). */
static enum g_result rule_append(struct imap_check *c, struct check_frame *f,
                                 const struct check_tok *t)
{
    if (f->step == 4 && (f->aux == 1 || !t->sp || t->type == TOK_EOL || t->type == TOK_RP)) {
        return G_POP;
    }
    if (!t->sp) {
        return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
    }
    switch (f->step) {
    case 0:
        f->step = 1;
        return want_astring(c, t);
    case 1:
    case 2:
    case 3:
    case 4:
        if (f->step == 4 && !(c->opts.server_exts & IMAP_CHECK_EXT_MULTIAPPEND)) {
            return g_err(c, IMAP_CHECK_E_EXT_NOT_SUPPORTED);
        }
        if (t->type == TOK_LITERAL) {
            f->step = 4;
            return g_literal(c, t, 1, 1);
        }
        if (tok_word_is(t, "CATENATE")) {
            if (!(c->opts.server_exts & IMAP_CHECK_EXT_CATENATE)) {
                return g_err(c, IMAP_CHECK_E_EXT_NOT_SUPPORTED);
            }
            f->step = 5;
            return G_TAKE;
        }
        if (t->type == TOK_LP && (f->step == 1 || f->step == 4)) {
            f->step = 2;
            return g_push_list(c, E_FLAG);
        }
        if (t->type == TOK_QUOTED && f->step != 3) {
            f->step = 3;
            return want_date_time(c, t);
        }
        return g_bad(c, t);
    case 5:
        if (t->type != TOK_LP) {
            return g_bad(c, t);
        }
        f->step = 4;
        return g_push_list(c, E_CATPART);
    }
    return g_err(c, IMAP_CHECK_E_ARGS);
}

/* cat-part: "TEXT" SP literal / "URL" SP astring */
static enum g_result rule_catpart(struct imap_check *c, struct check_frame *f,
                                  const struct check_tok *t)
{
    switch (f->step) {
    case 0:
        if (tok_word_is(t, "TEXT")) {
            f->step = 1;
            return G_TAKE;
        }
        if (tok_word_is(t, "URL")) {
            f->step = 2;
            return G_TAKE;
        }
        return g_bad(c, t);
    case 1:
        if (!t->sp) {
            return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
        }
        if (t->type != TOK_LITERAL) {
            return g_bad(c, t);
        }
        f->step = 3;
        return g_literal(c, t, 1, 1);
    case 2:
        if (!t->sp) {
            return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
        }
        f->step = 3;
        return want_astring(c, t);
    }
    return G_POP;
}

/* LIST [SP "(" sel ")"] SP mailbox SP (pattern / "(" patterns ")")
 * [SP "RETURN" SP "(" opts ")"]: steps 0..5 */
static enum g_result rule_list(struct imap_check *c, struct check_frame *f,
                               const struct check_tok *t)
{
    if (f->step >= 3 && (!t->sp || t->type == TOK_EOL)) {
        return f->step == 4 ? g_err(c, IMAP_CHECK_E_ARGS) : G_POP;
    }
    if (f->step == 5) {
        return G_POP;
    }
    if (!t->sp) {
        return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
    }
    switch (f->step) {
    case 0:
        if (t->type == TOK_LP) {
            f->step = 1;
            return g_push_list(c, E_ALIST);
        }
        f->step = 2;
        return want_astring(c, t);
    case 1:
        f->step = 2;
        return want_astring(c, t);
    case 2:
        f->step = 3;
        if (t->type == TOK_LP) {
            return g_push_list(c, E_LISTMB);
        }
        return want_listmb(c, t);
    case 3:
        if (!tok_word_is(t, "RETURN")) {
            return g_bad(c, t);
        }
        f->step = 4;
        return G_TAKE;
    case 4:
        if (t->type != TOK_LP) {
            return g_bad(c, t);
        }
        f->step = 5;
        return g_push_list(c, E_ALIST);
    }
    return g_err(c, IMAP_CHECK_E_ARGS);
}

/* SEARCH [RETURN (...)] [CHARSET astring] keys; SORT [RETURN (...)]
 * (criteria) charset keys; THREAD algorithm charset keys; ESEARCH [IN
 * (filters)] [RETURN (...)] [CHARSET astring] keys.  Steps: 0 start, 1 after
 * IN, 2 after RETURN, 3 after CHARSET, 4 keys (at least one seen when n),
 * 5 THREAD/SORT charset, 6 after the IN list (ESEARCH), 7 after RETURN list */
static enum g_result rule_search(struct imap_check *c, struct check_frame *f,
                                 const struct check_tok *t)
{
    enum search_variant v = (enum search_variant)f->aux;

    if (f->step == 4 && f->n && (!t->sp || t->type == TOK_EOL)) {
        return G_POP;
    }
    if (!t->sp) {
        return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
    }
    switch (f->step) {
    case 0:
        if (v == SV_ESEARCH && tok_word_is(t, "IN")) {
            f->step = 1;
            return G_TAKE;
        }
        /* fall through */
    case 6:
        if (v != SV_THREAD && tok_word_is(t, "RETURN")) {
            f->step = 2;
            return G_TAKE;
        }
        /* fall through */
    case 7:
        if (v == SV_THREAD && f->step == 0) {
            f->step = 5;
            return want_class(c, t, CL_ATOM);
        }
        if (v == SV_SORT) {
            if (t->type != TOK_LP) {
                return g_bad(c, t);
            }
            f->step = 5;
            return g_push_list(c, E_ATOM);
        }
        if (tok_word_is(t, "CHARSET")) {
            f->step = 3;
            return G_TAKE;
        }
        f->step = 4;
        return rule_search(c, f, t);
    case 1:
        if (t->type != TOK_LP) {
            return g_bad(c, t);
        }
        f->step = 6;
        return g_push_list(c, E_ESFILTER);
    case 2:
        if (t->type != TOK_LP) {
            return g_bad(c, t);
        }
        f->step = 7;
        return g_push_list(c, E_ALIST);
    case 3:
    case 5:
        f->step = 4;
        return want_astring(c, t);
    case 4:
        f->n = 1;
        return g_push(c, R_SKEY, 0);
    }
    return g_err(c, IMAP_CHECK_E_ARGS);
}

static int search_key_find(const struct check_tok *t)
{
    if (t->word_len > IMAP_CHECK_WORD_KEEP) {
        return -1;
    }
    for (size_t i = 0; i < NUM_ITEMS(check_search_keys); i++) {
        if (strcmp(check_search_keys[i].name, t->word) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* One search key: step 0 the key; then step 1.. its arguments; R_SKEY with
 * key 0xffff is complete.  MODSEQ: step 1 quoted entry or number; 20 entry
 * type; 21 number. */
#define SKEY_DONE 0xffffu
static enum g_result rule_skey(struct imap_check *c, struct check_frame *f,
                               const struct check_tok *t)
{
    const char *args;
    char a;
    int k;

    if (f->step == 0) {
        f->step = 1;
        if (t->type == TOK_LP) {
            f->key = SKEY_DONE;
            return g_push_list(c, E_SKEY);
        }
        if (t->type == TOK_WORD && (t->cls & CL_SEQ)) {
            f->key = SKEY_DONE;
            return G_TAKE;
        }
        if (t->type != TOK_WORD) {
            return g_bad(c, t);
        }
        k = search_key_find(t);
        if (k < 0) {
            return g_err(c, IMAP_CHECK_E_SEARCH_KEY);
        }
        f->key = (uint16_t)k;
        if (check_search_keys[k].args[0] == '\0') {
            f->key = SKEY_DONE;
        }
        return G_TAKE;
    }
    if (f->key == SKEY_DONE) {
        return G_POP;
    }
    if (!t->sp) {
        return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
    }
    if (f->step >= 20) {
        if (f->step == 20) {
            f->step = 21;
            return want_class(c, t, CL_ATOM);
        }
        f->key = SKEY_DONE;
        return want_number(c, t);
    }
    args = check_search_keys[f->key].args;
    a = args[f->step - 1];
    f->step++;
    if (args[f->step - 1] == '\0') {
        f->key = SKEY_DONE;
    }
    switch (a) {
    case 'A':
        return want_astring(c, t);
    case 'D':
        return want_date(c, t);
    case 'N':
        return want_number(c, t);
    case 'S':
        return want_class(c, t, CL_SEQ);
    case 'F':
        return want_class(c, t, CL_ATOM);
    case 'K':
        return g_push(c, R_SKEY, 0);
    case 'M':
        if (t->type == TOK_QUOTED) {
            f->key = 0; /* not done: entry type and number follow */
            f->step = 20;
            return G_TAKE;
        }
        return want_number(c, t);
    }
    return g_err(c, IMAP_CHECK_E_ARGS);
}

/* ESEARCH filter: a word; subtree/subtree-one/mailboxes take mailboxes. */
static enum g_result rule_esfilter(struct imap_check *c, struct check_frame *f,
                                   const struct check_tok *t)
{
    if (f->step == 0) {
        if (t->type != TOK_WORD || !(t->cls & CL_ATOM)) {
            return g_bad(c, t);
        }
        f->step = (tok_word_is(t, "SUBTREE") || tok_word_is(t, "SUBTREE-ONE") ||
                   tok_word_is(t, "MAILBOXES"))
                      ? 1
                      : 2;
        return G_TAKE;
    }
    if (f->step == 2) {
        return G_POP;
    }
    if (!t->sp) {
        return g_err(c, IMAP_CHECK_E_ARGS);
    }
    f->step = 2;
    if (t->type == TOK_LP) {
        return g_push_list(c, E_MBOX);
    }
    return want_astring(c, t);
}

/* FETCH SP seq SP (macro / att / "(" atts ")") [SP "(" modifiers ")"] */
static enum g_result rule_fetch(struct imap_check *c, struct check_frame *f,
                                const struct check_tok *t)
{
    if (f->step >= 2 && (!t->sp || t->type == TOK_EOL || f->step == 3)) {
        return G_POP;
    }
    if (!t->sp) {
        return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
    }
    switch (f->step) {
    case 0:
        f->step = 1;
        return want_class(c, t, CL_SEQ);
    case 1:
        f->step = 2;
        if (t->type == TOK_LP) {
            return g_push_list(c, E_FATT);
        }
        return g_push(c, R_FATT, 0);
    case 2:
        if (t->type != TOK_LP) {
            return g_bad(c, t);
        }
        f->step = 3;
        return g_push_list(c, E_ALIST);
    }
    return g_err(c, IMAP_CHECK_E_ARGS);
}

/* partial: "" or "<" number ["." number] ">" */
static int fatt_partial_ok(const char *p, size_t n)
{
    size_t i = 1, d = 0;

    if (n == 0) {
        return 1;
    }
    if (p[0] != '<' || p[n - 1] != '>') {
        return 0;
    }
    for (; i < n - 1 && p[i] >= '0' && p[i] <= '9'; i++) {
        d++;
    }
    if (d == 0) {
        return 0;
    }
    if (i < n - 1 && p[i] == '.') {
        i++;
        d = 0;
        for (; i < n - 1 && p[i] >= '0' && p[i] <= '9'; i++) {
            d++;
        }
        if (d == 0) {
            return 0;
        }
    }
    return i == n - 1;
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);

    return n >= k && memcmp(s + n - k, suffix, k) == 0 && (n == k || s[n - k - 1] == '.');
}

/* fatt_check: 0 a complete item, 1 needs a header list, -1 invalid. */
static int fatt_check(const struct check_tok *t)
{
    static const char *const prefixes[] = {"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK",
                                           "BINARY.SIZE"};
    const char *w = t->word, *lb, *rb;
    size_t plen, slen;
    int known = 0;

    if (t->type != TOK_WORD || t->word_len > IMAP_CHECK_WORD_KEEP) {
        return -1;
    }
    lb = t->word_len <= IMAP_CHECK_WORD_KEEP ? strchr(w, '[') : NULL;
    if (lb == NULL) {
        return (t->cls & CL_ATOM) && strchr(w, '[') == NULL ? 0 : -1;
    }
    plen = (size_t)(lb - w);
    for (size_t i = 0; i < NUM_ITEMS(prefixes); i++) {
        if (strlen(prefixes[i]) == plen && memcmp(prefixes[i], w, plen) == 0) {
            known = 1;
        }
    }
    if (!known) {
        return -1;
    }
    rb = strchr(lb, ']');
    slen = rb != NULL ? (size_t)(rb - lb - 1) : strlen(lb + 1);
    for (size_t i = 0; i < slen; i++) {
        char ch = lb[1 + i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || ch == '.')) {
            return -1;
        }
    }
    if (rb != NULL) {
        return fatt_partial_ok(rb + 1, strlen(rb + 1)) ? 0 : -1;
    }
    if (ends_with(lb + 1, slen, "HEADER.FIELDS") || ends_with(lb + 1, slen, "HEADER.FIELDS.NOT")) {
        return 1;
    }
    return -1;
}

/* One fetch item: step 0 the word; 1 wants SP "(" header list; 2 wants
 * "]" [partial]; 3 done. */
static enum g_result rule_fatt(struct imap_check *c, struct check_frame *f,
                               const struct check_tok *t)
{
    int r;

    switch (f->step) {
    case 0:
        r = fatt_check(t);
        if (r < 0) {
            return t->type == TOK_LITERAL ? g_err(c, IMAP_CHECK_E_LITERAL_HERE)
                                          : g_err(c, IMAP_CHECK_E_FETCH_ITEM);
        }
        f->step = r == 1 ? 1 : 3;
        return G_TAKE;
    case 1:
        if (!t->sp || t->type != TOK_LP) {
            return t->type == TOK_LITERAL ? g_err(c, IMAP_CHECK_E_LITERAL_HERE)
                                          : g_err(c, IMAP_CHECK_E_FETCH_ITEM);
        }
        f->step = 2;
        return g_push_list(c, E_ASTR);
    case 2:
        if (t->sp || t->type != TOK_WORD || t->word_len > IMAP_CHECK_WORD_KEEP ||
            t->word[0] != ']' || !fatt_partial_ok(t->word + 1, t->word_len - 1)) {
            return g_err(c, IMAP_CHECK_E_FETCH_ITEM);
        }
        f->step = 3;
        return G_TAKE;
    }
    return G_POP;
}

/* STORE SP seq [SP "(" mods ")"] SP item SP ("(" flags ")" / flag *(SP flag)) */
static enum g_result rule_store(struct imap_check *c, struct check_frame *f,
                                const struct check_tok *t)
{
    if ((f->step == 4 || f->step == 5) && (!t->sp || t->type == TOK_EOL || f->step == 5)) {
        return G_POP;
    }
    if (!t->sp) {
        return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
    }
    switch (f->step) {
    case 0:
        f->step = 1;
        return want_class(c, t, CL_SEQ);
    case 1:
        if (t->type == TOK_LP) {
            f->step = 2;
            return g_push_list(c, E_ALIST);
        }
        /* fall through */
    case 2:
        f->step = 3;
        return want_class(c, t, CL_ATOM);
    case 3:
        if (t->type == TOK_LP) {
            f->step = 5;
            return g_push_list(c, E_FLAG);
        }
        /* fall through */
    case 4:
        f->step = 4;
        return want_flag(c, t);
    }
    return g_err(c, IMAP_CHECK_E_ARGS);
}

/* ID SP (NIL / "(" *(string SP nstring) ")") */
static enum g_result rule_id(struct imap_check *c, struct check_frame *f,
                             const struct check_tok *t)
{
    if (f->step == 1) {
        return G_POP;
    }
    if (!t->sp) {
        return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
    }
    f->step = 1;
    if (tok_word_is(t, "NIL")) {
        return G_TAKE;
    }
    if (t->type == TOK_LP) {
        return g_push_list(c, E_IDPAIR);
    }
    return g_bad(c, t);
}

/* SETQUOTA SP astring SP "(" *(atom SP number) ")" */
/* rule_astring_list: SP astring SP "(" elements ")" (SETQUOTA, SETMETADATA). */
static enum g_result rule_astring_list(struct imap_check *c, struct check_frame *f,
                                       const struct check_tok *t, enum check_elem elem)
{
    if (f->step == 2) {
        return G_POP;
    }
    if (!t->sp) {
        return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
    }
    if (f->step++ == 0) {
        return want_astring(c, t);
    }
    if (t->type != TOK_LP) {
        return g_bad(c, t);
    }
    return g_push_list(c, elem);
}

static enum g_result rule_setquota(struct imap_check *c, struct check_frame *f,
                                   const struct check_tok *t)
{
    return rule_astring_list(c, f, t, E_QUOTA);
}

/* GETMETADATA [SP "(" opts ")"] SP mailbox SP (entry / "(" entries ")") */
static enum g_result rule_getmeta(struct imap_check *c, struct check_frame *f,
                                  const struct check_tok *t)
{
    if (f->step == 3) {
        return G_POP;
    }
    if (!t->sp) {
        return t->type == TOK_EOL ? g_err(c, IMAP_CHECK_E_ARGS) : g_err(c, IMAP_CHECK_E_SPACE);
    }
    switch (f->step) {
    case 0:
        if (t->type == TOK_LP) {
            f->step = 1;
            return g_push_list(c, E_ALIST);
        }
        /* fall through */
    case 1:
        f->step = 2;
        return want_astring(c, t);
    case 2:
        f->step = 3;
        if (t->type == TOK_LP) {
            return g_push_list(c, E_ASTR);
        }
        return want_astring(c, t);
    }
    return g_err(c, IMAP_CHECK_E_ARGS);
}

/* SETMETADATA SP mailbox SP "(" entry SP value *(SP entry SP value) ")" */
static enum g_result rule_setmeta(struct imap_check *c, struct check_frame *f,
                                  const struct check_tok *t)
{
    return rule_astring_list(c, f, t, E_METAPAIR);
}

/* A vendor command: any words, strings and lists, never a literal. */
static enum g_result rule_xcmd(struct imap_check *c, struct check_frame *f,
                               const struct check_tok *t)
{
    if (t->type == TOK_EOL || t->type == TOK_RP) {
        return G_POP;
    }
    if (!t->sp) {
        return g_err(c, IMAP_CHECK_E_SPACE);
    }
    if (t->type == TOK_LITERAL) {
        return g_err(c, IMAP_CHECK_E_LITERAL_HERE);
    }
    if (t->type == TOK_LP) {
        return g_push_list(c, E_XANY);
    }
    return G_TAKE;
}

static const struct check_command *command_find(const char *name, int uid)
{
    for (size_t i = 0; i < NUM_ITEMS(check_commands); i++) {
        const struct check_command *k = &check_commands[i];

        if (strcmp(k->name, name) == 0 && (k->where & (uid ? CF_UID : CF_PLAIN))) {
            return k;
        }
    }
    return NULL;
}

static uint32_t command_ext(const char *name, int uid)
{
    for (size_t i = 0; i < NUM_ITEMS(check_command_exts); i++) {
        const struct check_command_ext *e = &check_command_exts[i];

        if (strcmp(e->name, name) == 0 && (e->where & (uid ? CF_UID : CF_PLAIN))) {
            return e->ext;
        }
    }
    return 0;
}

static int command_exists(const char *name)
{
    for (size_t i = 0; i < NUM_ITEMS(check_commands); i++) {
        if (strcmp(check_commands[i].name, name) == 0) {
            return 1;
        }
    }
    return 0;
}

static int command_allowed(const struct imap_check *c, const char *name)
{
    for (size_t i = 0; i < c->opts.num_allowed_commands; i++) {
        if (c->opts.allowed_commands[i] != NULL && strcmp(c->opts.allowed_commands[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* R_CMD: step 0 name, 1 name after UID, 2 the command's rule ran, 3 done. */
static enum g_result rule_cmd(struct imap_check *c, struct check_frame *f,
                              const struct check_tok *t)
{
    const struct check_command *k;

    if (f->step == 2) {
        if (t->type != TOK_EOL) {
            return t->type == TOK_LITERAL ? g_err(c, IMAP_CHECK_E_LITERAL_HERE)
                                          : g_err(c, IMAP_CHECK_E_ARGS);
        }
        if (t->sp) {
            return g_err(c, IMAP_CHECK_E_SPACE);
        }
        f->step = 3;
        c->cmd_done = 1;
        return G_TAKE;
    }
    if (f->step > 2) {
        return g_err(c, IMAP_CHECK_E_ARGS);
    }
    if (t->type == TOK_EOL) {
        return g_err(c, IMAP_CHECK_E_NO_NAME);
    }
    if (!t->sp) {
        return g_err(c, IMAP_CHECK_E_SPACE);
    }
    if (t->type == TOK_LITERAL) {
        return g_err(c, IMAP_CHECK_E_LITERAL_HERE);
    }
    if (t->type != TOK_WORD || !(t->cls & CL_ATOM) || t->word_len > IMAP_CHECK_NAME_MAX_LEN) {
        return g_err(c, f->step == 0 ? IMAP_CHECK_E_NO_NAME : IMAP_CHECK_E_UID);
    }
    if (f->step == 0 && strcmp(t->word, "UID") == 0) {
        c->uid = 1;
        f->step = 1;
        return G_TAKE;
    }
    memcpy(c->name, t->word, t->word_len + 1);
    f->step = 2;
    k = command_find(c->name, c->uid);
    if (k == NULL) {
        if (c->uid) {
            c->cmd = IMAP_CHECK_CMD_UNKNOWN;
            return g_err(c, IMAP_CHECK_E_UID);
        }
        if (command_exists(c->name) || !command_allowed(c, c->name)) {
            c->cmd = IMAP_CHECK_CMD_UNKNOWN;
            return g_err(c, IMAP_CHECK_E_UNKNOWN);
        }
        c->cmd = IMAP_CHECK_CMD_VENDOR;
        if (g_push(c, R_XCMD, 0) == G_ERR) {
            return G_ERR;
        }
        return G_TAKE;
    }
    c->cmd = k->cmd;
    if (k->rule == RULE_REFUSED) {
        return g_err(c, k->refusal);
    }
    if (command_ext(c->name, c->uid) & ~c->opts.server_exts) {
        return g_err(c, IMAP_CHECK_E_NOT_SUPPORTED);
    }
    if (g_push(c, (enum check_rule)k->rule, k->aux) == G_ERR) {
        return G_ERR;
    }
    return G_TAKE;
}

/* check_token offers one token to the grammar; returns 0 or -1 (c->reason). */
static int check_token(struct imap_check *c, const struct check_tok *t)
{
    /* Every token either is taken, pops a frame or pushes one; the stack is
     * bounded, so this loop ends. */
    for (;;) {
        struct check_frame *f;
        enum g_result r;

        if (c->depth == 0) {
            c->reason = IMAP_CHECK_E_ARGS;
            return -1;
        }
        f = &c->stack[c->depth - 1];
        switch ((enum check_rule)f->rule) {
        case R_CMD:
            r = rule_cmd(c, f, t);
            break;
        case R_SEQ:
            r = rule_seq(c, f, t);
            break;
        case R_PLIST:
            r = rule_plist(c, f, t);
            break;
        case R_APPEND:
            r = rule_append(c, f, t);
            break;
        case R_CATPART:
            r = rule_catpart(c, f, t);
            break;
        case R_LIST:
            r = rule_list(c, f, t);
            break;
        case R_SEARCH:
            r = rule_search(c, f, t);
            break;
        case R_SKEY:
            r = rule_skey(c, f, t);
            break;
        case R_ESFILTER:
            r = rule_esfilter(c, f, t);
            break;
        case R_FETCH:
            r = rule_fetch(c, f, t);
            break;
        case R_FATT:
            r = rule_fatt(c, f, t);
            break;
        case R_STORE:
            r = rule_store(c, f, t);
            break;
        case R_ID:
            r = rule_id(c, f, t);
            break;
        case R_SETQUOTA:
            r = rule_setquota(c, f, t);
            break;
        case R_GETMETA:
            r = rule_getmeta(c, f, t);
            break;
        case R_SETMETA:
            r = rule_setmeta(c, f, t);
            break;
        case R_XCMD:
            r = rule_xcmd(c, f, t);
            break;
        default:
            r = g_err(c, IMAP_CHECK_E_ARGS);
            break;
        }
        switch (r) {
        case G_TAKE:
            return 0;
        case G_ERR:
            return -1;
        case G_POP:
            c->depth--;
            break;
        case G_RETRY:
            break;
        }
    }
}

/* ---- lexer and verdicts -------------------------------------------------------- */

/* What a byte did. */
enum check_event {
    EV_NONE,   /* go on */
    EV_PART,   /* a literal announcement's line part is complete */
    EV_END,    /* the command is complete */
    EV_REJECT, /* reject; the line goes on (skip) or ended */
    EV_FATAL,
    EV_DROP_END, /* a skipped line ended */
};

static void check_reset_command(struct imap_check *c)
{
    c->need_reset = 0;
    c->fwd = 0;
    c->sp = 0;
    c->cmd_done = 0;
    c->tag_done = 0;
    c->tag_len = 0;
    c->tag[0] = '\0';
    c->name[0] = '\0';
    c->uid = 0;
    c->cmd = IMAP_CHECK_CMD_NONE;
    c->part_len = 0;
    c->cmd_len = 0;
    c->depth = 1;
    memset(&c->stack[0], 0, sizeof(c->stack[0]));
    c->stack[0].rule = R_CMD;
}

/* The state a finished line returns to. */
static enum check_state check_line_start(struct imap_check *c)
{
    c->need_reset = 1;
    return c->idling ? ST_IDLE : ST_TAG;
}

static enum check_event check_fatal(struct imap_check *c, const char *reason)
{
    c->reason = reason;
    c->st = ST_FATAL;
    return EV_FATAL;
}

/* check_fail: the current command is invalid at this byte.  line_ended: the
 * byte was the line's LF. */
static enum check_event check_fail(struct imap_check *c, const char *reason, int line_ended)
{
    uint8_t tail = 0;

    if (c->fwd) {
        return check_fatal(c, reason);
    }
    c->reason = reason;
    if (c->st == ST_LIT) {
        /* a rejected announcement may still become "{n+}": keep track */
        tail = c->lit_plus ? 3 : 2;
    }
    if (line_ended) {
        c->st = check_line_start(c);
    } else {
        c->st = ST_SKIP;
        c->skip_tail = tail;
    }
    return EV_REJECT;
}

static enum check_event check_emit(struct imap_check *c, enum tok_type type)
{
    struct check_tok t;

    memset(&t, 0, sizeof(t));
    t.type = type;
    t.sp = c->sp;
    if (type == TOK_WORD) {
        t.word = c->word;
        t.word_len = c->word_len;
        t.cls = c->word_cls;
    } else if (type == TOK_QUOTED) {
        t.qtext = c->word; /* the word buffer holds the quoted content */
        t.qtext_len = c->word_len;
    }
    t.lit8 = c->lit8;
    c->sp = 0;
    if (check_token(c, &t) < 0) {
        return check_fail(c, c->reason, 0);
    }
    return EV_NONE;
}

/* The tag is complete (at its SP). */
static enum check_event check_tag_end(struct imap_check *c)
{
    uint64_t h;

    if (c->tag_len == 0) {
        return check_fail(c, IMAP_CHECK_E_TAG, 0);
    }
    c->tag_done = 1;
    h = check_hash((const uint8_t *)c->tag, c->tag_len);
    for (size_t i = 0; i < c->num_pending; i++) {
        if (c->pending[i] == h) {
            return check_fail(c, IMAP_CHECK_E_TAG_IN_USE, 0);
        }
    }
    if (c->num_pending >= c->opts.max_pending) {
        return check_fail(c, IMAP_CHECK_E_PENDING, 0);
    }
    c->sp = 1;
    c->st = ST_SEP;
    return EV_NONE;
}

/* The literal announcement is complete at its "}". */
static enum check_event check_lit_end(struct imap_check *c)
{
    enum check_event ev;
    uint64_t limit;

    if (c->lit_plus) {
        if (c->opts.nonsync == IMAP_CHECK_NONSYNC_NONE) {
            return check_fatal(c, IMAP_CHECK_E_NONSYNC);
        }
        if (c->opts.nonsync == IMAP_CHECK_NONSYNC_MINUS &&
            c->lit_size > IMAP_CHECK_LITERAL_MINUS_MAX) {
            return check_fatal(c, IMAP_CHECK_E_NONSYNC_SIZE);
        }
    }
    c->lit_data = 0;
    ev = check_emit(c, TOK_LITERAL);
    if (ev != EV_NONE) {
        if (c->lit_plus && ev == EV_REJECT) {
            /* the client sends the data regardless: it cannot be skipped */
            return check_fatal(c, c->reason);
        }
        return ev;
    }
    limit = c->lit_data ? c->opts.max_literal_len : c->opts.max_arg_literal_len;
    if (c->lit_size > limit) {
        if (c->lit_plus) {
            return check_fatal(c, IMAP_CHECK_E_LITERAL_SIZE);
        }
        return check_fail(c, IMAP_CHECK_E_LITERAL_SIZE, 0);
    }
    if (!c->lit_data) {
        /* a server keeps a string literal in its command line buffer, so it
           counts towards the command's length (see check_byte) */
        if (c->cmd_len + c->lit_size > c->opts.max_line_len) {
            if (c->lit_plus) {
                return check_fatal(c, IMAP_CHECK_E_LINE_LONG);
            }
            return check_fail(c, IMAP_CHECK_E_LINE_LONG, 0);
        }
        c->cmd_len += c->lit_size;
    }
    c->st = ST_LIT_CR;
    return EV_NONE;
}

static void check_word_add(struct imap_check *c, uint8_t b)
{
    unsigned cl = ch_class(b);

    if (c->word_len == 0) {
        cl |= CL_ATOM1;
    }
    c->word_cls &= cl;
    if (c->word_len < IMAP_CHECK_WORD_KEEP) {
        c->word[c->word_len] = (char)ch_upper(b);
        c->word[c->word_len + 1] = '\0';
    }
    c->word_len++;
}

static enum check_event check_sep(struct imap_check *c, uint8_t b)
{
    switch (b) {
    case ' ':
        if (c->sp) {
            return check_fail(c, IMAP_CHECK_E_SPACE, 0);
        }
        c->sp = 1;
        return EV_NONE;
    case '(':
        return check_emit(c, TOK_LP);
    case ')':
        return check_emit(c, TOK_RP);
    case '"':
        c->st = ST_QUOTED;
        c->word_len = 0;
        c->word[0] = '\0';
        c->word_cls = CL_ALL;
        return EV_NONE;
    case '{':
        c->st = ST_LIT;
        c->lit8 = 0;
        c->lit_digits = 0;
        c->lit_plus = 0;
        c->lit_size = 0;
        return EV_NONE;
    case '\r':
        c->st = ST_CR;
        return EV_NONE;
    case '\n':
        return check_fail(c, IMAP_CHECK_E_CRLF, 1);
    default:
        break;
    }
    if (!ch_word(b)) {
        return check_fail(c, IMAP_CHECK_E_CHAR, 0);
    }
    c->word_len = 0;
    c->word[0] = '\0';
    c->word_cls = CL_ALL;
    check_word_add(c, b);
    c->st = ST_WORD;
    return EV_NONE;
}

/* check_token_eol offers the command's end; returns 0 or -1 (c->reason). */
static int check_token_eol(struct imap_check *c)
{
    struct check_tok t;

    memset(&t, 0, sizeof(t));
    t.type = TOK_EOL;
    t.sp = c->sp;
    c->sp = 0;
    return check_token(c, &t);
}

/* check_byte runs one byte of a line part (not literal data). */
static enum check_event check_byte(struct imap_check *c, uint8_t b)
{
    enum check_event ev;

    if (c->st == ST_SKIP) {
        if (b == '\n') {
            if (c->skip_tail >= 4) {
                c->reason = IMAP_CHECK_E_NONSYNC_REJECTED;
                c->st = ST_FATAL;
                return EV_FATAL;
            }
            c->st = check_line_start(c);
            return EV_DROP_END;
        }
        if (b == '{') {
            c->skip_tail = 1;
        } else if (b >= '0' && b <= '9' && (c->skip_tail == 1 || c->skip_tail == 2)) {
            c->skip_tail = 2;
        } else if (b == '+' && c->skip_tail == 2) {
            c->skip_tail = 3;
        } else if (b == '}' && c->skip_tail == 3) {
            c->skip_tail = 4;
        } else if (b == '\r' && c->skip_tail == 4) {
            c->skip_tail = 5;
        } else {
            c->skip_tail = 0;
        }
        return EV_NONE;
    }
    if (c->st == ST_TAG && c->need_reset) {
        check_reset_command(c);
    }
    if (c->st == ST_IDLE && c->need_reset) {
        check_reset_command(c);
        c->idle_pos = 0;
    }
    /* The limit is on the whole command, not on each line part: Dovecot
     * 2.3 counts every part and string literal of a command against
     * imap_max_line_length, and a command that passes it in the middle of
     * a line part is answered "BAD ... command line too large" and its line
     * skipped to the next LF, which is the end of a "{n+}" announcement:
     * the literal's data would then run as commands there.  The held part
     * is bounded too, since it is part of the command. */
    c->part_len++;
    c->cmd_len++;
    if (c->cmd_len > c->opts.max_line_len) {
        return check_fail(c, IMAP_CHECK_E_LINE_LONG, b == '\n');
    }
    switch (c->st) {
    case ST_TAG:
        if (b == ' ') {
            return check_tag_end(c);
        }
        if (b == '\n') {
            return check_fail(c, IMAP_CHECK_E_CRLF, 1);
        }
        if (b == '\r') {
            return check_fail(c, c->tag_len == 0 ? IMAP_CHECK_E_EMPTY : IMAP_CHECK_E_NO_NAME, 0);
        }
        /* RFC 9051 allows "]" in a tag, Dovecot 2.3 does not: it answers
           "* BAD Invalid tag" untagged, so nothing would end the command
           here (its tag stays in use, an IDLE or a literal waits for ever)
           and the audit would record a command the backend never ran.  A
           tag is the ATOM-CHARs except "+", which every server reads. */
        if (!(ch_class(b) & CL_ATOM) || b == '+') {
            return check_fail(c, IMAP_CHECK_E_TAG, 0);
        }
        if (c->tag_len >= c->opts.max_tag_len) {
            return check_fail(c, IMAP_CHECK_E_TAG_LONG, 0);
        }
        c->tag[c->tag_len++] = (char)b;
        c->tag[c->tag_len] = '\0';
        return EV_NONE;
    case ST_SEP:
        return check_sep(c, b);
    case ST_WORD:
        if (ch_word(b)) {
            check_word_add(c, b);
            return EV_NONE;
        }
        if (b == '{' && c->word_len == 1 && c->word[0] == '~') {
            c->st = ST_LIT;
            c->lit8 = 1;
            c->lit_digits = 0;
            c->lit_plus = 0;
            c->lit_size = 0;
            return EV_NONE;
        }
        c->st = ST_SEP;
        ev = check_emit(c, TOK_WORD);
        if (ev != EV_NONE) {
            return b == '\n' && ev == EV_REJECT ? check_fail(c, c->reason, 1) : ev;
        }
        return check_sep(c, b);
    case ST_QUOTED:
        if (b == '"') {
            c->st = ST_SEP;
            return check_emit(c, TOK_QUOTED);
        }
        if (b == '\\') {
            c->st = ST_QUOTED_ESC;
            return EV_NONE;
        }
        if (ch_ctl(b)) {
            return check_fail(c, IMAP_CHECK_E_QUOTED, b == '\n');
        }
        check_word_add(c, b);
        return EV_NONE; /* 8-bit allowed in quoted strings */
    case ST_QUOTED_ESC:
        if (b == '"' || b == '\\') {
            check_word_add(c, b);
            c->st = ST_QUOTED;
            return EV_NONE;
        }
        return check_fail(c, IMAP_CHECK_E_QUOTED, b == '\n');
    case ST_LIT:
        if (b >= '0' && b <= '9' && !c->lit_plus) {
            if (c->lit_digits >= IMAP_CHECK_LIT_MAX_DIGITS) {
                /* if "+}" follows, the skip turns this into FATAL */
                return check_fail(c, IMAP_CHECK_E_LITERAL_SIZE, 0);
            }
            c->lit_digits++;
            c->lit_size = c->lit_size * 10 + (uint64_t)(b - '0');
            return EV_NONE;
        }
        if (b == '+' && c->lit_digits > 0 && !c->lit_plus) {
            c->lit_plus = 1;
            return EV_NONE;
        }
        if (b == '}' && c->lit_digits > 0) {
            return check_lit_end(c);
        }
        return check_fail(c, IMAP_CHECK_E_LITERAL, b == '\n');
    case ST_LIT_CR:
        if (b == '\r') {
            c->st = ST_LIT_LF;
            return EV_NONE;
        }
        if (c->lit_plus) {
            /* "{n+}" LF or "{n+}x": the client sends data we cannot place */
            return check_fatal(c, IMAP_CHECK_E_CRLF);
        }
        return check_fail(c, IMAP_CHECK_E_CRLF, b == '\n');
    case ST_LIT_LF:
        if (b == '\n') {
            return EV_PART;
        }
        if (c->lit_plus) {
            return check_fatal(c, IMAP_CHECK_E_CRLF);
        }
        return check_fail(c, IMAP_CHECK_E_CRLF, 0);
    case ST_CR:
        if (b != '\n') {
            return check_fail(c, IMAP_CHECK_E_CRLF, 0);
        }
        if (check_token_eol(c) < 0) {
            return check_fail(c, c->reason, 1);
        }
        return EV_END;
    case ST_IDLE:
        if (ch_upper(b) == (uint8_t)"DONE\r\n"[c->idle_pos]) {
            c->idle_pos++;
            if (c->idle_pos == 6) {
                memcpy(c->name, "DONE", 5);
                memcpy(c->tag, c->idle_tag, c->idle_tag_len + 1);
                c->tag_len = c->idle_tag_len;
                c->tag_done = 1;
                c->cmd = IMAP_CHECK_CMD_DONE;
                c->cmd_done = 1;
                return EV_END;
            }
            return EV_NONE;
        }
        return check_fail(c, IMAP_CHECK_E_DONE, b == '\n');
    default:
        break;
    }
    return check_fatal(c, IMAP_CHECK_E_ARGS);
}

/* check_forwarded: the first part of the command goes to the backend; its
 * tag is in use there until its tagged answer. */
static void check_forwarded(struct imap_check *c)
{
    if (!c->fwd) {
        c->fwd = 1;
        if (c->tag_done && c->num_pending < IMAP_CHECK_MAX_PENDING) {
            c->pending[c->num_pending++] = check_hash((const uint8_t *)c->tag, c->tag_len);
        }
    }
}

enum imap_check_action imap_check_feed(struct imap_check *c, size_t *out_len,
                                       const uint8_t *data, size_t len)
{
    enum imap_check_action hold = IMAP_CHECK_HOLD;

    *out_len = 0;
    switch (c->st) {
    case ST_FATAL:
        *out_len = len;
        return IMAP_CHECK_FATAL;
    case ST_WAIT:
        return IMAP_CHECK_WAIT_CONTINUATION;
    case ST_LITDATA: {
        size_t n = len;

        if (len == 0) {
            return IMAP_CHECK_HOLD;
        }

        if ((uint64_t)n > c->lit_left) {
            n = (size_t)c->lit_left;
        }
        c->lit_left -= n;
        if (c->lit_left == 0) {
            c->st = ST_SEP;
            c->sp = 0;
            c->part_len = 0;
        }
        *out_len = n;
        return IMAP_CHECK_LITERAL;
    }
    case ST_SKIP:
        hold = IMAP_CHECK_DROP;
        break;
    default:
        break;
    }
    for (size_t i = 0; i < len; i++) {
        enum check_event ev;

        if (c->st == ST_SKIP && data[i] == '\n' && c->skip_tail >= 4 && i > 0) {
            /* the dropped bytes first, so that FATAL covers the same bytes
             * however the input was split */
            *out_len = i;
            return IMAP_CHECK_DROP;
        }
        ev = check_byte(c, data[i]);

        switch (ev) {
        case EV_NONE:
            continue;
        case EV_PART:
            *out_len = i + 1;
            check_forwarded(c);
            c->part_len = 0;
            c->sp = 0;
            if (!c->lit_plus) {
                c->wait = WAIT_LITERAL;
                c->st = ST_WAIT;
            } else {
                c->lit_left = c->lit_size;
                c->st = c->lit_size > 0 ? ST_LITDATA : ST_SEP;
            }
            return IMAP_CHECK_FORWARD;
        case EV_END:
            *out_len = i + 1;
            if (c->cmd == IMAP_CHECK_CMD_COMPRESS) {
                c->st = check_line_start(c);
                return IMAP_CHECK_LOCAL;
            }
            if (c->cmd == IMAP_CHECK_CMD_DONE) {
                c->idling = 0;
                c->st = check_line_start(c);
                return IMAP_CHECK_FORWARD_END;
            }
            check_forwarded(c);
            if (c->cmd == IMAP_CHECK_CMD_IDLE) {
                memcpy(c->idle_tag, c->tag, c->tag_len + 1);
                c->idle_tag_len = c->tag_len;
                c->wait = WAIT_IDLE;
                c->st = ST_WAIT;
                return IMAP_CHECK_FORWARD_END;
            }
            c->st = check_line_start(c);
            return IMAP_CHECK_FORWARD_END;
        case EV_REJECT:
            *out_len = i + 1;
            return IMAP_CHECK_REJECT;
        case EV_FATAL:
            *out_len = i + 1;
            return IMAP_CHECK_FATAL;
        case EV_DROP_END:
            *out_len = i + 1;
            return IMAP_CHECK_DROP;
        }
    }
    *out_len = len;
    return hold;
}

int imap_check_blocked(const struct imap_check *c)
{
    return c->st == ST_WAIT || c->st == ST_FATAL;
}

int imap_check_server_continuation(struct imap_check *c)
{
    if (c->st != ST_WAIT) {
        return 0;
    }
    if (c->wait == WAIT_IDLE) {
        c->idling = 1;
        c->idle_pos = 0;
        c->st = check_line_start(c);
        return 1;
    }
    c->lit_left = c->lit_size;
    c->st = c->lit_size > 0 ? ST_LITDATA : ST_SEP;
    c->sp = 0;
    c->part_len = 0;
    return 1;
}

int imap_check_server_tagged(struct imap_check *c, const uint8_t *tag, size_t tag_len)
{
    uint64_t h = check_hash(tag, tag_len);

    for (size_t i = 0; i < c->num_pending; i++) {
        if (c->pending[i] == h) {
            c->pending[i] = c->pending[--c->num_pending];
            break;
        }
    }
    if (c->st == ST_WAIT && c->wait == WAIT_LITERAL && c->tag_done && tag_len == c->tag_len &&
        memcmp(tag, c->tag, tag_len) == 0) {
        /* the backend refused the literal: the command is over */
        c->st = check_line_start(c);
        return 1;
    }
    if ((c->st == ST_WAIT && c->wait == WAIT_IDLE) || c->idling) {
        if (tag_len != c->idle_tag_len || memcmp(tag, c->idle_tag, tag_len) != 0) {
            return 0;
        }
        c->idling = 0;
        if (c->st == ST_WAIT || (c->st == ST_IDLE && (c->need_reset || c->idle_pos == 0))) {
            c->st = check_line_start(c);
        }
        /* else a partial DONE line is held: it ends as matched, then lines
         * are commands again */
        return 1;
    }
    return 0;
}

const char *imap_check_tag(const struct imap_check *c, size_t *out_len)
{
    if (!c->tag_done) {
        if (out_len != NULL) {
            *out_len = 0;
        }
        return NULL;
    }
    if (out_len != NULL) {
        *out_len = c->tag_len;
    }
    return c->tag;
}

const char *imap_check_name(const struct imap_check *c)
{
    return c->name;
}

int imap_check_uid(const struct imap_check *c)
{
    return c->uid;
}

enum imap_check_cmd imap_check_cmd(const struct imap_check *c)
{
    return c->cmd;
}

const char *imap_check_reason(const struct imap_check *c)
{
    return c->reason;
}

const char *imap_check_action_name(enum imap_check_action a)
{
    static const char *const names[] = {
        [IMAP_CHECK_HOLD] = "HOLD",
        [IMAP_CHECK_FORWARD] = "FORWARD",
        [IMAP_CHECK_FORWARD_END] = "FORWARD_END",
        [IMAP_CHECK_LITERAL] = "LITERAL",
        [IMAP_CHECK_WAIT_CONTINUATION] = "WAIT_CONTINUATION",
        [IMAP_CHECK_LOCAL] = "LOCAL",
        [IMAP_CHECK_REJECT] = "REJECT",
        [IMAP_CHECK_DROP] = "DROP",
        [IMAP_CHECK_FATAL] = "FATAL",
    };
    _Static_assert(NUM_ITEMS(names) == IMAP_CHECK_FATAL + 1, "one name per action");

    if ((size_t)a >= NUM_ITEMS(names)) {
        return "?";
    }
    return names[a];
}

const char *imap_check_cmd_name(enum imap_check_cmd k)
{
    static const char *const names[] = {
        [IMAP_CHECK_CMD_NONE] = "NONE",         [IMAP_CHECK_CMD_RELAYED] = "RELAYED",
        [IMAP_CHECK_CMD_IDLE] = "IDLE",         [IMAP_CHECK_CMD_DONE] = "DONE",
        [IMAP_CHECK_CMD_COMPRESS] = "COMPRESS", [IMAP_CHECK_CMD_REFUSED] = "REFUSED",
        [IMAP_CHECK_CMD_VENDOR] = "VENDOR",     [IMAP_CHECK_CMD_UNKNOWN] = "UNKNOWN",
    };
    _Static_assert(NUM_ITEMS(names) == IMAP_CHECK_CMD_UNKNOWN + 1, "one name per kind");

    if ((size_t)k >= NUM_ITEMS(names)) {
        return "?";
    }
    return names[k];
}

void imap_check_opts_from_capability(struct imap_check_opts *opts, const char *caps,
                                     size_t caps_len)
{
    size_t i = 0;
    int plus = 0, minus = 0;

    opts->server_exts = 0;
    while (i < caps_len) {
        char atom[32];
        size_t n = 0;

        while (i < caps_len && caps[i] == ' ') {
            i++;
        }
        while (i < caps_len && caps[i] != ' ') {
            if (n < sizeof(atom) - 1) {
                atom[n++] = (char)ch_upper((uint8_t)caps[i]);
            }
            i++;
        }
        atom[n] = '\0';
        if (n == 0) {
            continue;
        }
        plus |= strcmp(atom, "LITERAL+") == 0;
        minus |= strcmp(atom, "LITERAL-") == 0;
        for (size_t k = 0; k < NUM_ITEMS(check_capabilities); k++) {
            const char *a = check_capabilities[k].atom;
            size_t alen = strlen(a);
            int prefix = a[alen - 1] == '=';

            if (prefix ? strncmp(atom, a, alen) == 0 : strcmp(atom, a) == 0) {
                opts->server_exts |= check_capabilities[k].exts;
            }
        }
    }
    opts->nonsync = plus ? IMAP_CHECK_NONSYNC_PLUS
                    : minus ? IMAP_CHECK_NONSYNC_MINUS
                            : IMAP_CHECK_NONSYNC_NONE;
}

struct imap_check *imap_check_new(const struct imap_check_opts *opts)
{
    struct imap_check *c;

    if (opts->max_line_len < 16 || opts->max_tag_len > IMAP_CHECK_TAG_MAX_LEN ||
        opts->max_pending > IMAP_CHECK_MAX_PENDING ||
        (opts->num_allowed_commands > 0 && opts->allowed_commands == NULL)) {
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->opts = *opts;
    if (c->opts.max_tag_len == 0) {
        c->opts.max_tag_len = IMAP_CHECK_TAG_MAX_LEN;
    }
    if (c->opts.max_pending == 0) {
        c->opts.max_pending = IMAP_CHECK_MAX_PENDING;
    }
    c->st = ST_TAG;
    check_reset_command(c);
    return c;
}

void imap_check_free(struct imap_check *c)
{
    free(c);
}
