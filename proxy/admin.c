#include "proxy/admin.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <microhttpd.h>

#include <uv.h>

#include <openssl/mem.h>

#include "common/log.h"
#include "common/netaddr.h"
#include "proxy/conncap.h"
#include "proxy/metrics.h"
#include "proxy/tls_certificates.h"
#include "proxy/verify.h"

#define ADMIN_REASON_LEN 1024 /* bytes of a /readyz answer */
#define ADMIN_MAX_CERT_NOTES 16 /* certificates /readyz warns of */
#define ADMIN_BEARER "Bearer "

struct admin {
    struct MHD_Daemon *mhd;
    uv_mutex_t mu;               /* guards cfg (swapped by admin_set_config) */
    struct config *cfg;          /* our reference; read through admin_config */
    struct conncap *conncap;     /* borrowed, or NULL */
    atomic_int serving;          /* admin_set_serving */
};

/* admin_config returns a reference to the current snapshot (the caller
 * drops it with config_unref). */
static struct config *admin_config(struct admin *a)
{
    uv_mutex_lock(&a->mu);
    struct config *c = config_ref(a->cfg);
    uv_mutex_unlock(&a->mu);
    return c;
}

/* --- access ----------------------------------------------------------------------- */

/* admin_on_accept: only clients in admin.allow (any when it is empty). */
static enum MHD_Result admin_on_accept(void *cls, const struct sockaddr *sa, socklen_t len)
{
    struct config *cfg = admin_config(cls);
    const struct config_admin *ac = &cfg->admin;
    char text[INET6_ADDRSTRLEN];
    struct netaddr na;
    enum MHD_Result r = MHD_NO;
    (void)len;
    if (ac->num_allow == 0) {
        config_unref(&cfg);
        return MHD_YES;
    }
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text, sizeof(text));
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, text, sizeof(text));
    } else {
        config_unref(&cfg);
        return MHD_NO;
    }
    if (netaddr_parse(&na, text) == 0) {
        for (size_t i = 0; i < ac->num_allow && r == MHD_NO; i++) {
            if (netaddr_in_prefix(&na, &ac->allow[i].net, ac->allow[i].prefix_len)) {
                r = MHD_YES;
            }
        }
    }
    config_unref(&cfg);
    if (r == MHD_NO) {
        log_msg(LOG_INFO, "admin: refused a client from %s (not in admin.allow)", text);
    }
    return r;
}

/* admin_authorized: no token configured, or the request bears it (compared
 * in constant time). */
static int admin_authorized(const struct config *cfg, struct MHD_Connection *c)
{
    const char *want = cfg->admin.token;
    if (want == NULL) {
        return 1;
    }
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    size_t plen = strlen(ADMIN_BEARER);
    if (h == NULL || strncasecmp(h, ADMIN_BEARER, plen) != 0) {
        return 0;
    }
    h += plen;
    size_t hl = strlen(h), wl = strlen(want);
    return hl == wl && CRYPTO_memcmp(h, want, wl) == 0;
}

/* --- answers ---------------------------------------------------------------------- */

static enum MHD_Result admin_reply(struct MHD_Connection *c, unsigned status, const char *type,
                                   char *body, size_t len, int owned)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (r == NULL) {
        if (owned) {
            free(body);
        }
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_UNAUTHORIZED) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"imapmux\"");
    }
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result admin_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return admin_reply(c, status, "text/plain; charset=utf-8", (char *)text, strlen(text), 0);
}

/* admin_render_shared: the counters every worker shares (caps, password
 * checks), which live behind their own modules' locks. */
static void admin_render_shared(const struct admin *a, struct metrics_buf *b)
{
    if (a->conncap != NULL) {
        struct conncap_stats cs;
        static const struct {
            enum conncap_verdict v;
            const char *reason;
        } reasons[] = {
            {CONNCAP_TOTAL, "max_connections"},
            {CONNCAP_DESCRIPTORS, "descriptors"},
            {CONNCAP_PER_IP, "per_ip"},
            {CONNCAP_PER_PREFIX, "per_ipv6_prefix"},
            {CONNCAP_NOMEM, "out_of_memory"},
        };
        conncap_stats(a->conncap, &cs);
        metrics_family(b, "imapmux_connections", "gauge",
                       "Client connections holding a place in the connection caps.");
        metrics_sample(b, "imapmux_connections", NULL, (double)cs.current);
        metrics_family(b, "imapmux_connections_refused_total", "counter",
                       "Client connections refused by a connection cap, by cap.");
        for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
            const char *labels[] = {"reason", reasons[i].reason, NULL};
            metrics_sample(b, "imapmux_connections_refused_total", labels,
                           (double)cs.refused[reasons[i].v]);
        }
    }
    struct verify_stats vs;
    verify_stats(&vs);
    if (vs.num_threads > 0) {
        metrics_family(b, "imapmux_password_checks_total", "counter",
                       "Password checks accepted by the check pool.");
        metrics_sample(b, "imapmux_password_checks_total", NULL, (double)vs.started);
        metrics_family(b, "imapmux_password_checks_refused_total", "counter",
                       "Password checks refused at once: the queue or the client's share was "
                       "full.");
        const char *q[] = {"reason", "queue_full", NULL};
        const char *cl[] = {"reason", "client_share_full", NULL};
        metrics_sample(b, "imapmux_password_checks_refused_total", q, (double)vs.busy_queue);
        metrics_sample(b, "imapmux_password_checks_refused_total", cl, (double)vs.busy_client);
        metrics_family(b, "imapmux_password_check_jobs", "gauge",
                       "Password checks queued or running now.");
        metrics_sample(b, "imapmux_password_check_jobs", NULL, (double)vs.jobs);
    }
    metrics_family(b, "imapmux_ready", "gauge",
                   "1 while the listeners are bound and the process does not drain.");
    metrics_sample(b, "imapmux_ready", NULL, atomic_load(&a->serving));
}

static enum MHD_Result admin_metrics(struct admin *a, const struct config *cfg,
                                     struct MHD_Connection *c)
{
    struct metrics_buf b = {0};
    metrics_refresh(METRICS_REFRESH_WAIT_MS);
    metrics_render(&b, cfg);
    admin_render_shared(a, &b);
    if (b.failed || b.p == NULL) {
        metrics_buf_free(&b);
        return admin_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    return admin_reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len, 1);
}

/* admin_probe_addr: a TCP connect to sa within timeout_ms.  Returns 0 or an
 * errno value. */
static int admin_probe_addr(const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err = 0;
    if (fd < 0) {
        return errno;
    }
    if (connect(fd, sa, len) != 0) {
        if (errno != EINPROGRESS) {
            err = errno;
        } else {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int n = poll(&p, 1, timeout_ms);
            if (n == 0) {
                err = ETIMEDOUT;
            } else if (n < 0) {
                err = errno;
            } else {
                socklen_t el = sizeof(err);
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) {
                    err = errno;
                }
            }
        }
    }
    close(fd);
    return err;
}

/* admin_probe_host: a connect to host:port (any of its addresses).  Returns
 * 0, or -1 with the reason in why. */
static int admin_probe_host(const char *host, uint16_t port, char *why, size_t why_len)
{
    struct addrinfo hints, *res = NULL;
    char ps[8];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(ps, sizeof(ps), "%u", (unsigned)port);
    int r = getaddrinfo(host, ps, &hints, &res);
    if (r != 0) {
        snprintf(why, why_len, "%s", gai_strerror(r));
        return -1;
    }
    int err = ENOENT;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        err = admin_probe_addr(ai->ai_addr, ai->ai_addrlen, ADMIN_PROBE_TIMEOUT_MS);
        if (err == 0) {
            break;
        }
    }
    freeaddrinfo(res);
    if (err != 0) {
        snprintf(why, why_len, "%s", strerror(err));
        return -1;
    }
    return 0;
}

/* admin_ready writes what is not ready to out ("" when all is). */
static void admin_ready(struct admin *a, const struct config *cfg, char *out, size_t len)
{
    size_t off = 0;
    out[0] = '\0';
#define ADMIN_NOT_READY(...)                                                              \
    do {                                                                                  \
        if (off < len) {                                                                  \
            int n_ = snprintf(out + off, len - off, "%s", off > 0 ? "; " : "");           \
            off += n_ > 0 ? (size_t)n_ : 0;                                               \
        }                                                                                 \
        if (off < len) {                                                                  \
            int n_ = snprintf(out + off, len - off, __VA_ARGS__);                         \
            off += n_ > 0 ? (size_t)n_ : 0;                                               \
        }                                                                                 \
    } while (0)

    if (!atomic_load(&a->serving)) {
        ADMIN_NOT_READY("listeners: not serving (starting or draining)");
    }
    if (cfg->redis.enabled) {
        int r = metrics_redis_ready();
        if (r == 0) {
            ADMIN_NOT_READY("redis: not connected");
        } else if (r < 0) {
            ADMIN_NOT_READY("redis: no connection yet");
        }
    }
    const struct config_backend *b = cfg->default_backend;
    if (b != NULL) {
        char why[160] = "";
        int any = 0;
        for (size_t i = 0; i < b->num_hosts && !any; i++) {
            int id = metrics_backend_host(b->name, b->hosts[i].host, b->hosts[i].port);
            if (admin_probe_host(b->hosts[i].host, b->hosts[i].port, why, sizeof(why)) == 0) {
                any = 1;
                metrics_backend_set_up(id, 1);
            } else {
                metrics_backend_set_up(id, 0);
            }
        }
        if (!any) {
            ADMIN_NOT_READY("backend %s: no host reachable (last: %s)", b->name, why);
        }
    }
#undef ADMIN_NOT_READY
}

/* admin_expiry_notes writes a line for each certificate in force that
 * expires within tls.expiry_warning_days (a detail: it does not make the
 * process unready, since every instance usually serves the same one). */
static void admin_expiry_notes(const struct config *cfg, char *out, size_t len)
{
    struct tls_cert_expiry e[ADMIN_MAX_CERT_NOTES];
    size_t n = tls_certificates_expiry(e, ADMIN_MAX_CERT_NOTES);
    int64_t now = (int64_t)time(NULL);
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && i < ADMIN_MAX_CERT_NOTES && off < len; i++) {
        int64_t left = e[i].not_after - now;
        if (cfg->tls_expiry_warning_days == 0 ||
            left >= (int64_t)cfg->tls_expiry_warning_days * 86400) {
            continue;
        }
        int w = left <= 0
                    ? snprintf(out + off, len - off, "warning: certificate %s (%s) has expired\n",
                               e[i].names, e[i].file)
                    : snprintf(out + off, len - off,
                               "warning: certificate %s (%s) expires in %lld days\n", e[i].names,
                               e[i].file, (long long)(left / 86400));
        off += w > 0 ? (size_t)w : 0;
    }
}

static enum MHD_Result admin_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                        const char *method, const char *version,
                                        const char *upload_data, size_t *upload_data_size,
                                        void **con_cls)
{
    struct admin *a = cls;
    (void)version;
    (void)upload_data;
    if (*con_cls == NULL) {
        /* the first call sees the headers only: answer on the next */
        *con_cls = a;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* no request body is wanted: drop it */
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        return admin_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
    }
    if (strcmp(url, "/healthz") == 0) {
        return admin_text(c, MHD_HTTP_OK, "ok\n");
    }
    if (strcmp(url, "/metrics") != 0 && strcmp(url, "/readyz") != 0) {
        return admin_text(c, MHD_HTTP_NOT_FOUND, "not found: /metrics, /healthz, /readyz\n");
    }
    struct config *cfg = admin_config(a);
    enum MHD_Result ret;
    if (!admin_authorized(cfg, c)) {
        ret = admin_text(c, MHD_HTTP_UNAUTHORIZED, "a bearer token is required\n");
    } else if (strcmp(url, "/metrics") == 0) {
        ret = admin_metrics(a, cfg, c);
    } else {
        char why[ADMIN_REASON_LEN];
        admin_ready(a, cfg, why, sizeof(why));
        if (why[0] == '\0') {
            char body[ADMIN_REASON_LEN + 32];
            size_t off = (size_t)snprintf(body, sizeof(body), "ready\n");
            admin_expiry_notes(cfg, body + off, sizeof(body) - off);
            ret = admin_reply(c, MHD_HTTP_OK, "text/plain; charset=utf-8", body, strlen(body), 0);
        } else {
            char body[ADMIN_REASON_LEN + 32];
            snprintf(body, sizeof(body), "not ready: %s\n", why);
            ret = admin_reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", body,
                              strlen(body), 0);
        }
    }
    config_unref(&cfg);
    return ret;
}

/* --- lifetime ---------------------------------------------------------------------- */

struct admin *admin_start(char *err, size_t err_len, struct config *cfg, struct conncap *conncap)
{
    const struct config_admin *ac = &cfg->admin;
    struct sockaddr_storage ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION;
    struct admin *a;

    memset(&ss, 0, sizeof(ss));
    if (strchr(ac->address, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(ac->port);
        if (inet_pton(AF_INET6, ac->address, &s6->sin6_addr) != 1) {
            snprintf(err, err_len, "admin.listen: %s is not an address", ac->address);
            return NULL;
        }
        flags |= MHD_USE_IPv6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(ac->port);
        if (inet_pton(AF_INET, ac->address, &s4->sin_addr) != 1) {
            snprintf(err, err_len, "admin.listen: %s is not an address", ac->address);
            return NULL;
        }
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    a->cfg = config_ref(cfg);
    a->conncap = conncap;
    uv_mutex_init(&a->mu);
    /* the hosts of the configuration get their labels first */
    for (size_t i = 0; i < cfg->num_backends; i++) {
        const struct config_backend *b = &cfg->backends[i];
        for (size_t j = 0; j < b->num_hosts; j++) {
            (void)metrics_backend_host(b->name, b->hosts[j].host, b->hosts[j].port);
        }
    }
    a->mhd = MHD_start_daemon(flags, ac->port, admin_on_accept, a, admin_on_request, a,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)ADMIN_MAX_CONNECTIONS,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ADMIN_CONNECTION_TIMEOUT_S,
                              /* an upgrade's new process binds it while the old one
                                 still serves (proxy/takeover) */
                              MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
                              MHD_OPTION_END);
    if (a->mhd == NULL) {
        snprintf(err, err_len, "cannot listen on %s port %u (in use, or not an address here)",
                 ac->address, (unsigned)ac->port);
        uv_mutex_destroy(&a->mu);
        config_unref(&a->cfg);
        free(a);
        return NULL;
    }
    log_msg(LOG_INFO, "admin: listening on %s port %u (/metrics, /healthz, /readyz)%s",
            ac->address, (unsigned)ac->port, ac->token != NULL ? ", bearer token required" : "");
    return a;
}

void admin_set_serving(struct admin *a, int serving)
{
    if (a != NULL) {
        atomic_store(&a->serving, serving != 0);
    }
}

void admin_set_config(struct admin *a, struct config *cfg)
{
    if (a == NULL) {
        return;
    }
    struct config *c = config_ref(cfg);
    uv_mutex_lock(&a->mu);
    struct config *old = a->cfg;
    a->cfg = c;
    uv_mutex_unlock(&a->mu);
    config_unref(&old);
}

void admin_stop(struct admin *a)
{
    if (a == NULL) {
        return;
    }
    MHD_stop_daemon(a->mhd);
    uv_mutex_destroy(&a->mu);
    config_unref(&a->cfg);
    free(a);
}
