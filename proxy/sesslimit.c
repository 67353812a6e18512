#include "proxy/sesslimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/list.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "common/schema.h"
#include "proxy/redis.h"

#define SESSLIMIT_KEY_LEN 384         /* prefix (64) + kind + login (255) */
#define SESSLIMIT_RENEW_DIVISOR 3     /* renewals per lease time */

struct sesslimit_lease {
    struct list_link link;            /* in l->leases */
    char key[SESSLIMIT_KEY_LEN];      /* the login's sorted set */
    char member[SESSLIMIT_MAX_MEMBER_LEN];
};

struct sesslimit {
    uv_loop_t *loop;
    const struct config *cfg;
    struct rclient *rc;               /* owned */
    uv_timer_t renew_timer;           /* every session_lease_ms / 3 */
    struct list_link leases;          /* of struct sesslimit_lease */
    char self[128];                   /* "<instance>/<pid>/" prefix of session names */
    char lease_ms[16];                /* ARGV form */
    struct sesslimit_stats stats;
};

/* One acquire in flight: the lease it will hand over, and the callback. */
struct sesslimit_req {
    struct sesslimit *l;
    struct sesslimit_lease *lease;    /* owned until handed to cb */
    sesslimit_cb cb;
    void *ctx;
};

/* KEYS: sessions, user hash, domain hash (the user hash again without a
 * domain).  ARGV: member, lease (ms), configured per-user limit, per-address
 * limit, the member's address part ("<key>|").  Returns {verdict, count,
 * limit}: 0 added, 1 over the user limit, 2 over the address limit.  The
 * clock is Redis's, so instances' clocks need not agree. */
static const char sesslimit_acquire_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local lease = tonumber(ARGV[2])\n"
    "local max = tonumber(redis.call('HGET', KEYS[2], 'max_sessions') or '')\n"
    "if max == nil and KEYS[3] ~= KEYS[2] then\n"
    "  max = tonumber(redis.call('HGET', KEYS[3], 'max_sessions') or '')\n"
    "end\n"
    "if max == nil then max = tonumber(ARGV[3]) end\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "local n = redis.call('ZCARD', KEYS[1])\n"
    "if max > 0 and n >= max then return {1, n, max} end\n"
    "local maxip = tonumber(ARGV[4])\n"
    "if maxip > 0 then\n"
    "  local c, p = 0, ARGV[5]\n"
    "  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "    if string.sub(m, 1, #p) == p then c = c + 1 end\n"
    "  end\n"
    "  if c >= maxip then return {2, c, maxip} end\n"
    "end\n"
    "redis.call('ZADD', KEYS[1], now + lease, ARGV[1])\n"
    "redis.call('PEXPIRE', KEYS[1], lease)\n"
    "return {0, n + 1, max}\n";

/* KEYS: the sets of the batch; ARGV: lease (ms), then one member per key.
 * A member that is gone (expired during an outage, lost in a failover) is
 * added again: the session is alive. */
static const char sesslimit_renew_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local lease = tonumber(ARGV[1])\n"
    "for i, k in ipairs(KEYS) do\n"
    "  redis.call('ZADD', k, now + lease, ARGV[i + 1])\n"
    "  redis.call('PEXPIRE', k, lease)\n"
    "end\n"
    "return #KEYS\n";

/* --- renewal ------------------------------------------------------------------ */

struct sesslimit_batch {
    struct sesslimit *l;
    size_t num;                       /* leases in it */
};

static void sesslimit_on_renewed(void *ctx, const redisReply *r)
{
    struct sesslimit_batch *b = ctx;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        b->l->stats.renew_failures++;
        if (r != NULL) {
            log_msg(LOG_WARNING, "redis-sessions: lease renewal failed: %s", r->str);
        }
    } else {
        b->l->stats.renewals += b->num;
    }
    free(b);
}

/* sesslimit_renew_batch sends one script for num leases from *pos on. */
static void sesslimit_renew_batch(struct sesslimit *l, struct list_link **pos, size_t num)
{
    const char *argv[4 + 2 * SESSLIMIT_RENEW_BATCH];
    char nkeys[16];
    struct sesslimit_batch *b = malloc(sizeof(*b));
    if (b == NULL) {
        l->stats.renew_failures++;
        return;
    }
    b->l = l;
    b->num = num;
    snprintf(nkeys, sizeof(nkeys), "%zu", num);
    argv[0] = "EVAL";
    argv[1] = sesslimit_renew_script;
    argv[2] = nkeys;
    struct list_link *p = *pos;
    for (size_t i = 0; i < num; i++, p = p->next) {
        struct sesslimit_lease *ls = LIST_ITEM(p, struct sesslimit_lease, link);
        argv[3 + i] = ls->key;
        argv[4 + num + i] = ls->member;
    }
    argv[3 + num] = l->lease_ms;
    *pos = p;
    if (rclient_cmd(l->rc, sesslimit_on_renewed, b, (int)(4 + 2 * num), argv, NULL) != 0) {
        l->stats.renew_failures++;
        free(b);
    }
}

static void sesslimit_on_renew_timer(uv_timer_t *t)
{
    struct sesslimit *l = t->data;
    if (!rclient_is_up(l->rc)) {
        if (!list_empty(&l->leases)) {
            l->stats.renew_failures++;
        }
        return; /* the leases live on here; the next tick after the return re-adds them */
    }
    struct list_link *pos = l->leases.next;
    while (pos != &l->leases) {
        size_t num = 0;
        for (struct list_link *p = pos; p != &l->leases && num < SESSLIMIT_RENEW_BATCH;
             p = p->next) {
            num++;
        }
        sesslimit_renew_batch(l, &pos, num);
    }
}

/* --- acquire and release -------------------------------------------------------- */

static void sesslimit_on_acquired(void *ctx, const redisReply *r)
{
    struct sesslimit_req *q = ctx;
    struct sesslimit *l = q->l;
    enum sesslimit_verdict v = SESSLIMIT_REDIS_DOWN;
    unsigned limit = 0;

    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[2]->type == REDIS_REPLY_INTEGER) {
        long long code = r->element[0]->integer;
        long long lim = r->element[2]->integer;
        limit = lim > 0 && lim <= UINT32_MAX ? (unsigned)lim : 0;
        v = code == 0 ? SESSLIMIT_OK : code == 1 ? SESSLIMIT_OVER_USER : SESSLIMIT_OVER_IP;
    } else if (r != NULL) {
        log_msg(LOG_WARNING, "redis-sessions: unexpected reply to the lease script%s%s",
                r->type == REDIS_REPLY_ERROR ? ": " : "",
                r->type == REDIS_REPLY_ERROR ? r->str : "");
    }
    struct sesslimit_lease *lease = q->lease;
    switch (v) {
    case SESSLIMIT_OK:
        l->stats.acquired++;
        break;
    case SESSLIMIT_OVER_USER:
        l->stats.refused_user++;
        break;
    case SESSLIMIT_OVER_IP:
        l->stats.refused_ip++;
        break;
    case SESSLIMIT_REDIS_DOWN:
        l->stats.redis_errors++;
        break;
    }
    if (v == SESSLIMIT_OVER_USER || v == SESSLIMIT_OVER_IP) {
        free(lease);
        lease = NULL;
    } else {
        list_push_back(&l->leases, &lease->link);
        l->stats.leases++;
    }
    sesslimit_cb cb = q->cb;
    void *cctx = q->ctx;
    free(q);
    cb(cctx, v, limit, lease);
}

int sesslimit_acquire(struct sesslimit *l, const char *login, const char *client_ip,
                      const char *session_id, unsigned max_user, unsigned max_ip,
                      sesslimit_cb cb, void *ctx)
{
    struct sesslimit_req *q = calloc(1, sizeof(*q));
    struct sesslimit_lease *lease = calloc(1, sizeof(*lease));
    if (q == NULL || lease == NULL) {
        free(q);
        free(lease);
        return UV_ENOMEM;
    }
    list_init(&lease->link);
    q->l = l;
    q->lease = lease;
    q->cb = cb;
    q->ctx = ctx;

    const char *prefix = l->cfg->redis.prefix;
    char addr[NETADDR_MAX_KEY_LEN + 1], ukey[SESSLIMIT_KEY_LEN], dkey[SESSLIMIT_KEY_LEN];
    char smax[16], smaxip[16];
    /* an IPv6 client by its prefix, as the other per-address counts */
    if (netaddr_key(addr, sizeof(addr) - 1, client_ip, 32, l->cfg->ipv6_prefix_len) < 0) {
        snprintf(addr, sizeof(addr) - 1, "%s", NETADDR_UNPARSED_KEY);
    }
    strcat(addr, "|");
    schema_key(lease->key, sizeof(lease->key), prefix, SCHEMA_SESSIONS, login);
    schema_key(ukey, sizeof(ukey), prefix, SCHEMA_USER, login);
    const char *domain = schema_domain(login);
    if (domain == NULL || schema_key(dkey, sizeof(dkey), prefix, SCHEMA_DOMAIN, domain) < 0) {
        snprintf(dkey, sizeof(dkey), "%s", ukey);
    }
    snprintf(lease->member, sizeof(lease->member), "%s%s%s", addr, l->self, session_id);
    snprintf(smax, sizeof(smax), "%u", max_user);
    snprintf(smaxip, sizeof(smaxip), "%u", max_ip);

    const char *argv[11] = {"EVAL", sesslimit_acquire_script, "3", lease->key, ukey, dkey,
                            lease->member, l->lease_ms, smax, smaxip, addr};
    if (rclient_cmd(l->rc, sesslimit_on_acquired, q, 11, argv, NULL) != 0) {
        sesslimit_on_acquired(q, NULL); /* not up: the policy decides, at once */
    }
    return 0;
}

static void sesslimit_on_ignored(void *ctx, const redisReply *r)
{
    (void)ctx;
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        log_msg(LOG_WARNING, "redis-sessions: lease release failed: %s", r->str);
    }
}

void sesslimit_release(struct sesslimit *l, struct sesslimit_lease **lease)
{
    if (l == NULL || lease == NULL || *lease == NULL) {
        return;
    }
    struct sesslimit_lease *ls = *lease;
    *lease = NULL;
    const char *argv[3] = {"ZREM", ls->key, ls->member};
    /* Redis away: the member expires by itself */
    (void)rclient_cmd(l->rc, sesslimit_on_ignored, NULL, 3, argv, NULL);
    list_remove(&ls->link);
    free(ls);
    l->stats.leases--;
    l->stats.released++;
}

void sesslimit_stats(const struct sesslimit *l, struct sesslimit_stats *out)
{
    if (l == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = l->stats;
}

/* --- lifetime ------------------------------------------------------------------- */

struct sesslimit *sesslimit_new(uv_loop_t *loop, const struct config *cfg, unsigned worker_id)
{
    if (!cfg->redis.enabled || cfg->session_lease_ms == 0) {
        return NULL;
    }
    struct sesslimit *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return NULL;
    }
    l->loop = loop;
    l->cfg = cfg;
    list_init(&l->leases);
    snprintf(l->self, sizeof(l->self), "%.80s/%ld/w%u-", cfg->instance != NULL ? cfg->instance
                                                                             : "imapmux",
             (long)getpid(), worker_id);
    snprintf(l->lease_ms, sizeof(l->lease_ms), "%u", cfg->session_lease_ms);
    l->rc = rclient_new(loop, &cfg->redis, NULL, "redis-sessions", NULL, NULL);
    if (l->rc == NULL) {
        free(l);
        return NULL;
    }
    uv_timer_init(loop, &l->renew_timer);
    l->renew_timer.data = l;
    uint64_t every = cfg->session_lease_ms / SESSLIMIT_RENEW_DIVISOR;
    uv_timer_start(&l->renew_timer, sesslimit_on_renew_timer, every, every);
    return l;
}

static void sesslimit_on_timer_close(uv_handle_t *h)
{
    struct sesslimit *l = h->data;
    while (!list_empty(&l->leases)) {
        struct list_link *p = l->leases.next;
        list_remove(p);
        free(LIST_ITEM(p, struct sesslimit_lease, link));
    }
    free(l);
}

void sesslimit_free(struct sesslimit *l)
{
    if (l == NULL) {
        return;
    }
    rclient_close(l->rc); /* pending renewals are answered (NULL) while l lives */
    l->rc = NULL;
    uv_timer_stop(&l->renew_timer);
    uv_close((uv_handle_t *)&l->renew_timer, sesslimit_on_timer_close);
}
