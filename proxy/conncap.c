#include "proxy/conncap.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/keycount.h"
#include "common/netaddr.h"

struct conncap {
    uv_mutex_t mu;                 /* guards everything below */
    struct conncap_limits lim;
    struct keycount *per_ip;       /* connections per address key */
    struct keycount *per_prefix;   /* connections per IPv6 prefix key */
    size_t total;                  /* connections holding a ticket */
    struct conncap_stats stats;
};

struct conncap *conncap_new(const struct conncap_limits *lim)
{
    struct conncap *cc = calloc(1, sizeof(*cc));
    if (cc == NULL) {
        return NULL;
    }
    cc->lim = *lim;
    if (cc->lim.ipv6_prefix_len == 0 || cc->lim.ipv6_prefix_len > 128) {
        cc->lim.ipv6_prefix_len = 64;
    }
    cc->per_ip = keycount_new();
    cc->per_prefix = keycount_new();
    if (cc->per_ip == NULL || cc->per_prefix == NULL || uv_mutex_init(&cc->mu) != 0) {
        keycount_free(cc->per_ip);
        keycount_free(cc->per_prefix);
        free(cc);
        return NULL;
    }
    return cc;
}

void conncap_free(struct conncap *cc)
{
    if (cc == NULL) {
        return;
    }
    uv_mutex_destroy(&cc->mu);
    keycount_free(cc->per_ip);
    keycount_free(cc->per_prefix);
    free(cc);
}

void conncap_limits_from_config(struct conncap_limits *out, const struct config *cfg,
                                size_t max_descriptors)
{
    memset(out, 0, sizeof(*out));
    out->max_total = cfg->max_connections;
    out->max_descriptors = max_descriptors;
    out->max_per_ip = cfg->max_connections_per_ip;
    out->max_per_prefix = cfg->max_connections_per_ipv6_prefix;
    out->ipv6_prefix_len = cfg->ipv6_prefix_len;
}

static enum conncap_verdict conncap_count(struct keycount *kc, struct keycount_entry **out,
                                          const char *key, size_t limit,
                                          enum conncap_verdict full)
{
    switch (keycount_acquire(kc, out, key, limit)) {
    case KEYCOUNT_OK:
        return CONNCAP_OK;
    case KEYCOUNT_FULL:
        return full;
    case KEYCOUNT_NOMEM:
        break;
    }
    return CONNCAP_NOMEM;
}

enum conncap_verdict conncap_acquire(struct conncap *cc, const char *ip,
                                     struct conncap_ticket *out)
{
    char ip_key[NETADDR_MAX_KEY_LEN];
    char prefix_key[NETADDR_MAX_KEY_LEN];
    struct netaddr a;
    int v6;
    enum conncap_verdict v = CONNCAP_OK;

    memset(out, 0, sizeof(*out));
    if (cc == NULL) {
        return CONNCAP_OK;
    }
    /* keys before the mutex: it guards counting only */
    if (netaddr_parse(&a, ip) == 0) {
        v6 = a.family == NETADDR_V6;
        if (netaddr_prefix_key(ip_key, sizeof(ip_key), &a, 128) != 0 ||
            (v6 && netaddr_prefix_key(prefix_key, sizeof(prefix_key), &a,
                                      cc->lim.ipv6_prefix_len) != 0)) {
            v6 = 0;
            memcpy(ip_key, NETADDR_UNPARSED_KEY, sizeof(NETADDR_UNPARSED_KEY));
        }
    } else {
        v6 = 0;
        memcpy(ip_key, NETADDR_UNPARSED_KEY, sizeof(NETADDR_UNPARSED_KEY));
    }

    uv_mutex_lock(&cc->mu);
    if (cc->lim.max_total != 0 && cc->total >= cc->lim.max_total) {
        v = CONNCAP_TOTAL;
    } else if (cc->lim.max_descriptors != 0 && cc->total >= cc->lim.max_descriptors) {
        v = CONNCAP_DESCRIPTORS;
    }
    /* a cap that is off counts nothing: no entry per address for nothing */
    if (v == CONNCAP_OK && cc->lim.max_per_ip != 0) {
        v = conncap_count(cc->per_ip, &out->ip, ip_key, cc->lim.max_per_ip, CONNCAP_PER_IP);
    }
    if (v == CONNCAP_OK && v6 && cc->lim.max_per_prefix != 0) {
        v = conncap_count(cc->per_prefix, &out->prefix, prefix_key, cc->lim.max_per_prefix,
                          CONNCAP_PER_PREFIX);
        if (v != CONNCAP_OK) {
            keycount_release(cc->per_ip, out->ip);
            out->ip = NULL;
        }
    }
    if (v == CONNCAP_OK) {
        out->counted = 1;
        cc->total++;
        cc->stats.accepted++;
        if (cc->total > cc->stats.peak) {
            cc->stats.peak = cc->total;
        }
    } else {
        cc->stats.refused[v]++;
    }
    uv_mutex_unlock(&cc->mu);
    return v;
}

void conncap_release(struct conncap *cc, const struct conncap_ticket *t)
{
    if (cc == NULL || !t->counted) {
        return;
    }
    uv_mutex_lock(&cc->mu);
    keycount_release(cc->per_ip, t->ip);
    keycount_release(cc->per_prefix, t->prefix);
    cc->total--;
    uv_mutex_unlock(&cc->mu);
}

void conncap_stats(struct conncap *cc, struct conncap_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (cc == NULL) {
        return;
    }
    uv_mutex_lock(&cc->mu);
    *out = cc->stats;
    out->current = cc->total;
    uv_mutex_unlock(&cc->mu);
}

const char *conncap_bye(enum conncap_verdict v)
{
    switch (v) {
    case CONNCAP_PER_IP:
    case CONNCAP_PER_PREFIX:
        return "[UNAVAILABLE] Too many connections from your address";
    case CONNCAP_OK:
    case CONNCAP_TOTAL:
    case CONNCAP_DESCRIPTORS:
    case CONNCAP_NOMEM:
        break;
    }
    return "[UNAVAILABLE] Server busy, try again later";
}

const char *conncap_reason(enum conncap_verdict v)
{
    switch (v) {
    case CONNCAP_OK:
        return "within the caps";
    case CONNCAP_TOTAL:
        return "connection cap reached (limits.max_connections)";
    case CONNCAP_DESCRIPTORS:
        return "descriptor limit nearly reached";
    case CONNCAP_PER_IP:
        return "connection cap of the address reached (limits.max_connections_per_ip)";
    case CONNCAP_PER_PREFIX:
        return "connection cap of the IPv6 prefix reached "
               "(limits.max_connections_per_ipv6_prefix)";
    case CONNCAP_NOMEM:
        break;
    }
    return "out of memory counting connections";
}

size_t conncap_descriptor_room(const struct config *cfg, unsigned num_workers, uint64_t nofile)
{
    uint64_t per_worker = CONNCAP_FDS_PER_WORKER + cfg->num_listeners;
    uint64_t reserved;

    if (nofile == 0) {
        return 0;
    }
    for (size_t i = 0; i < cfg->num_backends; i++) {
        per_worker += (uint64_t)cfg->backends[i].pool_size * cfg->backends[i].num_hosts;
    }
    if (cfg->session_cache.enabled) {
        per_worker += cfg->session_cache.max_total;
    }
    reserved = CONNCAP_RESERVED_FDS + per_worker * (num_workers != 0 ? num_workers : 1);
    if (nofile <= reserved + CONNCAP_FDS_PER_CONNECTION) {
        return 1;
    }
    uint64_t room = (nofile - reserved) / CONNCAP_FDS_PER_CONNECTION;
    return room > SIZE_MAX ? SIZE_MAX : (size_t)room;
}
