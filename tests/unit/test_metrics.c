/* metrics: the text format (escaping, histograms), bucket choice, per-thread
 * slots summed at render time, bounded label sets. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "proxy/metrics.h"

static char *render(void)
{
    struct metrics_buf b = {0};
    metrics_render(&b, NULL);
    cr_assert(!b.failed);
    metrics_buf_printf(&b, "%s", ""); /* NUL-terminated */
    return b.p;
}

/* line_value returns the value of the sample line that starts with prefix
 * (name and labels, then a space), or NAN when there is none. */
static double line_value(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *l = text; l != NULL && *l != '\0';) {
        if (strncmp(l, prefix, n) == 0 && l[n] == ' ') {
            return strtod(l + n + 1, NULL);
        }
        l = strchr(l, '\n');
        l = l != NULL ? l + 1 : NULL;
    }
    return NAN;
}

Test(metrics, sample_escapes_label_values)
{
    struct metrics_buf b = {0};
    const char *labels[] = {"a", "x\"y\\z\nw", "b", "", NULL};
    metrics_sample(&b, "imapmux_test", labels, 3);
    metrics_sample(&b, "imapmux_plain", NULL, 0.25);
    metrics_sample(&b, "imapmux_big", NULL, 12345678901.0);
    metrics_buf_printf(&b, "%s", "");
    cr_assert_str_eq(b.p, "imapmux_test{a=\"x\\\"y\\\\z\\nw\",b=\"\"} 3\n"
                          "imapmux_plain 0.25\n"
                          "imapmux_big 12345678901\n");
    metrics_buf_free(&b);
}

Test(metrics, family_lines)
{
    struct metrics_buf b = {0};
    metrics_family(&b, "imapmux_x_total", "counter", "Things.");
    metrics_buf_printf(&b, "%s", "");
    cr_assert_str_eq(b.p, "# HELP imapmux_x_total Things.\n# TYPE imapmux_x_total counter\n");
    metrics_buf_free(&b);
}

Test(metrics, buffer_grows_past_its_first_size)
{
    struct metrics_buf b = {0};
    for (int i = 0; i < 5000; i++) {
        metrics_buf_printf(&b, "line %d of a long exposition\n", i);
    }
    metrics_buf_printf(&b, "%s", "");
    cr_assert(!b.failed);
    cr_assert(strstr(b.p, "line 4999 of a long exposition\n") != NULL);
    cr_assert(strncmp(b.p, "line 0 of", 9) == 0);
    metrics_buf_free(&b);
}

Test(metrics, bucket_bounds_are_inclusive)
{
    cr_assert_eq(metrics_bucket_of(0), 0);
    cr_assert_eq(metrics_bucket_of(500000), 0);        /* 0.5 ms: le="0.0005" */
    cr_assert_eq(metrics_bucket_of(500001), 1);
    cr_assert_eq(metrics_bucket_of(1000000000), 10);   /* 1 s: le="1" */
    cr_assert_eq(metrics_bucket_of(30000000000ull), METRICS_NUM_BUCKETS - 1);
    cr_assert_eq(metrics_bucket_of(30000000001ull), METRICS_NUM_BUCKETS); /* +Inf only */
    cr_assert_eq(metrics_bucket_of(UINT64_MAX), METRICS_NUM_BUCKETS);
}

Test(metrics, histogram_is_cumulative_with_inf_sum_and_count)
{
    struct metrics_buf b = {0};
    uint64_t counts[METRICS_NUM_BUCKETS + 1] = {0};
    counts[0] = 2;
    counts[10] = 1;
    counts[METRICS_NUM_BUCKETS] = 4;
    const char *labels[] = {"step", "lookup", NULL};
    metrics_histogram(&b, "imapmux_h_seconds", labels, counts, 1500000000ull);
    metrics_buf_printf(&b, "%s", "");
    cr_assert_eq(line_value(b.p, "imapmux_h_seconds_bucket{step=\"lookup\",le=\"0.0005\"}"), 2);
    cr_assert_eq(line_value(b.p, "imapmux_h_seconds_bucket{step=\"lookup\",le=\"0.5\"}"), 2);
    cr_assert_eq(line_value(b.p, "imapmux_h_seconds_bucket{step=\"lookup\",le=\"1\"}"), 3);
    cr_assert_eq(line_value(b.p, "imapmux_h_seconds_bucket{step=\"lookup\",le=\"30\"}"), 3);
    cr_assert_eq(line_value(b.p, "imapmux_h_seconds_bucket{step=\"lookup\",le=\"+Inf\"}"), 7);
    cr_assert_eq(line_value(b.p, "imapmux_h_seconds_sum{step=\"lookup\"}"), 1.5);
    cr_assert_eq(line_value(b.p, "imapmux_h_seconds_count{step=\"lookup\"}"), 7);
    /* no labels: le alone */
    metrics_buf_free(&b);
    metrics_histogram(&b, "imapmux_n_seconds", NULL, counts, 0);
    metrics_buf_printf(&b, "%s", "");
    cr_assert_eq(line_value(b.p, "imapmux_n_seconds_bucket{le=\"+Inf\"}"), 7);
    cr_assert_eq(line_value(b.p, "imapmux_n_seconds_count"), 7);
    metrics_buf_free(&b);
}

Test(metrics, tls_reasons)
{
    cr_assert_eq(metrics_tls_reason(NULL), METRICS_TLS_PROTOCOL);
    cr_assert_eq(metrics_tls_reason("error:100000d2:SSL routines:OPENSSL_internal:HTTP_REQUEST"),
                 METRICS_TLS_NOT_TLS);
    cr_assert_eq(metrics_tls_reason("...:WRONG_VERSION_NUMBER"), METRICS_TLS_NOT_TLS);
    cr_assert_eq(metrics_tls_reason("...:UNSUPPORTED_PROTOCOL"), METRICS_TLS_VERSION);
    cr_assert_eq(metrics_tls_reason("...:NO_SHARED_CIPHER"), METRICS_TLS_CIPHER);
    cr_assert_eq(metrics_tls_reason("...:TLSV1_ALERT_UNKNOWN_CA"), METRICS_TLS_ALERT);
    cr_assert_eq(metrics_tls_reason("...:SSLV3_ALERT_BAD_CERTIFICATE"), METRICS_TLS_ALERT);
    cr_assert_eq(metrics_tls_reason("...:DECODE_ERROR"), METRICS_TLS_PROTOCOL);
}

struct thread_job {
    unsigned slot;
    int logins;
};

static void count_logins(void *arg)
{
    struct thread_job *j = arg;
    cr_assert_eq(metrics_thread_attach(j->slot), 0);
    for (int i = 0; i < j->logins; i++) {
        metrics_login_done(METRICS_LOGIN_OK, METRICS_MECH_PLAIN, 2000000); /* 2 ms */
    }
    metrics_relay_bytes(1, 100);
    metrics_relay_command("FETCH", 1);
    metrics_relay_command("XYZZY", 0);
    struct metrics_worker_stats st = {0};
    st.pool_hits = j->slot + 1;
    st.sessions = 2;
    metrics_publish(&st);
}

Test(metrics, slots_of_threads_are_summed)
{
    metrics_init();
    uv_thread_t t[3];
    struct thread_job jobs[3] = {{0, 5}, {1, 7}, {2, 0}};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(uv_thread_create(&t[i], count_logins, &jobs[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        uv_thread_join(&t[i]);
    }
    /* this thread has no slot: its hooks count nothing */
    metrics_login_done(METRICS_LOGIN_OK, METRICS_MECH_PLAIN, 1);

    char *text = render();
    cr_assert_eq(line_value(text, "imapmux_logins_total{result=\"ok\",mechanism=\"plain\"}"), 12);
    cr_assert_eq(line_value(text, "imapmux_logins_total{result=\"ok\",mechanism=\"login\"}"), 0);
    cr_assert_eq(line_value(text, "imapmux_login_duration_seconds_bucket{result=\"ok\","
                                  "le=\"0.001\"}"), 0);
    cr_assert_eq(line_value(text, "imapmux_login_duration_seconds_bucket{result=\"ok\","
                                  "le=\"0.0025\"}"), 12);
    cr_assert_float_eq(line_value(text, "imapmux_login_duration_seconds_sum{result=\"ok\"}"),
                       0.024, 1e-9);
    cr_assert_eq(line_value(text, "imapmux_relay_bytes_total{direction=\"client_to_backend\"}"),
                 300);
    cr_assert_eq(line_value(text, "imapmux_relay_commands_total{command=\"UID FETCH\"}"), 3);
    cr_assert_eq(line_value(text, "imapmux_relay_commands_total{command=\"FETCH\"}"), 0);
    cr_assert_eq(line_value(text, "imapmux_relay_commands_total{command=\"other\"}"), 3);
    cr_assert(strstr(text, "XYZZY") == NULL, "an unknown command name never becomes a label");
    cr_assert_eq(line_value(text, "imapmux_warm_pool_hits_total"), 6);
    cr_assert_eq(line_value(text, "imapmux_sessions"), 6);
    free(text);
    metrics_cleanup();
}

static void count_backends(void *arg)
{
    (void)arg;
    cr_assert_eq(metrics_thread_attach(5), 0);
    int a = metrics_backend_host("main", "10.0.0.1", 143);
    int b = metrics_backend_host("main", "10.0.0.2", 143);
    cr_assert_neq(a, b);
    cr_assert_eq(metrics_backend_host("main", "10.0.0.1", 143), a);
    metrics_backend_connected(a, 3000000);
    metrics_backend_failed(b, METRICS_BE_CONNECT);
    metrics_backend_failed(a, METRICS_BE_REFUSED); /* a refusal leaves the host up */
    /* past the table, every host shares "other" */
    int last = -1;
    for (int i = 0; i < METRICS_MAX_HOSTS + 10; i++) {
        char host[32];
        snprintf(host, sizeof(host), "h%d.example", i);
        last = metrics_backend_host("many", host, 993);
    }
    cr_assert_eq(last, METRICS_MAX_HOSTS);
    metrics_backend_failed(last, METRICS_BE_TLS);
}

Test(metrics, backend_hosts_are_bounded)
{
    metrics_init();
    uv_thread_t t;
    cr_assert_eq(uv_thread_create(&t, count_backends, NULL), 0);
    uv_thread_join(&t);
    char *text = render();
    cr_assert_eq(line_value(text, "imapmux_backend_up{backend=\"main\",host=\"10.0.0.1:143\"}"), 1);
    cr_assert_eq(line_value(text, "imapmux_backend_up{backend=\"main\",host=\"10.0.0.2:143\"}"), 0);
    cr_assert_eq(line_value(text, "imapmux_backend_connect_duration_seconds_count{backend=\"main\","
                                  "host=\"10.0.0.1:143\"}"), 1);
    cr_assert_eq(line_value(text, "imapmux_backend_failures_total{backend=\"main\","
                                  "host=\"10.0.0.2:143\",phase=\"connect\"}"), 1);
    cr_assert_eq(line_value(text, "imapmux_backend_failures_total{backend=\"main\","
                                  "host=\"10.0.0.1:143\",phase=\"refused\"}"), 1);
    cr_assert_eq(line_value(text, "imapmux_backend_failures_total{backend=\"other\","
                                  "host=\"other\",phase=\"tls\"}"), 1);
    cr_assert(strstr(text, "h70.example") == NULL);
    free(text);
    metrics_cleanup();
}

Test(metrics, reload_and_certificates)
{
    metrics_init();
    char *text = render();
    cr_assert(strstr(text, "imapmux_config_last_reload_success") == NULL);
    cr_assert_eq(line_value(text, "imapmux_config_reloads_total{result=\"success\"}"), 0);
    free(text);

    metrics_note_reload(true, 0.25);
    metrics_note_reload(false, 0.5);
    metrics_set_certificate("default", 1900000000);
    metrics_set_certificate("mail.example", 1800000000);
    metrics_set_certificate("default", 1950000000);
    text = render();
    cr_assert_eq(line_value(text, "imapmux_config_reloads_total{result=\"success\"}"), 1);
    cr_assert_eq(line_value(text, "imapmux_config_reloads_total{result=\"failure\"}"), 1);
    cr_assert_eq(line_value(text, "imapmux_config_last_reload_success"), 0);
    cr_assert_float_eq(line_value(text, "imapmux_config_last_reload_duration_seconds"), 0.5, 1e-6);
    cr_assert_eq(line_value(text, "imapmux_certificate_expiry_timestamp_seconds{name=\"default\"}"),
                 1950000000);
    cr_assert_eq(line_value(text, "imapmux_certificate_expiry_timestamp_seconds{name=\"mail."
                                  "example\"}"), 1800000000);
    free(text);
    /* a reload's certificates replace the old ones */
    metrics_clear_certificates();
    metrics_set_certificate("new.example", 1700000000);
    text = render();
    cr_assert(strstr(text, "name=\"default\"") == NULL);
    cr_assert_eq(line_value(text, "imapmux_certificate_expiry_timestamp_seconds{name=\"new."
                                  "example\"}"), 1700000000);
    free(text);
    metrics_cleanup();
}

Test(metrics, refusal_and_step_labels_appear_when_used)
{
    metrics_init();
    cr_assert_eq(metrics_thread_attach(0), 0);
    metrics_login_refused(4, "wrong_password");
    metrics_login_refused(4, "wrong_password");
    metrics_login_refused(METRICS_MAX_NAMED, "out_of_range"); /* ignored */
    metrics_login_step(0, "lookup", 1000);
    char *text = render();
    cr_assert_eq(line_value(text, "imapmux_login_refusals_total{reason=\"wrong_password\"}"), 2);
    cr_assert(strstr(text, "out_of_range") == NULL);
    cr_assert_eq(line_value(text, "imapmux_login_step_duration_seconds_count{step=\"lookup\"}"), 1);
    free(text);
    metrics_cleanup();
    /* after cleanup the thread's slot is gone: hooks do nothing */
    metrics_login_refused(4, "wrong_password");
}
