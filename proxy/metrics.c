#include "proxy/metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include <openssl/asn1.h>

#include "common/log.h"

#define METRICS_MAX_STEPS 8           /* login steps with a histogram */
#define METRICS_NAME_LEN 64           /* bytes of a backend or certificate name we keep */
#define METRICS_HOST_LEN 256          /* bytes of a host name we keep */
#define METRICS_REFRESH_POLL_MS 2     /* how often a scrape looks for the workers' answers */
#define METRICS_SAMPLE_NAME_LEN 160   /* bytes of a sample's name with its suffix */

typedef _Atomic uint64_t metrics_counter_t;

struct metrics_hist {
    metrics_counter_t counts[METRICS_NUM_BUCKETS + 1]; /* per bucket, not cumulative */
    metrics_counter_t sum_ns;
};

#define METRICS_PUB_N (sizeof(struct metrics_worker_stats) / sizeof(uint64_t))
_Static_assert(sizeof(struct metrics_worker_stats) % sizeof(uint64_t) == 0,
               "worker stats are whole uint64_t");

/* The commands relayed with a label of their own (sorted for bsearch). */
static const char *const metrics_commands[] = {
    "APPEND",     "CAPABILITY",  "CHECK",        "CLOSE",     "COPY",      "CREATE",
    "DELETE",     "ENABLE",      "EXAMINE",      "EXPUNGE",   "FETCH",     "GETACL",
    "GETMETADATA", "GETQUOTA",   "GETQUOTAROOT", "ID",        "IDLE",      "LIST",
    "LOGOUT",     "LSUB",        "MOVE",         "MYRIGHTS",  "NAMESPACE", "NOOP",
    "RENAME",     "SEARCH",      "SELECT",       "SETACL",    "SETMETADATA", "SETQUOTA",
    "SORT",       "STATUS",      "STORE",        "SUBSCRIBE", "THREAD",    "UNSELECT",
    "UNSUBSCRIBE",
};
#define METRICS_NUM_COMMANDS (sizeof(metrics_commands) / sizeof(metrics_commands[0]))

/* One thread's counters: written by that thread only (see metrics.h). */
struct metrics_slot {
    metrics_counter_t accepted[METRICS_MAX_LISTENERS];
    metrics_counter_t closed[METRICS_MAX_LISTENERS];
    metrics_counter_t tls[METRICS_TLS_NUM];
    metrics_counter_t logins[METRICS_LOGIN_NUM][METRICS_MECH_NUM];
    struct metrics_hist login_hist[METRICS_LOGIN_NUM];
    metrics_counter_t refused[METRICS_MAX_NAMED];
    struct metrics_hist steps[METRICS_MAX_STEPS];
    struct metrics_hist be_connect[METRICS_MAX_HOSTS + 1];
    struct metrics_hist be_login[METRICS_MAX_HOSTS + 1];
    metrics_counter_t be_fail[METRICS_MAX_HOSTS + 1][METRICS_BE_NUM];
    metrics_counter_t redis_present[2];
    metrics_counter_t redis_up[2];
    struct metrics_hist redis_cmd;
    metrics_counter_t redis_errors;
    metrics_counter_t bytes[2];               /* [1]: client to backend */
    metrics_counter_t commands[2][METRICS_NUM_COMMANDS + 1]; /* [uid][name], last "other" */
    metrics_counter_t pub[METRICS_PUB_N];     /* struct metrics_worker_stats, published */
    metrics_counter_t published;              /* 1 once the worker published */
    _Atomic uint64_t gen;                     /* bumped by every publish */
};

struct metrics_host {
    char backend[METRICS_NAME_LEN];
    char host[METRICS_HOST_LEN];
    uint16_t port;
    _Atomic int up;                           /* -1 unknown, 0 down, 1 up */
};

struct metrics_cert {
    char name[METRICS_NAME_LEN];
    _Atomic int64_t not_after;
};

static _Atomic(struct metrics_slot *) metrics_slots[METRICS_MAX_SLOTS];
static _Thread_local struct metrics_slot *metrics_self;
static uv_mutex_t metrics_mu;                 /* slot creation, wake handles, new hosts, certs */
static uv_async_t *metrics_wake[METRICS_MAX_SLOTS]; /* under metrics_mu */
static int metrics_inited;

static struct metrics_host metrics_hosts[METRICS_MAX_HOSTS];
static _Atomic unsigned metrics_num_hosts;    /* entries complete below this */
static _Atomic int metrics_other_up = -1;

static _Atomic(const char *) metrics_refusal_names[METRICS_MAX_NAMED];
static _Atomic(const char *) metrics_step_names[METRICS_MAX_STEPS];

static metrics_counter_t metrics_sink_written[METRICS_SINK_NUM];
static metrics_counter_t metrics_sink_dropped[METRICS_SINK_NUM];
static _Atomic int metrics_sink_up[METRICS_SINK_NUM] = {-1, -1, -1, -1};

static metrics_counter_t metrics_reloads[2];  /* [ok] */
static _Atomic uint64_t metrics_reload_last_ms; /* wall clock of the last reload */
static _Atomic int metrics_reload_last_ok = -1;
static _Atomic uint64_t metrics_reload_last_us; /* its duration */

static struct metrics_cert metrics_certs[METRICS_MAX_CERTS];
static _Atomic unsigned metrics_num_certs;

static double metrics_start_s;                /* wall clock at metrics_init */

static const double metrics_bounds_s[METRICS_NUM_BUCKETS] = METRICS_BUCKETS_S;

static const char *const metrics_tls_names[] = {
    "ok", "eof", "timeout", "version", "cipher", "not_tls", "alert", "protocol",
};
_Static_assert(sizeof(metrics_tls_names) / sizeof(metrics_tls_names[0]) == METRICS_TLS_NUM,
               "a name per TLS result");
static const char *const metrics_login_names[] = {"ok", "failed", "unavailable"};
_Static_assert(sizeof(metrics_login_names) / sizeof(metrics_login_names[0]) == METRICS_LOGIN_NUM,
               "a name per login result");
static const char *const metrics_mech_names[] = {"login", "plain", "oauthbearer", "xoauth2"};
_Static_assert(sizeof(metrics_mech_names) / sizeof(metrics_mech_names[0]) == METRICS_MECH_NUM,
               "a name per mechanism");
static const char *const metrics_be_names[] = {
    "resolve", "connect", "tls", "greeting", "login", "refused", "lost",
};
_Static_assert(sizeof(metrics_be_names) / sizeof(metrics_be_names[0]) == METRICS_BE_NUM,
               "a name per backend phase");
static const char *const metrics_sink_names[] = {"file", "stdout", "syslog", "redis"};
_Static_assert(sizeof(metrics_sink_names) / sizeof(metrics_sink_names[0]) == METRICS_SINK_NUM,
               "a name per sink");

/* metrics_bump adds n to a counter of the calling thread's slot: one writer,
 * so a relaxed load and store suffice (no read-modify-write instruction). */
static inline void metrics_bump(metrics_counter_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t metrics_get(metrics_counter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

unsigned metrics_bucket_of(uint64_t ns)
{
    double s = (double)ns / 1e9;
    for (unsigned i = 0; i < METRICS_NUM_BUCKETS; i++) {
        if (s <= metrics_bounds_s[i]) {
            return i;
        }
    }
    return METRICS_NUM_BUCKETS;
}

static void metrics_observe(struct metrics_hist *h, uint64_t ns)
{
    metrics_bump(&h->counts[metrics_bucket_of(ns)], 1);
    metrics_bump(&h->sum_ns, ns);
}

/* --- lifetime -------------------------------------------------------------------- */

void metrics_init(void)
{
    if (metrics_inited) {
        return;
    }
    uv_mutex_init(&metrics_mu);
    metrics_inited = 1;
    for (unsigned i = 0; i < METRICS_MAX_HOSTS; i++) {
        atomic_init(&metrics_hosts[i].up, -1);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    metrics_start_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void metrics_cleanup(void)
{
    if (!metrics_inited) {
        return;
    }
    for (unsigned i = 0; i < METRICS_MAX_SLOTS; i++) {
        free(atomic_exchange(&metrics_slots[i], NULL));
        metrics_wake[i] = NULL;
    }
    metrics_self = NULL;
    atomic_store(&metrics_num_hosts, 0);
    atomic_store(&metrics_num_certs, 0);
    uv_mutex_destroy(&metrics_mu);
    metrics_inited = 0;
}

int metrics_thread_attach(unsigned slot)
{
    if (!metrics_inited || slot >= METRICS_MAX_SLOTS) {
        return -1;
    }
    uv_mutex_lock(&metrics_mu);
    struct metrics_slot *m = atomic_load(&metrics_slots[slot]);
    if (m == NULL) {
        m = calloc(1, sizeof(*m));
        if (m != NULL) {
            atomic_store_explicit(&metrics_slots[slot], m, memory_order_release);
        }
    }
    uv_mutex_unlock(&metrics_mu);
    metrics_self = m;
    return m != NULL ? 0 : -1;
}

void metrics_worker_register(unsigned slot, uv_async_t *a)
{
    if (!metrics_inited || slot >= METRICS_MAX_SLOTS) {
        return;
    }
    uv_mutex_lock(&metrics_mu);
    metrics_wake[slot] = a;
    uv_mutex_unlock(&metrics_mu);
}

void metrics_worker_unregister(unsigned slot)
{
    metrics_worker_register(slot, NULL);
}

/* --- hooks ------------------------------------------------------------------------ */

void metrics_publish(const struct metrics_worker_stats *st)
{
    struct metrics_slot *m = metrics_self;
    uint64_t v[METRICS_PUB_N];
    if (m == NULL) {
        return;
    }
    memcpy(v, st, sizeof(v));
    for (size_t i = 0; i < METRICS_PUB_N; i++) {
        atomic_store_explicit(&m->pub[i], v[i], memory_order_relaxed);
    }
    atomic_store_explicit(&m->published, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->gen, 1, memory_order_release);
}

void metrics_listener_accepted(size_t listener)
{
    if (metrics_self != NULL && listener < METRICS_MAX_LISTENERS) {
        metrics_bump(&metrics_self->accepted[listener], 1);
    }
}

void metrics_listener_closed(size_t listener)
{
    if (metrics_self != NULL && listener < METRICS_MAX_LISTENERS) {
        metrics_bump(&metrics_self->closed[listener], 1);
    }
}

void metrics_tls_handshake(enum metrics_tls_result r)
{
    if (metrics_self != NULL && (unsigned)r < METRICS_TLS_NUM) {
        metrics_bump(&metrics_self->tls[r], 1);
    }
}

/* metrics_has: a case-insensitive search of needle in hay. */
static int metrics_has(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay != '\0'; hay++) {
        if (strncasecmp(hay, needle, n) == 0) {
            return 1;
        }
    }
    return 0;
}

enum metrics_tls_result metrics_tls_reason(const char *error)
{
    if (error == NULL) {
        return METRICS_TLS_PROTOCOL;
    }
    if (metrics_has(error, "HTTP_REQUEST") || metrics_has(error, "HTTPS_PROXY_REQUEST") ||
        metrics_has(error, "WRONG_VERSION_NUMBER") || metrics_has(error, "RECORD_TOO_LARGE") ||
        metrics_has(error, "PACKET_LENGTH_TOO_LONG") || metrics_has(error, "UNEXPECTED_RECORD")) {
        return METRICS_TLS_NOT_TLS;
    }
    if (metrics_has(error, "UNSUPPORTED_PROTOCOL") || metrics_has(error, "VERSION_TOO_LOW") ||
        metrics_has(error, "TLSV1_ALERT_PROTOCOL_VERSION")) {
        return METRICS_TLS_VERSION;
    }
    if (metrics_has(error, "NO_SHARED_CIPHER") || metrics_has(error, "NO_SHARED_GROUP") ||
        metrics_has(error, "NO_COMMON_SIGNATURE_ALGORITHMS")) {
        return METRICS_TLS_CIPHER;
    }
    if (metrics_has(error, "ALERT")) {
        return METRICS_TLS_ALERT;
    }
    return METRICS_TLS_PROTOCOL;
}

void metrics_login_done(enum metrics_login_result r, enum metrics_mech mech, uint64_t ns)
{
    if (metrics_self == NULL || (unsigned)r >= METRICS_LOGIN_NUM ||
        (unsigned)mech >= METRICS_MECH_NUM) {
        return;
    }
    metrics_bump(&metrics_self->logins[r][mech], 1);
    metrics_observe(&metrics_self->login_hist[r], ns);
}

void metrics_login_refused(unsigned idx, const char *name)
{
    if (metrics_self == NULL || idx >= METRICS_MAX_NAMED) {
        return;
    }
    if (atomic_load_explicit(&metrics_refusal_names[idx], memory_order_acquire) == NULL) {
        atomic_store_explicit(&metrics_refusal_names[idx], name, memory_order_release);
    }
    metrics_bump(&metrics_self->refused[idx], 1);
}

void metrics_login_step(unsigned idx, const char *name, uint64_t ns)
{
    if (metrics_self == NULL || idx >= METRICS_MAX_STEPS) {
        return;
    }
    if (atomic_load_explicit(&metrics_step_names[idx], memory_order_acquire) == NULL) {
        atomic_store_explicit(&metrics_step_names[idx], name, memory_order_release);
    }
    metrics_observe(&metrics_self->steps[idx], ns);
}

int metrics_backend_host(const char *backend, const char *host, uint16_t port)
{
    unsigned n = atomic_load_explicit(&metrics_num_hosts, memory_order_acquire);
    if (!metrics_inited || backend == NULL || host == NULL) {
        return METRICS_MAX_HOSTS;
    }
    for (unsigned i = 0; i < n; i++) {
        const struct metrics_host *h = &metrics_hosts[i];
        if (h->port == port && strcmp(h->host, host) == 0 && strcmp(h->backend, backend) == 0) {
            return (int)i;
        }
    }
    /* first sight of this host: once per host and process */
    uv_mutex_lock(&metrics_mu);
    n = atomic_load(&metrics_num_hosts);
    int id = METRICS_MAX_HOSTS;
    for (unsigned i = 0; i < n; i++) {
        const struct metrics_host *h = &metrics_hosts[i];
        if (h->port == port && strcmp(h->host, host) == 0 && strcmp(h->backend, backend) == 0) {
            id = (int)i;
            break;
        }
    }
    if (id == METRICS_MAX_HOSTS && n < METRICS_MAX_HOSTS) {
        struct metrics_host *h = &metrics_hosts[n];
        snprintf(h->backend, sizeof(h->backend), "%s", backend);
        snprintf(h->host, sizeof(h->host), "%s", host);
        h->port = port;
        atomic_store(&h->up, -1);
        atomic_store_explicit(&metrics_num_hosts, n + 1, memory_order_release);
        id = (int)n;
    }
    uv_mutex_unlock(&metrics_mu);
    return id;
}

static int metrics_host_ok(int id)
{
    return id >= 0 && id <= METRICS_MAX_HOSTS;
}

void metrics_backend_set_up(int id, int up)
{
    if (id >= 0 && id < METRICS_MAX_HOSTS) {
        atomic_store_explicit(&metrics_hosts[id].up, up ? 1 : 0, memory_order_relaxed);
    } else if (id == METRICS_MAX_HOSTS) {
        atomic_store_explicit(&metrics_other_up, up ? 1 : 0, memory_order_relaxed);
    }
}

void metrics_backend_connected(int id, uint64_t ns)
{
    if (!metrics_host_ok(id)) {
        return;
    }
    metrics_backend_set_up(id, 1);
    if (metrics_self != NULL) {
        metrics_observe(&metrics_self->be_connect[id], ns);
    }
}

void metrics_backend_logged_in(int id, uint64_t ns)
{
    if (metrics_self != NULL && metrics_host_ok(id)) {
        metrics_observe(&metrics_self->be_login[id], ns);
    }
}

void metrics_backend_failed(int id, enum metrics_backend_phase p)
{
    if (!metrics_host_ok(id) || (unsigned)p >= METRICS_BE_NUM) {
        return;
    }
    if (p <= METRICS_BE_GREETING) {
        metrics_backend_set_up(id, 0);
    }
    if (metrics_self != NULL) {
        metrics_bump(&metrics_self->be_fail[id][p], 1);
    }
}

void metrics_redis_client(int events, int present)
{
    if (metrics_self != NULL) {
        atomic_store_explicit(&metrics_self->redis_present[events != 0], present != 0,
                              memory_order_relaxed);
        if (!present) {
            atomic_store_explicit(&metrics_self->redis_up[events != 0], 0, memory_order_relaxed);
        }
    }
}

void metrics_redis_up(int events, int up)
{
    if (metrics_self != NULL) {
        atomic_store_explicit(&metrics_self->redis_up[events != 0], up != 0, memory_order_relaxed);
    }
}

void metrics_redis_command(uint64_t ns, int ok)
{
    if (metrics_self == NULL) {
        return;
    }
    metrics_observe(&metrics_self->redis_cmd, ns);
    if (!ok) {
        metrics_bump(&metrics_self->redis_errors, 1);
    }
}

void metrics_relay_bytes(int to_backend, uint64_t n)
{
    if (metrics_self != NULL) {
        metrics_bump(&metrics_self->bytes[to_backend != 0], n);
    }
}

static int metrics_cmp_name(const void *key, const void *elem)
{
    return strcmp(key, *(const char *const *)elem);
}

void metrics_relay_command(const char *name, int uid)
{
    if (metrics_self == NULL || name == NULL) {
        return;
    }
    const char *const *hit = bsearch(name, metrics_commands, METRICS_NUM_COMMANDS,
                                     sizeof(metrics_commands[0]), metrics_cmp_name);
    size_t idx = hit != NULL ? (size_t)(hit - metrics_commands) : METRICS_NUM_COMMANDS;
    metrics_bump(&metrics_self->commands[uid != 0][idx], 1);
}

/* --- process-wide ----------------------------------------------------------------- */

void metrics_audit_sink(enum metrics_audit_sink sink, uint64_t written, uint64_t dropped, int up)
{
    if ((unsigned)sink >= METRICS_SINK_NUM) {
        return;
    }
    atomic_fetch_add_explicit(&metrics_sink_written[sink], written, memory_order_relaxed);
    atomic_fetch_add_explicit(&metrics_sink_dropped[sink], dropped, memory_order_relaxed);
    atomic_store_explicit(&metrics_sink_up[sink], up != 0, memory_order_relaxed);
}

void metrics_note_reload(bool ok, double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_fetch_add(&metrics_reloads[ok ? 1 : 0], 1);
    atomic_store(&metrics_reload_last_ms, (uint64_t)ts.tv_sec * 1000u +
                                              (uint64_t)ts.tv_nsec / 1000000u);
    atomic_store(&metrics_reload_last_ok, ok ? 1 : 0);
    atomic_store(&metrics_reload_last_us, seconds > 0 ? (uint64_t)(seconds * 1e6) : 0);
}

void metrics_set_certificate(const char *name, int64_t not_after)
{
    if (!metrics_inited || name == NULL) {
        return;
    }
    uv_mutex_lock(&metrics_mu);
    unsigned n = atomic_load(&metrics_num_certs);
    unsigned i;
    for (i = 0; i < n; i++) {
        if (strcmp(metrics_certs[i].name, name) == 0) {
            break;
        }
    }
    if (i == n && n < METRICS_MAX_CERTS) {
        snprintf(metrics_certs[n].name, sizeof(metrics_certs[n].name), "%s", name);
        atomic_store(&metrics_certs[n].not_after, not_after);
        atomic_store(&metrics_num_certs, n + 1);
    } else if (i < n) {
        atomic_store(&metrics_certs[i].not_after, not_after);
    }
    uv_mutex_unlock(&metrics_mu);
}

void metrics_clear_certificates(void)
{
    if (!metrics_inited) {
        return;
    }
    uv_mutex_lock(&metrics_mu);
    atomic_store(&metrics_num_certs, 0);
    uv_mutex_unlock(&metrics_mu);
}

/* --- reading ---------------------------------------------------------------------- */

void metrics_refresh(unsigned wait_ms)
{
    uint64_t before[METRICS_MAX_SLOTS];
    int asked[METRICS_MAX_SLOTS];
    unsigned num_asked = 0;
    if (!metrics_inited) {
        return;
    }
    uv_mutex_lock(&metrics_mu);
    for (unsigned i = 0; i < METRICS_MAX_SLOTS; i++) {
        struct metrics_slot *m = atomic_load(&metrics_slots[i]);
        asked[i] = 0;
        if (m != NULL && metrics_wake[i] != NULL) {
            before[i] = atomic_load_explicit(&m->gen, memory_order_acquire);
            /* the worker unregisters under the mutex before closing it */
            if (uv_async_send(metrics_wake[i]) == 0) {
                asked[i] = 1;
                num_asked++;
            }
        }
    }
    uv_mutex_unlock(&metrics_mu);
    for (unsigned waited = 0; num_asked > 0 && waited < wait_ms;
         waited += METRICS_REFRESH_POLL_MS) {
        unsigned left = 0;
        for (unsigned i = 0; i < METRICS_MAX_SLOTS; i++) {
            if (asked[i] && atomic_load_explicit(&atomic_load(&metrics_slots[i])->gen,
                                                 memory_order_acquire) == before[i]) {
                left++;
            }
        }
        if (left == 0) {
            return;
        }
        uv_sleep(METRICS_REFRESH_POLL_MS);
    }
}

int metrics_redis_ready(void)
{
    unsigned present = 0, up = 0;
    for (unsigned i = 0; i < METRICS_MAX_SLOTS; i++) {
        struct metrics_slot *m = atomic_load_explicit(&metrics_slots[i], memory_order_acquire);
        if (m != NULL && metrics_get(&m->redis_present[0])) {
            present++;
            up += metrics_get(&m->redis_up[0]) != 0;
        }
    }
    if (present == 0) {
        return -1;
    }
    return up == present;
}

void metrics_buf_free(struct metrics_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap == 0 ? 16384 : b->cap;
        while (cap - b->len <= (size_t)n) {
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

void metrics_family(struct metrics_buf *b, const char *name, const char *type, const char *help)
{
    metrics_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* metrics_labels writes {a="x",b="y"} with the values escaped as the text
 * format asks (backslash, double quote, line feed); extra (NULL or a pair)
 * goes last. */
static void metrics_labels(struct metrics_buf *b, const char *const *labels, const char *extra_name,
                           const char *extra_value)
{
    int first = 1;
    if ((labels == NULL || labels[0] == NULL) && extra_name == NULL) {
        return;
    }
    metrics_buf_printf(b, "{");
    for (size_t i = 0; labels != NULL && labels[i] != NULL; i += 2) {
        const char *v = labels[i + 1] != NULL ? labels[i + 1] : "";
        metrics_buf_printf(b, "%s%s=\"", first ? "" : ",", labels[i]);
        first = 0;
        for (const char *c = v; *c != '\0'; c++) {
            if (*c == '\\') {
                metrics_buf_printf(b, "\\\\");
            } else if (*c == '"') {
                metrics_buf_printf(b, "\\\"");
            } else if (*c == '\n') {
                metrics_buf_printf(b, "\\n");
            } else {
                metrics_buf_printf(b, "%c", *c);
            }
        }
        metrics_buf_printf(b, "\"");
    }
    if (extra_name != NULL) {
        metrics_buf_printf(b, "%s%s=\"%s\"", first ? "" : ",", extra_name, extra_value);
    }
    metrics_buf_printf(b, "}");
}

/* metrics_value writes a sample value: integers without a fraction. */
static void metrics_value(struct metrics_buf *b, double v)
{
    if (isnan(v)) {
        metrics_buf_printf(b, " NaN\n");
    } else if (isinf(v)) {
        metrics_buf_printf(b, " %s\n", v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        metrics_buf_printf(b, " %.0f\n", v);
    } else {
        metrics_buf_printf(b, " %.9g\n", v);
    }
}

void metrics_sample(struct metrics_buf *b, const char *name, const char *const *labels,
                    double value)
{
    metrics_buf_printf(b, "%s", name);
    metrics_labels(b, labels, NULL, NULL);
    metrics_value(b, value);
}

void metrics_histogram(struct metrics_buf *b, const char *name, const char *const *labels,
                       const uint64_t *counts, uint64_t sum_ns)
{
    char sample[METRICS_SAMPLE_NAME_LEN];
    char le[32];
    uint64_t cum = 0;
    snprintf(sample, sizeof(sample), "%s_bucket", name);
    for (unsigned i = 0; i <= METRICS_NUM_BUCKETS; i++) {
        cum += counts[i];
        if (i < METRICS_NUM_BUCKETS) {
            snprintf(le, sizeof(le), "%g", metrics_bounds_s[i]);
        } else {
            snprintf(le, sizeof(le), "+Inf");
        }
        metrics_buf_printf(b, "%s", sample);
        metrics_labels(b, labels, "le", le);
        metrics_value(b, (double)cum);
    }
    snprintf(sample, sizeof(sample), "%s_sum", name);
    metrics_sample(b, sample, labels, (double)sum_ns / 1e9);
    snprintf(sample, sizeof(sample), "%s_count", name);
    metrics_sample(b, sample, labels, (double)cum);
}

/* --- rendering -------------------------------------------------------------------- */

/* METRICS_SUM(field): a counter of every slot added up. */
#define METRICS_SUM(field)                                                                \
    __extension__({                                                                       \
        uint64_t sum_ = 0;                                                                \
        for (unsigned i_ = 0; i_ < METRICS_MAX_SLOTS; i_++) {                             \
            struct metrics_slot *m_ =                                                     \
                atomic_load_explicit(&metrics_slots[i_], memory_order_acquire);           \
            if (m_ != NULL) {                                                             \
                sum_ += metrics_get(&m_->field);                                          \
            }                                                                             \
        }                                                                                 \
        sum_;                                                                             \
    })

/* METRICS_HIST_SUM(counts, sum, field): a histogram of every slot added up. */
#define METRICS_HIST_SUM(counts, sum, field)                                              \
    do {                                                                                  \
        memset((counts), 0, sizeof(uint64_t) * (METRICS_NUM_BUCKETS + 1));                \
        *(sum) = 0;                                                                       \
        for (unsigned i_ = 0; i_ < METRICS_MAX_SLOTS; i_++) {                             \
            struct metrics_slot *m_ =                                                     \
                atomic_load_explicit(&metrics_slots[i_], memory_order_acquire);           \
            if (m_ == NULL) {                                                             \
                continue;                                                                 \
            }                                                                             \
            for (unsigned b_ = 0; b_ <= METRICS_NUM_BUCKETS; b_++) {                      \
                (counts)[b_] += metrics_get(&m_->field.counts[b_]);                       \
            }                                                                             \
            *(sum) += metrics_get(&m_->field.sum_ns);                                     \
        }                                                                                 \
    } while (0)

#define METRICS_PUB(field) (offsetof(struct metrics_worker_stats, field) / sizeof(uint64_t))

static uint64_t metrics_pub_sum(size_t idx)
{
    return METRICS_SUM(pub[idx]);
}

static void metrics_render_pub(struct metrics_buf *b, const char *name, const char *type,
                               const char *help, size_t idx)
{
    metrics_family(b, name, type, help);
    metrics_sample(b, name, NULL, (double)metrics_pub_sum(idx));
}

static void metrics_render_listeners(struct metrics_buf *b, const struct config *cfg)
{
    char addr[96];
    size_t n = cfg != NULL ? cfg->num_listeners : 0;
    if (n > METRICS_MAX_LISTENERS) {
        n = METRICS_MAX_LISTENERS;
    }
    metrics_family(b, "imapmux_connections_accepted_total", "counter",
                   "Client connections accepted, per listener.");
    for (size_t i = 0; i < n; i++) {
        const struct config_listener *l = &cfg->listeners[i];
        snprintf(addr, sizeof(addr), strchr(l->address, ':') ? "[%s]:%u" : "%s:%u", l->address,
                 (unsigned)l->port);
        const char *labels[] = {"listener", addr, NULL};
        metrics_sample(b, "imapmux_connections_accepted_total", labels,
                       (double)METRICS_SUM(accepted[i]));
    }
    metrics_family(b, "imapmux_connections_open", "gauge",
                   "Client connections open now, per listener.");
    for (size_t i = 0; i < n; i++) {
        const struct config_listener *l = &cfg->listeners[i];
        snprintf(addr, sizeof(addr), strchr(l->address, ':') ? "[%s]:%u" : "%s:%u", l->address,
                 (unsigned)l->port);
        const char *labels[] = {"listener", addr, NULL};
        uint64_t acc = METRICS_SUM(accepted[i]);
        uint64_t closed = METRICS_SUM(closed[i]);
        metrics_sample(b, "imapmux_connections_open", labels,
                       acc > closed ? (double)(acc - closed) : 0);
    }
}

static void metrics_render_tls(struct metrics_buf *b)
{
    metrics_family(b, "imapmux_tls_handshakes_total", "counter",
                   "Client TLS handshakes completed (implicit TLS and STARTTLS).");
    metrics_sample(b, "imapmux_tls_handshakes_total", NULL, (double)METRICS_SUM(tls[0]));
    metrics_family(b, "imapmux_tls_handshake_failures_total", "counter",
                   "Client TLS handshakes that failed, by reason.");
    for (unsigned r = 1; r < METRICS_TLS_NUM; r++) {
        const char *labels[] = {"reason", metrics_tls_names[r], NULL};
        metrics_sample(b, "imapmux_tls_handshake_failures_total", labels,
                       (double)METRICS_SUM(tls[r]));
    }
}

static void metrics_render_logins(struct metrics_buf *b)
{
    uint64_t counts[METRICS_NUM_BUCKETS + 1], sum;
    metrics_family(b, "imapmux_logins_total", "counter",
                   "Logins (LOGIN and AUTHENTICATE PLAIN) by result and mechanism.");
    for (unsigned r = 0; r < METRICS_LOGIN_NUM; r++) {
        for (unsigned k = 0; k < METRICS_MECH_NUM; k++) {
            const char *labels[] = {"result", metrics_login_names[r], "mechanism",
                                    metrics_mech_names[k], NULL};
            metrics_sample(b, "imapmux_logins_total", labels, (double)METRICS_SUM(logins[r][k]));
        }
    }
    metrics_family(b, "imapmux_login_refusals_total", "counter",
                   "Refused logins by reason (failed and unavailable ones).");
    for (unsigned i = 0; i < METRICS_MAX_NAMED; i++) {
        const char *name = atomic_load_explicit(&metrics_refusal_names[i], memory_order_acquire);
        if (name != NULL) {
            const char *labels[] = {"reason", name, NULL};
            metrics_sample(b, "imapmux_login_refusals_total", labels,
                           (double)METRICS_SUM(refused[i]));
        }
    }
    metrics_family(b, "imapmux_login_duration_seconds", "histogram",
                   "Time from LOGIN or AUTHENTICATE to the answer, by result.");
    for (unsigned r = 0; r < METRICS_LOGIN_NUM; r++) {
        const char *labels[] = {"result", metrics_login_names[r], NULL};
        METRICS_HIST_SUM(counts, &sum, login_hist[r]);
        metrics_histogram(b, "imapmux_login_duration_seconds", labels, counts, sum);
    }
    metrics_family(b, "imapmux_login_step_duration_seconds", "histogram",
                   "Time a login spent in each step of its step machine.");
    for (unsigned i = 0; i < METRICS_MAX_STEPS; i++) {
        const char *name = atomic_load_explicit(&metrics_step_names[i], memory_order_acquire);
        if (name != NULL) {
            const char *labels[] = {"step", name, NULL};
            METRICS_HIST_SUM(counts, &sum, steps[i]);
            metrics_histogram(b, "imapmux_login_step_duration_seconds", labels, counts, sum);
        }
    }
}

/* metrics_host_labels fills the backend and host labels of host id. */
static void metrics_host_labels(const char **labels, char *hostport, size_t len, unsigned id)
{
    if (id < METRICS_MAX_HOSTS) {
        const struct metrics_host *h = &metrics_hosts[id];
        snprintf(hostport, len, strchr(h->host, ':') ? "[%s]:%u" : "%s:%u", h->host,
                 (unsigned)h->port);
        labels[1] = h->backend;
    } else {
        snprintf(hostport, len, "other");
        labels[1] = "other";
    }
    labels[0] = "backend";
    labels[2] = "host";
    labels[3] = hostport;
}

static void metrics_render_backends(struct metrics_buf *b)
{
    uint64_t counts[METRICS_NUM_BUCKETS + 1], sum;
    char hp[METRICS_HOST_LEN + 16];
    unsigned n = atomic_load_explicit(&metrics_num_hosts, memory_order_acquire);
    unsigned ids[METRICS_MAX_HOSTS + 1];
    unsigned num_ids = 0;
    for (unsigned i = 0; i < n; i++) {
        ids[num_ids++] = i;
    }
    if (n == METRICS_MAX_HOSTS) {
        ids[num_ids++] = METRICS_MAX_HOSTS; /* "other" */
    }

    metrics_family(b, "imapmux_backend_up", "gauge",
                   "1 when the last connection attempt to the backend host (login, warm pool "
                   "or readiness probe) succeeded, 0 when it failed.");
    for (unsigned k = 0; k < num_ids; k++) {
        const char *labels[5] = {NULL};
        int up = ids[k] < METRICS_MAX_HOSTS ? atomic_load(&metrics_hosts[ids[k]].up)
                                            : atomic_load(&metrics_other_up);
        if (up < 0) {
            continue; /* not tried yet */
        }
        metrics_host_labels(labels, hp, sizeof(hp), ids[k]);
        metrics_sample(b, "imapmux_backend_up", labels, up);
    }
    metrics_family(b, "imapmux_backend_connect_duration_seconds", "histogram",
                   "Time from the start of a backend connection to ready for a login (resolve, "
                   "connect, TLS, greeting, capabilities).");
    for (unsigned k = 0; k < num_ids; k++) {
        const char *labels[5] = {NULL};
        metrics_host_labels(labels, hp, sizeof(hp), ids[k]);
        METRICS_HIST_SUM(counts, &sum, be_connect[ids[k]]);
        metrics_histogram(b, "imapmux_backend_connect_duration_seconds", labels, counts, sum);
    }
    metrics_family(b, "imapmux_backend_login_duration_seconds", "histogram",
                   "Time from sending the login to the backend to its OK.");
    for (unsigned k = 0; k < num_ids; k++) {
        const char *labels[5] = {NULL};
        metrics_host_labels(labels, hp, sizeof(hp), ids[k]);
        METRICS_HIST_SUM(counts, &sum, be_login[ids[k]]);
        metrics_histogram(b, "imapmux_backend_login_duration_seconds", labels, counts, sum);
    }
    metrics_family(b, "imapmux_backend_failures_total", "counter",
                   "Backend connections that failed, by the phase they failed in.");
    for (unsigned k = 0; k < num_ids; k++) {
        for (unsigned p = 0; p < METRICS_BE_NUM; p++) {
            const char *labels[7] = {NULL};
            metrics_host_labels(labels, hp, sizeof(hp), ids[k]);
            labels[4] = "phase";
            labels[5] = metrics_be_names[p];
            metrics_sample(b, "imapmux_backend_failures_total", labels,
                           (double)METRICS_SUM(be_fail[ids[k]][p]));
        }
    }
}

static void metrics_render_pools(struct metrics_buf *b)
{
    metrics_render_pub(b, "imapmux_warm_pool_connections", "gauge",
                       "Warm backend connections ready now (all workers and hosts).",
                       METRICS_PUB(pool_size));
    metrics_render_pub(b, "imapmux_warm_pool_hits_total", "counter",
                       "Logins that took a warm connection.", METRICS_PUB(pool_hits));
    metrics_render_pub(b, "imapmux_warm_pool_misses_total", "counter",
                       "Logins to a pooled host that found no warm connection ready.",
                       METRICS_PUB(pool_misses));
    metrics_render_pub(b, "imapmux_warm_pool_connects_total", "counter",
                       "Warm connections made ready.", METRICS_PUB(pool_connects));
    metrics_render_pub(b, "imapmux_warm_pool_connect_failures_total", "counter",
                       "Warm connection attempts that failed before ready.",
                       METRICS_PUB(pool_connect_failures));
    metrics_render_pub(b, "imapmux_warm_pool_lost_total", "counter",
                       "Ready warm connections that failed (BYE, EOF, failed ping).",
                       METRICS_PUB(pool_lost));
    metrics_render_pub(b, "imapmux_warm_pool_recycled_total", "counter",
                       "Warm connections replaced for age.", METRICS_PUB(pool_recycled));
    metrics_render_pub(b, "imapmux_warm_pool_retries_total", "counter",
                       "Logins whose warm connection failed and that went on on a new one.",
                       METRICS_PUB(warm_retries));

    metrics_render_pub(b, "imapmux_session_leases", "gauge",
                       "Leases of logged-in sessions this instance holds in Redis (the per-user "
                       "session limits).", METRICS_PUB(leases));
    metrics_render_pub(b, "imapmux_session_lease_renewals_total", "counter",
                       "Session leases renewed in Redis.", METRICS_PUB(lease_renewals));
    metrics_render_pub(b, "imapmux_session_lease_renew_failures_total", "counter",
                       "Batches of lease renewals Redis did not run (down or an error).",
                       METRICS_PUB(lease_renew_failures));

    metrics_render_pub(b, "imapmux_session_cache_connections", "gauge",
                       "Logged-in backend connections parked now.", METRICS_PUB(cache_size));
    metrics_render_pub(b, "imapmux_session_cache_parked_total", "counter",
                       "Connections parked at a client's LOGOUT.", METRICS_PUB(cache_parked));
    metrics_render_pub(b, "imapmux_session_cache_hits_total", "counter",
                       "Logins that reused a parked connection.", METRICS_PUB(cache_hits));
    metrics_render_pub(b, "imapmux_session_cache_waits_total", "counter",
                       "Of the hits, logins that waited for the parked connection's reset.",
                       METRICS_PUB(cache_waits));
    metrics_render_pub(b, "imapmux_session_cache_misses_total", "counter",
                       "Cacheable logins that found no parked connection.",
                       METRICS_PUB(cache_misses));
    metrics_family(b, "imapmux_session_cache_evictions_total", "counter",
                   "Parked connections dropped, by reason.");
    static const struct {
        const char *reason;
        size_t idx;
    } ev[] = {
        {"ttl", METRICS_PUB(cache_evicted_ttl)},
        {"limit", METRICS_PUB(cache_evicted_limit)},
        {"lost", METRICS_PUB(cache_evicted_lost)},
        {"event", METRICS_PUB(cache_evicted_event)},
    };
    for (size_t i = 0; i < sizeof(ev) / sizeof(ev[0]); i++) {
        const char *labels[] = {"reason", ev[i].reason, NULL};
        metrics_sample(b, "imapmux_session_cache_evictions_total", labels,
                       (double)metrics_pub_sum(ev[i].idx));
    }
}

static void metrics_render_sessions(struct metrics_buf *b)
{
    metrics_render_pub(b, "imapmux_sessions", "gauge",
                       "Client sessions alive now (all states).", METRICS_PUB(sessions));
    metrics_render_pub(b, "imapmux_kicks_total", "counter",
                       "Sessions ended by kick or routing events.", METRICS_PUB(kicks));
    metrics_render_pub(b, "imapmux_bruteforce_delays_total", "counter",
                       "Logins delayed by the brute-force counters.", METRICS_PUB(bf_delayed));
    metrics_render_pub(b, "imapmux_bruteforce_blocks_total", "counter",
                       "Logins refused by the brute-force counters.", METRICS_PUB(bf_blocked));
    metrics_render_pub(b, "imapmux_commands_refused_total", "counter",
                       "Relayed commands the command gate refused (BAD or BYE).",
                       METRICS_PUB(commands_refused));

    metrics_family(b, "imapmux_relay_bytes_total", "counter",
                   "Bytes relayed after login (before TLS and compression), by direction.");
    const char *in[] = {"direction", "client_to_backend", NULL};
    const char *out[] = {"direction", "backend_to_client", NULL};
    metrics_sample(b, "imapmux_relay_bytes_total", in, (double)METRICS_SUM(bytes[1]));
    metrics_sample(b, "imapmux_relay_bytes_total", out, (double)METRICS_SUM(bytes[0]));

    metrics_family(b, "imapmux_relay_commands_total", "counter",
                   "Commands relayed to the backend, by name (a fixed list, the rest \"other\").");
    char name[32];
    for (unsigned uid = 0; uid < 2; uid++) {
        for (size_t i = 0; i <= METRICS_NUM_COMMANDS; i++) {
            uint64_t v = METRICS_SUM(commands[uid][i]);
            if (uid && v == 0) {
                continue; /* UID variants appear once used */
            }
            snprintf(name, sizeof(name), "%s%s", uid ? "UID " : "",
                     i < METRICS_NUM_COMMANDS ? metrics_commands[i] : "other");
            const char *labels[] = {"command", name, NULL};
            metrics_sample(b, "imapmux_relay_commands_total", labels, (double)v);
        }
    }
}

static void metrics_render_redis(struct metrics_buf *b)
{
    uint64_t counts[METRICS_NUM_BUCKETS + 1], sum;
    static const char *const roles[] = {"commands", "events"};
    metrics_family(b, "imapmux_redis_connections", "gauge",
                   "Redis connections of the workers, by role.");
    for (unsigned r = 0; r < 2; r++) {
        const char *labels[] = {"role", roles[r], NULL};
        metrics_sample(b, "imapmux_redis_connections", labels,
                       (double)METRICS_SUM(redis_present[r]));
    }
    metrics_family(b, "imapmux_redis_connections_up", "gauge",
                   "Redis connections usable now, by role.");
    for (unsigned r = 0; r < 2; r++) {
        const char *labels[] = {"role", roles[r], NULL};
        metrics_sample(b, "imapmux_redis_connections_up", labels,
                       (double)METRICS_SUM(redis_up[r]));
    }
    metrics_family(b, "imapmux_redis_command_duration_seconds", "histogram",
                   "Time from sending a routing command to Redis to its reply.");
    METRICS_HIST_SUM(counts, &sum, redis_cmd);
    metrics_histogram(b, "imapmux_redis_command_duration_seconds", NULL, counts, sum);
    metrics_family(b, "imapmux_redis_command_failures_total", "counter",
                   "Routing commands that got no reply (connection lost, timeout).");
    metrics_sample(b, "imapmux_redis_command_failures_total", NULL,
                   (double)METRICS_SUM(redis_errors));
}

static void metrics_render_audit(struct metrics_buf *b)
{
    metrics_render_pub(b, "imapmux_audit_queue_bytes", "gauge",
                       "Bytes of audit records queued or being written (all workers).",
                       METRICS_PUB(audit_queue_bytes));
    metrics_render_pub(b, "imapmux_audit_queue_blocked", "gauge",
                       "Workers whose clients wait for the audit writer (policy block).",
                       METRICS_PUB(audit_blocked));
    metrics_render_pub(b, "imapmux_audit_records_queued_total", "counter",
                       "Audit records queued for the writer.", METRICS_PUB(audit_records));
    metrics_render_pub(b, "imapmux_audit_records_rejected_total", "counter",
                       "Audit records not queued: the queue was full (policy drop or close).",
                       METRICS_PUB(audit_dropped));
    metrics_render_pub(b, "imapmux_audit_queue_blocks_total", "counter",
                       "Times a worker's audit queue filled under policy block.",
                       METRICS_PUB(audit_blocks));
    metrics_family(b, "imapmux_audit_records_written_total", "counter",
                   "Audit records a sink took.");
    metrics_family(b, "imapmux_audit_records_dropped_total", "counter",
                   "Audit records a sink lost (given up at stop, out of memory).");
    metrics_family(b, "imapmux_audit_sink_up", "gauge",
                   "1 when the sink took its last batch, 0 while it fails.");
    for (unsigned s = 0; s < METRICS_SINK_NUM; s++) {
        int up = atomic_load(&metrics_sink_up[s]);
        if (up < 0) {
            continue; /* not configured, or nothing written yet */
        }
        const char *labels[] = {"sink", metrics_sink_names[s], NULL};
        metrics_sample(b, "imapmux_audit_records_written_total", labels,
                       (double)atomic_load(&metrics_sink_written[s]));
        metrics_sample(b, "imapmux_audit_records_dropped_total", labels,
                       (double)atomic_load(&metrics_sink_dropped[s]));
        metrics_sample(b, "imapmux_audit_sink_up", labels, up);
    }
}

/* metrics_count_fds counts the entries of /proc/self/fd (-1: unknown). */
static long metrics_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;
    struct dirent *e;
    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static void metrics_render_process(struct metrics_buf *b)
{
    struct rlimit rl;
    struct rusage ru;
    long fds = metrics_count_fds();
    if (fds >= 0) {
        metrics_family(b, "imapmux_process_open_fds", "gauge", "Open file descriptors.");
        metrics_sample(b, "imapmux_process_open_fds", NULL, (double)fds);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        metrics_family(b, "imapmux_process_max_fds", "gauge",
                       "The limit of open file descriptors.");
        metrics_sample(b, "imapmux_process_max_fds", NULL, (double)rl.rlim_cur);
    }
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        unsigned long size, resident;
        if (fscanf(f, "%lu %lu", &size, &resident) == 2) {
            double page = (double)sysconf(_SC_PAGESIZE);
            metrics_family(b, "imapmux_process_resident_memory_bytes", "gauge",
                           "Resident memory size.");
            metrics_sample(b, "imapmux_process_resident_memory_bytes", NULL,
                           (double)resident * page);
            metrics_family(b, "imapmux_process_virtual_memory_bytes", "gauge",
                           "Virtual memory size.");
            metrics_sample(b, "imapmux_process_virtual_memory_bytes", NULL, (double)size * page);
        }
        fclose(f);
    }
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        metrics_family(b, "imapmux_process_cpu_seconds_total", "counter",
                       "User and system CPU time spent.");
        metrics_sample(b, "imapmux_process_cpu_seconds_total", NULL, cpu);
    }
    metrics_family(b, "imapmux_process_start_time_seconds", "gauge",
                   "Start time of the process since the Unix epoch.");
    metrics_sample(b, "imapmux_process_start_time_seconds", NULL, floor(metrics_start_s));
    metrics_family(b, "imapmux_build_info", "gauge",
                   "Always 1; the labels say which build runs.");
    const char *labels[] = {"version", IMAPMUX_VERSION, "tls", "boringssl", NULL};
    metrics_sample(b, "imapmux_build_info", labels, 1);
}

static void metrics_render_config(struct metrics_buf *b)
{
    metrics_family(b, "imapmux_config_reloads_total", "counter",
                   "Configuration reloads, by result.");
    const char *ok[] = {"result", "success", NULL};
    const char *bad[] = {"result", "failure", NULL};
    metrics_sample(b, "imapmux_config_reloads_total", ok, (double)atomic_load(&metrics_reloads[1]));
    metrics_sample(b, "imapmux_config_reloads_total", bad,
                   (double)atomic_load(&metrics_reloads[0]));
    int last_ok = atomic_load(&metrics_reload_last_ok);
    if (last_ok >= 0) {
        metrics_family(b, "imapmux_config_last_reload_success", "gauge",
                       "1 when the last configuration reload succeeded.");
        metrics_sample(b, "imapmux_config_last_reload_success", NULL, last_ok);
        metrics_family(b, "imapmux_config_last_reload_timestamp_seconds", "gauge",
                       "When the last configuration reload ended, since the Unix epoch.");
        metrics_sample(b, "imapmux_config_last_reload_timestamp_seconds", NULL,
                       (double)atomic_load(&metrics_reload_last_ms) / 1e3);
        metrics_family(b, "imapmux_config_last_reload_duration_seconds", "gauge",
                       "How long the last configuration reload took.");
        metrics_sample(b, "imapmux_config_last_reload_duration_seconds", NULL,
                       (double)atomic_load(&metrics_reload_last_us) / 1e6);
    }
    uv_mutex_lock(&metrics_mu); /* a reload may be replacing the names */
    unsigned n = atomic_load(&metrics_num_certs);
    if (n > 0) {
        metrics_family(b, "imapmux_certificate_expiry_timestamp_seconds", "gauge",
                       "When the configured certificate stops being valid (notAfter), since "
                       "the Unix epoch.");
        for (unsigned i = 0; i < n; i++) {
            const char *labels[] = {"name", metrics_certs[i].name, NULL};
            metrics_sample(b, "imapmux_certificate_expiry_timestamp_seconds", labels,
                           (double)atomic_load(&metrics_certs[i].not_after));
        }
    }
    uv_mutex_unlock(&metrics_mu);
}

void metrics_render(struct metrics_buf *b, const struct config *cfg)
{
    metrics_render_listeners(b, cfg);
    metrics_render_tls(b);
    metrics_render_sessions(b);
    metrics_render_logins(b);
    metrics_render_backends(b);
    metrics_render_pools(b);
    metrics_render_redis(b);
    metrics_render_audit(b);
    metrics_render_config(b);
    metrics_render_process(b);
}
