#include "proxy/takeover.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "common/log.h"

#define TAKEOVER_FDS_PER_MSG 250    /* below the kernel's SCM_MAX_FD (253) */
#define TAKEOVER_MSG_LEN 64         /* bytes of a control message's text */
#define TAKEOVER_BACKLOG 4

/* --- the new process's side: the pool of inherited sockets ---------------- */

struct takeover_fd {
    int fd;                         /* -1 once claimed or closed */
    struct sockaddr_storage addr;   /* what it is bound to */
};

static struct {
    uv_mutex_t lock;
    int lock_ready;
    struct takeover_fd *fds;
    size_t num;
    unsigned num_workers;
    /* claims per address so far: the n-th claimant takes index % workers == n */
    struct takeover_claims {
        struct sockaddr_storage addr;
        unsigned n;
    } claims[64];
    size_t num_claims;
} takeover_pool = {.lock_ready = 0};

/* takeover_wait waits (bounded) until fd is readable (events POLLIN) or
 * writable.  Returns 0, or -1 on timeout or error. */
static int takeover_wait(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r;
    do {
        r = poll(&p, 1, TAKEOVER_IO_TIMEOUT_MS);
    } while (r < 0 && errno == EINTR);
    return r == 1 ? 0 : -1;
}

/* takeover_send sends text with the descriptors fds (num may be 0). */
static int takeover_send(int sock, const char *text, const int *fds, size_t num)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * TAKEOVER_FDS_PER_MSG)];
    } cm;
    struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (num > 0) {
        memset(&cm, 0, sizeof(cm));
        msg.msg_control = cm.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * num);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * num);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * num);
    }
    if (takeover_wait(sock, POLLOUT) != 0) {
        return -1;
    }
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)iov.iov_len ? 0 : -1;
}

/* takeover_recv reads one message into text (NUL-terminated) and the
 * descriptors that came with it into fds (*num_fds, at most cap; any more
 * are closed).  Returns 0, or -1 (timeout, EOF, error). */
static int takeover_recv(int sock, char *text, size_t text_len, int *fds, size_t cap,
                         size_t *num_fds)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * TAKEOVER_FDS_PER_MSG)];
    } cm;
    struct iovec iov = {.iov_base = text, .iov_len = text_len - 1};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cm.buf;
    msg.msg_controllen = sizeof(cm.buf);
    *num_fds = 0;
    if (takeover_wait(sock, POLLIN) != 0) {
        return -1;
    }
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return -1;
    }
    text[n] = '\0';
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *in = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, in + i, sizeof(fd));
            if (*num_fds < cap) {
                fds[(*num_fds)++] = fd;
            } else {
                close(fd);
            }
        }
    }
    return (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ? -1 : 0;
}

static int takeover_unix_addr(struct sockaddr_un *sa, const char *path)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        return -1;
    }
    memcpy(sa->sun_path, path, strlen(path));
    return 0;
}

/* takeover_pool_add keeps an inherited descriptor if it is a listening TCP
 * socket; anything else is closed. */
static void takeover_pool_add(int fd)
{
    struct takeover_fd *t = &takeover_pool.fds[takeover_pool.num];
    socklen_t len = sizeof(t->addr);
    int listening = 0;
    socklen_t ll = sizeof(listening);
    if (getsockname(fd, (struct sockaddr *)&t->addr, &len) != 0 ||
        (t->addr.ss_family != AF_INET && t->addr.ss_family != AF_INET6) ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) != 0 || !listening) {
        close(fd);
        return;
    }
    t->fd = fd;
    takeover_pool.num++;
}

int takeover_fetch(char *err, size_t err_len, const char *path, unsigned num_workers,
                   int *out_conn)
{
    struct sockaddr_un sa;
    char text[TAKEOVER_MSG_LEN];
    int fds[TAKEOVER_FDS_PER_MSG];
    size_t k;

    *out_conn = -1;
    if (!takeover_pool.lock_ready) {
        uv_mutex_init(&takeover_pool.lock);
        takeover_pool.lock_ready = 1;
    }
    takeover_pool.num_workers = num_workers > 0 ? num_workers : 1;
    if (takeover_unix_addr(&sa, path) != 0) {
        snprintf(err, err_len, "%s: path too long for a unix socket", path);
        return -1;
    }
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(s);
        if (e == ENOENT || e == ECONNREFUSED) {
            return 1; /* nobody serves it: a first start */
        }
        snprintf(err, err_len, "cannot connect to %s: %s", path, strerror(e));
        return -1;
    }
    takeover_pool.fds = calloc(TAKEOVER_MAX_FDS, sizeof(*takeover_pool.fds));
    if (takeover_pool.fds == NULL || takeover_send(s, "TAKEOVER\n", NULL, 0) != 0) {
        snprintf(err, err_len, "%s: cannot ask for the listening sockets", path);
        close(s);
        return -1;
    }
    for (;;) {
        if (takeover_recv(s, text, sizeof(text), fds, TAKEOVER_FDS_PER_MSG, &k) != 0) {
            for (size_t i = 0; i < k; i++) {
                close(fds[i]);
            }
            snprintf(err, err_len, "%s: the running process did not hand its sockets over", path);
            takeover_release_unclaimed();
            close(s);
            return -1;
        }
        for (size_t i = 0; i < k; i++) {
            if (takeover_pool.num < TAKEOVER_MAX_FDS) {
                takeover_pool_add(fds[i]);
            } else {
                close(fds[i]);
            }
        }
        if (strcmp(text, "END\n") == 0) {
            break;
        }
        if (strncmp(text, "FDS ", 4) != 0) {
            snprintf(err, err_len, "%s: unexpected answer", path);
            takeover_release_unclaimed();
            close(s);
            return -1;
        }
    }
    *out_conn = s;
    return 0;
}

/* takeover_addr_parse: address and port to a socket address. */
static int takeover_addr_parse(struct sockaddr_storage *ss, const char *address, uint16_t port)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(address, ':') != NULL) {
        return uv_ip6_addr(address, port, (struct sockaddr_in6 *)ss);
    }
    return uv_ip4_addr(address, port, (struct sockaddr_in *)ss);
}

static int takeover_addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) {
        return 0;
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

size_t takeover_claim(const char *address, uint16_t port, int *out, size_t cap)
{
    struct sockaddr_storage want;
    size_t got = 0;
    if (!takeover_pool.lock_ready || takeover_pool.num == 0 ||
        takeover_addr_parse(&want, address, port) != 0) {
        return 0;
    }
    uv_mutex_lock(&takeover_pool.lock);
    size_t c;
    for (c = 0; c < takeover_pool.num_claims; c++) {
        if (takeover_addr_eq(&takeover_pool.claims[c].addr, &want)) {
            break;
        }
    }
    if (c == takeover_pool.num_claims) {
        if (c == sizeof(takeover_pool.claims) / sizeof(takeover_pool.claims[0])) {
            uv_mutex_unlock(&takeover_pool.lock);
            return 0;
        }
        takeover_pool.claims[c].addr = want;
        takeover_pool.claims[c].n = 0;
        takeover_pool.num_claims++;
    }
    unsigned n = takeover_pool.claims[c].n++;
    size_t idx = 0; /* index among this address's sockets */
    for (size_t i = 0; i < takeover_pool.num && got < cap; i++) {
        struct takeover_fd *t = &takeover_pool.fds[i];
        if (!takeover_addr_eq(&t->addr, &want)) {
            continue;
        }
        if (idx++ % takeover_pool.num_workers == n && t->fd >= 0) {
            out[got++] = t->fd;
            t->fd = -1;
        }
    }
    uv_mutex_unlock(&takeover_pool.lock);
    return got;
}

size_t takeover_release_unclaimed(void)
{
    size_t n = 0;
    if (!takeover_pool.lock_ready) {
        return 0;
    }
    uv_mutex_lock(&takeover_pool.lock);
    for (size_t i = 0; i < takeover_pool.num; i++) {
        if (takeover_pool.fds[i].fd >= 0) {
            close(takeover_pool.fds[i].fd);
            takeover_pool.fds[i].fd = -1;
            n++;
        }
    }
    free(takeover_pool.fds);
    takeover_pool.fds = NULL;
    takeover_pool.num = 0;
    uv_mutex_unlock(&takeover_pool.lock);
    return n;
}

int takeover_ready(int conn)
{
    int r = takeover_send(conn, "READY\n", NULL, 0);
    close(conn);
    return r;
}

/* --- the running process's side ------------------------------------------- */

struct takeover_server {
    uv_poll_t poll;              /* on the listening unix socket; poll.data = this */
    int fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t dev;                   /* the socket file as bound: removed at close */
    ino_t ino;                   /* only if it is still this one */
    takeover_fds_cb fds;
    takeover_done_cb done;
    void *ctx;
    int handed_over;             /* a new process took the sockets */
};

/* takeover_hand_over runs one exchange with a new process on conn.
 * Returns 0 when it said READY. */
static int takeover_hand_over(struct takeover_server *t, int conn)
{
    char text[TAKEOVER_MSG_LEN];
    size_t k;
    int dummy[1];
    int *fds = calloc(TAKEOVER_MAX_FDS, sizeof(*fds));
    if (fds == NULL) {
        return -1;
    }
    if (takeover_recv(conn, text, sizeof(text), dummy, 0, &k) != 0 ||
        strcmp(text, "TAKEOVER\n") != 0) {
        free(fds);
        return -1;
    }
    size_t n = t->fds(t->ctx, fds, TAKEOVER_MAX_FDS);
    for (size_t i = 0; i < n; i += TAKEOVER_FDS_PER_MSG) {
        size_t m = n - i < TAKEOVER_FDS_PER_MSG ? n - i : TAKEOVER_FDS_PER_MSG;
        snprintf(text, sizeof(text), "FDS %zu\n", m);
        if (takeover_send(conn, text, fds + i, m) != 0) {
            free(fds);
            return -1;
        }
    }
    free(fds);
    if (takeover_send(conn, "END\n", NULL, 0) != 0) {
        return -1;
    }
    log_msg(LOG_INFO, "takeover: %zu listening sockets sent; waiting for the new process", n);
    /* our copies stay open and polled until the new process polls them */
    if (takeover_recv(conn, text, sizeof(text), dummy, 0, &k) != 0 ||
        strcmp(text, "READY\n") != 0) {
        return -1;
    }
    return 0;
}

static void takeover_on_poll(uv_poll_t *p, int status, int events)
{
    struct takeover_server *t = p->data;
    if (status != 0 || !(events & UV_READABLE) || t->handed_over) {
        return;
    }
    int conn = accept(t->fd, NULL, NULL);
    if (conn < 0) {
        return;
    }
    (void)fcntl(conn, F_SETFD, FD_CLOEXEC);
    /* one exchange at a time, on this loop: it only handles signals, and each
       step is bounded by TAKEOVER_IO_TIMEOUT_MS */
    int r = takeover_hand_over(t, conn);
    close(conn);
    if (r != 0) {
        log_msg(LOG_WARNING, "takeover: the new process did not take over; serving on");
        return;
    }
    t->handed_over = 1;
    log_msg(LOG_INFO, "takeover: the new process polls the listening sockets; draining");
    t->done(t->ctx);
}

struct takeover_server *takeover_serve(char *err, size_t err_len, uv_loop_t *loop,
                                       const char *path, takeover_fds_cb fds,
                                       takeover_done_cb done, void *ctx)
{
    struct sockaddr_un sa;
    struct stat st;
    struct takeover_server *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (takeover_unix_addr(&sa, path) != 0) {
        snprintf(err, err_len, "%s: path too long for a unix socket", path);
        free(t);
        return NULL;
    }
    t->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (t->fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        free(t);
        return NULL;
    }
    /* a socket file left there (a crash, or the process we took over) */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        unlink(path);
    }
    if (bind(t->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(path, 0600) != 0 ||
        listen(t->fd, TAKEOVER_BACKLOG) != 0 || stat(path, &st) != 0) {
        snprintf(err, err_len, "cannot listen on %s: %s", path, strerror(errno));
        close(t->fd);
        free(t);
        return NULL;
    }
    t->dev = st.st_dev;
    t->ino = st.st_ino;
    snprintf(t->path, sizeof(t->path), "%s", path);
    t->fds = fds;
    t->done = done;
    t->ctx = ctx;
    uv_poll_init(loop, &t->poll, t->fd);
    t->poll.data = t;
    uv_poll_start(&t->poll, UV_READABLE, takeover_on_poll);
    return t;
}

static void takeover_on_close(uv_handle_t *h)
{
    struct takeover_server *t = h->data;
    close(t->fd);
    free(t);
}

void takeover_server_close(struct takeover_server *t)
{
    struct stat st;
    if (t == NULL) {
        return;
    }
    /* after a hand-over the path is the new process's to serve */
    if (!t->handed_over && stat(t->path, &st) == 0 && st.st_dev == t->dev && st.st_ino == t->ino) {
        unlink(t->path);
    }
    uv_close((uv_handle_t *)&t->poll, takeover_on_close);
}

int takeover_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    socklen_t len;
    if (path == NULL || path[0] == '\0') {
        return 0;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n >= sizeof(sa.sun_path)) {
        return -1;
    }
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@') {
        sa.sun_path[0] = '\0'; /* abstract namespace */
    }
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        return -1;
    }
    ssize_t r = sendto(s, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    close(s);
    return r == (ssize_t)strlen(state) ? 0 : -1;
}
