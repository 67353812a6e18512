/* Reload checks: what only a restart can change, a refused file counted
 * with its reason, an accepted one counted with its generation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "common/config.h"
#include "proxy/reload.h"
#include "proxy/snapshot.h"

static struct config *parse(const char *text)
{
    char err[512];
    struct config *c = config_parse(err, sizeof(err), "r.yaml", text, strlen(text));
    cr_assert_not_null(c, "%s", err);
    return c;
}

#define BASE "backends: [{name: a, host: h, port: 1}, {name: b, host: i, port: 2}]\n"

Test(reload, restart_only_settings)
{
    struct config *o = parse(BASE "workers: 2\nredis: {host: r, port: 6379}\n");
    struct config *same = parse(BASE "workers: 2\nredis: {host: r, port: 6379}\n"
                                "routes: {default: b}\nlimits: {max_line_len: 2048}\n");
    struct config *w = parse(BASE "workers: 3\nredis: {host: r, port: 6379}\n");
    struct config *r = parse(BASE "workers: 2\nredis: {host: r2, port: 6379}\n");
    struct config *a = parse(BASE "workers: 2\nredis: {host: r, port: 6379}\naudit: {stdout: true}\n");
    struct config *v = parse(BASE "workers: 2\nredis: {host: r, port: 6379}\n"
                             "limits: {verify_queue: 9}\n");
    cr_assert_null(reload_restart_only_change(o, same), "routes and limits change live");
    cr_assert_str_eq(reload_restart_only_change(o, w), "workers");
    cr_assert_str_eq(reload_restart_only_change(o, r), "redis");
    cr_assert_not_null(strstr(reload_restart_only_change(o, a), "audit"));
    cr_assert_str_eq(reload_restart_only_change(o, v), "limits.verify_*");
    config_unref(&o);
    config_unref(&same);
    config_unref(&w);
    config_unref(&r);
    config_unref(&a);
    config_unref(&v);
}

Test(reload, refused_and_accepted_are_counted)
{
    char err[RELOAD_MAX_ERROR_LEN], path[] = "/tmp/imapmux-reload-XXXXXX";
    struct reload_stats st;
    reload_started();
    struct config *c = parse(BASE);
    struct snapshot *cur = snapshot_new(err, sizeof(err), c, 1);
    cr_assert_not_null(cur, "%s", err);
    config_unref(&c);

    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char bad[] = BASE "routes: {default: nowhere}\n";
    cr_assert_eq(write(fd, bad, sizeof(bad) - 1), (ssize_t)(sizeof(bad) - 1));
    cr_assert_null(reload_prepare(err, sizeof(err), cur, path));
    cr_assert_not_null(strstr(err, "unknown backend nowhere"), "%s", err);
    reload_stats(&st);
    cr_assert_eq(st.failed, 1);
    cr_assert_eq(st.ok, 0);
    cr_assert_eq(st.last_ok, 0);
    cr_assert_eq(st.generation, 1);
    cr_assert_not_null(strstr(st.last_error, "unknown backend nowhere"));
    cr_assert_gt(st.last_attempt_s, 0);

    cr_assert_eq(ftruncate(fd, 0), 0);
    const char good[] = BASE "routes: {default: b}\n";
    cr_assert_eq(pwrite(fd, good, sizeof(good) - 1, 0), (ssize_t)(sizeof(good) - 1));
    close(fd);
    struct snapshot *next = reload_prepare(err, sizeof(err), cur, path);
    cr_assert_not_null(next, "%s", err);
    cr_assert_eq(next->generation, 2);
    cr_assert_str_eq(next->cfg->default_backend->name, "b");
    reload_accepted(next);
    reload_stats(&st);
    cr_assert_eq(st.ok, 1);
    cr_assert_eq(st.failed, 1);
    cr_assert_eq(st.last_ok, 1);
    cr_assert_eq(st.generation, 2);
    cr_assert_str_eq(st.last_error, "");
    unlink(path);
    snapshot_unref(&next);
    snapshot_unref(&cur);
}
