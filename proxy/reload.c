#include "proxy/reload.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "proxy/listener.h"

static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;
static struct reload_stats reload_counters = {.generation = 1, .last_ok = 1};

void reload_stats(struct reload_stats *out)
{
    pthread_mutex_lock(&reload_lock);
    *out = reload_counters;
    pthread_mutex_unlock(&reload_lock);
}

void reload_started(void)
{
    pthread_mutex_lock(&reload_lock);
    reload_counters.generation = 1;
    reload_counters.last_ok_s = (int64_t)time(NULL);
    pthread_mutex_unlock(&reload_lock);
}

static int reload_str_differs(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return a != b;
    }
    return strcmp(a, b) != 0;
}

static int reload_hosts_differ(const struct schema_host *a, size_t na,
                               const struct schema_host *b, size_t nb)
{
    if (na != nb) {
        return 1;
    }
    for (size_t i = 0; i < na; i++) {
        if (a[i].port != b[i].port || strcmp(a[i].host, b[i].host) != 0) {
            return 1;
        }
    }
    return 0;
}

const char *reload_restart_only_change(const struct config *o, const struct config *n)
{
    const struct config_redis *ro = &o->redis, *rn = &n->redis;
    const struct config_audit *ao = &o->audit, *an = &n->audit;

    if (o->num_workers != n->num_workers) {
        return "workers";
    }
    if (o->log_target != n->log_target) {
        return "log.target";
    }
    if (ro->enabled != rn->enabled || reload_str_differs(ro->host, rn->host) ||
        ro->port != rn->port || reload_str_differs(ro->password, rn->password) ||
        ro->db != rn->db || reload_str_differs(ro->prefix, rn->prefix) ||
        reload_hosts_differ(ro->sentinels, ro->num_sentinels, rn->sentinels, rn->num_sentinels) ||
        reload_str_differs(ro->master_name, rn->master_name) ||
        reload_str_differs(ro->sentinel_password, rn->sentinel_password) ||
        ro->connect_timeout_ms != rn->connect_timeout_ms ||
        ro->command_timeout_ms != rn->command_timeout_ms ||
        ro->reconnect_max_ms != rn->reconnect_max_ms || ro->cache_ttl_ms != rn->cache_ttl_ms) {
        return "redis";
    }
    if (ao->enabled != an->enabled || reload_str_differs(ao->file, an->file) ||
        ao->to_stdout != an->to_stdout || ao->to_syslog != an->to_syslog ||
        ao->syslog_facility != an->syslog_facility || ao->to_redis != an->to_redis ||
        reload_str_differs(ao->redis_host, an->redis_host) || ao->redis_port != an->redis_port ||
        reload_str_differs(ao->redis_password, an->redis_password) ||
        ao->redis_db != an->redis_db || reload_str_differs(ao->redis_key, an->redis_key) ||
        ao->redis_maxlen != an->redis_maxlen || ao->queue_bytes != an->queue_bytes ||
        ao->policy != an->policy) {
        return "audit (sinks, queue_bytes, policy)";
    }
    if (o->verify_threads != n->verify_threads || o->verify_queue != n->verify_queue ||
        o->verify_per_client != n->verify_per_client) {
        return "limits.verify_*";
    }
    if (o->max_connections != n->max_connections ||
        o->max_connections_per_ip != n->max_connections_per_ip ||
        o->max_connections_per_ipv6_prefix != n->max_connections_per_ipv6_prefix ||
        o->ipv6_prefix_len != n->ipv6_prefix_len) {
        return "limits.max_connections*";
    }
    if (config_oauth_differs(&o->oauth, &n->oauth)) {
        /* the oauth thread keeps its key sets and cache for the start's entries */
        return "oauth";
    }
    if (o->session_lease_ms != n->session_lease_ms) {
        return "limits.session_lease_ms";
    }
    if (o->admin.enabled != n->admin.enabled ||
        reload_str_differs(o->admin.address, n->admin.address) || o->admin.port != n->admin.port) {
        return "admin.listen";
    }
    return NULL;
}

static int reload_listener_known(const struct config *c, const struct config_listener *l)
{
    for (size_t i = 0; i < c->num_listeners; i++) {
        if (listener_config_same(&c->listeners[i], l)) {
            return 1;
        }
    }
    return 0;
}

static void reload_refused(const char *why)
{
    pthread_mutex_lock(&reload_lock);
    reload_counters.failed++;
    reload_counters.last_attempt_s = (int64_t)time(NULL);
    reload_counters.last_ok = 0;
    snprintf(reload_counters.last_error, sizeof(reload_counters.last_error), "%s", why);
    pthread_mutex_unlock(&reload_lock);
    log_msg(LOG_ERR, "reload refused, the configuration in force stays: %s", why);
}

struct snapshot *reload_prepare(char *err, size_t err_len, const struct snapshot *cur,
                                const char *path)
{
    char why[RELOAD_MAX_ERROR_LEN];
    struct config *cfg = config_load(why, sizeof(why), path);
    struct snapshot *snap = NULL;
    const char *key;

    if (cfg == NULL) {
        goto refuse;
    }
    key = reload_restart_only_change(cur->cfg, cfg);
    if (key != NULL) {
        snprintf(why, sizeof(why), "%s: %s changed, which needs a restart", path, key);
        goto refuse;
    }
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const struct config_listener *l = &cfg->listeners[i];
        char lerr[256];
        if (!reload_listener_known(cur->cfg, l) && listener_probe(lerr, sizeof(lerr), l) != 0) {
            snprintf(why, sizeof(why), "%s: listeners[%zu]: %s", path, i, lerr);
            goto refuse;
        }
    }
    snap = snapshot_new(why, sizeof(why), cfg, cur->generation + 1);
    if (snap == NULL) {
        char tmp[RELOAD_MAX_ERROR_LEN];
        snprintf(tmp, sizeof(tmp), "%s", why);
        if (snprintf(why, sizeof(why), "%s: %s", path, tmp) >= (int)sizeof(why)) {
            why[sizeof(why) - 1] = '\0'; /* cut: the reason is still told */
        }
        goto refuse;
    }
    config_unref(&cfg);
    return snap;
refuse:
    config_unref(&cfg);
    snprintf(err, err_len, "%s", why);
    reload_refused(why);
    return NULL;
}

void reload_accepted(const struct snapshot *snap)
{
    pthread_mutex_lock(&reload_lock);
    reload_counters.ok++;
    reload_counters.generation = snap->generation;
    reload_counters.last_attempt_s = (int64_t)time(NULL);
    reload_counters.last_ok_s = reload_counters.last_attempt_s;
    reload_counters.last_ok = 1;
    reload_counters.last_error[0] = '\0';
    pthread_mutex_unlock(&reload_lock);
    log_msg(LOG_INFO, "reload: configuration %s in force (generation %llu): %zu listeners, "
            "%zu backends, %zu certificates", snap->cfg->path,
            (unsigned long long)snap->generation, snap->cfg->num_listeners,
            snap->cfg->num_backends, snap->cfg->num_certificates);
}

void reload_listener_failed(void)
{
    pthread_mutex_lock(&reload_lock);
    reload_counters.listener_failures++;
    pthread_mutex_unlock(&reload_lock);
}
