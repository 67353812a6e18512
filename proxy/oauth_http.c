/* oauth_http: a small non-blocking HTTP/1.1 client (see oauth_http.h). */
#define _GNU_SOURCE /* getaddrinfo_a (glibc) */
#include "proxy/oauth_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/base64.h>
#include <openssl/mem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/http_answer.h"
#include "common/secret.h"

#define OAUTH_HTTP_MAX_HOST_LEN 255

#define OAUTH_HTTP_RESOLVE_POLL_MS 5 /* how often a name resolution is looked at */
#define OAUTH_HTTP_MAX_ORPHANS 256   /* resolutions given up but still running */

enum oauth_http_state {
    OH_RESOLVE,   /* getaddrinfo_a in progress */
    OH_CONNECT,   /* connect(2) in progress */
    OH_TLS,       /* handshake */
    OH_SEND,      /* writing the request */
    OH_RECV,      /* reading the answer */
    OH_DONE,
};

/* A name resolution (glibc's getaddrinfo_a on a thread of its own): its own
 * allocation, because one still running when its request ends cannot be
 * freed before it finishes (oauth_http_reap). */
struct oauth_http_dns {
    struct gaicb cb;
    struct addrinfo hints;
    char host[OAUTH_HTTP_MAX_HOST_LEN + 1];
    char port[8];
};

static struct oauth_http_dns *oauth_http_orphans[OAUTH_HTTP_MAX_ORPHANS];
static size_t oauth_http_num_orphans;

struct oauth_http_req {
    enum oauth_http_state state;
    struct oauth_http_dns *dns;  /* with OH_RESOLVE */
    int tls;
    int fd;
    SSL *ssl;                   /* https only */
    short want;                 /* POLLIN / POLLOUT */
    uint64_t deadline_ms;
    char *req;                  /* the request, credentials and form inside: wiped */
    size_t req_len, req_off, req_cap;
    char *in;                   /* what was read: head and body; wiped */
    size_t in_len, in_cap;
    int status;                 /* HTTP status once parsed; 0 on failure */
    char *body;                 /* points into in (decoded in place when chunked) */
    size_t body_len;
    const char *err;            /* fixed reason on failure */
};

static void oauth_http_fail(struct oauth_http_req *r, const char *why)
{
    r->state = OH_DONE;
    r->status = 0;
    r->err = why;
}

/* oauth_http_parse_url splits http[s]://host[:port][/path]. */
static int oauth_http_parse_url(const char *url, int *out_tls, char *host, char *port,
                                const char **out_path)
{
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        *out_tls = 0;
        p = url + 7;
        snprintf(port, 8, "80");
    } else if (strncasecmp(url, "https://", 8) == 0) {
        *out_tls = 1;
        p = url + 8;
        snprintf(port, 8, "443");
    } else {
        return -1;
    }
    const char *end = p + strcspn(p, "/?#");
    const char *hs = p, *he;
    if (memchr(p, '@', (size_t)(end - p)) != NULL) {
        return -1; /* credentials belong in client_id/client_secret */
    }
    if (*p == '[') {
        he = memchr(p, ']', (size_t)(end - p));
        if (he == NULL) {
            return -1;
        }
        hs = p + 1;
        p = he + 1;
    } else {
        he = memchr(p, ':', (size_t)(end - p));
        if (he == NULL) {
            he = end;
        }
        p = he;
    }
    if (he == hs || (size_t)(he - hs) > OAUTH_HTTP_MAX_HOST_LEN) {
        return -1;
    }
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';
    if (p < end && *p == ':') {
        size_t n = (size_t)(end - p - 1);
        if (n == 0 || n > 5 || strspn(p + 1, "0123456789") < n) {
            return -1;
        }
        memcpy(port, p + 1, n);
        port[n] = '\0';
    } else if (p != end) {
        return -1;
    }
    *out_path = *end == '/' ? end : "/";
    return 0;
}

/* oauth_http_build writes the request into r->req. */
static int oauth_http_build(struct oauth_http_req *r, const struct oauth_http_params *p,
                            const char *host, const char *path)
{
    char *auth = NULL;
    size_t auth_len = 0;
    if (p->user != NULL) {
        size_t ulen = strlen(p->user), plen = strlen(p->password != NULL ? p->password : "");
        char *raw = malloc(ulen + plen + 2);
        size_t b64_len = 0;
        if (raw == NULL || !EVP_EncodedLength(&b64_len, ulen + plen + 1) ||
            (auth = malloc(b64_len)) == NULL) {
            free(raw);
            return -1;
        }
        snprintf(raw, ulen + plen + 2, "%s:%s", p->user, p->password != NULL ? p->password : "");
        auth_len = EVP_EncodeBlock((uint8_t *)auth, (const uint8_t *)raw, ulen + plen + 1);
        secret_free(raw, ulen + plen + 2);
    }
    r->req_cap = strlen(path) + strlen(host) + auth_len + p->form_len +
                 strlen(p->user_agent != NULL ? p->user_agent : "") + 256;
    r->req = malloc(r->req_cap);
    if (r->req == NULL) {
        secret_free(auth, auth_len + 1);
        return -1;
    }
    int n = snprintf(r->req, r->req_cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: application/json\r\n"
                     "Connection: close\r\n%s%s%s",
                     p->form != NULL ? "POST" : "GET", path, host,
                     p->user_agent != NULL ? p->user_agent : "imapmux",
                     auth != NULL ? "Authorization: Basic " : "", auth != NULL ? auth : "",
                     auth != NULL ? "\r\n" : "");
    secret_free(auth, auth_len + 1);
    if (n < 0 || (size_t)n >= r->req_cap) {
        return -1;
    }
    r->req_len = (size_t)n;
    if (p->form != NULL) {
        n = snprintf(r->req + r->req_len, r->req_cap - r->req_len,
                     "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %zu\r\n\r\n",
                     p->form_len);
        if (n < 0 || (size_t)n + p->form_len >= r->req_cap - r->req_len) {
            return -1;
        }
        r->req_len += (size_t)n;
        memcpy(r->req + r->req_len, p->form, p->form_len);
        r->req_len += p->form_len;
    } else {
        memcpy(r->req + r->req_len, "\r\n", 2);
        r->req_len += 2;
    }
    return 0;
}

struct oauth_http_req *oauth_http_start(const struct oauth_http_params *p, uint64_t now_ms,
                                        const char **out_err)
{
    char host[OAUTH_HTTP_MAX_HOST_LEN + 1], port[8];
    const char *path = NULL;
    int tls = 0;

    *out_err = NULL;
    if (oauth_http_parse_url(p->url, &tls, host, port, &path) != 0) {
        *out_err = "unusable URL";
        return NULL;
    }
    if (tls && p->tls_ctx == NULL) {
        *out_err = "no TLS context";
        return NULL;
    }
    struct oauth_http_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        *out_err = "out of memory";
        return NULL;
    }
    r->fd = -1;
    r->deadline_ms = now_ms + p->timeout_ms;
    if (oauth_http_build(r, p, host, path) != 0) {
        oauth_http_free(r);
        *out_err = "out of memory";
        return NULL;
    }
    r->tls = tls;
    if (tls) {
        r->ssl = SSL_new(p->tls_ctx);
        unsigned char ip[16];
        int is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
        X509_VERIFY_PARAM *param = r->ssl != NULL ? SSL_get0_param(r->ssl) : NULL;
        if (r->ssl == NULL ||
            (is_ip ? !X509_VERIFY_PARAM_set1_ip_asc(param, host)
                   : (!SSL_set_tlsext_host_name(r->ssl, host) ||
                      !X509_VERIFY_PARAM_set1_host(param, host, strlen(host))))) {
            oauth_http_free(r);
            *out_err = "out of memory";
            return NULL;
        }
        SSL_set_connect_state(r->ssl);
    }
    /* resolved on a thread of glibc's: a slow resolver must not stop the
       oauth thread's other work */
    r->dns = calloc(1, sizeof(*r->dns));
    if (r->dns == NULL) {
        oauth_http_free(r);
        *out_err = "out of memory";
        return NULL;
    }
    snprintf(r->dns->host, sizeof(r->dns->host), "%s", host);
    snprintf(r->dns->port, sizeof(r->dns->port), "%s", port);
    r->dns->hints.ai_family = AF_UNSPEC;
    r->dns->hints.ai_socktype = SOCK_STREAM;
    r->dns->cb.ar_name = r->dns->host;
    r->dns->cb.ar_service = r->dns->port;
    r->dns->cb.ar_request = &r->dns->hints;
    struct gaicb *list[1] = {&r->dns->cb};
    if (getaddrinfo_a(GAI_NOWAIT, list, 1, NULL) != 0) {
        free(r->dns);
        r->dns = NULL;
        oauth_http_free(r);
        *out_err = "cannot resolve";
        return NULL;
    }
    r->state = OH_RESOLVE;
    r->want = 0;
    return r;
}

/* oauth_http_connect: the name is resolved; connect to its first address. */
static int oauth_http_connect(struct oauth_http_req *r)
{
    struct addrinfo *res = r->dns->cb.ar_result;
    int e = gai_error(&r->dns->cb);
    if (e != 0 || res == NULL) {
        oauth_http_fail(r, "host not resolved");
        return 1;
    }
    r->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int bad = r->fd < 0 ||
              (connect(r->fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS);
    freeaddrinfo(res);
    free(r->dns);
    r->dns = NULL;
    if (bad) {
        oauth_http_fail(r, "cannot connect");
        return 1;
    }
    if (r->ssl != NULL && !SSL_set_fd(r->ssl, r->fd)) {
        oauth_http_fail(r, "out of memory");
        return 1;
    }
    r->state = OH_CONNECT;
    r->want = POLLOUT;
    return 0;
}

void oauth_http_reap(int wait)
{
    size_t k = 0;
    for (size_t i = 0; i < oauth_http_num_orphans; i++) {
        struct oauth_http_dns *d = oauth_http_orphans[i];
        if (wait) {
            const struct gaicb *list[1] = {&d->cb};
            while (gai_error(&d->cb) == EAI_INPROGRESS) {
                gai_suspend(list, 1, NULL);
            }
        }
        if (gai_error(&d->cb) == EAI_INPROGRESS) {
            oauth_http_orphans[k++] = d;
            continue;
        }
        if (d->cb.ar_result != NULL) {
            freeaddrinfo(d->cb.ar_result);
        }
        free(d);
    }
    oauth_http_num_orphans = k;
}

/* oauth_http_drop_dns ends r's resolution: freed now, or left to
 * oauth_http_reap while glibc still runs it. */
static void oauth_http_drop_dns(struct oauth_http_req *r)
{
    struct oauth_http_dns *d = r->dns;
    r->dns = NULL;
    if (d == NULL) {
        return;
    }
    if (gai_error(&d->cb) == EAI_INPROGRESS && gai_cancel(&d->cb) == EAI_NOTCANCELED) {
        if (oauth_http_num_orphans == OAUTH_HTTP_MAX_ORPHANS) {
            oauth_http_reap(1); /* bounded memory before all else */
        }
        oauth_http_orphans[oauth_http_num_orphans++] = d;
        return;
    }
    if (gai_error(&d->cb) == 0 && d->cb.ar_result != NULL) {
        freeaddrinfo(d->cb.ar_result);
    }
    free(d);
}

uint64_t oauth_http_poll(const struct oauth_http_req *r, struct pollfd *pfd, uint64_t now_ms)
{
    pfd->fd = r->state == OH_DONE || r->state == OH_RESOLVE ? -1 : r->fd;
    pfd->events = r->want;
    pfd->revents = 0;
    if (r->state == OH_RESOLVE && now_ms + OAUTH_HTTP_RESOLVE_POLL_MS < r->deadline_ms) {
        return now_ms + OAUTH_HTTP_RESOLVE_POLL_MS;
    }
    return r->deadline_ms;
}

/* oauth_http_ssl_wait maps an SSL result to a wait, or fails r. */
static int oauth_http_ssl_wait(struct oauth_http_req *r, int ret, const char *why)
{
    switch (SSL_get_error(r->ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        r->want = POLLIN;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        r->want = POLLOUT;
        return 0;
    default:
        oauth_http_fail(r, why);
        return -1;
    }
}

/* oauth_http_parse looks at what was read; returns 1 when r is done. */
static int oauth_http_parse(struct oauth_http_req *r, int eof)
{
    struct http_answer a;
    char empty[1] = "";
    switch (http_answer_parse(&a, r->in != NULL ? r->in : empty, r->in_len, eof)) {
    case HTTP_ANSWER_MORE:
        return 0;
    case HTTP_ANSWER_ERROR:
        oauth_http_fail(r, a.error);
        return 1;
    case HTTP_ANSWER_DONE:
        break;
    }
    r->body = a.body;
    r->body_len = a.body_len;
    r->status = a.status;
    r->state = OH_DONE;
    return 1;
}

/* oauth_http_read takes what can be read; returns 1 when done. */
static int oauth_http_read(struct oauth_http_req *r)
{
    for (;;) {
        if (r->in_cap - r->in_len < 4096 + 1) {
            size_t cap = r->in_cap > 0 ? r->in_cap * 2 : 8192;
            if (cap > OAUTH_HTTP_MAX_BODY_LEN + HTTP_ANSWER_MAX_HEAD_LEN + 8192) {
                oauth_http_fail(r, "HTTP answer too long");
                return 1;
            }
            char *n = secret_grow(r->in, r->in_cap, cap);
            if (n == NULL) {
                oauth_http_fail(r, "out of memory");
                return 1;
            }
            r->in = n;
            r->in_cap = cap;
        }
        size_t room = r->in_cap - r->in_len - 1;
        long got;
        if (r->ssl != NULL) {
            int n = SSL_read(r->ssl, r->in + r->in_len, (int)room);
            if (n <= 0) {
                int e = SSL_get_error(r->ssl, n);
                if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && n == 0)) {
                    return oauth_http_parse(r, 1);
                }
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                    r->want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
                    return oauth_http_parse(r, 0);
                }
                oauth_http_fail(r, "TLS read failed");
                return 1;
            }
            got = n;
        } else {
            ssize_t n = read(r->fd, r->in + r->in_len, room);
            if (n == 0) {
                return oauth_http_parse(r, 1);
            }
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    r->want = POLLIN;
                    return oauth_http_parse(r, 0);
                }
                oauth_http_fail(r, "read failed");
                return 1;
            }
            got = n;
        }
        r->in_len += (size_t)got;
        r->in[r->in_len] = '\0';
    }
}

int oauth_http_step(struct oauth_http_req *r, short revents, uint64_t now_ms)
{
    if (r->state == OH_DONE) {
        return 1;
    }
    if (now_ms >= r->deadline_ms) {
        oauth_http_fail(r, r->state == OH_RESOLVE ? "host name resolution timed out"
                                                  : "HTTP request timed out");
        return 1;
    }
    if (r->state == OH_RESOLVE) {
        if (gai_error(&r->dns->cb) == EAI_INPROGRESS) {
            return 0;
        }
        return oauth_http_connect(r);
    }
    if (revents == 0) {
        return 0;
    }
    if (r->state == OH_CONNECT) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            oauth_http_fail(r, "connection refused or failed");
            return 1;
        }
        r->state = r->ssl != NULL ? OH_TLS : OH_SEND;
    }
    if (r->state == OH_TLS) {
        int ret = SSL_do_handshake(r->ssl);
        if (ret != 1) {
            return oauth_http_ssl_wait(r, ret, "TLS handshake failed (certificate?)") != 0;
        }
        r->state = OH_SEND;
    }
    if (r->state == OH_SEND) {
        while (r->req_off < r->req_len) {
            size_t left = r->req_len - r->req_off;
            if (r->ssl != NULL) {
                int n = SSL_write(r->ssl, r->req + r->req_off, (int)left);
                if (n <= 0) {
                    return oauth_http_ssl_wait(r, n, "TLS write failed") != 0;
                }
                r->req_off += (size_t)n;
            } else {
                ssize_t n = send(r->fd, r->req + r->req_off, left, MSG_NOSIGNAL);
                if (n < 0) {
                    if (errno == EAGAIN || errno == EINTR) {
                        r->want = POLLOUT;
                        return 0;
                    }
                    oauth_http_fail(r, "write failed");
                    return 1;
                }
                r->req_off += (size_t)n;
            }
        }
        /* sent: the credentials and the form go at once */
        secret_free(r->req, r->req_cap);
        r->req = NULL;
        r->state = OH_RECV;
        r->want = POLLIN;
    }
    return oauth_http_read(r);
}

int oauth_http_status(const struct oauth_http_req *r, const char **out_body, size_t *out_len,
                      const char **out_err)
{
    *out_body = r->body != NULL ? r->body : "";
    *out_len = r->body != NULL ? r->body_len : 0;
    *out_err = r->err != NULL ? r->err : (r->status == 0 ? "no answer" : "ok");
    return r->status;
}

void oauth_http_free(struct oauth_http_req *r)
{
    if (r == NULL) {
        return;
    }
    oauth_http_drop_dns(r);
    SSL_free(r->ssl);
    if (r->fd >= 0) {
        close(r->fd);
    }
    secret_free(r->req, r->req_cap);
    secret_free(r->in, r->in_cap);
    free(r);
}
