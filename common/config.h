/* config: the daemon's configuration, read from a YAML file with libyaml into
 * an immutable, reference-counted snapshot.  Pure code: no I/O but reading the
 * file, no libuv. */
#ifndef IMAPMUX_COMMON_CONFIG_H
#define IMAPMUX_COMMON_CONFIG_H

#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/netaddr.h"
#include "common/proxy_proto.h"
#include "common/schema.h"

enum config_listener_tls {
    CONFIG_LISTENER_IMPLICIT, /* TLS from the first byte (993) */
    CONFIG_LISTENER_STARTTLS, /* cleartext greeting, STARTTLS required before login (143) */
};

enum config_backend_tls {
    CONFIG_BACKEND_TLS_NONE,
    CONFIG_BACKEND_TLS_STARTTLS,
    CONFIG_BACKEND_TLS_IMPLICIT,
};

enum config_log_target {
    CONFIG_LOG_STDERR,
    CONFIG_LOG_SYSLOG,
};

struct config_listener {
    char *address;  /* numeric IPv4 or IPv6 address, e.g. "127.0.0.1" or "::1" */
    uint16_t port;
    enum config_listener_tls tls;
    int proxy_protocol;        /* 1: a PROXY protocol header (v1 or v2) comes first */
    struct proxy_proto_net *proxy_trusted; /* the only networks it may come from */
    size_t num_proxy_trusted;
    unsigned proxy_header_timeout_ms; /* for the header; default: the global one */
    int proxy_tls_terminated;  /* cleartext listener behind a balancer that terminated
                                  TLS: a header whose SSL TLV says so counts as TLS */
};

enum config_backend_auth {
    CONFIG_BACKEND_AUTH_PASSTHROUGH, /* the client's login and password go to the backend */
    CONFIG_BACKEND_AUTH_MASTER,      /* after local verification: master user, client as authzid */
};

struct config_backend {
    char *name;        /* unique name routes refer to */
    char *host;        /* first of hosts (host name or numeric address) */
    uint16_t port;     /* first of hosts */
    struct schema_host *hosts; /* "host"/"port" or "hosts: [h:p, ...]"; at least one */
    size_t num_hosts;
    enum config_backend_auth auth;
    char *master_user;     /* for CONFIG_BACKEND_AUTH_MASTER */
    char *master_password; /* from master_password or master_password_file */
    enum config_backend_tls tls;
    int tls_verify;    /* 1: verify certificate chain and host name (default) */
    char *ca_file;     /* CA bundle for verification; NULL: system default */
    char *server_name; /* name to verify and send as SNI; NULL: host */
    int forward_id;    /* 1: send ID with x-originating-ip etc. before login */
    int passthrough_authzid; /* 1: a SASL authorization identity other than the login
                                goes to the backend (which decides); 0: refused */
    unsigned pool_size;             /* warm connections per host and worker (default 0: off) */
    unsigned pool_max_idle_ms;      /* a warm connection older than this is replaced (45000) */
    unsigned pool_check_interval_ms;/* NOOP health check of warm connections (15000) */
    int proxy_protocol;             /* 2: a PROXY v2 header starts each connection (no warm
                                       pool then); 0: none */
};

struct config_route {
    char *key;                            /* lowercased domain or login */
    const struct config_backend *backend; /* points into config.backends */
};

struct config_redis {
    int enabled;              /* a host or sentinels were configured */
    char *host;               /* NULL with sentinels */
    uint16_t port;            /* default 6379 */
    char *password;           /* AUTH; NULL for none */
    unsigned db;              /* SELECT; default 0 */
    char *prefix;             /* key prefix, default SCHEMA_DEFAULT_PREFIX */
    struct schema_host *sentinels; /* with master_name: find the master through them */
    size_t num_sentinels;
    char *master_name;
    char *sentinel_password;       /* AUTH to the sentinels (their requirepass); NULL none */
    unsigned connect_timeout_ms;   /* default 2000 */
    unsigned command_timeout_ms;   /* default 2000 */
    unsigned reconnect_max_ms;     /* backoff cap, default 5000 */
    unsigned cache_ttl_ms;         /* per-worker lookup cache, default 5000; 0 = off */
    int unknown_users_passthrough; /* users without hash or domain: 0 refuse (default) */
};

struct config_bruteforce {
    int enabled;              /* default: on when Redis is configured */
    unsigned window_s;        /* counters expire this long after the last failure (300) */
    unsigned delay_after;     /* failures (per address or login) before delays start (3) */
    unsigned delay_ms;        /* first delay, doubled per further failure (500) */
    unsigned max_delay_ms;    /* (8000) */
    unsigned block_ip_after;  /* attempts per client address (IPv6: per prefix) that
                                 block the address (50) */
    unsigned block_pair_after; /* attempts for one login from one address that block that
                                  pair (10; "block_login_after" is its old name) */
    unsigned trusted_ttl_s;   /* an address that logged in for a login is trusted for it
                                 this long: no per-login delay (2592000, 30 days) */
};

enum config_audit_policy {
    CONFIG_AUDIT_BLOCK, /* a full queue stops reading clients of that worker (default) */
    CONFIG_AUDIT_DROP,  /* a full queue drops records, counted and logged */
    CONFIG_AUDIT_CLOSE, /* a full queue ends the session whose record did not fit */
};

struct config_audit {
    int enabled;              /* at least one sink is configured */
    char *file;               /* JSON lines with a hash chain; NULL for none */
    int to_stdout;            /* JSON lines on standard output */
    int to_syslog;            /* one syslog message per record */
    int syslog_facility;      /* LOG_LOCAL0 .. LOG_LOCAL7, LOG_AUTHPRIV (default LOG_LOCAL0) */
    int to_redis;             /* XADD to a Redis stream */
    char *redis_host;         /* default: the redis section's host */
    uint16_t redis_port;      /* default: the redis section's port, else 6379 */
    char *redis_password;     /* default: the redis section's */
    unsigned redis_db;
    char *redis_key;          /* default "<prefix>audit" */
    unsigned long redis_maxlen; /* approximate cap of the stream (default 1000000) */
    size_t queue_bytes;       /* per worker (default 1 MiB) */
    enum config_audit_policy policy;
    size_t seqset_max;        /* bytes of a sequence set in a record (default 256) */
    int search_values;        /* SEARCH values in records (default 0: "?") */
    unsigned max_pending;     /* unanswered commands per session (default 1024) */
    unsigned preauth_records; /* commands of a session before login recorded one by one;
                                 the rest in summaries, at most one a second (default 16) */
};

/* When the session cache parks a connection at LOGOUT. */
enum config_park {
    CONFIG_PARK_RETURNING, /* the credentials were seen within ttl_ms, or a park_clients ID */
    CONFIG_PARK_ALWAYS,    /* every parkable LOGOUT */
};

#define CONFIG_MAX_PARK_CLIENTS 64   /* entries of session_cache.park_clients */
#define CONFIG_MAX_PARK_CLIENT_LEN 64 /* bytes of one of them */

struct config_session_cache {
    int enabled;              /* park logged-in backend connections at LOGOUT (default 0) */
    unsigned ttl_ms;          /* how long a parked connection waits (default 30000) */
    unsigned max_per_user;    /* parked connections per login and worker (default 2) */
    unsigned max_total;       /* parked connections per worker (default 1000) */
    enum config_park park;    /* when a LOGOUT parks (default CONFIG_PARK_RETURNING) */
    char **park_clients;      /* ID "name" values (any case) whose sessions always park */
    size_t num_park_clients;
    unsigned seen_slots;      /* size of the per-worker recently-seen filter (default 16384) */
};

#define CONFIG_RELAY_MAX_ALLOWED 64 /* vendor commands in relay.allowed_commands */

/* The logged-in relay (the command gate, COMPRESS). */
struct config_relay {
    int compress;             /* offer and terminate COMPRESS=DEFLATE (default 1) */
    size_t max_line_len;      /* bytes of one relayed command line part (default 65536) */
    char **allowed_commands;  /* upper-case vendor command names relayed as plain lines */
    size_t num_allowed_commands;
};

#define CONFIG_OAUTH_MAX_DOMAINS 256 /* entries of oauth.domains */

/* One entry of oauth.domains: how tokens for logins of one domain are
 * validated (a local JWT check against a key set, or RFC 7662 introspection). */
struct config_oauth_domain {
    char *domain;             /* lowercased login domain, or "*" for any other */
    char *jwks_file;          /* JWT mode: key set file read at start (optional with a URL) */
    char *jwks_url;           /* JWT mode: key set fetched and refreshed in the background */
    unsigned jwks_refresh_s;  /* background refresh interval (300) */
    unsigned jwks_min_fetch_s;/* on-demand fetches (unknown kid) at most this often (10) */
    char *issuer;             /* iss that tokens must carry; NULL: not checked */
    char *audience;           /* aud that tokens must hold; NULL: not checked */
    char *identity_claim;     /* claim mapped to the login (default "email") */
    unsigned clock_skew_s;    /* allowed for exp and nbf (60) */
    char *introspection_url;  /* introspection mode: the RFC 7662 endpoint */
    char *client_id;          /* HTTP basic credentials for the endpoint */
    char *client_secret;      /* from client_secret or client_secret_file */
    unsigned cache_s;         /* an active result is cached at most this long (300) */
    unsigned negative_cache_s;/* an inactive result is cached this long (10) */
    char *ca_file;            /* CA bundle for https URLs; NULL: system default */
    unsigned http_timeout_ms; /* one HTTP request (5000) */
    char *scope;              /* "scope" of the RFC 7628 error; NULL: none */
    char *openid_configuration; /* "openid-configuration" of the error; NULL: none */
};

struct config_oauth {
    int enabled;              /* at least one domain entry */
    int oauthbearer;          /* offer AUTH=OAUTHBEARER (default 1 when enabled) */
    int xoauth2;              /* offer AUTH=XOAUTH2 (default 1 when enabled) */
    struct config_oauth_domain *domains;
    size_t num_domains;
    int mechanisms_set;       /* oauth.mechanisms was given (else both are offered) */
};

/* config_oauth_find returns the entry for a login's domain (the part after
 * the last '@', case-insensitive), else the "*" entry, else NULL. */
const struct config_oauth_domain *config_oauth_find(const struct config_oauth *o,
                                                    const char *login);

/* config_oauth_differs returns 1 when two oauth sections differ in anything
 * (entries, their order, any key), else 0. */
int config_oauth_differs(const struct config_oauth *a, const struct config_oauth *b);
/* One certificate chosen by the client's server name (tls.certificates[]). */
struct config_certificate {
    char *cert_file;          /* PEM chain, leaf first */
    char *key_file;           /* PEM private key (ECDSA or RSA) */
    char **names;             /* lowercased; exact or "*.suffix" (common/sni.h) */
    size_t num_names;
};

#define CONFIG_MAX_CERTIFICATES 256       /* entries of tls.certificates */
#define CONFIG_MAX_CERTIFICATE_NAMES 1024 /* names of one entry */
#define CONFIG_ADMIN_MAX_ALLOW 64 /* networks in admin.allow */

/* One network of admin.allow. */
struct config_admin_net {
    struct netaddr net;       /* host bits as written */
    unsigned prefix_len;      /* bits */
};

/* The admin HTTP listener: /metrics, /healthz, /readyz (off unless set). */
struct config_admin {
    int enabled;              /* an admin section with listen was given */
    char *address;            /* numeric address (default 127.0.0.1) */
    uint16_t port;            /* from listen "address:port" or "[v6]:port" */
    char *token;              /* bearer token from token_file (a secret), or NULL: none */
    struct config_admin_net *allow; /* client networks allowed; NULL: any */
    size_t num_allow;
};

struct config {
    atomic_int refs;          /* reference count; see config_ref/config_unref */
    char *path;               /* file this snapshot was read from */
    char *instance;           /* instance name for logs (default: host name) */
    unsigned num_workers;     /* worker threads; 0 in the file means number of CPUs,
                                 resolved by the daemon, not here */
    int log_level;            /* LOG_ERR..LOG_DEBUG from <syslog.h> (default LOG_INFO) */
    enum config_log_target log_target;

    struct config_listener *listeners;
    size_t num_listeners;

    char *tls_cert_file;      /* PEM chain, leaf first; required if any listener */
    char *tls_key_file;       /* PEM private key (ECDSA or RSA) */
    int tls_session_tickets;  /* issue TLS session tickets for resumption (default 0) */

    struct config_backend *backends;
    size_t num_backends;
    const struct config_backend *default_backend; /* NULL if no default route */
    struct config_route *domain_routes;
    size_t num_domain_routes;
    struct config_route *user_routes;
    size_t num_user_routes;

    struct config_redis redis;
    struct config_bruteforce bruteforce;
    struct config_audit audit;
    struct config_session_cache session_cache;
    struct config_relay relay;

    /* limits (all > 0 after loading) */
    size_t max_line_len;           /* pre-auth command line bytes (default 8192) */
    size_t max_preauth_literal_len;/* literal bytes before login (default 4096... see .c) */
    unsigned max_auth_failures;    /* failed logins before BYE (default 3) */
    unsigned preauth_timeout_ms;   /* default 60000 */
    unsigned idle_timeout_ms;      /* authenticated inactivity, default 1860000 (31 min) */
    unsigned drain_timeout_ms;     /* SIGTERM grace for logged-in sessions (default 30000) */
    unsigned backend_connect_timeout_ms;  /* default 10000 */
    unsigned backend_greeting_timeout_ms; /* greeting, STARTTLS, login (default 15000) */
    size_t relay_buffer_len;       /* per-direction high-water mark in bytes (default 65536) */

    /* limits against floods of clients (0 = off where said) */
    unsigned verify_threads;       /* password check threads; 0 (default): one per CPU,
                                      resolved by the daemon, not here */
    unsigned verify_queue;         /* password checks queued or running, at most (256) */
    unsigned verify_per_client;    /* of those, per client address (IPv6: per prefix of
                                      ipv6_prefix_len bits); 0 = no share (4) */
    unsigned max_connections;      /* client connections per process; 0 (default) = bound
                                      only by the descriptor limit */
    unsigned max_connections_per_ip;          /* per client address; 0 (default) = off */
    unsigned max_connections_per_ipv6_prefix; /* per IPv6 prefix; 0 (default) = off */
    unsigned ipv6_prefix_len;      /* bits of that prefix, 1-128 (64) */

    struct config_admin admin;     /* the admin HTTP listener */
    /* logged-in sessions per login across instances (proxy/sesslimit.c) */
    unsigned max_sessions_per_user;    /* 0 (default) = off; a max_sessions field of the
                                          user's or the domain's hash in Redis wins */
    unsigned max_sessions_per_user_ip; /* per (login, client address); 0 (default) = off */
    unsigned session_lease_ms;     /* a session's lease in Redis, renewed every third of it
                                      (60000); 0 = sessions are not tracked */
    int session_limits_refuse;     /* on_redis_error: 1 refuse, 0 (default) allow */
    unsigned proxy_header_timeout_ms; /* PROXY header of a listener that wants one (5000) */
    /* SNI and reload */
    struct config_certificate *certificates; /* tls.certificates[]: chosen by server name;
                                                tls.cert/tls.key stay the default */
    size_t num_certificates;
    unsigned tls_expiry_warning_days; /* a certificate expiring within this many days is
                                         logged as a warning (14; 0 = never) */
    struct config_backend *backend_template; /* TLS and login settings of a backend named
                                                only in Redis (its hosts come from there);
                                                NULL: such a name is refused */
    struct config_oauth oauth;     /* OAuth 2.0 logins (OAUTHBEARER, XOAUTH2) */
};

/* config_load reads and validates the YAML file at path.  It returns a new
 * snapshot with one reference, or NULL with a message "path:line: reason"
 * written to err (at most err_len bytes, NUL-terminated). */
struct config *config_load(char *err, size_t err_len, const char *path);

/* config_parse reads the configuration from text (len bytes, not necessarily
 * NUL-terminated) as config_load reads a file; name stands for the file in
 * messages and in the snapshot's path.  Paths inside the text (certificates,
 * secret files) are still read from the file system.  Returns a new snapshot
 * with one reference, or NULL with "name:line: reason" in err. */
struct config *config_parse(char *err, size_t err_len, const char *name, const char *text,
                            size_t len);

/* config_ref adds a reference and returns c.  config_unref drops one, frees on
 * the last, and sets *pc to NULL (NULL or *pc == NULL accepted).  The counter is
 * atomic: snapshots are shared by worker threads. */
struct config *config_ref(struct config *c);
void config_unref(struct config **pc);

/* config_route_lookup returns the backend for a login: the user route for the
 * whole login, else the domain route for the part after the last '@', else the
 * default backend; NULL when none applies.  Matching is case-insensitive. */
const struct config_backend *config_route_lookup(const struct config *c, const char *login);

/* config_find_backend returns the backend called name, or NULL. */
const struct config_backend *config_find_backend(const struct config *c, const char *name);

#endif
