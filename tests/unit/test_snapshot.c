/* Snapshots: the TLS contexts built from one configuration, per backend and
 * for the backend template, and their reference counts. */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/config.h"
#include "proxy/snapshot.h"

#define DATA(f) TEST_DATA_DIR "/" f

Test(snapshot, contexts_per_backend_and_template)
{
    char err[512], text[1024];
    snprintf(text, sizeof(text),
             "backends:\n"
             "  - {name: plain, host: h, port: 1}\n"
             "  - {name: secure, host: h, port: 2, tls: implicit, ca_file: %s}\n"
             "backend_template: {tls: starttls, verify: false}\n"
             "routes: {default: plain}\n"
             "listeners: [{address: 127.0.0.1, port: 993, tls: implicit}]\n"
             "tls: {cert: %s, key: %s}\n",
             DATA("cert.pem"), DATA("cert.pem"), DATA("key.pem"));
    struct config *cfg = config_parse(err, sizeof(err), "s.yaml", text, strlen(text));
    cr_assert_not_null(cfg, "%s", err);
    struct snapshot *s = snapshot_new(err, sizeof(err), cfg, 7);
    cr_assert_not_null(s, "%s", err);
    config_unref(&cfg); /* the snapshot holds its own */
    cr_assert_eq(s->generation, 7);
    cr_assert_not_null(s->server_ctx);
    cr_assert_null(snapshot_backend_ctx(s, &s->cfg->backends[0]));
    cr_assert_not_null(snapshot_backend_ctx(s, &s->cfg->backends[1]));
    cr_assert_eq(snapshot_backend_ctx(s, s->cfg->backend_template), s->template_ctx);
    cr_assert_not_null(s->template_ctx);
    struct snapshot *again = snapshot_ref(s);
    cr_assert_eq(again, s);
    snapshot_unref(&again);
    cr_assert_null(again);
    cr_assert_not_null(s->cfg, "one reference left");
    snapshot_unref(&s);
    cr_assert_null(s);
    snapshot_unref(&s); /* NULL accepted */
}

Test(snapshot, a_missing_ca_file_is_refused_whole)
{
    char err[512], text[512];
    snprintf(text, sizeof(text),
             "backends: [{name: secure, host: h, port: 2, tls: implicit, ca_file: %s}]\n",
             DATA("README"));
    struct config *cfg = config_parse(err, sizeof(err), "s.yaml", text, strlen(text));
    cr_assert_not_null(cfg, "%s", err);
    struct snapshot *s = snapshot_new(err, sizeof(err), cfg, 2);
    cr_assert_null(s);
    cr_assert_not_null(strstr(err, "backend secure"), "%s", err);
    config_unref(&cfg);
}
