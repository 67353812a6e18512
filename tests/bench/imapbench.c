/* imapbench: the benchmark's load generator.  One libuv loop drives many
 * IMAP client connections (plain or implicit TLS, every handshake a full
 * one) through one of the scenarios below and prints one JSON line of
 * results.  Bounded in count and in time (--max-seconds).
 *
 * One source, two binaries that never share a process: imapbench uses
 * BoringSSL (as the daemon does), imapbench-openssl the system's OpenSSL 3
 * (IMAPBENCH_OPENSSL defined), the TLS most Linux mail clients use.
 *
 *   imapbench --host 127.0.0.1 --port N --scenario S [--tls] [--user U]
 *             [--password P] [--count N] [--concurrency C] [--max-seconds T]
 *             [--label L] [--max-errors E]
 *             [--users PATTERN --num-users N [--user-offset K]
 *              [--password-pattern PATTERN] [--return-share F]
 *              [--return-window W] [--seed S]]
 *
 * Users: without --users every login is --user / --password.  With it, each
 * login takes another user: PATTERN with %d replaced by a number (and %%
 * by %), the numbers user-offset, user-offset + 1, ... modulo num-users;
 * the password is --password-pattern expanded with the same number (or
 * --password when it has no %d).  --return-share F: that share of logins
 * instead repeats, at random (--seed), the user of one of the last W logins
 * (default 100), as a client coming back within the session cache's TTL.
 *
 * Scenarios:
 *   handshake     connect, TLS handshake, greeting, close; count times
 *   churn         ... then LOGIN, SELECT INBOX, LOGOUT; count times
 *   bulk          per connection: login, SELECT, count x FETCH 1:* BODY.PEEK[]
 *   latency       one connection: login, count sequential NOOPs
 *   idle-preauth  hold C connections past the greeting
 *   idle-login    hold C connections logged in and in IDLE
 * The idle scenarios print "READY <established> <failed>" once all are up
 * and hold them until stdin has a line or ends.
 * --max-errors E: end the run at the E-th failed operation (default: never).
 * Exit: 0 all went well, 1 some operation failed, 2 usage, 3 time limit. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include <uv.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* the build decides the library; the headers must agree with it */
#if defined(IMAPBENCH_OPENSSL) && defined(OPENSSL_IS_BORINGSSL)
#error "imapbench-openssl is built against BoringSSL's headers: it must use OpenSSL's"
#endif
#if !defined(IMAPBENCH_OPENSSL) && !defined(OPENSSL_IS_BORINGSSL)
#error "imapbench is built against OpenSSL's headers: it must use BoringSSL's"
#endif

#define BENCH_LINE_MAX 8192        /* bytes of one response line we keep */
#define BENCH_RAMP 200             /* connections being set up at once (idle scenarios) */
#define BENCH_NAME_LEN 256         /* bytes of a login or password, pattern expanded */
#define BENCH_RETURN_WINDOW_MAX 100000 /* logins a returning user is drawn from */
#define BENCH_CIPHER_LEN 64        /* bytes of the cipher suite's name we report */

enum bench_scenario { SC_HANDSHAKE, SC_CHURN, SC_BULK, SC_LATENCY, SC_IDLE_PREAUTH, SC_IDLE_LOGIN };

static const char *const bench_scenario_names[] = {
    "handshake", "churn", "bulk", "latency", "idle-preauth", "idle-login",
};

enum bench_step {
    ST_CONNECT, ST_HANDSHAKE, ST_GREETING, ST_LOGIN, ST_SELECT, ST_WORK, ST_IDLE_WAIT, ST_HOLD,
    ST_LOGOUT,
};

struct bench_conn {
    uv_tcp_t tcp;                  /* tcp.data = this */
    uv_connect_t creq;
    SSL *ssl;                      /* NULL for plain */
    BIO *rbio, *wbio;
    enum bench_step step;
    int closing;
    int counted;                   /* counted as established (idle) */
    unsigned n;                    /* commands of ST_WORK done */
    uint64_t t_op, t_cmd;          /* start of the operation, of the command (ns) */
    uint64_t literal_left;
    int cont;                      /* the current line continues one that had a literal */
    size_t line_len;
    char line[BENCH_LINE_MAX];
};

static struct {
    const char *host, *user, *password, *label;
    int port, tls;
    enum bench_scenario sc;
    unsigned long count, conc, max_s;
    unsigned long max_errors;      /* end at this many failures; 0: never */
    const char *users_pat, *password_pat; /* NULL: one user for every login */
    unsigned long num_users, user_offset, return_window;
    double return_share;           /* 0..1: logins that repeat a recent user */
    uint64_t seed;
} opt = {"127.0.0.1", "bench", "", "", 0, 0, SC_HANDSHAKE, 100, 1, 120, 0,
         NULL, NULL, 0, 0, 100, 0.0, 1};

static struct {
    uv_loop_t *loop;
    SSL_CTX *ctx;
    struct sockaddr_storage addr;
    uv_timer_t limit;
    uv_pipe_t in;
    int in_open;
    unsigned long started, ok, errors, live, setting_up, established;
    uint64_t bytes;
    uint32_t *lat;                 /* microseconds per operation or command */
    size_t lat_n, lat_cap;
    uint32_t *login_lat;           /* churn: LOGIN to tagged OK */
    size_t login_n, login_cap;
    char first_error[256];
    int timed_out, done, ready_printed;
    uint64_t t_start;
    unsigned long next_user;       /* new users handed out so far */
    unsigned long *recent;         /* ring of the last return_window users' numbers */
    unsigned long recent_n, recent_pos;
    unsigned long distinct, returning; /* logins by kind */
    uint64_t rng;                  /* xorshift64* state, never 0 */
    char cipher[BENCH_CIPHER_LEN]; /* of the first handshake done */
} g;

static void bench_start_one(void);
static void bench_maybe_finish(void);
static void bench_end(void);

static void bench_push(uint32_t **arr, size_t *n, size_t *cap, uint64_t ns)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        uint32_t *a = realloc(*arr, c * sizeof(**arr));
        if (a == NULL) {
            return;
        }
        *arr = a;
        *cap = c;
    }
    uint64_t us = ns / 1000;
    (*arr)[(*n)++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void bench_on_close(uv_handle_t *h)
{
    struct bench_conn *c = h->data;
    SSL_free(c->ssl); /* frees the BIOs */
    free(c);
    g.live--;
    if (!g.done && !g.timed_out) {
        bench_start_one();
    }
    bench_maybe_finish();
}

static void bench_close(struct bench_conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = 1;
    if (!c->counted && (opt.sc == SC_IDLE_PREAUTH || opt.sc == SC_IDLE_LOGIN)) {
        g.setting_up--;
    }
    uv_close((uv_handle_t *)&c->tcp, bench_on_close);
}

static void bench_fail(struct bench_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void bench_fail(struct bench_conn *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    if (c->closing) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (g.errors < 5) {
        fprintf(stderr, "imapbench: %s\n", msg);
    }
    if (g.first_error[0] == '\0') {
        snprintf(g.first_error, sizeof(g.first_error), "%s", msg);
    }
    g.errors++;
    bench_close(c);
    if (opt.max_errors > 0 && g.errors >= opt.max_errors) {
        bench_end(); /* the run is failed already: do not wait out the rest */
    }
}

static void bench_on_write(uv_write_t *req, int status)
{
    (void)status; /* a failed write shows up as a read error */
    free(req);
}

static void bench_raw_write(struct bench_conn *c, const void *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r == (int)len) {
            return;
        }
        if (r > 0) {
            data = (const char *)data + r;
            len -= (size_t)r;
        } else if (r != UV_EAGAIN) {
            bench_fail(c, "write: %s", uv_strerror(r));
            return;
        }
    }
    uv_write_t *req = malloc(sizeof(*req) + len);
    if (req == NULL) {
        bench_fail(c, "out of memory");
        return;
    }
    memcpy(req + 1, data, len);
    b = uv_buf_init((char *)(req + 1), (unsigned)len);
    int r = uv_write(req, (uv_stream_t *)&c->tcp, &b, 1, bench_on_write);
    if (r != 0) {
        free(req);
        bench_fail(c, "write: %s", uv_strerror(r));
    }
}

static void bench_flush(struct bench_conn *c)
{
    static uint8_t out[65536];
    int n;
    while (!c->closing && (n = BIO_read(c->wbio, out, sizeof(out))) > 0) {
        bench_raw_write(c, out, (size_t)n);
    }
}

static void bench_send(struct bench_conn *c, const char *text)
{
    size_t len = strlen(text);
    c->t_cmd = uv_hrtime();
    if (c->ssl == NULL) {
        bench_raw_write(c, text, len);
        return;
    }
    if (SSL_write(c->ssl, text, (int)len) != (int)len) {
        bench_fail(c, "TLS write failed");
        return;
    }
    bench_flush(c);
}

static void bench_sendf(struct bench_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void bench_sendf(struct bench_conn *c, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    bench_send(c, line);
}

/* bench_rand: the next number of a xorshift64* sequence (Vigna, 2016):
 * reproducible for a --seed, good enough to pick users. */
static uint64_t bench_rand(void)
{
    g.rng ^= g.rng >> 12;
    g.rng ^= g.rng << 25;
    g.rng ^= g.rng >> 27;
    return g.rng * 2685821657736338717ULL;
}

/* bench_pattern_count: how many %d pattern holds; -1 if it has another
 * conversion, or a character a quoted IMAP string cannot carry as is. */
static int bench_pattern_count(const char *pattern)
{
    int n = 0;
    for (const char *p = pattern; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\' || *p == '\r' || *p == '\n') {
            return -1;
        }
        if (*p != '%') {
            continue;
        }
        if (p[1] == 'd') {
            n++;
        } else if (p[1] != '%') {
            return -1;
        }
        p++;
    }
    return n;
}

/* bench_expand writes pattern with each %d replaced by num and %% by %
 * into out (out_len bytes).  Returns 0, or -1 if it does not fit. */
static int bench_expand(char *out, size_t out_len, const char *pattern, unsigned long num)
{
    size_t o = 0;
    for (const char *p = pattern; *p != '\0'; p++) {
        char digits[24];
        const char *add = p;
        size_t add_len = 1;
        if (*p == '%' && p[1] == 'd') {
            add_len = (size_t)snprintf(digits, sizeof(digits), "%lu", num);
            add = digits;
            p++;
        } else if (*p == '%' && p[1] == '%') {
            p++;
        }
        if (o + add_len >= out_len) {
            return -1;
        }
        memcpy(out + o, add, add_len);
        o += add_len;
    }
    out[o] = '\0';
    return 0;
}

/* bench_pick_user: the number of the user of the next login, a recent one
 * (return_share of the time, once there is one) or the next new one. */
static unsigned long bench_pick_user(void)
{
    unsigned long num;
    double r = (double)(bench_rand() >> 11) / 9007199254740992.0; /* [0, 1) */
    if (g.recent_n > 0 && r < opt.return_share) {
        num = g.recent[bench_rand() % g.recent_n];
        g.returning++;
    } else {
        num = (opt.user_offset + g.next_user++) % opt.num_users;
        g.distinct++;
    }
    g.recent[g.recent_pos] = num;
    g.recent_pos = (g.recent_pos + 1) % opt.return_window;
    if (g.recent_n < opt.return_window) {
        g.recent_n++;
    }
    return num;
}

static void bench_login(struct bench_conn *c)
{
    char user[BENCH_NAME_LEN], password[BENCH_NAME_LEN];
    c->step = ST_LOGIN;
    if (opt.users_pat == NULL) {
        g.distinct++;
        bench_sendf(c, "a LOGIN \"%s\" \"%s\"\r\n", opt.user, opt.password);
        return;
    }
    unsigned long num = bench_pick_user();
    if (bench_expand(user, sizeof(user), opt.users_pat, num) != 0 ||
        bench_expand(password, sizeof(password),
                     opt.password_pat != NULL ? opt.password_pat : opt.password, num) != 0) {
        bench_fail(c, "login or password longer than %d bytes", BENCH_NAME_LEN - 1);
        return;
    }
    bench_sendf(c, "a LOGIN \"%s\" \"%s\"\r\n", user, password);
    /* the password stays on this stack frame and the wire only */
    memset(password, 0, sizeof(password));
}

/* bench_established: an idle connection is up; set up the next one. */
static void bench_established(struct bench_conn *c)
{
    c->step = ST_HOLD;
    c->counted = 1;
    g.setting_up--;
    g.established++;
    bench_start_one();
    bench_maybe_finish();
}

static void bench_op_done(struct bench_conn *c)
{
    g.ok++;
    bench_push(&g.lat, &g.lat_n, &g.lat_cap, uv_hrtime() - c->t_op);
    bench_close(c);
}

static void bench_work(struct bench_conn *c)
{
    if (c->n >= opt.count) {
        c->step = ST_LOGOUT;
        bench_send(c, "c LOGOUT\r\n");
        return;
    }
    if (opt.sc == SC_BULK) {
        bench_sendf(c, "f%u FETCH 1:* BODY.PEEK[]\r\n", c->n);
    } else {
        bench_sendf(c, "n%u NOOP\r\n", c->n);
    }
}

/* bench_tagged: a tagged answer; anything but OK is a failure. */
static void bench_tagged(struct bench_conn *c, const char *line, const char *status)
{
    uint64_t now = uv_hrtime();
    if (strncasecmp(status, "OK", 2) != 0) {
        bench_fail(c, "tagged %.*s", 200, line);
        return;
    }
    switch (c->step) {
    case ST_LOGIN:
        if (opt.sc == SC_CHURN) {
            bench_push(&g.login_lat, &g.login_n, &g.login_cap, now - c->t_cmd);
        }
        if (opt.sc == SC_LATENCY) {
            c->step = ST_WORK;
            bench_work(c);
            return;
        }
        c->step = ST_SELECT;
        bench_send(c, "b SELECT INBOX\r\n");
        return;
    case ST_SELECT:
        if (opt.sc == SC_CHURN) {
            c->step = ST_LOGOUT;
            bench_send(c, "c LOGOUT\r\n");
        } else if (opt.sc == SC_IDLE_LOGIN) {
            c->step = ST_IDLE_WAIT;
            bench_send(c, "i IDLE\r\n");
        } else {
            c->step = ST_WORK;
            bench_work(c);
        }
        return;
    case ST_WORK:
        bench_push(&g.lat, &g.lat_n, &g.lat_cap, now - c->t_cmd);
        c->n++;
        bench_work(c);
        return;
    case ST_LOGOUT:
        if (opt.sc == SC_CHURN) {
            bench_op_done(c);
        } else {
            g.ok++;
            bench_close(c);
        }
        return;
    default:
        bench_fail(c, "unexpected tagged answer: %.*s", 200, line);
        return;
    }
}

static void bench_on_line(struct bench_conn *c, char *line)
{
    if (c->step == ST_GREETING) {
        if (strncmp(line, "* OK", 4) != 0) {
            bench_fail(c, "greeting: %.*s", 200, line);
            return;
        }
        switch (opt.sc) {
        case SC_HANDSHAKE:
            bench_op_done(c);
            return;
        case SC_IDLE_PREAUTH:
            bench_established(c);
            return;
        default:
            bench_login(c);
            return;
        }
    }
    if (line[0] == '*') {
        if (strncasecmp(line, "* BYE", 5) == 0 && c->step != ST_LOGOUT) {
            bench_fail(c, "server said %.*s", 200, line);
        }
        return;
    }
    if (line[0] == '+') {
        if (c->step == ST_IDLE_WAIT) {
            bench_established(c);
        }
        return;
    }
    char *sp = strchr(line, ' ');
    if (sp == NULL) {
        bench_fail(c, "bad line: %.*s", 200, line);
        return;
    }
    bench_tagged(c, line, sp + 1);
}

/* bench_literal: n > 0 if line (without CRLF) ends with {n}. */
static uint64_t bench_literal(const char *line, size_t len)
{
    if (len < 3 || line[len - 1] != '}') {
        return 0;
    }
    size_t i = len - 1;
    while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9') {
        i--;
    }
    if (i == 0 || line[i - 1] != '{' || i == len - 1) {
        return 0;
    }
    return strtoull(line + i, NULL, 10);
}

static void bench_feed(struct bench_conn *c, const uint8_t *p, size_t len)
{
    while (len > 0 && !c->closing) {
        if (c->literal_left > 0) {
            size_t n = len < c->literal_left ? len : (size_t)c->literal_left;
            c->literal_left -= n;
            g.bytes += n;
            p += n;
            len -= n;
            continue;
        }
        const uint8_t *nl = memchr(p, '\n', len);
        size_t take = nl != NULL ? (size_t)(nl - p) + 1 : len;
        if (c->line_len + take >= sizeof(c->line)) {
            bench_fail(c, "response line longer than %d bytes", BENCH_LINE_MAX);
            return;
        }
        memcpy(c->line + c->line_len, p, take);
        c->line_len += take;
        p += take;
        len -= take;
        if (nl == NULL) {
            return;
        }
        size_t l = c->line_len - 1;
        if (l > 0 && c->line[l - 1] == '\r') {
            l--;
        }
        c->line[l] = '\0';
        c->line_len = 0;
        uint64_t lit = bench_literal(c->line, l);
        if (lit > 0) {
            c->literal_left = lit; /* the line goes on after the literal: not a whole line */
            c->cont = 1;
            continue;
        }
        if (c->cont) {
            c->cont = 0; /* the end of an untagged response with literals */
            continue;
        }
        bench_on_line(c, c->line);
    }
}

static void bench_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char in[65536];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(in, sizeof(in));
}

static void bench_tls_error(struct bench_conn *c, const char *what)
{
    char e[160];
    ERR_error_string_n(ERR_get_error(), e, sizeof(e));
    bench_fail(c, "%s: %s", what, e);
}

static void bench_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct bench_conn *c = s->data;
    static uint8_t plain[16384];
    if (c->closing || nread == 0) {
        return;
    }
    if (nread < 0) {
        bench_fail(c, "connection closed by the server (%s) in step %d",
                   nread == UV_EOF ? "EOF" : uv_strerror((int)nread), (int)c->step);
        return;
    }
    if (c->ssl == NULL) {
        bench_feed(c, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    if (BIO_write(c->rbio, buf->base, (int)nread) != (int)nread) {
        bench_fail(c, "out of memory");
        return;
    }
    if (c->step == ST_HANDSHAKE) {
        int r = SSL_do_handshake(c->ssl);
        bench_flush(c);
        if (r != 1) {
            if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
                bench_tls_error(c, "TLS handshake failed");
            }
            return;
        }
        c->step = ST_GREETING;
        if (g.cipher[0] == '\0') {
            snprintf(g.cipher, sizeof(g.cipher), "%s %s", SSL_get_version(c->ssl),
                     SSL_get_cipher_name(c->ssl));
        }
    }
    while (!c->closing) {
        int n = SSL_read(c->ssl, plain, sizeof(plain));
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            bench_flush(c);
            if (e == SSL_ERROR_WANT_READ) {
                return;
            }
            if (e == SSL_ERROR_ZERO_RETURN) {
                bench_fail(c, "TLS closed by the server in step %d", (int)c->step);
            } else {
                bench_tls_error(c, "TLS read failed");
            }
            return;
        }
        bench_feed(c, plain, (size_t)n);
    }
}

static void bench_on_connect(uv_connect_t *req, int status)
{
    struct bench_conn *c = req->handle->data;
    if (c->closing) {
        return;
    }
    if (status != 0) {
        bench_fail(c, "connect: %s", uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, bench_alloc, bench_on_read) != 0) {
        bench_fail(c, "read start failed");
        return;
    }
    if (!opt.tls) {
        c->step = ST_GREETING;
        return;
    }
    c->ssl = SSL_new(g.ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        bench_fail(c, "out of memory");
        return;
    }
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    c->step = ST_HANDSHAKE;
    int r = SSL_do_handshake(c->ssl); /* the ClientHello */
    if (r != 1 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
        bench_tls_error(c, "TLS handshake failed");
        return;
    }
    bench_flush(c);
}

/* bench_target: operations still to start. */
static unsigned long bench_target(void)
{
    switch (opt.sc) {
    case SC_HANDSHAKE:
    case SC_CHURN:
        return opt.count;
    default:
        return opt.conc;
    }
}

static void bench_start_one(void)
{
    unsigned long limit = opt.conc;
    int idle = opt.sc == SC_IDLE_PREAUTH || opt.sc == SC_IDLE_LOGIN;
    if (g.done || g.timed_out || g.started >= bench_target()) {
        return;
    }
    if (idle ? g.setting_up >= BENCH_RAMP : g.live >= limit) {
        return;
    }
    struct bench_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        g.errors++;
        return;
    }
    uv_tcp_init(g.loop, &c->tcp);
    c->tcp.data = c;
    c->t_op = uv_hrtime();
    c->step = ST_CONNECT;
    g.started++;
    g.live++;
    if (idle) {
        g.setting_up++;
    }
    int r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&g.addr, bench_on_connect);
    if (r != 0) {
        bench_fail(c, "connect: %s", uv_strerror(r));
    }
}

static int bench_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t bench_pct(uint32_t *v, size_t n, double p)
{
    if (n == 0) {
        return 0;
    }
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static void bench_json_str(const char *s)
{
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            printf("\\%c", ch);
        } else if (ch < 0x20 || ch >= 0x7f) {
            printf("\\u%04x", ch);
        } else {
            putchar(ch);
        }
    }
    putchar('"');
}

/* bench_tls_lib: the TLS library this binary runs with (static string). */
static const char *bench_tls_lib(void)
{
#if defined(OPENSSL_IS_BORINGSSL)
    return "BoringSSL";
#else
    return OpenSSL_version(OPENSSL_VERSION); /* the library loaded, not the headers */
#endif
}

static void bench_report(void)
{
    struct rusage ru;
    double wall = (double)(uv_hrtime() - g.t_start) / 1e9;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    if (g.lat_n > 0) { /* qsort's base must not be NULL, even for 0 elements */
        qsort(g.lat, g.lat_n, sizeof(*g.lat), bench_cmp);
    }
    if (g.login_n > 0) {
        qsort(g.login_lat, g.login_n, sizeof(*g.login_lat), bench_cmp);
    }
    printf("{\"tool\":\"imapbench\",\"target\":");
    bench_json_str(opt.label);
    printf(",\"scenario\":\"%s\",\"tls\":%s,\"count\":%lu,\"concurrency\":%lu,\"ok\":%lu,"
           "\"errors\":%lu,\"established\":%lu,\"wall_s\":%.3f,\"ops_per_s\":%.1f,"
           "\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,\"max_us\":%u,\"samples\":%zu,",
           bench_scenario_names[opt.sc], opt.tls ? "true" : "false", opt.count, opt.conc, g.ok,
           g.errors, g.established, wall, wall > 0 ? (double)g.ok / wall : 0.0,
           bench_pct(g.lat, g.lat_n, 0.5), bench_pct(g.lat, g.lat_n, 0.9),
           bench_pct(g.lat, g.lat_n, 0.99), g.lat_n ? g.lat[g.lat_n - 1] : 0, g.lat_n);
    if (g.login_n > 0) {
        printf("\"login_p50_us\":%u,\"login_p99_us\":%u,", bench_pct(g.login_lat, g.login_n, 0.5),
               bench_pct(g.login_lat, g.login_n, 0.99));
    }
    printf("\"distinct_logins\":%lu,\"returning_logins\":%lu,\"tls_lib\":", g.distinct,
           g.returning);
    bench_json_str(bench_tls_lib());
    printf(",\"cipher\":");
    bench_json_str(g.cipher);
    printf(",\"bytes\":%llu,\"client_cpu_s\":%.3f,\"timed_out\":%s,\"first_error\":",
           (unsigned long long)g.bytes, cpu, g.timed_out ? "true" : "false");
    bench_json_str(g.first_error);
    printf("}\n");
    fflush(stdout);
}

static void bench_close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h)) {
        return;
    }
    if (h->type == UV_TCP) {
        bench_close(h->data);
    } else {
        uv_close(h, NULL);
    }
}

static void bench_end(void)
{
    if (g.done) {
        return;
    }
    g.done = 1;
    bench_report();
    uv_walk(g.loop, bench_close_walk, NULL);
}

static void bench_on_stdin(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)s;
    (void)buf;
    if (nread != 0) {
        bench_end(); /* a line, or the end: let go */
    }
}

static void bench_maybe_finish(void)
{
    if (g.done) {
        return;
    }
    if (opt.sc == SC_IDLE_PREAUTH || opt.sc == SC_IDLE_LOGIN) {
        if (g.started >= opt.conc && g.setting_up == 0 && !g.ready_printed) {
            g.ready_printed = 1;
            printf("READY %lu %lu\n", g.established, g.errors);
            fflush(stdout);
            if (uv_pipe_init(g.loop, &g.in, 0) == 0 && uv_pipe_open(&g.in, 0) == 0 &&
                uv_read_start((uv_stream_t *)&g.in, bench_alloc, bench_on_stdin) == 0) {
                g.in_open = 1;
            } else {
                bench_end();
            }
        }
        return;
    }
    if (g.live == 0 && (g.started >= bench_target() || g.timed_out)) {
        bench_end();
    }
}

static void bench_on_limit(uv_timer_t *t)
{
    (void)t;
    g.timed_out = 1;
    fprintf(stderr, "imapbench: time limit of %lu s reached\n", opt.max_s);
    bench_end();
}

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: imapbench --port N --scenario handshake|churn|bulk|latency|idle-preauth|"
               "idle-login [--host A] [--tls] [--user U] [--password P] [--count N]\n"
               "                 [--concurrency C] [--max-seconds T] [--label L]\n"
               "                 [--max-errors E] [--users PATTERN --num-users N [--user-offset K]\n"
               "                  [--password-pattern PATTERN] [--return-share F]\n"
               "                  [--return-window W] [--seed S]]\n"
               "TLS: %s\n", bench_tls_lib());
}

static int bench_parse(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},      {"port", required_argument, NULL, 'p'},
        {"scenario", required_argument, NULL, 's'},  {"tls", no_argument, NULL, 't'},
        {"user", required_argument, NULL, 'u'},      {"password", required_argument, NULL, 'w'},
        {"count", required_argument, NULL, 'n'},     {"concurrency", required_argument, NULL, 'c'},
        {"max-seconds", required_argument, NULL, 'm'}, {"label", required_argument, NULL, 'l'},
        {"users", required_argument, NULL, 'U'},     {"num-users", required_argument, NULL, 'N'},
        {"user-offset", required_argument, NULL, 'O'},
        {"password-pattern", required_argument, NULL, 'P'},
        {"return-share", required_argument, NULL, 'R'},
        {"return-window", required_argument, NULL, 'W'}, {"seed", required_argument, NULL, 'S'},
        {"max-errors", required_argument, NULL, 'E'},
        {"help", no_argument, NULL, 'H'},            {NULL, 0, NULL, 0},
    };
    int ch, found = 0;
    char *end;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 't': opt.tls = 1; break;
        case 'u': opt.user = optarg; break;
        case 'w': opt.password = optarg; break;
        case 'l': opt.label = optarg; break;
        case 'U': opt.users_pat = optarg; break;
        case 'P': opt.password_pat = optarg; break;
        case 'R':
            opt.return_share = strtod(optarg, &end);
            if (*end != '\0' || !(opt.return_share >= 0.0 && opt.return_share <= 1.0)) {
                return -1;
            }
            break;
        case 'O':
        case 'S': {
            unsigned long long v = strtoull(optarg, &end, 10);
            if (*end != '\0' || optarg[0] == '-') {
                return -1;
            }
            if (ch == 'O') {
                opt.user_offset = (unsigned long)v;
            } else {
                opt.seed = v;
            }
            break;
        }
        case 'N':
        case 'W':
        case 'E': {
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end != '\0' || v == 0 || optarg[0] == '-' ||
                (ch == 'W' && v > BENCH_RETURN_WINDOW_MAX)) {
                return -1;
            }
            *(ch == 'N' ? &opt.num_users : ch == 'W' ? &opt.return_window : &opt.max_errors) = v;
            break;
        }
        case 'n':
        case 'c':
        case 'm': {
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end != '\0' || v == 0) {
                return -1;
            }
            *(ch == 'n' ? &opt.count : ch == 'c' ? &opt.conc : &opt.max_s) = v;
            break;
        }
        case 's':
            for (size_t i = 0; i < sizeof(bench_scenario_names) / sizeof(*bench_scenario_names); i++) {
                if (strcmp(optarg, bench_scenario_names[i]) == 0) {
                    opt.sc = (enum bench_scenario)i;
                    found = 1;
                }
            }
            if (!found) {
                return -1;
            }
            break;
        case 'H':
            bench_usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind != argc || opt.port <= 0 || opt.port > 65535 || !found) {
        return -1;
    }
    if (opt.users_pat != NULL) {
        const char *pw = opt.password_pat != NULL ? opt.password_pat : opt.password;
        if (opt.num_users == 0 || bench_pattern_count(opt.users_pat) != 1 ||
            bench_pattern_count(pw) < 0) {
            return -1;
        }
    } else if (opt.password_pat != NULL || opt.num_users != 0 || opt.return_share > 0.0) {
        return -1; /* these choose among users: they need --users */
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    if (bench_parse(argc, argv) != 0) {
        bench_usage(stderr);
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (uv_ip4_addr(opt.host, opt.port, (struct sockaddr_in *)&g.addr) != 0 &&
        uv_ip6_addr(opt.host, opt.port, (struct sockaddr_in6 *)&g.addr) != 0) {
        fprintf(stderr, "imapbench: %s is not a numeric address\n", opt.host);
        return 2;
    }
    g.rng = opt.seed != 0 ? opt.seed : 1;
    if (opt.users_pat != NULL) {
        g.recent = calloc(opt.return_window, sizeof(*g.recent));
        if (g.recent == NULL) {
            fprintf(stderr, "imapbench: out of memory\n");
            return 1;
        }
    }
    g.loop = uv_default_loop();
    if (opt.tls) {
        g.ctx = SSL_CTX_new(TLS_method());
        if (g.ctx == NULL || !SSL_CTX_set_min_proto_version(g.ctx, TLS1_2_VERSION)) {
            fprintf(stderr, "imapbench: TLS setup failed\n");
            return 1;
        }
        /* every handshake a full one: no session is kept or offered */
        SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_verify(g.ctx, SSL_VERIFY_NONE, NULL);
    }
    g.t_start = uv_hrtime();
    uv_timer_init(g.loop, &g.limit);
    uv_timer_start(&g.limit, bench_on_limit, opt.max_s * 1000, 0);
    unsigned long first = opt.sc == SC_IDLE_PREAUTH || opt.sc == SC_IDLE_LOGIN ? BENCH_RAMP
                                                                               : opt.conc;
    for (unsigned long i = 0; i < first; i++) {
        bench_start_one();
    }
    uv_run(g.loop, UV_RUN_DEFAULT);
    if (!g.done) {
        bench_end(); /* cannot happen: the loop ends after bench_end */
        uv_run(g.loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(g.loop);
    SSL_CTX_free(g.ctx);
    free(g.lat);
    free(g.login_lat);
    free(g.recent);
    if (g.timed_out) {
        return 3;
    }
    return g.errors > 0 ? 1 : 0;
}
