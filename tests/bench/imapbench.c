/* imapbench: load generator for the IMAP proxy benchmark.
 *
 * One single-threaded libuv loop drives many IMAP client connections over
 * plain TCP or implicit TLS (BoringSSL through memory BIOs; every handshake
 * is a full one, no session is ever offered).  It runs one scenario and
 * prints exactly one JSON line of results on stdout.
 *
 *   imapbench --host 127.0.0.1 --port N --scenario S [--tls] [--cafile F]
 *             [--user U --password P] [--count N] [--concurrency C]
 *             [--max-seconds T] [--label L]
 *
 * Scenarios: handshake, churn, bulk, latency, idle-preauth, idle-login.
 * The idle scenarios print "READY <established> <failed>" once all
 * connections are set up, then hold them until stdin has a line or ends.
 *
 * Exit: 0 all operations succeeded, 1 some failed, 2 usage, 3 time limit. */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <uv.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define BENCH_LINE_MAX (64 * 1024)    /* longest response line accepted (with CRLF) */
#define BENCH_RAMP 200                /* idle scenarios: set-ups in flight at once */
#define BENCH_TLS_CHUNK 16384
#define BENCH_MAX_ERRORS_SHOWN 5

enum bench_scenario {
    SC_HANDSHAKE, SC_CHURN, SC_BULK, SC_LATENCY, SC_IDLE_PREAUTH, SC_IDLE_LOGIN, SC_COUNT_
};

static const char *const bench_scenario_names[SC_COUNT_] = {
    "handshake", "churn", "bulk", "latency", "idle-preauth", "idle-login",
};

enum bench_state {
    ST_CONNECT, ST_TLS, ST_GREETING, ST_LOGIN, ST_SELECT, ST_WORK, ST_IDLE, ST_HOLD, ST_LOGOUT,
    ST_DONE,
};

static const char *const bench_state_names[] = {
    "connecting", "in TLS handshake", "waiting for greeting", "waiting for LOGIN reply",
    "waiting for SELECT reply", "waiting for command reply", "waiting for IDLE continuation",
    "holding", "waiting for LOGOUT reply", "done",
};

struct bench_conn {
    uv_tcp_t tcp;                 /* tcp.data = this */
    uv_connect_t creq;            /* creq.data = this */
    struct bench_conn *prev, *next;
    long idx;
    enum bench_state state;
    SSL *ssl;
    BIO *rbio, *wbio;             /* owned by ssl */
    char *line;                   /* current (partial) response line */
    size_t line_len, line_cap;
    uint64_t lit_left;            /* literal bytes still to skip */
    uint64_t t_op;                /* start of the operation (connect) */
    uint64_t t_cmd;               /* when the current command was sent */
    long n;                       /* FETCH / NOOP commands completed */
    char tag[24];                 /* tag of the command awaiting its reply */
    unsigned closing : 1, failed : 1, established : 1;
};

struct bench_wreq {
    uv_write_t req;
    char data[];
};

static struct {
    uv_loop_t loop;
    /* options */
    const char *host, *user, *password, *label, *cafile;
    int port, tls;
    enum bench_scenario scenario;
    long count, concurrency;
    double max_seconds;
    struct sockaddr_storage addr;
    SSL_CTX *ctx;
    /* run state */
    uv_timer_t timer;
    uv_async_t stdin_async;
    pthread_mutex_t stdin_mu;
    int stdin_started, stdin_closed;
    struct bench_conn *conns;
    long started, active, in_flight, est_alive, next_idx;
    long ok, errors;
    int ready, stopping, timed_out;
    uint64_t bytes;
    uint64_t *lat;                /* latency samples, ns */
    size_t nlat, caplat;
    uint64_t t0, t_end;
    int errors_shown;
    char first_error[512];
} g = { .stdin_mu = PTHREAD_MUTEX_INITIALIZER };

static void bench_close(struct bench_conn *c);
static void bench_pump(void);
static void bench_finish(int timed_out);
static void bench_line(struct bench_conn *c, char *line, size_t len);

/* ---- bookkeeping ------------------------------------------------------- */

static void bench_record(uint64_t ns)
{
    if (g.nlat == g.caplat) {
        size_t cap = g.caplat ? g.caplat * 2 : 1024;
        uint64_t *p = realloc(g.lat, cap * sizeof *p);
        if (p == NULL)
            return;               /* drop the sample rather than fail the run */
        g.lat = p;
        g.caplat = cap;
    }
    g.lat[g.nlat++] = ns;
}

static int bench_is_idle(void)
{
    return g.scenario == SC_IDLE_PREAUTH || g.scenario == SC_IDLE_LOGIN;
}

/* Counts an error for c (once), reports it and closes c.  Errors that
 * happen while everything is being shut down are not counted. */
static void __attribute__((format(printf, 2, 3))) bench_fail(struct bench_conn *c, const char *fmt, ...)
{
    if (c->closing)
        return;
    if (!g.stopping) {
        char msg[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        g.errors++;
        c->failed = 1;
        if (g.first_error[0] == '\0')
            snprintf(g.first_error, sizeof g.first_error, "conn %ld: %s", c->idx, msg);
        if (g.errors_shown < BENCH_MAX_ERRORS_SHOWN) {
            g.errors_shown++;
            fprintf(stderr, "imapbench: conn %ld: %s\n", c->idx, msg);
        }
    }
    bench_close(c);
}

/* ---- connection lifetime ----------------------------------------------- */

static void bench_on_close(uv_handle_t *h)
{
    struct bench_conn *c = h->data;

    if (c->prev)
        c->prev->next = c->next;
    else
        g.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (bench_is_idle()) {
        if (!c->established)
            g.in_flight--;
        else if (c->failed)
            g.est_alive--;
    }
    g.active--;
    if (c->ssl)
        SSL_free(c->ssl);
    free(c->line);
    free(c);
    bench_pump();
}

static void bench_close(struct bench_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->state = ST_DONE;
    uv_close((uv_handle_t *)&c->tcp, bench_on_close);
}

static void bench_on_write(uv_write_t *req, int status)
{
    struct bench_conn *c = req->handle->data;

    free(req);                    /* req is the first member of bench_wreq */
    if (status < 0 && status != UV_ECANCELED)
        bench_fail(c, "write: %s", uv_strerror(status));
}

static void bench_sock_write(struct bench_conn *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int r;

    if (c->closing)
        return;
    r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == UV_EAGAIN || r == UV_ENOSYS)
        r = 0;
    if (r < 0) {
        bench_fail(c, "write: %s", uv_strerror(r));
        return;
    }
    if ((size_t)r == len)
        return;
    struct bench_wreq *w = malloc(sizeof *w + (len - (size_t)r));
    if (w == NULL) {
        bench_fail(c, "out of memory");
        return;
    }
    memcpy(w->data, data + r, len - (size_t)r);
    b = uv_buf_init(w->data, (unsigned)(len - (size_t)r));
    r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, bench_on_write);
    if (r < 0) {
        free(w);
        bench_fail(c, "write: %s", uv_strerror(r));
    }
}

/* Sends whatever the TLS engine has produced. */
static void bench_tls_flush(struct bench_conn *c)
{
    char buf[BENCH_TLS_CHUNK];

    while (!c->closing && BIO_pending(c->wbio) > 0) {
        int n = BIO_read(c->wbio, buf, sizeof buf);
        if (n <= 0)
            break;
        bench_sock_write(c, buf, (size_t)n);
    }
}

static void bench_tls_error(struct bench_conn *c, const char *what, int sslerr)
{
    char es[256];
    unsigned long code = ERR_get_error();

    if (code != 0)
        ERR_error_string_n(code, es, sizeof es);
    else if (sslerr == SSL_ERROR_SYSCALL)
        snprintf(es, sizeof es, "unexpected EOF or syscall error");
    else
        snprintf(es, sizeof es, "SSL error %d", sslerr);
    ERR_clear_error();
    if (g.cafile != NULL && c->ssl != NULL) {
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK) {
            bench_fail(c, "%s: %s (verify: %s)", what, es, X509_verify_cert_error_string(v));
            return;
        }
    }
    bench_fail(c, "%s: %s", what, es);
}

static void bench_send(struct bench_conn *c, const char *data, size_t len)
{
    if (c->closing)
        return;
    if (c->ssl == NULL) {
        bench_sock_write(c, data, len);
        return;
    }
    int r = SSL_write(c->ssl, data, (int)len);
    int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    bench_tls_flush(c);
    if (r <= 0)
        bench_tls_error(c, "TLS write failed", e);
}

/* Sends "<tag> <command>\r\n" and remembers the tag and the time. */
static void __attribute__((format(printf, 3, 4))) bench_cmd(struct bench_conn *c, const char *tag, const char *fmt, ...)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s ", tag);
    va_list ap;

    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n + 2 >= sizeof buf) {
        bench_fail(c, "command too long");
        return;
    }
    buf[n++] = '\r';
    buf[n++] = '\n';
    snprintf(c->tag, sizeof c->tag, "%s", tag);
    c->t_cmd = uv_hrtime();
    bench_send(c, buf, (size_t)n);
}

/* Writes s as an IMAP quoted string into dst. */
static void bench_quote(char *dst, size_t cap, const char *s)
{
    size_t o = 0;

    dst[o++] = '"';
    for (; *s && o + 3 < cap; s++) {
        if (*s == '"' || *s == '\\')
            dst[o++] = '\\';
        dst[o++] = *s;
    }
    dst[o++] = '"';
    dst[o] = '\0';
}

/* ---- scenario steps ---------------------------------------------------- */

static void bench_established(struct bench_conn *c)
{
    c->established = 1;
    c->state = ST_HOLD;
    g.in_flight--;
    g.est_alive++;
    bench_pump();
}

static void bench_logout(struct bench_conn *c)
{
    c->state = ST_LOGOUT;
    bench_cmd(c, "c", "LOGOUT");
}

static void bench_next_work(struct bench_conn *c)
{
    char tag[24];

    if (c->n >= g.count) {
        bench_logout(c);
        return;
    }
    c->state = ST_WORK;
    if (g.scenario == SC_BULK) {
        snprintf(tag, sizeof tag, "f%ld", c->n + 1);
        bench_cmd(c, tag, "FETCH 1:* BODY.PEEK[]");
    } else {
        snprintf(tag, sizeof tag, "n%ld", c->n + 1);
        bench_cmd(c, tag, "NOOP");
    }
}

static void bench_greeted(struct bench_conn *c)
{
    char u[300], p[300];

    switch (g.scenario) {
    case SC_HANDSHAKE:
        g.ok++;
        bench_record(uv_hrtime() - c->t_op);
        bench_close(c);
        return;
    case SC_IDLE_PREAUTH:
        bench_established(c);
        return;
    default:
        bench_quote(u, sizeof u, g.user);
        bench_quote(p, sizeof p, g.password);
        c->state = ST_LOGIN;
        bench_cmd(c, "a", "LOGIN %s %s", u, p);
    }
}

static void bench_tagged_ok(struct bench_conn *c)
{
    switch (c->state) {
    case ST_LOGIN:
        if (g.scenario == SC_LATENCY) {
            bench_next_work(c);
        } else {
            c->state = ST_SELECT;
            bench_cmd(c, "b", "SELECT INBOX");
        }
        break;
    case ST_SELECT:
        if (g.scenario == SC_CHURN) {
            bench_logout(c);
        } else if (g.scenario == SC_IDLE_LOGIN) {
            c->state = ST_IDLE;
            bench_cmd(c, "i", "IDLE");
        } else {
            bench_next_work(c);
        }
        break;
    case ST_WORK:
        bench_record(uv_hrtime() - c->t_cmd);
        g.ok++;
        c->n++;
        bench_next_work(c);
        break;
    case ST_LOGOUT:
        if (g.scenario == SC_CHURN) {
            g.ok++;
            bench_record(uv_hrtime() - c->t_op);
        }
        bench_close(c);
        break;
    case ST_IDLE:
        bench_fail(c, "IDLE ended without a continuation");
        break;
    default:
        break;
    }
}

static void bench_line(struct bench_conn *c, char *line, size_t len)
{
    size_t tl;

    if (c->state == ST_GREETING) {
        if (strncmp(line, "* OK", 4) == 0 || strncmp(line, "* PREAUTH", 9) == 0)
            bench_greeted(c);
        else
            bench_fail(c, "bad greeting: %.200s", line);
        return;
    }
    if (c->state == ST_HOLD)
        return;                   /* idle: read and discard */
    if (line[0] == '*') {
        if (c->state != ST_LOGOUT && strncmp(line, "* BYE", 5) == 0)
            bench_fail(c, "server BYE: %.200s", line);
        return;
    }
    if (line[0] == '+') {
        if (c->state == ST_IDLE)
            bench_established(c);
        return;
    }
    tl = strlen(c->tag);
    if (tl == 0 || len <= tl || strncmp(line, c->tag, tl) != 0 || line[tl] != ' ')
        return;                   /* not the reply we wait for */
    const char *st = line + tl + 1;
    if (strncmp(st, "OK", 2) == 0 && (st[2] == ' ' || st[2] == '\0')) {
        bench_tagged_ok(c);
        return;
    }
    size_t wl = strcspn(st, " ");
    bench_fail(c, "tagged %.*s: %.200s", (int)(wl > 8 ? 8 : wl), st, line);
}

/* "...{123}" or "...{123+}" at the end of a line: the literal's size, else 0. */
static uint64_t bench_literal(const char *line, size_t len)
{
    size_t i;
    uint64_t v = 0, mul = 1;

    if (len < 3 || line[len - 1] != '}')
        return 0;
    i = len - 1;
    if (line[i - 1] == '+')
        i--;
    if (i == 0 || line[i - 1] < '0' || line[i - 1] > '9')
        return 0;
    while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9') {
        if (mul > 100000000000000ULL)
            return 0;             /* absurd: not treated as a literal */
        v += (uint64_t)(line[i - 1] - '0') * mul;
        mul *= 10;
        i--;
    }
    if (i == 0 || line[i - 1] != '{')
        return 0;
    return v;
}

/* Splits plaintext into lines and skips literals by length. */
static void bench_feed(struct bench_conn *c, const char *p, size_t n)
{
    while (n > 0 && !c->closing) {
        if (c->lit_left > 0) {
            size_t k = n < c->lit_left ? n : (size_t)c->lit_left;
            c->lit_left -= k;
            g.bytes += k;
            p += k;
            n -= k;
            continue;
        }
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) + 1 : n;
        if (c->line_len + take > BENCH_LINE_MAX) {
            bench_fail(c, "response line longer than %d bytes", BENCH_LINE_MAX);
            return;
        }
        if (c->line_len + take > c->line_cap) {
            size_t cap = c->line_cap ? c->line_cap : 256;
            while (cap < c->line_len + take)
                cap *= 2;
            if (cap > BENCH_LINE_MAX)
                cap = BENCH_LINE_MAX;
            char *nb = realloc(c->line, cap);
            if (nb == NULL) {
                bench_fail(c, "out of memory");
                return;
            }
            c->line = nb;
            c->line_cap = cap;
        }
        memcpy(c->line + c->line_len, p, take);
        c->line_len += take;
        p += take;
        n -= take;
        if (nl == NULL)
            break;
        size_t len = c->line_len - 1;
        if (len > 0 && c->line[len - 1] == '\r')
            len--;
        c->line[len] = '\0';
        c->line_len = 0;
        uint64_t lit = bench_literal(c->line, len);
        bench_line(c, c->line, len);
        c->lit_left = lit;
    }
}

static void bench_eof(struct bench_conn *c)
{
    bench_fail(c, "connection closed by server while %s", bench_state_names[c->state]);
}

static void bench_tls_input(struct bench_conn *c, const char *data, size_t len)
{
    static char plain[BENCH_TLS_CHUNK];
    int r, e;

    if (BIO_write(c->rbio, data, (int)len) != (int)len) {
        bench_fail(c, "TLS: BIO_write failed");
        return;
    }
    if (c->state == ST_TLS) {
        r = SSL_do_handshake(c->ssl);
        e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
        bench_tls_flush(c);
        if (c->closing)
            return;
        if (r != 1) {
            if (e != SSL_ERROR_WANT_READ)
                bench_tls_error(c, "TLS handshake failed", e);
            return;
        }
        c->state = ST_GREETING;
    }
    while (!c->closing) {
        r = SSL_read(c->ssl, plain, sizeof plain);
        e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
        bench_tls_flush(c);
        if (c->closing)
            return;
        if (r > 0) {
            bench_feed(c, plain, (size_t)r);
            continue;
        }
        if (e == SSL_ERROR_WANT_READ)
            return;
        if (e == SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            bench_eof(c);
            return;
        }
        bench_tls_error(c, "TLS read failed", e);
        return;
    }
}

static void bench_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char in[64 * 1024];

    (void)h;
    (void)suggested;
    buf->base = in;
    buf->len = sizeof in;
}

static void bench_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct bench_conn *c = s->data;

    if (c->closing || nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF)
            bench_eof(c);
        else
            bench_fail(c, "read: %s", uv_strerror((int)nread));
        return;
    }
    if (c->ssl != NULL)
        bench_tls_input(c, buf->base, (size_t)nread);
    else
        bench_feed(c, buf->base, (size_t)nread);
}

static void bench_on_connect(uv_connect_t *req, int status)
{
    struct bench_conn *c = req->data;
    int r;

    if (status < 0) {
        bench_fail(c, "connect: %s", uv_strerror(status));
        return;
    }
    if (c->closing)
        return;
    uv_tcp_nodelay(&c->tcp, 1);
    r = uv_read_start((uv_stream_t *)&c->tcp, bench_alloc, bench_on_read);
    if (r < 0) {
        bench_fail(c, "read start: %s", uv_strerror(r));
        return;
    }
    if (!g.tls) {
        c->state = ST_GREETING;
        return;
    }
    c->ssl = SSL_new(g.ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        bench_fail(c, "TLS: out of memory");
        return;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    SSL_set_tlsext_host_name(c->ssl, g.host);
    c->state = ST_TLS;
    r = SSL_do_handshake(c->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    bench_tls_flush(c);
    if (!c->closing && r != 1 && e != SSL_ERROR_WANT_READ)
        bench_tls_error(c, "TLS handshake failed", e);
}

static void bench_start_conn(void)
{
    struct bench_conn *c = calloc(1, sizeof *c);
    int r;

    g.started++;
    if (bench_is_idle())
        g.in_flight++;
    if (c == NULL) {
        /* no connection to close: count it here */
        g.errors++;
        if (bench_is_idle())
            g.in_flight--;
        if (g.first_error[0] == '\0')
            snprintf(g.first_error, sizeof g.first_error, "out of memory");
        return;
    }
    c->idx = g.next_idx++;
    c->state = ST_CONNECT;
    c->t_op = uv_hrtime();
    c->next = g.conns;
    if (g.conns)
        g.conns->prev = c;
    g.conns = c;
    g.active++;
    uv_tcp_init(&g.loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&g.addr, bench_on_connect);
    if (r < 0)
        bench_fail(c, "connect: %s", uv_strerror(r));
}

/* ---- idle scenarios: stdin watcher ------------------------------------- */

static void *bench_stdin_thread(void *arg)
{
    char buf[512];

    (void)arg;
    for (;;) {
        ssize_t r = read(STDIN_FILENO, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || memchr(buf, '\n', (size_t)r) != NULL)
            break;
    }
    pthread_mutex_lock(&g.stdin_mu);
    if (!g.stdin_closed)
        uv_async_send(&g.stdin_async);
    pthread_mutex_unlock(&g.stdin_mu);
    return NULL;
}

static void bench_on_stdin(uv_async_t *a)
{
    (void)a;
    bench_finish(0);
}

static void bench_ready(void)
{
    pthread_t th;
    pthread_attr_t attr;

    g.ready = 1;
    printf("READY %ld %ld\n", g.est_alive, g.errors);
    fflush(stdout);
    if (uv_async_init(&g.loop, &g.stdin_async, bench_on_stdin) != 0) {
        fprintf(stderr, "imapbench: cannot watch stdin; holding until --max-seconds\n");
        return;
    }
    g.stdin_started = 1;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, bench_stdin_thread, NULL) != 0)
        fprintf(stderr, "imapbench: cannot watch stdin; holding until --max-seconds\n");
    pthread_attr_destroy(&attr);
}

/* ---- driving the run --------------------------------------------------- */

static void bench_pump(void)
{
    if (g.stopping)
        return;
    switch (g.scenario) {
    case SC_HANDSHAKE:
    case SC_CHURN:
        while (!g.stopping && g.started < g.count && g.active < g.concurrency)
            bench_start_conn();
        if (!g.stopping && g.started >= g.count && g.active == 0)
            bench_finish(0);
        break;
    case SC_BULK:
    case SC_LATENCY:
        if (g.active == 0)
            bench_finish(0);
        break;
    case SC_IDLE_PREAUTH:
    case SC_IDLE_LOGIN:
        while (!g.stopping && g.started < g.concurrency && g.in_flight < BENCH_RAMP)
            bench_start_conn();
        if (!g.ready && g.started >= g.concurrency && g.in_flight == 0)
            bench_ready();
        break;
    default:
        break;
    }
}

static void bench_on_timeout(uv_timer_t *t)
{
    (void)t;
    bench_finish(1);
}

static void bench_finish(int timed_out)
{
    struct bench_conn *c;

    if (g.stopping)
        return;
    g.stopping = 1;
    g.timed_out = timed_out;
    g.t_end = uv_hrtime();
    uv_timer_stop(&g.timer);
    uv_close((uv_handle_t *)&g.timer, NULL);
    for (c = g.conns; c != NULL; c = c->next)
        bench_close(c);
    if (g.stdin_started) {
        pthread_mutex_lock(&g.stdin_mu);
        g.stdin_closed = 1;
        pthread_mutex_unlock(&g.stdin_mu);
        uv_close((uv_handle_t *)&g.stdin_async, NULL);
    }
}

/* ---- output ------------------------------------------------------------ */

static void bench_json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static int bench_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile, in microseconds. */
static double bench_pct(double p)
{
    size_t rank;

    if (g.nlat == 0)
        return 0.0;
    rank = (size_t)(p / 100.0 * (double)g.nlat + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > g.nlat)
        rank = g.nlat;
    return (double)g.lat[rank - 1] / 1000.0;
}

static void bench_print_json(void)
{
    struct rusage ru;
    double wall = (double)(g.t_end - g.t0) / 1e9;
    double cpu = 0.0;
    long ok = bench_is_idle() ? g.est_alive : g.ok;

    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    if (g.nlat > 0)
        qsort(g.lat, g.nlat, sizeof *g.lat, bench_cmp_u64);
    printf("{\"tool\":\"imapbench\",\"target\":");
    bench_json_str(g.label);
    printf(",\"scenario\":\"%s\",\"tls\":%s,\"count\":%ld,\"concurrency\":%ld",
           bench_scenario_names[g.scenario], g.tls ? "true" : "false", g.count, g.concurrency);
    printf(",\"ok\":%ld,\"errors\":%ld,\"wall_s\":%.3f,\"ops_per_s\":%.1f", ok, g.errors, wall,
           wall > 0 ? (double)ok / wall : 0.0);
    printf(",\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f", bench_pct(50),
           bench_pct(90), bench_pct(99), bench_pct(100));
    printf(",\"bytes\":%llu,\"client_cpu_s\":%.3f,\"timed_out\":%s,\"first_error\":",
           (unsigned long long)g.bytes, cpu, g.timed_out ? "true" : "false");
    bench_json_str(g.first_error);
    printf("}\n");
    fflush(stdout);
}

/* ---- command line ------------------------------------------------------ */

static void bench_usage(const char *msg)
{
    if (msg != NULL)
        fprintf(stderr, "imapbench: %s\n", msg);
    fprintf(stderr,
            "usage: imapbench --host ADDR --port N --scenario S [--tls] [--cafile F]\n"
            "                 [--user U --password P] [--count N] [--concurrency C]\n"
            "                 [--max-seconds T] [--label L]\n"
            "scenarios: handshake churn bulk latency idle-preauth idle-login\n");
    exit(2);
}

static long bench_parse_long(const char *s, const char *what, long min)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min) {
        char msg[128];
        snprintf(msg, sizeof msg, "bad value for --%s: %s", what, s);
        bench_usage(msg);
    }
    return v;
}

static int bench_resolve(const char *host, int port)
{
    struct addrinfo hints, *res = NULL;

    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&g.addr) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&g.addr) == 0)
        return 0;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return -1;
    memcpy(&g.addr, res->ai_addr, res->ai_addrlen);
    if (res->ai_family == AF_INET)
        ((struct sockaddr_in *)&g.addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&g.addr)->sin6_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

static void bench_parse_args(int argc, char **argv)
{
    enum { O_HOST = 1, O_PORT, O_SCEN, O_TLS, O_CA, O_USER, O_PASS, O_COUNT, O_CONC, O_MAX,
           O_LABEL, O_HELP };
    static const struct option opts[] = {
        { "host", required_argument, NULL, O_HOST },
        { "port", required_argument, NULL, O_PORT },
        { "scenario", required_argument, NULL, O_SCEN },
        { "tls", no_argument, NULL, O_TLS },
        { "cafile", required_argument, NULL, O_CA },
        { "user", required_argument, NULL, O_USER },
        { "password", required_argument, NULL, O_PASS },
        { "count", required_argument, NULL, O_COUNT },
        { "concurrency", required_argument, NULL, O_CONC },
        { "max-seconds", required_argument, NULL, O_MAX },
        { "label", required_argument, NULL, O_LABEL },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    const char *scen = NULL;
    char *end;
    int o, i;

    g.count = 100;
    g.concurrency = 1;
    g.max_seconds = 120;
    g.label = "";
    g.user = "";
    g.password = "";
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_HOST: g.host = optarg; break;
        case O_PORT: g.port = (int)bench_parse_long(optarg, "port", 1); break;
        case O_SCEN: scen = optarg; break;
        case O_TLS: g.tls = 1; break;
        case O_CA: g.cafile = optarg; break;
        case O_USER: g.user = optarg; break;
        case O_PASS: g.password = optarg; break;
        case O_COUNT: g.count = bench_parse_long(optarg, "count", 1); break;
        case O_CONC: g.concurrency = bench_parse_long(optarg, "concurrency", 1); break;
        case O_MAX:
            errno = 0;
            g.max_seconds = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !(g.max_seconds > 0) ||
                g.max_seconds > 1e7)
                bench_usage("bad value for --max-seconds");
            break;
        case O_LABEL: g.label = optarg; break;
        case O_HELP: bench_usage(NULL); break;
        default: bench_usage(NULL);
        }
    }
    if (optind < argc)
        bench_usage("unexpected argument");
    if (g.host == NULL || g.port == 0 || scen == NULL)
        bench_usage("--host, --port and --scenario are required");
    if (g.port > 65535)
        bench_usage("bad value for --port");
    g.scenario = SC_COUNT_;
    for (i = 0; i < SC_COUNT_; i++)
        if (strcmp(scen, bench_scenario_names[i]) == 0)
            g.scenario = (enum bench_scenario)i;
    if (g.scenario == SC_COUNT_)
        bench_usage("unknown scenario");
    if (g.scenario == SC_LATENCY)
        g.concurrency = 1;
    if (bench_resolve(g.host, g.port) != 0)
        bench_usage("cannot resolve --host");
}

static int bench_setup_tls(void)
{
    g.ctx = SSL_CTX_new(TLS_method());
    if (g.ctx == NULL)
        return -1;
    SSL_CTX_set_min_proto_version(g.ctx, TLS1_2_VERSION);
    SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_OFF);
    if (g.cafile != NULL) {
        if (SSL_CTX_load_verify_locations(g.ctx, g.cafile, NULL) != 1) {
            char es[256];
            ERR_error_string_n(ERR_get_error(), es, sizeof es);
            fprintf(stderr, "imapbench: cannot load --cafile %s: %s\n", g.cafile, es);
            return -1;
        }
        SSL_CTX_set_verify(g.ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(g.ctx, SSL_VERIFY_NONE, NULL);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    long i;
    int rc;

    bench_parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (g.tls && bench_setup_tls() != 0) {
        SSL_CTX_free(g.ctx);
        return 2;
    }
    if (uv_loop_init(&g.loop) != 0) {
        fprintf(stderr, "imapbench: uv_loop_init failed\n");
        return 1;
    }
    uv_timer_init(&g.loop, &g.timer);
    uv_timer_start(&g.timer, bench_on_timeout, (uint64_t)(g.max_seconds * 1000.0), 0);
    g.t0 = uv_hrtime();
    if (g.scenario == SC_BULK || g.scenario == SC_LATENCY) {
        for (i = 0; i < g.concurrency; i++)
            bench_start_conn();
    }
    bench_pump();
    uv_run(&g.loop, UV_RUN_DEFAULT);
    if (!g.stopping) {            /* should not happen: the loop ran dry */
        g.stopping = 1;
        g.t_end = uv_hrtime();
    }
    bench_print_json();
    if (uv_loop_close(&g.loop) != 0)
        fprintf(stderr, "imapbench: loop still had handles at exit\n");
    SSL_CTX_free(g.ctx);
    free(g.lat);
    if (g.timed_out)
        rc = 3;
    else
        rc = g.errors > 0 ? 1 : 0;
    return rc;
}
