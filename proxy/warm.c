#include "proxy/warm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/list.h"
#include "common/log.h"
#include "proxy/backend.h"

#define WARM_TICK_MS 500          /* refill, age and health-check pass */
#define WARM_BACKOFF_MIN_MS 250   /* first retry after a failed connect */
#define WARM_BACKOFF_MAX_MS 5000  /* retries of a failing host are this far apart at most */
#define WARM_LOG_EVERY 20         /* a failing host is logged at its 1st, 21st, ... failure */

struct warm_host;

struct warm_conn {
    struct warm_host *h;
    struct backend *b;
    struct list_link link;         /* in h->conns, oldest first */
    uint64_t ready_at;             /* loop time (ms) it became ready */
    uint64_t retire_at;            /* loop time it is replaced */
    uint64_t checked_at;           /* loop time of the last health check */
    int ready;
};

struct warm_host {
    struct warm *p;
    const struct config_backend *cfg;
    size_t idx;                    /* in cfg->backends, for the TLS context */
    char host[256];
    uint16_t port;
    struct list_link conns;        /* of struct warm_conn, oldest first */
    unsigned count;                /* connecting and ready */
    unsigned failures;             /* failed connects in a row */
    uint64_t retry_at;             /* no new connect before this loop time */
    uint64_t window_start;         /* loop time the current demand window began */
    unsigned takes_now;            /* logins that asked for one in this window */
    unsigned takes_before;         /* ... in the window before it */
    int demand_known;              /* a whole window has passed since the start */
};

struct warm {
    uv_loop_t *loop;
    struct config *cfg;            /* our reference */
    SSL_CTX *const *backend_ctx;
    struct warm_host *hosts;
    size_t num_hosts;
    uv_timer_t timer;              /* timer.data = this */
    struct warm_stats stats;
};

static void warm_on_backend(void *ctx, enum backend_status st, const char *code,
                            const char *reason);

static void warm_unlink(struct warm_conn *pc)
{
    struct warm_host *h = pc->h;
    list_remove(&pc->link);
    h->count--;
    if (pc->ready) {
        h->p->stats.size--;
    }
}

/* warm_drop closes a warm connection (or an attempt) and forgets it. */
static void warm_drop(struct warm_conn *pc)
{
    warm_unlink(pc);
    backend_free(pc->b);
    free(pc);
}

/* warm_target: how many connections h keeps now.  A warm connection that
 * retires unused was a backend connection (and TLS handshake, and greeting)
 * for nothing: past its first pool_max_idle_ms the pool keeps one more than
 * the logins that asked for one in the last two windows of
 * pool_max_idle_ms, at most pool_size and at least one.  Under load that is
 * pool_size; an idle worker keeps one, recycled as before. */
static unsigned warm_target(struct warm_host *h, uint64_t now)
{
    uint64_t window = h->cfg->pool_max_idle_ms;
    if (now - h->window_start >= window) {
        h->takes_before = now - h->window_start >= 2 * window ? 0 : h->takes_now;
        h->takes_now = 0;
        h->window_start = now;
        h->demand_known = 1;
    }
    if (!h->demand_known) {
        return h->cfg->pool_size;
    }
    unsigned demand = h->takes_now > h->takes_before ? h->takes_now : h->takes_before;
    unsigned target = demand + 1;
    return target < h->cfg->pool_size ? target : h->cfg->pool_size;
}

static void warm_fill(struct warm_host *h)
{
    struct warm *p = h->p;
    uint64_t now = uv_now(p->loop);
    unsigned target = warm_target(h, now);
    while (h->count < target && now >= h->retry_at) {
        struct warm_conn *pc = calloc(1, sizeof(*pc));
        if (pc == NULL) {
            return;
        }
        struct backend_login_params bp = {
            .cfg = h->cfg,
            .host = h->host,
            .port = h->port,
            .tls_ctx = p->backend_ctx[h->idx],
            .connect_timeout_ms = p->cfg->backend_connect_timeout_ms,
            .greeting_timeout_ms = p->cfg->backend_greeting_timeout_ms,
        };
        pc->h = h;
        pc->b = backend_prepare(p->loop, &bp, warm_on_backend, pc);
        if (pc->b == NULL) {
            free(pc);
            return;
        }
        list_push_back(&h->conns, &pc->link);
        h->count++;
    }
}

static void warm_on_backend(void *ctx, enum backend_status st, const char *code,
                            const char *reason)
{
    struct warm_conn *pc = ctx;
    struct warm_host *h = pc->h;
    struct warm *p = h->p;
    uint64_t now = uv_now(p->loop);
    (void)code;

    if (st == BACKEND_OK && !pc->ready) {
        unsigned max_idle = h->cfg->pool_max_idle_ms;
        pc->ready = 1;
        pc->ready_at = pc->checked_at = now;
        /* spread the replacements: connections made together do not all
           expire on the same tick */
        pc->retire_at = now + max_idle - (uv_hrtime() / 1000u) % (max_idle / 4 + 1);
        if (h->failures > 0) {
            log_msg(LOG_INFO, "warm pool: backend %s host %s:%u is back", h->cfg->name, h->host,
                    (unsigned)h->port);
        }
        h->failures = 0;
        p->stats.connects++;
        p->stats.size++;
        log_msg(LOG_DEBUG, "warm pool: warm connection to backend %s host %s:%u ready", h->cfg->name,
                h->host, (unsigned)h->port);
        return;
    }
    if (pc->ready) {
        p->stats.lost++;
        log_msg(LOG_INFO, "warm pool: warm connection to backend %s host %s:%u lost: %s",
                h->cfg->name, h->host, (unsigned)h->port, reason);
    } else {
        p->stats.connect_failures++;
        h->failures++;
        unsigned shift = h->failures > 5 ? 5 : h->failures - 1;
        unsigned backoff = WARM_BACKOFF_MIN_MS << shift;
        h->retry_at = now + (backoff > WARM_BACKOFF_MAX_MS ? WARM_BACKOFF_MAX_MS : backoff);
        if (h->failures % WARM_LOG_EVERY == 1) {
            log_msg(LOG_WARNING, "warm pool: backend %s host %s:%u: warm connection failed (%u in a "
                    "row): %s", h->cfg->name, h->host, (unsigned)h->port, h->failures, reason);
        }
    }
    warm_drop(pc);
    warm_fill(h);
}

static void warm_on_tick(uv_timer_t *t)
{
    struct warm *p = t->data;
    uint64_t now = uv_now(p->loop);
    for (size_t i = 0; i < p->num_hosts; i++) {
        struct warm_host *h = &p->hosts[i];
        struct list_link *l, *n;
        LIST_FOREACH_SAFE(l, n, &h->conns) {
            struct warm_conn *pc = LIST_ITEM(l, struct warm_conn, link);
            if (pc->ready && backend_is_ready(pc->b)) {
                if (now >= pc->retire_at) {
                    p->stats.recycled++;
                    warm_drop(pc);
                } else if (now - pc->checked_at >= h->cfg->pool_check_interval_ms) {
                    pc->checked_at = now;
                    backend_ping(pc->b);
                }
            }
        }
        warm_fill(h);
    }
}

static struct warm *warm_build(uv_loop_t *loop, struct config *cfg,
                               SSL_CTX *const *backend_ctx, struct warm *old);

struct warm *warm_new(uv_loop_t *loop, struct config *cfg, SSL_CTX *const *backend_ctx)
{
    return warm_build(loop, cfg, backend_ctx, NULL);
}

static int warm_str_same(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/* warm_backend_same: a warm connection made for a serves b as it is. */
static int warm_backend_same(const struct config_backend *a, const struct config_backend *b)
{
    return strcmp(a->name, b->name) == 0 && a->tls == b->tls && a->tls_verify == b->tls_verify &&
           warm_str_same(a->ca_file, b->ca_file) && warm_str_same(a->server_name, b->server_name) &&
           a->pool_max_idle_ms == b->pool_max_idle_ms &&
           a->pool_check_interval_ms == b->pool_check_interval_ms;
}

/* warm_carry moves old's ready connections to h's host into h. */
static void warm_carry(struct warm_host *h, struct warm *old)
{
    for (size_t i = 0; i < old->num_hosts; i++) {
        struct warm_host *oh = &old->hosts[i];
        if (oh->port != h->port || strcmp(oh->host, h->host) != 0 ||
            !warm_backend_same(oh->cfg, h->cfg)) {
            continue;
        }
        struct list_link *l, *n;
        unsigned kept = 0;
        LIST_FOREACH_SAFE(l, n, &oh->conns) {
            struct warm_conn *pc = LIST_ITEM(l, struct warm_conn, link);
            if (h->count >= h->cfg->pool_size) {
                break;
            }
            if (!pc->ready || !backend_is_ready(pc->b)) {
                continue;
            }
            warm_unlink(pc);
            pc->h = h;
            backend_set_config(pc->b, h->cfg);
            list_push_back(&h->conns, &pc->link);
            h->count++;
            h->p->stats.size++;
            kept++;
        }
        if (kept > 0) {
            log_msg(LOG_DEBUG, "warm pool: kept %u warm connections to backend %s host %s:%u",
                    kept, h->cfg->name, h->host, (unsigned)h->port);
        }
        return;
    }
}

struct warm *warm_renew(struct warm *old, uv_loop_t *loop, struct config *cfg,
                        SSL_CTX *const *backend_ctx)
{
    struct warm *p = warm_build(loop, cfg, backend_ctx, old);
    warm_free(old);
    return p;
}

static struct warm *warm_build(uv_loop_t *loop, struct config *cfg,
                               SSL_CTX *const *backend_ctx, struct warm *old)
{
    struct warm *p = calloc(1, sizeof(*p));
    size_t n = 0;
    if (p == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < cfg->num_backends; i++) {
        if (cfg->backends[i].pool_size > 0) {
            n += cfg->backends[i].num_hosts;
        }
    }
    if (n > 0 && (p->hosts = calloc(n, sizeof(*p->hosts))) == NULL) {
        free(p);
        return NULL;
    }
    p->loop = loop;
    p->cfg = config_ref(cfg);
    p->backend_ctx = backend_ctx;
    for (size_t i = 0; i < cfg->num_backends; i++) {
        const struct config_backend *b = &cfg->backends[i];
        if (b->pool_size == 0) {
            continue;
        }
        for (size_t j = 0; j < b->num_hosts; j++) {
            struct warm_host *h = &p->hosts[p->num_hosts++];
            h->p = p;
            h->cfg = b;
            h->idx = i;
            snprintf(h->host, sizeof(h->host), "%s", b->hosts[j].host);
            h->port = b->hosts[j].port;
            h->window_start = uv_now(loop);
            list_init(&h->conns);
        }
    }
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    if (old != NULL) {
        p->stats = old->stats;
        p->stats.size = 0; /* counted again as connections move over */
        for (size_t i = 0; i < p->num_hosts; i++) {
            warm_carry(&p->hosts[i], old);
        }
    }
    if (p->num_hosts > 0) {
        for (size_t i = 0; i < p->num_hosts; i++) {
            warm_fill(&p->hosts[i]);
        }
        uv_timer_start(&p->timer, warm_on_tick, WARM_TICK_MS, WARM_TICK_MS);
    }
    return p;
}

struct backend *warm_take(struct warm *p, const struct config_backend *cfg, const char *host,
                          uint16_t port)
{
    if (p == NULL || cfg->pool_size == 0) {
        return NULL;
    }
    for (size_t i = 0; i < p->num_hosts; i++) {
        struct warm_host *h = &p->hosts[i];
        if (h->cfg != cfg || h->port != port || strcmp(h->host, host) != 0) {
            continue;
        }
        (void)warm_target(h, uv_now(p->loop)); /* the window may have turned */
        h->takes_now++;
        struct list_link *l, *n;
        LIST_FOREACH_SAFE(l, n, &h->conns) {
            struct warm_conn *pc = LIST_ITEM(l, struct warm_conn, link);
            if (pc->ready && backend_is_ready(pc->b)) {
                struct backend *b = pc->b;
                warm_unlink(pc);
                free(pc);
                p->stats.hits++;
                warm_fill(h);
                return b;
            }
        }
        break;
    }
    p->stats.misses++;
    return NULL;
}

void warm_stats(const struct warm *p, struct warm_stats *out)
{
    *out = p->stats;
}

static void warm_on_timer_close(uv_handle_t *h)
{
    struct warm *p = h->data;
    config_unref(&p->cfg);
    free(p->hosts);
    free(p);
}

void warm_free(struct warm *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->num_hosts; i++) {
        while (!list_empty(&p->hosts[i].conns)) {
            warm_drop(LIST_ITEM(list_first(&p->hosts[i].conns), struct warm_conn, link));
        }
    }
    uv_close((uv_handle_t *)&p->timer, warm_on_timer_close);
}
