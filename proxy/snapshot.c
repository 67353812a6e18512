#include "proxy/snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/tls.h"
#include "proxy/tls_certificates.h"

static void snapshot_free(struct snapshot *s)
{
    if (s->backend_ctx != NULL) {
        for (size_t i = 0; i < s->cfg->num_backends; i++) {
            SSL_CTX_free(s->backend_ctx[i]);
        }
        free(s->backend_ctx);
    }
    SSL_CTX_free(s->template_ctx);
    SSL_CTX_free(s->server_ctx);
    config_unref(&s->cfg);
    free(s);
}

static SSL_CTX *snapshot_client_ctx(char *err, size_t err_len, const struct config_backend *b)
{
    char why[400];
    if (b->tls == CONFIG_BACKEND_TLS_NONE) {
        return NULL;
    }
    SSL_CTX *ctx = tls_client_ctx_new(why, sizeof(why), b->ca_file, b->tls_verify);
    if (ctx == NULL) {
        snprintf(err, err_len, "backend %s: %s", b->name, why);
    }
    return ctx;
}

struct snapshot *snapshot_new(char *err, size_t err_len, struct config *cfg, uint64_t generation)
{
    struct snapshot *s = calloc(1, sizeof(*s));
    char why[400];
    if (s == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    s->generation = generation;
    s->cfg = config_ref(cfg);
    s->backend_ctx = calloc(cfg->num_backends + 1, sizeof(*s->backend_ctx));
    if (s->backend_ctx == NULL) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if (cfg->num_listeners > 0 || cfg->tls_cert_file != NULL || cfg->num_certificates > 0) {
        s->server_ctx = tls_certificates_ctx_new(why, sizeof(why), cfg);
        if (s->server_ctx == NULL) {
            snprintf(err, err_len, "TLS: %s", why);
            goto fail;
        }
    }
    for (size_t i = 0; i < cfg->num_backends; i++) {
        const struct config_backend *b = &cfg->backends[i];
        s->backend_ctx[i] = snapshot_client_ctx(err, err_len, b);
        if (s->backend_ctx[i] == NULL && b->tls != CONFIG_BACKEND_TLS_NONE) {
            goto fail;
        }
    }
    if (cfg->backend_template != NULL) {
        s->template_ctx = snapshot_client_ctx(err, err_len, cfg->backend_template);
        if (s->template_ctx == NULL && cfg->backend_template->tls != CONFIG_BACKEND_TLS_NONE) {
            goto fail;
        }
    }
    return s;
fail:
    snapshot_free(s);
    return NULL;
}

struct snapshot *snapshot_ref(struct snapshot *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void snapshot_unref(struct snapshot **ps)
{
    if (ps == NULL || *ps == NULL) {
        return;
    }
    struct snapshot *s = *ps;
    *ps = NULL;
    if (atomic_fetch_sub(&s->refs, 1) == 1) {
        snapshot_free(s);
    }
}

SSL_CTX *snapshot_backend_ctx(const struct snapshot *s, const struct config_backend *b)
{
    const struct config *c = s->cfg;
    if (b == c->backend_template) {
        return s->template_ctx;
    }
    if (b >= c->backends && b < c->backends + c->num_backends) {
        return s->backend_ctx[b - c->backends];
    }
    return NULL;
}
