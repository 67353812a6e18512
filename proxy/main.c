/* imapmux: the daemon.  Options, configuration, TLS contexts, workers,
 * signals and drain. */
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <uv.h>

#include <openssl/ssl.h>

#include "common/config.h"
#include "common/log.h"
#include "proxy/audit.h"
#include "proxy/conncap.h"
#include "proxy/oauth.h"
#include "proxy/tls.h"
#include "proxy/verify.h"
#include "proxy/worker.h"

#define MAIN_MAX_WORKERS 256

static void main_usage(FILE *f)
{
    fprintf(f,
            "usage: imapmux -c FILE          run with the configuration in FILE\n"
            "       imapmux --check-config FILE  check FILE and exit (0: valid)\n"
            "       imapmux --version        print the version\n"
            "       imapmux --help           this text\n"
            "\n"
            "imapmux is an IMAP proxy: it terminates TLS for mail clients, answers\n"
            "pre-authentication commands itself, logs the user in to the backend IMAP\n"
            "server that holds the mailbox and relays the session.  SIGTERM or SIGINT\n"
            "drain: new connections stop, pre-auth clients get BYE, logged-in sessions\n"
            "get drain_timeout_ms to finish.\n");
}

struct main_state {
    struct worker *workers[MAIN_MAX_WORKERS];
    unsigned num_workers;
    uv_signal_t sigterm, sigint, sighup, sigusr1;
    struct audit *audit;          /* NULL without audit sinks */
    struct conncap *conncap;      /* caps on client connections, shared by the workers */
    int stopping;
};

static void main_on_signal_close(uv_handle_t *h)
{
    (void)h;
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
        log_msg(LOG_WARNING, "SIGHUP: configuration reload is not implemented yet; ignored");
        return;
    }
    if (m->stopping) {
        return;
    }
    m->stopping = 1;
    log_msg(LOG_INFO, "%s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    for (unsigned i = 0; i < m->num_workers; i++) {
        worker_drain(m->workers[i]);
    }
    uv_close((uv_handle_t *)&m->sigterm, main_on_signal_close);
    uv_close((uv_handle_t *)&m->sigint, main_on_signal_close);
    uv_close((uv_handle_t *)&m->sighup, main_on_signal_close);
    uv_close((uv_handle_t *)&m->sigusr1, main_on_signal_close);
}

static SSL_CTX **main_backend_ctxs(const struct config *cfg)
{
    char err[512];
    SSL_CTX **ctxs = calloc(cfg->num_backends + 1, sizeof(*ctxs));
    if (ctxs == NULL) {
        fprintf(stderr, "imapmux: out of memory\n");
        return NULL;
    }
    for (size_t i = 0; i < cfg->num_backends; i++) {
        const struct config_backend *b = &cfg->backends[i];
        if (b->tls == CONFIG_BACKEND_TLS_NONE) {
            continue;
        }
        ctxs[i] = tls_client_ctx_new(err, sizeof(err), b->ca_file, b->tls_verify);
        if (ctxs[i] == NULL) {
            fprintf(stderr, "imapmux: backend %s: %s\n", b->name, err);
            for (size_t j = 0; j < i; j++) {
                SSL_CTX_free(ctxs[j]);
            }
            free(ctxs);
            return NULL;
        }
    }
    return ctxs;
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

static int main_run(struct config *cfg)
{
    struct main_state m;
    char err[512];
    SSL_CTX *server_ctx = NULL;
    SSL_CTX **backend_ctxs = NULL;
    uv_loop_t *loop = uv_default_loop();
    int rc = 1;
    unsigned n;
    uint64_t nofile;

    memset(&m, 0, sizeof(m));
    log_init("imapmux", cfg->log_level, cfg->log_target == CONFIG_LOG_SYSLOG);
    signal(SIGPIPE, SIG_IGN);
    nofile = main_raise_nofile();

    if (cfg->num_listeners > 0) {
        server_ctx = tls_server_ctx_new(err, sizeof(err), cfg->tls_cert_file, cfg->tls_key_file);
        if (server_ctx == NULL) {
            log_msg(LOG_ERR, "TLS: %s", err);
            goto out;
        }
    }
    backend_ctxs = main_backend_ctxs(cfg);
    if (backend_ctxs == NULL) {
        goto out;
    }
    n = cfg->num_workers != 0 ? cfg->num_workers : uv_available_parallelism();
    if (n == 0) {
        n = 1;
    }
    if (n > MAIN_MAX_WORKERS) {
        n = MAIN_MAX_WORKERS;
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
    for (unsigned i = 0; i < n; i++) {
        m.workers[i] = worker_start(err, sizeof(err), i, cfg, server_ctx, backend_ctxs, m.audit,
                                    m.conncap);
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

    uv_signal_init(loop, &m.sigterm);
    uv_signal_init(loop, &m.sigint);
    uv_signal_init(loop, &m.sighup);
    uv_signal_init(loop, &m.sigusr1);
    m.sigterm.data = m.sigint.data = m.sighup.data = m.sigusr1.data = &m;
    uv_signal_start(&m.sigterm, main_on_signal, SIGTERM);
    uv_signal_start(&m.sigint, main_on_signal, SIGINT);
    uv_signal_start(&m.sighup, main_on_signal, SIGHUP);
    uv_signal_start(&m.sigusr1, main_on_signal, SIGUSR1);
    uv_run(loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < m.num_workers; i++) {
        worker_join(m.workers[i]);
    }
    log_msg(LOG_INFO, "stopped");
    rc = 0;
out:
    audit_free(m.audit); /* after the workers: their last records go out */
    if (backend_ctxs != NULL) {
        for (size_t i = 0; i < cfg->num_backends; i++) {
            SSL_CTX_free(backend_ctxs[i]);
        }
        free(backend_ctxs);
    }
    SSL_CTX_free(server_ctx);
    verify_cleanup();      /* after the workers: every loop closed its side */
    oauth_cleanup();       /* likewise */
    conncap_free(m.conncap); /* after the workers: every session gave its ticket back */
    uv_loop_close(loop);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
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
        SSL_CTX *ctx = NULL;
        SSL_CTX **bctx;
        if (cfg->num_listeners > 0) {
            ctx = tls_server_ctx_new(err, sizeof(err), cfg->tls_cert_file, cfg->tls_key_file);
            if (ctx == NULL) {
                fprintf(stderr, "imapmux: %s: TLS: %s\n", path, err);
                config_unref(&cfg);
                return 1;
            }
        }
        SSL_CTX_free(ctx);
        bctx = main_backend_ctxs(cfg);
        if (bctx == NULL) {
            config_unref(&cfg);
            return 1;
        }
        for (size_t i = 0; i < cfg->num_backends; i++) {
            SSL_CTX_free(bctx[i]);
        }
        free(bctx);
        printf("%s: configuration ok\n", path);
        config_unref(&cfg);
        return 0;
    }
    int rc = main_run(cfg);
    config_unref(&cfg);
    return rc;
}
