/* sesscache: the entry key (an HMAC of everything a login was checked
 * with) and the take/miss bookkeeping without a backend. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/config.h"
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
    key(k, "alice", NULL, "pw", NULL, "main", "h", 1);
    cr_assert_null(sesscache_take(cache, "alice", k, &capa));
    cr_assert_null(capa);
    sesscache_evict_user(cache, "alice");
    sesscache_evict_all(cache);
    sesscache_stats(cache, &st);
    cr_assert_eq(st.misses, 1);
    cr_assert_eq(st.hits, 0);
    cr_assert_eq(st.size, 0);
    cr_assert_null(sesscache_take(NULL, "alice", k, &capa), "no cache: no hit");
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
