#include "common/audit_tap.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/mem.h>

#include "common/imap_scan.h"
#include "common/json.h"
#include "common/mutf7.h"

#define TAP_MAX_LITERALS 32 /* literals of one command that are described */
#define TAP_MAX_TOKENS 256  /* tokens of one command that are looked at */
#define TAP_LIT_MARK 0x01   /* in the kept text: a literal, then its index byte */
#define TAP_HEAD_LEN 160    /* bytes of a backend line kept: tag, status, code */
#define TAP_FIELDS_LEN 3072 /* bytes of the JSON fields of one command */

enum tap_mode {
    TAP_NORMAL,
    TAP_AUTH, /* AUTHENTICATE runs: client lines are its data until the answer */
    TAP_IDLE, /* IDLE runs: the next client line should be DONE */
};

struct tap_lit {
    uint64_t size;
    size_t off;   /* where its kept bytes start in text */
    size_t kept;  /* bytes kept (0 when not kept) */
    int keeping;  /* its bytes are being kept */
};

struct tap_pending {
    char tag[AUDIT_TAP_TAG_LEN + 1];
    char name[AUDIT_TAP_NAME_LEN + 1];
    int uid;
    char *fields; /* malloc'ed, or NULL */
    uint64_t start_us, bytes_in, bytes_out;
};

struct audit_tap {
    struct audit_tap_opts opts;
    audit_tap_cb cb;
    void *ctx;
    uint64_t now_us;

    /* client side */
    struct imap_scan cscan;
    enum tap_mode mode;
    char auth_tag[AUDIT_TAP_TAG_LEN + 1];
    unsigned auth_conts;              /* "+" the server sent during AUTHENTICATE */
    uint8_t text[AUDIT_TAP_TEXT_LEN]; /* the command so far, literals replaced */
    size_t text_len;
    int text_full;                    /* some text was not kept */
    struct tap_lit lits[TAP_MAX_LITERALS];
    size_t nlits;
    struct tap_lit *cur_lit;          /* the literal being read, if described */
    int in_cmd;                       /* bytes of a command were seen */
    int cmd_has_literal;              /* the command so far has a literal (also one
                                         not marked in a full text) */
    uint64_t cmd_start_us;
    uint64_t cmd_bytes;
    int overflow;

    /* server side */
    struct imap_scan sscan;
    char head[TAP_HEAD_LEN + 1];
    size_t head_len;
    int head_done;
    uint64_t line_bytes;

    /* unanswered commands, oldest first: a ring */
    struct tap_pending *q;
    size_t q_cap, q_head, q_len;
};

/* --- the pending queue ------------------------------------------------------ */

static struct tap_pending *tap_q_at(struct audit_tap *t, size_t i)
{
    return &t->q[(t->q_head + i) % t->q_cap];
}

static struct tap_pending *tap_q_push(struct audit_tap *t)
{
    if (t->q_len == t->q_cap) {
        size_t ncap = t->q_cap == 0 ? 4 : t->q_cap * 2;
        struct tap_pending *nq = malloc(ncap * sizeof(*nq));
        if (nq == NULL) {
            return NULL;
        }
        for (size_t i = 0; i < t->q_len; i++) {
            nq[i] = *tap_q_at(t, i);
        }
        free(t->q);
        t->q = nq;
        t->q_cap = ncap;
        t->q_head = 0;
    }
    struct tap_pending *p = tap_q_at(t, t->q_len);
    t->q_len++;
    memset(p, 0, sizeof(*p));
    return p;
}

/* tap_complete reports entry i and removes it from the queue. */
static void tap_complete(struct audit_tap *t, size_t i, const char *status, const char *code)
{
    struct tap_pending *p = tap_q_at(t, i);
    struct audit_cmd c = {
        .tag = p->tag,
        .name = p->name,
        .uid = p->uid,
        .fields = p->fields != NULL ? p->fields : "",
        .status = status,
        .code = code,
        .start_us = p->start_us,
        .end_us = t->now_us,
        .bytes_in = p->bytes_in,
        .bytes_out = p->bytes_out,
    };
    t->cb(t->ctx, &c);
    free(p->fields);
    /* close the gap: entries after i move up by one */
    for (size_t k = i; k + 1 < t->q_len; k++) {
        *tap_q_at(t, k) = *tap_q_at(t, k + 1);
    }
    t->q_len--;
    if (t->q_len == 0) {
        t->q_head = 0;
    }
}

/* --- tokens of a kept command ----------------------------------------------- */

enum tok_type { TOK_ATOM, TOK_QUOTED, TOK_LITERAL, TOK_OPEN, TOK_CLOSE };

struct tok {
    enum tok_type type;
    const char *p; /* atom text, quoted content (escapes still in), kept literal bytes */
    size_t n;
    const struct tap_lit *lit; /* TOK_LITERAL */
};

static int tap_atom_char(unsigned char c)
{
    return c > ' ' && c != '(' && c != ')' && c != '"' && c != TAP_LIT_MARK && c != 0x7f;
}

/* tap_tokenize splits text into tokens; returns how many (at most max). */
/* tap_opens_section: the "[" at s[at] opens a section in which spaces and
 * parentheses belong to the atom (BODY[HEADER.FIELDS (FROM TO)]): only in
 * an argument (k: the index of the token), never in the tag or the command
 * name, and only when a "]" closes it.  A tag may hold "[" ("K4[0"), and so
 * may a mailbox name. */
static int tap_opens_section(const char *s, size_t at, size_t n, size_t k)
{
    if (k < 2) {
        return 0;
    }
    for (size_t j = at + 1; j < n; j++) {
        if (s[j] == ']') {
            return 1;
        }
        if (s[j] == '"' || (unsigned char)s[j] == TAP_LIT_MARK) {
            return 0;
        }
    }
    return 0;
}

static size_t tap_tokenize(const struct audit_tap *t, struct tok *toks, size_t max)
{
    const char *s = (const char *)t->text;
    size_t n = t->text_len, i = 0, k = 0;
    while (i < n && k < max) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ') {
            i++;
        } else if (c == '(' || c == ')') {
            toks[k++] = (struct tok){c == '(' ? TOK_OPEN : TOK_CLOSE, s + i, 1, NULL};
            i++;
        } else if (c == '"') {
            size_t j = i + 1;
            while (j < n && s[j] != '"') {
                j += (s[j] == '\\' && j + 1 < n) ? 2 : 1;
            }
            toks[k++] = (struct tok){TOK_QUOTED, s + i + 1, (j < n ? j : n) - i - 1, NULL};
            i = j + 1;
        } else if (c == TAP_LIT_MARK) {
            if (i + 1 >= n || (unsigned char)s[i + 1] >= t->nlits) {
                break; /* the text was cut here */
            }
            const struct tap_lit *l = &t->lits[(unsigned char)s[i + 1]];
            toks[k++] = (struct tok){TOK_LITERAL, s + i + 2, l->kept, l};
            i += 2 + l->kept;
        } else {
            size_t j = i;
            int depth = 0; /* BODY[HEADER.FIELDS (FROM TO)] is one atom */
            while (j < n) {
                unsigned char d = (unsigned char)s[j];
                if (d == '[' && tap_opens_section(s, j, n, k)) {
                    depth++;
                } else if (d == ']' && depth > 0) {
                    depth--;
                } else if (!tap_atom_char(d) && !(depth > 0 && (d == ' ' || d == '(' || d == ')'))) {
                    break;
                }
                j++;
            }
            if (j == i) {
                i++; /* a stray byte (a control character): skip it */
                continue;
            }
            toks[k++] = (struct tok){TOK_ATOM, s + i, j - i, NULL};
            i = j;
        }
    }
    return k;
}

/* tap_tok_string: the value of an atom, quoted string (unescaped) or kept
 * literal into out; 0, or -1 when it has none (a literal not kept). */
static int tap_tok_string(const struct tok *tk, char *out, size_t cap, size_t *out_len)
{
    size_t o = 0;
    if (tk->type == TOK_LITERAL && tk->lit->kept != tk->lit->size) {
        return -1;
    }
    if (tk->type == TOK_OPEN || tk->type == TOK_CLOSE) {
        return -1;
    }
    for (size_t i = 0; i < tk->n && o + 1 < cap; i++) {
        if (tk->type == TOK_QUOTED && tk->p[i] == '\\' && i + 1 < tk->n) {
            i++;
        }
        out[o++] = tk->p[i];
    }
    out[o] = '\0';
    *out_len = o;
    return 0;
}

static int tap_tok_is(const struct tok *tk, const char *word)
{
    return tk->type == TOK_ATOM && tk->n == strlen(word) && strncasecmp(tk->p, word, tk->n) == 0;
}

/* --- the JSON fields of one command ----------------------------------------- */

struct tap_fields {
    struct json j;
    char buf[TAP_FIELDS_LEN];
};

static void tap_field_mailbox(struct tap_fields *f, const char *key, const struct tok *tk)
{
    char raw[AUDIT_TAP_LITERAL_KEEP + 1];
    char utf8[4 * AUDIT_TAP_LITERAL_KEEP + 1];
    size_t n;
    if (tap_tok_string(tk, raw, sizeof(raw), &n) != 0) {
        return;
    }
    if (!mutf7_is_plain(raw, n) && mutf7_decode(utf8, sizeof(utf8), raw, n) == 0) {
        json_str(&f->j, key, utf8);
    } else {
        json_strn(&f->j, key, raw, n); /* not modified UTF-7: as sent (UTF8=ACCEPT) */
    }
}

static void tap_field_seqset(struct audit_tap *t, struct tap_fields *f, const struct tok *tk)
{
    if (tk->type != TOK_ATOM) {
        return;
    }
    size_t n = tk->n < t->opts.seqset_max ? tk->n : t->opts.seqset_max;
    json_strn(&f->j, "seqset", tk->p, n);
    if (n < tk->n) {
        json_bool(&f->j, "seqset_truncated", 1);
    }
}

/* tap_join writes tokens [from, to) as text; strings and literals become
 * "?" unless show is set (then quoted strings keep their quotes). */
static void tap_join(const struct tok *toks, size_t from, size_t to, int show, char *out,
                     size_t cap, int (*keep_atom)(const struct tok *))
{
    size_t o = 0;
    int space = 0;
    out[0] = '\0';
    for (size_t i = from; i < to; i++) {
        const struct tok *tk = &toks[i];
        char tmp[32];
        const char *p = tk->p;
        size_t n = tk->n;
        int q = 0;
        if (tk->type == TOK_CLOSE) {
            space = 0;
        }
        if (tk->type == TOK_QUOTED || tk->type == TOK_LITERAL ||
            (tk->type == TOK_ATOM && keep_atom != NULL && !keep_atom(tk))) {
            if (!show) {
                p = "?";
                n = 1;
            } else if (tk->type == TOK_QUOTED) {
                q = 1;
            } else if (tk->type == TOK_LITERAL && tk->lit->kept != tk->lit->size) {
                n = (size_t)snprintf(tmp, sizeof(tmp), "{%llu}", (unsigned long long)tk->lit->size);
                p = tmp;
            }
        }
        size_t need = (space ? 1 : 0) + n + (q ? 2 : 0);
        if (o + need + 1 > cap) {
            break;
        }
        if (space) {
            out[o++] = ' ';
        }
        if (q) {
            out[o++] = '"';
        }
        memcpy(out + o, p, n);
        o += n;
        if (q) {
            out[o++] = '"';
        }
        out[o] = '\0';
        space = tk->type != TOK_OPEN;
    }
}

/* search keys (RFC 9051 6.4.4, 4731, 7162, 6203) are kept; values are not */
static int tap_search_key(const struct tok *tk)
{
    static const char *const keys[] = {
        "ALL", "ANSWERED", "BCC", "BEFORE", "BODY", "CC", "DELETED", "DRAFT", "FLAGGED",
        "FROM", "HEADER", "KEYWORD", "LARGER", "NEW", "NOT", "OLD", "ON", "OR", "RECENT",
        "SEEN", "SENTBEFORE", "SENTON", "SENTSINCE", "SINCE", "SMALLER", "SUBJECT", "TEXT",
        "TO", "UID", "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNKEYWORD", "UNSEEN",
        "CHARSET", "RETURN", "MIN", "MAX", "COUNT", "SAVE", "MODSEQ", "FUZZY", "YOUNGER",
        "OLDER", "$",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (tap_tok_is(tk, keys[i])) {
            return 1;
        }
    }
    return 0;
}

static int tap_is(const char *name, const char *const *set)
{
    for (; *set != NULL; set++) {
        if (strcmp(name, *set) == 0) {
            return 1;
        }
    }
    return 0;
}

static const char *const tap_mailbox_first[] = {
    "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "STATUS",
    "APPEND", NULL,
};
static const char *const tap_mailbox_second[] = {"COPY", "MOVE", NULL};

/* tap_fields_of writes the fields of the command whose arguments are a[0..na). */
static void tap_fields_of(struct audit_tap *t, struct tap_fields *f, const char *name, int uid,
                          const struct tok *a, size_t na)
{
    char text[1024];
    if (tap_is(name, tap_mailbox_first) && na >= 1) {
        tap_field_mailbox(f, "mailbox", &a[0]);
        if (strcmp(name, "RENAME") == 0 && na >= 2) {
            tap_field_mailbox(f, "new_mailbox", &a[1]);
        }
    }
    if (tap_is(name, tap_mailbox_second) && na >= 2) {
        tap_field_mailbox(f, "mailbox", &a[1]);
    }
    if ((strcmp(name, "FETCH") == 0 || strcmp(name, "STORE") == 0 || strcmp(name, "COPY") == 0 ||
         strcmp(name, "MOVE") == 0 || (uid && strcmp(name, "EXPUNGE") == 0)) &&
        na >= 1) {
        tap_field_seqset(t, f, &a[0]);
    }
    if (strcmp(name, "STORE") == 0 && na >= 2) {
        size_t i = 1;
        if (a[i].type == TOK_OPEN) { /* (UNCHANGEDSINCE n) before the item */
            while (i < na && a[i].type != TOK_CLOSE) {
                i++;
            }
            i++;
        }
        if (i < na) {
            tap_join(a, i, na, 0, text, sizeof(text), NULL);
            json_str(&f->j, "flags", text);
        }
    }
    if (strcmp(name, "FETCH") == 0 && na >= 2) {
        char arr[1024];
        size_t o = 0;
        size_t from = 1, to = 2;
        if (a[1].type == TOK_OPEN) {
            from = 2;
            for (to = 2; to < na && a[to].type != TOK_CLOSE; to++) {
            }
        }
        arr[o++] = '[';
        for (size_t i = from; i < to; i++) {
            if (a[i].type != TOK_ATOM) {
                continue;
            }
            char item[256];
            size_t n = a[i].n < sizeof(item) - 1 ? a[i].n : sizeof(item) - 1;
            for (size_t k = 0; k < n; k++) {
                item[k] = (char)toupper((unsigned char)a[i].p[k]);
            }
            size_t need = json_escape(NULL, 0, item, n) + 1;
            if (o + need + 2 > sizeof(arr)) {
                break;
            }
            if (o > 1) {
                arr[o++] = ',';
            }
            o += json_escape(arr + o, sizeof(arr) - o, item, n);
        }
        arr[o++] = ']';
        arr[o] = '\0';
        json_raw(&f->j, "items", arr);
    }
    if (strcmp(name, "APPEND") == 0 && na >= 2) {
        uint64_t size = 0, msgs = 0;
        for (size_t i = 1; i < na; i++) {
            if (a[i].type == TOK_LITERAL) {
                size += a[i].lit->size;
                msgs++;
            }
        }
        json_u64(&f->j, "append_size", size);
        if (msgs > 1) {
            json_u64(&f->j, "append_messages", msgs);
        }
    }
    if (strcmp(name, "SEARCH") == 0 && na >= 1) {
        tap_join(a, 0, na, t->opts.search_values, text, sizeof(text), tap_search_key);
        json_str(&f->j, "search", text);
    }
    if (strcmp(name, "AUTHENTICATE") == 0 && na >= 1 && a[0].type == TOK_ATOM) {
        char mech[32];
        size_t n = a[0].n < sizeof(mech) - 1 ? a[0].n : sizeof(mech) - 1;
        for (size_t k = 0; k < n; k++) {
            mech[k] = (char)toupper((unsigned char)a[0].p[k]);
        }
        json_strn(&f->j, "mechanism", mech, n);
    }
}

/* tap_name_upper copies an atom's text in upper case. */
static void tap_name_upper(char *out, size_t cap, const struct tok *tk)
{
    size_t n = tk->n < cap - 1 ? tk->n : cap - 1;
    for (size_t i = 0; i < n; i++) {
        out[i] = (char)toupper((unsigned char)tk->p[i]);
    }
    out[n] = '\0';
}

/* tap_command: the kept text holds a whole command: queue it. */
static void tap_command(struct audit_tap *t)
{
    struct tok toks[TAP_MAX_TOKENS];
    size_t nt = tap_tokenize(t, toks, TAP_MAX_TOKENS);

    if (t->q_len >= t->opts.max_pending) {
        t->overflow = 1;
        return;
    }
    struct tap_pending *p = tap_q_push(t);
    if (p == NULL) {
        t->overflow = 1;
        return;
    }
    p->start_us = t->cmd_start_us;
    p->bytes_in = t->cmd_bytes;
    size_t i = 0;
    if (nt > 0 && toks[0].type == TOK_ATOM) {
        size_t n = toks[0].n < AUDIT_TAP_TAG_LEN ? toks[0].n : AUDIT_TAP_TAG_LEN;
        memcpy(p->tag, toks[0].p, n);
        p->tag[n] = '\0';
        i = 1;
    }
    if (i == 1 && nt > 1 && toks[1].type == TOK_ATOM) {
        tap_name_upper(p->name, sizeof(p->name), &toks[1]);
        i = 2;
        if (strcmp(p->name, "UID") == 0 && nt > 2 && toks[2].type == TOK_ATOM) {
            p->uid = 1;
            tap_name_upper(p->name, sizeof(p->name), &toks[2]);
            i = 3;
        }
    }
    struct tap_fields f;
    json_begin(&f.j, f.buf, sizeof(f.buf));
    tap_fields_of(t, &f, p->name, p->uid, toks + i, nt - i);
    json_end(&f.j);
    /* the object's braces go: the fields join the record's */
    if (f.j.len > 2) {
        f.buf[f.j.len - 1] = '\0';
        p->fields = strdup(f.buf + 1);
    }
    OPENSSL_cleanse(f.buf, sizeof(f.buf));

    if (strcmp(p->name, "AUTHENTICATE") == 0) {
        t->mode = TAP_AUTH;
        t->auth_conts = 0;
        memcpy(t->auth_tag, p->tag, sizeof(t->auth_tag));
        t->cscan.no_literals = 1; /* the server reads its data as plain lines */
    } else if (strcmp(p->name, "IDLE") == 0) {
        t->mode = TAP_IDLE;
    }
}

/* --- client side -------------------------------------------------------------- */

static void tap_text_add(struct audit_tap *t, const uint8_t *p, size_t n, int raw)
{
    size_t room = sizeof(t->text) - t->text_len;
    if (n > room) {
        n = room;
        t->text_full = 1;
    }
    memcpy(t->text + t->text_len, p, n);
    if (!raw) {
        for (size_t i = t->text_len; i < t->text_len + n; i++) {
            if (t->text[i] == TAP_LIT_MARK || t->text[i] == '\0') {
                t->text[i] = '?';
            }
        }
    }
    t->text_len += n;
}

static void tap_cmd_begin(struct audit_tap *t)
{
    if (!t->in_cmd) {
        t->in_cmd = 1;
        t->cmd_start_us = t->now_us;
        t->cmd_bytes = 0;
    }
}

static void tap_c_text(void *ctx, const uint8_t *p, size_t n)
{
    struct audit_tap *t = ctx;
    tap_cmd_begin(t);
    t->cmd_bytes += n;
    tap_text_add(t, p, n, 0); /* AUTHENTICATE data too: wiped at the line end */
}

/* tap_keep_literal: is the literal about to start worth keeping?  Only where
 * a mailbox name may be (or a SEARCH value, if those are shown). */
static int tap_keep_literal(struct audit_tap *t, uint64_t size)
{
    struct tok toks[8];
    if (size > AUDIT_TAP_LITERAL_KEEP || t->text_full ||
        t->text_len + 2 + size > sizeof(t->text)) {
        return 0;
    }
    size_t nt = tap_tokenize(t, toks, 8);
    size_t at = 2; /* tag, name */
    if (nt < 2 || toks[1].type != TOK_ATOM) {
        return 0;
    }
    char name[AUDIT_TAP_NAME_LEN + 1];
    tap_name_upper(name, sizeof(name), &toks[1]);
    if (strcmp(name, "UID") == 0 && nt >= 3) {
        tap_name_upper(name, sizeof(name), &toks[2]);
        at = 3;
    }
    size_t argi = nt - at; /* the index of the argument this literal is */
    if (strcmp(name, "APPEND") == 0) {
        return argi == 0;
    }
    if (strcmp(name, "SEARCH") == 0) {
        return t->opts.search_values;
    }
    if (strcmp(name, "RENAME") == 0) {
        return argi <= 1;
    }
    if (tap_is(name, tap_mailbox_second)) {
        return argi == 1;
    }
    return tap_is(name, tap_mailbox_first) && argi == 0;
}

static void tap_c_literal(void *ctx, uint64_t size)
{
    struct audit_tap *t = ctx;
    uint64_t size2;
    t->cmd_bytes += 1; /* the LF after the header */
    t->cur_lit = NULL;
    if (t->mode == TAP_AUTH) {
        return;
    }
    t->cmd_has_literal = 1;
    /* the header ("{5}\r") was kept as text: put the literal's mark there */
    size_t hdr = t->text_full ? 0 : imap_scan_literal_end(t->text, t->text_len, &size2);
    if (hdr == 0 || t->nlits >= TAP_MAX_LITERALS) {
        t->text_full = 1;
        return;
    }
    t->text_len -= hdr;
    if (t->text_len + 2 > sizeof(t->text)) {
        t->text_full = 1;
        return;
    }
    struct tap_lit *l = &t->lits[t->nlits];
    l->size = size;
    l->kept = 0;
    l->keeping = tap_keep_literal(t, size);
    t->text[t->text_len++] = TAP_LIT_MARK;
    t->text[t->text_len++] = (uint8_t)t->nlits;
    l->off = t->text_len;
    t->nlits++;
    t->cur_lit = l;
}

static void tap_c_literal_data(void *ctx, const uint8_t *p, size_t n)
{
    struct audit_tap *t = ctx;
    t->cmd_bytes += n;
    if (t->cur_lit != NULL && t->cur_lit->keeping) {
        /* room was checked when the literal began */
        memcpy(t->text + t->text_len, p, n);
        t->text_len += n;
        t->cur_lit->kept += n;
    }
}

static void tap_c_reset(struct audit_tap *t)
{
    OPENSSL_cleanse(t->text, t->text_len);
    t->text_len = 0;
    t->text_full = 0;
    t->nlits = 0;
    t->cur_lit = NULL;
    t->in_cmd = 0;
    t->cmd_has_literal = 0;
    t->cmd_bytes = 0;
}

static void tap_c_line(void *ctx, const uint8_t *head, size_t len)
{
    struct audit_tap *t = ctx;
    (void)head;
    (void)len;
    tap_cmd_begin(t);
    t->cmd_bytes += 1; /* the LF */
    t->cur_lit = NULL;
    if (t->text_len > 0 && t->text[t->text_len - 1] == '\r') {
        t->text_len--;
    }
    /* During AUTHENTICATE a line answers a "+"; a line sent without one is
     * data too unless it has the form of a command (SASL data in base64 has
     * no space), so a pipelined command is still seen. */
    int auth_data = 0;
    if (t->mode == TAP_AUTH) {
        if (t->auth_conts > 0) {
            t->auth_conts--;
            auth_data = 1;
        } else {
            auth_data = memchr(t->text, ' ', t->text_len) == NULL;
        }
    }
    if (auth_data || (t->mode == TAP_IDLE && t->text_len == 4 &&
                      strncasecmp((const char *)t->text, "DONE", 4) == 0)) {
        /* data of the command in flight: its bytes are its own */
        if (t->q_len > 0) {
            tap_q_at(t, t->q_len - 1)->bytes_in += t->cmd_bytes;
        }
        if (t->mode == TAP_IDLE) {
            t->mode = TAP_NORMAL;
        }
        tap_c_reset(t);
        return;
    }
    if (t->mode == TAP_IDLE) {
        t->mode = TAP_NORMAL;
    }
    if (t->text_len > 0 || t->nlits > 0) {
        tap_command(t);
    }
    tap_c_reset(t);
}

void audit_tap_client_drop(struct audit_tap *t)
{
    imap_scan_init(&t->cscan);
    tap_c_reset(t);
    if (t->mode == TAP_AUTH) {
        t->mode = TAP_NORMAL;
    }
}

void audit_tap_client_cut(struct audit_tap *t)
{
    imap_scan_init(&t->cscan);
    tap_c_line(t, NULL, 0);
}

static const struct imap_scan_ops tap_client_ops = {
    .text = tap_c_text,
    .literal = tap_c_literal,
    .literal_data = tap_c_literal_data,
    .line = tap_c_line,
};

int audit_tap_client(struct audit_tap *t, const uint8_t *data, size_t len, uint64_t now_us)
{
    t->now_us = now_us;
    imap_scan_feed_ops(&t->cscan, data, len, &tap_client_ops, t);
    return t->overflow ? -1 : 0;
}

/* --- server side ---------------------------------------------------------------- */

static void tap_s_text(void *ctx, const uint8_t *p, size_t n)
{
    struct audit_tap *t = ctx;
    t->line_bytes += n;
    if (!t->head_done && t->head_len < TAP_HEAD_LEN) {
        size_t k = TAP_HEAD_LEN - t->head_len < n ? TAP_HEAD_LEN - t->head_len : n;
        memcpy(t->head + t->head_len, p, k);
        t->head_len += k;
    }
}

static void tap_s_literal(void *ctx, uint64_t size)
{
    struct audit_tap *t = ctx;
    (void)size;
    t->line_bytes += 1;
    t->head_done = 1;
}

static void tap_s_literal_data(void *ctx, const uint8_t *p, size_t n)
{
    struct audit_tap *t = ctx;
    (void)p;
    t->line_bytes += n;
}

/* tap_s_tagged: a tagged answer "tag STATUS [CODE ...] text" ends a command. */
static void tap_s_tagged(struct audit_tap *t, const char *h, size_t n)
{
    const char *sp = memchr(h, ' ', n);
    if (sp == NULL) {
        return;
    }
    size_t tag_len = (size_t)(sp - h);
    size_t cmp_len = tag_len < AUDIT_TAP_TAG_LEN ? tag_len : AUDIT_TAP_TAG_LEN;
    char status[4] = "";
    char code[AUDIT_TAP_NAME_LEN + 1] = "";
    const char *p = sp + 1, *end = h + n;
    size_t k = 0;
    while (p < end && *p != ' ' && k < 3) {
        status[k++] = (char)toupper((unsigned char)*p++);
    }
    status[k] = '\0';
    if (strcmp(status, "OK") != 0 && strcmp(status, "NO") != 0 && strcmp(status, "BAD") != 0) {
        return;
    }
    if (p < end && *p == ' ' && p + 1 < end && p[1] == '[') {
        p += 2;
        k = 0;
        while (p < end && *p != ' ' && *p != ']' && k < sizeof(code) - 1) {
            code[k++] = (char)toupper((unsigned char)*p++);
        }
        code[k] = '\0';
    }
    for (size_t i = 0; i < t->q_len; i++) {
        struct tap_pending *q = tap_q_at(t, i);
        if (strlen(q->tag) == cmp_len && memcmp(q->tag, h, cmp_len) == 0) {
            q->bytes_out += t->line_bytes;
            t->line_bytes = 0;
            if (t->mode == TAP_AUTH && strcmp(q->tag, t->auth_tag) == 0) {
                t->mode = TAP_NORMAL;
                t->cscan.no_literals = 0;
            }
            tap_complete(t, i, status, code);
            return;
        }
    }
}

static void tap_s_line(void *ctx, const uint8_t *head, size_t len)
{
    struct audit_tap *t = ctx;
    (void)head;
    (void)len;
    t->line_bytes += 1;
    size_t n = t->head_len;
    if (n > 0 && t->head[n - 1] == '\r') {
        n--;
    }
    if (n > 0 && t->head[0] == '+' && t->mode == TAP_AUTH) {
        t->auth_conts++;
    } else if (n > 0 && t->head[0] != '*' && t->head[0] != '+') {
        tap_s_tagged(t, t->head, n);
    }
    if (t->line_bytes > 0 && t->q_len > 0) {
        tap_q_at(t, 0)->bytes_out += t->line_bytes;
    }
    t->line_bytes = 0;
    t->head_len = 0;
    t->head_done = 0;
}

static const struct imap_scan_ops tap_server_ops = {
    .text = tap_s_text,
    .literal = tap_s_literal,
    .literal_data = tap_s_literal_data,
    .line = tap_s_line,
};

void audit_tap_server(struct audit_tap *t, const uint8_t *data, size_t len, uint64_t now_us)
{
    t->now_us = now_us;
    imap_scan_feed_ops(&t->sscan, data, len, &tap_server_ops, t);
}

/* --- life ------------------------------------------------------------------------ */

struct audit_tap *audit_tap_new(const struct audit_tap_opts *opts, audit_tap_cb cb, void *ctx)
{
    struct audit_tap *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    t->opts = *opts;
    if (t->opts.max_pending == 0) {
        t->opts.max_pending = 1;
    }
    t->cb = cb;
    t->ctx = ctx;
    imap_scan_init(&t->cscan);
    imap_scan_init(&t->sscan);
    return t;
}

void audit_tap_finish(struct audit_tap *t, uint64_t now_us)
{
    t->now_us = now_us;
    /* A command whose bytes so far include a literal reached the backend in
     * part (the relay forwards a line part only up to a literal's CRLF, and
     * the client only ever has parts that were shown to the tap): the
     * backend may have begun it (an APPEND stores as its literal arrives),
     * so it is an unanswered command, not nothing.  One still on its first
     * line part is not reported: no byte of it went anywhere. */
    if (t->in_cmd && t->cmd_has_literal && t->mode != TAP_AUTH) {
        tap_command(t);
        tap_c_reset(t);
        imap_scan_init(&t->cscan);
    }
    while (t->q_len > 0) {
        tap_complete(t, 0, "", "");
    }
}

size_t audit_tap_pending(const struct audit_tap *t)
{
    return t->q_len;
}

void audit_tap_free(struct audit_tap *t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < t->q_len; i++) {
        free(tap_q_at(t, i)->fields);
    }
    free(t->q);
    OPENSSL_cleanse(t, sizeof(*t));
    free(t);
}
