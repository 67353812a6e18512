#include "proxy/worker.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/list.h"
#include "common/log.h"
#include "proxy/audit.h"
#include "proxy/conncap.h"
#include "proxy/directory.h"
#include "proxy/listener.h"
#include "proxy/oauth.h"
#include "proxy/reload.h"
#include "proxy/snapshot.h"
#include "proxy/metrics.h"
#include "proxy/warm.h"
#include "proxy/sesscache.h"
#include "proxy/sesslimit.h"
#include "proxy/session.h"
#include "proxy/verify.h"

#define WORKER_DRAIN_POLL_MS 100 /* how often a draining worker looks for the end */
#define WORKER_STATS_MS 60000    /* counters are logged this often when they changed */
#define WORKER_STATS_LEN 2048    /* bytes of a stats line */

struct worker {
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t async;            /* wakes the loop for worker_drain */
    uv_timer_t drain_timer;      /* polls for the end of a drain */
    uv_timer_t stats_timer;      /* periodic counters in the log */
    char last_stats[WORKER_STATS_LEN]; /* the counters last logged */
    uv_sem_t ready;              /* posted once listeners are bound (or failed) */
    struct session_env env;
    struct listener **listeners; /* num = cfg->num_listeners */
    atomic_int drain_requested;
    atomic_int drain_keep_preauth; /* an upgrade's drain: pre-auth sessions go on */
    int draining;                /* drain started on the loop */
    int final_sent;              /* logged-in sessions were told BYE */
    uint64_t drain_deadline;     /* loop time (ms) */
    char err[256];               /* start failure */
    int failed;
    struct audit *audit;         /* borrowed, or NULL */
    struct audit_stats audit_stats; /* read when the queue closes */
    struct snapshot *start_snap; /* the snapshot the worker started with: the directory's
                                    Redis clients point into its configuration */
    _Atomic(struct snapshot *) next_snap; /* a reload waiting for the loop (owned), or NULL */
    uv_async_t metrics_async;    /* a scrape asks for worker_publish_metrics */
    int metrics_open;            /* metrics_async was initialised */
};

static void worker_take_snapshot(struct worker *w);

/* worker_publish_metrics copies what the worker keeps in its own structures
 * into its metrics slot; on the worker's loop, when a scrape asks. */
static void worker_publish_metrics(uv_async_t *a)
{
    struct worker *w = a->data;
    const struct session_stats *st = &w->env.stats;
    struct metrics_worker_stats ms;
    memset(&ms, 0, sizeof(ms));
    ms.sessions = w->env.num_sessions;
    ms.kicks = st->kicks;
    ms.bf_delayed = st->bf_delayed;
    ms.bf_blocked = st->bf_blocked;
    ms.warm_retries = st->warm_retries;
    ms.commands_refused = st->commands_refused;
    if (w->env.warm != NULL) {
        struct warm_stats ps;
        warm_stats(w->env.warm, &ps);
        ms.pool_size = ps.size;
        ms.pool_hits = ps.hits;
        ms.pool_misses = ps.misses;
        ms.pool_connects = ps.connects;
        ms.pool_connect_failures = ps.connect_failures;
        ms.pool_lost = ps.lost;
        ms.pool_recycled = ps.recycled;
    }
    if (w->env.cache != NULL) {
        struct sesscache_stats cs;
        sesscache_stats(w->env.cache, &cs);
        ms.cache_size = cs.size;
        ms.cache_parked = cs.parked;
        ms.cache_hits = cs.hits;
        ms.cache_waits = cs.waits;
        ms.cache_misses = cs.misses;
        ms.cache_evicted_ttl = cs.evicted_ttl;
        ms.cache_evicted_limit = cs.evicted_limit;
        ms.cache_evicted_lost = cs.evicted_lost;
        ms.cache_evicted_event = cs.evicted_event;
    }
    if (w->env.limits != NULL) {
        struct sesslimit_stats ls;
        sesslimit_stats(w->env.limits, &ls);
        ms.leases = ls.leases;
        ms.lease_renewals = ls.renewals;
        ms.lease_renew_failures = ls.renew_failures;
    }
    if (w->env.audit != NULL) {
        struct audit_stats as;
        audit_queue_stats(w->env.audit, &as);
        ms.audit_records = as.records;
        ms.audit_dropped = as.dropped;
        ms.audit_blocks = as.blocks;
        ms.audit_queue_bytes = audit_queue_bytes(w->env.audit);
        ms.audit_blocked = w->env.audit_paused != 0;
    } else {
        /* a closed queue: its last counters */
        ms.audit_records = w->audit_stats.records;
        ms.audit_dropped = w->audit_stats.dropped;
        ms.audit_blocks = w->audit_stats.blocks;
    }
    metrics_publish(&ms);
}

static void worker_on_accept(void *ctx, uv_stream_t *server, const struct config_listener *l)
{
    struct worker *w = ctx;
    int r = session_accept(&w->env, server, l);
    if (r != 0) {
        log_msg(LOG_WARNING, "worker %u: session not started: %s", w->env.worker_id,
                uv_strerror(r));
    }
}

static void worker_on_handle_close(uv_handle_t *h)
{
    (void)h;
}

/* worker_log_process_stats appends the counters every worker shares (the
 * connection caps, the password check pool) to line; returns the bytes
 * written. */
static size_t worker_log_process_stats(const struct worker *w, char *line, size_t len)
{
    struct verify_stats vs;
    size_t off = 0;
    int n;
    if (w->env.conncap != NULL) {
        struct conncap_stats cs;
        conncap_stats(w->env.conncap, &cs);
        n = snprintf(line, len,
                     " conn_current=%llu conn_peak=%llu conn_refused_total=%llu "
                     "conn_refused_descriptors=%llu conn_refused_ip=%llu "
                     "conn_refused_prefix=%llu",
                     (unsigned long long)cs.current, (unsigned long long)cs.peak,
                     (unsigned long long)cs.refused[CONNCAP_TOTAL],
                     (unsigned long long)cs.refused[CONNCAP_DESCRIPTORS],
                     (unsigned long long)cs.refused[CONNCAP_PER_IP],
                     (unsigned long long)cs.refused[CONNCAP_PER_PREFIX]);
        if (n < 0 || (size_t)n >= len) {
            return 0;
        }
        off = (size_t)n;
    }
    verify_stats(&vs);
    if (vs.num_threads > 0) {
        n = snprintf(line + off, len - off,
                     " verify_started=%llu verify_busy_queue=%llu verify_busy_client=%llu "
                     "verify_canceled=%llu",
                     (unsigned long long)vs.started, (unsigned long long)vs.busy_queue,
                     (unsigned long long)vs.busy_client, (unsigned long long)vs.canceled);
        if (n > 0 && (size_t)n < len - off) {
            off += (size_t)n;
        }
    }
    return off;
}

/* worker_log_stats writes the worker's counters: always at the end, else
 * only when they changed since the last time. */
static void worker_log_stats(struct worker *w, int final)
{
    const struct session_stats *st = &w->env.stats;
    char line[WORKER_STATS_LEN];
    size_t off = 0;
    off += (size_t)snprintf(line, sizeof(line),
                            "logins_ok=%llu logins_failed=%llu logins_unavailable=%llu "
                            "bruteforce_delayed=%llu bruteforce_blocked=%llu kicks=%llu "
                            "commands_refused=%llu",
                            (unsigned long long)st->logins_ok, (unsigned long long)st->logins_failed,
                            (unsigned long long)st->logins_unavailable,
                            (unsigned long long)st->bf_delayed, (unsigned long long)st->bf_blocked,
                            (unsigned long long)st->kicks,
                            (unsigned long long)st->commands_refused);
    if (w->env.warm != NULL) {
        struct warm_stats ps;
        warm_stats(w->env.warm, &ps);
        off += (size_t)snprintf(line + off, sizeof(line) - off,
                                " pool_size=%llu pool_hits=%llu pool_misses=%llu "
                                "pool_connects=%llu pool_connect_failures=%llu pool_lost=%llu "
                                "pool_recycled=%llu pool_retries=%llu",
                                (unsigned long long)ps.size, (unsigned long long)ps.hits,
                                (unsigned long long)ps.misses, (unsigned long long)ps.connects,
                                (unsigned long long)ps.connect_failures,
                                (unsigned long long)ps.lost, (unsigned long long)ps.recycled,
                                (unsigned long long)st->warm_retries);
    }
    if (w->env.cache != NULL && off < sizeof(line)) {
        struct sesscache_stats cs;
        sesscache_stats(w->env.cache, &cs);
        snprintf(line + off, sizeof(line) - off,
                 " cache_size=%llu cache_parked=%llu cache_hits=%llu cache_waits=%llu "
                 "cache_misses=%llu cache_evicted_ttl=%llu cache_evicted_limit=%llu "
                 "cache_evicted_lost=%llu cache_evicted_event=%llu cache_not_parked=%llu",
                 (unsigned long long)cs.size, (unsigned long long)cs.parked,
                 (unsigned long long)cs.hits, (unsigned long long)cs.waits,
                 (unsigned long long)cs.misses,
                 (unsigned long long)cs.evicted_ttl, (unsigned long long)cs.evicted_limit,
                 (unsigned long long)cs.evicted_lost, (unsigned long long)cs.evicted_event,
                 (unsigned long long)cs.not_parked);
    }
    if (w->env.limits != NULL && strlen(line) < sizeof(line)) {
        struct sesslimit_stats ls;
        size_t o = strlen(line);
        sesslimit_stats(w->env.limits, &ls);
        snprintf(line + o, sizeof(line) - o,
                 " sessions_leased=%llu session_limit_refused_user=%llu "
                 "session_limit_refused_ip=%llu session_limit_redis_errors=%llu "
                 "session_lease_renew_failures=%llu",
                 (unsigned long long)ls.leases, (unsigned long long)ls.refused_user,
                 (unsigned long long)ls.refused_ip, (unsigned long long)ls.redis_errors,
                 (unsigned long long)ls.renew_failures);
    }
    /* the process-wide counters once, in worker 0's line */
    if (w->env.worker_id == 0 && off < sizeof(line)) {
        off += strlen(line + off);
        off += worker_log_process_stats(w, line + off, sizeof(line) - off);
    }
    if (!final && strcmp(line, w->last_stats) == 0) {
        return;
    }
    snprintf(w->last_stats, sizeof(w->last_stats), "%s", line);
    log_msg(LOG_INFO, "worker %u: stats %s", w->env.worker_id, line);
}

static void worker_on_stats_timer(uv_timer_t *t)
{
    worker_log_stats(t->data, 0);
}

static void worker_on_drain_timer(uv_timer_t *t)
{
    struct worker *w = t->data;
    if (w->env.num_sessions == 0) {
        if (w->metrics_open) {
            worker_publish_metrics(&w->metrics_async); /* the last word, while all is there */
        }
        worker_log_stats(w, 1);
        warm_free(w->env.warm);
        w->env.warm = NULL;
        sesscache_free(w->env.cache);
        w->env.cache = NULL;
        sesslimit_free(w->env.limits); /* no session is left, so no lease either */
        w->env.limits = NULL;
        verify_loop_close(&w->loop); /* no session is left, so no check is in flight */
        oauth_loop_close(&w->loop);
        uv_close((uv_handle_t *)&w->stats_timer, worker_on_handle_close);
        dir_close(w->env.dir);
        w->env.dir = NULL;
        if (w->env.audit != NULL) {
            audit_queue_stats(w->env.audit, &w->audit_stats);
        }
        audit_queue_close(w->env.audit);
        w->env.audit = NULL;
        uv_close((uv_handle_t *)&w->drain_timer, worker_on_handle_close);
        uv_close((uv_handle_t *)&w->async, worker_on_handle_close);
        if (w->metrics_open) {
            metrics_worker_unregister(w->env.worker_id);
            uv_close((uv_handle_t *)&w->metrics_async, worker_on_handle_close);
        }
        return;
    }
    if (!w->final_sent && uv_now(&w->loop) >= w->drain_deadline) {
        w->final_sent = 1;
        log_msg(LOG_INFO, "worker %u: drain timeout, closing %zu sessions", w->env.worker_id,
                w->env.num_sessions);
        session_drain_all(&w->env, 1);
    }
}

static void worker_on_async(uv_async_t *a)
{
    struct worker *w = a->data;
    worker_take_snapshot(w);
    if (w->draining || !atomic_load(&w->drain_requested)) {
        return;
    }
    w->draining = 1;
    for (size_t i = 0; i < w->env.cfg->num_listeners; i++) {
        listener_close(w->listeners[i]);
        w->listeners[i] = NULL;
    }
    if (!atomic_load(&w->drain_keep_preauth)) {
        session_drain_all(&w->env, 0);
    }
    w->drain_deadline = uv_now(&w->loop) + w->env.cfg->drain_timeout_ms;
    uv_timer_start(&w->drain_timer, worker_on_drain_timer, 0, WORKER_DRAIN_POLL_MS);
}

static void worker_on_event(void *ctx, enum schema_event_type type, const char *arg)
{
    struct worker *w = ctx;
    log_msg(LOG_INFO, "worker %u: event %s %s", w->env.worker_id, schema_event_name(type), arg);
    session_on_event(&w->env, type, arg);
}

static void worker_on_resync(void *ctx)
{
    struct worker *w = ctx;
    session_on_resync(&w->env);
}

static const struct dir_ops worker_dir_ops = {
    .on_event = worker_on_event,
    .on_resync = worker_on_resync,
};

static void worker_on_audit_resume(void *ctx)
{
    struct worker *w = ctx;
    session_audit_resume(&w->env);
}

static void worker_log_audit_stats(const struct worker *w)
{
    if (w->audit_stats.records > 0 || w->audit_stats.dropped > 0) {
        log_msg(LOG_INFO, "worker %u: audit records=%llu dropped=%llu blocked=%llu",
                w->env.worker_id, (unsigned long long)w->audit_stats.records,
                (unsigned long long)w->audit_stats.dropped,
                (unsigned long long)w->audit_stats.blocks);
    }
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    size_t i;

    (void)metrics_thread_attach(w->env.worker_id); /* before anything counts */
    if (oauth_loop_open(&w->loop) != 0) {
        log_msg(LOG_ERR, "worker %u: cannot take OAuth token checks", w->env.worker_id);
    }
    w->env.dir = dir_new(&w->loop, w->env.cfg, &worker_dir_ops, w);
    if (w->env.dir != NULL && verify_loop_open(&w->loop) != 0) {
        dir_close(w->env.dir);
        w->env.dir = NULL;
    }
    if (w->env.dir != NULL && w->audit != NULL) {
        w->env.audit = audit_queue_new(w->audit, &w->loop, worker_on_audit_resume, w);
        if (w->env.audit == NULL) {
            dir_close(w->env.dir);
            w->env.dir = NULL;
        }
    }
    if (w->env.dir == NULL) {
        verify_loop_close(&w->loop);
        oauth_loop_close(&w->loop);
    }
    if (w->env.dir == NULL) {
        snprintf(w->err, sizeof(w->err), "out of memory");
        w->failed = 1;
        uv_close((uv_handle_t *)&w->async, worker_on_handle_close);
        uv_close((uv_handle_t *)&w->drain_timer, worker_on_handle_close);
        uv_close((uv_handle_t *)&w->stats_timer, worker_on_handle_close);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_sem_post(&w->ready);
        return;
    }

    for (i = 0; i < w->env.cfg->num_listeners; i++) {
        w->listeners[i] = listener_open(w->err, sizeof(w->err), &w->loop,
                                        &w->env.cfg->listeners[i], worker_on_accept, w);
        if (w->listeners[i] == NULL) {
            w->failed = 1;
            break;
        }
    }
    if (w->failed) {
        for (size_t j = 0; j < i; j++) {
            listener_close(w->listeners[j]);
        }
        dir_close(w->env.dir);
        w->env.dir = NULL;
        audit_queue_close(w->env.audit);
        w->env.audit = NULL;
        verify_loop_close(&w->loop);
        oauth_loop_close(&w->loop);
        uv_close((uv_handle_t *)&w->async, worker_on_handle_close);
        uv_close((uv_handle_t *)&w->drain_timer, worker_on_handle_close);
        uv_close((uv_handle_t *)&w->stats_timer, worker_on_handle_close);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_sem_post(&w->ready);
        return;
    }
    w->env.warm = warm_new(&w->loop, w->env.cfg, w->env.backend_ctx);
    w->env.cache = sesscache_new(&w->loop, w->env.cfg);
    w->env.limits = sesslimit_new(&w->loop, w->env.cfg, w->env.worker_id);
    if (w->env.limits == NULL && w->env.cfg->redis.enabled && w->env.cfg->session_lease_ms > 0) {
        log_msg(LOG_ERR, "worker %u: out of memory: sessions are not counted",
                w->env.worker_id);
    }
    uv_timer_start(&w->stats_timer, worker_on_stats_timer, WORKER_STATS_MS, WORKER_STATS_MS);
    if (uv_async_init(&w->loop, &w->metrics_async, worker_publish_metrics) == 0) {
        w->metrics_async.data = w;
        w->metrics_open = 1;
        metrics_worker_register(w->env.worker_id, &w->metrics_async);
    }
    uv_sem_post(&w->ready);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    worker_log_audit_stats(w);
    log_msg(LOG_DEBUG, "worker %u: loop ended", w->env.worker_id);
}

static void worker_free(struct worker *w)
{
    if (uv_loop_close(&w->loop) != 0) {
        log_msg(LOG_ERR, "worker %u: handles left open at exit", w->env.worker_id);
    }
    uv_sem_destroy(&w->ready);
    config_unref(&w->env.cfg);
    struct snapshot *next = atomic_exchange(&w->next_snap, NULL);
    snapshot_unref(&next);
    snapshot_unref(&w->env.snap);
    snapshot_unref(&w->start_snap);
    free(w->listeners);
    free(w);
}

struct worker *worker_start(char *err, size_t err_len, unsigned id, struct snapshot *snap,
                            struct audit *audit, struct conncap *conncap)
{
    struct config *cfg = snap->cfg;
    struct worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    w->listeners = calloc(cfg->num_listeners + 1, sizeof(*w->listeners));
    if (w->listeners == NULL || uv_loop_init(&w->loop) != 0) {
        free(w->listeners);
        free(w);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    uv_sem_init(&w->ready, 0);
    w->env.loop = &w->loop;
    list_init(&w->env.sessions);
    w->env.worker_id = id;
    w->env.cfg = config_ref(cfg);
    w->env.server_ctx = snap->server_ctx;
    w->env.backend_ctx = snap->backend_ctx;
    w->env.snap = snapshot_ref(snap);
    w->start_snap = snapshot_ref(snap);
    atomic_init(&w->next_snap, NULL);
    w->env.conncap = conncap;
    w->audit = audit;
    uv_async_init(&w->loop, &w->async, worker_on_async);
    w->async.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_timer_init(&w->loop, &w->stats_timer);
    w->stats_timer.data = w;

    if (uv_thread_create(&w->thread, worker_main, w) != 0) {
        snprintf(err, err_len, "cannot create worker thread");
        uv_close((uv_handle_t *)&w->async, NULL);
        uv_close((uv_handle_t *)&w->drain_timer, NULL);
        uv_close((uv_handle_t *)&w->stats_timer, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        worker_free(w);
        return NULL;
    }
    uv_sem_wait(&w->ready);
    if (w->failed) {
        snprintf(err, err_len, "%s", w->err);
        uv_thread_join(&w->thread);
        worker_free(w);
        return NULL;
    }
    return w;
}

void worker_drain(struct worker *w)
{
    atomic_store(&w->drain_requested, 1);
    uv_async_send(&w->async);
}

void worker_drain_upgrade(struct worker *w)
{
    atomic_store(&w->drain_keep_preauth, 1);
    worker_drain(w);
}

size_t worker_listener_fds(const struct worker *w, int *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < w->env.cfg->num_listeners && n < cap; i++) {
        n += listener_fds(w->listeners[i], out + n, cap - n);
    }
    return n;
}

void worker_join(struct worker *w)
{
    uv_thread_join(&w->thread);
    worker_free(w);
}

/* --- reload ---------------------------------------------------------------------- */

void worker_reload(struct worker *w, struct snapshot *snap)
{
    struct snapshot *old = atomic_exchange(&w->next_snap, snapshot_ref(snap));
    snapshot_unref(&old); /* a reload the loop had not taken yet: the newer wins */
    uv_async_send(&w->async);
}

/* worker_reload_listeners makes the worker's listeners those of cfg: the
 * same ones keep their sockets (and see cfg from now on), removed ones
 * close, added ones are bound.  A listener that cannot be bound is logged
 * and counted; its slot stays empty. */
static void worker_reload_listeners(struct worker *w, const struct config *cfg)
{
    const struct config *old = w->env.cfg;
    struct listener **next = calloc(cfg->num_listeners + 1, sizeof(*next));
    if (next == NULL) {
        log_msg(LOG_ERR, "worker %u: reload: out of memory, listeners unchanged",
                w->env.worker_id);
        return;
    }
    for (size_t j = 0; j < cfg->num_listeners; j++) {
        const struct config_listener *nl = &cfg->listeners[j];
        for (size_t i = 0; i < old->num_listeners; i++) {
            if (w->listeners[i] != NULL && listener_config_same(&old->listeners[i], nl)) {
                next[j] = w->listeners[i];
                w->listeners[i] = NULL;
                listener_set_config(next[j], nl);
                break;
            }
        }
        if (next[j] == NULL) {
            char err[256];
            next[j] = listener_open(err, sizeof(err), &w->loop, nl, worker_on_accept, w);
            if (next[j] == NULL) {
                log_msg(LOG_ERR, "worker %u: reload: %s", w->env.worker_id, err);
                reload_listener_failed();
            } else if (w->env.worker_id == 0) {
                log_msg(LOG_INFO, "listening on %s port %u (%s)", nl->address,
                        (unsigned)nl->port,
                        nl->tls == CONFIG_LISTENER_IMPLICIT ? "implicit TLS" : "STARTTLS");
            }
        }
    }
    for (size_t i = 0; i < old->num_listeners; i++) {
        if (w->listeners[i] != NULL) {
            if (w->env.worker_id == 0) {
                log_msg(LOG_INFO, "no longer listening on %s port %u", old->listeners[i].address,
                        (unsigned)old->listeners[i].port);
            }
            listener_close(w->listeners[i]);
        }
    }
    free(w->listeners);
    w->listeners = next;
}

/* worker_take_snapshot puts a waiting reload in force on the loop: new
 * sessions get it, running ones keep theirs.  The warm pool is rebuilt from
 * it, keeping the connections of backends whose settings did not change;
 * the session cache is kept unless its settings changed. */
static void worker_take_snapshot(struct worker *w)
{
    struct snapshot *snap = atomic_exchange(&w->next_snap, NULL);
    if (snap == NULL) {
        return;
    }
    if (w->draining || atomic_load(&w->drain_requested)) {
        snapshot_unref(&snap);
        return;
    }
    worker_reload_listeners(w, snap->cfg);
    struct warm *old_warm = w->env.warm;
    const struct config_session_cache *oc = &w->env.cfg->session_cache;
    const struct config_session_cache *nc = &snap->cfg->session_cache;
    /* parked connections are keyed by backend name, host and credentials, so
       new routes never reach a wrong one: the cache stays unless its own
       settings changed */
    int new_cache = oc->enabled != nc->enabled || oc->ttl_ms != nc->ttl_ms ||
                    oc->max_per_user != nc->max_per_user || oc->max_total != nc->max_total;
    if (new_cache) {
        sesscache_free(w->env.cache);
        w->env.cache = NULL;
    }
    config_unref(&w->env.cfg);
    w->env.cfg = config_ref(snap->cfg);
    w->env.server_ctx = snap->server_ctx;
    w->env.backend_ctx = snap->backend_ctx;
    dir_set_config(w->env.dir, snap->cfg);
    w->env.warm = warm_renew(old_warm, &w->loop, snap->cfg, snap->backend_ctx);
    if (new_cache) {
        w->env.cache = sesscache_new(&w->loop, snap->cfg);
    }
    snapshot_unref(&w->env.snap);
    w->env.snap = snap; /* our reference now */
    log_msg(LOG_DEBUG, "worker %u: generation %llu in force", w->env.worker_id,
            (unsigned long long)snap->generation);
}
