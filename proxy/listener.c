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

#define LISTENER_BACKLOG 511

struct listener {
    uv_tcp_t tcp;                         /* tcp.data = this; freed in listener_on_close */
    const struct config_listener *cfg;    /* in the worker's config snapshot */
    void (*on_accept)(void *ctx, uv_stream_t *server, const struct config_listener *cfg);
    void *ctx;
};

static void listener_on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    if (status != 0) {
        log_msg(LOG_WARNING, "listener %s:%u: accept failed: %s", l->cfg->address,
                (unsigned)l->cfg->port, uv_strerror(status));
        return;
    }
    l->on_accept(l->ctx, server, l->cfg);
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
    struct listener *l = calloc(1, sizeof(*l));

    if (l == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
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
    uv_tcp_init(loop, &l->tcp);
    l->tcp.data = l;
    l->cfg = cfg;
    l->on_accept = on_accept;
    l->ctx = ctx;
    r = uv_tcp_open(&l->tcp, fd);
    if (r == 0) {
        fd = -1; /* the handle owns it now */
        r = conn_tune_listener(&l->tcp); /* inherited by every accepted connection */
    }
    if (r == 0) {
        r = uv_listen((uv_stream_t *)&l->tcp, LISTENER_BACKLOG, listener_on_connection);
    }
    if (r != 0) {
        snprintf(err, err_len, "cannot listen on %s port %u: %s", cfg->address,
                 (unsigned)cfg->port, uv_strerror(r));
        if (fd >= 0) {
            close(fd);
        }
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

static void listener_on_close(uv_handle_t *h)
{
    free(h->data);
}

void listener_close(struct listener *l)
{
    if (l != NULL) {
        uv_close((uv_handle_t *)&l->tcp, listener_on_close);
    }
}
