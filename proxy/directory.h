/* directory: who may log in and where a mailbox lives.  With a redis section
 * in the configuration it reads the routing table (common/schema.h) through
 * one command connection per worker, pipelining what a login needs, caches
 * the hashes per worker for redis.cache_ttl_ms, and listens on the events
 * channel (a second connection) to drop cache entries and tell the worker.
 * Without Redis it answers from the configuration's static routes.  Either
 * way the host of a multi-host backend is chosen by rendezvous hashing on the
 * login. */
#ifndef IMAPMUX_PROXY_DIRECTORY_H
#define IMAPMUX_PROXY_DIRECTORY_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/bruteforce.h"
#include "common/config.h"
#include "common/schema.h"

struct dir;

struct dir_ops {
    /* an event from the channel, after the cache dropped what it names */
    void (*on_event)(void *ctx, enum schema_event_type type, const char *arg);
    /* the events channel is back after an outage: events may have been
       missed, so what lives on should be looked up again (may be NULL) */
    void (*on_resync)(void *ctx);
};

enum dir_status {
    DIR_OK,          /* backend and host chosen */
    DIR_UNAVAILABLE, /* Redis down or failing, a bad record, or every host down */
    DIR_NO_ROUTE,    /* no user, domain or default route */
};

struct dir_result {
    enum dir_status status;
    const char *reason;             /* for the log (static text) when not DIR_OK */
    int have_user;                  /* a user hash exists */
    struct schema_user user;        /* its fields (owned by the result) */
    int have_domain;
    enum schema_auth domain_auth;   /* of the domain hash, if any */
    const struct config_backend *backend; /* in the configuration */
    char host[256];
    uint16_t port;
    struct bruteforce_counts bf;    /* brute-force counters, this attempt counted */
    int bf_counted;                 /* bf was counted: the attempt must be settled */
    unsigned long kick_gen;         /* the login's kick generation (0: never kicked) */
    char backend_name[SCHEMA_MAX_NAME_LEN + 1]; /* the backend's name; with the
                                                   configuration's backend_template
                                                   (backend points at it) the name from
                                                   Redis */
};

/* cb owns nothing; the result is freed after it returns. */
typedef void (*dir_cb)(void *ctx, const struct dir_result *res);

/* dir_new: cfg (borrowed) outlives the directory.  Starts connecting when
 * Redis is configured. */
struct dir *dir_new(uv_loop_t *loop, const struct config *cfg, const struct dir_ops *ops,
                    void *ctx);

/* dir_lookup resolves a normalised login.  With client_ip (and brute-force
 * counting on) the failure counters are read too.  cb is called exactly once,
 * possibly before dir_lookup returns.  Returns 0, or -1 on OOM (no cb). */
int dir_lookup(struct dir *d, const char *login, const char *client_ip, dir_cb cb, void *ctx);

/* dir_lookup_in is dir_lookup choosing routes and backends from cfg (the
 * snapshot a session started with; borrowed until cb) instead of the
 * directory's own.  A backend that Redis names and cfg does not define is
 * chosen when cfg has a backend_template: the result's backend is the
 * template, backend_name the name, and the hosts come from the Redis record
 * (none there: DIR_UNAVAILABLE). */
int dir_lookup_in(struct dir *d, const struct config *cfg, const char *login,
                  const char *client_ip, dir_cb cb, void *ctx);

/* dir_set_config makes cfg (borrowed; the caller keeps it alive while the
 * directory uses it) the configuration for lookups without their own and for
 * the brute-force settings.  Its redis section must be the one the directory
 * was made with (a reload refuses a change there). */
void dir_set_config(struct dir *d, const struct config *cfg);

enum dir_bf_outcome {
    DIR_BF_SUCCESS, /* the password was proven: uncount it, clear the pair, trust the address */
    DIR_BF_FAILURE, /* a failed attempt: it stays counted in the pair and counts for the
                       address and the login */
    DIR_BF_VOID,    /* it proved nothing either way (backend down, queue full): uncount it */
};

/* dir_bf_settle ends an attempt that dir_lookup counted (bf_counted), in
 * Redis, shared by every instance.  Fire and forget; a no-op without
 * brute-force counting. */
void dir_bf_settle(struct dir *d, const char *login, const char *client_ip,
                   enum dir_bf_outcome outcome);

/* dir_close fails lookups in flight (their cb reports DIR_UNAVAILABLE) and
 * frees the directory once its handles are closed. */
void dir_close(struct dir *d);

#endif
