#include "common/imap_parser.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IMAP_PARSER_INITIAL_STORE 256 /* bytes; the store doubles up to its limit */
#define IMAP_PARSER_MAX_LITERAL_DIGITS 10

enum imap_parser_state {
    P_START,      /* nothing of this command yet */
    P_TAG,        /* in the tag */
    P_NAME,       /* in the command name */
    P_ARG_START,  /* where an argument may start */
    P_ARG_SEP,    /* after an argument: SP, ')' or the line end */
    P_ATOM,       /* in an atom */
    P_QUOTED,     /* in a quoted string */
    P_QUOTED_ESC, /* after a backslash in a quoted string */
    P_LIT8,       /* after '~': '{' must follow */
    P_LIT_LEN,    /* in the digits of {n} */
    P_LIT_PLUS,   /* after {n+ : '}' must follow */
    P_LIT_CR,     /* after '}': CRLF must follow */
    P_LIT_LF,     /* after '}' CR: LF must follow */
    P_LIT_DATA,   /* in literal data */
    P_CR,         /* CR seen at the line end: LF must follow */
    P_LINE,       /* line mode: any byte up to the LF */
    P_SKIP,       /* a bad line: discarding up to its LF */
    P_DONE,       /* a result was returned; waiting for reset */
    P_FATAL,      /* cannot resync */
};

/* Where a bad line's tail stands against "{digits+}" (a non-synchronizing
 * literal announced by a line we reject: its data would pass for commands). */
enum imap_parser_skip_tail { ST_NONE, ST_BRACE, ST_DIGITS, ST_PLUS, ST_CLOSED };

struct imap_parser_slot {
    enum imap_arg_type type;
    size_t off; /* in store */
    size_t len;
};

struct imap_parser {
    struct imap_parser_limits lim;
    enum imap_parser_state state;
    int line_mode;               /* the next line is returned raw */

    char *store;                 /* tag, name and argument bytes, NUL-separated */
    size_t store_len, store_cap; /* bytes used / allocated */
    struct imap_parser_slot *slots; /* max_args entries, allocated with the store */
    struct imap_arg *args;          /* built at the end of a command */
    size_t num_args;

    size_t tag_off, tag_len;     /* tag in store; tag_len 0: none */
    size_t name_off, name_len;   /* name in store; name_len 0: none */
    size_t cur_off;              /* start of the token being read */
    size_t line_len;             /* bytes of the command outside literal data */
    size_t depth;                /* open parentheses */
    uint64_t lit_len;            /* announced literal size */
    size_t lit_digits;
    int lit_plus;                /* the literal is non-synchronizing */
    int lit_too_large;           /* announced size over the limit */
    uint64_t lit_left;           /* literal bytes still to read */
    enum imap_parser_skip_tail skip_tail;
    const char *error;           /* fixed reason, or NULL */
};

struct imap_parser *imap_parser_new(const struct imap_parser_limits *limits)
{
    struct imap_parser *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    p->lim = *limits;
    if (p->lim.max_args == 0) {
        p->lim.max_args = 1;
    }
    return p;
}

void imap_parser_free(struct imap_parser *p)
{
    if (p == NULL) {
        return;
    }
    imap_parser_reset(p);
    free(p);
}

void imap_parser_reset(struct imap_parser *p)
{
    free(p->store);
    free(p->slots);
    free(p->args);
    int line_mode = p->line_mode; /* set while handling a result: for the next line */
    struct imap_parser_limits lim = p->lim;
    memset(p, 0, sizeof(*p));
    p->lim = lim;
    p->line_mode = line_mode;
    p->state = P_START;
}

void imap_parser_set_line_mode(struct imap_parser *p)
{
    p->line_mode = 1;
}

void imap_parser_set_literal_limit(struct imap_parser *p, size_t max_literal_len)
{
    p->lim.max_literal_len = max_literal_len;
}

/* Character classes of RFC 9051's grammar. */
static int imap_parser_is_atom_char(unsigned char ch)
{
    if (ch <= 0x20 || ch >= 0x7f) {
        return 0; /* CTL, SP, 8-bit */
    }
    return ch != '(' && ch != ')' && ch != '{' && ch != '"' && ch != '%' && ch != '*' &&
           ch != '\\' && ch != ']';
}

static int imap_parser_is_tag_char(unsigned char ch)
{
    return (imap_parser_is_atom_char(ch) || ch == ']') && ch != '+';
}

/* Argument bytes may also hold list wildcards, flags' backslash and ']'. */
static int imap_parser_is_arg_atom_char(unsigned char ch)
{
    return imap_parser_is_atom_char(ch) || ch == '%' || ch == '*' || ch == '\\' || ch == ']';
}

/* imap_parser_fail turns the rest of the line into one to skip. */
static void imap_parser_fail(struct imap_parser *p, const char *why)
{
    if (p->error == NULL) {
        p->error = why;
    }
    p->state = P_SKIP;
    p->skip_tail = ST_NONE;
}

static int imap_parser_store_byte(struct imap_parser *p, char ch)
{
    if (p->store_len >= p->store_cap) {
        size_t limit = p->lim.max_command_len + 2 * p->lim.max_args + 8;
        if (p->store_cap >= limit) {
            imap_parser_fail(p, "Command too long");
            return -1;
        }
        size_t cap = p->store_cap == 0 ? IMAP_PARSER_INITIAL_STORE : 2 * p->store_cap;
        if (cap > limit) {
            cap = limit;
        }
        char *ns = realloc(p->store, cap);
        if (ns == NULL) {
            imap_parser_fail(p, "Out of memory");
            return -1;
        }
        p->store = ns;
        p->store_cap = cap;
    }
    if (p->store_len >= p->lim.max_command_len + 2 * p->lim.max_args) {
        imap_parser_fail(p, "Command too long");
        return -1;
    }
    p->store[p->store_len++] = ch;
    return 0;
}

static int imap_parser_begin(struct imap_parser *p)
{
    if (p->slots == NULL) {
        p->slots = calloc(p->lim.max_args, sizeof(*p->slots));
        if (p->slots == NULL) {
            imap_parser_fail(p, "Out of memory");
            return -1;
        }
    }
    return 0;
}

/* imap_parser_end_token NUL-terminates the current token and records it. */
static int imap_parser_add_arg(struct imap_parser *p, enum imap_arg_type type)
{
    size_t len = p->store_len - p->cur_off;
    if (p->num_args >= p->lim.max_args) {
        imap_parser_fail(p, "Too many arguments");
        return -1;
    }
    if (imap_parser_store_byte(p, '\0') != 0) {
        return -1;
    }
    p->slots[p->num_args].type = type;
    p->slots[p->num_args].off = p->cur_off;
    p->slots[p->num_args].len = len;
    p->num_args++;
    return 0;
}

static int imap_parser_list_begin(struct imap_parser *p)
{
    if (p->depth >= p->lim.max_depth) {
        imap_parser_fail(p, "Lists nested too deep");
        return -1;
    }
    p->depth++;
    p->cur_off = p->store_len;
    return imap_parser_add_arg(p, IMAP_ARG_LIST_BEGIN);
}

static int imap_parser_list_end(struct imap_parser *p)
{
    if (p->depth == 0) {
        imap_parser_fail(p, "Unbalanced parentheses");
        return -1;
    }
    p->depth--;
    p->cur_off = p->store_len;
    return imap_parser_add_arg(p, IMAP_ARG_LIST_END);
}

/* imap_parser_finish ends a line: a complete command or a reason. */
static enum imap_parse_result imap_parser_finish(struct imap_parser *p)
{
    p->state = P_DONE;
    if (p->error != NULL) {
        return IMAP_PARSE_ERROR;
    }
    if (p->line_mode) {
        p->line_mode = 0;
        p->args = calloc(1, sizeof(*p->args));
        if (p->args == NULL || imap_parser_store_byte(p, '\0') != 0) {
            p->error = "Out of memory";
            return IMAP_PARSE_ERROR;
        }
        p->args[0].type = IMAP_ARG_ATOM;
        p->args[0].data = p->store;
        p->args[0].len = p->store_len - 1;
        p->num_args = 1;
        return IMAP_PARSE_LINE;
    }
    if (p->tag_len == 0) {
        p->error = "Empty command";
        return IMAP_PARSE_ERROR;
    }
    if (p->name_len == 0) {
        p->error = "Missing command name";
        return IMAP_PARSE_ERROR;
    }
    if (p->depth != 0) {
        p->error = "Unbalanced parentheses";
        return IMAP_PARSE_ERROR;
    }
    if (p->num_args > 0) {
        p->args = calloc(p->num_args, sizeof(*p->args));
        if (p->args == NULL) {
            p->error = "Out of memory";
            return IMAP_PARSE_ERROR;
        }
        for (size_t i = 0; i < p->num_args; i++) {
            p->args[i].type = p->slots[i].type;
            p->args[i].data = p->store + p->slots[i].off;
            p->args[i].len = p->slots[i].len;
        }
    }
    return IMAP_PARSE_COMMAND;
}

/* imap_parser_line_end handles CR or LF where a line may end. Returns 1 if
 * the line ended (LF consumed), 0 if a CR now waits for its LF. */
static int imap_parser_line_end(struct imap_parser *p, unsigned char ch)
{
    if (ch == '\r') {
        p->state = P_CR;
        return 0;
    }
    return 1;
}

static void imap_parser_skip_track(struct imap_parser *p, unsigned char ch)
{
    switch (ch) {
    case '{':
        p->skip_tail = ST_BRACE;
        break;
    case '+':
        p->skip_tail = p->skip_tail == ST_DIGITS ? ST_PLUS : ST_NONE;
        break;
    case '}':
        p->skip_tail = p->skip_tail == ST_PLUS ? ST_CLOSED : ST_NONE;
        break;
    case '\r':
        break; /* CR before the LF keeps the tail as it is */
    default:
        if (ch >= '0' && ch <= '9' && (p->skip_tail == ST_BRACE || p->skip_tail == ST_DIGITS)) {
            p->skip_tail = ST_DIGITS;
        } else {
            p->skip_tail = ST_NONE;
        }
        break;
    }
}

/* imap_parser_literal_start checks an announced literal at its '}'. */
static enum imap_parse_result imap_parser_literal_close(struct imap_parser *p)
{
    if (p->lit_too_large || p->lit_len > p->lim.max_literal_len) {
        if (p->lit_plus) {
            p->state = P_FATAL;
            p->error = "Non-synchronizing literal too large";
            return IMAP_PARSE_FATAL;
        }
        /* no continuation goes out, so the client sends no data */
        imap_parser_fail(p, "Literal too large");
        return IMAP_PARSE_MORE;
    }
    p->state = P_LIT_CR;
    return IMAP_PARSE_MORE;
}

enum imap_parse_result imap_parser_feed(struct imap_parser *p, size_t *out_consumed,
                                        const uint8_t *data, size_t len)
{
    size_t i = 0;
    enum imap_parse_result r;

    *out_consumed = 0;
    if (p->state == P_FATAL) {
        return IMAP_PARSE_FATAL;
    }
    if (p->state == P_DONE) {
        imap_parser_reset(p); /* a caller that forgot; harmless */
    }
    while (i < len) {
        unsigned char ch = data[i];

        if (p->state == P_LIT_DATA) {
            size_t n = len - i;
            if (n > p->lit_left) {
                n = (size_t)p->lit_left;
            }
            for (size_t k = 0; k < n; k++) {
                if (imap_parser_store_byte(p, (char)data[i + k]) != 0) {
                    break;
                }
            }
            if (p->state == P_SKIP) {
                /* cannot happen within the limits checked at '}'; resync */
                p->state = P_FATAL;
                *out_consumed = i;
                return IMAP_PARSE_FATAL;
            }
            i += n;
            p->lit_left -= n;
            if (p->lit_left == 0) {
                if (imap_parser_add_arg(p, IMAP_ARG_LITERAL) != 0) {
                    continue;
                }
                p->state = P_ARG_SEP;
            }
            continue;
        }

        i++;
        if (p->state != P_SKIP && p->state != P_LIT_CR && p->state != P_LIT_LF) {
            if (++p->line_len > p->lim.max_line_len) {
                imap_parser_fail(p, "Line too long");
            }
        }

        switch (p->state) {
        case P_START:
            if (p->line_mode) {
                p->state = P_LINE;
                i--;
                p->line_len--;
                break;
            }
            if (imap_parser_begin(p) != 0) {
                break;
            }
            if (ch == '\r' || ch == '\n') {
                if (imap_parser_line_end(p, ch)) {
                    *out_consumed = i;
                    return imap_parser_finish(p);
                }
                break;
            }
            if (!imap_parser_is_tag_char(ch)) {
                imap_parser_fail(p, "Invalid tag");
                imap_parser_skip_track(p, ch);
                break;
            }
            p->tag_off = p->store_len;
            p->state = P_TAG;
            (void)imap_parser_store_byte(p, (char)ch);
            break;
        case P_TAG:
            if (ch == ' ') {
                p->tag_len = p->store_len - p->tag_off;
                if (p->tag_len > p->lim.max_tag_len) {
                    p->tag_len = 0;
                    imap_parser_fail(p, "Tag too long");
                    break;
                }
                if (imap_parser_store_byte(p, '\0') == 0) {
                    p->name_off = p->store_len;
                    p->state = P_NAME;
                }
            } else if (ch == '\r' || ch == '\n') {
                p->tag_len = p->store_len - p->tag_off;
                if (p->tag_len > p->lim.max_tag_len || imap_parser_store_byte(p, '\0') != 0) {
                    p->tag_len = 0;
                }
                p->error = "Missing command name";
                if (imap_parser_line_end(p, ch)) {
                    *out_consumed = i;
                    return imap_parser_finish(p);
                }
            } else if (!imap_parser_is_tag_char(ch)) {
                imap_parser_fail(p, "Invalid tag");
                imap_parser_skip_track(p, ch);
            } else {
                (void)imap_parser_store_byte(p, (char)ch);
            }
            break;
        case P_NAME:
            if (ch == ' ' || ch == '\r' || ch == '\n') {
                p->name_len = p->store_len - p->name_off;
                if (p->name_len == 0) {
                    imap_parser_fail(p, "Missing command name");
                    imap_parser_skip_track(p, ch);
                    if (ch == '\n') {
                        *out_consumed = i;
                        return imap_parser_finish(p);
                    }
                    break;
                }
                if (imap_parser_store_byte(p, '\0') != 0) {
                    break;
                }
                if (ch == ' ') {
                    p->state = P_ARG_START;
                } else if (imap_parser_line_end(p, ch)) {
                    *out_consumed = i;
                    return imap_parser_finish(p);
                }
            } else if (!imap_parser_is_atom_char(ch)) {
                imap_parser_fail(p, "Invalid characters in command name");
                imap_parser_skip_track(p, ch);
            } else {
                (void)imap_parser_store_byte(p, (char)ch);
            }
            break;
        case P_ARG_START:
        case P_ARG_SEP:
            if (ch == '\r' || ch == '\n') {
                if (imap_parser_line_end(p, ch)) {
                    *out_consumed = i;
                    return imap_parser_finish(p);
                }
                break;
            }
            if (ch == ')') {
                (void)imap_parser_list_end(p);
                if (p->state != P_SKIP) {
                    p->state = P_ARG_SEP;
                }
                break;
            }
            if (p->state == P_ARG_SEP) {
                if (ch == ' ') {
                    p->state = P_ARG_START;
                } else {
                    imap_parser_fail(p, "Expected a space between arguments");
                    imap_parser_skip_track(p, ch);
                }
                break;
            }
            p->cur_off = p->store_len;
            if (ch == '(') {
                (void)imap_parser_list_begin(p);
            } else if (ch == '"') {
                p->state = P_QUOTED;
            } else if (ch == '{' || ch == '~') {
                p->lit_len = 0;
                p->lit_digits = 0;
                p->lit_plus = 0;
                p->lit_too_large = 0;
                p->state = ch == '{' ? P_LIT_LEN : P_LIT8;
                if (ch == '{') {
                    p->skip_tail = ST_BRACE;
                }
            } else if (imap_parser_is_arg_atom_char(ch)) {
                p->state = P_ATOM;
                (void)imap_parser_store_byte(p, (char)ch);
            } else {
                imap_parser_fail(p, "Invalid characters in command");
                imap_parser_skip_track(p, ch);
            }
            break;
        case P_ATOM:
            if (ch == ' ' || ch == ')' || ch == '\r' || ch == '\n') {
                if (imap_parser_add_arg(p, IMAP_ARG_ATOM) != 0) {
                    imap_parser_skip_track(p, ch);
                    if (ch == '\n') {
                        *out_consumed = i;
                        return imap_parser_finish(p);
                    }
                    break;
                }
                if (ch == ' ') {
                    p->state = P_ARG_START;
                } else if (ch == ')') {
                    (void)imap_parser_list_end(p);
                    if (p->state != P_SKIP) {
                        p->state = P_ARG_SEP;
                    }
                } else if (imap_parser_line_end(p, ch)) {
                    *out_consumed = i;
                    return imap_parser_finish(p);
                }
            } else if (imap_parser_is_arg_atom_char(ch)) {
                (void)imap_parser_store_byte(p, (char)ch);
            } else {
                imap_parser_fail(p, "Invalid characters in command");
                imap_parser_skip_track(p, ch);
            }
            break;
        case P_QUOTED:
            if (ch == '"') {
                if (imap_parser_add_arg(p, IMAP_ARG_QUOTED) == 0) {
                    p->state = P_ARG_SEP;
                }
            } else if (ch == '\\') {
                p->state = P_QUOTED_ESC;
            } else if (ch == '\r' || ch == '\n' || ch == '\0' || ch >= 0x80) {
                imap_parser_fail(p, "Invalid characters in quoted string");
                if (ch == '\n') {
                    *out_consumed = i;
                    return imap_parser_finish(p);
                }
            } else {
                (void)imap_parser_store_byte(p, (char)ch);
            }
            break;
        case P_QUOTED_ESC:
            if (ch == '"' || ch == '\\') {
                p->state = P_QUOTED;
                (void)imap_parser_store_byte(p, (char)ch);
            } else {
                imap_parser_fail(p, "Invalid escape in quoted string");
                if (ch == '\n') {
                    *out_consumed = i;
                    return imap_parser_finish(p);
                }
            }
            break;
        case P_LIT8:
            if (ch == '{') {
                p->state = P_LIT_LEN;
                p->skip_tail = ST_BRACE;
            } else {
                imap_parser_fail(p, "Invalid literal8");
                imap_parser_skip_track(p, ch);
            }
            break;
        case P_LIT_LEN:
            if (ch >= '0' && ch <= '9') {
                p->skip_tail = ST_DIGITS;
                if (++p->lit_digits > IMAP_PARSER_MAX_LITERAL_DIGITS) {
                    p->lit_too_large = 1; /* keep reading: its '+' decides the answer */
                } else {
                    p->lit_len = p->lit_len * 10 + (uint64_t)(ch - '0');
                }
            } else if (ch == '+' && p->lit_digits > 0) {
                p->lit_plus = 1;
                p->state = P_LIT_PLUS;
            } else if (ch == '}' && p->lit_digits > 0) {
                r = imap_parser_literal_close(p);
                if (r == IMAP_PARSE_FATAL) {
                    *out_consumed = i;
                    return r;
                }
            } else {
                imap_parser_fail(p, "Invalid literal");
                imap_parser_skip_track(p, ch);
            }
            break;
        case P_LIT_PLUS:
            if (ch == '}') {
                r = imap_parser_literal_close(p);
                if (r == IMAP_PARSE_FATAL) {
                    *out_consumed = i;
                    return r;
                }
            } else {
                imap_parser_fail(p, "Invalid literal");
                imap_parser_skip_track(p, ch);
            }
            break;
        case P_LIT_CR:
        case P_LIT_LF:
            if (ch == '\r' && p->state == P_LIT_CR) {
                p->state = P_LIT_LF;
            } else if (ch == '\n') {
                p->cur_off = p->store_len;
                p->lit_left = p->lit_len;
                p->state = P_LIT_DATA;
                if (p->lit_left == 0) {
                    if (imap_parser_add_arg(p, IMAP_ARG_LITERAL) == 0) {
                        p->state = P_ARG_SEP;
                    }
                }
                if (!p->lit_plus && p->state != P_SKIP) {
                    *out_consumed = i;
                    return IMAP_PARSE_LITERAL_WAIT;
                }
            } else {
                imap_parser_fail(p, "Literal size must end the line");
                imap_parser_skip_track(p, ch);
            }
            break;
        case P_CR:
            if (ch == '\n') {
                *out_consumed = i;
                return imap_parser_finish(p);
            }
            imap_parser_fail(p, "CR without LF");
            imap_parser_skip_track(p, ch);
            break;
        case P_LINE:
            if (ch == '\n') {
                if (p->store_len > 0 && p->store[p->store_len - 1] == '\r') {
                    p->store_len--;
                }
                *out_consumed = i;
                return imap_parser_finish(p);
            }
            (void)imap_parser_store_byte(p, (char)ch);
            if (p->state == P_SKIP) {
                p->line_mode = 0;
            }
            break;
        case P_SKIP:
            if (ch == '\n') {
                *out_consumed = i;
                if (p->skip_tail == ST_CLOSED) {
                    p->state = P_FATAL;
                    p->error = "Non-synchronizing literal in a rejected command";
                    return IMAP_PARSE_FATAL;
                }
                p->line_mode = 0;
                return imap_parser_finish(p);
            }
            imap_parser_skip_track(p, ch);
            break;
        case P_LIT_DATA:
        case P_DONE:
        case P_FATAL:
            break; /* handled above */
        }
    }
    *out_consumed = i;
    return IMAP_PARSE_MORE;
}

const char *imap_parser_get_tag(const struct imap_parser *p)
{
    return p->tag_len > 0 ? p->store + p->tag_off : NULL;
}

const char *imap_parser_get_name(const struct imap_parser *p)
{
    return p->name_len > 0 ? p->store + p->name_off : NULL;
}

const struct imap_arg *imap_parser_get_args(const struct imap_parser *p, size_t *out_num)
{
    *out_num = p->args != NULL ? p->num_args : 0;
    return p->args;
}

const char *imap_parser_get_error(const struct imap_parser *p)
{
    return p->error;
}

int imap_arg_is_nil(const struct imap_arg *arg)
{
    return arg->type == IMAP_ARG_ATOM && arg->len == 3 && strncasecmp(arg->data, "NIL", 3) == 0;
}
