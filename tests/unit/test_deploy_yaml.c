/* The YAML files under deploy/ parse (with the libyaml the daemon uses), and
 * hold what the README says they hold: the Kubernetes kinds, the compose
 * services, and imapmux configurations (compose's, the ConfigMap's) that
 * imapmux's own parser takes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <yaml.h>

#include "common/config.h"

#define DEPLOY(f) TEST_DATA_DIR "/../../deploy/" f
#define MAX_DOCS 16           /* documents in one file */

/* A file's documents, loaded. */
struct docs {
    yaml_document_t doc[MAX_DOCS];
    size_t num;
};

static void load_text(struct docs *d, const unsigned char *text, size_t len, const char *name)
{
    yaml_parser_t p;
    memset(d, 0, sizeof(*d));
    cr_assert(yaml_parser_initialize(&p));
    yaml_parser_set_input_string(&p, text, len);
    for (;;) {
        cr_assert_lt(d->num, MAX_DOCS, "%s: too many documents", name);
        yaml_document_t *doc = &d->doc[d->num];
        cr_assert(yaml_parser_load(&p, doc), "%s:%zu: %s", name, p.problem_mark.line + 1,
                  p.problem != NULL ? p.problem : "parse error");
        if (yaml_document_get_root_node(doc) == NULL) {
            yaml_document_delete(doc);
            break;
        }
        d->num++;
    }
    yaml_parser_delete(&p);
}

static void load_file(struct docs *d, const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    static unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    cr_assert_lt(n, sizeof(buf));
    load_text(d, buf, n, path);
}

static void free_docs(struct docs *d)
{
    for (size_t i = 0; i < d->num; i++) {
        yaml_document_delete(&d->doc[i]);
    }
}

/* get returns the value node of key in mapping m, or NULL. */
static yaml_node_t *get(yaml_document_t *doc, yaml_node_t *m, const char *key)
{
    if (m == NULL || m->type != YAML_MAPPING_NODE) {
        return NULL;
    }
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k->type == YAML_SCALAR_NODE && strcmp((char *)k->data.scalar.value, key) == 0) {
            return yaml_document_get_node(doc, p->value);
        }
    }
    return NULL;
}

/* check_imapmux_config: text (len bytes) is an imapmux configuration that
 * config_parse takes once its certificate paths (cert, key) and the Redis
 * password file name the test's own files. */
static void check_imapmux_config(const char *text, size_t len, const char *cert,
                                 const char *key, const char *name)
{
    static char buf[1 << 16];
    const char *from[3] = {cert, key, "password_file: /etc/imapmux/redis/password"};
    const char *to[3] = {TEST_DATA_DIR "/cert.pem", TEST_DATA_DIR "/key.pem", "password: x"};
    size_t out = 0;
    for (size_t i = 0; i < len;) {
        size_t k = 0;
        for (; k < 3; k++) {
            size_t fl = strlen(from[k]);
            if (i + fl <= len && memcmp(text + i, from[k], fl) == 0) {
                break;
            }
        }
        const char *piece = k < 3 ? to[k] : text + i;
        size_t pl = k < 3 ? strlen(to[k]) : 1;
        cr_assert_lt(out + pl, sizeof(buf));
        memcpy(buf + out, piece, pl);
        out += pl;
        i += k < 3 ? strlen(from[k]) : 1;
    }
    char err[512];
    struct config *c = config_parse(err, sizeof(err), name, buf, out);
    cr_assert_not_null(c, "%s", err);
    cr_assert_gt(c->num_listeners, 0);
    cr_assert(c->listeners[0].proxy_protocol, "%s: the balancer sends a PROXY header", name);
    cr_assert(c->redis.enabled);
    cr_assert_gt(c->max_sessions_per_user, 0);
    config_unref(&c);
}

static const char *scalar(yaml_node_t *n)
{
    return n != NULL && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

Test(deploy_yaml, kubernetes_manifests)
{
    struct docs d;
    load_file(&d, DEPLOY("k8s/imapmux.yaml"));
    const char *want[] = {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"};
    int seen[5] = {0};
    for (size_t i = 0; i < d.num; i++) {
        yaml_node_t *root = yaml_document_get_root_node(&d.doc[i]);
        const char *kind = scalar(get(&d.doc[i], root, "kind"));
        cr_assert_not_null(kind, "document %zu has no kind", i);
        cr_assert_not_null(scalar(get(&d.doc[i], root, "apiVersion")));
        for (size_t k = 0; k < 5; k++) {
            seen[k] += strcmp(kind, want[k]) == 0;
        }
        if (strcmp(kind, "ConfigMap") == 0) {
            /* the configuration inside parses as YAML too */
            yaml_node_t *data = get(&d.doc[i], root, "data");
            yaml_node_t *conf = get(&d.doc[i], data, "imapmux.yaml");
            cr_assert_not_null(scalar(conf));
            struct docs inner;
            load_text(&inner, conf->data.scalar.value, conf->data.scalar.length, "configmap");
            cr_assert_eq(inner.num, 1);
            yaml_node_t *r = yaml_document_get_root_node(&inner.doc[0]);
            cr_assert_not_null(get(&inner.doc[0], r, "listeners"));
            cr_assert_not_null(get(&inner.doc[0], r, "redis"));
            free_docs(&inner);
            check_imapmux_config((const char *)conf->data.scalar.value,
                                 conf->data.scalar.length, "/etc/imapmux/tls/tls.crt",
                                 "/etc/imapmux/tls/tls.key", "configmap");
        }
        if (strcmp(kind, "Deployment") == 0) {
            yaml_node_t *spec = get(&d.doc[i], root, "spec");
            yaml_node_t *tpl = get(&d.doc[i], get(&d.doc[i], spec, "template"), "spec");
            yaml_node_t *cs = get(&d.doc[i], tpl, "containers");
            cr_assert(cs != NULL && cs->type == YAML_SEQUENCE_NODE);
            yaml_node_t *c0 = yaml_document_get_node(&d.doc[i], *cs->data.sequence.items.start);
            cr_assert_not_null(get(&d.doc[i], c0, "readinessProbe"));
        }
    }
    for (size_t k = 0; k < 5; k++) {
        cr_assert_geq(seen[k], 1, "no %s", want[k]);
    }
    free_docs(&d);
}

Test(deploy_yaml, compose_topology)
{
    struct docs d;
    load_file(&d, DEPLOY("compose/docker-compose.yml"));
    cr_assert_eq(d.num, 1);
    yaml_node_t *services = get(&d.doc[0], yaml_document_get_root_node(&d.doc[0]), "services");
    const char *want[] = {"haproxy", "imapmux1", "imapmux2", "dovecot1", "dovecot2",
                          "redis-master", "redis-replica", "sentinel1", "sentinel2",
                          "sentinel3"};
    for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
        cr_assert_not_null(get(&d.doc[0], services, want[k]), "no service %s", want[k]);
    }
    /* the aliases resolve: an instance has the image and the command */
    yaml_node_t *m1 = get(&d.doc[0], services, "imapmux1");
    yaml_node_t *merged = get(&d.doc[0], m1, "<<");
    cr_assert_not_null(get(&d.doc[0], merged, "command"));
    free_docs(&d);

    load_file(&d, DEPLOY("compose/imapmux.yaml"));
    cr_assert_eq(d.num, 1);
    free_docs(&d);
    FILE *f = fopen(DEPLOY("compose/imapmux.yaml"), "rb");
    cr_assert_not_null(f);
    static char text[1 << 15];
    size_t n = fread(text, 1, sizeof(text), f);
    fclose(f);
    check_imapmux_config(text, n, "/etc/imapmux/tls/cert.pem", "/etc/imapmux/tls/key.pem",
                         "compose");
    load_file(&d, DEPLOY("imapmux.yaml"));
    cr_assert_eq(d.num, 1);
    free_docs(&d);
}

Test(deploy_yaml, a_broken_file_is_caught)
{
    /* the check itself can fail */
    yaml_parser_t p;
    yaml_document_t doc;
    const char *bad = "a: [1, 2\nb: {\n";
    cr_assert(yaml_parser_initialize(&p));
    yaml_parser_set_input_string(&p, (const unsigned char *)bad, strlen(bad));
    cr_assert_not(yaml_parser_load(&p, &doc));
    yaml_parser_delete(&p);
}
