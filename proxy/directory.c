#include "proxy/directory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/chash.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "proxy/redis.h"

#define DIR_BUCKETS 1024
#define DIR_MAX_ENTRIES 65536     /* beyond this the cache starts over */
#define DIR_KEY_LEN 384           /* prefix (64) + kind + login (255) */
#define DIR_MAX_FIELDS 32         /* fields of a hash we look at */

enum dir_kind { DIR_E_USER, DIR_E_DOMAIN, DIR_E_BACKEND };

struct dir_entry {
    struct dir_entry *next;
    uint64_t expires;             /* loop time in ms */
    enum dir_kind kind;
    int present;                  /* the hash exists */
    union {
        struct schema_user user;
        struct schema_domain domain;
        struct schema_backend backend;
    } v;
    char key[];
};

struct dir {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct dir_ops *ops;
    void *ctx;
    struct rclient *cmd;          /* lookups; NULL without Redis */
    struct rclient *events;       /* subscribed to <prefix>events */
    int events_were_up;           /* the subscription was up once: a later up is a return */
    char channel[DIR_KEY_LEN];
    struct dir_entry *buckets[DIR_BUCKETS];
    size_t num_entries;
};

struct dir_req {
    struct dir *d;
    const struct config *cfg;     /* routes and backends to choose from (the session's) */
    dir_cb cb;
    void *ctx;
    char login[SCHEMA_MAX_LOGIN_LEN + 1];
    char user_key[DIR_KEY_LEN];
    char domain_key[DIR_KEY_LEN];
    char backend_key[DIR_KEY_LEN];
    int waiting;                  /* replies outstanding in this phase */
    int have_domain_name;
    struct dir_result res;
    struct schema_domain domain;  /* backend name of the domain, if any */
};

/* --- cache ------------------------------------------------------------------ */

static size_t dir_hash(const char *key)
{
    size_t h = 5381;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h = h * 33 + *p;
    }
    return h % DIR_BUCKETS;
}

static void dir_entry_free(struct dir_entry *e)
{
    switch (e->kind) {
    case DIR_E_USER:
        schema_user_free(&e->v.user);
        break;
    case DIR_E_DOMAIN:
        schema_domain_free(&e->v.domain);
        break;
    case DIR_E_BACKEND:
        schema_backend_free(&e->v.backend);
        break;
    }
    free(e);
}

static void dir_cache_clear(struct dir *d)
{
    for (size_t i = 0; i < DIR_BUCKETS; i++) {
        while (d->buckets[i] != NULL) {
            struct dir_entry *e = d->buckets[i];
            d->buckets[i] = e->next;
            dir_entry_free(e);
        }
    }
    d->num_entries = 0;
}

static void dir_cache_drop(struct dir *d, const char *key)
{
    for (struct dir_entry **pe = &d->buckets[dir_hash(key)]; *pe != NULL; pe = &(*pe)->next) {
        if (strcmp((*pe)->key, key) == 0) {
            struct dir_entry *e = *pe;
            *pe = e->next;
            dir_entry_free(e);
            d->num_entries--;
            return;
        }
    }
}

/* dir_cache_get returns a live entry for key, or NULL (expired ones go). */
static struct dir_entry *dir_cache_get(struct dir *d, const char *key)
{
    for (struct dir_entry *e = d->buckets[dir_hash(key)]; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            if (e->expires <= uv_now(d->loop)) {
                dir_cache_drop(d, key);
                return NULL;
            }
            return e;
        }
    }
    return NULL;
}

/* dir_cache_put takes a parsed value (moved into the cache; on failure it is
 * the caller's still). Returns the entry or NULL when caching is off. */
static struct dir_entry *dir_cache_put(struct dir *d, const char *key, enum dir_kind kind,
                                       int present, const void *value, size_t value_len)
{
    if (d->cfg->redis.cache_ttl_ms == 0) {
        return NULL;
    }
    dir_cache_drop(d, key);
    if (d->num_entries >= DIR_MAX_ENTRIES) {
        dir_cache_clear(d);
    }
    size_t klen = strlen(key);
    struct dir_entry *e = calloc(1, sizeof(*e) + klen + 1);
    if (e == NULL) {
        return NULL;
    }
    memcpy(e->key, key, klen + 1);
    e->kind = kind;
    e->present = present;
    e->expires = uv_now(d->loop) + d->cfg->redis.cache_ttl_ms;
    memcpy(&e->v, value, value_len);
    size_t b = dir_hash(key);
    e->next = d->buckets[b];
    d->buckets[b] = e;
    d->num_entries++;
    return e;
}

/* --- copying parsed hashes ----------------------------------------------------- */

static char *dir_strdup(const char *s, int *oom)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *oom = 1;
    }
    return d;
}

static int dir_user_copy(struct schema_user *dst, const struct schema_user *src)
{
    int oom = 0;
    memset(dst, 0, sizeof(*dst));
    dst->password = dir_strdup(src->password, &oom);
    dst->backend = dir_strdup(src->backend, &oom);
    dst->login_as = dir_strdup(src->login_as, &oom);
    dst->state = src->state;
    if (oom) {
        schema_user_free(dst);
        return -1;
    }
    return 0;
}

/* --- events --------------------------------------------------------------------- */

static void dir_on_event_message(void *ctx, const char *msg, size_t len)
{
    struct dir *d = ctx;
    enum schema_event_type type;
    char arg[SCHEMA_MAX_LOGIN_LEN + 1];
    char key[DIR_KEY_LEN];

    if (schema_parse_event(&type, arg, msg, len) != 0) {
        log_msg(LOG_WARNING, "redis-events: ignoring an event that is not understood (%zu bytes)",
                len);
        return;
    }
    switch (type) {
    case SCHEMA_EV_KICK:
    case SCHEMA_EV_ROUTE:
        schema_key(key, sizeof(key), d->cfg->redis.prefix, SCHEMA_USER, arg);
        break;
    case SCHEMA_EV_DOMAIN:
        schema_key(key, sizeof(key), d->cfg->redis.prefix, SCHEMA_DOMAIN, arg);
        break;
    case SCHEMA_EV_BACKEND:
        schema_key(key, sizeof(key), d->cfg->redis.prefix, SCHEMA_BACKEND, arg);
        break;
    }
    dir_cache_drop(d, key);
    if (d->ops != NULL && d->ops->on_event != NULL) {
        d->ops->on_event(d->ctx, type, arg);
    }
}

static void dir_on_events_up(void *ctx, int up)
{
    struct dir *d = ctx;
    if (!up) {
        return;
    }
    /* events may have been missed while we were away */
    dir_cache_clear(d);
    if (d->events_were_up && d->ops != NULL && d->ops->on_resync != NULL) {
        d->ops->on_resync(d->ctx);
    }
    d->events_were_up = 1;
}

static const struct rclient_ops dir_events_ops = {
    .on_up = dir_on_events_up,
    .on_message = dir_on_event_message,
};

/* --- lookups ---------------------------------------------------------------------- */

static void dir_finish(struct dir_req *q)
{
    q->cb(q->ctx, &q->res);
    schema_user_free(&q->res.user);
    schema_domain_free(&q->domain);
    free(q);
}

static void dir_fail(struct dir_req *q, enum dir_status st, const char *reason)
{
    if (q->res.status == DIR_OK) {
        q->res.status = st;
        q->res.reason = reason;
    }
}

/* dir_hash_reply turns an HGETALL reply into field/value arrays; returns
 * the number of pairs or -1 when it is not one. */
static long dir_hash_reply(const redisReply *r, const char **f, size_t *fl, const char **v,
                           size_t *vl)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
        return -1;
    }
    size_t n = r->elements / 2;
    if (n > DIR_MAX_FIELDS) {
        n = DIR_MAX_FIELDS; /* a hash this big is not ours; its first fields decide */
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *a = r->element[2 * i], *b = r->element[2 * i + 1];
        if (a->type != REDIS_REPLY_STRING || b->type != REDIS_REPLY_STRING) {
            return -1;
        }
        f[i] = a->str;
        fl[i] = a->len;
        v[i] = b->str;
        vl[i] = b->len;
    }
    return (long)n;
}

static void dir_choose_host(struct dir_req *q, const struct schema_host *hosts, size_t num)
{
    if (num == 0 && q->res.backend == q->cfg->backend_template) {
        log_msg(LOG_ERR, "redis: backend %s is named only in Redis and its record there has "
                "no hosts", q->res.backend_name);
        dir_fail(q, DIR_UNAVAILABLE, "backend of the template has no hosts in redis");
        return;
    }
    long i = chash_pick(hosts, num, q->login);
    if (i < 0) {
        dir_fail(q, DIR_UNAVAILABLE, "every host of the backend is marked down");
        return;
    }
    snprintf(q->res.host, sizeof(q->res.host), "%s", hosts[i].host);
    q->res.port = hosts[i].port;
}

static void dir_on_backend(void *ctx, const redisReply *r)
{
    struct dir_req *q = ctx;
    struct dir *d = q->d;
    const char *f[DIR_MAX_FIELDS], *v[DIR_MAX_FIELDS];
    size_t fl[DIR_MAX_FIELDS], vl[DIR_MAX_FIELDS];
    char err[200];
    long n = dir_hash_reply(r, f, fl, v, vl);

    if (n < 0) {
        if (r != NULL) {
            log_msg(LOG_ERR, "redis: %s: unexpected reply %s", q->backend_key,
                    r->type == REDIS_REPLY_ERROR ? r->str : "type");
        }
        dir_fail(q, DIR_UNAVAILABLE, r == NULL ? "redis unavailable" : "redis error");
        dir_finish(q);
        return;
    }
    if (n == 0) {
        struct schema_backend none = {0};
        dir_cache_put(d, q->backend_key, DIR_E_BACKEND, 0, &none, sizeof(none));
        dir_choose_host(q, q->res.backend->hosts, q->res.backend->num_hosts);
        dir_finish(q);
        return;
    }
    struct schema_backend b;
    if (schema_parse_backend(&b, f, fl, v, vl, (size_t)n, err, sizeof(err)) != 0) {
        log_msg(LOG_ERR, "redis: %s: unusable record: %s", q->backend_key, err);
        dir_fail(q, DIR_UNAVAILABLE, "unusable backend record in redis");
        dir_finish(q);
        return;
    }
    dir_choose_host(q, b.hosts, b.num_hosts);
    if (dir_cache_put(d, q->backend_key, DIR_E_BACKEND, 1, &b, sizeof(b)) == NULL) {
        schema_backend_free(&b);
    }
    dir_finish(q);
}

/* dir_route: phase two -- the backend name is known (or not); pick it. */
static void dir_route(struct dir_req *q)
{
    struct dir *d = q->d;
    const char *name = NULL;

    if (q->res.status != DIR_OK) {
        dir_finish(q);
        return;
    }
    if (q->res.have_user && q->res.user.backend != NULL) {
        name = q->res.user.backend;
    } else if (q->domain.backend != NULL) {
        name = q->domain.backend;
    }
    if (name != NULL) {
        q->res.backend = config_find_backend(q->cfg, name);
        if (q->res.backend == NULL && q->cfg->backend_template != NULL && d->cmd != NULL &&
            schema_name_valid(name)) {
            /* named only in Redis: the template's settings, Redis's hosts */
            q->res.backend = q->cfg->backend_template;
        }
        if (q->res.backend == NULL) {
            log_msg(LOG_ERR, "redis: route of %s names backend %s, which the configuration "
                    "does not define", q->login, name);
            dir_fail(q, DIR_UNAVAILABLE, "route names an unknown backend");
            dir_finish(q);
            return;
        }
    } else {
        q->res.backend = config_route_lookup(q->cfg, q->login);
        if (q->res.backend == NULL) {
            dir_fail(q, DIR_NO_ROUTE, "no route for this login");
            dir_finish(q);
            return;
        }
    }
    const struct config_backend *cb = q->res.backend;
    snprintf(q->res.backend_name, sizeof(q->res.backend_name), "%s",
             cb == q->cfg->backend_template ? name : cb->name);
    if (d->cmd == NULL) {
        dir_choose_host(q, cb->hosts, cb->num_hosts);
        dir_finish(q);
        return;
    }
    schema_key(q->backend_key, sizeof(q->backend_key), d->cfg->redis.prefix, SCHEMA_BACKEND,
               q->res.backend_name);
    struct dir_entry *e = dir_cache_get(d, q->backend_key);
    if (e != NULL) {
        if (e->present) {
            dir_choose_host(q, e->v.backend.hosts, e->v.backend.num_hosts);
        } else {
            dir_choose_host(q, cb->hosts, cb->num_hosts);
        }
        dir_finish(q);
        return;
    }
    const char *argv[2] = {"HGETALL", q->backend_key};
    if (rclient_cmd(d->cmd, dir_on_backend, q, 2, argv, NULL) != 0) {
        dir_fail(q, DIR_UNAVAILABLE, "redis unavailable");
        dir_finish(q);
    }
}

static void dir_phase_one_done(struct dir_req *q)
{
    if (--q->waiting == 0) {
        dir_route(q);
    }
}

static void dir_on_user(void *ctx, const redisReply *r)
{
    struct dir_req *q = ctx;
    const char *f[DIR_MAX_FIELDS], *v[DIR_MAX_FIELDS];
    size_t fl[DIR_MAX_FIELDS], vl[DIR_MAX_FIELDS];
    char err[200];
    long n = dir_hash_reply(r, f, fl, v, vl);

    if (n < 0) {
        if (r != NULL) {
            log_msg(LOG_ERR, "redis: %s: unexpected reply %s", q->user_key,
                    r->type == REDIS_REPLY_ERROR ? r->str : "type");
        }
        dir_fail(q, DIR_UNAVAILABLE, r == NULL ? "redis unavailable" : "redis error");
    } else {
        struct schema_user u;
        if (schema_parse_user(&u, f, fl, v, vl, (size_t)n, err, sizeof(err)) != 0) {
            log_msg(LOG_ERR, "redis: %s: unusable record: %s", q->user_key, err);
            dir_fail(q, DIR_UNAVAILABLE, "unusable user record in redis");
        } else {
            q->res.have_user = n > 0;
            if (dir_user_copy(&q->res.user, &u) != 0) {
                dir_fail(q, DIR_UNAVAILABLE, "out of memory");
            }
            if (dir_cache_put(q->d, q->user_key, DIR_E_USER, n > 0, &u, sizeof(u)) == NULL) {
                schema_user_free(&u);
            }
        }
    }
    dir_phase_one_done(q);
}

static void dir_on_domain(void *ctx, const redisReply *r)
{
    struct dir_req *q = ctx;
    const char *f[DIR_MAX_FIELDS], *v[DIR_MAX_FIELDS];
    size_t fl[DIR_MAX_FIELDS], vl[DIR_MAX_FIELDS];
    char err[200];
    long n = dir_hash_reply(r, f, fl, v, vl);

    if (n < 0) {
        dir_fail(q, DIR_UNAVAILABLE, r == NULL ? "redis unavailable" : "redis error");
    } else {
        struct schema_domain dm;
        if (schema_parse_domain(&dm, f, fl, v, vl, (size_t)n, err, sizeof(err)) != 0) {
            log_msg(LOG_ERR, "redis: %s: unusable record: %s", q->domain_key, err);
            dir_fail(q, DIR_UNAVAILABLE, "unusable domain record in redis");
        } else {
            int oom = 0;
            q->res.have_domain = n > 0;
            q->res.domain_auth = dm.auth;
            q->domain.auth = dm.auth;
            q->domain.backend = dir_strdup(dm.backend, &oom);
            if (oom) {
                dir_fail(q, DIR_UNAVAILABLE, "out of memory");
            }
            if (dir_cache_put(q->d, q->domain_key, DIR_E_DOMAIN, n > 0, &dm, sizeof(dm)) == NULL) {
                schema_domain_free(&dm);
            }
        }
    }
    dir_phase_one_done(q);
}

static unsigned long dir_counter(const redisReply *r)
{
    if (r->type == REDIS_REPLY_STRING) {
        return strtoul(r->str, NULL, 10);
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
        return (unsigned long)r->integer;
    }
    return 0;
}

static void dir_on_kick(void *ctx, const redisReply *r)
{
    struct dir_req *q = ctx;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        dir_fail(q, DIR_UNAVAILABLE, r == NULL ? "redis unavailable" : "redis error");
    } else {
        q->res.kick_gen = dir_counter(r);
    }
    dir_phase_one_done(q);
}

/* The brute-force counters of one attempt, with the kick generation and
 * the trusted mark, in one round trip: the pair's attempt is counted before
 * it is decided (INCR first), the address's and the login's failures are
 * read.  KEYS: pair, ip, login, kick, ok; ARGV: window (s). */
static const char dir_bf_count_script[] =
    "local p = redis.call('INCR', KEYS[1])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
    "return {p, redis.call('GET', KEYS[2]) or '0', redis.call('GET', KEYS[3]) or '0',\n"
    "        redis.call('GET', KEYS[4]) or '0', redis.call('EXISTS', KEYS[5])}\n";

/* Settling an attempt.  KEYS: pair, ip, login, ok; ARGV: outcome ("ok": it
 * proved the password; "fail"; "void": it proved nothing, e.g. the backend
 * was down), window (s), trusted ttl (s).  A failure stays counted in the
 * pair and is counted for the address and the login. */
static const char dir_bf_settle_script[] =
    "if ARGV[1] == 'ok' then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('SET', KEYS[4], '1', 'EX', ARGV[3])\n"
    "elseif ARGV[1] == 'fail' then\n"
    "  for i = 2, 3 do redis.call('INCR', KEYS[i]); redis.call('EXPIRE', KEYS[i], ARGV[2]) end\n"
    "elseif tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then\n"
    "  redis.call('DECR', KEYS[1])\n"
    "end\n"
    "return 1\n";

static void dir_on_counters(void *ctx, const redisReply *r)
{
    struct dir_req *q = ctx;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 5) {
        dir_fail(q, DIR_UNAVAILABLE, r == NULL ? "redis unavailable" : "redis error");
    } else {
        q->res.bf.pair = dir_counter(r->element[0]);
        q->res.bf.ip = dir_counter(r->element[1]);
        q->res.bf.login = dir_counter(r->element[2]);
        q->res.kick_gen = dir_counter(r->element[3]);
        q->res.bf.trusted = dir_counter(r->element[4]) > 0;
        q->res.bf_counted = 1;
    }
    dir_phase_one_done(q);
}

/* dir_bf_keys writes the four brute-force keys of login from client_ip. */
static void dir_bf_keys(const struct dir *d, const char *login, const char *client_ip,
                        char kip[DIR_KEY_LEN], char kpair[DIR_KEY_LEN],
                        char klogin[DIR_KEY_LEN], char kok[DIR_KEY_LEN])
{
    const char *prefix = d->cfg->redis.prefix;
    char addr[NETADDR_MAX_KEY_LEN], both[SCHEMA_MAX_LOGIN_LEN + NETADDR_MAX_KEY_LEN + 2];
    /* an IPv6 client by its prefix: one host holds a whole /64 */
    if (netaddr_key(addr, sizeof(addr), client_ip, 32, d->cfg->ipv6_prefix_len) < 0) {
        snprintf(addr, sizeof(addr), "%s", NETADDR_UNPARSED_KEY);
    }
    snprintf(both, sizeof(both), "%s %s", login, addr);
    schema_key(kip, DIR_KEY_LEN, prefix, SCHEMA_BF_IP, addr);
    schema_key(kpair, DIR_KEY_LEN, prefix, SCHEMA_BF_PAIR, both);
    schema_key(klogin, DIR_KEY_LEN, prefix, SCHEMA_BF_LOGIN, login);
    schema_key(kok, DIR_KEY_LEN, prefix, SCHEMA_BF_OK, both);
}

int dir_lookup(struct dir *d, const char *login, const char *client_ip, dir_cb cb, void *ctx)
{
    return dir_lookup_in(d, d->cfg, login, client_ip, cb, ctx);
}

int dir_lookup_in(struct dir *d, const struct config *cfg, const char *login,
                  const char *client_ip, dir_cb cb, void *ctx)
{
    struct dir_req *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return -1;
    }
    q->d = d;
    q->cfg = cfg;
    q->cb = cb;
    q->ctx = ctx;
    q->res.status = DIR_OK;
    snprintf(q->login, sizeof(q->login), "%s", login);
    if (d->cmd == NULL) {
        dir_route(q);
        return 0;
    }
    if (!rclient_is_up(d->cmd)) {
        dir_fail(q, DIR_UNAVAILABLE, "redis unavailable");
        dir_finish(q);
        return 0;
    }
    const char *prefix = d->cfg->redis.prefix;
    const char *domain = schema_domain(q->login);
    /* one extra count so that replies cannot finish the request while we
     * are still sending */
    q->waiting = 1;

    schema_key(q->user_key, sizeof(q->user_key), prefix, SCHEMA_USER, q->login);
    struct dir_entry *e = dir_cache_get(d, q->user_key);
    if (e != NULL) {
        q->res.have_user = e->present;
        if (dir_user_copy(&q->res.user, &e->v.user) != 0) {
            dir_fail(q, DIR_UNAVAILABLE, "out of memory");
        }
    } else {
        const char *argv[2] = {"HGETALL", q->user_key};
        q->waiting++;
        if (rclient_cmd(d->cmd, dir_on_user, q, 2, argv, NULL) != 0) {
            q->waiting--;
            dir_fail(q, DIR_UNAVAILABLE, "redis unavailable");
        }
    }
    if (domain != NULL) {
        schema_key(q->domain_key, sizeof(q->domain_key), prefix, SCHEMA_DOMAIN, domain);
        e = dir_cache_get(d, q->domain_key);
        if (e != NULL) {
            int oom = 0;
            q->res.have_domain = e->present;
            q->res.domain_auth = e->v.domain.auth;
            q->domain.auth = e->v.domain.auth;
            q->domain.backend = dir_strdup(e->v.domain.backend, &oom);
            if (oom) {
                dir_fail(q, DIR_UNAVAILABLE, "out of memory");
            }
        } else {
            const char *argv[2] = {"HGETALL", q->domain_key};
            q->waiting++;
            if (rclient_cmd(d->cmd, dir_on_domain, q, 2, argv, NULL) != 0) {
                q->waiting--;
                dir_fail(q, DIR_UNAVAILABLE, "redis unavailable");
            }
        }
    }
    char kkick[DIR_KEY_LEN];
    schema_key(kkick, sizeof(kkick), prefix, SCHEMA_KICK, q->login);
    q->waiting++;
    int sent;
    if (client_ip != NULL && d->cfg->bruteforce.enabled) {
        char kip[DIR_KEY_LEN], kpair[DIR_KEY_LEN], klogin[DIR_KEY_LEN], kok[DIR_KEY_LEN];
        char window[16];
        dir_bf_keys(d, q->login, client_ip, kip, kpair, klogin, kok);
        snprintf(window, sizeof(window), "%u", d->cfg->bruteforce.window_s);
        const char *argv[9] = {"EVAL", dir_bf_count_script, "5", kpair, kip, klogin, kkick,
                               kok, window};
        sent = rclient_cmd(d->cmd, dir_on_counters, q, 9, argv, NULL);
    } else {
        /* a route re-check: the kick generation only */
        const char *argv[2] = {"GET", kkick};
        sent = rclient_cmd(d->cmd, dir_on_kick, q, 2, argv, NULL);
    }
    if (sent != 0) {
        q->waiting--;
        dir_fail(q, DIR_UNAVAILABLE, "redis unavailable");
    }
    dir_phase_one_done(q);
    return 0;
}

/* --- brute-force counters ------------------------------------------------------- */

static void dir_on_ignored(void *ctx, const redisReply *r)
{
    (void)ctx;
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        log_msg(LOG_WARNING, "redis: brute-force counter update failed: %s", r->str);
    }
}

void dir_bf_settle(struct dir *d, const char *login, const char *client_ip,
                   enum dir_bf_outcome outcome)
{
    if (d->cmd == NULL || !d->cfg->bruteforce.enabled) {
        return;
    }
    char kip[DIR_KEY_LEN], kpair[DIR_KEY_LEN], klogin[DIR_KEY_LEN], kok[DIR_KEY_LEN];
    char window[16], ttl[16];
    dir_bf_keys(d, login, client_ip, kip, kpair, klogin, kok);
    snprintf(window, sizeof(window), "%u", d->cfg->bruteforce.window_s);
    snprintf(ttl, sizeof(ttl), "%u", d->cfg->bruteforce.trusted_ttl_s);
    const char *what = outcome == DIR_BF_SUCCESS ? "ok" : outcome == DIR_BF_FAILURE ? "fail"
                                                                                     : "void";
    const char *argv[10] = {"EVAL", dir_bf_settle_script, "4", kpair, kip, klogin, kok,
                            what, window, ttl};
    rclient_cmd(d->cmd, dir_on_ignored, NULL, 10, argv, NULL);
}

/* --- lifetime --------------------------------------------------------------------- */

struct dir *dir_new(uv_loop_t *loop, const struct config *cfg, const struct dir_ops *ops,
                    void *ctx)
{
    struct dir *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return NULL;
    }
    d->loop = loop;
    d->cfg = cfg;
    d->ops = ops;
    d->ctx = ctx;
    if (cfg->redis.enabled) {
        schema_key(d->channel, sizeof(d->channel), cfg->redis.prefix, SCHEMA_EVENTS, NULL);
        d->cmd = rclient_new(loop, &cfg->redis, NULL, "redis", NULL, NULL);
        d->events = rclient_new(loop, &cfg->redis, d->channel, "redis-events", &dir_events_ops, d);
        if (d->cmd == NULL || d->events == NULL) {
            dir_close(d);
            return NULL;
        }
    }
    return d;
}

void dir_set_config(struct dir *d, const struct config *cfg)
{
    if (d != NULL) {
        d->cfg = cfg;
    }
}

void dir_close(struct dir *d)
{
    if (d == NULL) {
        return;
    }
    rclient_close(d->cmd);
    rclient_close(d->events);
    dir_cache_clear(d);
    free(d);
}
