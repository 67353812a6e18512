/* session_private.h: struct session, its states and flags, and the calls the
 * session's files (session.c and session_*.c) make of each other.  Nothing
 * outside those files includes it.  See docs/ARCHITECTURE.md for the phases. */
#ifndef IMAPMUX_PROXY_SESSION_PRIVATE_H
#define IMAPMUX_PROXY_SESSION_PRIVATE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/audit_tap.h"
#include "common/config.h"
#include "common/imap_parser.h"
#include "common/imap_scan.h"
#include "common/json.h"
#include "common/schema.h"
#include "proxy/backend.h"
#include "proxy/conn.h"
#include "proxy/directory.h"
#include "proxy/sesscache.h"
#include "proxy/session.h"

#define SESSION_MAX_BAD_COMMANDS 10     /* BAD answers before BYE */
#define SESSION_MAX_INBUF_LEN 131072    /* bytes of pre-auth input held (two reads) */
#define SESSION_CLOSE_TIMEOUT_MS 5000   /* a graceful close may take this long */
#define SESSION_MAX_TAG_LEN 64
#define SESSION_MAX_ARGS 32
#define SESSION_MAX_DEPTH 4
#define SESSION_LOGIN_MAX_LEN 256       /* bytes of a login name we accept */

#define SESSION_CAPA_CLEAR "IMAP4rev1 ID LITERAL+ STARTTLS LOGINDISABLED"
#define SESSION_CAPA_TLS "IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN"

enum session_state {
    SESSION_TLS_ACCEPT, /* implicit TLS: handshake running, nothing sent yet */
    SESSION_PREAUTH,    /* greeting sent; commands answered here */
    SESSION_STARTTLS,   /* STARTTLS accepted; handshake running, input discarded */
    SESSION_LOGIN,      /* backend login running; client reads stopped */
    SESSION_RELAY,      /* logged in; bytes copied both ways */
    SESSION_CLOSING,    /* session_close called; waiting for handles */
};

static const char *const session_state_names[] = {
    "tls-accept", "preauth", "starttls", "login", "relay", "closing",
};
_Static_assert(sizeof(session_state_names) / sizeof(session_state_names[0]) == SESSION_CLOSING + 1,
               "a name per state");

#define SESSION_F_TLS          (1u << 0) /* client side is TLS now */
#define SESSION_F_STARTTLS     (1u << 1) /* listener is cleartext + STARTTLS */
#define SESSION_F_AUTH_CONT    (1u << 2) /* AUTHENTICATE waits for the client's line */
#define SESSION_F_BACKEND_BYE  (1u << 3) /* the backend sent "* BYE" (LOGOUT, shutdown) */
#define SESSION_F_CLIENT_PAUSE (1u << 5) /* client reads stopped by backpressure */
#define SESSION_F_BACK_PAUSE   (1u << 6) /* backend reads stopped by backpressure */
#define SESSION_F_FREED        (1u << 7) /* session_maybe_free ran the free */
#define SESSION_F_KICK         (1u << 8) /* kicked: BYE after the command in flight */
#define SESSION_F_WAITS_CLIENT (1u << 9) /* the backend's last word was a "+" */
#define SESSION_F_PROCESSING   (1u << 10) /* inside session_process: do not re-enter */
#define SESSION_F_AUDIT_FULL   (1u << 11) /* a record did not fit (policy close): end */
#define SESSION_F_CACHE_KEYED  (1u << 12) /* cache_key holds this login's session cache key */
#define SESSION_F_NO_PARK      (1u << 13) /* a command changed more than the mailbox state */
#define SESSION_F_CACHE_HIT    (1u << 14) /* backend taken from the cache; relay on the timer */
#define SESSION_F_CACHE_WAIT   (1u << 15) /* waits for a parked connection's reset */
#define SESSION_F_CACHE_MISSED (1u << 16) /* that wait failed; log in on the timer */
#define SESSION_F_WARM_LOGIN   (1u << 17) /* the login runs on a warm pool connection */

#define SESSION_KICK_QUIET_MS 50      /* a kicked session ends when the backend is this quiet */
#define SESSION_KICK_MAX_MS 10000     /* ... or this long after the kick, whatever is in flight */

#define SESSION_L_LOCAL    (1u << 0) /* imapmux verifies the password */
#define SESSION_L_UNKNOWN  (1u << 1) /* no such user: verify the dummy, then refuse */
#define SESSION_L_DISABLED (1u << 2) /* refuse with CONTACTADMIN once verified */
#define SESSION_L_BLOCKED  (1u << 3) /* brute-force block: refuse like a wrong password */

struct session {
    struct session_env *env;     /* borrowed; the worker outlives us */
    struct session *next, *prev; /* in env->sessions */
    struct config *cfg;          /* our own reference */
    const struct config_listener *listener; /* in cfg */
    char id[32];                 /* "w<worker>-<n>" for logs */
    enum session_state state;
    uint32_t flags;              /* SESSION_F_* */
    int pending;                 /* handles and work not yet closed/finished */

    struct conn *client;         /* owned; NULL once closed */
    struct conn *backend;        /* owned after login; NULL before and once closed */
    struct backend *login;       /* running backend login, or NULL */
    uv_timer_t timer;            /* one per session; re-armed per state */
    uint64_t last_activity;      /* loop time of the last client read (ms) */

    struct imap_parser *parser;  /* pre-auth only; freed at login */
    uint8_t *inbuf;              /* pre-auth input not yet parsed; NULL when empty */
    size_t inbuf_len;            /* bytes in inbuf */

    char tag[SESSION_MAX_TAG_LEN + 1];  /* tag of the LOGIN/AUTHENTICATE in flight */
    char user[SCHEMA_MAX_LOGIN_LEN + 1]; /* normalised login of the session ("" before) */
    const struct config_backend *route; /* chosen backend, in cfg */
    char host[256];              /* chosen host of route */
    uint16_t port;

    /* a login in flight (state SESSION_LOGIN) */
    char *password;              /* the client's; wiped as soon as it is used */
    char *authzid;               /* the client's SASL authorization identity, or NULL */
    char *hash;                  /* stored hash to verify, or NULL */
    char *login_as;              /* backend login (rename), or NULL */
    unsigned login_flags;        /* SESSION_L_* */
    unsigned auth_failures;
    unsigned bad_commands;

    char client_ip[64];
    uint16_t client_port;
    char local_ip[64];
    uint16_t local_port;
    uint64_t bytes_in, bytes_out;   /* relayed client->backend, backend->client */

    struct imap_scan client_scan;   /* line ends of the relayed streams */
    struct imap_scan backend_scan;
    uint64_t commands;              /* commands the client completed */
    uint64_t completions;           /* tagged responses of the backend */
    uint64_t last_backend_data;     /* loop time (ms) */
    uint64_t kick_at;               /* loop time of the kick */
    const char *kick_reason;        /* static text for the BYE */

    struct audit_tap *tap;          /* with an audit queue: the command records */
    uint64_t start_us;              /* monotonic, for the session's duration */
    const char *fail_reason;        /* why the login in flight failed (static) */
    uint64_t audit_commands;        /* command records written */

    uint8_t cache_key[SESSCACHE_KEY_LEN]; /* with SESSION_F_CACHE_KEYED */
    char *shown_capa;               /* capabilities the client got at login (cache on) */
    char *cached_capa;              /* with SESSION_F_CACHE_HIT: the list to show */
};

/* session.c */
void session_arm(struct session *s, uint64_t ms);
void session_audit_pause(struct session_env *env);
void session_bye(struct session *s, const char *code_and_text, const char *reason);
const char *session_capa(const struct session *s);
void session_close(struct session *s, const char *reason);
void session_log(struct session *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void session_login_clear(struct session *s);
void session_maybe_free(struct session *s);
void session_on_backend_close(void *ctx);
void session_on_client_handshake(void *ctx, int status);
int session_read_client(struct session *s);
void session_send(struct session *s, const char *text);
void session_sendf(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void session_set_state(struct session *s, enum session_state st);
void session_wipe(char **p);

/* session_audit.c */
uint64_t session_mono_us(void);
void session_audit_event(struct session *s, const char *type, const char *result, const char *reason);
int session_audit_full(struct session *s);
void session_on_audit_cmd(void *ctx, const struct audit_cmd *c);
int session_tap_in(struct session *s, const uint8_t *data, size_t len);
void session_tap_out(struct session *s, const uint8_t *data, size_t len);

/* session_kick.c */
void session_kick_check(struct session *s);

/* session_login.c */
void session_login_check(struct session *s);
void session_start_login(struct session *s, const char *tag, const char *authzid, const char *user, size_t user_len, const char *password);

/* session_park.c */
int session_cache_hit(struct session *s);
int session_cmd_parkable(const uint8_t *head, size_t len);
int session_try_park(struct session *s, const uint8_t *data, size_t len);

/* session_preauth.c */
void session_process(struct session *s);

/* session_relay.c */
extern const struct conn_ops session_backend_ops;
void session_enter_relay(struct session *s, struct conn *conn, char *filtered, const uint8_t *rest, size_t rest_len, int cached);
void session_on_client_drain(void *ctx);
void session_on_client_line(void *ctx, const uint8_t *head, size_t len);
void session_on_unused_connect(void *ctx, int status);
void session_relay(struct session *s, struct conn *dst, struct conn *src, const uint8_t *data, size_t len, uint32_t pause_flag);


#endif
