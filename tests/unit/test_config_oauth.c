/* Tests of the configuration's oauth section (common/config). */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/config.h"
#include "proxy/reload.h"

#define BACKENDS "backends:\n  - {name: b, host: 127.0.0.1, port: 1}\n"

static struct config *parse(const char *text, char *err, size_t err_len)
{
    return config_parse(err, err_len, "t", text, strlen(text));
}

static void expect_error(const char *oauth, const char *what)
{
    char text[2048], err[512];
    snprintf(text, sizeof(text), BACKENDS "oauth:\n%s", oauth);
    struct config *c = parse(text, err, sizeof(err));
    cr_assert_null(c, "accepted: %s", oauth);
    cr_assert(strstr(err, what) != NULL, "error \"%s\" lacks \"%s\"", err, what);
}

Test(config_oauth, defaults_and_find)
{
    char err[512];
    struct config *c = parse(BACKENDS "oauth:\n  domains:\n"
                             "    - {domain: Example.COM, jwks_url: \"https://idp/jwks\", issuer: i}\n"
                             "    - {domain: \"*\", introspection_url: \"http://idp/i\","
                             " client_id: a, client_secret: b, identity_claim: sub}\n",
                             err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    const struct config_oauth *o = &c->oauth;
    cr_assert(o->enabled && o->oauthbearer && o->xoauth2);
    cr_assert_eq(o->num_domains, 2);
    cr_assert_str_eq(o->domains[0].domain, "example.com");
    cr_assert_str_eq(o->domains[0].identity_claim, "email");
    cr_assert_eq(o->domains[0].jwks_refresh_s, 300);
    cr_assert_eq(o->domains[0].clock_skew_s, 60);
    cr_assert_eq(o->domains[1].cache_s, 300);
    cr_assert_eq(o->domains[1].negative_cache_s, 10);
    cr_assert_eq(config_oauth_find(o, "a@EXAMPLE.com"), &o->domains[0]);
    cr_assert_eq(config_oauth_find(o, "a@other.test"), &o->domains[1]);
    cr_assert_eq(config_oauth_find(o, ""), &o->domains[1]);
    config_unref(&c);
}

Test(config_oauth, mechanisms)
{
    char err[512];
    struct config *c = parse(BACKENDS "oauth:\n  mechanisms: [XOAUTH2]\n  domains:\n"
                             "    - {domain: x.test, jwks_file: /dev/null, issuer: i}\n",
                             err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    cr_assert(!c->oauth.oauthbearer && c->oauth.xoauth2);
    config_unref(&c);
    c = parse(BACKENDS, err, sizeof(err));
    cr_assert_not_null(c);
    cr_assert(!c->oauth.enabled);
    cr_assert_null(config_oauth_find(&c->oauth, "a@b"));
    config_unref(&c);
}

Test(config_oauth, errors)
{
    expect_error("  domains:\n    - {domain: x, issuer: i}\n", "one mode");
    expect_error("  domains:\n    - {domain: x, issuer: i, jwks_file: f,"
                 " introspection_url: \"http://a/\", client_id: a, client_secret: b}\n", "one mode");
    expect_error("  domains:\n    - {domain: x, jwks_url: \"http://a/\"}\n", "needs an issuer");
    expect_error("  domains:\n    - {domain: x, introspection_url: \"http://a/\"}\n",
                 "client_id and client_secret");
    expect_error("  domains:\n    - {domain: x, issuer: i, jwks_url: \"file:///etc/passwd\"}\n",
                 "http://");
    expect_error("  domains:\n    - {jwks_url: \"http://a/\", issuer: i}\n", "needs a domain");
    expect_error("  domains:\n    - {domain: x, jwks_url: \"http://a/\", issuer: i}\n"
                 "    - {domain: X, jwks_url: \"http://a/\", issuer: i}\n", "given twice");
    expect_error("  mechanisms: [PLAIN]\n", "OAUTHBEARER or XOAUTH2");
    expect_error("  domains: []\n", "1-256 entries");
    expect_error("  domains:\n    - {domain: x, jwks_url: \"http://a/\", issuer: i, colour: red}\n",
                 "unknown key");
}

Test(config_oauth, a_changed_section_needs_a_restart)
{
    char err[512];
    const char *a = BACKENDS "oauth:\n  domains:\n"
                    "    - {domain: x.test, jwks_url: \"http://a/\", issuer: i}\n";
    const char *b = BACKENDS "oauth:\n  domains:\n"
                    "    - {domain: x.test, jwks_url: \"http://a/\", issuer: j}\n";
    struct config *ca = parse(a, err, sizeof(err)), *ca2 = parse(a, err, sizeof(err));
    struct config *cb = parse(b, err, sizeof(err)), *none = parse(BACKENDS, err, sizeof(err));
    cr_assert(ca != NULL && ca2 != NULL && cb != NULL && none != NULL);
    cr_assert_eq(config_oauth_differs(&ca->oauth, &ca2->oauth), 0);
    cr_assert_eq(config_oauth_differs(&ca->oauth, &cb->oauth), 1);
    cr_assert_eq(config_oauth_differs(&ca->oauth, &none->oauth), 1);
    cr_assert_null(reload_restart_only_change(ca, ca2));
    cr_assert_str_eq(reload_restart_only_change(ca, cb), "oauth");
    cr_assert_str_eq(reload_restart_only_change(none, ca), "oauth");
    config_unref(&ca);
    config_unref(&ca2);
    config_unref(&cb);
    config_unref(&none);
}
