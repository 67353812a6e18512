/* backend: one backend IMAP connection from connect to a finished login:
 * resolve, connect, TLS or STARTTLS, greeting, CAPABILITY, optional ID with
 * the client's address, then AUTHENTICATE PLAIN or LOGIN.  It reports once
 * through its callback; on success the caller takes the conn over. */
#ifndef IMAPMUX_PROXY_BACKEND_H
#define IMAPMUX_PROXY_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <openssl/ssl.h>

#include "common/config.h"

struct backend;
struct conn;

enum backend_status {
    BACKEND_OK,          /* logged in; take the conn with backend_take_conn */
    BACKEND_AUTH_FAILED, /* the backend refused the credentials (tagged NO) */
    BACKEND_UNAVAILABLE, /* resolve, connect, TLS, greeting, protocol or timeout */
};

struct backend_login_params {
    const struct config_backend *cfg; /* borrowed; outlives the login */
    const char *host;                 /* one of cfg->hosts; NULL: cfg->host and cfg->port */
    uint16_t port;
    SSL_CTX *tls_ctx;                 /* client context for cfg (NULL: cfg->tls none) */
    const char *authzid;              /* NULL or "" for none */
    const char *user;                 /* login to send */
    const char *password;             /* copied, wiped when the backend is freed */
    const char *client_ip;            /* for ID forwarding */
    uint16_t client_port;
    const char *local_ip;
    uint16_t local_port;
    unsigned connect_timeout_ms;
    unsigned greeting_timeout_ms;     /* for everything after connect */
    const char *session_id;           /* for log lines; NULL for a warm connection */
    int oauth;                        /* password is an OAuth token: log in with the
                                         backend's AUTH=OAUTHBEARER or AUTH=XOAUTH2 */
    const uint8_t *proxy_header;      /* sent first on the new connection, before TLS and
                                         greeting (PROXY protocol v2; copied); NULL: none */
    size_t proxy_header_len;
};

/* code: the response code of a refusal ("AUTHENTICATIONFAILED", ...) or NULL;
 * reason: a fixed text for the log.  Both borrowed for the call. */
typedef void (*backend_done_cb)(void *ctx, enum backend_status status, const char *code,
                                const char *reason);

/* backend_login starts a login and returns its handle, or NULL on OOM.  cb is
 * called once (never from within backend_login) unless backend_free comes
 * first. */
struct backend *backend_login(uv_loop_t *loop, const struct backend_login_params *p,
                              backend_done_cb cb, void *ctx);

/* backend_prepare connects, greets and learns the capabilities like a login
 * but stops there: a warm connection for the pool.  cb reports BACKEND_OK
 * once it is ready (no credentials in p are used), or BACKEND_UNAVAILABLE;
 * a ready backend that fails later (BYE, EOF, a failed ping) reports
 * BACKEND_UNAVAILABLE once more.  Reads stay on while it waits. */
struct backend *backend_prepare(uv_loop_t *loop, const struct backend_login_params *p,
                                backend_done_cb cb, void *ctx);

/* backend_is_ready: prepared, idle and not being health-checked. */
int backend_is_ready(const struct backend *b);

/* backend_ping sends NOOP on a ready backend; no answer within the greeting
 * timeout reports BACKEND_UNAVAILABLE.  Ignored unless ready. */
void backend_ping(struct backend *b);

/* backend_resume_login logs in on a ready backend with p's credentials and
 * client address; cb and ctx replace the pool's.  The login then goes on as
 * with backend_login (callback never from within).  Returns 0, or -1 (not
 * ready, or out of memory; the backend is unchanged but for wiped copies). */
int backend_resume_login(struct backend *b, const struct backend_login_params *p,
                         backend_done_cb cb, void *ctx);

/* backend_take_conn, after BACKEND_OK, hands over the logged-in conn (the
 * caller must conn_set_ops it at once) and the capability list of the
 * backend (NUL-terminated, owned by the backend until backend_free).  Bytes
 * the backend sent after its tagged OK are in *out_rest (owned likewise). */
struct conn *backend_take_conn(struct backend *b, const char **out_capa,
                               const uint8_t **out_rest, size_t *out_rest_len);

/* backend_literal returns "LITERAL+" or "LITERAL-" when a capability list
 * of the backend (before or after login) announced it, else NULL. */
const char *backend_literal(const struct backend *b);

/* backend_free releases the login (closing its conn unless taken); no
 * callback comes after it.  NULL accepted. */
void backend_free(struct backend *b);

/* backend_set_config points a ready backend (a warm connection) at cfg, a
 * backend of a newer configuration with the same connection settings
 * (host, TLS, verification, server name), whose lifetime covers b's from
 * now on.  A reload keeps warm connections that way. */
void backend_set_config(struct backend *b, const struct config_backend *cfg);

#endif
