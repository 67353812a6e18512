/* imapmux: the daemon.  Options, configuration, TLS contexts, workers,
 * signals and drain. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uv.h>

#include <openssl/ssl.h>

#include "common/config.h"
#include "common/log.h"
#include "proxy/admin.h"
#include "proxy/audit.h"
#include "proxy/conncap.h"
#include "proxy/oauth.h"
#include "proxy/metrics.h"
#include "proxy/takeover.h"
#include "proxy/reload.h"
#include "proxy/snapshot.h"
#include "proxy/tls.h"
#include "proxy/tls_certificates.h"
#include "proxy/verify.h"
#include "proxy/worker.h"

#define MAIN_MAX_WORKERS 256
#define MAIN_MAX_CERT_GAUGES 64 /* certificates with an expiry gauge */
#define MAIN_EXPIRY_CHECK_MS (24u * 3600u * 1000u) /* certificate expiry warnings: daily */

static void main_usage(FILE *f)
{
    fprintf(f,
            "usage: imapmux -c FILE          run with the configuration in FILE\n"
            "       imapmux -c FILE --takeover SOCKET  take the listening sockets of the\n"
            "                                  imapmux serving SOCKET (if any), which then\n"
            "                                  drains; then serve SOCKET for the next one\n"
            "       imapmux -c FILE --pid-file PIDFILE  also write the process id there\n"
            "       imapmux --check-config FILE  check FILE and exit (0: valid)\n"
            "       imapmux --version        print the version\n"
            "       imapmux --help           this text\n"
            "\n"
            "imapmux is an IMAP proxy: it terminates TLS for mail clients, answers\n"
            "pre-authentication commands itself, logs the user in to the backend IMAP\n"
            "server that holds the mailbox and relays the session.  SIGTERM or SIGINT\n"
            "drain: new connections stop, pre-auth clients get BYE, logged-in sessions\n"
            "get drain_timeout_ms to finish.  SIGHUP reloads the configuration (a\n"
            "file that does not pass every check is refused; the one in force stays).\n");
}

struct main_state {
    struct worker *workers[MAIN_MAX_WORKERS];
    unsigned num_workers;
    uv_signal_t sigterm, sigint, sighup, sigusr1;
    struct audit *audit;          /* NULL without audit sinks */
    struct conncap *conncap;      /* caps on client connections, shared by the workers */
    int stopping;
    struct admin *admin;          /* the admin HTTP listener, or NULL */
    struct takeover_server *takeover; /* with --takeover: serves the next process, or NULL */
    struct snapshot *snap;        /* the snapshot in force (our reference) */
    uv_timer_t expiry_timer;      /* daily certificate expiry warnings */
};

static void main_reload(struct main_state *m);

/* main_stop drains every worker and closes what keeps the loop running;
 * upgrade: the listening sockets went to a new process. */
static void main_stop(struct main_state *m, int upgrade)
{
    m->stopping = 1;
    admin_set_serving(m->admin, 0);
    if (upgrade) {
        /* the new process serves the admin address (both bind it with
           SO_REUSEPORT): scrapes and probes go to it alone from now on */
        admin_stop(m->admin);
        m->admin = NULL;
    }
    for (unsigned i = 0; i < m->num_workers; i++) {
        if (upgrade) {
            worker_drain_upgrade(m->workers[i]);
        } else {
            worker_drain(m->workers[i]);
        }
    }
    takeover_server_close(m->takeover);
    m->takeover = NULL;
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sighup, NULL);
    uv_close((uv_handle_t *)&m->sigusr1, NULL);
    uv_close((uv_handle_t *)&m->expiry_timer, NULL);
}

static size_t main_takeover_fds(void *ctx, int *out, size_t cap)
{
    struct main_state *m = ctx;
    size_t n = 0;
    for (unsigned i = 0; i < m->num_workers && n < cap; i++) {
        n += worker_listener_fds(m->workers[i], out + n, cap - n);
    }
    return n;
}

static void main_on_takeover_done(void *ctx)
{
    struct main_state *m = ctx;
    if (!m->stopping) {
        main_stop(m, 1);
    }
}

static void main_on_signal(uv_signal_t *h, int signum)
{
    struct main_state *m = h->data;
    if (signum == SIGUSR1) {
        if (m->audit != NULL) {
            log_msg(LOG_INFO, "SIGUSR1: reopening the audit file");
            audit_reopen(m->audit);
        }
        return;
    }
    if (signum == SIGHUP) {
        if (!m->stopping) {
            main_reload(m);
        }
        return;
    }
    if (m->stopping) {
        return;
    }
    m->stopping = 1;
    log_msg(LOG_INFO, "%s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    main_stop(m, 0);
}

/* main_publish_certificates makes snap's server certificates the ones the
 * expiry warnings and the expiry gauges report. */
static void main_publish_certificates(const struct snapshot *snap)
{
    struct tls_cert_expiry e[MAIN_MAX_CERT_GAUGES];
    tls_certificates_publish(snap->server_ctx, snap->cfg->tls_expiry_warning_days);
    size_t n = tls_certificates_expiry(e, MAIN_MAX_CERT_GAUGES);
    metrics_clear_certificates();
    for (size_t i = 0; i < n && i < MAIN_MAX_CERT_GAUGES; i++) {
        /* an ECDSA and an RSA certificate for the same names: one gauge, the
           one that expires first */
        int64_t first = e[i].not_after;
        int seen = 0;
        for (size_t j = 0; j < n; j++) {
            if (strcmp(e[j].names, e[i].names) == 0) {
                seen |= j < i;
                first = e[j].not_after < first ? e[j].not_after : first;
            }
        }
        if (!seen) {
            metrics_set_certificate(e[i].names, first);
        }
    }
}

/* main_reload reads the configuration file again: refused as a whole when
 * anything is wrong (reload_prepare logs and counts why), else handed to
 * every worker, which puts it in force for new sessions. */
static void main_reload(struct main_state *m)
{
    char err[RELOAD_MAX_ERROR_LEN];
    uint64_t t0 = uv_hrtime();
    log_msg(LOG_INFO, "SIGHUP: reloading %s", m->snap->cfg->path);
    struct snapshot *next = reload_prepare(err, sizeof(err), m->snap, m->snap->cfg->path);
    if (next == NULL) {
        metrics_note_reload(false, (double)(uv_hrtime() - t0) / 1e9);
        return;
    }
    log_init("imapmux", next->cfg->log_level, next->cfg->log_target == CONFIG_LOG_SYSLOG);
    for (unsigned i = 0; i < m->num_workers; i++) {
        worker_reload(m->workers[i], next);
    }
    snapshot_unref(&m->snap);
    m->snap = next;
    reload_accepted(next);
    main_publish_certificates(next);
    admin_set_config(m->admin, next->cfg);
    metrics_note_reload(true, (double)(uv_hrtime() - t0) / 1e9);
}

static void main_on_expiry_timer(uv_timer_t *t)
{
    struct main_state *m = t->data;
    tls_certificates_warn_expiring(m->snap->cfg->tls_expiry_warning_days);
}

/* main_raise_nofile: every connection is a descriptor (two once logged in),
 * so take the hard limit the system grants instead of the usual 1024.
 * Returns the limit in force afterwards, 0 for unlimited. */
static uint64_t main_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return 0;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            log_msg(LOG_DEBUG, "descriptor limit raised from %llu to %llu",
                    (unsigned long long)was, (unsigned long long)rl.rlim_max);
        } else {
            rl.rlim_cur = was;
        }
    }
    return rl.rlim_cur == RLIM_INFINITY ? 0 : (uint64_t)rl.rlim_cur;
}

/* main_conncap makes the connection caps for n workers within nofile
 * descriptors (0: unlimited).  Returns them, or NULL when out of memory. */
static struct conncap *main_conncap(const struct config *cfg, unsigned n, uint64_t nofile)
{
    struct conncap_limits lim;
    size_t room = conncap_descriptor_room(cfg, n, nofile);
    conncap_limits_from_config(&lim, cfg, room);
    if (room != 0) {
        log_msg(room < 100 ? LOG_WARNING : LOG_INFO,
                "descriptor limit %llu leaves room for %zu client connections",
                (unsigned long long)nofile, room);
    }
    return conncap_new(&lim);
}

static int main_run(struct config *cfg, const char *takeover_path)
{
    int takeover_conn = -1;
    struct main_state m;
    char err[512];
    uv_loop_t *loop = uv_default_loop();
    int rc = 1;
    unsigned n;
    uint64_t nofile;

    memset(&m, 0, sizeof(m));
    log_init("imapmux", cfg->log_level, cfg->log_target == CONFIG_LOG_SYSLOG);
    signal(SIGPIPE, SIG_IGN);
    nofile = main_raise_nofile();
    metrics_init();

    m.snap = snapshot_new(err, sizeof(err), cfg, 1);
    if (m.snap == NULL) {
        log_msg(LOG_ERR, "%s", err);
        goto out;
    }
    reload_started();
    main_publish_certificates(m.snap);
    n = cfg->num_workers != 0 ? cfg->num_workers : uv_available_parallelism();
    if (n == 0) {
        n = 1;
    }
    if (n > MAIN_MAX_WORKERS) {
        n = MAIN_MAX_WORKERS;
    }
    if (takeover_path != NULL) {
        int tr = takeover_fetch(err, sizeof(err), takeover_path, n, &takeover_conn);
        if (tr < 0) {
            log_msg(LOG_ERR, "takeover: %s", err);
            goto out;
        }
        log_msg(LOG_INFO, tr == 0 ? "takeover: %s: the running process hands its sockets over"
                                  : "takeover: nothing serves %s: binding the listeners",
                takeover_path);
    }
    if (cfg->redis.enabled) {
        /* only the routing table holds hashes to check here */
        const struct verify_limits vlim = {
            .num_threads = cfg->verify_threads,
            .max_jobs = cfg->verify_queue,
            .max_per_client = cfg->verify_per_client,
            .ipv6_prefix_len = cfg->ipv6_prefix_len,
        };
        int r = verify_init(&vlim);
        if (r != 0) {
            log_msg(LOG_ERR, "cannot start password verification: %s", uv_strerror(r));
            goto out;
        }
    }
    if (oauth_init(cfg) != 0) {
        log_msg(LOG_ERR, "cannot start OAuth token validation");
        goto out;
    }
    m.conncap = main_conncap(cfg, n, nofile);
    if (m.conncap == NULL) {
        log_msg(LOG_ERR, "out of memory");
        goto out;
    }
    if (cfg->audit.enabled) {
        m.audit = audit_new(cfg, err, sizeof(err));
        if (m.audit == NULL) {
            log_msg(LOG_ERR, "audit: %s", err);
            goto out;
        }
    }
    if (cfg->admin.enabled) {
        m.admin = admin_start(err, sizeof(err), cfg, m.conncap);
        if (m.admin == NULL) {
            log_msg(LOG_ERR, "admin: %s", err);
            goto out;
        }
    }
    for (unsigned i = 0; i < n; i++) {
        m.workers[i] = worker_start(err, sizeof(err), i, m.snap, m.audit, m.conncap);
        if (m.workers[i] == NULL) {
            log_msg(LOG_ERR, "worker %u: %s", i, err);
            for (unsigned j = 0; j < i; j++) {
                worker_drain(m.workers[j]);
                worker_join(m.workers[j]);
            }
            goto out;
        }
        m.num_workers = i + 1;
    }
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const struct config_listener *l = &cfg->listeners[i];
        log_msg(LOG_INFO, "listening on %s port %u (%s)", l->address, (unsigned)l->port,
                l->tls == CONFIG_LISTENER_IMPLICIT ? "implicit TLS" : "STARTTLS");
    }
    log_msg(LOG_INFO, "imapmux %s started: instance %s, %u workers", IMAPMUX_VERSION,
            cfg->instance, n);
    admin_set_serving(m.admin, 1);
    if (takeover_path != NULL) {
        size_t unused = takeover_release_unclaimed();
        if (unused > 0) {
            log_msg(LOG_WARNING, "takeover: %zu sockets taken over match no listener: closed",
                    unused);
        }
        if (takeover_conn >= 0) {
            /* from here on the old process stops accepting and drains */
            if (takeover_ready(takeover_conn) != 0) {
                log_msg(LOG_WARNING, "takeover: the old process did not hear READY; it serves on");
            }
            takeover_conn = -1;
        }
        m.takeover = takeover_serve(err, sizeof(err), loop, takeover_path, main_takeover_fds,
                                    main_on_takeover_done, &m);
        if (m.takeover == NULL) {
            log_msg(LOG_WARNING, "takeover: %s; the next upgrade cannot take over", err);
        }
    }
    {
        char state[64];
        snprintf(state, sizeof(state), "READY=1\nMAINPID=%ld", (long)getpid());
        (void)takeover_notify(state); /* for a service manager (systemd Type=notify) */
    }

    uv_signal_init(loop, &m.sigterm);
    uv_signal_init(loop, &m.sigint);
    uv_signal_init(loop, &m.sighup);
    uv_signal_init(loop, &m.sigusr1);
    m.sigterm.data = m.sigint.data = m.sighup.data = m.sigusr1.data = &m;
    uv_signal_start(&m.sigterm, main_on_signal, SIGTERM);
    uv_signal_start(&m.sigint, main_on_signal, SIGINT);
    uv_signal_start(&m.sighup, main_on_signal, SIGHUP);
    uv_signal_start(&m.sigusr1, main_on_signal, SIGUSR1);
    uv_timer_init(loop, &m.expiry_timer);
    m.expiry_timer.data = &m;
    uv_timer_start(&m.expiry_timer, main_on_expiry_timer, MAIN_EXPIRY_CHECK_MS,
                   MAIN_EXPIRY_CHECK_MS);
    uv_run(loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < m.num_workers; i++) {
        worker_join(m.workers[i]);
    }
    log_msg(LOG_INFO, "stopped");
    rc = 0;
out:
    admin_stop(m.admin); /* before what it reads: the caps and the counters */
    if (takeover_conn >= 0) {
        close(takeover_conn); /* no READY: the old process serves on */
    }
    takeover_release_unclaimed();
    audit_free(m.audit); /* after the workers: their last records go out */
    tls_certificates_publish(NULL, 0);
    snapshot_unref(&m.snap);
    verify_cleanup();      /* after the workers: every loop closed its side */
    oauth_cleanup();       /* likewise */
    conncap_free(m.conncap); /* after the workers: every session gave its ticket back */
    metrics_cleanup();
    uv_loop_close(loop);
    return rc;
}

/* main_write_pid writes the process id to path (for `imapmuxctl reload
 * --pid-file`).  Returns 0, or -1 with the reason on stderr. */
static int main_write_pid(const char *path)
{
    FILE *f = fopen(path, "w");
    int ok = f != NULL && fprintf(f, "%ld\n", (long)getpid()) > 0;
    if (f != NULL && fclose(f) != 0) {
        ok = 0;
    }
    if (!ok) {
        fprintf(stderr, "imapmux: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'C'},
        {"pid-file", required_argument, NULL, 'p'},
        {"version", no_argument, NULL, 'V'},
        {"takeover", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    const char *takeover_path = NULL;
    const char *pid_file = NULL;
    int check = 0;
    int opt;
    char err[1024];

    while ((opt = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'C':
            path = optarg;
            check = 1;
            break;
        case 'T':
            takeover_path = optarg;
            break;
        case 'p':
            pid_file = optarg;
            break;
        case 'V':
            printf("imapmux %s\n", IMAPMUX_VERSION);
            return 0;
        case 'h':
            main_usage(stdout);
            return 0;
        default:
            main_usage(stderr);
            return 2;
        }
    }
    if (path == NULL || optind != argc) {
        main_usage(stderr);
        return 2;
    }
    struct config *cfg = config_load(err, sizeof(err), path);
    if (cfg == NULL) {
        fprintf(stderr, "imapmux: %s\n", err);
        return 1;
    }
    if (check) {
        /* also load what the file points at: certificates and CA files */
        struct snapshot *snap = snapshot_new(err, sizeof(err), cfg, 1);
        if (snap == NULL) {
            fprintf(stderr, "imapmux: %s: %s\n", path, err);
            config_unref(&cfg);
            return 1;
        }
        snapshot_unref(&snap);
        printf("%s: configuration ok\n", path);
        config_unref(&cfg);
        return 0;
    }
    if (pid_file != NULL && main_write_pid(pid_file) != 0) {
        config_unref(&cfg);
        return 1;
    }
    int rc = main_run(cfg, takeover_path);
    config_unref(&cfg);
    if (pid_file != NULL) {
        unlink(pid_file);
    }
    return rc;
}
