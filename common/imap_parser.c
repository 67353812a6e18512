#include "common/imap_parser.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/imap_syntax.h"
#include "common/secret.h"

/* Fixed reason texts handed to the session (sent to the client in BAD/BYE). */
#define IMAP_PARSER_E_EMPTY "Empty command"
#define IMAP_PARSER_E_TAG "Invalid tag"
#define IMAP_PARSER_E_NO_NAME "Missing command name"
#define IMAP_PARSER_E_NAME "Invalid command name"
#define IMAP_PARSER_E_CHARS "Invalid characters in command"
#define IMAP_PARSER_E_QUOTED "Invalid characters in quoted string"
#define IMAP_PARSER_E_ESCAPE "Invalid escape in quoted string"
#define IMAP_PARSER_E_LITERAL "Invalid literal"
#define IMAP_PARSER_E_LINE_TOO_LONG "Line too long"
#define IMAP_PARSER_E_LITERAL_TOO_LARGE "Literal too large"
#define IMAP_PARSER_E_NONSYNC_TOO_LARGE "Non-synchronizing literal too large"
#define IMAP_PARSER_E_COMMAND_TOO_LONG "Command too long"
#define IMAP_PARSER_E_TOO_MANY_ARGS "Too many arguments"
#define IMAP_PARSER_E_TOO_DEEP "Lists nested too deeply"
#define IMAP_PARSER_E_UNBALANCED "Unbalanced ')'"
#define IMAP_PARSER_E_MISSING_PAREN "Missing ')'"
#define IMAP_PARSER_E_SPACE "Missing space between arguments"
#define IMAP_PARSER_E_NOMEM "Out of memory"
#define IMAP_PARSER_E_CRLF "Line must end in CRLF"

/* First allocation of the command storage; it doubles up to the bound. */
#define IMAP_PARSER_INITIAL_BUF_LEN 256
#define IMAP_PARSER_INITIAL_NUM_ARGS 8

enum imap_parser_state {
    IMAP_PARSER_ST_TAG,        /* start of a command, reading the tag */
    IMAP_PARSER_ST_NAME,       /* after "tag SP", reading the command name */
    IMAP_PARSER_ST_ARG_START,  /* expecting an argument, SP, ')' or the line end */
    IMAP_PARSER_ST_AFTER_ARG,  /* after a quoted, literal or ')': SP, ')' or line end */
    IMAP_PARSER_ST_ATOM,       /* inside an atom */
    IMAP_PARSER_ST_QUOTED,     /* inside a quoted string */
    IMAP_PARSER_ST_QUOTED_ESC, /* after a backslash inside a quoted string */
    IMAP_PARSER_ST_LIT_DIGITS, /* after '{': digits */
    IMAP_PARSER_ST_LIT_PLUS,   /* after "{n+": expecting '}' */
    IMAP_PARSER_ST_LIT_END,    /* after "{n}": expecting CRLF or LF */
    IMAP_PARSER_ST_LIT_DATA,   /* reading literal contents */
    IMAP_PARSER_ST_LINE,       /* line mode: raw line */
    IMAP_PARSER_ST_SKIP,       /* bad line: discarding up to its LF */
    IMAP_PARSER_ST_DONE,       /* result returned, waiting for reset */
    IMAP_PARSER_ST_FATAL,      /* cannot resync */
};

/* What the end of a skipped line looked like: a literal announcement there
 * means literal data follows, which matters for a non-synchronizing one. */
enum imap_parser_tail {
    IMAP_PARSER_TAIL_NONE,
    IMAP_PARSER_TAIL_LBRACE,  /* "{" */
    IMAP_PARSER_TAIL_DIGITS,  /* "{n" */
    IMAP_PARSER_TAIL_PLUS,    /* "{n+" */
    IMAP_PARSER_TAIL_SYNC,    /* "{n}" */
    IMAP_PARSER_TAIL_NONSYNC, /* "{n+}" */
};

struct imap_parser {
    struct imap_parser_limits base;   /* as configured */
    struct imap_parser_limits limits; /* of the command being parsed (ID may raise them) */
    size_t skip_len;            /* bytes discarded of a bad line so far */
    enum imap_parser_state state;
    enum imap_parser_tail tail; /* only meaningful in IMAP_PARSER_ST_SKIP */
    int line_mode;              /* next command is a raw line (set_line_mode) */
    int cr;                     /* a CR was consumed; the next byte must be LF */
    int raw_line;               /* this command is a line-mode line */
    int lit_plus;               /* current literal is non-synchronizing */
    int lit_big;                /* current literal's size passed the limit */
    const char *error;          /* fixed reason, NULL if none */

    uint8_t *buf;      /* command storage: tag, name, args, each NUL-terminated */
    size_t buf_used;   /* bytes used in buf */
    size_t buf_size;   /* bytes allocated in buf */
    size_t buf_max;    /* bound of buf_size derived from the limits */
    size_t line_len;   /* bytes of the command outside literals, CR/LF excluded */
    size_t cmd_len;    /* bytes of argument contents */
    size_t tag_len;    /* bytes of the tag, stored at offset 0 */
    int has_tag;       /* tag complete and NUL-terminated */
    size_t name_off;   /* offset of the name in buf */
    size_t name_len;   /* bytes of the name so far */
    int has_name;      /* name complete and NUL-terminated */
    size_t depth;      /* open parenthesized lists */
    size_t lit_len;    /* announced size of the current literal */
    size_t lit_digits; /* digits of the current literal's size so far */
    size_t lit_left;   /* literal bytes still to read */

    struct imap_arg *args; /* num_args entries; data set when a result is returned */
    size_t *arg_offs;      /* offset in buf of each argument's data */
    size_t num_args;       /* arguments so far, list markers included */
    size_t args_size;      /* entries allocated in args and arg_offs */
    size_t num_out_args;   /* arguments visible through get_args */
};

static size_t imap_parser_add_sat(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

struct imap_parser *imap_parser_new(const struct imap_parser_limits *limits)
{
    struct imap_parser *p = calloc(1, sizeof(*p));

    if (p == NULL) {
        return NULL;
    }
    p->base = *limits;
    p->limits = *limits;
    p->state = IMAP_PARSER_ST_TAG;
    return p;
}

/* imap_parser_release frees the command storage.  It held the command's
 * arguments, among them LOGIN's password and AUTHENTICATE's payload: all of
 * it is wiped, not only buf_used (which a literal8 marker can step back). */
static void imap_parser_release(struct imap_parser *p)
{
    secret_free(p->buf, p->buf_size);
    free(p->args);
    free(p->arg_offs);
    p->buf = NULL;
    p->args = NULL;
    p->arg_offs = NULL;
}

void imap_parser_free(struct imap_parser *p)
{
    if (p == NULL) {
        return;
    }
    imap_parser_release(p);
    free(p);
}

void imap_parser_reset(struct imap_parser *p)
{
    struct imap_parser_limits base = p->base;
    int line_mode = p->line_mode;

    imap_parser_release(p);
    memset(p, 0, sizeof(*p));
    p->base = base;
    p->limits = base;
    /* set_line_mode is called while the AUTHENTICATE command is handled,
     * before its reset: the mode must survive to the next line. */
    p->line_mode = line_mode;
    p->state = IMAP_PARSER_ST_TAG;
}

void imap_parser_set_line_mode(struct imap_parser *p)
{
    p->line_mode = 1;
}

void imap_parser_set_literal_limit(struct imap_parser *p, size_t max_literal_len)
{
    p->base.max_literal_len = max_literal_len;
    p->limits.max_literal_len = max_literal_len;
}

const char *imap_parser_get_tag(const struct imap_parser *p)
{
    if (p->buf == NULL || !p->has_tag) {
        return NULL;
    }
    return (const char *)p->buf;
}

const char *imap_parser_get_name(const struct imap_parser *p)
{
    if (p->buf == NULL || !p->has_name) {
        return NULL;
    }
    return (const char *)p->buf + p->name_off;
}

const struct imap_arg *imap_parser_get_args(const struct imap_parser *p, size_t *out_num)
{
    *out_num = p->num_out_args;
    return p->num_out_args > 0 ? p->args : NULL;
}

const char *imap_parser_get_error(const struct imap_parser *p)
{
    return p->error;
}

int imap_arg_is_nil(const struct imap_arg *arg)
{
    return arg->type == IMAP_ARG_ATOM && arg->len == 3 &&
           (arg->data[0] == 'N' || arg->data[0] == 'n') &&
           (arg->data[1] == 'I' || arg->data[1] == 'i') &&
           (arg->data[2] == 'L' || arg->data[2] == 'l');
}

/* imap_parser_fail records the first error of the line and discards the
 * rest of it. */
static void imap_parser_fail(struct imap_parser *p, const char *reason)
{
    if (p->error == NULL) {
        p->error = reason;
    }
    p->state = IMAP_PARSER_ST_SKIP;
    p->tail = IMAP_PARSER_TAIL_NONE;
    p->cr = 0;
}

/* imap_parser_reserve makes room for extra more bytes in buf; 0 or -1. */
static int imap_parser_reserve(struct imap_parser *p, size_t extra)
{
    size_t need = imap_parser_add_sat(p->buf_used, extra);
    size_t size = p->buf_size;
    uint8_t *nbuf;

    if (need <= p->buf_size) {
        return 0;
    }
    if (need > p->buf_max) {
        return -1;
    }
    while (size < need) {
        size = size > p->buf_max / 2 ? p->buf_max : size * 2;
    }
    /* by copy, not realloc: the old block may hold a password */
    nbuf = secret_grow(p->buf, p->buf_size, size);
    if (nbuf == NULL) {
        return -1;
    }
    p->buf = nbuf;
    p->buf_size = size;
    return 0;
}

/* imap_parser_put appends one byte to buf; 0 or -1 (error recorded). */
static int imap_parser_put(struct imap_parser *p, uint8_t c)
{
    if (imap_parser_reserve(p, 1) != 0) {
        imap_parser_fail(p, IMAP_PARSER_E_COMMAND_TOO_LONG);
        return -1;
    }
    p->buf[p->buf_used++] = c;
    return 0;
}

/* imap_parser_named: the command's name is complete.  ID (RFC 2971) may
 * carry 30 field-value pairs with values of 1024 bytes, more than other
 * pre-auth commands need: its line and argument limits are raised for this
 * command alone. */
static void imap_parser_named(struct imap_parser *p)
{
    const uint8_t *name = p->buf + p->name_off;
    if (p->name_len != 2 || (name[0] | 0x20) != 'i' || (name[1] | 0x20) != 'd') {
        return;
    }
    if (p->limits.max_line_len < IMAP_PARSER_ID_MAX_LINE_LEN) {
        p->limits.max_line_len = IMAP_PARSER_ID_MAX_LINE_LEN;
    }
    if (p->limits.max_command_len < IMAP_PARSER_ID_MAX_LINE_LEN) {
        p->limits.max_command_len = IMAP_PARSER_ID_MAX_LINE_LEN;
    }
    if (p->limits.max_args < IMAP_PARSER_ID_MAX_ARGS) {
        p->limits.max_args = IMAP_PARSER_ID_MAX_ARGS;
    }
    size_t max = imap_parser_add_sat(p->limits.max_line_len, p->limits.max_command_len);
    max = imap_parser_add_sat(max, p->limits.max_args);
    p->buf_max = imap_parser_add_sat(max, 16);
}

/* imap_parser_start allocates the storage of a new command; 0 or -1. */
static int imap_parser_start(struct imap_parser *p)
{
    size_t max = imap_parser_add_sat(p->limits.max_line_len, p->limits.max_command_len);

    max = imap_parser_add_sat(max, p->limits.max_args);
    max = imap_parser_add_sat(max, 16); /* NULs of tag, name, and slack */
    p->buf_max = max;
    p->buf_size = max < IMAP_PARSER_INITIAL_BUF_LEN ? max : IMAP_PARSER_INITIAL_BUF_LEN;
    p->buf = malloc(p->buf_size);
    if (p->buf == NULL) {
        p->buf_size = 0;
        return -1;
    }
    p->buf_used = 0;
    if (p->line_mode) {
        p->line_mode = 0;
        p->raw_line = 1;
        p->state = IMAP_PARSER_ST_LINE;
    }
    return 0;
}

/* imap_parser_arg_begin adds an argument of type starting at the end of buf;
 * 0 or -1 (error recorded). */
static int imap_parser_arg_begin(struct imap_parser *p, enum imap_arg_type type)
{
    if (p->num_args >= p->limits.max_args) {
        imap_parser_fail(p, IMAP_PARSER_E_TOO_MANY_ARGS);
        return -1;
    }
    if (p->num_args == p->args_size) {
        size_t n = p->args_size == 0 ? IMAP_PARSER_INITIAL_NUM_ARGS : p->args_size * 2;
        struct imap_arg *nargs;
        size_t *noffs;

        if (n > p->limits.max_args) {
            n = p->limits.max_args;
        }
        nargs = realloc(p->args, n * sizeof(*nargs));
        if (nargs == NULL) {
            imap_parser_fail(p, IMAP_PARSER_E_NOMEM);
            return -1;
        }
        p->args = nargs;
        noffs = realloc(p->arg_offs, n * sizeof(*noffs));
        if (noffs == NULL) {
            imap_parser_fail(p, IMAP_PARSER_E_NOMEM);
            return -1;
        }
        p->arg_offs = noffs;
        p->args_size = n;
    }
    p->args[p->num_args].type = type;
    p->args[p->num_args].data = NULL;
    p->args[p->num_args].len = 0;
    p->arg_offs[p->num_args] = p->buf_used;
    p->num_args++;
    return 0;
}

/* imap_parser_arg_put appends one content byte to the last argument. */
static int imap_parser_arg_put(struct imap_parser *p, uint8_t c)
{
    if (p->cmd_len >= p->limits.max_command_len) {
        imap_parser_fail(p, IMAP_PARSER_E_COMMAND_TOO_LONG);
        return -1;
    }
    if (imap_parser_put(p, c) != 0) {
        return -1;
    }
    p->cmd_len++;
    p->args[p->num_args - 1].len++;
    return 0;
}

/* imap_parser_arg_end NUL-terminates the last argument. */
static int imap_parser_arg_end(struct imap_parser *p)
{
    return imap_parser_put(p, '\0');
}

static int imap_parser_is_ctl(uint8_t c)
{
    return c < 0x20 || c >= 0x7f;
}

/* ATOM-CHAR of RFC 9051, for non-CTL c. */
static int imap_parser_is_atom_char(uint8_t c)
{
    return c != '(' && c != ')' && c != '{' && c != ' ' && c != '%' && c != '*' &&
           c != '"' && c != '\\' && c != ']';
}

/* Characters accepted in arguments' atoms: lenient astring chars plus list
 * wildcards and flags' backslash, as clients send them. */
static int imap_parser_is_arg_atom_char(uint8_t c)
{
    return c != '(' && c != ')' && c != '{' && c != ' ' && c != '"';
}

static void imap_parser_list_begin(struct imap_parser *p)
{
    if (p->depth >= p->limits.max_depth) {
        imap_parser_fail(p, IMAP_PARSER_E_TOO_DEEP);
        return;
    }
    if (imap_parser_arg_begin(p, IMAP_ARG_LIST_BEGIN) != 0) {
        return;
    }
    p->depth++;
    p->state = IMAP_PARSER_ST_ARG_START;
}

static void imap_parser_list_end(struct imap_parser *p)
{
    if (p->depth == 0) {
        imap_parser_fail(p, IMAP_PARSER_E_UNBALANCED);
        return;
    }
    if (imap_parser_arg_begin(p, IMAP_ARG_LIST_END) != 0) {
        return;
    }
    p->depth--;
    p->state = IMAP_PARSER_ST_AFTER_ARG;
}

static void imap_parser_literal_begin(struct imap_parser *p)
{
    if (imap_parser_arg_begin(p, IMAP_ARG_LITERAL) != 0) {
        return;
    }
    p->lit_len = 0;
    p->lit_big = 0;
    p->lit_plus = 0;
    p->lit_digits = 0;
    p->state = IMAP_PARSER_ST_LIT_DIGITS;
}

/* imap_parser_literal_close checks the announced literal at its '}': the
 * limits are met before any continuation request goes out. */
static void imap_parser_literal_close(struct imap_parser *p)
{
    const char *why = NULL;

    if (p->lit_big) {
        why = p->lit_plus ? IMAP_PARSER_E_NONSYNC_TOO_LARGE : IMAP_PARSER_E_LITERAL_TOO_LARGE;
    } else if (p->lit_len > p->limits.max_command_len - p->cmd_len) {
        why = IMAP_PARSER_E_COMMAND_TOO_LONG;
    } else if (imap_parser_reserve(p, imap_parser_add_sat(p->lit_len, 1)) != 0) {
        why = IMAP_PARSER_E_NOMEM;
    }
    if (why != NULL) {
        /* the line end decides: "{n+}" CRLF means data follows (fatal) */
        imap_parser_fail(p, why);
        p->tail = p->lit_plus ? IMAP_PARSER_TAIL_NONSYNC : IMAP_PARSER_TAIL_SYNC;
        return;
    }
    p->state = IMAP_PARSER_ST_LIT_END;
}

static void imap_parser_tail_update(struct imap_parser *p, uint8_t c)
{
    if (c == '\r') {
        return;
    }
    if (c == '{') {
        p->tail = IMAP_PARSER_TAIL_LBRACE;
    } else if (c >= '0' && c <= '9') {
        p->tail = (p->tail == IMAP_PARSER_TAIL_LBRACE || p->tail == IMAP_PARSER_TAIL_DIGITS)
                      ? IMAP_PARSER_TAIL_DIGITS
                      : IMAP_PARSER_TAIL_NONE;
    } else if (c == '+') {
        p->tail = p->tail == IMAP_PARSER_TAIL_DIGITS ? IMAP_PARSER_TAIL_PLUS
                                                     : IMAP_PARSER_TAIL_NONE;
    } else if (c == '}') {
        if (p->tail == IMAP_PARSER_TAIL_DIGITS) {
            p->tail = IMAP_PARSER_TAIL_SYNC;
        } else if (p->tail == IMAP_PARSER_TAIL_PLUS) {
            p->tail = IMAP_PARSER_TAIL_NONSYNC;
        } else {
            p->tail = IMAP_PARSER_TAIL_NONE;
        }
    } else {
        p->tail = IMAP_PARSER_TAIL_NONE;
    }
}

/* imap_parser_publish makes the arguments visible through get_args. */
static void imap_parser_publish(struct imap_parser *p)
{
    static const char empty[1] = "";

    for (size_t i = 0; i < p->num_args; i++) {
        if (p->args[i].type == IMAP_ARG_LIST_BEGIN || p->args[i].type == IMAP_ARG_LIST_END) {
            p->args[i].data = empty;
        } else {
            p->args[i].data = (const char *)p->buf + p->arg_offs[i];
        }
    }
    p->num_out_args = p->num_args;
}

static enum imap_parse_result imap_parser_error(struct imap_parser *p, const char *reason)
{
    if (p->error == NULL) {
        p->error = reason;
    }
    p->num_out_args = 0;
    p->state = IMAP_PARSER_ST_DONE;
    return IMAP_PARSE_ERROR;
}

/* imap_parser_end_of_line handles an LF in a parsing state; returns MORE
 * when the command goes on (literal data follows). */
static enum imap_parse_result imap_parser_end_of_line(struct imap_parser *p)
{
    switch (p->state) {
    case IMAP_PARSER_ST_TAG:
        if (p->tag_len == 0) {
            return imap_parser_error(p, IMAP_PARSER_E_EMPTY);
        }
        if (imap_parser_put(p, '\0') != 0) {
            return imap_parser_error(p, IMAP_PARSER_E_NOMEM);
        }
        p->has_tag = 1;
        return imap_parser_error(p, IMAP_PARSER_E_NO_NAME);
    case IMAP_PARSER_ST_NAME:
        if (p->name_len == 0) {
            return imap_parser_error(p, IMAP_PARSER_E_NO_NAME);
        }
        if (imap_parser_put(p, '\0') != 0) {
            return imap_parser_error(p, IMAP_PARSER_E_NOMEM);
        }
        p->has_name = 1;
        break;
    case IMAP_PARSER_ST_ATOM:
        if (imap_parser_arg_end(p) != 0) {
            return imap_parser_error(p, IMAP_PARSER_E_NOMEM);
        }
        break;
    case IMAP_PARSER_ST_ARG_START:
    case IMAP_PARSER_ST_AFTER_ARG:
        break;
    case IMAP_PARSER_ST_QUOTED:
    case IMAP_PARSER_ST_QUOTED_ESC:
        return imap_parser_error(p, IMAP_PARSER_E_QUOTED);
    case IMAP_PARSER_ST_LIT_DIGITS:
    case IMAP_PARSER_ST_LIT_PLUS:
        return imap_parser_error(p, IMAP_PARSER_E_LITERAL);
    case IMAP_PARSER_ST_LIT_END:
        p->lit_left = p->lit_len;
        p->cmd_len += p->lit_len;
        p->state = IMAP_PARSER_ST_LIT_DATA;
        if (p->lit_len == 0) {
            p->buf[p->buf_used++] = '\0'; /* reserved at '}' */
            p->state = IMAP_PARSER_ST_AFTER_ARG;
        }
        return p->lit_plus ? IMAP_PARSE_MORE : IMAP_PARSE_LITERAL_WAIT;
    case IMAP_PARSER_ST_LINE:
        if (imap_parser_arg_begin(p, IMAP_ARG_ATOM) != 0 || imap_parser_arg_end(p) != 0) {
            return imap_parser_error(p, IMAP_PARSER_E_NOMEM);
        }
        /* the line's bytes were stored from offset 0 */
        p->arg_offs[0] = 0;
        p->args[0].len = p->line_len;
        imap_parser_publish(p);
        p->state = IMAP_PARSER_ST_DONE;
        return IMAP_PARSE_LINE;
    case IMAP_PARSER_ST_SKIP:
        /* a raw line announces no literal, whatever its end looks like */
        if (p->tail == IMAP_PARSER_TAIL_NONSYNC && !p->raw_line) {
            p->num_out_args = 0;
            p->state = IMAP_PARSER_ST_FATAL;
            return IMAP_PARSE_FATAL;
        }
        return imap_parser_error(p, p->error);
    case IMAP_PARSER_ST_LIT_DATA:
    case IMAP_PARSER_ST_DONE:
    case IMAP_PARSER_ST_FATAL:
        /* not reached: these states never see an LF here */
        return imap_parser_error(p, IMAP_PARSER_E_CHARS);
    }
    if (p->depth > 0) {
        return imap_parser_error(p, IMAP_PARSER_E_MISSING_PAREN);
    }
    imap_parser_publish(p);
    p->state = IMAP_PARSER_ST_DONE;
    return IMAP_PARSE_COMMAND;
}

/* imap_parser_step handles one byte of the line that is not CR nor LF (CR
 * inside a quoted string comes here too). */
static void imap_parser_step(struct imap_parser *p, uint8_t c)
{
    switch (p->state) {
    case IMAP_PARSER_ST_TAG:
        if (c == ' ') {
            if (p->tag_len == 0 || imap_parser_put(p, '\0') != 0) {
                imap_parser_fail(p, IMAP_PARSER_E_TAG);
                return;
            }
            p->has_tag = 1;
            p->name_off = p->buf_used;
            p->state = IMAP_PARSER_ST_NAME;
            return;
        }
        if (!imap_syntax_is_tag_char(c) ||
            p->tag_len >= p->limits.max_tag_len) {
            imap_parser_fail(p, IMAP_PARSER_E_TAG);
            return;
        }
        if (imap_parser_put(p, c) == 0) {
            p->tag_len++;
        }
        return;
    case IMAP_PARSER_ST_NAME:
        if (c == ' ') {
            if (p->name_len == 0) {
                imap_parser_fail(p, IMAP_PARSER_E_NO_NAME);
                return;
            }
            if (imap_parser_put(p, '\0') == 0) {
                p->has_name = 1;
                p->state = IMAP_PARSER_ST_ARG_START;
                imap_parser_named(p);
            }
            return;
        }
        if (imap_parser_is_ctl(c)) {
            imap_parser_fail(p, IMAP_PARSER_E_CHARS);
            return;
        }
        if (!imap_parser_is_atom_char(c)) {
            imap_parser_fail(p, IMAP_PARSER_E_NAME);
            return;
        }
        if (imap_parser_put(p, c) == 0) {
            p->name_len++;
        }
        return;
    case IMAP_PARSER_ST_ARG_START:
        if (imap_parser_is_ctl(c)) {
            imap_parser_fail(p, IMAP_PARSER_E_CHARS);
        } else if (c == ' ') {
            /* lenient: repeated or trailing spaces */
        } else if (c == '(') {
            imap_parser_list_begin(p);
        } else if (c == ')') {
            imap_parser_list_end(p);
        } else if (c == '"') {
            if (imap_parser_arg_begin(p, IMAP_ARG_QUOTED) == 0) {
                p->state = IMAP_PARSER_ST_QUOTED;
            }
        } else if (c == '{') {
            imap_parser_literal_begin(p);
        } else if (imap_parser_arg_begin(p, IMAP_ARG_ATOM) == 0 &&
                   imap_parser_arg_put(p, c) == 0) {
            p->state = IMAP_PARSER_ST_ATOM;
        }
        return;
    case IMAP_PARSER_ST_AFTER_ARG:
        if (imap_parser_is_ctl(c)) {
            imap_parser_fail(p, IMAP_PARSER_E_CHARS);
        } else if (c == ' ') {
            p->state = IMAP_PARSER_ST_ARG_START;
        } else if (c == ')') {
            imap_parser_list_end(p);
        } else {
            imap_parser_fail(p, IMAP_PARSER_E_SPACE);
        }
        return;
    case IMAP_PARSER_ST_ATOM:
        if (imap_parser_is_ctl(c)) {
            imap_parser_fail(p, IMAP_PARSER_E_CHARS);
            return;
        }
        if (c == '{' && p->args[p->num_args - 1].len == 1 &&
            p->buf[p->arg_offs[p->num_args - 1]] == '~') {
            /* "~{": literal8, not an atom */
            p->buf_used--;
            p->cmd_len--;
            p->num_args--;
            imap_parser_literal_begin(p);
            return;
        }
        if (c == ' ' || c == ')') {
            if (imap_parser_arg_end(p) != 0) {
                return;
            }
            if (c == ' ') {
                p->state = IMAP_PARSER_ST_ARG_START;
            } else {
                imap_parser_list_end(p);
            }
            return;
        }
        if (!imap_parser_is_arg_atom_char(c)) {
            imap_parser_fail(p, IMAP_PARSER_E_CHARS);
            return;
        }
        imap_parser_arg_put(p, c);
        return;
    case IMAP_PARSER_ST_QUOTED:
        if (c == '"') {
            if (imap_parser_arg_end(p) == 0) {
                p->state = IMAP_PARSER_ST_AFTER_ARG;
            }
        } else if (c == '\\') {
            p->state = IMAP_PARSER_ST_QUOTED_ESC;
        } else if (c == '\0' || c == '\r' || c >= 0x80) {
            imap_parser_fail(p, IMAP_PARSER_E_QUOTED);
        } else {
            imap_parser_arg_put(p, c);
        }
        return;
    case IMAP_PARSER_ST_QUOTED_ESC:
        if (c == '"' || c == '\\') {
            if (imap_parser_arg_put(p, c) == 0) {
                p->state = IMAP_PARSER_ST_QUOTED;
            }
        } else if (c == '\0' || c == '\r' || c >= 0x80) {
            imap_parser_fail(p, IMAP_PARSER_E_QUOTED);
        } else {
            imap_parser_fail(p, IMAP_PARSER_E_ESCAPE);
        }
        return;
    case IMAP_PARSER_ST_LIT_DIGITS:
        if (c >= '0' && c <= '9') {
            size_t d = (size_t)(c - '0');

            p->lit_digits++;
            if (p->lit_big) {
                return;
            }
            if (p->lit_len > (SIZE_MAX - d) / 10) {
                p->lit_big = 1;
                return;
            }
            p->lit_len = p->lit_len * 10 + d;
            if (p->lit_len > p->limits.max_literal_len) {
                p->lit_big = 1;
            }
            return;
        }
        if (p->lit_digits == 0) {
            imap_parser_fail(p, imap_parser_is_ctl(c) ? IMAP_PARSER_E_CHARS : IMAP_PARSER_E_LITERAL);
            return;
        }
        if (c == '+') {
            p->lit_plus = 1;
            p->state = IMAP_PARSER_ST_LIT_PLUS;
        } else if (c == '}') {
            imap_parser_literal_close(p);
        } else {
            imap_parser_fail(p, imap_parser_is_ctl(c) ? IMAP_PARSER_E_CHARS : IMAP_PARSER_E_LITERAL);
        }
        return;
    case IMAP_PARSER_ST_LIT_PLUS:
        if (c == '}') {
            imap_parser_literal_close(p);
        } else {
            imap_parser_fail(p, imap_parser_is_ctl(c) ? IMAP_PARSER_E_CHARS : IMAP_PARSER_E_LITERAL);
        }
        return;
    case IMAP_PARSER_ST_LIT_END:
        imap_parser_fail(p, IMAP_PARSER_E_LITERAL);
        return;
    case IMAP_PARSER_ST_LINE:
        imap_parser_put(p, c);
        return;
    case IMAP_PARSER_ST_LIT_DATA:
    case IMAP_PARSER_ST_SKIP:
    case IMAP_PARSER_ST_DONE:
    case IMAP_PARSER_ST_FATAL:
        return;
    }
}

enum imap_parse_result imap_parser_feed(struct imap_parser *p, size_t *out_consumed,
                                        const uint8_t *data, size_t len)
{
    size_t i = 0;

    *out_consumed = 0;
    if (p->state == IMAP_PARSER_ST_FATAL) {
        return IMAP_PARSE_FATAL;
    }
    if (p->state == IMAP_PARSER_ST_DONE) {
        /* the caller forgot the reset; do it rather than stall */
        imap_parser_reset(p);
    }
    if (len == 0) {
        return IMAP_PARSE_MORE;
    }
    if (p->buf == NULL && imap_parser_start(p) != 0) {
        /* out of memory before the first byte: nothing can be answered */
        p->error = IMAP_PARSER_E_NOMEM;
        p->state = IMAP_PARSER_ST_FATAL;
        return IMAP_PARSE_FATAL;
    }
    p->num_out_args = 0;

    while (i < len) {
        uint8_t c;

        if (p->state == IMAP_PARSER_ST_LIT_DATA) {
            size_t n = len - i < p->lit_left ? len - i : p->lit_left;

            /* room for the contents and the NUL was reserved at '}' */
            memcpy(p->buf + p->buf_used, data + i, n);
            p->buf_used += n;
            p->args[p->num_args - 1].len += n;
            p->lit_left -= n;
            i += n;
            if (p->lit_left == 0) {
                p->buf[p->buf_used++] = '\0';
                p->state = IMAP_PARSER_ST_AFTER_ARG;
            }
            continue;
        }
        c = data[i];
        if (p->state == IMAP_PARSER_ST_SKIP) {
            /* discard without storing; only the line end matters */
            i++;
            if (c == '\n') {
                *out_consumed = i;
                return imap_parser_end_of_line(p);
            }
            if (++p->skip_len > IMAP_PARSER_MAX_SKIP_LEN) {
                /* no line end in sight: reading on would be reading forever */
                *out_consumed = i;
                p->error = IMAP_PARSER_E_LINE_TOO_LONG;
                p->state = IMAP_PARSER_ST_FATAL;
                return IMAP_PARSE_FATAL;
            }
            imap_parser_tail_update(p, c);
            continue;
        }
        int crlf = 0;
        if (p->cr) {
            p->cr = 0;
            if (c != '\n') {
                /* a bare CR; the byte is looked at again while skipping */
                imap_parser_fail(p, IMAP_PARSER_E_CHARS);
                continue;
            }
            crlf = 1;
        }
        i++;
        if (c == '\n' && !crlf && p->state != IMAP_PARSER_ST_QUOTED &&
            p->state != IMAP_PARSER_ST_QUOTED_ESC) {
            /* a bare LF: the line ends (what came so far is answered), but
               as an error, as the relay's gate has it after login */
            imap_parser_fail(p, IMAP_PARSER_E_CRLF);
            *out_consumed = i;
            return imap_parser_end_of_line(p);
        }
        if (c == '\n') {
            enum imap_parse_result r = imap_parser_end_of_line(p);

            if (r != IMAP_PARSE_MORE) {
                *out_consumed = i;
                return r;
            }
            continue;
        }
        if (c == '\r' && p->state != IMAP_PARSER_ST_QUOTED &&
            p->state != IMAP_PARSER_ST_QUOTED_ESC) {
            p->cr = 1;
            continue;
        }
        if (p->line_len >= p->limits.max_line_len) {
            imap_parser_fail(p, IMAP_PARSER_E_LINE_TOO_LONG);
            imap_parser_tail_update(p, c);
            continue;
        }
        p->line_len++;
        imap_parser_step(p, c);
        if (p->state == IMAP_PARSER_ST_SKIP && p->tail == IMAP_PARSER_TAIL_NONE) {
            /* the byte that failed may start a literal announcement */
            imap_parser_tail_update(p, c);
        }
    }
    *out_consumed = i;
    return IMAP_PARSE_MORE;
}
