/* The oauth module: token validation on its thread against a key set file,
 * a key set URL and an introspection endpoint served by a small HTTP server
 * in this test (a thread of its own on a loopback port), with results on the
 * submitting loop.  Each test runs its loop to the end and checks that
 * uv_loop_close() returns 0.  Criterion runs each test in a process of its
 * own, so each starts the module afresh. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"
#include "proxy/oauth.h"
#include "../oauth/jwt_mint.h"

#define STUB_MAX_REQUEST_LEN 65536

/* --- the HTTP stub --------------------------------------------------------------- */

struct stub {
    int fd;
    uint16_t port;
    uv_thread_t thread;
    uv_mutex_t mu;
    int stop;
    int jwks_requests;
    int introspections;
    char jwks[8192];
    char good_token[4096];  /* introspection says active for this one */
    char last_auth[256];    /* the Authorization header of the last POST */
    unsigned delay_ms;      /* before answering an introspection */
};

static void stub_answer(int c, int code, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     code, strlen(body));
    if (write(c, head, (size_t)n) < 0 || write(c, body, strlen(body)) < 0) {
        return;
    }
}

static void stub_thread(void *arg)
{
    struct stub *st = arg;
    for (;;) {
        int c = accept(st->fd, NULL, NULL);
        uv_mutex_lock(&st->mu);
        int stop = st->stop;
        uv_mutex_unlock(&st->mu);
        if (c < 0 || stop) {
            if (c >= 0) {
                close(c);
            }
            return;
        }
        static char req[STUB_MAX_REQUEST_LEN + 1];
        size_t len = 0;
        char *end = NULL;
        while (len < STUB_MAX_REQUEST_LEN) {
            ssize_t n = read(c, req + len, STUB_MAX_REQUEST_LEN - len);
            if (n <= 0) {
                break;
            }
            len += (size_t)n;
            req[len] = '\0';
            end = strstr(req, "\r\n\r\n");
            if (end != NULL) {
                const char *cl = strstr(req, "Content-Length: ");
                size_t want = cl != NULL && cl < end ? strtoul(cl + 16, NULL, 10) : 0;
                if (len >= (size_t)(end + 4 - req) + want) {
                    break;
                }
            }
        }
        uv_mutex_lock(&st->mu);
        if (strncmp(req, "GET /jwks.json ", 15) == 0) {
            st->jwks_requests++;
            stub_answer(c, 200, st->jwks);
        } else if (strncmp(req, "POST /introspect ", 17) == 0 && end != NULL) {
            st->introspections++;
            if (st->delay_ms > 0) {
                uv_sleep(st->delay_ms);
            }
            const char *a = strstr(req, "Authorization: ");
            if (a != NULL && a < end) {
                snprintf(st->last_auth, sizeof(st->last_auth), "%.*s",
                         (int)strcspn(a, "\r"), a);
            }
            char want[4200];
            snprintf(want, sizeof(want), "token=%s&", st->good_token);
            if (st->good_token[0] != '\0' && strstr(end + 4, want) != NULL) {
                char body[512];
                snprintf(body, sizeof(body),
                         "{\"active\":true,\"email\":\"dave@intro.test\",\"exp\":%lld}",
                         (long long)time(NULL) + 600);
                stub_answer(c, 200, body);
            } else {
                stub_answer(c, 200, "{\"active\":false}");
            }
        } else {
            stub_answer(c, 404, "{}");
        }
        uv_mutex_unlock(&st->mu);
        close(c);
    }
}

static void stub_start(struct stub *st)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    st->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(st->fd >= 0);
    cr_assert_eq(bind(st->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(st->fd, 16), 0);
    cr_assert_eq(getsockname(st->fd, (struct sockaddr *)&sa, &sl), 0);
    st->port = ntohs(sa.sin_port);
    cr_assert_eq(uv_mutex_init(&st->mu), 0);
    cr_assert_eq(uv_thread_create(&st->thread, stub_thread, st), 0);
}

static void stub_stop(struct stub *st)
{
    uv_mutex_lock(&st->mu);
    st->stop = 1;
    uv_mutex_unlock(&st->mu);
    /* wake the accept */
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(st->port);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        cr_log_warn("stub wake failed");
    }
    close(c);
    uv_thread_join(&st->thread);
    close(st->fd);
    uv_mutex_destroy(&st->mu);
}

/* --- the test's side --------------------------------------------------------------- */

struct answer {
    int calls;
    struct oauth_result res;
};

static void on_result(void *ctx, const struct oauth_result *r)
{
    struct answer *a = ctx;
    a->calls++;
    a->res = *r;
}

static struct jwt_mint_keys keys;
static struct stub stub;
static struct config *cfg;
static uv_loop_t loop;
static char jwks_path[256];

static void setup(void)
{
    log_init("test_oauth", LOG_ERR, 0);
    jwt_mint_generate(&keys);
    char *doc = jwt_mint_jwks(&keys, "rsa1", "ec1", "ed1");
    snprintf(stub.jwks, sizeof(stub.jwks), "%s", doc);
    snprintf(jwks_path, sizeof(jwks_path), "%s/test_oauth_jwks_XXXXXX", P_tmpdir);
    int fd = mkstemp(jwks_path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
    close(fd);
    free(doc);
    stub_start(&stub);
    /* a port nobody listens on: bound, then closed */
    int dead = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(dead, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(getsockname(dead, (struct sockaddr *)&sa, &sl), 0);
    close(dead);
    char text[4096], err[512];
    snprintf(text, sizeof(text),
             "backends:\n  - {name: b, host: 127.0.0.1, port: 1}\n"
             "oauth:\n  domains:\n"
             "    - {domain: example.com, jwks_file: \"%s\", issuer: \"https://idp.test\","
             " audience: imap}\n"
             "    - {domain: url.test, jwks_url: \"http://127.0.0.1:%u/jwks.json\","
             " issuer: \"https://idp.test\", jwks_min_fetch_interval_s: 60}\n"
             "    - {domain: intro.test, introspection_url: \"http://127.0.0.1:%u/introspect\","
             " client_id: mux, client_secret: s3cret, negative_cache_s: 60}\n"
             "    - {domain: down.test, introspection_url: \"http://127.0.0.1:%u/introspect\","
             " client_id: mux, client_secret: s3cret, http_timeout_ms: 2000}\n"
             "    - {domain: nodns.test, introspection_url: \"http://no-such-host.invalid/i\","
             " client_id: mux, client_secret: s3cret, http_timeout_ms: 3000}\n"
             "limits: {verify_per_client: 2}\n",
             jwks_path, stub.port, stub.port, ntohs(sa.sin_port));
    cfg = config_parse(err, sizeof(err), "test", text, strlen(text));
    cr_assert_not_null(cfg, "%s", err);
    cr_assert_eq(cfg->oauth.num_domains, 5);
    cr_assert_eq(oauth_init(cfg), 0);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(oauth_loop_open(&loop), 0);
    cr_assert_eq(oauth_loop_open(&loop), UV_EEXIST);
}

static void teardown(void)
{
    oauth_loop_close(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    oauth_cleanup();
    config_unref(&cfg);
    stub_stop(&stub);
    unlink(jwks_path);
    jwt_mint_free(&keys);
}

/* validate runs one validation to its answer (bounded: 10 s). */
static struct answer validate(const char *domain, const char *token)
{
    struct answer a;
    memset(&a, 0, sizeof(a));
    cr_assert_eq(oauth_validate(&loop, "127.0.0.1", domain, token, strlen(token), on_result, &a),
                 0);
    uint64_t deadline = uv_hrtime() + 10000000000ull;
    while (a.calls == 0 && uv_hrtime() < deadline) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    cr_assert_eq(a.calls, 1);
    return a;
}

static char *mint(enum jwt_alg alg, const char *kid, long exp_delta)
{
    char hdr[128], claims[512];
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"kid\":\"%s\"}", jwt_alg_name(alg), kid);
    snprintf(claims, sizeof(claims),
             "{\"iss\":\"https://idp.test\",\"aud\":\"imap\",\"email\":\"alice@example.com\","
             "\"exp\":%lld}",
             (long long)time(NULL) + exp_delta);
    return jwt_mint_sign(&keys, alg, hdr, claims);
}

TestSuite(oauth, .init = setup, .fini = teardown, .timeout = 60);

Test(oauth, jwks_file)
{
    char *t = mint(JWT_ALG_ES256, "ec1", 600);
    struct answer a = validate("example.com", t);
    cr_assert_eq(a.res.status, OAUTH_VALID, "%s", a.res.reason);
    cr_assert_str_eq(a.res.identity, "alice@example.com");
    free(t);
    t = mint(JWT_ALG_EDDSA, "ed1", -600);
    a = validate("example.com", t);
    cr_assert_eq(a.res.status, OAUTH_INVALID);
    cr_assert_str_eq(a.res.reason, "expired");
    free(t);
    /* no URL: an unknown kid is refused at once, nothing is fetched */
    t = mint(JWT_ALG_RS256, "rsa9", 600);
    a = validate("example.com", t);
    cr_assert_eq(a.res.status, OAUTH_INVALID);
    cr_assert_str_eq(a.res.reason, "unknown key id");
    free(t);
    cr_assert_eq(validate("example.com", "not.a.token").res.status, OAUTH_INVALID);
    struct oauth_stats s;
    oauth_stats(&loop, &s);
    cr_assert_eq(s.started, 4);
    cr_assert_eq(s.valid, 1);
    cr_assert_eq(s.invalid, 3);
    cr_assert_eq(oauth_validate(&loop, NULL, "nowhere.test", "x", 1, on_result, NULL), UV_ENOENT);
}

Test(oauth, jwks_url_and_unknown_kids)
{
    char *t = mint(JWT_ALG_RS256, "rsa1", 600);
    struct answer a = validate("url.test", t);
    cr_assert_eq(a.res.status, OAUTH_VALID, "%s", a.res.reason);
    free(t);
    /* made-up kids: at most one fetch in jwks_min_fetch_interval_s */
    uv_mutex_lock(&stub.mu);
    int before = stub.jwks_requests;
    uv_mutex_unlock(&stub.mu);
    for (int i = 0; i < 5; i++) {
        char kid[16];
        snprintf(kid, sizeof(kid), "ghost%d", i);
        t = mint(JWT_ALG_RS256, kid, 600);
        a = validate("url.test", t);
        cr_assert_eq(a.res.status, OAUTH_INVALID);
        free(t);
    }
    uv_mutex_lock(&stub.mu);
    int fetched = stub.jwks_requests - before;
    uv_mutex_unlock(&stub.mu);
    cr_assert_leq(fetched, 1, "%d on-demand fetches", fetched);
    struct oauth_process_stats ps;
    oauth_process_stats(&ps);
    cr_assert_geq(ps.jwks_fetches, 1);
}

Test(oauth, introspection_cached)
{
    const char *good = "opaque-token.0123456789+/=";
    uv_mutex_lock(&stub.mu);
    snprintf(stub.good_token, sizeof(stub.good_token), "opaque-token.0123456789%%2B%%2F%%3D");
    uv_mutex_unlock(&stub.mu);
    for (int i = 0; i < 3; i++) {
        struct answer a = validate("intro.test", good);
        cr_assert_eq(a.res.status, OAUTH_VALID, "%s", a.res.reason);
        cr_assert_str_eq(a.res.identity, "dave@intro.test");
        cr_assert_eq(a.res.cached, i > 0);
    }
    for (int i = 0; i < 2; i++) {
        struct answer a = validate("intro.test", "revoked-token");
        cr_assert_eq(a.res.status, OAUTH_INVALID);
    }
    uv_mutex_lock(&stub.mu);
    cr_assert_eq(stub.introspections, 2, "%d requests", stub.introspections);
    /* "mux:s3cret" */
    cr_assert_str_eq(stub.last_auth, "Authorization: Basic bXV4OnMzY3JldA==");
    uv_mutex_unlock(&stub.mu);
    struct oauth_stats s;
    oauth_stats(&loop, &s);
    cr_assert_eq(s.cache_hits, 3);
}

Test(oauth, endpoint_down_is_unavailable)
{
    struct answer a = validate("down.test", "some-token");
    cr_assert_eq(a.res.status, OAUTH_UNAVAILABLE);
    /* not cached: the next one asks again (and fails again) */
    a = validate("down.test", "some-token");
    cr_assert_eq(a.res.status, OAUTH_UNAVAILABLE);
    struct oauth_process_stats ps;
    oauth_process_stats(&ps);
    cr_assert_eq(ps.introspection_failures, 2);
}

Test(oauth, unresolvable_host_is_unavailable)
{
    struct answer a = validate("nodns.test", "some-token");
    cr_assert_eq(a.res.status, OAUTH_UNAVAILABLE);
    /* the thread goes on with other work meanwhile and afterwards */
    char *t = mint(JWT_ALG_ES256, "ec1", 600);
    cr_assert_eq(validate("example.com", t).res.status, OAUTH_VALID);
    free(t);
}

Test(oauth, per_client_share)
{
    struct answer a[3];
    memset(a, 0, sizeof(a));
    uv_mutex_lock(&stub.mu);
    stub.delay_ms = 300;
    uv_mutex_unlock(&stub.mu);
    /* two in flight from one client (verify_per_client: 2), the third waits
       for nothing: refused at once; another client is not held up */
    cr_assert_eq(oauth_validate(&loop, "127.0.0.1", "intro.test", "t1", 2, on_result, &a[0]), 0);
    cr_assert_eq(oauth_validate(&loop, "127.0.0.1", "intro.test", "t2", 2, on_result, &a[1]), 0);
    cr_assert_eq(oauth_validate(&loop, "127.0.0.1", "intro.test", "t3", 2, on_result, &a[2]),
                 UV_EBUSY);
    struct answer b;
    memset(&b, 0, sizeof(b));
    cr_assert_eq(oauth_validate(&loop, "127.0.0.2", "intro.test", "t4", 2, on_result, &b), 0);
    uint64_t deadline = uv_hrtime() + 10000000000ull;
    while ((a[0].calls == 0 || a[1].calls == 0 || b.calls == 0) && uv_hrtime() < deadline) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    cr_assert_eq(a[0].calls + a[1].calls + b.calls, 3);
    cr_assert_eq(a[2].calls, 0);
    /* delivered: the share is free again */
    cr_assert_eq(validate("intro.test", "t5").res.status, OAUTH_INVALID);
    struct oauth_stats s;
    oauth_stats(&loop, &s);
    cr_assert_eq(s.busy, 1);
}
