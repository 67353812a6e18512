/* Configuration loading: every field, defaults, every error with its line,
 * route lookup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "common/config.h"

#define DATA(f) TEST_DATA_DIR "/" f

static char test_dir[64];

static void make_dir(void)
{
    snprintf(test_dir, sizeof(test_dir), "/tmp/imapmux-config-XXXXXX");
    cr_assert_not_null(mkdtemp(test_dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", test_dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(config, .init = make_dir, .fini = remove_dir);

/* load writes text to a file named name and loads it. */
static struct config *load(char *err, size_t err_len, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", test_dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return config_load(err, err_len, path);
}

/* expect_error loads text and checks the message after the directory. */
static void expect_error(const char *text, const char *want)
{
    char err[512] = "";
    struct config *c = load(err, sizeof(err), "bad.yaml", text);
    cr_assert_null(c, "loaded: %s", text);
    const char *msg = strstr(err, "bad.yaml");
    cr_assert_not_null(msg, "%s", err);
    cr_assert_str_eq(msg, want);
}

Test(config, full_file)
{
    char err[512] = "";
    char text[4096];
    snprintf(text, sizeof(text),
             "instance: edge-1\n"
             "workers: 4\n"
             "log: {level: debug, target: syslog}\n"
             "listeners:\n"
             "  - {address: 127.0.0.1, port: 993, tls: implicit}\n"
             "  - {address: '::1', port: 143, tls: starttls}\n"
             "tls: {cert: %s, key: %s}\n"
             "backends:\n"
             "  - {name: a, host: 10.0.0.1, port: 143}\n"
             "  - name: b\n"
             "    host: mail.example.com\n"
             "    port: 993\n"
             "    tls: implicit\n"
             "    verify: no\n"
             "    ca_file: %s\n"
             "    server_name: imap.example.com\n"
             "    forward_id: yes\n"
             "routes:\n"
             "  default: a\n"
             "  domains: {Example.ORG: b}\n"
             "  users: {Alice@Example.com: b}\n"
             "limits:\n"
             "  max_line_len: 4096\n"
             "  max_preauth_literal_len: 1000\n"
             "  max_auth_failures: 5\n"
             "  preauth_timeout_ms: 1000\n"
             "  idle_timeout_ms: 2000\n"
             "  drain_timeout_ms: 3000\n"
             "  backend_connect_timeout_ms: 4000\n"
             "  backend_greeting_timeout_ms: 5000\n"
             "  relay_buffer_len: 8192\n",
             DATA("cert.pem"), DATA("key.pem"), DATA("cert.pem"));
    struct config *c = load(err, sizeof(err), "full.yaml", text);
    cr_assert_not_null(c, "%s", err);
    cr_assert_str_eq(c->instance, "edge-1");
    cr_assert_eq(c->num_workers, 4);
    cr_assert_eq(c->log_level, LOG_DEBUG);
    cr_assert_eq(c->log_target, CONFIG_LOG_SYSLOG);
    cr_assert_eq(c->num_listeners, 2);
    cr_assert_str_eq(c->listeners[1].address, "::1");
    cr_assert_eq(c->listeners[1].port, 143);
    cr_assert_eq(c->listeners[1].tls, CONFIG_LISTENER_STARTTLS);
    cr_assert_eq(c->listeners[0].tls, CONFIG_LISTENER_IMPLICIT);
    cr_assert_str_eq(c->tls_cert_file, DATA("cert.pem"));
    cr_assert_eq(c->num_backends, 2);
    const struct config_backend *b = &c->backends[1];
    cr_assert_str_eq(b->name, "b");
    cr_assert_str_eq(b->host, "mail.example.com");
    cr_assert_eq(b->port, 993);
    cr_assert_eq(b->tls, CONFIG_BACKEND_TLS_IMPLICIT);
    cr_assert_eq(b->tls_verify, 0);
    cr_assert_str_eq(b->server_name, "imap.example.com");
    cr_assert_eq(b->forward_id, 1);
    cr_assert_eq(c->backends[0].tls, CONFIG_BACKEND_TLS_NONE);
    cr_assert_eq(c->backends[0].tls_verify, 1);
    cr_assert_eq(c->default_backend, &c->backends[0]);
    cr_assert_eq(c->max_line_len, 4096);
    cr_assert_eq(c->max_preauth_literal_len, 1000);
    cr_assert_eq(c->max_auth_failures, 5);
    cr_assert_eq(c->preauth_timeout_ms, 1000);
    cr_assert_eq(c->idle_timeout_ms, 2000);
    cr_assert_eq(c->drain_timeout_ms, 3000);
    cr_assert_eq(c->backend_connect_timeout_ms, 4000);
    cr_assert_eq(c->backend_greeting_timeout_ms, 5000);
    cr_assert_eq(c->relay_buffer_len, 8192);

    /* routes: user, then domain (after the last @), then default; any case */
    cr_assert_eq(config_route_lookup(c, "alice@example.com"), &c->backends[1]);
    cr_assert_eq(config_route_lookup(c, "ALICE@EXAMPLE.COM"), &c->backends[1]);
    cr_assert_eq(config_route_lookup(c, "bob@example.org"), &c->backends[1]);
    cr_assert_eq(config_route_lookup(c, "bob@x@EXAMPLE.org"), &c->backends[1]);
    cr_assert_eq(config_route_lookup(c, "bob@example.com"), &c->backends[0]);
    cr_assert_eq(config_route_lookup(c, "bob"), &c->backends[0]);

    struct config *ref = config_ref(c);
    cr_assert_eq(ref, c);
    config_unref(&ref);
    cr_assert_null(ref);
    config_unref(&c);
    cr_assert_null(c);
    config_unref(&c); /* NULL is fine */
}

Test(config, defaults)
{
    char err[512] = "";
    struct config *c = load(err, sizeof(err), "min.yaml", "backends: [{name: x, host: h, port: 1}]\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->num_workers, 0);
    cr_assert_eq(c->log_level, LOG_INFO);
    cr_assert_eq(c->log_target, CONFIG_LOG_STDERR);
    cr_assert_eq(c->num_listeners, 0);
    cr_assert_not_null(c->instance);
    cr_assert_eq(c->default_backend, &c->backends[0], "a single backend is the default");
    cr_assert_eq(c->max_line_len, 8192);
    cr_assert_eq(c->max_preauth_literal_len, 8192);
    cr_assert_eq(c->max_auth_failures, 3);
    cr_assert_eq(c->preauth_timeout_ms, 60000);
    cr_assert_geq(c->idle_timeout_ms, 30u * 60 * 1000, "RFC 9051: at least 30 minutes");
    cr_assert_eq(c->drain_timeout_ms, 30000);
    cr_assert_eq(c->relay_buffer_len, 65536);
    config_unref(&c);
}

Test(config, no_default_with_several_backends)
{
    char err[512] = "";
    struct config *c = load(err, sizeof(err), "two.yaml",
                            "backends: [{name: x, host: h, port: 1}, {name: y, host: h, port: 2}]\n"
                            "routes: {users: {u: y}}\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_null(config_route_lookup(c, "someone"));
    cr_assert_eq(config_route_lookup(c, "U"), &c->backends[1]);
    config_unref(&c);
}

Test(config, errors_with_lines)
{
    expect_error("backends:\n  - name: a\n    host: h\n    port: 99999\n",
                 "bad.yaml:4: backends[0].port: expected an integer 1-65535");
    expect_error("backends:\n  - {name: a, host: h, port: -1}\n",
                 "bad.yaml:2: backends[0].port: expected an integer 1-65535");
    expect_error("backends:\n  - {name: a, host: h, port: 12x}\n",
                 "bad.yaml:2: backends[0].port: expected an integer 1-65535");
    expect_error("backends: [{name: a, host: h, port: 1}]\nbogus: 1\n", "bad.yaml:2: unknown key bogus");
    expect_error("backends: [{name: a, host: h, port: 1, colour: red}]\n",
                 "bad.yaml:1: unknown key backends[0].colour");
    expect_error("backends: [{name: a, host: h, port: 1, tls: maybe}]\n",
                 "bad.yaml:1: backends[0].tls: expected one of none | starttls | implicit");
    expect_error("backends: [{name: a, host: h, port: 1}]\nlog: {level: loud}\n",
                 "bad.yaml:2: log.level: expected one of error | warning | info | debug");
    expect_error("backends: [{name: a, host: h, port: 1}]\nroutes:\n  default: b\n",
                 "bad.yaml:3: routes.default: unknown backend b");
    expect_error("backends: [{name: a, host: h, port: 1}]\nroutes:\n  users: {u: zz}\n",
                 "bad.yaml:3: routes.users.u: unknown backend zz");
    expect_error("backends:\n  - {name: a, host: h, port: 1}\n  - {name: a, host: i, port: 2}\n",
                 "bad.yaml:3: backends[1]: duplicate backend name a");
    expect_error("backends: [{name: a, host: h, port: 1}]\n"
                 "listeners: [{address: 127.0.0.1, port: 993, tls: implicit}]\n",
                 "bad.yaml:1: tls: cert and key are required when listeners are configured");
    expect_error("backends: [{name: a, host: h, port: 1}]\n"
                 "listeners: [{address: localhost, port: 993, tls: implicit}]\n",
                 "bad.yaml:2: listeners[0].address: expected a numeric IPv4 or IPv6 address");
    expect_error("backends: [{name: a, host: h, port: 1, verify: perhaps}]\n",
                 "bad.yaml:1: backends[0].verify: expected true or false");
    expect_error("backends: [{name: a, host: h}]\n",
                 "bad.yaml:1: backends[0]: host and port (or hosts) are required");
    expect_error("backends: [{host: h, port: 1}]\n",
                 "bad.yaml:1: backends[0]: name is required: 1-64 of A-Z a-z 0-9 . _ -");
    expect_error("backends: [{name: a, host: h, port: 1, hosts: [\"x:1\"]}]\n",
                 "bad.yaml:1: backends[0]: give either host and port or hosts, not both");
    expect_error("backends: [{name: a, hosts: [\"x:1\", \"y\"]}]\n",
                 "bad.yaml:1: backends[0].hosts: host y: expected host:port ([address]:port for IPv6)");
    expect_error("backends: [{name: a, hosts: [\"x:1\", \"X:1\"]}]\n",
                 "bad.yaml:1: backends[0].hosts: X:1 listed twice");
    expect_error("backends: [{name: a, host: h, port: 1, auth: master}]\n",
                 "bad.yaml:1: backends[0]: auth master needs master_user and master_password "
                 "(or master_password_file)");
    expect_error("backends: [{name: a, host: h, port: 1}]\nredis: {port: 1}\n",
                 "bad.yaml:1: redis: host (or sentinels and master_name) is required");
    expect_error("backends: [{name: a, host: h, port: 1}]\nredis: {sentinels: [\"h:1\"]}\n",
                 "bad.yaml:1: redis: sentinels need master_name");
    expect_error("backends: [{name: a, host: h, port: 1}]\nredis: {host: r, sentinel_password: x}\n",
                 "bad.yaml:1: redis: sentinel_password without sentinels");
    expect_error("backends: [{name: a, host: h, port: 1}]\nredis: {host: r, unknown_users: maybe}\n",
                 "bad.yaml:2: redis.unknown_users: expected one of reject | passthrough");
    expect_error("backends: [{name: a, host: h, port: 1}]\nbruteforce: {enabled: true}\n",
                 "bad.yaml:1: bruteforce: the shared counters need a redis section");
    expect_error("backends: [{name: a, host: h, port: 1}]\nredis: {host: r}\nbruteforce: {window_s: 0}\n",
                 "bad.yaml:3: bruteforce.window_s: expected an integer 1-604800");
    expect_error("listeners: []\n", "bad.yaml:1: backends: at least one backend is required");
    expect_error("backends: [{name: a, host: h, port: 1}]\nlimits: {relay_buffer_len: 10}\n",
                 "bad.yaml:2: limits.relay_buffer_len: expected an integer 4096-1073741824");
    expect_error("backends: [{name: a, host: h, port: 1}]\nworkers: 99999999999999999999999\n",
                 "bad.yaml:2: workers: expected an integer 0-256");
    expect_error("", "bad.yaml:1: the file is empty");
    expect_error("backends: [\n", "bad.yaml:2: did not find expected node content");
    expect_error("- a\n- b\n", "bad.yaml:1: top level: expected a mapping (key: value)");
}

Test(config, redis_master_and_hosts)
{
    char err[512] = "";
    char text[2048];
    char secret[256];
    snprintf(secret, sizeof(secret), "%s/master.secret", test_dir);
    FILE *f = fopen(secret, "w");
    cr_assert_not_null(f);
    fputs("s3cret-from-file\n", f);
    fclose(f);
    snprintf(text, sizeof(text),
             "backends:\n"
             "  - name: store\n"
             "    hosts: [\"10.0.0.1:143\", \"[::1]:1143\"]\n"
             "    auth: master\n"
             "    master_user: proxy\n"
             "    master_password_file: %s\n"
             "  - {name: legacy, host: old.example.com, port: 143}\n"
             "redis:\n"
             "  sentinels: [\"127.0.0.1:26379\", \"127.0.0.2:26379\"]\n"
             "  master_name: routing\n"
             "  sentinel_password: spw\n"
             "  password: rpw\n"
             "  db: 2\n"
             "  prefix: \"mx:\"\n"
             "  connect_timeout_ms: 500\n"
             "  command_timeout_ms: 700\n"
             "  reconnect_max_ms: 3000\n"
             "  cache_ttl_ms: 0\n"
             "  unknown_users: passthrough\n"
             "bruteforce:\n"
             "  window_s: 60\n"
             "  delay_after: 2\n"
             "  delay_ms: 100\n"
             "  max_delay_ms: 1000\n"
             "  block_ip_after: 20\n"
             "  block_pair_after: 5\n", secret);
    struct config *c = load(err, sizeof(err), "redis.yaml", text);
    cr_assert_not_null(c, "%s", err);
    const struct config_backend *b = config_find_backend(c, "store");
    cr_assert_not_null(b);
    cr_assert_eq(b->num_hosts, 2);
    cr_assert_str_eq(b->host, "10.0.0.1");
    cr_assert_eq(b->port, 143);
    cr_assert_str_eq(b->hosts[1].host, "::1");
    cr_assert_eq(b->auth, CONFIG_BACKEND_AUTH_MASTER);
    cr_assert_str_eq(b->master_user, "proxy");
    cr_assert_str_eq(b->master_password, "s3cret-from-file");
    b = config_find_backend(c, "legacy");
    cr_assert_eq(b->num_hosts, 1);
    cr_assert_str_eq(b->hosts[0].host, "old.example.com");
    cr_assert_eq(b->auth, CONFIG_BACKEND_AUTH_PASSTHROUGH);
    cr_assert_null(config_find_backend(c, "Store"));
    cr_assert(c->redis.enabled);
    cr_assert_null(c->redis.host);
    cr_assert_eq(c->redis.num_sentinels, 2);
    cr_assert_str_eq(c->redis.sentinels[1].host, "127.0.0.2");
    cr_assert_str_eq(c->redis.master_name, "routing");
    cr_assert_str_eq(c->redis.sentinel_password, "spw");
    cr_assert_str_eq(c->redis.password, "rpw");
    cr_assert_eq(c->redis.db, 2);
    cr_assert_str_eq(c->redis.prefix, "mx:");
    cr_assert_eq(c->redis.connect_timeout_ms, 500);
    cr_assert_eq(c->redis.command_timeout_ms, 700);
    cr_assert_eq(c->redis.reconnect_max_ms, 3000);
    cr_assert_eq(c->redis.cache_ttl_ms, 0);
    cr_assert(c->redis.unknown_users_passthrough);
    cr_assert(c->bruteforce.enabled); /* on by default with Redis */
    cr_assert_eq(c->bruteforce.window_s, 60);
    cr_assert_eq(c->bruteforce.delay_after, 2);
    cr_assert_eq(c->bruteforce.delay_ms, 100);
    cr_assert_eq(c->bruteforce.max_delay_ms, 1000);
    cr_assert_eq(c->bruteforce.block_ip_after, 20);
    cr_assert_eq(c->bruteforce.block_pair_after, 5);
    config_unref(&c);

    /* defaults */
    c = load(err, sizeof(err), "redis2.yaml",
             "backends: [{name: a, host: h, port: 1}]\nredis: {host: 127.0.0.1}\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_str_eq(c->redis.host, "127.0.0.1");
    cr_assert_eq(c->redis.port, 6379);
    cr_assert_str_eq(c->redis.prefix, "imapmux:");
    cr_assert_eq(c->redis.connect_timeout_ms, 2000);
    cr_assert_eq(c->redis.cache_ttl_ms, 5000);
    cr_assert(!c->redis.unknown_users_passthrough);
    cr_assert_eq(c->bruteforce.block_pair_after, 10);
    config_unref(&c);

    /* without a redis section, no brute-force counters and no Redis */
    c = load(err, sizeof(err), "noredis.yaml", "backends: [{name: a, host: h, port: 1}]\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert(!c->redis.enabled);
    cr_assert(!c->bruteforce.enabled);
    config_unref(&c);
}

Test(config, unreadable_files)
{
    char err[512] = "";
    cr_assert_null(config_load(err, sizeof(err), "/nonexistent/imapmux.yaml"));
    cr_assert(strstr(err, "/nonexistent/imapmux.yaml: cannot open") != NULL, "%s", err);
    cr_assert_null(load(err, sizeof(err), "bad.yaml",
                        "backends: [{name: a, host: h, port: 1}]\n"
                        "listeners: [{address: 127.0.0.1, port: 993, tls: implicit}]\n"
                        "tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n"));
    cr_assert(strstr(err, "bad.yaml:3: tls.cert: cannot read /nonexistent/cert.pem") != NULL, "%s", err);
}

Test(config, sample_file_is_valid)
{
    /* deploy/imapmux.yaml with its certificate paths pointed at test data */
    char err[512] = "";
    FILE *f = fopen(TEST_DATA_DIR "/../../deploy/imapmux.yaml", "r");
    cr_assert_not_null(f);
    static char text[16384];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    static char fixed[20000];
    size_t o = 0;
    for (const char *p = text; *p;) {
        if (strncmp(p, "/etc/imapmux/cert.pem", 21) == 0) {
            o += (size_t)snprintf(fixed + o, sizeof(fixed) - o, "%s", DATA("cert.pem"));
            p += 21;
        } else if (strncmp(p, "/etc/imapmux/key.pem", 20) == 0) {
            o += (size_t)snprintf(fixed + o, sizeof(fixed) - o, "%s", DATA("key.pem"));
            p += 20;
        } else {
            fixed[o++] = *p++;
        }
    }
    fixed[o] = '\0';
    if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) != 0) {
        cr_skip_test("no system CA bundle for the sample's ca_file");
    }
    struct config *c = load(err, sizeof(err), "sample.yaml", fixed);
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->num_listeners, 3);
    cr_assert_eq(c->num_backends, 2);
    config_unref(&c);
}

Test(config, pool_and_session_cache)
{
    char err[512] = "";
    struct config *c = load(err, sizeof(err), "pool.yaml",
                            "backends:\n"
                            "  - {name: a, host: h, port: 1, pool_size: 8, pool_max_idle_ms: 20000,"
                            " pool_check_interval_ms: 500}\n"
                            "  - {name: b, host: h, port: 2}\n"
                            "routes: {default: a}\n"
                            "session_cache: {enabled: true, ttl_ms: 5000, max_per_user: 3,"
                            " max_total: 50}\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->backends[0].pool_size, 8);
    cr_assert_eq(c->backends[0].pool_max_idle_ms, 20000);
    cr_assert_eq(c->backends[0].pool_check_interval_ms, 500);
    cr_assert_eq(c->backends[1].pool_size, 0, "pools are off unless asked for");
    cr_assert_eq(c->backends[1].pool_max_idle_ms, 45000);
    cr_assert_eq(c->backends[1].pool_check_interval_ms, 15000);
    cr_assert_eq(c->session_cache.enabled, 1);
    cr_assert_eq(c->session_cache.ttl_ms, 5000);
    cr_assert_eq(c->session_cache.max_per_user, 3);
    cr_assert_eq(c->session_cache.max_total, 50);
    config_unref(&c);

    c = load(err, sizeof(err), "nocache.yaml", "backends: [{name: x, host: h, port: 1}]\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->session_cache.enabled, 0, "the session cache is off by default");
    cr_assert_eq(c->session_cache.ttl_ms, 30000);
    cr_assert_eq(c->session_cache.max_per_user, 2);
    cr_assert_eq(c->session_cache.max_total, 1000);
    config_unref(&c);

    expect_error("backends: [{name: a, host: h, port: 1, pool_max_idle_ms: 10}]\n",
                 "bad.yaml:1: backends[0].pool_max_idle_ms: expected an integer 1000-86400000");
    expect_error("backends: [{name: a, host: h, port: 1, pool_size: 99999}]\n",
                 "bad.yaml:1: backends[0].pool_size: expected an integer 0-10000");
    expect_error("backends: [{name: a, host: h, port: 1}]\nsession_cache: {max_per_user: 0}\n",
                 "bad.yaml:2: session_cache.max_per_user: expected an integer 1-1000");
    expect_error("backends: [{name: a, host: h, port: 1}]\nsession_cache: {ttl: 5}\n",
                 "bad.yaml:2: unknown key session_cache.ttl");
}

Test(config, parse_from_a_buffer)
{
    static const char text[] = "backends: [{name: a, host: h, port: 1}]\nworkers: 3\nXXX";
    char err[512] = "";
    /* the length, not a NUL, ends the text: the trailing XXX is not read */
    struct config *c = config_parse(err, sizeof(err), "buf.yaml", text, sizeof(text) - 4);
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->num_workers, 3);
    cr_assert_str_eq(c->path, "buf.yaml");
    cr_assert_str_eq(c->backends[0].name, "a");
    config_unref(&c);

    c = config_parse(err, sizeof(err), "buf.yaml", "backends: [{name: a, port: 1}]\n", 31);
    cr_assert_null(c);
    cr_assert_str_eq(err, "buf.yaml:1: backends[0]: host and port (or hosts) are required");
}

Test(config, a_key_given_twice_is_refused)
{
    /* the second "backends" used to be read over the first, whose array and
     * strings leaked (found by fuzz_config) */
    expect_error("backends: [{name: a, host: h, port: 1}]\nbackends: [{name: b, host: h, port: 2}]\n",
                 "bad.yaml:2: backends: given twice");
    expect_error("backends: [{name: a, host: h, port: 1}]\nlisteners: []\nlisteners: []\n",
                 "bad.yaml:3: listeners: given twice");
    expect_error("backends: [{name: a, host: h, port: 1, port: 2}]\n",
                 "bad.yaml:1: backends[0].port: given twice");
}

Test(config, a_nul_in_a_value_is_refused)
{
    /* "a\0b" would have been the backend "a", routes to "x\0y" the key "x" */
    expect_error("backends: [{name: \"a\\0b\", host: h, port: 1}]\n",
                 "bad.yaml:1: backends[0].name: must not hold a NUL character");
    expect_error("backends: [{name: a, host: h, port: 1}]\nroutes: {users: {\"x\\0y\": a}}\n",
                 "bad.yaml:2: routes.users: keys must be plain names");
}

Test(config, client_limits)
{
    char err[512] = "";
    struct config *c = load(err, sizeof(err), "min.yaml", "backends: [{name: x, host: h, port: 1}]\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->verify_threads, 0, "0: one per CPU, resolved by the daemon");
    cr_assert_eq(c->verify_queue, 256);
    cr_assert_eq(c->verify_per_client, 64);
    cr_assert_eq(c->max_connections, 0);
    cr_assert_eq(c->max_connections_per_ip, 0);
    cr_assert_eq(c->max_connections_per_ipv6_prefix, 0);
    cr_assert_eq(c->ipv6_prefix_len, 64);
    config_unref(&c);

    c = load(err, sizeof(err), "lim.yaml",
             "backends: [{name: x, host: h, port: 1}]\n"
             "limits:\n"
             "  verify_threads: 3\n"
             "  verify_queue: 100\n"
             "  verify_per_client: 0\n"
             "  max_connections: 20000\n"
             "  max_connections_per_ip: 50\n"
             "  max_connections_per_ipv6_prefix: 200\n"
             "  ipv6_prefix_len: 56\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->verify_threads, 3);
    cr_assert_eq(c->verify_queue, 100);
    cr_assert_eq(c->verify_per_client, 0);
    cr_assert_eq(c->max_connections, 20000);
    cr_assert_eq(c->max_connections_per_ip, 50);
    cr_assert_eq(c->max_connections_per_ipv6_prefix, 200);
    cr_assert_eq(c->ipv6_prefix_len, 56);
    config_unref(&c);

    expect_error("backends: [{name: a, host: h, port: 1}]\nlimits: {verify_threads: 257}\n",
                 "bad.yaml:2: limits.verify_threads: expected an integer 0-256");
    expect_error("backends: [{name: a, host: h, port: 1}]\nlimits: {verify_queue: 0}\n",
                 "bad.yaml:2: limits.verify_queue: expected an integer 1-1000000");
    expect_error("backends: [{name: a, host: h, port: 1}]\nlimits: {ipv6_prefix_len: 129}\n",
                 "bad.yaml:2: limits.ipv6_prefix_len: expected an integer 1-128");
    expect_error("backends: [{name: a, host: h, port: 1}]\nlimits: {ipv6_prefix_len: 0}\n",
                 "bad.yaml:2: limits.ipv6_prefix_len: expected an integer 1-128");
    expect_error("backends: [{name: a, host: h, port: 1}]\nlimits: {max_connections: -1}\n",
                 "bad.yaml:2: limits.max_connections: expected an integer 0-4294967295");
}

Test(config, session_limits)
{
    char err[512] = "";
    struct config *c = load(err, sizeof(err), "min.yaml", "backends: [{name: x, host: h, port: 1}]\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->max_sessions_per_user, 0);
    cr_assert_eq(c->max_sessions_per_user_ip, 0);
    cr_assert_eq(c->session_lease_ms, 60000);
    cr_assert_eq(c->session_limits_refuse, 0, "a Redis outage does not block logins");
    config_unref(&c);

    c = load(err, sizeof(err), "lim.yaml",
             "backends: [{name: x, host: h, port: 1}]\n"
             "redis: {host: 127.0.0.1}\n"
             "limits:\n"
             "  max_sessions_per_user: 20\n"
             "  max_sessions_per_user_ip: 5\n"
             "  session_lease_ms: 30000\n"
             "  on_redis_error: refuse\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->max_sessions_per_user, 20);
    cr_assert_eq(c->max_sessions_per_user_ip, 5);
    cr_assert_eq(c->session_lease_ms, 30000);
    cr_assert_eq(c->session_limits_refuse, 1);
    config_unref(&c);

    expect_error("backends: [{name: a, host: h, port: 1}]\nlimits: {max_sessions_per_user: 3}\n",
                 "bad.yaml:1: limits.max_sessions_per_user: sessions are counted in redis: "
                 "needs a redis section and session_lease_ms above 0");
    expect_error("backends: [{name: a, host: h, port: 1}]\nredis: {host: h}\n"
                 "limits: {max_sessions_per_user_ip: 3, session_lease_ms: 0}\n",
                 "bad.yaml:1: limits.max_sessions_per_user_ip: sessions are counted in redis: "
                 "needs a redis section and session_lease_ms above 0");
    expect_error("backends: [{name: a, host: h, port: 1}]\nlimits: {session_lease_ms: 299}\n",
                 "bad.yaml:1: limits.session_lease_ms: expected 0 (off) or at least 300");
    expect_error("backends: [{name: a, host: h, port: 1}]\nlimits: {on_redis_error: maybe}\n",
                 "bad.yaml:2: limits.on_redis_error: expected one of allow | refuse");
}

Test(config, proxy_protocol)
{
    char err[512] = "";
    char text[2048];
    snprintf(text, sizeof(text),
             "listeners:\n"
             "  - {address: 127.0.0.1, port: 993, tls: implicit, proxy_protocol: true,\n"
             "     proxy_trusted: [10.0.0.0/8, '2001:db8::/32', 192.0.2.1]}\n"
             "  - {address: 127.0.0.1, port: 143, tls: starttls, proxy_protocol: true,\n"
             "     proxy_trusted: [127.0.0.0/8], proxy_tls_terminated: true,\n"
             "     proxy_header_timeout_ms: 900}\n"
             "  - {address: 127.0.0.1, port: 144, tls: starttls}\n"
             "tls: {cert: %s, key: %s}\n"
             "limits: {proxy_header_timeout_ms: 2500}\n"
             "backends:\n"
             "  - {name: a, host: 10.0.0.1, port: 143, proxy_protocol: v2, pool_size: 4}\n"
             "  - {name: b, host: 10.0.0.2, port: 143, proxy_protocol: none, pool_size: 4}\n"
             "routes: {default: a}\n",
             DATA("cert.pem"), DATA("key.pem"));
    struct config *c = load(err, sizeof(err), "proxy.yaml", text);
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->listeners[0].proxy_protocol, 1);
    cr_assert_eq(c->listeners[0].num_proxy_trusted, 3);
    cr_assert(proxy_proto_trusted(c->listeners[0].proxy_trusted, 3, "10.9.9.9"));
    cr_assert(proxy_proto_trusted(c->listeners[0].proxy_trusted, 3, "2001:db8:5::1"));
    cr_assert_not(proxy_proto_trusted(c->listeners[0].proxy_trusted, 3, "127.0.0.1"));
    cr_assert_eq(c->listeners[0].proxy_header_timeout_ms, 2500, "the global timeout");
    cr_assert_eq(c->listeners[0].proxy_tls_terminated, 0);
    cr_assert_eq(c->listeners[1].proxy_header_timeout_ms, 900, "its own timeout");
    cr_assert_eq(c->listeners[1].proxy_tls_terminated, 1);
    cr_assert_eq(c->listeners[2].proxy_protocol, 0);
    cr_assert_eq(c->backends[0].proxy_protocol, 2);
    cr_assert_eq(c->backends[0].pool_size, 0, "no warm pool with PROXY out");
    cr_assert_eq(c->backends[1].proxy_protocol, 0);
    cr_assert_eq(c->backends[1].pool_size, 4);
    config_unref(&c);
}

Test(config, proxy_protocol_errors)
{
    char head[512];
    char text[2048];
    snprintf(head, sizeof(head), "tls: {cert: %s, key: %s}\nbackends: [{name: a, host: h, port: 1}]\n",
             DATA("cert.pem"), DATA("key.pem"));
    static const struct {
        const char *listener;
        const char *want;
    } cases[] = {
        {"{address: 127.0.0.1, port: 1, tls: starttls, proxy_protocol: true}",
         "listeners[0]: proxy_protocol needs proxy_trusted (the balancers' networks)"},
        {"{address: 127.0.0.1, port: 1, tls: starttls, proxy_trusted: [127.0.0.1]}",
         "listeners[0]: proxy_trusted, proxy_tls_terminated and proxy_header_timeout_ms need "
         "proxy_protocol: true"},
        {"{address: 127.0.0.1, port: 1, tls: implicit, proxy_protocol: true, "
         "proxy_trusted: [127.0.0.1], proxy_tls_terminated: true}",
         "listeners[0]: proxy_tls_terminated is for a cleartext (starttls) listener"},
        {"{address: 127.0.0.1, port: 1, tls: starttls, proxy_protocol: true, "
         "proxy_trusted: [127.0.0.0/33]}",
         "listeners[0].proxy_trusted: 127.0.0.0/33 is not a network (address/prefix length)"},
        {"{address: 127.0.0.1, port: 1, tls: starttls, proxy_protocol: true, proxy_trusted: []}",
         "listeners[0].proxy_trusted: expected 1-256 networks"},
        {"{address: 127.0.0.1, port: 1, tls: starttls, proxy_protocol: true, "
         "proxy_trusted: [127.0.0.1], proxy_header_timeout_ms: 10}",
         "listeners[0].proxy_header_timeout_ms: expected an integer 100-600000"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[512] = "";
        snprintf(text, sizeof(text), "%slisteners:\n  - %s\n", head, cases[i].listener);
        struct config *c = load(err, sizeof(err), "bad.yaml", text);
        cr_assert_null(c, "loaded: %s", text);
        cr_assert_not_null(strstr(err, cases[i].want), "%s\nwanted: %s", err, cases[i].want);
    }
    snprintf(text, sizeof(text),
             "backends: [{name: a, host: h, port: 1, proxy_protocol: v1}]\n");
    char err[512] = "";
    cr_assert_null(load(err, sizeof(err), "bad.yaml", text));
    cr_assert_not_null(strstr(err, "proxy_protocol: expected one of none | v2"), "%s", err);
}

Test(config, sni_certificates_and_backend_template)
{
    char err[512] = "";
    char text[2048];
    snprintf(text, sizeof(text),
             "backends: [{name: a, host: h, port: 1}]\n"
             "listeners: [{address: 127.0.0.1, port: 993, tls: implicit}]\n"
             "tls:\n"
             "  expiry_warning_days: 30\n"
             "  certificates:\n"
             "    - {names: [Mail.Example.com, \"*.example.org\"], cert: %s, key: %s}\n"
             "    - {names: [mail.example.com], cert: %s, key: %s}\n"
             "backend_template: {tls: implicit, verify: false, auth: passthrough}\n",
             DATA("cert.pem"), DATA("key.pem"), DATA("rsa-cert.pem"), DATA("rsa-key.pem"));
    struct config *c = load(err, sizeof(err), "sni.yaml", text);
    cr_assert_not_null(c, "%s", err);
    cr_assert_null(c->tls_cert_file, "the first certificate is the default");
    cr_assert_eq(c->num_certificates, 2);
    cr_assert_eq(c->certificates[0].num_names, 2);
    cr_assert_str_eq(c->certificates[0].names[0], "mail.example.com", "lowercased");
    cr_assert_str_eq(c->certificates[0].names[1], "*.example.org");
    cr_assert_eq(c->tls_expiry_warning_days, 30);
    cr_assert_not_null(c->backend_template);
    cr_assert_eq(c->backend_template->tls, CONFIG_BACKEND_TLS_IMPLICIT);
    cr_assert_eq(c->backend_template->tls_verify, 0);
    config_unref(&c);

    c = load(err, sizeof(err), "plain.yaml", "backends: [{name: a, host: h, port: 1}]\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->tls_expiry_warning_days, 14);
    cr_assert_null(c->backend_template);
    config_unref(&c);

    snprintf(text, sizeof(text),
             "backends: [{name: a, host: h, port: 1}]\n"
             "tls:\n  certificates:\n    - {names: [\"a.*.example.com\"], cert: %s, key: %s}\n",
             DATA("cert.pem"), DATA("key.pem"));
    expect_error(text, "bad.yaml:4: tls.certificates[0].names: a.*.example.com is not a DNS name "
                       "or a one-label wildcard (*.example.com)");
    snprintf(text, sizeof(text),
             "backends: [{name: a, host: h, port: 1}]\n"
             "tls:\n  certificates:\n    - {cert: %s, key: %s}\n",
             DATA("cert.pem"), DATA("key.pem"));
    expect_error(text, "bad.yaml:4: tls.certificates[0]: names, cert and key are required");
    expect_error("backends: [{name: a, host: h, port: 1}]\n"
                 "backend_template: {tls: implicit, hosts: [\"h:1\"]}\n",
                 "bad.yaml:2: backend_template.hosts: not in a template (the name and hosts "
                 "come from Redis)");
    expect_error("backends: [{name: a, host: h, port: 1}]\n"
                 "backend_template: {auth: master}\n",
                 "bad.yaml:2: backend_template: auth master needs master_user and "
                 "master_password (or master_password_file)");
}

Test(config, audit_preauth_records)
{
    char err[512] = "";
    static const char dflt[] = "backends: [{name: a, host: h, port: 1}]\n";
    struct config *c = config_parse(err, sizeof(err), "buf.yaml", dflt, sizeof(dflt) - 1);
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->audit.preauth_records, 16);
    config_unref(&c);
    static const char set[] = "backends: [{name: a, host: h, port: 1}]\n"
                              "audit: {stdout: true, preauth_records: 0}\n";
    c = config_parse(err, sizeof(err), "buf.yaml", set, sizeof(set) - 1);
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->audit.preauth_records, 0);
    config_unref(&c);
    static const char big[] = "backends: [{name: a, host: h, port: 1}]\n"
                              "audit: {stdout: true, preauth_records: 100001}\n";
    cr_assert_null(config_parse(err, sizeof(err), "buf.yaml", big, sizeof(big) - 1));
}

Test(config, session_cache_park_policy)
{
    char err[512] = "";
    struct config *c = load(err, sizeof(err), "park.yaml",
                            "backends: [{name: a, host: h, port: 1}]\n"
                            "session_cache: {enabled: true, park: always, seen_slots: 1024,\n"
                            "  park_clients: [\"Example Webmail\", roundcube]}\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->session_cache.park, CONFIG_PARK_ALWAYS);
    cr_assert_eq(c->session_cache.seen_slots, 1024);
    cr_assert_eq(c->session_cache.num_park_clients, 2);
    cr_assert_str_eq(c->session_cache.park_clients[0], "Example Webmail");
    cr_assert_str_eq(c->session_cache.park_clients[1], "roundcube");
    config_unref(&c);

    c = load(err, sizeof(err), "park2.yaml", "backends: [{name: x, host: h, port: 1}]\n");
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->session_cache.park, CONFIG_PARK_RETURNING, "parking waits for a return");
    cr_assert_eq(c->session_cache.seen_slots, 16384);
    cr_assert_eq(c->session_cache.num_park_clients, 0);
    config_unref(&c);

    expect_error("backends: [{name: a, host: h, port: 1}]\nsession_cache: {park: often}\n",
                 "bad.yaml:2: session_cache.park: expected one of returning | always");
    expect_error("backends: [{name: a, host: h, port: 1}]\nsession_cache: {park_clients: [\"\"]}\n",
                 "bad.yaml:2: session_cache.park_clients: must not be empty");
    expect_error("backends: [{name: a, host: h, port: 1}]\nsession_cache: {seen_slots: 1}\n",
                 "bad.yaml:2: session_cache.seen_slots: expected an integer 16-16777216");
}
