/* reload: a new configuration read and checked completely before it is put
 * in force (SIGHUP, `imapmuxctl reload`), and the counters of reloads.  The
 * checks: the file parses and validates (config_load), every certificate,
 * key and CA file loads (snapshot_new), nothing changed that only a restart
 * can change (the workers, the Redis connection, the audit sinks, the
 * process-wide limits), and every listener the reload adds can be bound.
 * Any failure refuses the whole reload: the snapshot in force stays. */
#ifndef IMAPMUX_PROXY_RELOAD_H
#define IMAPMUX_PROXY_RELOAD_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "proxy/snapshot.h"

#define RELOAD_MAX_ERROR_LEN 512 /* bytes of the last refusal's reason */

/* The reload counters, for the metrics endpoint and the log. */
struct reload_stats {
    uint64_t ok;              /* reloads put in force */
    uint64_t failed;          /* reloads refused */
    uint64_t listener_failures; /* listeners a worker could not bind after an accepted
                                   reload (another process took the port meanwhile) */
    uint64_t generation;      /* of the snapshot in force: 1 at start */
    int64_t last_attempt_s;   /* Unix time of the last reload, 0 before any */
    int64_t last_ok_s;        /* Unix time of the last accepted one (or of the start) */
    int last_ok;              /* 1: the last reload was accepted (or none yet), 0: refused */
    char last_error[RELOAD_MAX_ERROR_LEN]; /* reason of the last refusal, "" if none */
};

/* reload_stats copies the counters into out.  Thread-safe. */
void reload_stats(struct reload_stats *out);

/* reload_started records the start: generation 1, in force since now. */
void reload_started(void);

/* reload_restart_only_change returns the name of a setting that differs
 * between old and new and cannot change without a restart, or NULL. */
const char *reload_restart_only_change(const struct config *old, const struct config *new_cfg);

/* reload_prepare reads path and builds the snapshot that would replace cur.
 * Returns it with one reference (and counts nothing yet), or NULL with the
 * reason in err; the refusal is counted and logged here. */
struct snapshot *reload_prepare(char *err, size_t err_len, const struct snapshot *cur,
                                const char *path);

/* reload_accepted counts a reload put in force at generation and logs it. */
void reload_accepted(const struct snapshot *snap);

/* reload_listener_failed counts a listener a worker could not bind. */
void reload_listener_failed(void);

#endif
