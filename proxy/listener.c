#include "proxy/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "common/log.h"
#include "proxy/conn.h"
#include "proxy/takeover.h"

#define LISTENER_BACKLOG 511
#define LISTENER_MAX_SOCKS 16 /* sockets of one listener: its own, or those taken over */

/* One listening socket; a listener has one, or several after a takeover
 * from a process that ran more workers. */
struct listener_sock {
    uv_tcp_t tcp;                         /* tcp.data = this */
    struct listener *l;
};

struct listener {
    struct listener_sock socks[LISTENER_MAX_SOCKS];
    size_t num_socks;                     /* opened handles */
    size_t num_closing;                   /* handles whose close is pending */
    const struct config_listener *cfg;    /* in the worker's config snapshot */
    void (*on_accept)(void *ctx, uv_stream_t *server, const struct config_listener *cfg);
    void *ctx;
};

static void listener_on_connection(uv_stream_t *server, int status)
{
    struct listener_sock *ls = server->data;
    struct listener *l = ls->l;
    if (status != 0) {
        log_msg(LOG_WARNING, "listener %s:%u: accept failed: %s", l->cfg->address,
                (unsigned)l->cfg->port, uv_strerror(status));
        return;
    }
    l->on_accept(l->ctx, server, l->cfg);
}

/* listener_add_fd makes fd (bound) a polled socket of l.  Returns 0, or a
 * UV_E* code (fd is closed then). */
static int listener_add_fd(struct listener *l, uv_loop_t *loop, int fd)
{
    struct listener_sock *ls = &l->socks[l->num_socks];
    uv_tcp_init(loop, &ls->tcp);
    ls->tcp.data = ls;
    ls->l = l;
    l->num_socks++;
    int r = uv_tcp_open(&ls->tcp, fd);
    if (r != 0) {
        close(fd);
        return r;
    }
    r = conn_tune_listener(&ls->tcp); /* inherited by every accepted connection */
    if (r != 0) {
        return r;
    }
    /* on an inherited socket, listen again only sets the backlog: its
       queue is kept */
    return uv_listen((uv_stream_t *)&ls->tcp, LISTENER_BACKLOG, listener_on_connection);
}

struct listener *listener_open(char *err, size_t err_len, uv_loop_t *loop,
                               const struct config_listener *cfg,
                               void (*on_accept)(void *ctx, uv_stream_t *server,
                                                 const struct config_listener *cfg),
                               void *ctx)
{
    struct sockaddr_storage ss;
    socklen_t ss_len;
    int one = 1;
    int fd = -1;
    int r;
    int inherited[LISTENER_MAX_SOCKS];
    struct listener *l = calloc(1, sizeof(*l));

    if (l == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    l->cfg = cfg;
    l->on_accept = on_accept;
    l->ctx = ctx;
    size_t num_inherited = takeover_claim(cfg->address, cfg->port, inherited, LISTENER_MAX_SOCKS);
    if (num_inherited > 0) {
        for (size_t i = 0; i < num_inherited; i++) {
            r = listener_add_fd(l, loop, inherited[i]);
            if (r != 0) {
                for (size_t j = i + 1; j < num_inherited; j++) {
                    close(inherited[j]);
                }
                snprintf(err, err_len, "cannot listen on the socket of %s port %u taken over: %s",
                         cfg->address, (unsigned)cfg->port, uv_strerror(r));
                listener_close(l);
                return NULL;
            }
        }
        return l;
    }
    memset(&ss, 0, sizeof(ss));
    if (strchr(cfg->address, ':') != NULL) {
        r = uv_ip6_addr(cfg->address, cfg->port, (struct sockaddr_in6 *)&ss);
        ss_len = sizeof(struct sockaddr_in6);
    } else {
        r = uv_ip4_addr(cfg->address, cfg->port, (struct sockaddr_in *)&ss);
        ss_len = sizeof(struct sockaddr_in);
    }
    if (r != 0) {
        snprintf(err, err_len, "%s: not a numeric address", cfg->address);
        goto fail;
    }
    /* libuv 1.44 has no SO_REUSEPORT flag: make the socket ourselves. */
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        (ss.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        goto fail;
    }
    if (bind(fd, (struct sockaddr *)&ss, ss_len) != 0) {
        snprintf(err, err_len, "cannot bind %s port %u: %s", cfg->address, (unsigned)cfg->port,
                 strerror(errno));
        goto fail;
    }
    r = listener_add_fd(l, loop, fd); /* the handle owns fd now, or closed it */
    if (r != 0) {
        snprintf(err, err_len, "cannot listen on %s port %u: %s", cfg->address,
                 (unsigned)cfg->port, uv_strerror(r));
        listener_close(l);
        return NULL;
    }
    return l;
fail:
    if (fd >= 0) {
        close(fd);
    }
    free(l);
    return NULL;
}

size_t listener_fds(const struct listener *l, int *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; l != NULL && i < l->num_socks && n < cap; i++) {
        uv_os_fd_t fd;
        if (uv_fileno((const uv_handle_t *)&l->socks[i].tcp, &fd) == 0) {
            out[n++] = fd;
        }
    }
    return n;
}

static void listener_on_close(uv_handle_t *h)
{
    struct listener_sock *ls = h->data;
    struct listener *l = ls->l;
    if (--l->num_closing == 0) {
        free(l);
    }
}

void listener_close(struct listener *l)
{
    if (l == NULL) {
        return;
    }
    if (l->num_socks == 0) {
        free(l);
        return;
    }
    l->num_closing = l->num_socks;
    for (size_t i = 0; i < l->num_socks; i++) {
        uv_close((uv_handle_t *)&l->socks[i].tcp, listener_on_close);
    }
}

/* --- reload ---------------------------------------------------------------------- */

int listener_config_same(const struct config_listener *a, const struct config_listener *b)
{
    return a->port == b->port && a->tls == b->tls && strcmp(a->address, b->address) == 0;
}

int listener_probe(char *err, size_t err_len, const struct config_listener *cfg)
{
    struct sockaddr_storage ss;
    socklen_t ss_len;
    int one = 1;
    int r;

    memset(&ss, 0, sizeof(ss));
    if (strchr(cfg->address, ':') != NULL) {
        r = uv_ip6_addr(cfg->address, cfg->port, (struct sockaddr_in6 *)&ss);
        ss_len = sizeof(struct sockaddr_in6);
    } else {
        r = uv_ip4_addr(cfg->address, cfg->port, (struct sockaddr_in *)&ss);
        ss_len = sizeof(struct sockaddr_in);
    }
    if (r != 0) {
        snprintf(err, err_len, "%s: not a numeric address", cfg->address);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        (ss.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&ss, ss_len) != 0) {
        snprintf(err, err_len, "cannot bind %s port %u: %s", cfg->address, (unsigned)cfg->port,
                 strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

void listener_set_config(struct listener *l, const struct config_listener *cfg)
{
    l->cfg = cfg;
}
