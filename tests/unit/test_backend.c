/* backend against a scripted IMAP server on loopback, in one loop: the
 * answer to STARTTLS followed by cleartext fails the login before any TLS
 * byte goes out, the answer alone starts the handshake, the copies of the
 * credentials are released wiped on success and on refusal, and an OAuth
 * token passes through by the mechanism the backend announces. */
#include <string.h>

#include <criterion/criterion.h>

#include <uv.h>

#include "proxy/backend.h"
#include "proxy/conn.h"
#include "proxy/tls.h"
#include "secret_watch.h"

#define TEST_TIMEOUT_MS 5000   /* connect and each step after it */
#define TEST_LINE_LEN 1024     /* bytes of a line the server keeps */

struct script {
    const char *greeting;        /* sent on accept */
    const char *starttls_answer; /* sent in one write for "S STARTTLS" */
    const char *login_answer;    /* for the "L ..." command */
};

struct run {
    uv_loop_t loop;
    uv_tcp_t listener;
    struct conn *srv;            /* the server's end; NULL once closed */
    const struct script *script;
    char line[TEST_LINE_LEN];
    size_t line_len;
    char login_cmd[TEST_LINE_LEN]; /* the login command as received */
    int got_tls_record;          /* bytes after STARTTLS began with a TLS handshake record */
    int after_starttls;          /* the STARTTLS answer went out */
    struct config_backend cfg;
    SSL_CTX *cctx;
    struct backend *b;
    int reports;
    enum backend_status status;
    char reason[128];
};

static int run_oauth; /* the next run_script logs in with p.oauth */

static void srv_on_read(void *ctx, const uint8_t *data, size_t len);
static void srv_on_eof(void *ctx, int status);
static void srv_on_close(void *ctx);

static const struct conn_ops srv_ops = {
    .on_read = srv_on_read,
    .on_eof = srv_on_eof,
    .on_close = srv_on_close,
};

static void srv_send(struct run *r, const char *text)
{
    (void)conn_write(r->srv, text, strlen(text));
}

static void srv_on_line(struct run *r, const char *line)
{
    if (strcmp(line, "S STARTTLS") == 0) {
        srv_send(r, r->script->starttls_answer);
        r->after_starttls = 1;
    } else if (strncmp(line, "C ", 2) == 0) {
        srv_send(r, "* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\nC OK done\r\n");
    } else if (strncmp(line, "L ", 2) == 0) {
        snprintf(r->login_cmd, sizeof(r->login_cmd), "%s", line);
        srv_send(r, r->script->login_answer);
    } else {
        srv_send(r, "* BAD unexpected\r\n");
    }
}

static void srv_on_read(void *ctx, const uint8_t *data, size_t len)
{
    struct run *r = ctx;
    if (r->after_starttls) {
        /* a TLS record: content type 22 (handshake), version 3.x */
        if (len >= 2 && data[0] == 0x16 && data[1] == 0x03) {
            r->got_tls_record = 1;
        }
        conn_close(r->srv, CONN_CLOSE_NOW);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            r->line[r->line_len > 0 && r->line[r->line_len - 1] == '\r' ? r->line_len - 1
                                                                         : r->line_len] = '\0';
            r->line_len = 0;
            srv_on_line(r, r->line);
            if (r->srv == NULL || r->after_starttls) {
                return;
            }
        } else if (r->line_len + 1 < sizeof(r->line)) {
            r->line[r->line_len++] = (char)data[i];
        }
    }
}

static void srv_on_eof(void *ctx, int status)
{
    struct run *r = ctx;
    (void)status;
    conn_close(r->srv, CONN_CLOSE_NOW);
}

static void srv_on_close(void *ctx)
{
    struct run *r = ctx;
    r->srv = NULL;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct run *r = server->data;
    cr_assert_eq(status, 0);
    r->srv = conn_new(&r->loop, &srv_ops, r);
    cr_assert_eq(conn_accept(r->srv, server), 0);
    cr_assert_eq(conn_read_start(r->srv), 0);
    srv_send(r, r->script->greeting);
    uv_close((uv_handle_t *)server, NULL); /* one connection is all we take */
}

static void on_backend_done(void *ctx, enum backend_status status, const char *code,
                            const char *reason)
{
    struct run *r = ctx;
    (void)code;
    r->reports++;
    r->status = status;
    snprintf(r->reason, sizeof(r->reason), "%s", reason);
    backend_free(r->b); /* from within its callback: allowed */
    r->b = NULL;
    if (r->srv != NULL) {
        conn_close(r->srv, CONN_CLOSE_NOW);
    }
}

/* run_script runs one login against script over backend TLS mode tls. */
static void run_script(struct run *r, const struct script *script, enum config_backend_tls tls)
{
    struct sockaddr_in addr;
    int len = sizeof(addr);
    char err[256];

    memset(r, 0, sizeof(*r));
    r->script = script;
    cr_assert_eq(uv_loop_init(&r->loop), 0);
    uv_tcp_init(&r->loop, &r->listener);
    r->listener.data = r;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    cr_assert_eq(uv_tcp_bind(&r->listener, (const struct sockaddr *)&addr, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&r->listener, 8, on_connection), 0);
    uv_tcp_getsockname(&r->listener, (struct sockaddr *)&addr, &len);

    r->cfg.name = "scripted";
    r->cfg.host = "127.0.0.1";
    r->cfg.port = ntohs(addr.sin_port);
    r->cfg.tls = tls;
    if (tls != CONFIG_BACKEND_TLS_NONE) {
        r->cctx = tls_client_ctx_new(err, sizeof(err), NULL, 0);
        cr_assert_not_null(r->cctx, "%s", err);
    }
    struct backend_login_params p = {
        .cfg = &r->cfg,
        .tls_ctx = r->cctx,
        .user = "alice",
        .password = "s3cret-pw",
        .client_ip = "127.0.0.1",
        .client_port = 1,
        .local_ip = "127.0.0.1",
        .local_port = 2,
        .connect_timeout_ms = TEST_TIMEOUT_MS,
        .greeting_timeout_ms = TEST_TIMEOUT_MS,
        .session_id = "test",
        .oauth = run_oauth,
    };
    r->b = backend_login(&r->loop, &p, on_backend_done, r);
    cr_assert_not_null(r->b);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&r->loop), 0, "a handle leaked");
    SSL_CTX_free(r->cctx);
    cr_assert_eq(r->reports, 1);
}

Test(backend, cleartext_after_the_starttls_answer_fails_the_login)
{
    static const struct script s = {
        .greeting = "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
        .starttls_answer = "S OK go\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n",
        .login_answer = "L OK done\r\n",
    };
    struct run r;
    run_script(&r, &s, CONFIG_BACKEND_TLS_STARTTLS);
    cr_assert_eq(r.status, BACKEND_UNAVAILABLE);
    cr_assert_str_eq(r.reason, "backend sent data after its STARTTLS answer");
    cr_assert_not(r.got_tls_record, "no handshake starts over injected bytes");
    cr_assert_str_eq(r.login_cmd, "", "the credentials never went out");
}

Test(backend, the_starttls_answer_alone_starts_the_handshake)
{
    static const struct script s = {
        .greeting = "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
        .starttls_answer = "S OK go\r\n",
        .login_answer = "L OK done\r\n",
    };
    struct run r;
    run_script(&r, &s, CONFIG_BACKEND_TLS_STARTTLS);
    cr_assert(r.got_tls_record, "a ClientHello followed the answer");
    /* the scripted server speaks no TLS: it hangs up on the ClientHello */
    cr_assert_eq(r.status, BACKEND_UNAVAILABLE);
    cr_assert_neq(strcmp(r.reason, "backend sent data after its STARTTLS answer"), 0);
}

Test(backend, credentials_released_wiped_after_a_login)
{
    static const struct script s = {
        .greeting = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n",
        .login_answer = "L OK [CAPABILITY IMAP4rev1] done\r\n",
    };
    struct run r;
    struct secret_watch w;
    secret_watch_start(&w);
    run_script(&r, &s, CONFIG_BACKEND_TLS_NONE);
    secret_watch_stop();
    cr_assert_eq(r.status, BACKEND_OK, "%s", r.reason);
    /* "\0alice\0s3cret-pw" */
    cr_assert_str_eq(r.login_cmd, "L AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldC1wdw==");
    /* the command and its base64, then user and password with the backend */
    cr_assert_geq(w.blocks, 4, "blocks released through secret_free: %zu", w.blocks);
    cr_assert_eq(w.dirty, 0);
}

Test(backend, credentials_released_wiped_after_a_refusal)
{
    static const struct script s = {
        .greeting = "* OK [CAPABILITY IMAP4rev1] hi\r\n", /* no AUTH=PLAIN: LOGIN */
        .login_answer = "L NO [AUTHENTICATIONFAILED] no\r\n",
    };
    struct run r;
    struct secret_watch w;
    secret_watch_start(&w);
    run_script(&r, &s, CONFIG_BACKEND_TLS_NONE);
    secret_watch_stop();
    cr_assert_eq(r.status, BACKEND_AUTH_FAILED);
    cr_assert_str_eq(r.login_cmd, "L LOGIN \"alice\" \"s3cret-pw\"");
    cr_assert_geq(w.blocks, 3, "blocks released through secret_free: %zu", w.blocks);
    cr_assert_eq(w.dirty, 0);
}

/* OAuth pass-through: the password is the client's token, sent by the
 * mechanism the backend announces, and wiped like a password. */
static void oauth_login(const char *greeting, const char *want_cmd, enum backend_status want)
{
    const struct script s = {
        .greeting = greeting,
        .login_answer = "L OK [CAPABILITY IMAP4rev1] done\r\n",
    };
    struct run r;
    struct secret_watch w;
    run_oauth = 1;
    secret_watch_start(&w);
    run_script(&r, &s, CONFIG_BACKEND_TLS_NONE);
    secret_watch_stop();
    run_oauth = 0;
    cr_assert_eq(r.status, want, "%s", r.reason);
    cr_assert_str_eq(r.login_cmd, want_cmd);
    cr_assert_eq(w.dirty, 0);
}

Test(backend, oauth_token_passes_through_oauthbearer)
{
    /* "n,a=alice,\x01auth=Bearer s3cret-pw\x01\x01" */
    oauth_login("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER] hi\r\n",
                "L AUTHENTICATE OAUTHBEARER bixhPWFsaWNlLAFhdXRoPUJlYXJlciBzM2NyZXQtcHcBAQ==",
                BACKEND_OK);
}

Test(backend, oauth_token_passes_through_xoauth2)
{
    /* "user=alice\x01auth=Bearer s3cret-pw\x01\x01" */
    oauth_login("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] hi\r\n",
                "L AUTHENTICATE XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciBzM2NyZXQtcHcBAQ==",
                BACKEND_OK);
}

Test(backend, oauth_needs_a_mechanism_of_the_backend)
{
    oauth_login("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] hi\r\n", "", BACKEND_UNAVAILABLE);
}
