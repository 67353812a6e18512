/* gate_cpu: what the command gate (common/imap_check) itself costs, without
 * sockets or TLS: CPU nanoseconds per command and per MB of client input,
 * for pipelined NOOPs, for a mix of typical commands (SELECT, UID FETCH with
 * a header section, SEARCH, STORE, NOOP), and for APPENDs of 64 KiB messages
 * as non-synchronising literals (whose data passes by length).  Each
 * command's tag is answered as the backend would, so tags stay free.  The
 * whole input is fed in reads of 16 KiB, the best of 3 runs counts.
 *
 *   gate_cpu [commands per kind, default 200000]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/imap_check.h"

#define GATE_CPU_REPEAT 3        /* runs per kind; the fastest counts */
#define GATE_CPU_READ_LEN 16384  /* bytes per feed, like one socket read */
#define GATE_CPU_MSG_LEN 65536   /* bytes of an APPENDed message */

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct stream {
    char *p;
    size_t len, cap;
};

static void put(struct stream *s, const char *data, size_t n)
{
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->p = realloc(s->p, s->cap);
        if (s->p == NULL) {
            perror("realloc");
            exit(1);
        }
    }
    memcpy(s->p + s->len, data, n);
    s->len += n;
}

static void build(struct stream *s, const char *kind, size_t n)
{
    static const char *const mix[] = {
        "NOOP", "SELECT INBOX", "UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
        "SEARCH UNSEEN SUBJECT \"x\"", "STORE 1 +FLAGS.SILENT (\\Seen)",
    };
    char line[256];
    char *msg = malloc(GATE_CPU_MSG_LEN);
    if (msg == NULL) {
        exit(1);
    }
    memset(msg, 'm', GATE_CPU_MSG_LEN);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(kind, "noop") == 0) {
            put(s, line, (size_t)snprintf(line, sizeof(line), "c%zu NOOP\r\n", i));
        } else if (strcmp(kind, "mix") == 0) {
            put(s, line, (size_t)snprintf(line, sizeof(line), "c%zu %s\r\n", i, mix[i % 5]));
        } else {
            put(s, line, (size_t)snprintf(line, sizeof(line),
                                          "c%zu APPEND INBOX (\\Seen) {%d+}\r\n", i,
                                          GATE_CPU_MSG_LEN));
            put(s, msg, GATE_CPU_MSG_LEN);
            put(s, "\r\n", 2);
        }
    }
    free(msg);
}

/* run feeds the stream once; returns the commands forwarded whole. */
static size_t run(const struct stream *s)
{
    struct imap_check_opts o;
    memset(&o, 0, sizeof(o));
    o.max_line_len = 65536;
    o.max_literal_len = 1ull << 30;
    o.max_arg_literal_len = 1u << 20;
    o.max_tag_len = 64;
    o.max_pending = 128;
    o.nonsync = IMAP_CHECK_NONSYNC_PLUS;
    o.server_exts = IMAP_CHECK_EXT_ALL;
    struct imap_check *c = imap_check_new(&o);
    if (c == NULL) {
        exit(1);
    }
    size_t done = 0;
    for (size_t off = 0; off < s->len;) {
        size_t end = off + GATE_CPU_READ_LEN < s->len ? off + GATE_CPU_READ_LEN : s->len;
        while (off < end) {
            size_t n = 0;
            enum imap_check_action a = imap_check_feed(c, &n, (const uint8_t *)s->p + off, end - off);
            if (a == IMAP_CHECK_FORWARD_END) {
                size_t tag_len = 0;
                const char *tag = imap_check_tag(c, &tag_len);
                char t[80];
                memcpy(t, tag, tag_len); /* the backend's answer frees the tag */
                (void)imap_check_server_tagged(c, (const uint8_t *)t, tag_len);
                done++;
            } else if (a != IMAP_CHECK_FORWARD && a != IMAP_CHECK_HOLD &&
                       a != IMAP_CHECK_LITERAL) {
                fprintf(stderr, "gate_cpu: unexpected verdict %s (%s)\n",
                        imap_check_action_name(a), imap_check_reason(c));
                exit(1);
            }
            off += n;
        }
    }
    imap_check_free(c);
    return done;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 200000;
    static const char *const kinds[] = {"noop", "mix", "append"};
    printf("| input | commands | MB | ns CPU per command | ms CPU per MB |\n| --- | --- | --- | --- | --- |\n");
    for (size_t k = 0; k < 3; k++) {
        struct stream s = {0};
        size_t count = strcmp(kinds[k], "append") == 0 ? n / 100 + 1 : n;
        build(&s, kinds[k], count);
        double best = 1e30;
        for (int r = 0; r < GATE_CPU_REPEAT; r++) {
            double t0 = cpu_now();
            size_t done = run(&s);
            double t1 = cpu_now();
            if (done != count) {
                fprintf(stderr, "gate_cpu: %zu of %zu commands passed\n", done, count);
                return 1;
            }
            if (t1 - t0 < best) {
                best = t1 - t0;
            }
        }
        double mb = (double)s.len / 1e6;
        printf("| %s | %zu | %.1f | %.0f | %.3f |\n", kinds[k], count, mb, best / (double)count * 1e9,
               best / mb * 1e3);
        free(s.p);
    }
    return 0;
}
