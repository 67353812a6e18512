/* conncap: caps on client connections, counted across all workers of the
 * process: in total, per client address, per IPv6 prefix, and by what the
 * descriptor limit leaves room for.  A session takes a ticket at accept and
 * gives it back when it ends; a connection over a cap gets "* BYE" and is
 * closed.
 *
 * The counts live in one small hash table behind one mutex: it is taken once
 * at accept and once at the end of a session, never on the data path, so
 * sharing it between workers costs nothing that matters. */
#ifndef IMAPMUX_PROXY_CONNCAP_H
#define IMAPMUX_PROXY_CONNCAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

struct conncap;
struct keycount_entry;

/* What conncap_acquire decided; CONNCAP_OK is 0, the rest are reasons. */
enum conncap_verdict {
    CONNCAP_OK = 0,
    CONNCAP_TOTAL,       /* limits.max_connections reached */
    CONNCAP_DESCRIPTORS, /* the descriptor limit leaves no room for another connection */
    CONNCAP_PER_IP,      /* limits.max_connections_per_ip reached for the address */
    CONNCAP_PER_PREFIX,  /* limits.max_connections_per_ipv6_prefix reached for its prefix */
    CONNCAP_NOMEM,       /* the table could not take the address */
};
#define CONNCAP_NUM_VERDICTS (CONNCAP_NOMEM + 1)

struct conncap_limits {
    size_t max_total;          /* connections of the process; 0: no cap */
    size_t max_descriptors;    /* connections the descriptor limit has room for; 0: no cap */
    size_t max_per_ip;         /* per client address (IPv4-mapped IPv6 as IPv4); 0: no cap */
    size_t max_per_prefix;     /* per IPv6 prefix; 0: no cap */
    unsigned ipv6_prefix_len;  /* bits of that prefix (1-128) */
};

/* A connection's share of the counts, embedded by value in its owner.  All
 * zero (as conncap_acquire leaves it on a refusal) holds nothing. */
struct conncap_ticket {
    struct keycount_entry *ip;     /* the per-address count it holds, or NULL */
    struct keycount_entry *prefix; /* the per-prefix count it holds, or NULL */
    int counted;                   /* 1: it holds one of the total */
};

struct conncap_stats {
    uint64_t current;                        /* connections holding a ticket */
    uint64_t peak;                           /* the most at once */
    uint64_t accepted;                       /* tickets handed out */
    uint64_t refused[CONNCAP_NUM_VERDICTS];  /* by reason ([CONNCAP_OK] stays 0) */
};

/* conncap_new returns caps with lim (copied), or NULL when out of memory.
 * conncap_free frees them (NULL accepted); every ticket must be back. */
struct conncap *conncap_new(const struct conncap_limits *lim);
void conncap_free(struct conncap *cc);

/* conncap_limits_from_config fills out from cfg's limits and max_descriptors
 * (from conncap_descriptor_room). */
void conncap_limits_from_config(struct conncap_limits *out, const struct config *cfg,
                                size_t max_descriptors);

/* conncap_acquire counts a new connection from ip (numeric, as the session
 * holds it; one that does not parse counts under one shared address).
 * Returns CONNCAP_OK with *out holding its share, or the first cap it would
 * pass with *out zeroed (nothing counted).  cc NULL: CONNCAP_OK, nothing
 * counted.  Thread-safe. */
enum conncap_verdict conncap_acquire(struct conncap *cc, const char *ip,
                                     struct conncap_ticket *out);

/* conncap_release gives t's share back, once per ticket (a zeroed ticket
 * and cc NULL are accepted and do nothing).  Thread-safe. */
void conncap_release(struct conncap *cc, const struct conncap_ticket *t);

/* conncap_stats copies the counters (thread-safe; cc NULL: zeros). */
void conncap_stats(struct conncap *cc, struct conncap_stats *out);

/* conncap_bye returns the "[CODE] text" of the BYE for a refusal
 * ("[UNAVAILABLE] Too many connections from your address" for the address
 * caps, "[UNAVAILABLE] Server busy, try again later" else); conncap_reason
 * a short reason for the log line.  Both static. */
const char *conncap_bye(enum conncap_verdict v);
const char *conncap_reason(enum conncap_verdict v);

/* Descriptors not for client connections: standard streams, the main loop,
 * signals, the audit file, syslog, the resolver (CONNCAP_RESERVED_FDS), and
 * per worker its loop, wake-ups, Redis links and audit queue
 * (CONNCAP_FDS_PER_WORKER) besides its listeners, warm pool and parked
 * connections.  A client connection costs two: its own and its backend's. */
#define CONNCAP_RESERVED_FDS 64
#define CONNCAP_FDS_PER_WORKER 16
#define CONNCAP_FDS_PER_CONNECTION 2

/* conncap_descriptor_room returns how many client connections nofile
 * descriptors leave room for with cfg and num_workers (at least 1), or 0
 * (no cap) when nofile is 0 (unlimited). */
size_t conncap_descriptor_room(const struct config *cfg, unsigned num_workers, uint64_t nofile);

#endif
