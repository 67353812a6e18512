/* imapmuxctl: the operator tool for the Redis routing table (keys and
 * events as documented in common/schema.h).  Synchronous hiredis; exit codes:
 * 0 done, 1 refused (no such user, exists, invalid value), 2 usage, 3 Redis
 * unreachable or failing. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <termios.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <openssl/mem.h>

#include "common/audit_chain.h"
#include "common/config.h"
#include "common/json_check.h"
#include "common/passwd.h"
#include "common/schema.h"

#define CTL_OK 0
#define CTL_REFUSED 1
#define CTL_USAGE 2
#define CTL_REDIS 3
#define CTL_KEY_LEN 400
#define CTL_PW_LEN 1024

struct ctl {
    redisContext *rc;
    const char *prefix;
};

static void ctl_usage(FILE *f)
{
    fputs("usage: imapmuxctl [-c FILE | -r HOST:PORT] [--prefix P] COMMAND ...\n"
          "  user add LOGIN [--backend NAME] [--login-as NAME] [--scheme S] [--no-password]\n"
          "  user set-password LOGIN [--scheme S]\n"
          "  user set-backend LOGIN NAME\n"
          "  user set-login-as LOGIN NAME|--clear\n"
          "  user disable LOGIN | enable LOGIN | delete LOGIN\n"
          "  user show LOGIN [--show-hash]\n"
          "  user move LOGIN BACKEND     (sets the backend, publishes \"route LOGIN\")\n"
          "  user list [PATTERN]\n"
          "  domain set DOMAIN [--backend NAME] [--auth local|passthrough]\n"
          "  domain show DOMAIN | delete DOMAIN\n"
          "  backend set NAME --hosts H:P[,H:P...] [--down H:P[,...] | --up]\n"
          "  backend show NAME\n"
          "  kick LOGIN\n"
          "  audit verify FILE           (checks the hash chain; needs no Redis)\n"
          "  reload --pid PID | --pid-file FILE  (SIGHUP to the daemon: it rereads its\n"
          "                              configuration; its log says whether it was taken)\n"
          "Passwords come from standard input when it is not a terminal, else from a\n"
          "prompt. Schemes: yescrypt (default), sha512-crypt, bcrypt, argon2id.\n"
          "Exit codes: 0 done, 1 refused, 2 usage, 3 Redis unreachable or failing.\n",
          f);
}

static int ctl_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ctl_fail(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("imapmuxctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (code == CTL_USAGE) {
        ctl_usage(stderr);
    }
    return code;
}

/* --- Redis ----------------------------------------------------------------- */

static redisContext *ctl_connect_to(const char *host, int port, unsigned timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (c == NULL || c->err) {
        if (c != NULL) {
            fprintf(stderr, "imapmuxctl: %s:%d: %s\n", host, port, c->errstr);
            redisFree(c);
        }
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

/* ctl_cmd runs one command; a NULL or error reply is a Redis failure. */
static redisReply *ctl_cmd(struct ctl *c, int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(c->rc, argc, argv, NULL);
    if (r == NULL) {
        fprintf(stderr, "imapmuxctl: redis: %s\n", c->rc->errstr[0] ? c->rc->errstr : "no answer");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "imapmuxctl: redis: %s\n", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static int ctl_open(struct ctl *c, const struct config_redis *cfg, const char *host, int port,
                    const char *password)
{
    unsigned tmo = cfg != NULL && cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 2000;
    char mhost[256];
    if (cfg != NULL && cfg->num_sentinels > 0) {
        for (size_t i = 0; i < cfg->num_sentinels && c->rc == NULL; i++) {
            redisContext *s = ctl_connect_to(cfg->sentinels[i].host, cfg->sentinels[i].port, tmo);
            if (s == NULL) {
                continue;
            }
            if (cfg->sentinel_password != NULL) {
                redisReply *a = redisCommand(s, "AUTH %s", cfg->sentinel_password);
                int refused = a == NULL || a->type == REDIS_REPLY_ERROR;
                if (a != NULL) {
                    if (refused) {
                        fprintf(stderr, "imapmuxctl: sentinel %s:%u: %s\n", cfg->sentinels[i].host,
                                (unsigned)cfg->sentinels[i].port, a->str);
                    }
                    freeReplyObject(a);
                }
                if (refused) {
                    redisFree(s);
                    continue;
                }
            }
            redisReply *r = redisCommand(s, "SENTINEL get-master-addr-by-name %s", cfg->master_name);
            if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                r->element[0]->len < sizeof(mhost)) {
                memcpy(mhost, r->element[0]->str, r->element[0]->len + 1);
                c->rc = ctl_connect_to(mhost, atoi(r->element[1]->str), tmo);
            }
            if (r != NULL) {
                freeReplyObject(r);
            }
            redisFree(s);
        }
    } else {
        c->rc = ctl_connect_to(host, port, tmo);
    }
    if (c->rc == NULL) {
        return ctl_fail(CTL_REDIS, "cannot reach Redis");
    }
    if (password != NULL) {
        const char *argv[2] = {"AUTH", password};
        redisReply *r = ctl_cmd(c, 2, argv);
        if (r == NULL) {
            return CTL_REDIS;
        }
        freeReplyObject(r);
    }
    if (cfg != NULL && cfg->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%u", cfg->db);
        const char *argv[2] = {"SELECT", db};
        redisReply *r = ctl_cmd(c, 2, argv);
        if (r == NULL) {
            return CTL_REDIS;
        }
        freeReplyObject(r);
    }
    return CTL_OK;
}

/* ctl_exec runs commands in MULTI/EXEC so that a change and its event go
 * together.  cmds: argv arrays with their counts. */
static int ctl_exec(struct ctl *c, size_t n, const char **const *cmds, const int *argcs)
{
    redisAppendCommand(c->rc, "MULTI");
    for (size_t i = 0; i < n; i++) {
        redisAppendCommandArgv(c->rc, argcs[i], cmds[i], NULL);
    }
    redisAppendCommand(c->rc, "EXEC");
    int rc = CTL_OK;
    for (size_t i = 0; i < n + 2; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c->rc, (void **)&r) != REDIS_OK || r == NULL) {
            return ctl_fail(CTL_REDIS, "redis: %s", c->rc->errstr);
        }
        if (r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "imapmuxctl: redis: %s\n", r->str);
            rc = CTL_REDIS;
        }
        freeReplyObject(r);
    }
    return rc;
}

static void ctl_key(struct ctl *c, char *out, enum schema_kind kind, const char *name)
{
    if (schema_key(out, CTL_KEY_LEN, c->prefix, kind, name) < 0) {
        out[0] = '\0';
    }
}

static int ctl_exists(struct ctl *c, const char *key, int *exists)
{
    const char *argv[2] = {"EXISTS", key};
    redisReply *r = ctl_cmd(c, 2, argv);
    if (r == NULL) {
        return CTL_REDIS;
    }
    *exists = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    freeReplyObject(r);
    return CTL_OK;
}

/* --- passwords --------------------------------------------------------------- */

static int ctl_read_line(char *buf, size_t len, FILE *f)
{
    if (fgets(buf, (int)len, f) == NULL) {
        return -1;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

static int ctl_prompt(char *buf, size_t len, const char *prompt)
{
    FILE *tty = fopen("/dev/tty", "r+");
    struct termios old, quiet;
    int r;
    if (tty == NULL) {
        return -1;
    }
    fputs(prompt, tty);
    fflush(tty);
    tcgetattr(fileno(tty), &old);
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
    r = ctl_read_line(buf, len, tty);
    tcsetattr(fileno(tty), TCSAFLUSH, &old);
    fputc('\n', tty);
    fclose(tty);
    return r;
}

/* ctl_password reads the new password and returns its hash (malloc'd). */
static int ctl_password(enum passwd_scheme scheme, char **hash)
{
    char pw[CTL_PW_LEN], again[CTL_PW_LEN];
    int rc = CTL_OK;
    if (isatty(STDIN_FILENO)) {
        if (ctl_prompt(pw, sizeof(pw), "New password: ") != 0 ||
            ctl_prompt(again, sizeof(again), "Again: ") != 0) {
            return ctl_fail(CTL_REFUSED, "cannot read the password");
        }
        if (strcmp(pw, again) != 0) {
            rc = ctl_fail(CTL_REFUSED, "the passwords differ");
        }
        OPENSSL_cleanse(again, sizeof(again));
    } else if (ctl_read_line(pw, sizeof(pw), stdin) != 0) {
        pw[0] = '\0';
    }
    if (rc == CTL_OK && pw[0] == '\0') {
        rc = ctl_fail(CTL_REFUSED, "empty password");
    }
    if (rc == CTL_OK) {
        *hash = passwd_hash(scheme, pw);
        if (*hash == NULL) {
            rc = ctl_fail(CTL_REFUSED, "hashing failed");
        }
    }
    OPENSSL_cleanse(pw, sizeof(pw));
    return rc;
}

/* --- options of a subcommand ---------------------------------------------- */

struct ctl_opts {
    const char *backend, *login_as, *auth, *hosts, *down;
    enum passwd_scheme scheme;
    int no_password, show_hash, clear, up;
    const char *pos[3]; /* positional arguments */
    int npos;
};

static int ctl_parse_opts(struct ctl_opts *o, int argc, char **argv)
{
    memset(o, 0, sizeof(*o));
    o->scheme = PASSWD_YESCRYPT;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (strcmp(a, "--backend") == 0) {
            dst = &o->backend;
        } else if (strcmp(a, "--login-as") == 0) {
            dst = &o->login_as;
        } else if (strcmp(a, "--auth") == 0) {
            dst = &o->auth;
        } else if (strcmp(a, "--hosts") == 0) {
            dst = &o->hosts;
        } else if (strcmp(a, "--down") == 0) {
            dst = &o->down;
        } else if (strcmp(a, "--scheme") == 0) {
            if (i + 1 >= argc || passwd_scheme_parse(argv[i + 1], &o->scheme) != 0) {
                return ctl_fail(CTL_USAGE, "--scheme: yescrypt, sha512-crypt, bcrypt or argon2id");
            }
            i++;
            continue;
        } else if (strcmp(a, "--no-password") == 0) {
            o->no_password = 1;
            continue;
        } else if (strcmp(a, "--show-hash") == 0) {
            o->show_hash = 1;
            continue;
        } else if (strcmp(a, "--clear") == 0) {
            o->clear = 1;
            continue;
        } else if (strcmp(a, "--up") == 0) {
            o->up = 1;
            continue;
        } else if (a[0] == '-' && a[1] == '-') {
            return ctl_fail(CTL_USAGE, "unknown option %s", a);
        } else {
            if (o->npos == 3) {
                return ctl_fail(CTL_USAGE, "too many arguments");
            }
            o->pos[o->npos++] = a;
            continue;
        }
        if (i + 1 >= argc) {
            return ctl_fail(CTL_USAGE, "%s needs a value", a);
        }
        *dst = argv[++i];
    }
    return CTL_OK;
}

static int ctl_norm(char *out, const char *in, const char *what)
{
    if (in == NULL || schema_normalize(out, in, strlen(in)) != 0) {
        return ctl_fail(CTL_REFUSED, "%s %s: not a usable name", what, in ? in : "(missing)");
    }
    return CTL_OK;
}

static int ctl_backend_name(const char *name)
{
    if (name != NULL && !schema_name_valid(name)) {
        return ctl_fail(CTL_REFUSED, "backend %s: 1-%d of A-Z a-z 0-9 . _ -", name,
                        SCHEMA_MAX_NAME_LEN);
    }
    return CTL_OK;
}

static int ctl_publish(struct ctl *c, enum schema_event_type type, const char *arg,
                       const char **const *before, const int *before_argc, size_t nbefore)
{
    char chan[CTL_KEY_LEN], msg[CTL_KEY_LEN];
    const char **cmds[8];
    int argcs[8];
    ctl_key(c, chan, SCHEMA_EVENTS, NULL);
    snprintf(msg, sizeof(msg), "%s %s", schema_event_name(type), arg);
    const char *pub[3] = {"PUBLISH", chan, msg};
    char kick[CTL_KEY_LEN], ttl[16];
    ctl_key(c, kick, SCHEMA_KICK, arg);
    snprintf(ttl, sizeof(ttl), "%d", SCHEMA_KICK_TTL_S);
    const char *incr[2] = {"INCR", kick};
    const char *expire[3] = {"EXPIRE", kick, ttl};
    size_t n = 0;
    if (nbefore + 3 > sizeof(cmds) / sizeof(cmds[0])) {
        return ctl_fail(CTL_USAGE, "too many commands in one change");
    }
    for (size_t i = 0; i < nbefore; i++) {
        cmds[n] = before[i];
        argcs[n++] = before_argc[i];
    }
    if (type == SCHEMA_EV_KICK) {
        cmds[n] = incr;
        argcs[n++] = 2;
        cmds[n] = expire;
        argcs[n++] = 3;
    }
    cmds[n] = pub;
    argcs[n++] = 3;
    return ctl_exec(c, n, (const char **const *)cmds, argcs);
}

/* --- user ------------------------------------------------------------------- */

static int ctl_user_show(struct ctl *c, const char *key, const char *login, int show_hash)
{
    const char *argv[2] = {"HGETALL", key};
    redisReply *r = ctl_cmd(c, 2, argv);
    if (r == NULL) {
        return CTL_REDIS;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        freeReplyObject(r);
        return ctl_fail(CTL_REFUSED, "no such user: %s", login);
    }
    printf("login: %s\n", login);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
        if (strcmp(f, "password") == 0 && !show_hash) {
            printf("password: (set, %s)\n", passwd_scheme_name(passwd_detect(v)));
        } else {
            printf("%s: %s\n", f, v);
        }
    }
    freeReplyObject(r);
    return CTL_OK;
}

static int ctl_user(struct ctl *c, int argc, char **argv)
{
    struct ctl_opts o;
    char login[SCHEMA_MAX_LOGIN_LEN + 1], key[CTL_KEY_LEN];
    int rc, exists;
    if (argc < 1) {
        return ctl_fail(CTL_USAGE, "user: which subcommand?");
    }
    const char *sub = argv[0];
    if ((rc = ctl_parse_opts(&o, argc - 1, argv + 1)) != CTL_OK) {
        return rc;
    }
    if (strcmp(sub, "list") == 0) {
        char pattern[CTL_KEY_LEN];
        ctl_key(c, pattern, SCHEMA_USER, o.npos > 0 ? o.pos[0] : "*");
        size_t plen = strlen(c->prefix) + strlen("user:");
        char cursor[32] = "0";
        do {
            const char *a[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
            redisReply *r = ctl_cmd(c, 6, a);
            if (r == NULL) {
                return CTL_REDIS;
            }
            snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
            for (size_t i = 0; i < r->element[1]->elements; i++) {
                printf("%s\n", r->element[1]->element[i]->str + plen);
            }
            freeReplyObject(r);
        } while (strcmp(cursor, "0") != 0);
        return CTL_OK;
    }
    if (o.npos < 1) {
        return ctl_fail(CTL_USAGE, "user %s: LOGIN is missing", sub);
    }
    if ((rc = ctl_norm(login, o.pos[0], "login")) != CTL_OK) {
        return rc;
    }
    ctl_key(c, key, SCHEMA_USER, login);
    if ((rc = ctl_exists(c, key, &exists)) != CTL_OK) {
        return rc;
    }
    if (strcmp(sub, "add") == 0) {
        char *hash = NULL;
        char las[SCHEMA_MAX_LOGIN_LEN + 1];
        if (exists) {
            return ctl_fail(CTL_REFUSED, "user %s exists already", login);
        }
        if ((rc = ctl_backend_name(o.backend)) != CTL_OK ||
            (o.login_as != NULL && (rc = ctl_norm(las, o.login_as, "login-as")) != CTL_OK)) {
            return rc;
        }
        if (!o.no_password && (rc = ctl_password(o.scheme, &hash)) != CTL_OK) {
            return rc;
        }
        const char *a[10] = {"HSET", key, "state", "active"};
        int n = 4;
        if (hash != NULL) {
            a[n++] = "password";
            a[n++] = hash;
        }
        if (o.backend != NULL) {
            a[n++] = "backend";
            a[n++] = o.backend;
        }
        if (o.login_as != NULL) {
            a[n++] = "login_as";
            a[n++] = o.login_as;
        }
        redisReply *r = ctl_cmd(c, n, a);
        free(hash);
        if (r == NULL) {
            return CTL_REDIS;
        }
        freeReplyObject(r);
        printf("user %s added\n", login);
        return CTL_OK;
    }
    if (!exists) {
        return ctl_fail(CTL_REFUSED, "no such user: %s", login);
    }
    if (strcmp(sub, "show") == 0) {
        return ctl_user_show(c, key, login, o.show_hash);
    }
    if (strcmp(sub, "set-password") == 0) {
        char *hash = NULL;
        if ((rc = ctl_password(o.scheme, &hash)) != CTL_OK) {
            return rc;
        }
        const char *a[4] = {"HSET", key, "password", hash};
        redisReply *r = ctl_cmd(c, 4, a);
        free(hash);
        if (r == NULL) {
            return CTL_REDIS;
        }
        freeReplyObject(r);
        printf("password of %s set\n", login);
        return CTL_OK;
    }
    if (strcmp(sub, "set-backend") == 0 || strcmp(sub, "move") == 0) {
        if (o.npos < 2 || (rc = ctl_backend_name(o.pos[1])) != CTL_OK) {
            return o.npos < 2 ? ctl_fail(CTL_USAGE, "user %s: BACKEND is missing", sub) : rc;
        }
        const char *a[4] = {"HSET", key, "backend", o.pos[1]};
        if (strcmp(sub, "move") == 0) {
            const char **before[1] = {a};
            int n[1] = {4};
            rc = ctl_publish(c, SCHEMA_EV_ROUTE, login, before, n, 1);
        } else {
            redisReply *r = ctl_cmd(c, 4, a);
            rc = r != NULL ? CTL_OK : CTL_REDIS;
            if (r != NULL) {
                freeReplyObject(r);
            }
        }
        if (rc == CTL_OK) {
            printf("user %s now on backend %s\n", login, o.pos[1]);
        }
        return rc;
    }
    if (strcmp(sub, "set-login-as") == 0) {
        char las[SCHEMA_MAX_LOGIN_LEN + 1];
        redisReply *r;
        if (o.clear) {
            const char *a[3] = {"HDEL", key, "login_as"};
            r = ctl_cmd(c, 3, a);
        } else {
            if (o.npos < 2) {
                return ctl_fail(CTL_USAGE, "user set-login-as: NAME or --clear");
            }
            if ((rc = ctl_norm(las, o.pos[1], "login-as")) != CTL_OK) {
                return rc;
            }
            const char *a[4] = {"HSET", key, "login_as", o.pos[1]};
            r = ctl_cmd(c, 4, a);
        }
        if (r == NULL) {
            return CTL_REDIS;
        }
        freeReplyObject(r);
        return CTL_OK;
    }
    if (strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0) {
        int disable = strcmp(sub, "disable") == 0;
        const char *a[4] = {"HSET", key, "state", disable ? "disabled" : "active"};
        const char **before[1] = {a};
        int n[1] = {4};
        rc = disable ? ctl_publish(c, SCHEMA_EV_KICK, login, before, n, 1)
                     : ctl_publish(c, SCHEMA_EV_ROUTE, login, before, n, 1);
        if (rc == CTL_OK) {
            printf("user %s %s\n", login, disable ? "disabled" : "enabled");
        }
        return rc;
    }
    if (strcmp(sub, "delete") == 0) {
        const char *a[2] = {"DEL", key};
        const char **before[1] = {a};
        int n[1] = {2};
        rc = ctl_publish(c, SCHEMA_EV_KICK, login, before, n, 1);
        if (rc == CTL_OK) {
            printf("user %s deleted\n", login);
        }
        return rc;
    }
    return ctl_fail(CTL_USAGE, "user: unknown subcommand %s", sub);
}

/* --- domain, backend, kick ---------------------------------------------------- */

static int ctl_show_hash(struct ctl *c, const char *key, const char *what, const char *name)
{
    const char *argv[2] = {"HGETALL", key};
    redisReply *r = ctl_cmd(c, 2, argv);
    if (r == NULL) {
        return CTL_REDIS;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        freeReplyObject(r);
        return ctl_fail(CTL_REFUSED, "no such %s: %s", what, name);
    }
    printf("%s: %s\n", what, name);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        printf("%s: %s\n", r->element[i]->str, r->element[i + 1]->str);
    }
    freeReplyObject(r);
    return CTL_OK;
}

static int ctl_domain(struct ctl *c, int argc, char **argv)
{
    struct ctl_opts o;
    char domain[SCHEMA_MAX_LOGIN_LEN + 1], key[CTL_KEY_LEN];
    int rc;
    if (argc < 1) {
        return ctl_fail(CTL_USAGE, "domain: which subcommand?");
    }
    if ((rc = ctl_parse_opts(&o, argc - 1, argv + 1)) != CTL_OK) {
        return rc;
    }
    if (o.npos < 1) {
        return ctl_fail(CTL_USAGE, "domain %s: DOMAIN is missing", argv[0]);
    }
    if ((rc = ctl_norm(domain, o.pos[0], "domain")) != CTL_OK) {
        return rc;
    }
    ctl_key(c, key, SCHEMA_DOMAIN, domain);
    if (strcmp(argv[0], "show") == 0) {
        return ctl_show_hash(c, key, "domain", domain);
    }
    if (strcmp(argv[0], "delete") == 0) {
        const char *a[2] = {"DEL", key};
        const char **before[1] = {a};
        int n[1] = {2};
        return ctl_publish(c, SCHEMA_EV_DOMAIN, domain, before, n, 1);
    }
    if (strcmp(argv[0], "set") != 0) {
        return ctl_fail(CTL_USAGE, "domain: unknown subcommand %s", argv[0]);
    }
    if (o.backend == NULL && o.auth == NULL) {
        return ctl_fail(CTL_USAGE, "domain set: --backend and/or --auth");
    }
    if ((rc = ctl_backend_name(o.backend)) != CTL_OK) {
        return rc;
    }
    if (o.auth != NULL && strcmp(o.auth, "local") != 0 && strcmp(o.auth, "passthrough") != 0) {
        return ctl_fail(CTL_REFUSED, "--auth: local or passthrough");
    }
    const char *a[6] = {"HSET", key};
    int n = 2;
    if (o.backend != NULL) {
        a[n++] = "backend";
        a[n++] = o.backend;
    }
    if (o.auth != NULL) {
        a[n++] = "auth";
        a[n++] = o.auth;
    }
    const char **before[1] = {a};
    int na[1] = {n};
    rc = ctl_publish(c, SCHEMA_EV_DOMAIN, domain, before, na, 1);
    if (rc == CTL_OK) {
        printf("domain %s set\n", domain);
    }
    return rc;
}

static int ctl_backend(struct ctl *c, int argc, char **argv)
{
    struct ctl_opts o;
    char key[CTL_KEY_LEN], err[200];
    int rc;
    if (argc < 1) {
        return ctl_fail(CTL_USAGE, "backend: which subcommand?");
    }
    if ((rc = ctl_parse_opts(&o, argc - 1, argv + 1)) != CTL_OK) {
        return rc;
    }
    if (o.npos < 1) {
        return ctl_fail(CTL_USAGE, "backend %s: NAME is missing", argv[0]);
    }
    if ((rc = ctl_backend_name(o.pos[0])) != CTL_OK) {
        return rc;
    }
    ctl_key(c, key, SCHEMA_BACKEND, o.pos[0]);
    if (strcmp(argv[0], "show") == 0) {
        return ctl_show_hash(c, key, "backend", o.pos[0]);
    }
    if (strcmp(argv[0], "set") != 0) {
        return ctl_fail(CTL_USAGE, "backend: unknown subcommand %s", argv[0]);
    }
    if (o.hosts == NULL && o.down == NULL && !o.up) {
        return ctl_fail(CTL_USAGE, "backend set: --hosts, --down or --up");
    }
    struct schema_host *h;
    size_t nh;
    const char *lists[2] = {o.hosts, o.down};
    for (int i = 0; i < 2; i++) {
        if (lists[i] != NULL) {
            if (schema_parse_hosts(&h, &nh, lists[i], strlen(lists[i]), err, sizeof(err)) != 0) {
                return ctl_fail(CTL_REFUSED, "%s: %s", i == 0 ? "--hosts" : "--down", err);
            }
            free(h);
        }
    }
    const char *hset[6] = {"HSET", key};
    int n = 2;
    if (o.hosts != NULL) {
        hset[n++] = "hosts";
        hset[n++] = o.hosts;
    }
    if (o.down != NULL) {
        hset[n++] = "down";
        hset[n++] = o.down;
    }
    const char *hdel[3] = {"HDEL", key, "down"};
    const char **before[2];
    int na[2];
    size_t nb = 0;
    if (n > 2) {
        before[nb] = hset;
        na[nb++] = n;
    }
    if (o.up) {
        before[nb] = hdel;
        na[nb++] = 3;
    }
    rc = ctl_publish(c, SCHEMA_EV_BACKEND, o.pos[0], before, na, nb);
    if (rc == CTL_OK) {
        printf("backend %s set\n", o.pos[0]);
    }
    return rc;
}

static int ctl_kick(struct ctl *c, int argc, char **argv)
{
    char login[SCHEMA_MAX_LOGIN_LEN + 1], chan[CTL_KEY_LEN], msg[CTL_KEY_LEN];
    int rc;
    if (argc != 1) {
        return ctl_fail(CTL_USAGE, "kick LOGIN");
    }
    if ((rc = ctl_norm(login, argv[0], "login")) != CTL_OK) {
        return rc;
    }
    ctl_key(c, chan, SCHEMA_EVENTS, NULL);
    snprintf(msg, sizeof(msg), "kick %s", login);
    /* the generation first: an instance that misses the event finds it */
    char kick[CTL_KEY_LEN], ttl[16];
    ctl_key(c, kick, SCHEMA_KICK, login);
    snprintf(ttl, sizeof(ttl), "%d", SCHEMA_KICK_TTL_S);
    const char *incr[2] = {"INCR", kick};
    const char *expire[3] = {"EXPIRE", kick, ttl};
    redisReply *r = ctl_cmd(c, 2, incr);
    if (r == NULL) {
        return CTL_REDIS;
    }
    freeReplyObject(r);
    if ((r = ctl_cmd(c, 3, expire)) == NULL) {
        return CTL_REDIS;
    }
    freeReplyObject(r);
    const char *a[3] = {"PUBLISH", chan, msg};
    r = ctl_cmd(c, 3, a);
    if (r == NULL) {
        return CTL_REDIS;
    }
    printf("kick %s sent to %lld imapmux workers\n", login, r->integer);
    freeReplyObject(r);
    return CTL_OK;
}

/* ctl_has_type: line (checked JSON) has the member "type":"<type>"; in
 * checked JSON '":"' cannot fall inside a string. */
static int ctl_has_type(const char *line, const char *type)
{
    char want[64];
    snprintf(want, sizeof(want), "\"type\":\"%s\"", type);
    return strstr(line, want) != NULL;
}

/* ctl_audit_verify checks an audit file: every line one strictly valid JSON
 * object (json_check), the first a chain_start, each later chain_start
 * naming as prev the chain value of the line before it (a restart goes on
 * with the chain), and the hash chain unbroken.  Names the first line that
 * fails. */
static int ctl_audit_verify(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return ctl_fail(CTL_REFUSED, "%s: %s", path, strerror(errno));
    }
    struct audit_chain chain;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long long lineno = 0, records = 0, starts = 0, cuts = 0, asides = 0;
    int ended = 0, rc = CTL_OK;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] != '\n') {
            printf("%s: line %llu: cut short (no newline): the file's end was cut or is being "
                   "written\n", path, lineno);
            rc = CTL_REFUSED;
            break;
        }
        line[--n] = '\0';
        size_t off;
        const char *why;
        if (json_check_object(&off, &why, line, (size_t)n) != 0) {
            printf("%s: line %llu: not valid JSON (%s, at byte %zu): the line was altered or "
                   "inserted\n", path, lineno, why, off + 1);
            rc = CTL_REFUSED;
            break;
        }
        int start = ctl_has_type(line, "chain_start");
        uint8_t prev[AUDIT_CHAIN_LEN];
        if (lineno == 1) {
            if (!start || audit_chain_field(line, (size_t)n, "prev", chain.prev) != 0) {
                printf("%s: line 1: not a chain_start record: lines were removed from the "
                       "start, or this is not an imapmux audit file\n", path);
                rc = CTL_REFUSED;
                break;
            }
        } else if (start && (audit_chain_field(line, (size_t)n, "prev", prev) != 0 ||
                             memcmp(prev, chain.prev, AUDIT_CHAIN_LEN) != 0)) {
            printf("%s: line %llu: a chain_start whose prev is not the chain value of the "
                   "line before: the chain was started again in this file, or lines before "
                   "it were removed\n", path, lineno);
            rc = CTL_REFUSED;
            break;
        }
        int r = audit_chain_check(&chain, line, (size_t)n);
        if (r != 0) {
            printf("%s: line %llu: %s\n", path, lineno,
                   r == -1 ? "no chain value: the line was altered or is not an audit record"
                           : "chain broken: this line was altered, or a line before it was "
                             "deleted, inserted or moved");
            rc = CTL_REFUSED;
            break;
        }
        if (start) {
            starts++;
            cuts += strstr(line, "\"cut_bytes\":") != NULL;
            asides += strstr(line, "\"broken_aside\":") != NULL;
        }
        ended = ctl_has_type(line, "chain_end");
        records++;
    }
    free(line);
    if (ferror(f)) {
        rc = ctl_fail(CTL_REFUSED, "%s: %s", path, strerror(errno));
    } else if (rc == CTL_OK && lineno == 0) {
        printf("%s: empty\n", path);
        rc = CTL_REFUSED;
    } else if (rc == CTL_OK) {
        printf("%s: %llu lines, chain intact over %llu start%s%s", path, records, starts,
               starts == 1 ? "" : "s",
               ended ? "" : " (no chain_end last: the file is in use, or its end was cut)");
        if (cuts > 0) {
            printf("; %llu record%s cut short by a crash removed at a start (see cut_bytes)",
                   cuts, cuts == 1 ? "" : "s");
        }
        if (asides > 0) {
            printf("; a broken file was moved aside before it (see broken_aside)");
        }
        printf("\n");
    }
    fclose(f);
    return rc;
}

/* ctl_reload sends SIGHUP to the daemon given by --pid or --pid-file, once
 * /proc says that process is an imapmux. */
static int ctl_reload(int argc, char **argv)
{
    char buf[64], comm[64];
    long pid = -1;
    if (argc != 2 || (strcmp(argv[0], "--pid") != 0 && strcmp(argv[0], "--pid-file") != 0)) {
        return ctl_fail(CTL_USAGE, "reload --pid PID | --pid-file FILE");
    }
    const char *text = argv[1];
    if (strcmp(argv[0], "--pid-file") == 0) {
        FILE *f = fopen(argv[1], "r");
        if (f == NULL) {
            return ctl_fail(CTL_REFUSED, "%s: %s", argv[1], strerror(errno));
        }
        if (fgets(buf, sizeof(buf), f) == NULL) {
            buf[0] = '\0';
        }
        fclose(f);
        text = buf;
    }
    char *end;
    errno = 0;
    pid = strtol(text, &end, 10);
    while (*end == '\n' || *end == ' ') {
        end++;
    }
    if (errno != 0 || end == text || *end != '\0' || pid <= 1 || pid > INT_MAX) {
        return ctl_fail(CTL_REFUSED, "not a process id: %s", text);
    }
    snprintf(buf, sizeof(buf), "/proc/%ld/comm", pid);
    FILE *f = fopen(buf, "r");
    if (f == NULL || fgets(comm, sizeof(comm), f) == NULL) {
        if (f != NULL) {
            fclose(f);
        }
        return ctl_fail(CTL_REFUSED, "no process %ld", pid);
    }
    fclose(f);
    comm[strcspn(comm, "\n")] = '\0';
    if (strcmp(comm, "imapmux") != 0) {
        return ctl_fail(CTL_REFUSED, "process %ld is %s, not imapmux", pid, comm);
    }
    if (kill((pid_t)pid, SIGHUP) != 0) {
        return ctl_fail(CTL_REFUSED, "cannot signal %ld: %s", pid, strerror(errno));
    }
    printf("reload requested from imapmux %ld\n", pid);
    return CTL_OK;
}

int main(int argc, char **argv)
{
    const char *cfg_path = NULL, *redis_addr = NULL, *prefix = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            ctl_usage(stdout);
            return CTL_OK;
        }
        if (i + 1 >= argc) {
            return ctl_fail(CTL_USAGE, "%s needs a value", argv[i]);
        }
        if (strcmp(argv[i], "-c") == 0) {
            cfg_path = argv[++i];
        } else if (strcmp(argv[i], "-r") == 0) {
            redis_addr = argv[++i];
        } else if (strcmp(argv[i], "--prefix") == 0) {
            prefix = argv[++i];
        } else {
            return ctl_fail(CTL_USAGE, "unknown option %s", argv[i]);
        }
    }
    if (i >= argc) {
        return ctl_fail(CTL_USAGE, "which command?");
    }
    const char *cmd = argv[i];
    if (strcmp(cmd, "reload") == 0) {
        return ctl_reload(argc - i - 1, argv + i + 1);
    }
    if (strcmp(cmd, "audit") == 0) {
        if (argc - i != 3 || strcmp(argv[i + 1], "verify") != 0) {
            return ctl_fail(CTL_USAGE, "audit verify FILE");
        }
        return ctl_audit_verify(argv[i + 2]);
    }
    if (strcmp(cmd, "user") != 0 && strcmp(cmd, "domain") != 0 && strcmp(cmd, "backend") != 0 &&
        strcmp(cmd, "kick") != 0) {
        return ctl_fail(CTL_USAGE, "unknown command %s", cmd);
    }

    struct ctl c = {NULL, prefix != NULL ? prefix : SCHEMA_DEFAULT_PREFIX};
    struct config *cfg = NULL;
    int rc;
    if (redis_addr != NULL) {
        struct schema_host *h;
        size_t n;
        char err[200];
        if (schema_parse_hosts(&h, &n, redis_addr, strlen(redis_addr), err, sizeof(err)) != 0 ||
            n != 1) {
            return ctl_fail(CTL_USAGE, "-r: %s", n != 1 ? "one HOST:PORT" : err);
        }
        rc = ctl_open(&c, NULL, h->host, h->port, getenv("IMAPMUX_REDIS_PASSWORD"));
        free(h);
    } else {
        char err[1024];
        cfg = config_load(err, sizeof(err), cfg_path != NULL ? cfg_path : "/etc/imapmux/imapmux.yaml");
        if (cfg == NULL) {
            return ctl_fail(CTL_REFUSED, "%s", err);
        }
        if (!cfg->redis.enabled) {
            config_unref(&cfg);
            return ctl_fail(CTL_REFUSED, "the configuration has no redis section");
        }
        if (prefix == NULL) {
            c.prefix = cfg->redis.prefix;
        }
        rc = ctl_open(&c, &cfg->redis, cfg->redis.host, cfg->redis.port, cfg->redis.password);
    }
    if (rc == CTL_OK) {
        int sub_argc = argc - i - 1;
        char **sub_argv = argv + i + 1;
        if (strcmp(cmd, "user") == 0) {
            rc = ctl_user(&c, sub_argc, sub_argv);
        } else if (strcmp(cmd, "domain") == 0) {
            rc = ctl_domain(&c, sub_argc, sub_argv);
        } else if (strcmp(cmd, "backend") == 0) {
            rc = ctl_backend(&c, sub_argc, sub_argv);
        } else {
            rc = ctl_kick(&c, sub_argc, sub_argv);
        }
    }
    if (c.rc != NULL) {
        redisFree(c.rc);
    }
    config_unref(&cfg);
    return rc;
}
