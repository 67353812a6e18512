#include "proxy/sesscache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include <openssl/crypto.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "common/imap_scan.h"
#include "common/imap_syntax.h"
#include "common/list.h"
#include "common/log.h"
#include "common/schema.h"
#include "common/secret.h"
#include "common/seenset.h"
#include "proxy/conn.h"

#define SESSCACHE_TICK_MAX_MS 1000

struct sesscache;

struct cache_entry {
    struct sesscache *c;            /* NULL once the entry left the cache */
    struct list_link link;          /* in c->entries, oldest first */
    char user[SCHEMA_MAX_LOGIN_LEN + 1];
    uint8_t key[SESSCACHE_KEY_LEN];
    struct conn *conn;
    char *capa;                     /* shown to the client at the first login */
    uint64_t parked_at;             /* loop time (ms) */
    int reset;                      /* UNSELECT answered: ready to be taken */
    int lost;                       /* the backend said BYE or refused the reset */
    sesscache_ready_cb waiter;      /* a login waiting for the reset, or NULL */
    void *waiter_ctx;
    struct imap_scan scan;          /* line ends of what the backend sends */
};

struct sesscache {
    uv_loop_t *loop;
    struct config *cfg;             /* our reference */
    uint8_t secret[32];             /* HMAC key, random per process start */
    struct list_link entries;       /* of struct cache_entry, oldest first */
    size_t size;
    uv_timer_t timer;               /* ttl pass while entries exist; timer.data = this */
    unsigned tick_ms;
    struct sesscache_stats stats;
    struct seenset *seen;           /* keys seen lately (park: returning), or NULL */
};

#define CACHE_ENTRY(l) LIST_ITEM(l, struct cache_entry, link)

static void cache_on_tick(uv_timer_t *t);

static void cache_unlink(struct cache_entry *e)
{
    struct sesscache *c = e->c;
    list_remove(&e->link);
    e->c = NULL;
    c->size--;
    c->stats.size = c->size;
    if (c->size == 0) {
        uv_timer_stop(&c->timer);
    }
}

static void cache_entry_free(struct cache_entry *e)
{
    free(e->capa);
    /* the key is an HMAC of the password: with the process key (also in
       memory) it would let a guess be checked offline */
    secret_free(e, sizeof(*e));
}

/* cache_release_waiter tells a waiting login that e is gone. */
static void cache_release_waiter(struct cache_entry *e)
{
    sesscache_ready_cb cb = e->waiter;
    if (cb != NULL) {
        e->waiter = NULL;
        cb(e->waiter_ctx, NULL, NULL);
    }
}

/* cache_evict takes e out and ends its backend session; the entry is freed
 * when its conn has closed. */
static void cache_evict(struct cache_entry *e, uint64_t *counter)
{
    (*counter)++;
    cache_release_waiter(e);
    cache_unlink(e);
    (void)conn_write(e->conn, "Z LOGOUT\r\n", 10);
    conn_close(e->conn, CONN_CLOSE_GRACEFUL);
}

static void cache_on_line(void *ctx, const uint8_t *head, size_t len)
{
    struct cache_entry *e = ctx;
    if (imap_syntax_is_bye(head, len)) {
        e->lost = 1;
    } else if (len >= 4 && memcmp(head, "U ", 2) == 0) {
        /* OK, or BAD when no mailbox was selected: either way none is now */
        if (strncasecmp((const char *)head + 2, "OK", 2) == 0 ||
            strncasecmp((const char *)head + 2, "BAD", 3) == 0) {
            e->reset = 1;
        } else {
            e->lost = 1;
        }
    }
}

/* cache_take_entry takes e's reset connection out of the cache (a hit) and
 * frees e; *out_capa gets its capability list. */
static struct conn *cache_take_entry(struct cache_entry *e, char **out_capa)
{
    struct conn *conn = e->conn;
    e->c->stats.hits++;
    cache_unlink(e);
    *out_capa = e->capa;
    e->capa = NULL;
    cache_entry_free(e);
    conn_read_stop(conn);
    return conn;
}

/* cache_hand_over gives e's connection to the login waiting for it. */
static void cache_hand_over(struct cache_entry *e)
{
    sesscache_ready_cb cb = e->waiter;
    void *ctx = e->waiter_ctx;
    char *capa = NULL;
    e->c->stats.waits++;
    struct conn *conn = cache_take_entry(e, &capa);
    cb(ctx, conn, capa);
}

static void cache_on_read(void *ctx, const uint8_t *data, size_t len)
{
    struct cache_entry *e = ctx;
    if (e->c == NULL) {
        return; /* evicted; closing */
    }
    int was_reset = e->reset;
    imap_scan_feed(&e->scan, data, len, cache_on_line, e);
    if (e->lost) {
        log_msg(LOG_INFO, "session cache: parked connection of %s dropped by the backend",
                e->user);
        cache_evict(e, &e->c->stats.evicted_lost);
    } else if (e->reset && !was_reset && e->waiter != NULL) {
        cache_hand_over(e);
    }
}

static void cache_on_eof(void *ctx, int status)
{
    struct cache_entry *e = ctx;
    (void)status;
    if (e->c != NULL) {
        e->c->stats.evicted_lost++;
        cache_release_waiter(e);
        cache_unlink(e);
    }
    conn_close(e->conn, CONN_CLOSE_NOW);
}

static void cache_on_close(void *ctx)
{
    cache_entry_free(ctx);
}

static const struct conn_ops cache_conn_ops = {
    .on_read = cache_on_read,
    .on_eof = cache_on_eof,
    .on_close = cache_on_close,
};

struct sesscache *sesscache_new(uv_loop_t *loop, struct config *cfg)
{
    if (!cfg->session_cache.enabled) {
        return NULL;
    }
    struct sesscache *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        log_msg(LOG_ERR, "session cache: out of memory; running without it");
        return NULL;
    }
    c->loop = loop;
    c->cfg = config_ref(cfg);
    list_init(&c->entries);
    RAND_bytes(c->secret, sizeof(c->secret));
    c->tick_ms = cfg->session_cache.ttl_ms / 4;
    if (c->tick_ms > SESSCACHE_TICK_MAX_MS) {
        c->tick_ms = SESSCACHE_TICK_MAX_MS;
    }
    if (c->tick_ms < 25) {
        c->tick_ms = 25;
    }
    if (cfg->session_cache.park == CONFIG_PARK_RETURNING) {
        c->seen = seenset_new(cfg->session_cache.seen_slots);
        if (c->seen == NULL) {
            log_msg(LOG_ERR, "session cache: out of memory; running without it");
            config_unref(&c->cfg);
            secret_free(c, sizeof(*c));
            return NULL;
        }
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    return c;
}

static void cache_hmac_str(HMAC_CTX *h, const char *s)
{
    if (s == NULL) {
        s = "";
    }
    /* each field with its terminating NUL: no two field lists give one input */
    HMAC_Update(h, (const uint8_t *)s, strlen(s) + 1);
}

void sesscache_key(uint8_t out[SESSCACHE_KEY_LEN], const struct sesscache *c, const char *user,
                   const char *authzid, const char *password, const char *hash,
                   const char *backend, const char *host, uint16_t port)
{
    HMAC_CTX h;
    unsigned len = 0;
    uint8_t p[2] = {(uint8_t)(port >> 8), (uint8_t)port};
    HMAC_CTX_init(&h);
    if (!HMAC_Init_ex(&h, c->secret, sizeof(c->secret), EVP_sha256(), NULL)) {
        /* cannot happen with a static key and digest; a random key then
           matches nothing */
        RAND_bytes(out, SESSCACHE_KEY_LEN);
        HMAC_CTX_cleanup(&h);
        return;
    }
    cache_hmac_str(&h, user);
    cache_hmac_str(&h, authzid);
    cache_hmac_str(&h, password);
    cache_hmac_str(&h, hash);
    cache_hmac_str(&h, backend);
    cache_hmac_str(&h, host);
    HMAC_Update(&h, p, sizeof(p));
    HMAC_Final(&h, out, &len);
    HMAC_CTX_cleanup(&h);
}

int sesscache_park(struct sesscache *c, const char *user, const uint8_t key[SESSCACHE_KEY_LEN],
                   struct conn *conn, const char *capa)
{
    const struct config_session_cache *cc = &c->cfg->session_cache;
    struct cache_entry *e = calloc(1, sizeof(*e));
    if (e == NULL || strlen(user) >= sizeof(e->user) || (e->capa = strdup(capa)) == NULL) {
        free(e);
        return -1;
    }
    /* room first: the user's oldest, then the oldest of all */
    unsigned mine = 0;
    struct cache_entry *oldest_mine = NULL;
    struct list_link *l, *n;
    LIST_FOREACH_SAFE(l, n, &c->entries) {
        struct cache_entry *x = CACHE_ENTRY(l);
        if (strcmp(x->user, user) == 0) {
            if (oldest_mine == NULL) {
                oldest_mine = x;
            }
            mine++;
        }
    }
    if (mine >= cc->max_per_user && oldest_mine != NULL) {
        cache_evict(oldest_mine, &c->stats.evicted_limit);
    }
    while (c->size >= cc->max_total && !list_empty(&c->entries)) {
        cache_evict(CACHE_ENTRY(list_first(&c->entries)), &c->stats.evicted_limit);
    }

    e->c = c;
    snprintf(e->user, sizeof(e->user), "%s", user);
    memcpy(e->key, key, SESSCACHE_KEY_LEN);
    e->conn = conn;
    e->parked_at = uv_now(c->loop);
    imap_scan_init(&e->scan);
    list_push_back(&c->entries, &e->link);
    if (c->size++ == 0) {
        uv_timer_start(&c->timer, cache_on_tick, c->tick_ms, c->tick_ms);
    }
    c->stats.size = c->size;
    c->stats.parked++;
    conn_set_ops(conn, &cache_conn_ops, e);
    (void)conn_write(conn, "U UNSELECT\r\n", 12); /* a failure comes as on_eof */
    (void)conn_read_start(conn);
    return 0;
}

enum sesscache_result sesscache_take(struct sesscache *c, const char *user,
                                     const uint8_t key[SESSCACHE_KEY_LEN], struct conn **out_conn,
                                     char **out_capa, sesscache_ready_cb cb, void *ctx)
{
    if (c == NULL) {
        return SESSCACHE_MISS;
    }
    struct cache_entry *pending = NULL;
    /* the newest first: it has the most of its ttl left */
    for (struct list_link *l = c->entries.prev; l != &c->entries; l = l->prev) {
        struct cache_entry *e = CACHE_ENTRY(l);
        if (e->lost || strcmp(e->user, user) != 0 ||
            CRYPTO_memcmp(e->key, key, SESSCACHE_KEY_LEN) != 0) {
            continue;
        }
        if (!e->reset) {
            if (pending == NULL && e->waiter == NULL) {
                pending = e;
            }
            continue;
        }
        *out_conn = cache_take_entry(e, out_capa);
        return SESSCACHE_HIT;
    }
    if (pending != NULL && cb != NULL) {
        pending->waiter = cb;
        pending->waiter_ctx = ctx;
        return SESSCACHE_WAIT;
    }
    c->stats.misses++;
    return SESSCACHE_MISS;
}

void sesscache_cancel(struct sesscache *c, void *ctx)
{
    if (c == NULL) {
        return;
    }
    struct list_link *l, *n;
    LIST_FOREACH_SAFE(l, n, &c->entries) {
        struct cache_entry *e = CACHE_ENTRY(l);
        if (e->waiter != NULL && e->waiter_ctx == ctx) {
            e->waiter = NULL;
            e->waiter_ctx = NULL;
        }
    }
}

/* cache_tag: the seen set's tag of a key (an HMAC already: no login and no
 * credential can be read from it). */
static uint64_t cache_tag(const uint8_t key[SESSCACHE_KEY_LEN])
{
    uint64_t t = 0;
    memcpy(&t, key, sizeof(t));
    return t;
}

int sesscache_returning(struct sesscache *c, const uint8_t key[SESSCACHE_KEY_LEN])
{
    if (c == NULL) {
        return 0;
    }
    if (c->seen == NULL) {
        return 1; /* park: always */
    }
    return seenset_check_note(c->seen, cache_tag(key), uv_now(c->loop),
                              c->cfg->session_cache.ttl_ms);
}

void sesscache_seen(struct sesscache *c, const uint8_t key[SESSCACHE_KEY_LEN], int parked)
{
    if (c == NULL) {
        return;
    }
    if (!parked) {
        c->stats.not_parked++;
    }
    if (c->seen != NULL) {
        seenset_note(c->seen, cache_tag(key), uv_now(c->loop));
    }
}

static void cache_on_tick(uv_timer_t *t)
{
    struct sesscache *c = t->data;
    uint64_t now = uv_now(c->loop);
    unsigned ttl = c->cfg->session_cache.ttl_ms;
    struct list_link *l, *n;
    while (!list_empty(&c->entries) &&
           now - CACHE_ENTRY(list_first(&c->entries))->parked_at >= ttl) {
        cache_evict(CACHE_ENTRY(list_first(&c->entries)), &c->stats.evicted_ttl);
    }
    /* a backend that does not answer UNSELECT holds no one up for long */
    LIST_FOREACH_SAFE(l, n, &c->entries) {
        struct cache_entry *e = CACHE_ENTRY(l);
        if (!e->reset && now - e->parked_at >= SESSCACHE_RESET_MAX_MS) {
            log_msg(LOG_WARNING, "session cache: parked connection of %s not reset in %u ms; "
                    "dropped", e->user, SESSCACHE_RESET_MAX_MS);
            cache_evict(e, &c->stats.evicted_lost);
        }
    }
}

void sesscache_evict_user(struct sesscache *c, const char *user)
{
    if (c == NULL) {
        return;
    }
    struct list_link *l, *n;
    LIST_FOREACH_SAFE(l, n, &c->entries) {
        struct cache_entry *e = CACHE_ENTRY(l);
        if (strcmp(e->user, user) == 0) {
            cache_evict(e, &c->stats.evicted_event);
        }
    }
}

void sesscache_evict_all(struct sesscache *c)
{
    if (c == NULL) {
        return;
    }
    while (!list_empty(&c->entries)) {
        cache_evict(CACHE_ENTRY(list_first(&c->entries)), &c->stats.evicted_event);
    }
}

void sesscache_stats(const struct sesscache *c, struct sesscache_stats *out)
{
    *out = c->stats;
}

static void cache_on_timer_close(uv_handle_t *h)
{
    struct sesscache *c = h->data;
    seenset_free(c->seen);
    config_unref(&c->cfg);
    secret_free(c, sizeof(*c)); /* c->secret, the HMAC key */
}

void sesscache_free(struct sesscache *c)
{
    if (c == NULL) {
        return;
    }
    uint64_t dropped = 0;
    while (!list_empty(&c->entries)) {
        cache_evict(CACHE_ENTRY(list_first(&c->entries)), &dropped);
    }
    uv_close((uv_handle_t *)&c->timer, cache_on_timer_close);
}
