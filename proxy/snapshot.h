/* snapshot: one configuration in force with everything built from it, the
 * TLS contexts: the server's (with its SNI certificates) and one client
 * context per backend.  Immutable once made and reference counted: a worker
 * holds the newest, each session holds the one it started with until it
 * ends, so a reload never changes what a running session uses.  The struct
 * is visible because its fields are read on every accept and login; nobody
 * writes them after snapshot_new. */
#ifndef IMAPMUX_PROXY_SNAPSHOT_H
#define IMAPMUX_PROXY_SNAPSHOT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common/config.h"

struct snapshot {
    atomic_int refs;          /* see snapshot_ref / snapshot_unref */
    uint64_t generation;      /* 1 at start, one more per accepted reload */
    struct config *cfg;       /* our reference */
    SSL_CTX *server_ctx;      /* client TLS with SNI (tls_certificates); NULL without
                                 listeners and certificates */
    SSL_CTX **backend_ctx;    /* per cfg->backends index; NULL for tls none */
    SSL_CTX *template_ctx;    /* for cfg->backend_template with TLS, else NULL */
};

/* snapshot_new loads every certificate, key and CA file cfg names and
 * returns a snapshot with one reference that holds its own reference to cfg,
 * or NULL with the reason in err (nothing is kept then). */
struct snapshot *snapshot_new(char *err, size_t err_len, struct config *cfg, uint64_t generation);

/* snapshot_ref adds a reference (thread-safe) and returns s. */
struct snapshot *snapshot_ref(struct snapshot *s);

/* snapshot_unref drops a reference, frees on the last and clears *ps; NULL
 * and *ps == NULL accepted. */
void snapshot_unref(struct snapshot **ps);

/* snapshot_backend_ctx returns the TLS client context for backend b of s's
 * configuration (one of cfg->backends or cfg->backend_template), or NULL
 * when b uses no TLS. */
SSL_CTX *snapshot_backend_ctx(const struct snapshot *s, const struct config_backend *b);

#endif
