/* oauth: token validation on a thread of its own (see oauth.h).
 *
 * Threads: loops submit jobs (oauth_validate) into oauth_g.queue under the
 * mutex and wake the thread through a pipe.  The thread alone owns the
 * domains' key sets (replacing them; each set is reference counted), the
 * HTTP requests and the introspection cache.  A JWT job whose kid is known
 * goes, with a reference to the set, to the signers' queue (oauth_s).  A
 * finished job goes to its loop's done list under oauth_g.mu, from whichever
 * thread decided it, and the loop's uv_async_t delivers it. */
#include "proxy/oauth.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include <jansson.h>

#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "common/keycount.h"
#include "common/list.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "common/secret.h"
#include "proxy/oauth_http.h"
#include "proxy/tls.h"

#define OAUTH_MAX_REQUESTS 1024            /* HTTP requests in flight, at most */
#define OAUTH_POLL_MAX_MS 1000              /* the thread looks at its clocks this often */
#define OAUTH_JWKS_RETRY_MS 30000           /* after a failed background fetch */
#define OAUTH_MAX_UNKNOWN_KIDS 64           /* kids remembered as absent after a fetch */
#define OAUTH_CACHE_BUCKETS 4096            /* introspection cache hash table */
#define OAUTH_CACHE_MAX_ENTRIES 100000      /* introspection results held at most */
#define OAUTH_MAX_QUEUED 4096               /* jobs waiting for the thread, at most */
#define OAUTH_MAX_SIGNERS 4                 /* threads that check JWT signatures */

/* A key set shared by the oauth thread (which replaces it) and the signer
 * threads (which check signatures with it): freed with its last reference. */
struct oauth_keys {
    atomic_int refs;
    struct jwt_keyset *ks;      /* owned */
};

struct oauth_loop {
    struct list_link link;      /* in oauth_g.loops; under the mutex */
    uv_loop_t *loop;
    uv_async_t async;
    struct list_link done;      /* finished jobs; under the mutex */
    size_t num_jobs;            /* submitted, not yet delivered; under the mutex */
    int closing;
    struct oauth_stats stats;   /* under the mutex */
};

struct oauth_domain {
    const struct config_oauth_domain *cfg; /* in oauth_g.cfg */
    struct oauth_keys *keys;    /* the current set, or NULL; replaced by the thread only */
    uint64_t next_refresh_ms;   /* monotonic: the next background fetch */
    uint64_t last_ondemand_ms;  /* the last fetch started for an unknown kid */
    struct oauth_call *fetch;   /* the key set fetch in flight, or NULL */
    SSL_CTX *tls_ctx;           /* for https URLs (verifying), or NULL */
    struct list_link waiting;   /* jobs waiting for that fetch */
    char unknown[OAUTH_MAX_UNKNOWN_KIDS][JWT_MAX_KID_LEN + 1]; /* absent after a fetch */
    uint64_t unknown_at[OAUTH_MAX_UNKNOWN_KIDS];
    size_t next_unknown;
};

struct oauth_job {
    struct list_link link;      /* queue, a wait list, or the loop's done list */
    struct oauth_loop *ol;
    struct oauth_domain *dom;
    char *token;                /* secret; wiped as soon as it is decided */
    size_t token_len;
    uint8_t key[OAUTH_KEY_LEN]; /* keyed hash of the token */
    struct oauth_keys *keys;    /* with a signer: the set to check with (a reference) */
    struct keycount_entry *client; /* the client's share it counts against, or NULL
                                      (under oauth_g.mu) */
    oauth_cb cb;
    void *ctx;
    struct oauth_result res;
};

enum oauth_http_kind {
    OAUTH_HTTP_JWKS,
    OAUTH_HTTP_INTROSPECT,
};

struct oauth_call {
    struct list_link link;      /* in oauth_g.requests */
    enum oauth_http_kind kind;
    struct oauth_http_req *req;
    struct oauth_domain *dom;
    uint8_t key[OAUTH_KEY_LEN]; /* introspection: the token's key */
    struct list_link jobs;      /* introspection: the jobs waiting for it */
};

struct oauth_cache_entry {
    struct oauth_cache_entry *next;
    uint8_t key[OAUTH_KEY_LEN];
    const struct oauth_domain *dom;
    int active;
    uint64_t expires_ms;        /* monotonic */
    char identity[JWT_MAX_IDENTITY_LEN + 1];
};

static struct {
    int running;
    struct config *cfg;         /* our reference */
    struct oauth_domain *domains;
    size_t num_domains;
    uint8_t hmac_key[32];       /* random per process: keys tokens in the cache */
    uv_thread_t thread;
    uv_mutex_t mu;
    int wake[2];                /* a byte in wake[1] wakes the thread's poll */
    /* under the mutex */
    int stop;
    struct list_link queue;
    size_t num_queued;
    struct list_link loops;
    struct oauth_process_stats pstats;
    struct keycount *clients;   /* validations in flight per client key */
    size_t max_per_client;      /* limits.verify_per_client (0: no share) */
    unsigned ipv6_prefix_len;
    /* thread only */
    struct list_link requests;
    struct oauth_cache_entry *cache[OAUTH_CACHE_BUCKETS];
    size_t cache_entries;
} oauth_g;

/* The signer threads: JWT signature and claim checks are CPU work, so they
 * run beside the oauth thread, one job at a time each. */
static struct {
    uv_thread_t threads[OAUTH_MAX_SIGNERS];
    unsigned num_threads;
    uv_mutex_t mu;
    uv_cond_t cond;
    struct list_link queue;     /* struct oauth_job with keys set; under mu */
    int stop;
} oauth_s;

static uint64_t oauth_now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static struct oauth_keys *oauth_keys_new(struct jwt_keyset *ks)
{
    struct oauth_keys *k = malloc(sizeof(*k));
    if (k == NULL) {
        jwt_keyset_free(ks);
        return NULL;
    }
    atomic_init(&k->refs, 1);
    k->ks = ks;
    return k;
}

static void oauth_keys_unref(struct oauth_keys *k)
{
    if (k != NULL && atomic_fetch_sub(&k->refs, 1) == 1) {
        jwt_keyset_free(k->ks);
        free(k);
    }
}

static const struct jwt_keyset *oauth_keys_set(const struct oauth_keys *k)
{
    return k != NULL ? k->ks : NULL;
}

/* --- jobs ---------------------------------------------------------------------- */

static void oauth_job_free(struct oauth_job *j)
{
    /* j->client is released at delivery; a job freed undelivered (shutdown)
       goes with the table */
    oauth_keys_unref(j->keys);
    if (j->token != NULL) {
        secret_free(j->token, j->token_len + 1);
    }
    OPENSSL_cleanse(j->key, sizeof(j->key));
    free(j);
}

/* oauth_finish hands a decided job to its loop (thread). */
static void oauth_finish(struct oauth_job *j, enum oauth_status st, const char *reason)
{
    if (j->token != NULL) {
        secret_free(j->token, j->token_len + 1); /* decided: the secret goes now */
        j->token = NULL;
    }
    j->res.status = st;
    j->res.reason = reason;
    uv_mutex_lock(&oauth_g.mu);
    list_push_back(&j->ol->done, &j->link);
    uv_async_send(&j->ol->async);
    uv_mutex_unlock(&oauth_g.mu);
}

static void oauth_finish_valid(struct oauth_job *j, const char *identity, int cached)
{
    snprintf(j->res.identity, sizeof(j->res.identity), "%s", identity);
    j->res.cached = cached;
    oauth_finish(j, OAUTH_VALID, cached ? "valid (cached)" : "valid");
}

/* --- HTTP (thread) ------------------------------------------------------------------ */

static size_t oauth_num_calls; /* in oauth_g.requests (thread only) */

static void oauth_call_free(struct oauth_call *h)
{
    if (h == NULL) {
        return;
    }
    oauth_http_free(h->req);
    if (list_linked(&h->link)) {
        list_remove(&h->link);
        oauth_num_calls--;
    }
    free(h);
}

/* oauth_call_start begins a GET (form NULL) or a form POST (form wiped and
 * freed here, the request has its own copy) of url for dom.  Returns the
 * call, or NULL. */
static struct oauth_call *oauth_call_start(struct oauth_domain *dom, enum oauth_http_kind kind,
                                           const char *url, char *form, size_t form_len)
{
    const struct config_oauth_domain *c = dom->cfg;
    const char *err = NULL;
    struct oauth_call *h = oauth_num_calls < OAUTH_MAX_REQUESTS ? calloc(1, sizeof(*h)) : NULL;
    if (h == NULL) {
        secret_free(form, form_len + 1);
        return NULL;
    }
    list_init(&h->jobs);
    h->kind = kind;
    h->dom = dom;
    struct oauth_http_params p = {
        .url = url,
        .tls_ctx = dom->tls_ctx,
        .user = form != NULL ? c->client_id : NULL,
        .password = form != NULL ? c->client_secret : NULL,
        .form = form,
        .form_len = form_len,
        .user_agent = "imapmux/" IMAPMUX_VERSION,
        .timeout_ms = c->http_timeout_ms,
    };
    h->req = oauth_http_start(&p, oauth_now_ms(), &err);
    secret_free(form, form_len + 1);
    if (h->req == NULL) {
        log_msg(LOG_WARNING, "oauth: domain %s: HTTP request not started: %s", c->domain, err);
        free(h);
        return NULL;
    }
    list_push_back(&oauth_g.requests, &h->link);
    oauth_num_calls++;
    return h;
}

/* --- JWT domains (thread) ------------------------------------------------------------ */

static void oauth_jwt_decide(struct oauth_job *j);

static void oauth_fetch_jwks(struct oauth_domain *d, int ondemand)
{
    d->fetch = oauth_call_start(d, OAUTH_HTTP_JWKS, d->cfg->jwks_url, NULL, 0);
    uv_mutex_lock(&oauth_g.mu);
    oauth_g.pstats.jwks_fetches++;
    oauth_g.pstats.jwks_ondemand += ondemand ? 1 : 0;
    if (d->fetch == NULL) {
        oauth_g.pstats.jwks_fetch_failures++;
    }
    uv_mutex_unlock(&oauth_g.mu);
    if (ondemand) {
        d->last_ondemand_ms = oauth_now_ms();
    }
}

/* oauth_kid_may_fetch: may a token naming kid (absent from the set) wait for
 * a fetch?  Once per kid, and on-demand fetches at most once per
 * jwks_min_fetch_s per domain: a stream of made-up kids cannot make us hammer
 * the key server. */
static int oauth_kid_may_fetch(struct oauth_domain *d, const char *kid, uint64_t now)
{
    if (d->cfg->jwks_url == NULL) {
        return 0;
    }
    for (size_t i = 0; i < OAUTH_MAX_UNKNOWN_KIDS; i++) {
        if (d->unknown_at[i] != 0 && strcmp(d->unknown[i], kid) == 0 &&
            now < d->unknown_at[i] + (uint64_t)d->cfg->jwks_refresh_s * 1000) {
            return 0;
        }
    }
    if (d->fetch != NULL) {
        return 1;
    }
    return d->last_ondemand_ms == 0 ||
           now >= d->last_ondemand_ms + (uint64_t)d->cfg->jwks_min_fetch_s * 1000;
}

static void oauth_kid_note_unknown(struct oauth_domain *d, const char *kid)
{
    size_t i = d->next_unknown++ % OAUTH_MAX_UNKNOWN_KIDS;
    snprintf(d->unknown[i], sizeof(d->unknown[i]), "%s", kid);
    d->unknown_at[i] = oauth_now_ms();
}

/* oauth_jwt_run: a new job of a JWT domain. */
static void oauth_jwt_run(struct oauth_job *j)
{
    struct oauth_domain *d = j->dom;
    struct jwt t;
    int r = jwt_parse(&t, j->token, j->token_len);
    if (r != 0) {
        oauth_finish(j, OAUTH_INVALID, jwt_strerror(r));
        return;
    }
    int known = jwt_keyset_has(oauth_keys_set(d->keys), t.kid);
    int wait = !known && oauth_kid_may_fetch(d, t.kid, oauth_now_ms());
    jwt_cleanup(&t);
    if (wait) {
        list_push_back(&d->waiting, &j->link);
        if (d->fetch == NULL) {
            log_msg(LOG_INFO, "oauth: domain %s: a token names an unknown key; fetching the key set",
                    d->cfg->domain);
            oauth_fetch_jwks(d, 1);
            if (d->fetch == NULL) {
                list_remove(&j->link);
                oauth_jwt_decide(j);
            }
        }
        return;
    }
    oauth_jwt_decide(j);
}

/* oauth_jwt_check checks signature and claims with j->keys and finishes j
 * (a signer thread). */
static void oauth_jwt_check(struct oauth_job *j)
{
    const struct config_oauth_domain *c = j->dom->cfg;
    struct jwt t;
    char identity[JWT_MAX_IDENTITY_LEN + 1];
    time_t exp = 0;
    int r = jwt_parse(&t, j->token, j->token_len);
    if (r == 0) {
        r = jwt_verify_signature(&t, j->token, oauth_keys_set(j->keys));
    }
    if (r == 0) {
        struct jwt_policy p = {
            .issuer = c->issuer,
            .audience = c->audience,
            .identity_claim = c->identity_claim,
            .skew_s = c->clock_skew_s,
        };
        r = jwt_check_claims(&t, &p, time(NULL), identity, sizeof(identity), &exp);
    }
    jwt_cleanup(&t);
    oauth_keys_unref(j->keys);
    j->keys = NULL;
    if (r != 0) {
        oauth_finish(j, OAUTH_INVALID, jwt_strerror(r));
        return;
    }
    oauth_finish_valid(j, identity, 0);
    OPENSSL_cleanse(identity, sizeof(identity));
}

static void oauth_signer(void *arg)
{
    (void)arg;
    uv_mutex_lock(&oauth_s.mu);
    for (;;) {
        while (!oauth_s.stop && list_empty(&oauth_s.queue)) {
            uv_cond_wait(&oauth_s.cond, &oauth_s.mu);
        }
        if (list_empty(&oauth_s.queue)) {
            break; /* stopping, and nothing is left */
        }
        struct list_link *l = list_first(&oauth_s.queue);
        list_remove(l);
        uv_mutex_unlock(&oauth_s.mu);
        oauth_jwt_check(LIST_ITEM(l, struct oauth_job, link));
        uv_mutex_lock(&oauth_s.mu);
    }
    uv_mutex_unlock(&oauth_s.mu);
}

/* oauth_jwt_decide decides j with the keys at hand (the oauth thread): an
 * unknown kid at once, the rest on a signer thread. */
static void oauth_jwt_decide(struct oauth_job *j)
{
    struct oauth_domain *d = j->dom;
    struct jwt t;
    int r = jwt_parse(&t, j->token, j->token_len);
    if (r == 0 && !jwt_keyset_has(oauth_keys_set(d->keys), t.kid)) {
        if (d->cfg->jwks_url != NULL) {
            oauth_kid_note_unknown(d, t.kid);
        }
        r = JWT_E_UNKNOWN_KID;
    }
    jwt_cleanup(&t);
    if (r != 0) {
        oauth_finish(j, OAUTH_INVALID, jwt_strerror(r));
        return;
    }
    atomic_fetch_add(&d->keys->refs, 1);
    j->keys = d->keys;
    if (oauth_s.num_threads == 0) {
        oauth_jwt_check(j);
        return;
    }
    uv_mutex_lock(&oauth_s.mu);
    list_push_back(&oauth_s.queue, &j->link);
    uv_cond_signal(&oauth_s.cond);
    uv_mutex_unlock(&oauth_s.mu);
}

static void oauth_jwks_done(struct oauth_call *h, int code, const char *body, size_t body_len,
                            const char *err)
{
    struct oauth_domain *d = h->dom;
    struct jwt_keyset *ks = NULL;
    int r = -1;
    if (code == 200) {
        r = jwt_keyset_parse(&ks, body, body_len);
    }
    uint64_t now = oauth_now_ms();
    struct oauth_keys *nk = r == 0 ? oauth_keys_new(ks) : NULL;
    if (nk != NULL) {
        oauth_keys_unref(d->keys); /* signers still checking with it keep it */
        d->keys = nk;
        d->next_refresh_ms = now + (uint64_t)d->cfg->jwks_refresh_s * 1000;
        log_msg(LOG_DEBUG, "oauth: domain %s: key set fetched, %zu keys", d->cfg->domain,
                jwt_keyset_count(nk->ks));
    } else {
        /* the keys we have stay in use: an outage of the key server must
           not log everybody out */
        uint64_t retry = (uint64_t)d->cfg->jwks_refresh_s * 1000;
        d->next_refresh_ms = now + (retry < OAUTH_JWKS_RETRY_MS ? retry : OAUTH_JWKS_RETRY_MS);
        log_msg(LOG_WARNING, "oauth: domain %s: key set fetch failed (%s, HTTP %d, %s); keeping "
                "%zu cached keys", d->cfg->domain, err, code,
                code == 200 ? jwt_strerror(r) : "no document",
                jwt_keyset_count(oauth_keys_set(d->keys)));
        uv_mutex_lock(&oauth_g.mu);
        oauth_g.pstats.jwks_fetch_failures++;
        uv_mutex_unlock(&oauth_g.mu);
    }
    d->fetch = NULL;
    while (!list_empty(&d->waiting)) {
        struct list_link *l = list_first(&d->waiting);
        list_remove(l);
        oauth_jwt_decide(LIST_ITEM(l, struct oauth_job, link));
    }
}

/* --- introspection domains (thread) ---------------------------------------------------- */

static size_t oauth_cache_bucket(const uint8_t key[OAUTH_KEY_LEN])
{
    return ((size_t)key[0] << 8 | key[1]) % OAUTH_CACHE_BUCKETS;
}

/* oauth_cache_find returns the live entry for key and dom, dropping expired
 * ones of its bucket on the way. */
static struct oauth_cache_entry *oauth_cache_find(const uint8_t key[OAUTH_KEY_LEN],
                                                  const struct oauth_domain *dom, uint64_t now)
{
    struct oauth_cache_entry **pp = &oauth_g.cache[oauth_cache_bucket(key)];
    while (*pp != NULL) {
        struct oauth_cache_entry *e = *pp;
        if (now >= e->expires_ms) {
            *pp = e->next;
            OPENSSL_cleanse(e, sizeof(*e));
            free(e);
            oauth_g.cache_entries--;
            continue;
        }
        if (e->dom == dom && CRYPTO_memcmp(e->key, key, OAUTH_KEY_LEN) == 0) {
            return e;
        }
        pp = &e->next;
    }
    return NULL;
}

static void oauth_cache_put(const uint8_t key[OAUTH_KEY_LEN], const struct oauth_domain *dom,
                            int active, const char *identity, uint64_t ttl_ms)
{
    uint64_t now = oauth_now_ms();
    if (ttl_ms == 0 || oauth_cache_find(key, dom, now) != NULL ||
        oauth_g.cache_entries >= OAUTH_CACHE_MAX_ENTRIES) {
        return; /* full: answers stay right, only slower */
    }
    struct oauth_cache_entry *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return;
    }
    memcpy(e->key, key, OAUTH_KEY_LEN);
    e->dom = dom;
    e->active = active;
    e->expires_ms = now + ttl_ms;
    snprintf(e->identity, sizeof(e->identity), "%s", identity != NULL ? identity : "");
    size_t b = oauth_cache_bucket(key);
    e->next = oauth_g.cache[b];
    oauth_g.cache[b] = e;
    oauth_g.cache_entries++;
}

static void oauth_cache_clear(void)
{
    for (size_t b = 0; b < OAUTH_CACHE_BUCKETS; b++) {
        while (oauth_g.cache[b] != NULL) {
            struct oauth_cache_entry *e = oauth_g.cache[b];
            oauth_g.cache[b] = e->next;
            OPENSSL_cleanse(e, sizeof(*e));
            free(e);
        }
    }
    oauth_g.cache_entries = 0;
}

/* oauth_form_token returns "token=<percent-encoded>&token_type_hint=access_token"
 * (malloc'd, the caller wipes it), or NULL on OOM. */
static char *oauth_form_token(size_t *out_len, const char *token, size_t len)
{
    static const char prefix[] = "token=", suffix[] = "&token_type_hint=access_token";
    static const char hex[] = "0123456789ABCDEF";
    size_t room = sizeof(prefix) + 3 * len + sizeof(suffix);
    char *f = malloc(room);
    size_t o = 0;
    if (f == NULL) {
        return NULL;
    }
    memcpy(f, prefix, sizeof(prefix) - 1);
    o = sizeof(prefix) - 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)token[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            f[o++] = (char)c;
        } else {
            f[o++] = '%';
            f[o++] = hex[c >> 4];
            f[o++] = hex[c & 15];
        }
    }
    memcpy(f + o, suffix, sizeof(suffix));
    o += sizeof(suffix) - 1;
    *out_len = o;
    return f;
}

static void oauth_introspect_run(struct oauth_job *j)
{
    struct oauth_domain *d = j->dom;
    struct oauth_cache_entry *e = oauth_cache_find(j->key, d, oauth_now_ms());
    if (e != NULL) {
        uv_mutex_lock(&oauth_g.mu);
        j->ol->stats.cache_hits++;
        uv_mutex_unlock(&oauth_g.mu);
        if (e->active) {
            oauth_finish_valid(j, e->identity, 1);
        } else {
            j->res.cached = 1;
            oauth_finish(j, OAUTH_INVALID, "token not active (cached)");
        }
        return;
    }
    /* the same token in flight already: one request answers both */
    struct list_link *l, *n;
    LIST_FOREACH_SAFE(l, n, &oauth_g.requests) {
        struct oauth_call *h = LIST_ITEM(l, struct oauth_call, link);
        if (h->kind == OAUTH_HTTP_INTROSPECT && h->dom == d &&
            CRYPTO_memcmp(h->key, j->key, OAUTH_KEY_LEN) == 0) {
            list_push_back(&h->jobs, &j->link);
            return;
        }
    }
    size_t form_len = 0;
    char *form = oauth_form_token(&form_len, j->token, j->token_len);
    struct oauth_call *h = form != NULL ? oauth_call_start(d, OAUTH_HTTP_INTROSPECT,
                                                           d->cfg->introspection_url, form,
                                                           form_len)
                                        : NULL;
    uv_mutex_lock(&oauth_g.mu);
    oauth_g.pstats.introspections++;
    if (h == NULL) {
        oauth_g.pstats.introspection_failures++;
    }
    uv_mutex_unlock(&oauth_g.mu);
    if (h == NULL) {
        oauth_finish(j, OAUTH_UNAVAILABLE, "cannot start the introspection request");
        return;
    }
    memcpy(h->key, j->key, OAUTH_KEY_LEN);
    list_push_back(&h->jobs, &j->link);
}

/* oauth_introspect_judge reads an RFC 7662 answer: returns OAUTH_VALID with
 * the identity and the entry's lifetime, OAUTH_INVALID with a reason, or
 * OAUTH_UNAVAILABLE for an answer that is not one. */
static enum oauth_status oauth_introspect_judge(const struct oauth_call *h, const char *body,
                                                size_t body_len, char *identity, size_t id_len,
                                                uint64_t *out_ttl_ms, const char **reason)
{
    const struct config_oauth_domain *c = h->dom->cfg;
    json_error_t jerr;
    json_t *o = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &jerr);
    enum oauth_status st = OAUTH_INVALID;
    time_t now = time(NULL);

    *out_ttl_ms = (uint64_t)c->negative_cache_s * 1000;
    if (!json_is_object(o) || !json_is_boolean(json_object_get(o, "active"))) {
        *reason = "introspection answer is not RFC 7662";
        json_decref(o);
        return OAUTH_UNAVAILABLE;
    }
    json_t *exp = json_object_get(o, "exp");
    json_t *nbf = json_object_get(o, "nbf");
    const char *id = json_string_value(json_object_get(o, c->identity_claim));
    if (!json_is_true(json_object_get(o, "active"))) {
        *reason = "token not active";
    } else if (exp != NULL && (!json_is_number(exp) ||
                               (double)now >= json_number_value(exp) + c->clock_skew_s)) {
        *reason = "expired";
    } else if (nbf != NULL && (!json_is_number(nbf) ||
                               (double)now + c->clock_skew_s < json_number_value(nbf))) {
        *reason = "not yet valid";
    } else if (c->issuer != NULL &&
               (json_string_value(json_object_get(o, "iss")) == NULL ||
                strcmp(json_string_value(json_object_get(o, "iss")), c->issuer) != 0)) {
        *reason = "wrong issuer";
    } else if (id == NULL || id[0] == '\0' || strlen(id) >= id_len) {
        *reason = "no identity claim";
    } else {
        int aud_ok = c->audience == NULL;
        json_t *aud = json_object_get(o, "aud");
        if (json_is_string(aud)) {
            aud_ok = aud_ok || strcmp(json_string_value(aud), c->audience) == 0;
        } else if (json_is_array(aud)) {
            for (size_t i = 0; i < json_array_size(aud) && !aud_ok; i++) {
                const char *a = json_string_value(json_array_get(aud, i));
                aud_ok = a != NULL && strcmp(a, c->audience) == 0;
            }
        }
        if (!aud_ok) {
            *reason = "wrong audience";
        } else {
            snprintf(identity, id_len, "%s", id);
            uint64_t ttl = (uint64_t)c->cache_s * 1000;
            if (exp != NULL) {
                double left = json_number_value(exp) - (double)now;
                if (left * 1000 < (double)ttl) {
                    ttl = left > 0 ? (uint64_t)(left * 1000) : 0;
                }
            }
            *out_ttl_ms = ttl;
            *reason = "valid";
            st = OAUTH_VALID;
        }
    }
    json_decref(o);
    return st;
}

static void oauth_introspect_done(struct oauth_call *h, int code, const char *body,
                                  size_t body_len, const char *err)
{
    char identity[JWT_MAX_IDENTITY_LEN + 1] = "";
    uint64_t ttl = 0;
    const char *reason = "introspection endpoint unavailable";
    enum oauth_status st = OAUTH_UNAVAILABLE;
    if (code == 200) {
        st = oauth_introspect_judge(h, body, body_len, identity, sizeof(identity), &ttl, &reason);
    } else {
        log_msg(LOG_WARNING, "oauth: domain %s: introspection failed (%s, HTTP %d)",
                h->dom->cfg->domain, err, code);
    }
    if (st == OAUTH_UNAVAILABLE) {
        uv_mutex_lock(&oauth_g.mu);
        oauth_g.pstats.introspection_failures++;
        uv_mutex_unlock(&oauth_g.mu);
    } else {
        oauth_cache_put(h->key, h->dom, st == OAUTH_VALID, identity, ttl);
    }
    while (!list_empty(&h->jobs)) {
        struct list_link *l = list_first(&h->jobs);
        struct oauth_job *j = LIST_ITEM(l, struct oauth_job, link);
        list_remove(l);
        if (st == OAUTH_VALID) {
            oauth_finish_valid(j, identity, 0);
        } else {
            oauth_finish(j, st, reason);
        }
    }
    OPENSSL_cleanse(identity, sizeof(identity));
}

/* --- the thread -------------------------------------------------------------------------- */

static void oauth_run_job(struct oauth_job *j)
{
    if (j->dom->cfg->introspection_url != NULL) {
        oauth_introspect_run(j);
    } else {
        oauth_jwt_run(j);
    }
}

static void oauth_call_done(struct oauth_call *h)
{
    const char *body = NULL, *err = NULL;
    size_t body_len = 0;
    int code = oauth_http_status(h->req, &body, &body_len, &err);
    if (h->kind == OAUTH_HTTP_JWKS) {
        oauth_jwks_done(h, code, body, body_len, err);
    } else {
        oauth_introspect_done(h, code, body, body_len, err);
    }
    oauth_call_free(h);
}

/* oauth_poll waits for the wake pipe or a request, at most wait_ms, then
 * steps the requests that can go on or passed their deadline. */
static void oauth_poll(long wait_ms)
{
    struct pollfd pfds[OAUTH_MAX_REQUESTS + 1];
    struct oauth_call *calls[OAUTH_MAX_REQUESTS];
    size_t n = 0;
    uint64_t now = oauth_now_ms();
    struct list_link *l, *nx;

    pfds[0].fd = oauth_g.wake[0];
    pfds[0].events = POLLIN;
    pfds[0].revents = 0;
    LIST_FOREACH_SAFE(l, nx, &oauth_g.requests) {
        if (n == OAUTH_MAX_REQUESTS) {
            break;
        }
        struct oauth_call *h = LIST_ITEM(l, struct oauth_call, link);
        uint64_t deadline = oauth_http_poll(h->req, &pfds[n + 1], now);
        if (deadline <= now) {
            wait_ms = 0;
        } else if ((long)(deadline - now) < wait_ms) {
            wait_ms = (long)(deadline - now);
        }
        calls[n++] = h;
    }
    if (poll(pfds, n + 1, (int)wait_ms) < 0 && errno != EINTR) {
        log_msg(LOG_ERR, "oauth: poll failed: %s", strerror(errno));
    }
    if (pfds[0].revents & POLLIN) {
        char buf[256];
        while (read(oauth_g.wake[0], buf, sizeof(buf)) > 0) {
        }
    }
    now = oauth_now_ms();
    for (size_t i = 0; i < n; i++) {
        short ev = pfds[i + 1].revents;
        if (ev & (POLLERR | POLLHUP | POLLNVAL)) {
            ev |= POLLIN | POLLOUT; /* the step finds the error itself */
        }
        if (oauth_http_step(calls[i]->req, ev, now)) {
            oauth_call_done(calls[i]);
        }
    }
    oauth_http_reap(0);
}

static void oauth_wake(void)
{
    char c = 1;
    ssize_t r = write(oauth_g.wake[1], &c, 1);
    (void)r; /* a full pipe wakes the thread all the same */
}

static void oauth_thread(void *arg)
{
    (void)arg;
    for (;;) {
        struct list_link jobs;
        list_init(&jobs);
        uv_mutex_lock(&oauth_g.mu);
        int stop = oauth_g.stop;
        while (!list_empty(&oauth_g.queue)) {
            struct list_link *l = list_first(&oauth_g.queue);
            list_remove(l);
            list_push_back(&jobs, l);
        }
        oauth_g.num_queued = 0;
        oauth_g.pstats.cache_entries = oauth_g.cache_entries;
        uv_mutex_unlock(&oauth_g.mu);
        if (stop) {
            break;
        }
        while (!list_empty(&jobs)) {
            struct list_link *l = list_first(&jobs);
            list_remove(l);
            oauth_run_job(LIST_ITEM(l, struct oauth_job, link));
        }
        uint64_t now = oauth_now_ms();
        long wait_ms = OAUTH_POLL_MAX_MS;
        for (size_t i = 0; i < oauth_g.num_domains; i++) {
            struct oauth_domain *d = &oauth_g.domains[i];
            if (d->cfg->jwks_url == NULL) {
                continue;
            }
            if (d->fetch == NULL && now >= d->next_refresh_ms) {
                oauth_fetch_jwks(d, 0);
                d->next_refresh_ms = now + OAUTH_JWKS_RETRY_MS; /* until it answers */
            }
            if (d->next_refresh_ms > now && (long)(d->next_refresh_ms - now) < wait_ms) {
                wait_ms = (long)(d->next_refresh_ms - now);
            }
        }
        oauth_poll(wait_ms);
    }
    /* stopping: every loop ended, so no job waits for an answer */
    while (!list_empty(&oauth_g.requests)) {
        struct oauth_call *h = LIST_ITEM(list_first(&oauth_g.requests), struct oauth_call, link);
        while (!list_empty(&h->jobs)) {
            struct list_link *l = list_first(&h->jobs);
            list_remove(l);
            oauth_job_free(LIST_ITEM(l, struct oauth_job, link));
        }
        if (h->kind == OAUTH_HTTP_JWKS) {
            h->dom->fetch = NULL;
        }
        oauth_call_free(h);
    }
    oauth_http_reap(1);
}

/* --- the loops' side ------------------------------------------------------------------ */

static void oauth_on_async_close(uv_handle_t *h)
{
    free(h->data);
}

static void oauth_on_async(uv_async_t *a)
{
    struct oauth_loop *ol = a->data;
    struct list_link done;
    size_t n = 0;

    list_init(&done);
    uv_mutex_lock(&oauth_g.mu);
    while (!list_empty(&ol->done)) {
        struct list_link *l = list_first(&ol->done);
        list_remove(l);
        list_push_back(&done, l);
    }
    uv_mutex_unlock(&oauth_g.mu);
    while (!list_empty(&done)) {
        struct list_link *l = list_first(&done);
        struct oauth_job *j = LIST_ITEM(l, struct oauth_job, link);
        list_remove(l);
        uv_mutex_lock(&oauth_g.mu);
        keycount_release(oauth_g.clients, j->client);
        j->client = NULL;
        switch (j->res.status) {
        case OAUTH_VALID:
            ol->stats.valid++;
            break;
        case OAUTH_INVALID:
            ol->stats.invalid++;
            break;
        case OAUTH_UNAVAILABLE:
            ol->stats.unavailable++;
            break;
        }
        uv_mutex_unlock(&oauth_g.mu);
        j->cb(j->ctx, &j->res);
        OPENSSL_cleanse(j->res.identity, sizeof(j->res.identity));
        oauth_job_free(j);
        n++;
    }
    uv_mutex_lock(&oauth_g.mu);
    ol->num_jobs -= n;
    int close_now = ol->closing && ol->num_jobs == 0 && list_linked(&ol->link);
    if (close_now) {
        list_remove(&ol->link);
    }
    uv_mutex_unlock(&oauth_g.mu);
    if (close_now) {
        uv_close((uv_handle_t *)&ol->async, oauth_on_async_close);
    }
}

/* oauth_find_loop returns loop's side (mutex held), or NULL. */
static struct oauth_loop *oauth_find_loop(uv_loop_t *loop)
{
    struct list_link *l, *n;
    LIST_FOREACH_SAFE(l, n, &oauth_g.loops) {
        struct oauth_loop *ol = LIST_ITEM(l, struct oauth_loop, link);
        if (ol->loop == loop) {
            return ol;
        }
    }
    return NULL;
}

int oauth_loop_open(uv_loop_t *loop)
{
    if (!oauth_g.running) {
        return 0;
    }
    struct oauth_loop *ol = calloc(1, sizeof(*ol));
    if (ol == NULL) {
        return UV_ENOMEM;
    }
    uv_mutex_lock(&oauth_g.mu);
    int exists = oauth_find_loop(loop) != NULL;
    uv_mutex_unlock(&oauth_g.mu);
    if (exists) {
        free(ol);
        return UV_EEXIST;
    }
    int r = uv_async_init(loop, &ol->async, oauth_on_async);
    if (r != 0) {
        free(ol);
        return r;
    }
    ol->async.data = ol;
    ol->loop = loop;
    list_init(&ol->done);
    uv_mutex_lock(&oauth_g.mu);
    list_push_back(&oauth_g.loops, &ol->link);
    uv_mutex_unlock(&oauth_g.mu);
    return 0;
}

void oauth_loop_close(uv_loop_t *loop)
{
    if (!oauth_g.running) {
        return;
    }
    uv_mutex_lock(&oauth_g.mu);
    struct oauth_loop *ol = oauth_find_loop(loop);
    int close_now = 0;
    if (ol != NULL && !ol->closing) {
        ol->closing = 1;
        close_now = ol->num_jobs == 0;
        if (close_now) {
            list_remove(&ol->link);
        }
    }
    uv_mutex_unlock(&oauth_g.mu);
    if (close_now) {
        uv_close((uv_handle_t *)&ol->async, oauth_on_async_close);
    }
}

int oauth_validate(uv_loop_t *loop, const char *client_ip, const char *domain, const char *token,
                   size_t token_len, oauth_cb cb, void *ctx)
{
    struct oauth_domain *dom = NULL;
    char ckey[NETADDR_MAX_KEY_LEN];
    unsigned hl = 0;

    if (!oauth_g.running) {
        return UV_EINVAL;
    }
    if (client_ip != NULL &&
        netaddr_key(ckey, sizeof(ckey), client_ip, 32, oauth_g.ipv6_prefix_len) < 0) {
        return UV_EINVAL;
    }
    if (token_len > JWT_MAX_LEN) {
        return UV_E2BIG;
    }
    for (size_t i = 0; i < oauth_g.num_domains; i++) {
        if (strcmp(oauth_g.domains[i].cfg->domain, domain) == 0) {
            dom = &oauth_g.domains[i];
        }
    }
    if (dom == NULL) {
        return UV_ENOENT;
    }
    struct oauth_job *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->token = malloc(token_len + 1)) == NULL) {
        free(j);
        return UV_ENOMEM;
    }
    memcpy(j->token, token, token_len);
    j->token[token_len] = '\0';
    j->token_len = token_len;
    HMAC(EVP_sha256(), oauth_g.hmac_key, sizeof(oauth_g.hmac_key), (const uint8_t *)token,
         token_len, j->key, &hl);
    j->dom = dom;
    j->cb = cb;
    j->ctx = ctx;
    uv_mutex_lock(&oauth_g.mu);
    struct oauth_loop *ol = oauth_find_loop(loop);
    int r = 0;
    if (ol == NULL || ol->closing) {
        r = UV_EINVAL;
    } else if (oauth_g.num_queued >= OAUTH_MAX_QUEUED) {
        r = UV_EBUSY;
    } else if (client_ip != NULL) {
        switch (keycount_acquire(oauth_g.clients, &j->client, ckey, oauth_g.max_per_client)) {
        case KEYCOUNT_OK:
            break;
        case KEYCOUNT_FULL:
            r = UV_EBUSY;
            break;
        case KEYCOUNT_NOMEM:
            r = UV_ENOMEM;
            break;
        }
    }
    if (r != 0) {
        if (r == UV_EBUSY) {
            ol->stats.busy++;
        }
        uv_mutex_unlock(&oauth_g.mu);
        oauth_job_free(j);
        return r;
    }
    j->ol = ol;
    ol->num_jobs++;
    ol->stats.started++;
    oauth_g.num_queued++;
    list_push_back(&oauth_g.queue, &j->link);
    uv_mutex_unlock(&oauth_g.mu);
    oauth_wake();
    return 0;
}

int oauth_token_key(char out[2 * OAUTH_KEY_LEN + 1], const char *token, size_t token_len)
{
    uint8_t key[OAUTH_KEY_LEN];
    unsigned hl = 0;
    if (!oauth_g.running) {
        return UV_EINVAL;
    }
    HMAC(EVP_sha256(), oauth_g.hmac_key, sizeof(oauth_g.hmac_key), (const uint8_t *)token,
         token_len, key, &hl);
    for (size_t i = 0; i < OAUTH_KEY_LEN; i++) {
        snprintf(out + 2 * i, 3, "%02x", key[i]);
    }
    OPENSSL_cleanse(key, sizeof(key));
    return 0;
}

void oauth_stats(uv_loop_t *loop, struct oauth_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!oauth_g.running) {
        return;
    }
    uv_mutex_lock(&oauth_g.mu);
    struct oauth_loop *ol = oauth_find_loop(loop);
    if (ol != NULL) {
        *out = ol->stats;
    }
    uv_mutex_unlock(&oauth_g.mu);
}

void oauth_process_stats(struct oauth_process_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!oauth_g.running) {
        return;
    }
    uv_mutex_lock(&oauth_g.mu);
    *out = oauth_g.pstats;
    uv_mutex_unlock(&oauth_g.mu);
}

int oauth_running(void)
{
    return oauth_g.running;
}

/* --- start and stop -------------------------------------------------------------------- */

static int oauth_read_jwks_file(struct oauth_domain *d)
{
    FILE *f = fopen(d->cfg->jwks_file, "rb");
    char *buf = NULL;
    size_t len = 0;
    int r = -1;
    if (f == NULL) {
        log_msg(LOG_ERR, "oauth: domain %s: cannot open %s: %s", d->cfg->domain, d->cfg->jwks_file,
                strerror(errno));
        return -1;
    }
    buf = malloc(JWKS_MAX_LEN + 1);
    if (buf != NULL) {
        len = fread(buf, 1, JWKS_MAX_LEN + 1, f);
        struct jwt_keyset *ks = NULL;
        r = jwt_keyset_parse(&ks, buf, len);
        if (r == 0 && (d->keys = oauth_keys_new(ks)) == NULL) {
            r = JWT_E_NOMEM;
        }
        if (r != 0) {
            log_msg(LOG_ERR, "oauth: domain %s: %s: %s", d->cfg->domain, d->cfg->jwks_file,
                    jwt_strerror(r));
        }
    }
    fclose(f);
    free(buf);
    return r == 0 ? 0 : -1;
}

static void oauth_free_domains(void)
{
    for (size_t i = 0; i < oauth_g.num_domains; i++) {
        oauth_keys_unref(oauth_g.domains[i].keys);
        SSL_CTX_free(oauth_g.domains[i].tls_ctx);
    }
    free(oauth_g.domains);
    oauth_g.domains = NULL;
    oauth_g.num_domains = 0;
}

/* oauth_signers_start starts one signer thread per CPU (at most
 * OAUTH_MAX_SIGNERS); with none (no thread could start) the oauth thread
 * checks signatures itself. */
static void oauth_signers_start(void)
{
    unsigned want = uv_available_parallelism();
    list_init(&oauth_s.queue);
    oauth_s.stop = 0;
    oauth_s.num_threads = 0;
    if (uv_mutex_init(&oauth_s.mu) != 0) {
        return;
    }
    if (uv_cond_init(&oauth_s.cond) != 0) {
        uv_mutex_destroy(&oauth_s.mu);
        return;
    }
    want = want < 1 ? 1 : want > OAUTH_MAX_SIGNERS ? OAUTH_MAX_SIGNERS : want;
    while (oauth_s.num_threads < want &&
           uv_thread_create(&oauth_s.threads[oauth_s.num_threads], oauth_signer, NULL) == 0) {
        oauth_s.num_threads++;
    }
    if (oauth_s.num_threads == 0) {
        uv_cond_destroy(&oauth_s.cond);
        uv_mutex_destroy(&oauth_s.mu);
    }
}

/* oauth_signers_stop lets the signers finish their queue and joins them. */
static void oauth_signers_stop(void)
{
    if (oauth_s.num_threads == 0) {
        return;
    }
    uv_mutex_lock(&oauth_s.mu);
    oauth_s.stop = 1;
    uv_cond_broadcast(&oauth_s.cond);
    uv_mutex_unlock(&oauth_s.mu);
    for (unsigned i = 0; i < oauth_s.num_threads; i++) {
        uv_thread_join(&oauth_s.threads[i]);
    }
    oauth_s.num_threads = 0;
    uv_cond_destroy(&oauth_s.cond);
    uv_mutex_destroy(&oauth_s.mu);
}

int oauth_init(struct config *cfg)
{
    if (oauth_g.running || !cfg->oauth.enabled) {
        return 0;
    }
    oauth_g.domains = calloc(cfg->oauth.num_domains, sizeof(*oauth_g.domains));
    if (oauth_g.domains == NULL) {
        return UV_ENOMEM;
    }
    oauth_g.num_domains = cfg->oauth.num_domains;
    for (size_t i = 0; i < oauth_g.num_domains; i++) {
        struct oauth_domain *d = &oauth_g.domains[i];
        d->cfg = &cfg->oauth.domains[i];
        list_init(&d->waiting);
        if (d->cfg->jwks_file != NULL && oauth_read_jwks_file(d) != 0) {
            oauth_free_domains();
            return UV_EINVAL;
        }
        const char *url = d->cfg->jwks_url != NULL ? d->cfg->jwks_url : d->cfg->introspection_url;
        if (url != NULL && strncasecmp(url, "https://", 8) == 0) {
            char err[256];
            d->tls_ctx = tls_client_ctx_new(err, sizeof(err), d->cfg->ca_file, 1);
            if (d->tls_ctx == NULL) {
                log_msg(LOG_ERR, "oauth: domain %s: %s", d->cfg->domain, err);
                oauth_free_domains();
                return UV_EINVAL;
            }
        }
    }
    if (pipe(oauth_g.wake) != 0 || fcntl(oauth_g.wake[0], F_SETFL, O_NONBLOCK) != 0 ||
        fcntl(oauth_g.wake[1], F_SETFL, O_NONBLOCK) != 0) {
        oauth_free_domains();
        return UV_EMFILE;
    }
    RAND_bytes(oauth_g.hmac_key, sizeof(oauth_g.hmac_key));
    list_init(&oauth_g.queue);
    list_init(&oauth_g.loops);
    list_init(&oauth_g.requests);
    oauth_g.clients = keycount_new();
    oauth_g.max_per_client = cfg->verify_per_client;
    oauth_g.ipv6_prefix_len = cfg->ipv6_prefix_len;
    if (oauth_g.clients == NULL) {
        close(oauth_g.wake[0]);
        close(oauth_g.wake[1]);
        oauth_free_domains();
        return UV_ENOMEM;
    }
    oauth_g.stop = 0;
    memset(&oauth_g.pstats, 0, sizeof(oauth_g.pstats));
    if (uv_mutex_init(&oauth_g.mu) != 0) {
        close(oauth_g.wake[0]);
        close(oauth_g.wake[1]);
        oauth_free_domains();
        keycount_free(oauth_g.clients);
        oauth_g.clients = NULL;
        return UV_ENOMEM;
    }
    oauth_g.cfg = config_ref(cfg);
    oauth_signers_start();
    if (uv_thread_create(&oauth_g.thread, oauth_thread, NULL) != 0) {
        oauth_signers_stop();
        uv_mutex_destroy(&oauth_g.mu);
        keycount_free(oauth_g.clients);
        oauth_g.clients = NULL;
        close(oauth_g.wake[0]);
        close(oauth_g.wake[1]);
        oauth_free_domains();
        config_unref(&oauth_g.cfg);
        return UV_EAGAIN;
    }
    oauth_g.running = 1;
    log_msg(LOG_INFO, "oauth: %zu domain entries (OAUTHBEARER %s, XOAUTH2 %s)",
            oauth_g.num_domains, cfg->oauth.oauthbearer ? "on" : "off",
            cfg->oauth.xoauth2 ? "on" : "off");
    return 0;
}

void oauth_cleanup(void)
{
    if (!oauth_g.running) {
        return;
    }
    uv_mutex_lock(&oauth_g.mu);
    oauth_g.stop = 1;
    uv_mutex_unlock(&oauth_g.mu);
    oauth_wake();
    uv_thread_join(&oauth_g.thread);
    oauth_signers_stop();
    /* jobs nobody took (every loop closed, so none is left but by a bug) */
    while (!list_empty(&oauth_g.queue)) {
        struct list_link *l = list_first(&oauth_g.queue);
        list_remove(l);
        oauth_job_free(LIST_ITEM(l, struct oauth_job, link));
    }
    for (size_t i = 0; i < oauth_g.num_domains; i++) {
        struct oauth_domain *d = &oauth_g.domains[i];
        while (!list_empty(&d->waiting)) {
            struct list_link *l = list_first(&d->waiting);
            list_remove(l);
            oauth_job_free(LIST_ITEM(l, struct oauth_job, link));
        }
    }
    oauth_cache_clear();
    close(oauth_g.wake[0]);
    close(oauth_g.wake[1]);
    oauth_free_domains();
    uv_mutex_destroy(&oauth_g.mu);
    keycount_free(oauth_g.clients);
    oauth_g.clients = NULL;
    OPENSSL_cleanse(oauth_g.hmac_key, sizeof(oauth_g.hmac_key));
    config_unref(&oauth_g.cfg);
    oauth_g.running = 0;
}
