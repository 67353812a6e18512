/* session_private.h: struct session, its states and flags, and the calls
 * that the session's files make of each other:
 *
 *   session.c          accept, lifetime, reading and writing, timers, drain
 *   session_preauth.c  the commands imapmux answers itself before login
 *   session_login.c    the login step machine and every refusal
 *   session_relay.c    the logged-in session: both directions, the tap
 *   session_park.c     the session cache: parking at LOGOUT, taking back
 *   session_kick.c     kicks and route re-checks from routing-table events
 *   session_audit.c    the session's audit records
 *
 * Nothing outside these files includes it.  docs/ARCHITECTURE.md tells the
 * phases and who owns what. */
#ifndef IMAPMUX_PROXY_SESSION_PRIVATE_H
#define IMAPMUX_PROXY_SESSION_PRIVATE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/audit_tap.h"
#include "common/capa.h"
#include "common/config.h"
#include "common/imap_parser.h"
#include "common/imap_scan.h"
#include "common/proxy_proto.h"
#include "common/schema.h"
#include "proxy/backend.h"
#include "proxy/conn.h"
#include "proxy/conncap.h"
#include "proxy/metrics.h"
#include "proxy/sesscache.h"
#include "proxy/sesslimit.h"
#include "proxy/session.h"
#include "proxy/snapshot.h"

#define SESSION_MAX_BAD_COMMANDS 10     /* BAD answers before BYE */
#define SESSION_MAX_INBUF_LEN 131072    /* bytes of pre-auth input held (two reads) */
#define SESSION_PREAUTH_MAX_OUT_LEN 65536 /* queued pre-auth answers before input waits */
#define SESSION_CLOSE_TIMEOUT_MS 5000   /* a graceful close may take this long */
#define SESSION_MAX_TAG_LEN 64          /* bytes of a tag */
#define SESSION_MAX_ARGS 32             /* arguments of a pre-auth command */
#define SESSION_MAX_DEPTH 4             /* parenthesis depth of a pre-auth command */
#define SESSION_KICK_QUIET_MS 50        /* a kicked session ends when the backend is this quiet */
#define SESSION_KICK_MAX_MS 10000       /* ... or this long after the kick, whatever is in flight */
#define SESSION_RESYNC_SPREAD_MS 2000   /* re-checks after an events outage are spread this wide */

/* SESSION_OF: the session of a link in env->sessions. */
#define SESSION_OF(l) LIST_ITEM(l, struct session, link)

enum session_state {
    SESSION_TLS_ACCEPT, /* implicit TLS: handshake running, nothing sent yet */
    SESSION_PREAUTH,    /* greeting sent; commands answered here */
    SESSION_STARTTLS,   /* STARTTLS accepted; handshake running, input discarded */
    SESSION_LOGGING_IN, /* a login's steps run (login_step); client reads stopped */
    SESSION_RELAY,      /* logged in; bytes copied both ways */
    SESSION_CLOSING,    /* session_close called; waiting for handles and references */
};

/* The steps of a login, in order (session_login.c). */
enum login_step {
    LOGIN_STEP_LOOKUP,  /* routing lookup: route, password hash, brute-force counters */
    LOGIN_STEP_DELAY,   /* the brute-force delay, if the counters ask for one */
    LOGIN_STEP_CACHE,   /* a parked connection for these credentials, or a wait for one */
    LOGIN_STEP_VERIFY,  /* the password checked here (threadpool), when imapmux holds it */
    LOGIN_STEP_LIMIT,   /* a lease among the login's sessions on every instance (Redis) */
    LOGIN_STEP_BACKEND, /* the backend login, on a warm connection or a new one */
    LOGIN_STEP_DONE,    /* the relay is entered */
};

/* What a login step says to the driver. */
enum login_next {
    LOGIN_GO,   /* the next step is set: run it now */
    LOGIN_WAIT, /* async work runs; its completion runs the steps again */
    LOGIN_END,  /* refused or done: the session left the login */
};

/* Every way a login is refused (session_login_refuse). */
enum login_refusal {
    LOGIN_REFUSE_BAD_NAME,       /* the login name cannot be normalised */
    LOGIN_REFUSE_NUL_PASSWORD,   /* a NUL in the password */
    LOGIN_REFUSE_NO_ROUTE,       /* no user, domain or default route */
    LOGIN_REFUSE_UNKNOWN,        /* no such user where imapmux verifies */
    LOGIN_REFUSE_WRONG_PASSWORD, /* checked here */
    LOGIN_REFUSE_BLOCKED,        /* by the brute-force counters */
    LOGIN_REFUSE_DISABLED,       /* the account is disabled (right password) */
    LOGIN_REFUSE_AUTHZID,        /* an authorization identity other than the login */
    LOGIN_REFUSE_BACKEND_AUTH,   /* the backend refused the client's credentials */
    LOGIN_REFUSE_MASTER,         /* the backend refused our master login */
    LOGIN_REFUSE_BACKEND_DOWN,   /* backend unreachable, TLS or greeting failure, timeout */
    LOGIN_REFUSE_DIRECTORY_DOWN, /* the routing table is unavailable */
    LOGIN_REFUSE_BUSY,           /* the password check queue (or this client's share) is full */
    LOGIN_REFUSE_INTERNAL,       /* out of memory */
    LOGIN_REFUSE_LIMIT_USER,     /* the login has max_sessions sessions already */
    LOGIN_REFUSE_LIMIT_IP,       /* ... from this address (max_sessions_per_user_ip) */
    LOGIN_REFUSE_LIMIT_REDIS,    /* sessions cannot be counted, on_redis_error: refuse */
    LOGIN_REFUSE_TOKEN,          /* OAuth: the token was refused (bad, expired, revoked...) */
    LOGIN_REFUSE_TOKEN_UNAVAILABLE, /* OAuth: the token could not be checked (endpoint down) */
    LOGIN_REFUSE_LAST = LOGIN_REFUSE_TOKEN_UNAVAILABLE,
};

#define SESSION_F_TLS          (1u << 0)  /* client side is TLS now */
#define SESSION_F_STARTTLS     (1u << 1)  /* listener is cleartext + STARTTLS */
#define SESSION_F_AUTH_CONT    (1u << 2)  /* AUTHENTICATE waits for the client's line */
#define SESSION_F_BACKEND_BYE  (1u << 3)  /* the backend sent "* BYE" (LOGOUT, shutdown) */
#define SESSION_F_CLIENT_PAUSE (1u << 5)  /* client reads stopped by backpressure */
#define SESSION_F_BACK_PAUSE   (1u << 6)  /* backend reads stopped by backpressure */
#define SESSION_F_FREED        (1u << 7)  /* session_maybe_free ran the free */
#define SESSION_F_KICK         (1u << 8)  /* kicked: BYE after the command in flight */
#define SESSION_F_WAITS_CLIENT (1u << 9)  /* the backend's last word was a "+" */
#define SESSION_F_PROCESSING   (1u << 10) /* pre-auth commands are being run: no re-entry */
#define SESSION_F_AUDIT_FULL   (1u << 11) /* a record did not fit (policy close): end */
#define SESSION_F_CACHE_KEYED  (1u << 12) /* cache_key holds this login's session cache key */
#define SESSION_F_NO_PARK      (1u << 13) /* a command changed more than the mailbox state */
#define SESSION_F_CACHE_WAIT   (1u << 15) /* waits for a parked connection's reset */
#define SESSION_F_WARM_LOGIN   (1u << 17) /* the login runs on a warm pool connection */
#define SESSION_F_OUT_FULL     (1u << 18) /* pre-auth answers wait for the client to read */
#define SESSION_F_GATE_WAIT    (1u << 19) /* the gate waits for the backend: client not read */
#define SESSION_F_GATE_RESUME  (1u << 20) /* the backend's answer lets the gate go on */
#define SESSION_F_OAUTH_FAIL   (1u << 29) /* OAuth refusal: the error challenge went out, the
                                             tagged NO waits for the client's dummy reply */
#define SESSION_F_PARK_OK      (1u << 21) /* the park policy lets this login's LOGOUT park */
#define SESSION_F_PARK_CLIENT  (1u << 22) /* the client's ID name is in park_clients */
#define SESSION_F_PROXY_WAIT   (1u << 27) /* the PROXY header is awaited (state TLS_ACCEPT) */
#define SESSION_F_TLS_PROXIED  (1u << 28) /* SESSION_F_TLS from the balancer's SSL TLV: the
                                             client's TLS ended there (proxy_tls_terminated) */

#define SESSION_L_LOCAL    (1u << 0) /* imapmux verifies the password */
#define SESSION_L_UNKNOWN  (1u << 1) /* no such user: verify the dummy, then refuse */
#define SESSION_L_DISABLED (1u << 2) /* refuse with CONTACTADMIN once verified */
#define SESSION_L_BLOCKED  (1u << 3) /* brute-force block: refuse like a wrong password */
#define SESSION_L_COUNTED  (1u << 4) /* the brute-force counters hold this attempt */
#define SESSION_L_NO_ROUTE (1u << 5) /* no route: verify the dummy, then refuse (no s->route) */

struct session {
    struct session_env *env;     /* borrowed; the worker outlives us */
    struct list_link link;       /* in env->sessions */
    struct config *cfg;          /* our own reference */
    const struct config_listener *listener; /* in cfg */
    char id[32];                 /* "w<worker>-<n>" for logs */
    enum session_state state;
    uint32_t flags;              /* SESSION_F_* */
    int pending;                 /* handles and work not yet closed/finished */

    struct conn *client;         /* owned; NULL once closed */
    struct conn *backend;        /* owned after login; NULL before and once closed */
    struct backend *backend_login; /* the backend login in flight (owned), or NULL */
    uv_timer_t timer;            /* the deadline of the state (session_set_deadline) */
    uint64_t last_activity;      /* loop time of the last client read (ms) */

    struct imap_parser *parser;  /* pre-auth only; freed at login */
    uint8_t *inbuf;              /* pre-auth input not yet parsed; NULL when empty */
    size_t inbuf_len;            /* bytes in inbuf */

    char tag[SESSION_MAX_TAG_LEN + 1];  /* tag of the LOGIN/AUTHENTICATE in flight */
    const char *user;            /* normalised login of the session (session_no_name before);
                                    with a SASL authzid, the user acted as.  Set with
                                    session_name_set (heap, exact size) */
    const char *auth_user;       /* with an authzid other than the login: the login whose
                                    credentials were given; else session_no_name ("").
                                    Set with session_name_set (heap, exact size) */
    const struct config_backend *route; /* chosen backend, in cfg */
    const char *host;            /* chosen host of route (session_name_set), or "" */
    uint16_t port;

    /* a login in flight (state SESSION_LOGGING_IN) */
    enum login_step login_step;  /* where it is */
    unsigned login_delay_ms;     /* brute-force delay the lookup asked for */
    unsigned long kick_gen;      /* the login's kick generation at login (directory) */
    char *password;              /* the client's; wiped as soon as it is used */
    char *hash;                  /* stored hash to verify, or NULL */
    char *backend_user;          /* the user name at the backend if not the login, or NULL */
    unsigned login_flags;        /* SESSION_L_* */
    unsigned auth_failures;
    unsigned bad_commands;

    struct conncap_ticket conncap;  /* this connection's place in the caps */
    enum conncap_verdict conncap_refused; /* a cap it passed at accept, or CONNCAP_OK */
    char client_ip[64];
    uint16_t client_port;
    char local_ip[64];
    uint16_t local_port;
    uint64_t bytes_in, bytes_out;   /* relayed client->backend, backend->client */

    struct imap_check *check;       /* the command gate (relay), or NULL */
    uint8_t *held;                  /* client line part the gate has not judged yet */
    size_t held_len, held_cap;      /* bytes in held, bytes allocated (0: none) */
    uint8_t *cin;                   /* client bytes read while the gate waits, or NULL */
    size_t cin_len;
    uint8_t *answers;               /* imapmux's own lines waiting for a backend line end */
    size_t answers_len;
    struct imap_scan backend_scan;  /* line ends of the backend's stream */
    uint64_t commands;              /* commands the gate passed whole to the backend */
    uint64_t completions;           /* tagged responses of the backend */
    uint64_t last_backend_data;     /* loop time (ms) */
    uint64_t kick_at;               /* loop time of the kick */
    const char *kick_reason;        /* static text for the BYE */

    struct audit_tap *tap;          /* with an audit queue: the command records */
    uint64_t start_us;              /* monotonic, for the session's duration */
    uint64_t audit_commands;        /* command records written */

    uint8_t cache_key[SESSCACHE_KEY_LEN]; /* with SESSION_F_CACHE_KEYED */
    char *shown_capa;               /* capabilities the client got at login (cache on) */
    char *cached_capa;              /* a session cache hit's list to show, until the relay */
    /* OAuth logins (session_oauth.c) */
    int oauth_mech;                 /* enum sasl_oauth_mech of the AUTHENTICATE in flight, or 0 */
    int oauth_state;                /* SESSION_OAUTH_*: what the token check said */
    const char *oauth_domain;       /* the oauth entry's domain (in cfg) for this login */
    const char *oauth_no_code;      /* with SESSION_F_OAUTH_FAIL: the tagged NO to send */
    const char *oauth_no_text;      /*   (static texts) */

    uint64_t login_t0_ns;           /* uv_hrtime at the login's start; 0: none in flight */
    uint64_t step_t0_ns;            /* uv_hrtime at the current login step's start */
    uint8_t login_mech;             /* enum metrics_mech of the login in flight */
    struct sesslimit_lease *lease;  /* this session's place among its login's sessions
                                       (owned; given back at close), or NULL */

    struct proxy_proto *proxy;      /* the PROXY header's parser while awaited, else NULL */
    char peer_ip[64];               /* the connection's own peer: with a PROXY header, the */
    uint16_t peer_port;             /* balancer (client_ip is then the header's source) */
    char authority[PROXY_PROTO_MAX_AUTHORITY_LEN + 1]; /* the name the client asked the
                                                          balancer for (AUTHORITY TLV), or "" */
    char proxy_tls_version[PROXY_PROTO_MAX_TLS_NAME_LEN + 1]; /* with SESSION_F_TLS_PROXIED */
    char proxy_tls_cipher[PROXY_PROTO_MAX_TLS_NAME_LEN + 1];

    struct snapshot *snap;          /* our reference: the TLS contexts of cfg, kept however
                                       often the configuration is reloaded */
    char route_name[SCHEMA_MAX_NAME_LEN + 1]; /* the backend's name ("" before the route);
                                                 route->name but for a backend named only
                                                 in Redis (route is the template) */
    struct capa_rewrite capa_rw;    /* relay: the backend's capability lists, filtered */
    uint32_t preauth_records;       /* command records before login, one by one */
    uint64_t preauth_unrecorded;    /* commands before login in no record yet */
    uint64_t preauth_summary_us;    /* monotonic time of the last preauth_summary */
};

/* What the token check of an OAuth login said (s->oauth_state). */
#define SESSION_OAUTH_NONE 0    /* not an OAuth login, or not checked yet */
#define SESSION_OAUTH_VALID 1   /* the token is good for s->user */
#define SESSION_OAUTH_INVALID 2 /* refused: the login runs for the counters, then fails */

/* --- session.c ---------------------------------------------------------------- */

/* session_log writes one line with the session's context first. */
void session_log(struct session *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void session_set_state(struct session *s, enum session_state st);

/* session_set_deadline (re)arms the session's one timer: what it means
 * depends on the state (pre-auth timeout, idle timeout, close grace). */
void session_set_deadline(struct session *s, uint64_t ms);

typedef void (*session_after_fn)(struct session *s);

/* session_after calls fn(s) ms from now (0: at the next loop turn), unless
 * the session closes first; it holds a reference meanwhile.  Returns 0 or
 * UV_ENOMEM (fn is then never called). */
int session_after(struct session *s, uint64_t ms, session_after_fn fn);

/* session_send / session_sendf queue text for the client (shown to the tap
 * first); failures come back as the client's on_eof. */
void session_send(struct session *s, const char *text);
void session_sendf(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* session_close ends the session (idempotent); reason, when not NULL, is
 * logged and recorded.  session_bye sends "* BYE code_and_text" first. */
void session_close(struct session *s, const char *reason);
void session_bye(struct session *s, const char *code_and_text, const char *reason);

/* session_maybe_free frees a closing session whose handles are closed and
 * whose references are gone; any completion that dropped one calls it. */
void session_maybe_free(struct session *s);
void session_on_backend_close(void *ctx);

/* session_read_client reads the client again, unless the audit queue waits
 * or the state does not read it (session_reads_client). */
int session_read_client(struct session *s);
void session_audit_pause(struct session_env *env);

/* session_no_name: the empty name that user, auth_user and host point to when
 * unset (never written, never freed). */
extern const char session_no_name[1];
/* session_name_set points *slot at a heap copy of text (the empty text: at
 * session_no_name), freeing what it held.  Returns 0 or UV_ENOMEM (then
 * *slot is session_no_name). */
int session_name_set(const char **slot, const char *text);

/* session_wipe wipes and frees a string and clears the pointer. */
void session_wipe(char **p);

/* --- session_preauth.c ---------------------------------------------------------- */

/* session_preauth_start greets the client (after the TLS handshake on an
 * implicit-TLS listener). */
void session_preauth_start(struct session *s);
/* session_preauth_input buffers and runs what the client sent before login. */
void session_preauth_input(struct session *s, const uint8_t *data, size_t len);
/* session_preauth_drained: the client read what was queued for it. */
void session_preauth_drained(struct session *s);
/* session_preauth_resume: a refused login comes back to pre-auth and runs
 * what the client pipelined meanwhile. */
void session_preauth_resume(struct session *s);

/* --- session_login.c ------------------------------------------------------------ */

/* session_login_start begins a login for a LOGIN or AUTHENTICATE command
 * (tag) with the client's credentials (copied; the caller wipes its own). */
void session_login_start(struct session *s, const char *tag, const char *authzid,
                         const char *user, size_t user_len, const char *password);
/* session_login_run runs the login's steps until one waits or it ends. */
void session_login_run(struct session *s);
/* session_login_refuse answers the login of s->tag with the refusal why (code,
 * when not NULL, replaces its response code; detail goes to the log only),
 * counts it, records it, forgets the credentials and goes back to pre-auth. */
void session_login_refuse(struct session *s, enum login_refusal why, const char *code,
                          const char *detail);
/* session_login_cache_ready: the parked connection this login waited for was
 * adopted (hit) or lost. */
void session_login_cache_ready(struct session *s, int hit);
/* session_login_clear forgets what a login in flight held (wiping secrets). */
void session_login_clear(struct session *s);
const char *session_login_step_name(enum login_step step);

/* --- session_oauth.c ------------------------------------------------------------ */
/* session_oauth_capa returns the AUTH= words the configuration offers
 * (" AUTH=OAUTHBEARER AUTH=XOAUTH2", or part of it, or ""). */
const char *session_oauth_capa(const struct session *s);
/* session_oauth_mech returns the sasl_oauth_mech for an AUTHENTICATE
 * mechanism name when it is offered, else 0. */
int session_oauth_mech(const struct session *s, const char *name);
/* session_oauth_start handles the client message (base64, len bytes) of an
 * OAuth AUTHENTICATE in flight (s->oauth_mech, s->tag): a bad message is
 * answered BAD, else the token goes to the oauth module and the login
 * follows from its answer. */
void session_oauth_start(struct session *s, const char *b64, size_t len);
/* session_oauth_verify is the verify step of an OAuth login. */
enum login_next session_oauth_verify(struct session *s);
/* session_oauth_refused: session_login_refuse of an OAuth login: instead of
 * the tagged NO, the RFC 7628 error challenge goes out and the NO (code and
 * text, static) waits for the client's reply.  Returns 1 when it did so. */
int session_oauth_refused(struct session *s, const char *code, const char *text);
/* session_oauth_reply: the client's line after the error challenge. */
void session_oauth_reply(struct session *s);
/* session_oauth_routed: the lookup chose s->route.  Unless the token goes on
 * to the backend (a pass-through backend and a valid token), the session
 * keeps only its keyed hash from here on (the session cache key).  Returns
 * 0, or UV_ENOMEM (the caller refuses the login). */
int session_oauth_routed(struct session *s);

/* --- session_relay.c ------------------------------------------------------------ */

extern const struct conn_ops session_backend_ops;

/* session_relay_enter: the login succeeded on conn (taken over); filtered is
 * the capability list to show the client (malloc'd and taken; NULL after an
 * OOM); rest is what the backend sent after its tagged OK; cached says the
 * connection came from the session cache. */
void session_relay_enter(struct session *s, struct conn *conn, char *filtered,
                         const uint8_t *rest, size_t rest_len, int cached);
void session_relay_client_read(struct session *s, const uint8_t *data, size_t len);
/* session_relay_free releases what the relay holds (at session free). */
void session_relay_free(struct session *s);
/* session_relay_client_drained: the client drained below the low mark. */
void session_relay_client_drained(struct session *s);

/* --- session_park.c ------------------------------------------------------------- */

/* session_park_take: the login's cache step.  Keys the login and, on a hit,
 * adopts the parked connection (s->backend, s->cached_capa); on a wait,
 * session_login_cache_ready follows.  Unknown, blocked and disabled users and
 * logins acting as another user always miss. */
enum sesscache_result session_park_take(struct session *s);
/* session_park_cancel ends a wait for a parked connection, if any. */
void session_park_cancel(struct session *s);
/* session_park_note_command: a relayed command (its upper-case name) ended. */
void session_park_note_command(struct session *s, const char *name);
/* session_park_try: data is what the client just sent.  When it is a lone
 * LOGOUT of a parkable session, the client is answered here, the backend
 * connection goes to the cache and the session ends: returns 1.  Else 0. */
int session_park_try(struct session *s, const uint8_t *data, size_t len);
/* session_park_note_id: the client sent ID with args (a list of field-value
 * pairs, or NIL) before login; a "name" in session_cache.park_clients lets
 * its logins park whatever the seen set says. */
void session_park_note_id(struct session *s, const struct imap_arg *args, size_t num_args);

/* --- session_kick.c ------------------------------------------------------------- */

/* session_kick_check ends a kicked session once the command in flight is
 * done, or looks again soon. */
void session_kick_check(struct session *s);

/* --- session_audit.c ------------------------------------------------------------ */

uint64_t session_mono_us(void);
/* session_audit_start creates the session's tap and writes session_start.
 * Returns 0 or UV_ENOMEM. */
int session_audit_start(struct session *s);
/* session_audit_event writes a session event record; result and reason may
 * be NULL. */
void session_audit_event(struct session *s, const char *type, const char *result,
                         const char *reason);
/* session_audit_full ends a session whose record found the queue full under
 * policy close; returns 1 when it did. */
int session_audit_full(struct session *s);
/* session_audit_preauth_end: the session logs in; the commands before login
 * that no record holds yet go into a last preauth_summary. */
void session_audit_preauth_end(struct session *s);
/* session_tap_in / session_tap_out show the tap what the client sent and
 * what it is sent.  session_tap_in returns 0, or -1 when the session ended. */
int session_tap_in(struct session *s, const uint8_t *data, size_t len);
void session_tap_out(struct session *s, const uint8_t *data, size_t len);

/* --- metrics of a login (session_login.c) ------------------------------------- */

/* session_login_metrics ends the login in flight for the metrics: its
 * current step's time and its whole time under result r (once per login;
 * nothing when none is in flight). */
void session_login_metrics(struct session *s, enum metrics_login_result r);

/* --- session.c: the start after accept ----------------------------------- */

/* session_start: the client's address is known (from the socket or a PROXY
 * header): connection caps, the audit's session_start, the parser, then the
 * TLS handshake or the greeting.  Returns 0, or a UV_E* code with the
 * session closed. */
int session_start(struct session *s);

/* --- session_proxy.c ------------------------------------------------------------ */

/* session_proxy_begin: the listener wants a PROXY header first.  A peer
 * outside proxy_trusted is closed; else the header is awaited with its own
 * deadline.  Returns 0 (the session may be closed). */
int session_proxy_begin(struct session *s);
/* session_proxy_input: bytes from the client while SESSION_F_PROXY_WAIT. */
void session_proxy_input(struct session *s, const uint8_t *data, size_t len);
/* session_proxy_header_out writes the PROXY v2 header for this session's
 * backend connection: the client's and the local address, SSL (version and
 * cipher) when the client's side is TLS, AUTHORITY (the name the client
 * asked for) and UNIQUE_ID (the session id of the audit records).  Returns
 * its length, or -1 when cap is too small. */
#define SESSION_PROXY_OUT_MAX_LEN 1024 /* bytes; the header above is at most ~600 */
int session_proxy_header_out(struct session *s, uint8_t *out, size_t cap);
/* session_tls_version / session_tls_cipher: the client's TLS as the
 * session knows it (its own, or the balancer's word); "" without TLS. */
const char *session_tls_version(const struct session *s);
const char *session_tls_cipher(const struct session *s);

#endif
