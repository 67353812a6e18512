/* sesscache: the entry key (an HMAC of everything a login was checked
 * with), the take/miss bookkeeping, and parking over real loopback TCP
 * against a scripted peer: the reset, a login waiting for it, a lost entry. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/config.h"
#include "proxy/conn.h"
#include "proxy/sesscache.h"

static uv_loop_t loop;
static struct config *cfg;
static struct sesscache *cache;

static void setup(void)
{
    char err[256];
    char path[] = "/tmp/imapmux-sesscache-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char *text = "backends: [{name: a, host: h, port: 1}]\nsession_cache: {enabled: true}\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    cfg = config_load(err, sizeof(err), path);
    unlink(path);
    cr_assert_not_null(cfg, "%s", err);
    uv_loop_init(&loop);
    cache = sesscache_new(&loop, cfg);
    cr_assert_not_null(cache);
}

static void teardown(void)
{
    sesscache_free(cache);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left open");
    config_unref(&cfg);
}

TestSuite(sesscache, .init = setup, .fini = teardown);

static void key(uint8_t out[SESSCACHE_KEY_LEN], const char *user, const char *authzid,
                const char *password, const char *hash, const char *backend, const char *host,
                uint16_t port)
{
    sesscache_key(out, cache, user, authzid, password, hash, backend, host, port);
}

Test(sesscache, key_depends_on_every_field)
{
    uint8_t base[SESSCACHE_KEY_LEN], again[SESSCACHE_KEY_LEN], k[SESSCACHE_KEY_LEN];
    key(base, "alice", NULL, "pw", NULL, "main", "10.0.0.1", 143);
    key(again, "alice", NULL, "pw", NULL, "main", "10.0.0.1", 143);
    cr_assert_eq(memcmp(base, again, sizeof(base)), 0, "the same login gives the same key");

    key(k, "bob", NULL, "pw", NULL, "main", "10.0.0.1", 143);
    cr_assert_neq(memcmp(base, k, sizeof(base)), 0, "user");
    key(k, "alice", "alice", "pw", NULL, "main", "10.0.0.1", 143);
    cr_assert_neq(memcmp(base, k, sizeof(base)), 0, "authzid");
    key(k, "alice", NULL, "pw2", NULL, "main", "10.0.0.1", 143);
    cr_assert_neq(memcmp(base, k, sizeof(base)), 0, "password");
    key(k, "alice", NULL, "pw", "$y$hash", "main", "10.0.0.1", 143);
    cr_assert_neq(memcmp(base, k, sizeof(base)), 0, "stored hash");
    key(k, "alice", NULL, "pw", NULL, "other", "10.0.0.1", 143);
    cr_assert_neq(memcmp(base, k, sizeof(base)), 0, "backend");
    key(k, "alice", NULL, "pw", NULL, "main", "10.0.0.2", 143);
    cr_assert_neq(memcmp(base, k, sizeof(base)), 0, "host");
    key(k, "alice", NULL, "pw", NULL, "main", "10.0.0.1", 993);
    cr_assert_neq(memcmp(base, k, sizeof(base)), 0, "port");
    /* fields are delimited: moving a character from one to the next changes the key */
    key(base, "ab", NULL, "c", NULL, "main", "h", 1);
    key(k, "a", NULL, "bc", NULL, "main", "h", 1);
    cr_assert_neq(memcmp(base, k, sizeof(base)), 0, "field boundaries");
}

Test(sesscache, keys_differ_between_caches)
{
    uint8_t a[SESSCACHE_KEY_LEN], b[SESSCACHE_KEY_LEN];
    struct sesscache *other = sesscache_new(&loop, cfg);
    cr_assert_not_null(other);
    key(a, "alice", NULL, "pw", NULL, "main", "h", 1);
    sesscache_key(b, other, "alice", NULL, "pw", NULL, "main", "h", 1);
    cr_assert_neq(memcmp(a, b, sizeof(a)), 0, "each cache has its own random key");
    sesscache_free(other);
}

Test(sesscache, empty_cache_misses)
{
    uint8_t k[SESSCACHE_KEY_LEN];
    char *capa = NULL;
    struct sesscache_stats st;
    struct conn *conn = NULL;
    key(k, "alice", NULL, "pw", NULL, "main", "h", 1);
    cr_assert_eq(sesscache_take(cache, "alice", k, &conn, &capa, NULL, NULL), SESSCACHE_MISS);
    cr_assert_null(conn);
    cr_assert_null(capa);
    sesscache_evict_user(cache, "alice");
    sesscache_evict_all(cache);
    sesscache_stats(cache, &st);
    cr_assert_eq(st.misses, 1);
    cr_assert_eq(st.hits, 0);
    cr_assert_eq(st.size, 0);
    cr_assert_eq(sesscache_take(NULL, "alice", k, &conn, &capa, NULL, NULL), SESSCACHE_MISS,
                 "no cache: no hit");
}

Test(sesscache, disabled_config_gives_no_cache)
{
    char err[256];
    char path[] = "/tmp/imapmux-sesscache-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "backends: [{name: a, host: h, port: 1}]\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct config *off = config_load(err, sizeof(err), path);
    unlink(path);
    cr_assert_not_null(off, "%s", err);
    cr_assert_null(sesscache_new(&loop, off));
    config_unref(&off);
}

/* --- parking over loopback ------------------------------------------------ */

/* The peer plays a logged-in backend: it collects what the parked conn
 * sends and answers with what the test scripts, when the test says so. */
struct peer {
    uv_tcp_t server;
    uv_tcp_t sock;
    int accepted;
    int eof;
    char got[256];
    size_t got_len;
};

struct waiter {
    int calls;
    struct conn *conn;
    char *capa;
};

struct client {
    struct conn *conn;
    int connected;
    int closed;
};

static struct peer peer;
static struct client client;

static void peer_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char b[256];
    (void)h;
    (void)hint;
    *buf = uv_buf_init(b, sizeof(b));
}

static void peer_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0) {
        peer.eof = 1;
        uv_read_stop(st);
        return;
    }
    if (n > 0 && peer.got_len + (size_t)n < sizeof(peer.got)) {
        memcpy(peer.got + peer.got_len, buf->base, (size_t)n);
        peer.got_len += (size_t)n;
        peer.got[peer.got_len] = '\0';
    }
}

static void peer_on_conn(uv_stream_t *server, int status)
{
    cr_assert_eq(status, 0);
    uv_tcp_init(&loop, &peer.sock);
    cr_assert_eq(uv_accept(server, (uv_stream_t *)&peer.sock), 0);
    peer.accepted = 1;
    uv_read_start((uv_stream_t *)&peer.sock, peer_alloc, peer_read);
}

static void client_on_connect(void *ctx, int status)
{
    struct client *c = ctx;
    cr_assert_eq(status, 0);
    c->connected = 1;
}

static void client_ignore(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    (void)data;
    (void)len;
}

static void client_status(void *ctx, int status)
{
    (void)ctx;
    (void)status;
}

static void client_void(void *ctx)
{
    (void)ctx;
}

static void client_on_close(void *ctx)
{
    struct client *c = ctx;
    c->closed = 1;
}

static const struct conn_ops client_ops = {
    .on_connect = client_on_connect,
    .on_handshake = client_status,
    .on_read = client_ignore,
    .on_eof = client_status,
    .on_drain = client_void,
    .on_close = client_on_close,
};

static void run_until(int *flag)
{
    for (int i = 0; i < 2000 && !*flag; i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    cr_assert(*flag, "the loop never got there");
}

static int peer_got(const char *text)
{
    return strstr(peer.got, text) != NULL;
}

static void run_until_peer_got(const char *text)
{
    for (int i = 0; i < 2000 && !peer_got(text); i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    cr_assert(peer_got(text), "the peer never got %s (has: %s)", text, peer.got);
}

static void peer_say(const char *text)
{
    uv_buf_t b = uv_buf_init((char *)text, (unsigned)strlen(text));
    cr_assert_eq(uv_try_write((uv_stream_t *)&peer.sock, &b, 1), (int)strlen(text));
}

static void on_ready(void *ctx, struct conn *conn, char *capa)
{
    struct waiter *w = ctx;
    w->calls++;
    w->conn = conn;
    w->capa = capa;
}

/* park_one: a connected conn to the peer, parked for alice with key k. */
static void park_one(const uint8_t k[SESSCACHE_KEY_LEN])
{
    struct sockaddr_in addr;
    int len = sizeof(addr);
    memset(&peer, 0, sizeof(peer));
    memset(&client, 0, sizeof(client));
    uv_tcp_init(&loop, &peer.server);
    uv_ip4_addr("127.0.0.1", 0, &addr);
    cr_assert_eq(uv_tcp_bind(&peer.server, (const struct sockaddr *)&addr, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&peer.server, 4, peer_on_conn), 0);
    uv_tcp_getsockname(&peer.server, (struct sockaddr *)&addr, &len);
    client.conn = conn_new(&loop, &client_ops, &client);
    cr_assert_not_null(client.conn);
    cr_assert_eq(conn_connect(client.conn, (const struct sockaddr *)&addr), 0);
    run_until(&client.connected);
    run_until(&peer.accepted);
    cr_assert_eq(sesscache_park(cache, "alice", k, client.conn, "IMAP4rev1 UNSELECT"), 0);
    run_until_peer_got("U UNSELECT\r\n");
}

/* park_and_wait: alice's connection parked, and a login of hers waiting
 * for its reset with w. */
static void park_and_wait(struct waiter *w)
{
    uint8_t k[SESSCACHE_KEY_LEN];
    struct conn *conn = NULL;
    char *capa = NULL;
    key(k, "alice", NULL, "pw", NULL, "main", "h", 1);
    park_one(k);
    cr_assert_eq(sesscache_take(cache, "alice", k, &conn, &capa, on_ready, w), SESSCACHE_WAIT);
}

/* spin: a few turns of the loop without blocking. */
static void spin(void)
{
    for (int i = 0; i < 50; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
}

static void peer_close(void)
{
    uv_close((uv_handle_t *)&peer.sock, NULL);
    uv_close((uv_handle_t *)&peer.server, NULL);
}

Test(sesscache, login_waits_for_the_reset_then_takes_the_connection)
{
    uint8_t k[SESSCACHE_KEY_LEN], other[SESSCACHE_KEY_LEN];
    struct waiter w = {0}, w2 = {0};
    struct conn *conn = NULL;
    char *capa = NULL;
    struct sesscache_stats st;
    key(k, "alice", NULL, "pw", NULL, "main", "h", 1);
    key(other, "alice", NULL, "not-pw", NULL, "main", "h", 1);
    park_one(k);

    cr_assert_eq(sesscache_take(cache, "alice", other, &conn, &capa, on_ready, &w2),
                 SESSCACHE_MISS, "another password never waits");
    cr_assert_eq(sesscache_take(cache, "alice", k, &conn, &capa, on_ready, &w), SESSCACHE_WAIT);
    cr_assert_eq(sesscache_take(cache, "alice", k, &conn, &capa, on_ready, &w2), SESSCACHE_MISS,
                 "one waiter per parked connection");
    spin();
    cr_assert_eq(w.calls, 0, "no answer to UNSELECT yet");
    peer_say("* OK [CLOSED] Previous mailbox closed.\r\nU OK Unselect completed.\r\n");
    run_until(&w.calls);
    cr_assert_eq(w.calls, 1);
    cr_assert_eq(w.conn, client.conn, "the parked connection is handed over");
    cr_assert_str_eq(w.capa, "IMAP4rev1 UNSELECT");
    free(w.capa);
    sesscache_stats(cache, &st);
    cr_assert_eq(st.hits, 1);
    cr_assert_eq(st.waits, 1);
    cr_assert_eq(st.size, 0);
    cr_assert_eq(w2.calls, 0);

    conn_set_ops(w.conn, &client_ops, &client);
    conn_close(w.conn, CONN_CLOSE_NOW);
    run_until(&client.closed);
    peer_close();
}

Test(sesscache, reset_connection_is_taken_at_once)
{
    uint8_t k[SESSCACHE_KEY_LEN];
    struct waiter w = {0};
    struct conn *conn = NULL;
    char *capa = NULL;
    key(k, "alice", NULL, "pw", NULL, "main", "h", 1);
    park_one(k);
    peer_say("U BAD No mailbox selected.\r\n"); /* none was: as good as reset */
    spin();
    cr_assert_eq(sesscache_take(cache, "bob", k, &conn, &capa, on_ready, &w), SESSCACHE_MISS,
                 "another user never gets it");
    cr_assert_eq(sesscache_take(cache, "alice", k, &conn, &capa, on_ready, &w), SESSCACHE_HIT);
    cr_assert_eq(conn, client.conn);
    cr_assert_str_eq(capa, "IMAP4rev1 UNSELECT");
    free(capa);
    cr_assert_eq(w.calls, 0);
    conn_set_ops(conn, &client_ops, &client);
    conn_close(conn, CONN_CLOSE_NOW);
    run_until(&client.closed);
    peer_close();
}

Test(sesscache, lost_entry_ends_the_wait_with_a_miss)
{
    struct waiter w = {0};
    struct sesscache_stats st;
    park_and_wait(&w);
    peer_say("* BYE Shutting down.\r\n");
    run_until(&w.calls);
    cr_assert_eq(w.calls, 1);
    cr_assert_null(w.conn);
    cr_assert_null(w.capa);
    sesscache_stats(cache, &st);
    cr_assert_eq(st.evicted_lost, 1);
    cr_assert_eq(st.size, 0);
    cr_assert_eq(st.hits, 0);
    run_until(&peer.eof); /* the cache logs out and closes it */
    cr_assert(peer_got("Z LOGOUT\r\n"));
    peer_close();
}

Test(sesscache, cancelled_wait_is_never_called)
{
    struct waiter w = {0};
    struct sesscache_stats st;
    park_and_wait(&w);
    sesscache_cancel(cache, &w);
    peer_say("U OK Unselect completed.\r\n");
    spin();
    cr_assert_eq(w.calls, 0);
    sesscache_stats(cache, &st);
    cr_assert_eq(st.size, 1, "the connection stays parked for the next login");
    sesscache_evict_all(cache);
    run_until(&peer.eof);
    cr_assert(peer_got("Z LOGOUT\r\n"));
    peer_close();
}
