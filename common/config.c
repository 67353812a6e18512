#include "common/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

#include <yaml.h>

#include <openssl/mem.h>

#include "common/sni.h"

/* A loader walks the libyaml document; the first error wins and stops it. */
struct config_loader {
    yaml_document_t doc;
    const char *path;
    char *err;
    size_t err_len;
    int failed;
    int bf_enabled_set; /* bruteforce.enabled was given */
};

static void config_fail(struct config_loader *ld, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void config_fail(struct config_loader *ld, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (ld->failed) {
        return;
    }
    ld->failed = 1;
    n = snprintf(ld->err, ld->err_len, "%s:%lu: ", ld->path,
                 node != NULL ? (unsigned long)node->start_mark.line + 1 : 1ul);
    if (n < 0 || (size_t)n >= ld->err_len) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->err_len - (size_t)n, fmt, ap);
    va_end(ap);
}

static yaml_node_t *config_node(struct config_loader *ld, int id)
{
    return yaml_document_get_node(&ld->doc, id);
}

/* config_has_nul: a scalar written with "\0" holds a NUL that C strings
 * would cut it at. */
static int config_has_nul(const yaml_node_t *n)
{
    return strlen((const char *)n->data.scalar.value) != n->data.scalar.length;
}

static const char *config_scalar(struct config_loader *ld, const yaml_node_t *n, const char *key)
{
    if (n->type != YAML_SCALAR_NODE) {
        config_fail(ld, n, "%s: expected a single value", key);
        return NULL;
    }
    if (config_has_nul(n)) {
        config_fail(ld, n, "%s: must not hold a NUL character", key);
        return NULL;
    }
    return (const char *)n->data.scalar.value;
}

static char *config_string(struct config_loader *ld, const yaml_node_t *n, const char *key)
{
    const char *s = config_scalar(ld, n, key);
    if (s == NULL) {
        return NULL;
    }
    if (s[0] == '\0') {
        config_fail(ld, n, "%s: must not be empty", key);
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        config_fail(ld, n, "out of memory");
    }
    return d;
}

static int config_uint(struct config_loader *ld, const yaml_node_t *n, const char *key,
                       unsigned long min, unsigned long max, unsigned long *out)
{
    const char *s = config_scalar(ld, n, key);
    char *end;
    if (s == NULL) {
        return -1;
    }
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v < min || v > max) {
        config_fail(ld, n, "%s: expected an integer %lu-%lu", key, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int config_bool(struct config_loader *ld, const yaml_node_t *n, const char *key, int *out)
{
    const char *s = config_scalar(ld, n, key);
    if (s == NULL) {
        return -1;
    }
    if (strcasecmp(s, "true") == 0 || strcasecmp(s, "yes") == 0) {
        *out = 1;
    } else if (strcasecmp(s, "false") == 0 || strcasecmp(s, "no") == 0) {
        *out = 0;
    } else {
        config_fail(ld, n, "%s: expected true or false", key);
        return -1;
    }
    return 0;
}

struct config_enum {
    const char *name;
    int value;
};

static int config_enum(struct config_loader *ld, const yaml_node_t *n, const char *key,
                       const struct config_enum *table, size_t num, int *out)
{
    const char *s = config_scalar(ld, n, key);
    char choices[256] = "";
    if (s == NULL) {
        return -1;
    }
    for (size_t i = 0; i < num; i++) {
        if (strcasecmp(s, table[i].name) == 0) {
            *out = table[i].value;
            return 0;
        }
        strncat(choices, i == 0 ? "" : " | ", sizeof(choices) - strlen(choices) - 1);
        strncat(choices, table[i].name, sizeof(choices) - strlen(choices) - 1);
    }
    config_fail(ld, n, "%s: expected one of %s", key, choices);
    return -1;
}

#define CONFIG_ENUM(ld, n, key, table, out) \
    config_enum(ld, n, key, table, sizeof(table) / sizeof(table[0]), out)

/* config_each_pair calls fn for each key of a mapping node. */
typedef void (*config_pair_cb)(struct config_loader *ld, struct config *c, const char *prefix,
                               const char *key, yaml_node_t *knode, yaml_node_t *value,
                               void *arg);

static void config_key_path(char *out, size_t len, const char *prefix, const char *key)
{
    snprintf(out, len, "%s%s%s", prefix, prefix[0] ? "." : "", key);
}

static void config_each_pair(struct config_loader *ld, struct config *c, yaml_node_t *map,
                             const char *prefix, config_pair_cb fn, void *arg)
{
    if (map->type != YAML_MAPPING_NODE) {
        config_fail(ld, map, "%s: expected a mapping (key: value)", prefix[0] ? prefix : "top level");
        return;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top && !ld->failed; p++) {
        yaml_node_t *k = config_node(ld, p->key);
        yaml_node_t *v = config_node(ld, p->value);
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE ||
            config_has_nul(k)) {
            config_fail(ld, k, "%s: keys must be plain names", prefix);
            return;
        }
        /* a key given twice would be read twice: sections that allocate
         * (listeners, backends) would lose the first copy */
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *qk = config_node(ld, q->key);
            if (strcmp((const char *)qk->data.scalar.value,
                       (const char *)k->data.scalar.value) == 0) {
                char kp[128];
                config_key_path(kp, sizeof(kp), prefix, (const char *)k->data.scalar.value);
                config_fail(ld, k, "%s: given twice", kp);
                return;
            }
        }
        fn(ld, c, prefix, (const char *)k->data.scalar.value, k, v, arg);
    }
}

/* config_hosts reads a list of "host:port" strings into a schema_host array. */
static void config_hosts(struct config_loader *ld, yaml_node_t *v, const char *kp,
                         struct schema_host **out, size_t *num)
{
    char err[200];
    if (v->type != YAML_SEQUENCE_NODE) {
        config_fail(ld, v, "%s: expected a list of host:port", kp);
        return;
    }
    free(*out);
    *out = NULL;
    *num = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        yaml_node_t *item = config_node(ld, *it);
        const char *str = config_scalar(ld, item, kp);
        struct schema_host *one;
        size_t n1;
        if (str == NULL) {
            return;
        }
        if (schema_parse_hosts(&one, &n1, str, strlen(str), err, sizeof(err)) != 0 || n1 != 1) {
            if (n1 != 1 && one != NULL) {
                free(one);
                snprintf(err, sizeof(err), "one host:port per list item");
            }
            config_fail(ld, item, "%s: %s", kp, err);
            return;
        }
        for (size_t j = 0; j < *num; j++) {
            if ((*out)[j].port == one->port && strcasecmp((*out)[j].host, one->host) == 0) {
                free(one);
                config_fail(ld, item, "%s: %s listed twice", kp, str);
                return;
            }
        }
        struct schema_host *nh = realloc(*out, (*num + 1) * sizeof(**out));
        if (nh == NULL) {
            free(one);
            config_fail(ld, item, "out of memory");
            return;
        }
        *out = nh;
        nh[(*num)++] = *one;
        free(one);
    }
    if (*num == 0) {
        config_fail(ld, v, "%s: must not be empty", kp);
    }
}

/* config_secret_file reads a secret from the first line of a file. */
static char *config_secret_file(struct config_loader *ld, yaml_node_t *v, const char *kp)
{
    char *path = config_string(ld, v, kp);
    char buf[1024];
    if (path == NULL) {
        return NULL;
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        config_fail(ld, v, "%s: cannot read %s: %s", kp, path, strerror(errno));
        free(path);
        return NULL;
    }
    free(path);
    if (fgets(buf, sizeof(buf), f) == NULL) {
        buf[0] = '\0';
    }
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    if (buf[0] == '\0') {
        config_fail(ld, v, "%s: the file is empty", kp);
        return NULL;
    }
    char *d = strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (d == NULL) {
        config_fail(ld, v, "out of memory");
    }
    return d;
}

static void config_free_secret(char **p)
{
    if (*p != NULL) {
        OPENSSL_cleanse(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

/* --- sections -------------------------------------------------------------- */

static const struct config_enum config_log_levels[] = {
    {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"info", LOG_INFO}, {"debug", LOG_DEBUG},
};
static const struct config_enum config_log_targets[] = {
    {"stderr", CONFIG_LOG_STDERR}, {"syslog", CONFIG_LOG_SYSLOG},
};
static const struct config_enum config_listener_modes[] = {
    {"implicit", CONFIG_LISTENER_IMPLICIT}, {"starttls", CONFIG_LISTENER_STARTTLS},
};
static const struct config_enum config_backend_auths[] = {
    {"passthrough", CONFIG_BACKEND_AUTH_PASSTHROUGH}, {"master", CONFIG_BACKEND_AUTH_MASTER},
};
static const struct config_enum config_unknown_users[] = {
    {"reject", 0}, {"passthrough", 1},
};
static const struct config_enum config_audit_policies[] = {
    {"block", CONFIG_AUDIT_BLOCK}, {"drop", CONFIG_AUDIT_DROP}, {"close", CONFIG_AUDIT_CLOSE},
};
static const struct config_enum config_syslog_facilities[] = {
    {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
    {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
    {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7}, {"authpriv", LOG_AUTHPRIV},
    {"daemon", LOG_DAEMON},
};
static const struct config_enum config_redis_error_policies[] = {
    {"allow", 0}, {"refuse", 1},
};
static const struct config_enum config_park_modes[] = {
    {"returning", CONFIG_PARK_RETURNING}, {"always", CONFIG_PARK_ALWAYS},
};
static const struct config_enum config_backend_modes[] = {
    {"none", CONFIG_BACKEND_TLS_NONE},
    {"starttls", CONFIG_BACKEND_TLS_STARTTLS},
    {"implicit", CONFIG_BACKEND_TLS_IMPLICIT},
};

static void config_log_pair(struct config_loader *ld, struct config *c, const char *prefix,
                            const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    char kp[128];
    int e;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "level") == 0) {
        if (CONFIG_ENUM(ld, v, kp, config_log_levels, &e) == 0) {
            c->log_level = e;
        }
    } else if (strcmp(key, "target") == 0) {
        if (CONFIG_ENUM(ld, v, kp, config_log_targets, &e) == 0) {
            c->log_target = (enum config_log_target)e;
        }
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

static void config_certificates(struct config_loader *ld, struct config *c, yaml_node_t *v);

static void config_tls_pair(struct config_loader *ld, struct config *c, const char *prefix,
                            const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    char kp[128];
    char **dst;
    unsigned long n;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "certificates") == 0) {
        config_certificates(ld, c, v);
        return;
    } else if (strcmp(key, "expiry_warning_days") == 0) {
        if (config_uint(ld, v, kp, 0, 3650, &n) == 0) {
            c->tls_expiry_warning_days = (unsigned)n;
        }
        return;
    } else if (strcmp(key, "cert") == 0) {
        dst = &c->tls_cert_file;
    } else if (strcmp(key, "key") == 0) {
        dst = &c->tls_key_file;
    } else if (strcmp(key, "session_tickets") == 0) {
        config_bool(ld, v, kp, &c->tls_session_tickets);
        return;
    } else {
        config_fail(ld, k, "unknown key %s", kp);
        return;
    }
    free(*dst);
    *dst = config_string(ld, v, kp);
    if (*dst != NULL && access(*dst, R_OK) != 0) {
        config_fail(ld, v, "%s: cannot read %s: %s", kp, *dst, strerror(errno));
    }
}

struct config_limit {
    const char *name;
    size_t offset;       /* in struct config */
    int is_size;         /* size_t, else unsigned */
    unsigned long min;
    unsigned long max;   /* 0: 1 GiB for sizes, UINT_MAX else */
};

#define CONFIG_MAX_VERIFY_THREADS 256   /* threads of the password check pool */
#define CONFIG_MAX_VERIFY_QUEUE 1000000 /* password checks queued or running */
#define CONFIG_MIN_SESSION_LEASE_MS 300       /* a lease renewed every 100 ms at most */
#define CONFIG_MAX_SESSION_LEASE_MS 86400000  /* a day */
#define CONFIG_MAX_PROXY_HEADER_TIMEOUT_MS 600000 /* a PROXY header's wait, at most */
#define CONFIG_MAX_PROXY_TRUSTED 256    /* networks in a listener's proxy_trusted */

static const struct config_limit config_limits[] = {
    {"max_line_len", offsetof(struct config, max_line_len), 1, 1024, 0},
    {"max_preauth_literal_len", offsetof(struct config, max_preauth_literal_len), 1, 1, 0},
    {"max_auth_failures", offsetof(struct config, max_auth_failures), 0, 1, 0},
    {"preauth_timeout_ms", offsetof(struct config, preauth_timeout_ms), 0, 100, 0},
    {"idle_timeout_ms", offsetof(struct config, idle_timeout_ms), 0, 1000, 0},
    {"drain_timeout_ms", offsetof(struct config, drain_timeout_ms), 0, 1, 0},
    {"backend_connect_timeout_ms", offsetof(struct config, backend_connect_timeout_ms), 0, 100, 0},
    {"backend_greeting_timeout_ms", offsetof(struct config, backend_greeting_timeout_ms), 0, 100,
     0},
    {"relay_buffer_len", offsetof(struct config, relay_buffer_len), 1, 4096, 0},
    {"verify_threads", offsetof(struct config, verify_threads), 0, 0, CONFIG_MAX_VERIFY_THREADS},
    {"verify_queue", offsetof(struct config, verify_queue), 0, 1, CONFIG_MAX_VERIFY_QUEUE},
    {"verify_per_client", offsetof(struct config, verify_per_client), 0, 0,
     CONFIG_MAX_VERIFY_QUEUE},
    {"max_connections", offsetof(struct config, max_connections), 0, 0, 0},
    {"max_connections_per_ip", offsetof(struct config, max_connections_per_ip), 0, 0, 0},
    {"max_connections_per_ipv6_prefix",
     offsetof(struct config, max_connections_per_ipv6_prefix), 0, 0, 0},
    {"ipv6_prefix_len", offsetof(struct config, ipv6_prefix_len), 0, 1, 128},
    {"max_sessions_per_user", offsetof(struct config, max_sessions_per_user), 0, 0, 0},
    {"max_sessions_per_user_ip", offsetof(struct config, max_sessions_per_user_ip), 0, 0, 0},
    {"session_lease_ms", offsetof(struct config, session_lease_ms), 0, 0,
     CONFIG_MAX_SESSION_LEASE_MS},
    {"proxy_header_timeout_ms", offsetof(struct config, proxy_header_timeout_ms), 0, 100,
     CONFIG_MAX_PROXY_HEADER_TIMEOUT_MS},
};

static void config_limits_pair(struct config_loader *ld, struct config *c, const char *prefix,
                               const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    char kp[128];
    unsigned long val;
    int e;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "on_redis_error") == 0) {
        if (CONFIG_ENUM(ld, v, kp, config_redis_error_policies, &e) == 0) {
            c->session_limits_refuse = e;
        }
        return;
    }
    for (size_t i = 0; i < sizeof(config_limits) / sizeof(config_limits[0]); i++) {
        const struct config_limit *l = &config_limits[i];
        if (strcmp(key, l->name) != 0) {
            continue;
        }
        unsigned long max = l->max != 0 ? l->max : l->is_size ? 1ul << 30 : UINT_MAX;
        if (config_uint(ld, v, kp, l->min, max, &val) != 0) {
            return;
        }
        if (l->is_size) {
            *(size_t *)((char *)c + l->offset) = val;
        } else {
            *(unsigned *)((char *)c + l->offset) = (unsigned)val;
        }
        return;
    }
    config_fail(ld, k, "unknown key %s", kp);
}

static size_t config_sequence(struct config_loader *ld, yaml_node_t *n, const char *key);

/* config_proxy_trusted reads a listener's list of trusted networks (CIDR). */
static void config_proxy_trusted(struct config_loader *ld, yaml_node_t *v, const char *kp,
                                 struct config_listener *l)
{
    size_t num = config_sequence(ld, v, kp);
    if (ld->failed) {
        return;
    }
    if (num == 0 || num > CONFIG_MAX_PROXY_TRUSTED) {
        config_fail(ld, v, "%s: expected 1-%d networks", kp, CONFIG_MAX_PROXY_TRUSTED);
        return;
    }
    free(l->proxy_trusted);
    l->num_proxy_trusted = 0;
    l->proxy_trusted = calloc(num, sizeof(*l->proxy_trusted));
    if (l->proxy_trusted == NULL) {
        config_fail(ld, v, "out of memory");
        return;
    }
    for (size_t i = 0; i < num; i++) {
        yaml_node_t *item = config_node(ld, v->data.sequence.items.start[i]);
        const char *text = item != NULL ? config_scalar(ld, item, kp) : NULL;
        if (text == NULL) {
            if (!ld->failed) {
                config_fail(ld, v, "%s: expected a list of networks", kp);
            }
            return;
        }
        if (proxy_proto_net_parse(&l->proxy_trusted[i], text) != 0) {
            config_fail(ld, item, "%s: %s is not a network (address/prefix length)", kp, text);
            return;
        }
        l->num_proxy_trusted = i + 1;
    }
}

static void config_listener_pair(struct config_loader *ld, struct config *c, const char *prefix,
                                 const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    struct config_listener *l = arg;
    char kp[128];
    unsigned long port;
    int e;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "address") == 0) {
        unsigned char buf[16];
        free(l->address);
        l->address = config_string(ld, v, kp);
        if (l->address != NULL && inet_pton(AF_INET, l->address, buf) != 1 &&
            inet_pton(AF_INET6, l->address, buf) != 1) {
            config_fail(ld, v, "%s: expected a numeric IPv4 or IPv6 address", kp);
        }
    } else if (strcmp(key, "port") == 0) {
        if (config_uint(ld, v, kp, 1, 65535, &port) == 0) {
            l->port = (uint16_t)port;
        }
    } else if (strcmp(key, "tls") == 0) {
        if (CONFIG_ENUM(ld, v, kp, config_listener_modes, &e) == 0) {
            l->tls = (enum config_listener_tls)e;
        }
    } else if (strcmp(key, "proxy_protocol") == 0) {
        config_bool(ld, v, kp, &l->proxy_protocol);
    } else if (strcmp(key, "proxy_tls_terminated") == 0) {
        config_bool(ld, v, kp, &l->proxy_tls_terminated);
    } else if (strcmp(key, "proxy_header_timeout_ms") == 0) {
        if (config_uint(ld, v, kp, 100, CONFIG_MAX_PROXY_HEADER_TIMEOUT_MS, &port) == 0) {
            l->proxy_header_timeout_ms = (unsigned)port;
        }
    } else if (strcmp(key, "proxy_trusted") == 0) {
        config_proxy_trusted(ld, v, kp, l);
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

static void config_backend_pair(struct config_loader *ld, struct config *c, const char *prefix,
                                const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    struct config_backend *b = arg;
    char kp[128];
    unsigned long n; /* a number read from the file */
    int e;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "name") == 0) {
        free(b->name);
        b->name = config_string(ld, v, kp);
    } else if (strcmp(key, "host") == 0) {
        free(b->host);
        b->host = config_string(ld, v, kp);
    } else if (strcmp(key, "port") == 0) {
        if (config_uint(ld, v, kp, 1, 65535, &n) == 0) {
            b->port = (uint16_t)n;
        }
    } else if (strcmp(key, "tls") == 0) {
        if (CONFIG_ENUM(ld, v, kp, config_backend_modes, &e) == 0) {
            b->tls = (enum config_backend_tls)e;
        }
    } else if (strcmp(key, "verify") == 0) {
        config_bool(ld, v, kp, &b->tls_verify);
    } else if (strcmp(key, "forward_id") == 0) {
        config_bool(ld, v, kp, &b->forward_id);
    } else if (strcmp(key, "passthrough_authzid") == 0) {
        config_bool(ld, v, kp, &b->passthrough_authzid);
    } else if (strcmp(key, "pool_size") == 0) {
        if (config_uint(ld, v, kp, 0, 10000, &n) == 0) {
            b->pool_size = (unsigned)n;
        }
    } else if (strcmp(key, "pool_max_idle_ms") == 0) {
        if (config_uint(ld, v, kp, 1000, 86400000, &n) == 0) {
            b->pool_max_idle_ms = (unsigned)n;
        }
    } else if (strcmp(key, "proxy_protocol") == 0) {
        static const struct config_enum modes[] = {{"none", 0}, {"v2", 2}};
        if (CONFIG_ENUM(ld, v, kp, modes, &e) == 0) {
            b->proxy_protocol = e;
        }
    } else if (strcmp(key, "pool_check_interval_ms") == 0) {
        if (config_uint(ld, v, kp, 100, 86400000, &n) == 0) {
            b->pool_check_interval_ms = (unsigned)n;
        }
    } else if (strcmp(key, "ca_file") == 0) {
        free(b->ca_file);
        b->ca_file = config_string(ld, v, kp);
        if (b->ca_file != NULL && access(b->ca_file, R_OK) != 0) {
            config_fail(ld, v, "%s: cannot read %s: %s", kp, b->ca_file, strerror(errno));
        }
    } else if (strcmp(key, "server_name") == 0) {
        free(b->server_name);
        b->server_name = config_string(ld, v, kp);
    } else if (strcmp(key, "hosts") == 0) {
        config_hosts(ld, v, kp, &b->hosts, &b->num_hosts);
    } else if (strcmp(key, "auth") == 0) {
        if (CONFIG_ENUM(ld, v, kp, config_backend_auths, &e) == 0) {
            b->auth = (enum config_backend_auth)e;
        }
    } else if (strcmp(key, "master_user") == 0) {
        free(b->master_user);
        b->master_user = config_string(ld, v, kp);
    } else if (strcmp(key, "master_password") == 0) {
        config_free_secret(&b->master_password);
        b->master_password = config_string(ld, v, kp);
    } else if (strcmp(key, "master_password_file") == 0) {
        config_free_secret(&b->master_password);
        b->master_password = config_secret_file(ld, v, kp);
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

/* config_sequence checks n is a sequence and returns its length. */
static size_t config_sequence(struct config_loader *ld, yaml_node_t *n, const char *key)
{
    if (n->type != YAML_SEQUENCE_NODE) {
        config_fail(ld, n, "%s: expected a list", key);
        return 0;
    }
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static void config_listeners(struct config_loader *ld, struct config *c, yaml_node_t *v)
{
    size_t num = config_sequence(ld, v, "listeners");
    if (ld->failed || num == 0) {
        return;
    }
    c->listeners = calloc(num, sizeof(*c->listeners));
    if (c->listeners == NULL) {
        config_fail(ld, v, "out of memory");
        return;
    }
    for (size_t i = 0; i < num && !ld->failed; i++) {
        yaml_node_t *item = config_node(ld, v->data.sequence.items.start[i]);
        struct config_listener *l = &c->listeners[i];
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "listeners[%zu]", i);
        c->num_listeners = i + 1;
        l->tls = (enum config_listener_tls)-1;
        config_each_pair(ld, c, item, prefix, config_listener_pair, l);
        if (ld->failed) {
            return;
        }
        if (l->address == NULL || l->port == 0 || (int)l->tls == -1) {
            config_fail(ld, item, "%s: address, port and tls are required", prefix);
        } else if (l->proxy_protocol && l->num_proxy_trusted == 0) {
            config_fail(ld, item, "%s: proxy_protocol needs proxy_trusted (the balancers' networks)",
                        prefix);
        } else if (!l->proxy_protocol && (l->num_proxy_trusted > 0 || l->proxy_tls_terminated ||
                                          l->proxy_header_timeout_ms != 0)) {
            config_fail(ld, item, "%s: proxy_trusted, proxy_tls_terminated and "
                        "proxy_header_timeout_ms need proxy_protocol: true", prefix);
        } else if (l->proxy_tls_terminated && l->tls != CONFIG_LISTENER_STARTTLS) {
            config_fail(ld, item, "%s: proxy_tls_terminated is for a cleartext (starttls) listener",
                        prefix);
        }
    }
}

static void config_backends(struct config_loader *ld, struct config *c, yaml_node_t *v)
{
    size_t num = config_sequence(ld, v, "backends");
    if (ld->failed || num == 0) {
        return;
    }
    c->backends = calloc(num, sizeof(*c->backends));
    if (c->backends == NULL) {
        config_fail(ld, v, "out of memory");
        return;
    }
    for (size_t i = 0; i < num && !ld->failed; i++) {
        yaml_node_t *item = config_node(ld, v->data.sequence.items.start[i]);
        struct config_backend *b = &c->backends[i];
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "backends[%zu]", i);
        c->num_backends = i + 1;
        b->tls_verify = 1;
        b->pool_max_idle_ms = 45000;
        b->pool_check_interval_ms = 15000;
        config_each_pair(ld, c, item, prefix, config_backend_pair, b);
        if (ld->failed) {
            return;
        }
        if (b->name == NULL || !schema_name_valid(b->name)) {
            config_fail(ld, item, "%s: name is required: 1-%d of A-Z a-z 0-9 . _ -", prefix,
                        SCHEMA_MAX_NAME_LEN);
            return;
        }
        if (b->num_hosts > 0 && (b->host != NULL || b->port != 0)) {
            config_fail(ld, item, "%s: give either host and port or hosts, not both", prefix);
            return;
        }
        if (b->num_hosts == 0) {
            if (b->host == NULL || b->port == 0) {
                config_fail(ld, item, "%s: host and port (or hosts) are required", prefix);
                return;
            }
            b->hosts = calloc(1, sizeof(*b->hosts));
            if (b->hosts == NULL || strlen(b->host) >= sizeof(b->hosts->host)) {
                config_fail(ld, item, "%s: host name too long", prefix);
                return;
            }
            strcpy(b->hosts->host, b->host);
            b->hosts->port = b->port;
            b->num_hosts = 1;
        } else {
            b->host = strdup(b->hosts[0].host);
            b->port = b->hosts[0].port;
            if (b->host == NULL) {
                config_fail(ld, item, "out of memory");
                return;
            }
        }
        if (b->auth == CONFIG_BACKEND_AUTH_MASTER &&
            (b->master_user == NULL || b->master_password == NULL)) {
            config_fail(ld, item, "%s: auth master needs master_user and master_password "
                        "(or master_password_file)", prefix);
            return;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->backends[j].name, b->name) == 0) {
                config_fail(ld, item, "%s: duplicate backend name %s", prefix, b->name);
                return;
            }
        }
    }
}

const struct config_backend *config_find_backend(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->num_backends; i++) {
        if (strcmp(c->backends[i].name, name) == 0) {
            return &c->backends[i];
        }
    }
    return NULL;
}

struct config_route_table {
    struct config_route **routes;
    size_t *num;
};

static void config_route_pair(struct config_loader *ld, struct config *c, const char *prefix,
                              const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    struct config_route_table *t = arg;
    char kp[300];
    config_key_path(kp, sizeof(kp), prefix, key);
    const char *target = config_scalar(ld, v, kp);
    if (target == NULL) {
        return;
    }
    const struct config_backend *b = config_find_backend(c, target);
    if (b == NULL) {
        config_fail(ld, v, "%s: unknown backend %s", kp, target);
        return;
    }
    for (size_t i = 0; i < *t->num; i++) {
        if (strcasecmp((*t->routes)[i].key, key) == 0) {
            config_fail(ld, k, "%s: duplicate route", kp);
            return;
        }
    }
    struct config_route *nr = realloc(*t->routes, (*t->num + 1) * sizeof(**t->routes));
    char *lk = strdup(key);
    if (nr == NULL || lk == NULL) {
        free(lk);
        if (nr != NULL) {
            *t->routes = nr;
        }
        config_fail(ld, k, "out of memory");
        return;
    }
    for (char *p = lk; *p; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            *p = (char)(*p - 'A' + 'a');
        }
    }
    *t->routes = nr;
    nr[*t->num].key = lk;
    nr[*t->num].backend = b;
    (*t->num)++;
}

static void config_routes_pair(struct config_loader *ld, struct config *c, const char *prefix,
                               const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    char kp[128];
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "default") == 0) {
        const char *name = config_scalar(ld, v, kp);
        if (name == NULL) {
            return;
        }
        c->default_backend = config_find_backend(c, name);
        if (c->default_backend == NULL) {
            config_fail(ld, v, "%s: unknown backend %s", kp, name);
        }
    } else if (strcmp(key, "domains") == 0) {
        struct config_route_table t = {&c->domain_routes, &c->num_domain_routes};
        config_each_pair(ld, c, v, kp, config_route_pair, &t);
    } else if (strcmp(key, "users") == 0) {
        struct config_route_table t = {&c->user_routes, &c->num_user_routes};
        config_each_pair(ld, c, v, kp, config_route_pair, &t);
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

static void config_redis_pair(struct config_loader *ld, struct config *c, const char *prefix,
                              const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    struct config_redis *r = &c->redis;
    char kp[128];
    unsigned long n;
    int e;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "host") == 0) {
        free(r->host);
        r->host = config_string(ld, v, kp);
    } else if (strcmp(key, "port") == 0) {
        if (config_uint(ld, v, kp, 1, 65535, &n) == 0) {
            r->port = (uint16_t)n;
        }
    } else if (strcmp(key, "password") == 0) {
        config_free_secret(&r->password);
        r->password = config_string(ld, v, kp);
    } else if (strcmp(key, "password_file") == 0) {
        config_free_secret(&r->password);
        r->password = config_secret_file(ld, v, kp);
    } else if (strcmp(key, "db") == 0) {
        if (config_uint(ld, v, kp, 0, 15, &n) == 0) {
            r->db = (unsigned)n;
        }
    } else if (strcmp(key, "prefix") == 0) {
        free(r->prefix);
        r->prefix = config_string(ld, v, kp);
        if (r->prefix != NULL && strlen(r->prefix) > 64) {
            config_fail(ld, v, "%s: at most 64 bytes", kp);
        }
    } else if (strcmp(key, "sentinels") == 0) {
        config_hosts(ld, v, kp, &r->sentinels, &r->num_sentinels);
    } else if (strcmp(key, "master_name") == 0) {
        free(r->master_name);
        r->master_name = config_string(ld, v, kp);
    } else if (strcmp(key, "sentinel_password") == 0) {
        config_free_secret(&r->sentinel_password);
        r->sentinel_password = config_string(ld, v, kp);
    } else if (strcmp(key, "sentinel_password_file") == 0) {
        config_free_secret(&r->sentinel_password);
        r->sentinel_password = config_secret_file(ld, v, kp);
    } else if (strcmp(key, "connect_timeout_ms") == 0) {
        if (config_uint(ld, v, kp, 10, 600000, &n) == 0) {
            r->connect_timeout_ms = (unsigned)n;
        }
    } else if (strcmp(key, "command_timeout_ms") == 0) {
        if (config_uint(ld, v, kp, 10, 600000, &n) == 0) {
            r->command_timeout_ms = (unsigned)n;
        }
    } else if (strcmp(key, "reconnect_max_ms") == 0) {
        if (config_uint(ld, v, kp, 10, 600000, &n) == 0) {
            r->reconnect_max_ms = (unsigned)n;
        }
    } else if (strcmp(key, "cache_ttl_ms") == 0) {
        if (config_uint(ld, v, kp, 0, 3600000, &n) == 0) {
            r->cache_ttl_ms = (unsigned)n;
        }
    } else if (strcmp(key, "unknown_users") == 0) {
        if (CONFIG_ENUM(ld, v, kp, config_unknown_users, &e) == 0) {
            r->unknown_users_passthrough = e;
        }
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

struct config_uint_field {
    const char *name;
    size_t offset; /* unsigned, in struct config_bruteforce */
    unsigned long min, max;
};

static const struct config_uint_field config_bf_fields[] = {
    {"window_s", offsetof(struct config_bruteforce, window_s), 1, 86400 * 7},
    {"delay_after", offsetof(struct config_bruteforce, delay_after), 0, 1000000},
    {"delay_ms", offsetof(struct config_bruteforce, delay_ms), 0, 60000},
    {"max_delay_ms", offsetof(struct config_bruteforce, max_delay_ms), 0, 60000},
    {"block_ip_after", offsetof(struct config_bruteforce, block_ip_after), 1, 100000000},
    {"block_pair_after", offsetof(struct config_bruteforce, block_pair_after), 1, 100000000},
    {"block_login_after", offsetof(struct config_bruteforce, block_pair_after), 1, 100000000},
    {"trusted_ttl_s", offsetof(struct config_bruteforce, trusted_ttl_s), 60, 86400 * 400},
};

static void config_park_clients_free(struct config_session_cache *sc)
{
    for (size_t i = 0; i < sc->num_park_clients; i++) {
        free(sc->park_clients[i]);
    }
    free(sc->park_clients);
    sc->park_clients = NULL;
    sc->num_park_clients = 0;
}

/* config_park_clients reads session_cache.park_clients: a list of ID names. */
static void config_park_clients(struct config_loader *ld, yaml_node_t *v, const char *kp,
                                struct config_session_cache *sc)
{
    size_t num = config_sequence(ld, v, kp);
    config_park_clients_free(sc);
    if (num > CONFIG_MAX_PARK_CLIENTS) {
        config_fail(ld, v, "%s: at most %d names", kp, CONFIG_MAX_PARK_CLIENTS);
        return;
    }
    if (num == 0) {
        return;
    }
    sc->park_clients = calloc(num, sizeof(*sc->park_clients));
    if (sc->park_clients == NULL) {
        config_fail(ld, v, "%s: out of memory", kp);
        return;
    }
    for (size_t i = 0; i < num; i++) {
        yaml_node_t *item = config_node(ld, v->data.sequence.items.start[i]);
        char *name = config_string(ld, item, kp);
        if (name == NULL) {
            return;
        }
        sc->park_clients[sc->num_park_clients++] = name;
        if (name[0] == '\0' || strlen(name) > CONFIG_MAX_PARK_CLIENT_LEN) {
            config_fail(ld, item, "%s: a name of 1 to %d bytes", kp, CONFIG_MAX_PARK_CLIENT_LEN);
            return;
        }
    }
}

static void config_cache_pair(struct config_loader *ld, struct config *c, const char *prefix,
                              const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    struct config_session_cache *sc = &c->session_cache;
    char kp[128];
    unsigned long n;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "enabled") == 0) {
        config_bool(ld, v, kp, &sc->enabled);
    } else if (strcmp(key, "ttl_ms") == 0) {
        if (config_uint(ld, v, kp, 100, 3600000, &n) == 0) {
            sc->ttl_ms = (unsigned)n;
        }
    } else if (strcmp(key, "max_per_user") == 0) {
        if (config_uint(ld, v, kp, 1, 1000, &n) == 0) {
            sc->max_per_user = (unsigned)n;
        }
    } else if (strcmp(key, "max_total") == 0) {
        if (config_uint(ld, v, kp, 1, 1000000, &n) == 0) {
            sc->max_total = (unsigned)n;
        }
    } else if (strcmp(key, "park") == 0) {
        int e;
        if (CONFIG_ENUM(ld, v, kp, config_park_modes, &e) == 0) {
            sc->park = (enum config_park)e;
        }
    } else if (strcmp(key, "seen_slots") == 0) {
        if (config_uint(ld, v, kp, 16, 16777216, &n) == 0) {
            sc->seen_slots = (unsigned)n;
        }
    } else if (strcmp(key, "park_clients") == 0) {
        config_park_clients(ld, v, kp, sc);
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

static void config_relay_pair(struct config_loader *ld, struct config *c, const char *prefix,
                              const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    struct config_relay *r = &c->relay;
    char kp[128];
    unsigned long n;
    (void)arg;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "compress") == 0) {
        config_bool(ld, v, kp, &r->compress);
    } else if (strcmp(key, "max_line_len") == 0) {
        if (config_uint(ld, v, kp, 1024, 1048576, &n) == 0) {
            r->max_line_len = n;
        }
    } else if (strcmp(key, "allowed_commands") == 0) {
        size_t num = config_sequence(ld, v, kp);
        if (num > CONFIG_RELAY_MAX_ALLOWED) {
            config_fail(ld, v, "%s: at most %d commands", kp, CONFIG_RELAY_MAX_ALLOWED);
            return;
        }
        for (size_t i = 0; i < r->num_allowed_commands; i++) {
            free(r->allowed_commands[i]);
        }
        free(r->allowed_commands);
        r->allowed_commands = NULL;
        r->num_allowed_commands = 0;
        if (num == 0) {
            return;
        }
        r->allowed_commands = calloc(num, sizeof(*r->allowed_commands));
        if (r->allowed_commands == NULL) {
            config_fail(ld, v, "%s: out of memory", kp);
            return;
        }
        for (size_t i = 0; i < num; i++) {
            yaml_node_t *item = config_node(ld, v->data.sequence.items.start[i]);
            char *name = config_string(ld, item, kp);
            if (name == NULL) {
                return;
            }
            size_t len = strlen(name);
            int ok = len > 0 && len <= 31;
            for (size_t j = 0; j < len; j++) {
                char ch = name[j];
                if (ch >= 'a' && ch <= 'z') {
                    name[j] = (char)(ch - 'a' + 'A');
                } else if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                             ch == '_' || ch == '.')) {
                    ok = 0;
                }
            }
            r->allowed_commands[r->num_allowed_commands++] = name;
            if (!ok) {
                config_fail(ld, item, "%s: %s is not a command name", kp, name);
                return;
            }
        }
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

static void config_bf_pair(struct config_loader *ld, struct config *c, const char *prefix,
                           const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    char kp[128];
    unsigned long n;
    int *enabled_set = arg;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "enabled") == 0) {
        if (config_bool(ld, v, kp, &c->bruteforce.enabled) == 0) {
            *enabled_set = 1;
        }
        return;
    }
    for (size_t i = 0; i < sizeof(config_bf_fields) / sizeof(config_bf_fields[0]); i++) {
        const struct config_uint_field *f = &config_bf_fields[i];
        if (strcmp(key, f->name) == 0) {
            if (config_uint(ld, v, kp, f->min, f->max, &n) == 0) {
                *(unsigned *)((char *)&c->bruteforce + f->offset) = (unsigned)n;
            }
            return;
        }
    }
    config_fail(ld, k, "unknown key %s", kp);
}

static void config_audit_redis_pair(struct config_loader *ld, struct config *c,
                                    const char *prefix, const char *key, yaml_node_t *k,
                                    yaml_node_t *v, void *arg)
{
    struct config_audit *a = &c->audit;
    char kp[128];
    unsigned long n;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "host") == 0) {
        free(a->redis_host);
        a->redis_host = config_string(ld, v, kp);
    } else if (strcmp(key, "port") == 0) {
        if (config_uint(ld, v, kp, 1, 65535, &n) == 0) {
            a->redis_port = (uint16_t)n;
        }
    } else if (strcmp(key, "password") == 0) {
        config_free_secret(&a->redis_password);
        a->redis_password = config_string(ld, v, kp);
    } else if (strcmp(key, "password_file") == 0) {
        config_free_secret(&a->redis_password);
        a->redis_password = config_secret_file(ld, v, kp);
    } else if (strcmp(key, "db") == 0) {
        if (config_uint(ld, v, kp, 0, 15, &n) == 0) {
            a->redis_db = (unsigned)n;
        }
    } else if (strcmp(key, "key") == 0) {
        free(a->redis_key);
        a->redis_key = config_string(ld, v, kp);
    } else if (strcmp(key, "maxlen") == 0) {
        if (config_uint(ld, v, kp, 1, 4000000000UL, &n) == 0) {
            a->redis_maxlen = n;
        }
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

static void config_audit_pair(struct config_loader *ld, struct config *c, const char *prefix,
                              const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    struct config_audit *a = &c->audit;
    char kp[128];
    unsigned long n;
    int e;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "file") == 0) {
        free(a->file);
        a->file = config_string(ld, v, kp);
    } else if (strcmp(key, "stdout") == 0) {
        (void)config_bool(ld, v, kp, &a->to_stdout);
    } else if (strcmp(key, "syslog") == 0) {
        (void)config_bool(ld, v, kp, &a->to_syslog);
    } else if (strcmp(key, "syslog_facility") == 0) {
        if (CONFIG_ENUM(ld, v, kp, config_syslog_facilities, &e) == 0) {
            a->syslog_facility = e;
        }
    } else if (strcmp(key, "redis_stream") == 0) {
        a->to_redis = 1;
        config_each_pair(ld, c, v, kp, config_audit_redis_pair, NULL);
    } else if (strcmp(key, "queue_bytes") == 0) {
        if (config_uint(ld, v, kp, 4096, 1UL << 30, &n) == 0) {
            a->queue_bytes = n;
        }
    } else if (strcmp(key, "policy") == 0) {
        if (CONFIG_ENUM(ld, v, kp, config_audit_policies, &e) == 0) {
            a->policy = (enum config_audit_policy)e;
        }
    } else if (strcmp(key, "seqset_max") == 0) {
        if (config_uint(ld, v, kp, 8, 4096, &n) == 0) {
            a->seqset_max = n;
        }
    } else if (strcmp(key, "search_values") == 0) {
        (void)config_bool(ld, v, kp, &a->search_values);
    } else if (strcmp(key, "max_pending") == 0) {
        if (config_uint(ld, v, kp, 1, 100000, &n) == 0) {
            a->max_pending = (unsigned)n;
        }
    } else if (strcmp(key, "preauth_records") == 0) {
        if (config_uint(ld, v, kp, 0, 100000, &n) == 0) {
            a->preauth_records = (unsigned)n;
        }
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

static void config_backend_template(struct config_loader *ld, struct config *c, yaml_node_t *v);
/* config_admin_listen reads "address:port", "[v6 address]:port" or a bare
 * port (on 127.0.0.1) into the admin section. */
static void config_admin_listen(struct config_loader *ld, struct config_admin *a,
                                yaml_node_t *v, const char *kp)
{
    const char *s = config_scalar(ld, v, kp);
    char host[64];
    const char *port;
    struct netaddr na;
    if (s == NULL) {
        return;
    }
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host)) {
            config_fail(ld, v, "%s: expected address:port or [address]:port", kp);
            return;
        }
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        port = end + 2;
    } else if (strchr(s, ':') == NULL) {
        snprintf(host, sizeof(host), "127.0.0.1");
        port = s;
    } else {
        const char *colon = strrchr(s, ':');
        if (memchr(s, ':', (size_t)(colon - s)) != NULL || (size_t)(colon - s) >= sizeof(host)) {
            config_fail(ld, v, "%s: an IPv6 address goes in brackets: [address]:port", kp);
            return;
        }
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port = colon + 1;
    }
    char *end;
    errno = 0;
    unsigned long p = strtoul(port, &end, 10);
    if (port[0] < '0' || port[0] > '9' || *end != '\0' || errno != 0 || p < 1 || p > 65535) {
        config_fail(ld, v, "%s: expected a port 1-65535", kp);
        return;
    }
    if (netaddr_parse(&na, host) != 0 || strchr(host, '%') != NULL) {
        config_fail(ld, v, "%s: %s is not a numeric address", kp, host);
        return;
    }
    free(a->address);
    a->address = strdup(host);
    if (a->address == NULL) {
        config_fail(ld, v, "out of memory");
        return;
    }
    a->port = (uint16_t)p;
    a->enabled = 1;
}

static void config_admin_pair(struct config_loader *ld, struct config *c, const char *prefix,
                              const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    struct config_admin *a = &c->admin;
    char kp[128];
    (void)arg;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "listen") == 0) {
        config_admin_listen(ld, a, v, kp);
    } else if (strcmp(key, "token_file") == 0) {
        config_free_secret(&a->token);
        a->token = config_secret_file(ld, v, kp);
    } else if (strcmp(key, "allow") == 0) {
        size_t num = config_sequence(ld, v, kp);
        if (num > CONFIG_ADMIN_MAX_ALLOW) {
            config_fail(ld, v, "%s: at most %d networks", kp, CONFIG_ADMIN_MAX_ALLOW);
            return;
        }
        free(a->allow);
        a->allow = NULL;
        a->num_allow = 0;
        if (ld->failed || num == 0) {
            return;
        }
        a->allow = calloc(num, sizeof(*a->allow));
        if (a->allow == NULL) {
            config_fail(ld, v, "out of memory");
            return;
        }
        for (size_t i = 0; i < num && !ld->failed; i++) {
            yaml_node_t *item = config_node(ld, v->data.sequence.items.start[i]);
            const char *text = config_scalar(ld, item, kp);
            if (text == NULL) {
                return;
            }
            if (netaddr_cidr_parse(&a->allow[i].net, &a->allow[i].prefix_len, text) != 0) {
                config_fail(ld, item, "%s: %s is not an address or address/length", kp, text);
                return;
            }
            a->num_allow = i + 1;
        }
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

static void config_oauth_pair(struct config_loader *ld, struct config *c, const char *prefix,
                              const char *key, yaml_node_t *k, yaml_node_t *v, void *arg);
static void config_oauth_free(struct config_oauth *o);

/* Top level: sections that others refer to (backends) are read first. */
static void config_top_pair(struct config_loader *ld, struct config *c, const char *prefix,
                            const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    int backends_pass = arg != NULL;
    unsigned long n;

    if (backends_pass) {
        if (strcmp(key, "backends") == 0) {
            config_backends(ld, c, v);
        }
        return;
    }
    if (strcmp(key, "backends") == 0) {
        return;
    } else if (strcmp(key, "instance") == 0) {
        free(c->instance);
        c->instance = config_string(ld, v, key);
    } else if (strcmp(key, "workers") == 0) {
        if (config_uint(ld, v, key, 0, 256, &n) == 0) {
            c->num_workers = (unsigned)n;
        }
    } else if (strcmp(key, "log") == 0) {
        config_each_pair(ld, c, v, key, config_log_pair, NULL);
    } else if (strcmp(key, "listeners") == 0) {
        config_listeners(ld, c, v);
    } else if (strcmp(key, "tls") == 0) {
        config_each_pair(ld, c, v, key, config_tls_pair, NULL);
    } else if (strcmp(key, "routes") == 0) {
        config_each_pair(ld, c, v, key, config_routes_pair, NULL);
    } else if (strcmp(key, "limits") == 0) {
        config_each_pair(ld, c, v, key, config_limits_pair, NULL);
    } else if (strcmp(key, "redis") == 0) {
        c->redis.enabled = 1;
        config_each_pair(ld, c, v, key, config_redis_pair, NULL);
    } else if (strcmp(key, "bruteforce") == 0) {
        config_each_pair(ld, c, v, key, config_bf_pair, &ld->bf_enabled_set);
    } else if (strcmp(key, "audit") == 0) {
        config_each_pair(ld, c, v, key, config_audit_pair, NULL);
    } else if (strcmp(key, "session_cache") == 0) {
        config_each_pair(ld, c, v, key, config_cache_pair, NULL);
    } else if (strcmp(key, "relay") == 0) {
        config_each_pair(ld, c, v, key, config_relay_pair, NULL);
    } else if (strcmp(key, "backend_template") == 0) {
        config_backend_template(ld, c, v);
    } else if (strcmp(key, "oauth") == 0) {
        config_each_pair(ld, c, v, key, config_oauth_pair, NULL);
    } else if (strcmp(key, "admin") == 0) {
        config_each_pair(ld, c, v, key, config_admin_pair, NULL);
        if (!ld->failed && !c->admin.enabled) {
            config_fail(ld, v, "admin: listen is required");
        }
    } else {
        config_fail(ld, k, "unknown key %s", key);
    }
}

static void config_defaults(struct config *c)
{
    atomic_init(&c->refs, 1);
    c->log_level = LOG_INFO;
    c->log_target = CONFIG_LOG_STDERR;
    c->max_line_len = 8192;
    c->relay.compress = 1;
    c->relay.max_line_len = 65536;
    c->max_preauth_literal_len = 8192;
    c->max_auth_failures = 3;
    c->preauth_timeout_ms = 60000;
    c->idle_timeout_ms = 1860000;
    c->drain_timeout_ms = 30000;
    c->backend_connect_timeout_ms = 10000;
    c->backend_greeting_timeout_ms = 15000;
    c->relay_buffer_len = 65536;
    c->verify_threads = 0;
    c->verify_queue = 256;
    c->verify_per_client = 64; /* a NAT or a webmail host is one address */
    c->max_connections = 0;
    c->max_connections_per_ip = 0;
    c->max_connections_per_ipv6_prefix = 0;
    c->ipv6_prefix_len = 64;
    c->session_lease_ms = 60000;
    c->proxy_header_timeout_ms = 5000;
    c->redis.port = 6379;
    c->audit.syslog_facility = LOG_LOCAL0;
    c->audit.redis_maxlen = 1000000;
    c->audit.queue_bytes = 1u << 20;
    c->audit.policy = CONFIG_AUDIT_BLOCK;
    c->audit.seqset_max = 256;
    c->audit.max_pending = 1024;
    c->audit.preauth_records = 16;
    c->session_cache.ttl_ms = 30000;
    c->session_cache.max_per_user = 2;
    c->session_cache.max_total = 1000;
    c->session_cache.park = CONFIG_PARK_RETURNING;
    c->session_cache.seen_slots = 16384;
    c->redis.connect_timeout_ms = 2000;
    c->redis.command_timeout_ms = 2000;
    c->redis.reconnect_max_ms = 5000;
    c->redis.cache_ttl_ms = 5000;
    c->bruteforce.window_s = 300;
    c->bruteforce.delay_after = 3;
    c->bruteforce.delay_ms = 500;
    c->bruteforce.max_delay_ms = 8000;
    c->bruteforce.block_ip_after = 50;
    c->bruteforce.block_pair_after = 10;
    c->bruteforce.trusted_ttl_s = 2592000;
    c->tls_expiry_warning_days = 14;
}

static void config_free_sni(struct config *c);

static void config_free(struct config *c)
{
    free(c->path);
    free(c->instance);
    for (size_t i = 0; i < c->num_listeners; i++) {
        free(c->listeners[i].address);
        free(c->listeners[i].proxy_trusted);
    }
    free(c->listeners);
    free(c->tls_cert_file);
    free(c->tls_key_file);
    for (size_t i = 0; i < c->num_backends; i++) {
        struct config_backend *b = &c->backends[i];
        free(b->name);
        free(b->host);
        free(b->ca_file);
        free(b->server_name);
        free(b->hosts);
        free(b->master_user);
        config_free_secret(&b->master_password);
    }
    free(c->backends);
    for (size_t i = 0; i < c->num_domain_routes; i++) {
        free(c->domain_routes[i].key);
    }
    free(c->domain_routes);
    for (size_t i = 0; i < c->num_user_routes; i++) {
        free(c->user_routes[i].key);
    }
    free(c->user_routes);
    free(c->redis.host);
    config_free_secret(&c->redis.password);
    free(c->redis.prefix);
    free(c->redis.sentinels);
    free(c->redis.master_name);
    config_free_secret(&c->redis.sentinel_password);
    free(c->audit.file);
    free(c->audit.redis_host);
    config_free_secret(&c->audit.redis_password);
    free(c->audit.redis_key);
    for (size_t i = 0; i < c->relay.num_allowed_commands; i++) {
        free(c->relay.allowed_commands[i]);
    }
    free(c->relay.allowed_commands);
    config_free_sni(c);
    config_oauth_free(&c->oauth);
    config_park_clients_free(&c->session_cache);
    free(c->admin.address);
    config_free_secret(&c->admin.token);
    free(c->admin.allow);
    free(c);
}

/* config_audit_finish fills the audit stream's defaults from the redis section. */
static int config_audit_finish(struct config_loader *ld, struct config *c, yaml_node_t *root)
{
    struct config_audit *a = &c->audit;
    a->enabled = a->file != NULL || a->to_stdout || a->to_syslog || a->to_redis;
    if (!a->to_redis) {
        return 0;
    }
    if (a->redis_host == NULL) {
        if (c->redis.host == NULL) {
            config_fail(ld, root, "audit.redis_stream: host is required (no redis host to share)");
            return -1;
        }
        a->redis_host = strdup(c->redis.host);
        a->redis_port = a->redis_port != 0 ? a->redis_port : c->redis.port;
        if (a->redis_password == NULL && c->redis.password != NULL) {
            a->redis_password = strdup(c->redis.password);
        }
        if (a->redis_host == NULL) {
            config_fail(ld, root, "out of memory");
            return -1;
        }
    }
    if (a->redis_port == 0) {
        a->redis_port = 6379;
    }
    if (a->redis_key == NULL) {
        char key[128];
        snprintf(key, sizeof(key), "%saudit",
                 c->redis.prefix != NULL ? c->redis.prefix : SCHEMA_DEFAULT_PREFIX);
        if ((a->redis_key = strdup(key)) == NULL) {
            config_fail(ld, root, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* config_from_parser reads the document parser is set up for into a new
 * snapshot named path; the caller deletes the parser after. */
static struct config *config_from_parser(char *err, size_t err_len, const char *path,
                                         yaml_parser_t *parser)
{
    struct config_loader ld;
    struct config *c;

    memset(&ld, 0, sizeof(ld));
    ld.path = path;
    ld.err = err;
    ld.err_len = err_len;
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, err_len, "%s: out of memory", path);
        return NULL;
    }
    config_defaults(c);
    if (!yaml_parser_load(parser, &ld.doc)) {
        snprintf(err, err_len, "%s:%lu: %s", path, (unsigned long)parser->problem_mark.line + 1,
                 parser->problem != NULL ? parser->problem : "YAML syntax error");
        config_free(c);
        return NULL;
    }

    yaml_node_t *root = yaml_document_get_root_node(&ld.doc);
    if (root == NULL) {
        snprintf(err, err_len, "%s:1: the file is empty", path);
        goto fail;
    }
    config_each_pair(&ld, c, root, "", config_top_pair, (void *)1);
    config_each_pair(&ld, c, root, "", config_top_pair, NULL);
    if (ld.failed) {
        goto fail;
    }
    if (c->num_backends == 0) {
        config_fail(&ld, root, "backends: at least one backend is required");
        goto fail;
    }
    if ((c->tls_cert_file == NULL) != (c->tls_key_file == NULL)) {
        config_fail(&ld, root, "tls: cert and key go together");
        goto fail;
    }
    if (c->num_listeners > 0 && c->tls_cert_file == NULL && c->num_certificates == 0) {
        config_fail(&ld, root, "tls: cert and key are required when listeners are configured");
        goto fail;
    }
    if (c->redis.enabled) {
        if (c->redis.host != NULL && c->redis.num_sentinels > 0) {
            config_fail(&ld, root, "redis: give either host or sentinels, not both");
            goto fail;
        }
        if (c->redis.host == NULL && c->redis.num_sentinels == 0) {
            config_fail(&ld, root, "redis: host (or sentinels and master_name) is required");
            goto fail;
        }
        if (c->redis.sentinel_password != NULL && c->redis.num_sentinels == 0) {
            config_fail(&ld, root, "redis: sentinel_password without sentinels");
            goto fail;
        }
        if (c->redis.num_sentinels > 0 && c->redis.master_name == NULL) {
            config_fail(&ld, root, "redis: sentinels need master_name");
            goto fail;
        }
        if (c->redis.prefix == NULL && (c->redis.prefix = strdup(SCHEMA_DEFAULT_PREFIX)) == NULL) {
            config_fail(&ld, root, "out of memory");
            goto fail;
        }
    }
    if (c->session_lease_ms != 0 && c->session_lease_ms < CONFIG_MIN_SESSION_LEASE_MS) {
        config_fail(&ld, root, "limits.session_lease_ms: expected 0 (off) or at least %u",
                    CONFIG_MIN_SESSION_LEASE_MS);
        goto fail;
    }
    if ((c->max_sessions_per_user > 0 || c->max_sessions_per_user_ip > 0) &&
        (!c->redis.enabled || c->session_lease_ms == 0)) {
        config_fail(&ld, root, "limits.max_sessions_per_user%s: sessions are counted in "
                    "redis: needs a redis section and session_lease_ms above 0",
                    c->max_sessions_per_user > 0 ? "" : "_ip");
        goto fail;
    }
    if (!ld.bf_enabled_set) {
        c->bruteforce.enabled = c->redis.enabled;
    } else if (c->bruteforce.enabled && !c->redis.enabled) {
        config_fail(&ld, root, "bruteforce: the shared counters need a redis section");
        goto fail;
    }
    if (config_audit_finish(&ld, c, root) != 0) {
        goto fail;
    }
    for (size_t i = 0; i < c->num_backends; i++) {
        if (c->backends[i].proxy_protocol != 0) {
            /* a warm connection is opened before its client is known: its
               PROXY header could not name the client */
            c->backends[i].pool_size = 0;
        }
    }
    for (size_t i = 0; i < c->num_listeners; i++) {
        if (c->listeners[i].proxy_protocol && c->listeners[i].proxy_header_timeout_ms == 0) {
            c->listeners[i].proxy_header_timeout_ms = c->proxy_header_timeout_ms;
        }
    }
    if (c->default_backend == NULL && c->num_backends == 1) {
        c->default_backend = &c->backends[0];
    }
    if (c->instance == NULL) {
        char host[256];
        if (gethostname(host, sizeof(host)) != 0) {
            strcpy(host, "imapmux");
        }
        host[sizeof(host) - 1] = '\0';
        c->instance = strdup(host);
    }
    c->path = strdup(path);
    if (c->instance == NULL || c->path == NULL) {
        snprintf(err, err_len, "%s: out of memory", path);
        goto fail;
    }
    yaml_document_delete(&ld.doc);
    return c;
fail:
    yaml_document_delete(&ld.doc);
    config_free(c);
    return NULL;
}

struct config *config_load(char *err, size_t err_len, const char *path)
{
    yaml_parser_t parser;
    struct config *c;
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        snprintf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        snprintf(err, err_len, "%s: out of memory", path);
        return NULL;
    }
    yaml_parser_set_input_file(&parser, f);
    c = config_from_parser(err, err_len, path, &parser);
    yaml_parser_delete(&parser);
    fclose(f);
    return c;
}

struct config *config_parse(char *err, size_t err_len, const char *name, const char *text,
                            size_t len)
{
    yaml_parser_t parser;
    struct config *c;

    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, err_len, "%s: out of memory", name);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    c = config_from_parser(err, err_len, name, &parser);
    yaml_parser_delete(&parser);
    return c;
}

struct config *config_ref(struct config *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void config_unref(struct config **pc)
{
    if (pc == NULL || *pc == NULL) {
        return;
    }
    if (atomic_fetch_sub(&(*pc)->refs, 1) == 1) {
        config_free(*pc);
    }
    *pc = NULL;
}

static const struct config_backend *config_route_find(const struct config_route *routes,
                                                      size_t num, const char *key)
{
    for (size_t i = 0; i < num; i++) {
        if (strcasecmp(routes[i].key, key) == 0) {
            return routes[i].backend;
        }
    }
    return NULL;
}

const struct config_backend *config_route_lookup(const struct config *c, const char *login)
{
    const struct config_backend *b = config_route_find(c->user_routes, c->num_user_routes, login);
    if (b != NULL) {
        return b;
    }
    const char *at = strrchr(login, '@');
    if (at != NULL) {
        b = config_route_find(c->domain_routes, c->num_domain_routes, at + 1);
        if (b != NULL) {
            return b;
        }
    }
    return c->default_backend;
}

/* --- SNI certificates and the backend template --------------------------------- */

struct config_cert_arg {
    struct config_certificate *cert;
};

static void config_cert_names(struct config_loader *ld, struct config_certificate *ce,
                              yaml_node_t *v, const char *kp)
{
    size_t num = config_sequence(ld, v, kp);
    if (ld->failed) {
        return;
    }
    if (num == 0 || num > CONFIG_MAX_CERTIFICATE_NAMES) {
        config_fail(ld, v, "%s: 1-%d names", kp, CONFIG_MAX_CERTIFICATE_NAMES);
        return;
    }
    ce->names = calloc(num, sizeof(*ce->names));
    if (ce->names == NULL) {
        config_fail(ld, v, "out of memory");
        return;
    }
    for (size_t i = 0; i < num && !ld->failed; i++) {
        yaml_node_t *item = config_node(ld, v->data.sequence.items.start[i]);
        char *name = item != NULL ? config_string(ld, item, kp) : NULL;
        if (name == NULL) {
            if (!ld->failed) {
                config_fail(ld, v, "%s: bad item", kp);
            }
            return;
        }
        for (char *p = name; *p; p++) {
            if (*p >= 'A' && *p <= 'Z') {
                *p = (char)(*p - 'A' + 'a');
            }
        }
        ce->names[ce->num_names++] = name;
        if (!sni_pattern_valid(name)) {
            config_fail(ld, item, "%s: %s is not a DNS name or a one-label wildcard (*.example.com)",
                        kp, name);
            return;
        }
    }
}

static void config_cert_pair(struct config_loader *ld, struct config *c, const char *prefix,
                             const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    struct config_certificate *ce = arg;
    char kp[128];
    char **dst;
    (void)c;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "names") == 0) {
        config_cert_names(ld, ce, v, kp);
        return;
    } else if (strcmp(key, "cert") == 0) {
        dst = &ce->cert_file;
    } else if (strcmp(key, "key") == 0) {
        dst = &ce->key_file;
    } else {
        config_fail(ld, k, "unknown key %s", kp);
        return;
    }
    free(*dst);
    *dst = config_string(ld, v, kp);
    if (*dst != NULL && access(*dst, R_OK) != 0) {
        config_fail(ld, v, "%s: cannot read %s: %s", kp, *dst, strerror(errno));
    }
}

static void config_certificates(struct config_loader *ld, struct config *c, yaml_node_t *v)
{
    size_t num = config_sequence(ld, v, "tls.certificates");
    if (ld->failed || num == 0) {
        return;
    }
    if (c->certificates != NULL || num > CONFIG_MAX_CERTIFICATES) {
        config_fail(ld, v, "tls.certificates: at most %d entries", CONFIG_MAX_CERTIFICATES);
        return;
    }
    c->certificates = calloc(num, sizeof(*c->certificates));
    if (c->certificates == NULL) {
        config_fail(ld, v, "out of memory");
        return;
    }
    for (size_t i = 0; i < num && !ld->failed; i++) {
        yaml_node_t *item = config_node(ld, v->data.sequence.items.start[i]);
        struct config_certificate *ce = &c->certificates[i];
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "tls.certificates[%zu]", i);
        c->num_certificates = i + 1;
        config_each_pair(ld, c, item, prefix, config_cert_pair, ce);
        if (!ld->failed && (ce->cert_file == NULL || ce->key_file == NULL || ce->num_names == 0)) {
            config_fail(ld, item, "%s: names, cert and key are required", prefix);
        }
    }
}

/* The template's settings are those of a backend but where it is: name,
 * host, port, hosts and the pool come from Redis or do not apply. */
static void config_template_pair(struct config_loader *ld, struct config *c, const char *prefix,
                                 const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    static const char *const not_here[] = {"name", "host", "port", "hosts", "pool_size",
                                           "pool_max_idle_ms", "pool_check_interval_ms"};
    for (size_t i = 0; i < sizeof(not_here) / sizeof(not_here[0]); i++) {
        if (strcmp(key, not_here[i]) == 0) {
            config_fail(ld, k, "%s.%s: not in a template (the name and hosts come from Redis)",
                        prefix, key);
            return;
        }
    }
    config_backend_pair(ld, c, prefix, key, k, v, arg);
}

static void config_backend_template(struct config_loader *ld, struct config *c, yaml_node_t *v)
{
    struct config_backend *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        config_fail(ld, v, "out of memory");
        return;
    }
    c->backend_template = b;
    b->tls_verify = 1;
    b->pool_max_idle_ms = 45000;
    b->pool_check_interval_ms = 15000;
    b->name = strdup("backend_template");
    b->hosts = calloc(1, sizeof(*b->hosts));
    if (b->name == NULL || b->hosts == NULL) {
        config_fail(ld, v, "out of memory");
        return;
    }
    config_each_pair(ld, c, v, "backend_template", config_template_pair, b);
    if (!ld->failed && b->auth == CONFIG_BACKEND_AUTH_MASTER &&
        (b->master_user == NULL || b->master_password == NULL)) {
        config_fail(ld, v, "backend_template: auth master needs master_user and master_password "
                    "(or master_password_file)");
    }
}

static void config_free_sni(struct config *c)
{
    for (size_t i = 0; i < c->num_certificates; i++) {
        struct config_certificate *ce = &c->certificates[i];
        free(ce->cert_file);
        free(ce->key_file);
        for (size_t j = 0; j < ce->num_names; j++) {
            free(ce->names[j]);
        }
        free(ce->names);
    }
    free(c->certificates);
    struct config_backend *b = c->backend_template;
    if (b != NULL) {
        free(b->name);
        free(b->host);
        free(b->ca_file);
        free(b->server_name);
        free(b->hosts);
        free(b->master_user);
        config_free_secret(&b->master_password);
        free(b);
    }
}

/* --- oauth: OAuth 2.0 logins, one entry per login domain ------------------------ */

static void config_oauth_free(struct config_oauth *o)
{
    for (size_t i = 0; i < o->num_domains; i++) {
        struct config_oauth_domain *d = &o->domains[i];
        free(d->domain);
        free(d->jwks_file);
        free(d->jwks_url);
        free(d->issuer);
        free(d->audience);
        free(d->identity_claim);
        free(d->introspection_url);
        free(d->client_id);
        config_free_secret(&d->client_secret);
        free(d->ca_file);
        free(d->scope);
        free(d->openid_configuration);
    }
    free(o->domains);
    o->domains = NULL;
    o->num_domains = 0;
}

static void config_oauth_uint(struct config_loader *ld, yaml_node_t *v, const char *kp,
                              unsigned long min, unsigned long max, unsigned *out)
{
    unsigned long n;
    if (config_uint(ld, v, kp, min, max, &n) == 0) {
        *out = (unsigned)n;
    }
}

static void config_oauth_str(struct config_loader *ld, yaml_node_t *v, const char *kp, char **out)
{
    free(*out);
    *out = config_string(ld, v, kp);
}

/* config_oauth_url accepts http:// and https:// URLs only: file:// or any
 * other scheme curl knows would let a configuration read local files. */
static void config_oauth_url(struct config_loader *ld, yaml_node_t *v, const char *kp, char **out)
{
    config_oauth_str(ld, v, kp, out);
    if (*out != NULL && strncasecmp(*out, "http://", 7) != 0 && strncasecmp(*out, "https://", 8) != 0) {
        config_fail(ld, v, "%s: expected an http:// or https:// URL", kp);
    }
}

static void config_oauth_domain_pair(struct config_loader *ld, struct config *c,
                                     const char *prefix, const char *key, yaml_node_t *k,
                                     yaml_node_t *v, void *arg)
{
    struct config_oauth_domain *d = arg;
    char kp[160];
    (void)c;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "domain") == 0) {
        config_oauth_str(ld, v, kp, &d->domain);
        for (char *p = d->domain; p != NULL && *p != '\0'; p++) {
            *p = (char)tolower((unsigned char)*p);
        }
    } else if (strcmp(key, "jwks_file") == 0) {
        config_oauth_str(ld, v, kp, &d->jwks_file);
    } else if (strcmp(key, "jwks_url") == 0) {
        config_oauth_url(ld, v, kp, &d->jwks_url);
    } else if (strcmp(key, "jwks_refresh_s") == 0) {
        config_oauth_uint(ld, v, kp, 5, 86400, &d->jwks_refresh_s);
    } else if (strcmp(key, "jwks_min_fetch_interval_s") == 0) {
        config_oauth_uint(ld, v, kp, 1, 3600, &d->jwks_min_fetch_s);
    } else if (strcmp(key, "issuer") == 0) {
        config_oauth_str(ld, v, kp, &d->issuer);
    } else if (strcmp(key, "audience") == 0) {
        config_oauth_str(ld, v, kp, &d->audience);
    } else if (strcmp(key, "identity_claim") == 0) {
        config_oauth_str(ld, v, kp, &d->identity_claim);
    } else if (strcmp(key, "clock_skew_s") == 0) {
        config_oauth_uint(ld, v, kp, 0, 3600, &d->clock_skew_s);
    } else if (strcmp(key, "introspection_url") == 0) {
        config_oauth_url(ld, v, kp, &d->introspection_url);
    } else if (strcmp(key, "client_id") == 0) {
        config_oauth_str(ld, v, kp, &d->client_id);
    } else if (strcmp(key, "client_secret") == 0) {
        config_free_secret(&d->client_secret);
        d->client_secret = config_string(ld, v, kp);
    } else if (strcmp(key, "client_secret_file") == 0) {
        config_free_secret(&d->client_secret);
        d->client_secret = config_secret_file(ld, v, kp);
    } else if (strcmp(key, "cache_s") == 0) {
        config_oauth_uint(ld, v, kp, 0, 86400, &d->cache_s);
    } else if (strcmp(key, "negative_cache_s") == 0) {
        config_oauth_uint(ld, v, kp, 0, 3600, &d->negative_cache_s);
    } else if (strcmp(key, "ca_file") == 0) {
        config_oauth_str(ld, v, kp, &d->ca_file);
    } else if (strcmp(key, "http_timeout_ms") == 0) {
        config_oauth_uint(ld, v, kp, 100, 60000, &d->http_timeout_ms);
    } else if (strcmp(key, "scope") == 0) {
        config_oauth_str(ld, v, kp, &d->scope);
    } else if (strcmp(key, "openid_configuration") == 0) {
        config_oauth_url(ld, v, kp, &d->openid_configuration);
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

static void config_oauth_domains(struct config_loader *ld, struct config *c, yaml_node_t *v,
                                 const char *kp)
{
    struct config_oauth *o = &c->oauth;
    size_t num = config_sequence(ld, v, kp);
    if (ld->failed) {
        return;
    }
    if (num == 0 || num > CONFIG_OAUTH_MAX_DOMAINS) {
        config_fail(ld, v, "%s: expected 1-%d entries", kp, CONFIG_OAUTH_MAX_DOMAINS);
        return;
    }
    o->domains = calloc(num, sizeof(*o->domains));
    if (o->domains == NULL) {
        config_fail(ld, v, "out of memory");
        return;
    }
    for (size_t i = 0; i < num && !ld->failed; i++) {
        yaml_node_t *item = config_node(ld, v->data.sequence.items.start[i]);
        struct config_oauth_domain *d = &o->domains[i];
        char ip[160];
        snprintf(ip, sizeof(ip), "%s[%zu]", kp, i);
        d->jwks_refresh_s = 300;
        d->jwks_min_fetch_s = 10;
        d->clock_skew_s = 60;
        d->cache_s = 300;
        d->negative_cache_s = 10;
        d->http_timeout_ms = 5000;
        o->num_domains = i + 1;
        config_each_pair(ld, c, item, ip, config_oauth_domain_pair, d);
        if (ld->failed) {
            return;
        }
        if (d->domain == NULL) {
            config_fail(ld, item, "%s: needs a domain (or \"*\")", ip);
            return;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(o->domains[j].domain, d->domain) == 0) {
                config_fail(ld, item, "%s: domain %s given twice", ip, d->domain);
                return;
            }
        }
        int jwt = d->jwks_file != NULL || d->jwks_url != NULL;
        if (jwt == (d->introspection_url != NULL)) {
            config_fail(ld, item, "%s: needs jwks_file/jwks_url or introspection_url (one mode)",
                        ip);
            return;
        }
        if (d->introspection_url != NULL && (d->client_id == NULL || d->client_secret == NULL)) {
            config_fail(ld, item, "%s: introspection needs client_id and client_secret", ip);
            return;
        }
        if (jwt && d->issuer == NULL) {
            /* any key holder of the set could mint for any issuer otherwise */
            config_fail(ld, item, "%s: a JWT domain needs an issuer", ip);
            return;
        }
        if (d->identity_claim == NULL && (d->identity_claim = strdup("email")) == NULL) {
            config_fail(ld, item, "out of memory");
            return;
        }
    }
    o->enabled = 1;
}

static void config_oauth_pair(struct config_loader *ld, struct config *c, const char *prefix,
                              const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
    struct config_oauth *o = &c->oauth;
    char kp[128];
    (void)arg;
    config_key_path(kp, sizeof(kp), prefix, key);
    if (strcmp(key, "domains") == 0) {
        config_oauth_domains(ld, c, v, kp);
        if (!o->mechanisms_set) {
            o->oauthbearer = o->xoauth2 = 1;
        }
    } else if (strcmp(key, "mechanisms") == 0) {
        size_t num = config_sequence(ld, v, kp);
        int bearer = 0, x2 = 0;
        for (size_t i = 0; i < num && !ld->failed; i++) {
            yaml_node_t *item = config_node(ld, v->data.sequence.items.start[i]);
            const char *m = config_scalar(ld, item, kp);
            if (m != NULL && strcasecmp(m, "OAUTHBEARER") == 0) {
                bearer = 1;
            } else if (m != NULL && strcasecmp(m, "XOAUTH2") == 0) {
                x2 = 1;
            } else if (m != NULL) {
                config_fail(ld, item, "%s: OAUTHBEARER or XOAUTH2", kp);
            }
        }
        if (!ld->failed && bearer + x2 == 0) {
            config_fail(ld, v, "%s: at least one mechanism", kp);
        }
        o->oauthbearer = bearer;
        o->xoauth2 = x2;
        o->mechanisms_set = 1;
    } else {
        config_fail(ld, k, "unknown key %s", kp);
    }
}

const struct config_oauth_domain *config_oauth_find(const struct config_oauth *o,
                                                    const char *login)
{
    const char *at = strrchr(login, '@');
    const struct config_oauth_domain *any = NULL;
    for (size_t i = 0; i < o->num_domains; i++) {
        const struct config_oauth_domain *d = &o->domains[i];
        if (strcmp(d->domain, "*") == 0) {
            any = d;
        } else if (at != NULL && strcasecmp(d->domain, at + 1) == 0) {
            return d;
        }
    }
    return any;
}

static int config_oauth_str_differs(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a != b : strcmp(a, b) != 0;
}

int config_oauth_differs(const struct config_oauth *a, const struct config_oauth *b)
{
    if (a->enabled != b->enabled || a->oauthbearer != b->oauthbearer ||
        a->xoauth2 != b->xoauth2 || a->num_domains != b->num_domains) {
        return 1;
    }
    for (size_t i = 0; i < a->num_domains; i++) {
        const struct config_oauth_domain *x = &a->domains[i], *y = &b->domains[i];
        const char *sx[] = {x->domain, x->jwks_file, x->jwks_url, x->issuer, x->audience,
                            x->identity_claim, x->introspection_url, x->client_id,
                            x->client_secret, x->ca_file, x->scope, x->openid_configuration};
        const char *sy[] = {y->domain, y->jwks_file, y->jwks_url, y->issuer, y->audience,
                            y->identity_claim, y->introspection_url, y->client_id,
                            y->client_secret, y->ca_file, y->scope, y->openid_configuration};
        for (size_t k = 0; k < sizeof(sx) / sizeof(sx[0]); k++) {
            if (config_oauth_str_differs(sx[k], sy[k])) {
                return 1;
            }
        }
        if (x->jwks_refresh_s != y->jwks_refresh_s || x->jwks_min_fetch_s != y->jwks_min_fetch_s ||
            x->clock_skew_s != y->clock_skew_s || x->cache_s != y->cache_s ||
            x->negative_cache_s != y->negative_cache_s ||
            x->http_timeout_ms != y->http_timeout_ms) {
            return 1;
        }
    }
    return 0;
}
