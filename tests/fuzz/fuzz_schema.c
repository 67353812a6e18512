/* Fuzz target of the Redis schema values.  The input is a list of items,
 * each one length byte then its bytes; taken in pairs they are a hash as
 * HGETALL returns it (field, value, field, value, ...), read as a user, a
 * domain and a backend hash.  The same items are also read as event
 * messages, logins and host lists.  Properties: a parsed hash holds what its
 * last field of each name said (text without NUL, valid backend names, a
 * usable login_as, 1..SCHEMA_MAX_HOSTS distinct hosts with ports); a refusal
 * sets err and leaves nothing to free; normalising is idempotent and lower
 * case; an event and a host list print back to what parses the same. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/schema.h"

#define FUZZ_MAX_ITEMS 32
#define FUZZ_ERR_CANARY "canary"

struct fuzz_items {
    const char *p[FUZZ_MAX_ITEMS];
    size_t len[FUZZ_MAX_ITEMS];
    size_t num;
};

static void fuzz_split(struct fuzz_items *it, const uint8_t *data, size_t size)
{
    size_t off = 0;
    it->num = 0;
    while (off < size && it->num < FUZZ_MAX_ITEMS) {
        size_t n = data[off++];
        if (n > size - off) {
            n = size - off;
        }
        it->p[it->num] = (const char *)data + off;
        it->len[it->num] = n;
        it->num++;
        off += n;
    }
}

/* fuzz_last returns the index of the value of the last field called name, or -1. */
static int fuzz_last(const struct fuzz_items *it, const char *name)
{
    int found = -1;
    for (size_t i = 0; i + 1 < it->num; i += 2) {
        if (it->len[i] == strlen(name) && memcmp(it->p[i], name, it->len[i]) == 0) {
            found = (int)i + 1;
        }
    }
    return found;
}

static void fuzz_same_text(const char *s, const struct fuzz_items *it, int v)
{
    if (v < 0) {
        if (s != NULL) {
            abort();
        }
        return;
    }
    if (s == NULL || strlen(s) != it->len[v] || memcmp(s, it->p[v], it->len[v]) != 0) {
        abort();
    }
}

static void fuzz_refused(const char *err)
{
    if (strcmp(err, FUZZ_ERR_CANARY) == 0 || err[0] == '\0') {
        abort(); /* a refusal must say why */
    }
}

static void fuzz_check_hosts(const struct schema_host *h, size_t num)
{
    if (num == 0 || num > SCHEMA_MAX_HOSTS || h == NULL) {
        abort();
    }
    for (size_t i = 0; i < num; i++) {
        size_t hl = strnlen(h[i].host, sizeof(h[i].host));
        if (hl == 0 || hl == sizeof(h[i].host) || h[i].port == 0) {
            abort();
        }
        for (size_t j = 0; j < i; j++) {
            if (h[j].port == h[i].port && strcasecmp(h[j].host, h[i].host) == 0) {
                abort();
            }
        }
    }
}

/* fuzz_hosts_round_trip prints hosts back as a list and parses it again. */
static void fuzz_hosts_round_trip(const struct schema_host *h, size_t num)
{
    char list[SCHEMA_MAX_HOSTS * (256 + 9)];
    size_t off = 0;
    for (size_t i = 0; i < num; i++) {
        int bracket = strchr(h[i].host, ':') != NULL || h[i].host[0] == '[';
        int n = snprintf(list + off, sizeof(list) - off, "%s%s%s%s:%u", i > 0 ? "," : "",
                         bracket ? "[" : "", h[i].host, bracket ? "]" : "", (unsigned)h[i].port);
        if (n < 0 || (size_t)n >= sizeof(list) - off) {
            abort();
        }
        off += (size_t)n;
    }
    struct schema_host *again;
    size_t num_again;
    char err[256];
    if (schema_parse_hosts(&again, &num_again, list, off, err, sizeof(err)) != 0 ||
        num_again != num) {
        abort();
    }
    for (size_t i = 0; i < num; i++) {
        if (strcmp(again[i].host, h[i].host) != 0 || again[i].port != h[i].port) {
            abort();
        }
    }
    free(again);
}

static void fuzz_user(const struct fuzz_items *it, const char *const *f, const size_t *fl,
                      const char *const *v, const size_t *vl, size_t num)
{
    struct schema_user u;
    char err[128] = FUZZ_ERR_CANARY;
    if (schema_parse_user(&u, f, fl, v, vl, num, err, sizeof(err)) != 0) {
        fuzz_refused(err);
        if (u.password != NULL || u.backend != NULL || u.login_as != NULL) {
            abort();
        }
        return;
    }
    fuzz_same_text(u.password, it, fuzz_last(it, "password"));
    fuzz_same_text(u.backend, it, fuzz_last(it, "backend"));
    fuzz_same_text(u.login_as, it, fuzz_last(it, "login_as"));
    char norm[SCHEMA_MAX_LOGIN_LEN + 1];
    if ((u.backend != NULL && !schema_name_valid(u.backend)) ||
        (u.login_as != NULL && schema_normalize(norm, u.login_as, strlen(u.login_as)) != 0) ||
        (u.state != SCHEMA_ACTIVE && u.state != SCHEMA_DISABLED)) {
        abort();
    }
    schema_user_free(&u);
}

static void fuzz_domain(const struct fuzz_items *it, const char *const *f, const size_t *fl,
                        const char *const *v, const size_t *vl, size_t num)
{
    struct schema_domain d;
    char err[128] = FUZZ_ERR_CANARY;
    if (schema_parse_domain(&d, f, fl, v, vl, num, err, sizeof(err)) != 0) {
        fuzz_refused(err);
        if (d.backend != NULL) {
            abort();
        }
        return;
    }
    fuzz_same_text(d.backend, it, fuzz_last(it, "backend"));
    if ((d.backend != NULL && !schema_name_valid(d.backend)) ||
        (fuzz_last(it, "auth") >= 0 && d.auth == SCHEMA_AUTH_DEFAULT)) {
        abort();
    }
    schema_domain_free(&d);
}

static void fuzz_backend(const char *const *f, const size_t *fl, const char *const *v,
                         const size_t *vl, size_t num)
{
    struct schema_backend b;
    char err[128] = FUZZ_ERR_CANARY;
    if (schema_parse_backend(&b, f, fl, v, vl, num, err, sizeof(err)) != 0) {
        fuzz_refused(err);
        if (b.hosts != NULL || b.num_hosts != 0) {
            abort();
        }
        return;
    }
    fuzz_check_hosts(b.hosts, b.num_hosts);
    fuzz_hosts_round_trip(b.hosts, b.num_hosts);
    schema_backend_free(&b);
}

static void fuzz_one_item(const char *p, size_t len)
{
    char norm[SCHEMA_MAX_LOGIN_LEN + 1], again[SCHEMA_MAX_LOGIN_LEN + 1];
    char arg[SCHEMA_MAX_LOGIN_LEN + 1], msg[SCHEMA_MAX_LOGIN_LEN + 16];
    char err[128] = FUZZ_ERR_CANARY;
    enum schema_event_type type, type2;

    /* a login */
    if (schema_normalize(norm, p, len) == 0) {
        if (strlen(norm) != len || schema_normalize(again, norm, len) != 0 ||
            strcmp(again, norm) != 0) {
            abort();
        }
        for (size_t i = 0; i < len; i++) {
            if ((norm[i] >= 'A' && norm[i] <= 'Z') || (unsigned char)norm[i] <= 0x20) {
                abort();
            }
        }
        const char *dom = schema_domain(norm);
        if (dom != NULL && (dom <= norm || dom[-1] != '@' || strchr(dom, '@') != NULL ||
                            dom[0] == '\0')) {
            abort();
        }
        char key[SCHEMA_MAX_LOGIN_LEN + 32];
        int kl = schema_key(key, sizeof(key), SCHEMA_DEFAULT_PREFIX, SCHEMA_USER, norm);
        if (kl < 0 || (size_t)kl != strlen(key) || strcmp(key + kl - len, norm) != 0) {
            abort();
        }
        if (schema_key(key, 8, SCHEMA_DEFAULT_PREFIX, SCHEMA_USER, norm) != -1 ||
            strlen(key) != 7) {
            abort(); /* too small: refused, and still a C string */
        }
    }
    /* an event message */
    if (schema_parse_event(&type, arg, p, len) == 0) {
        int n = snprintf(msg, sizeof(msg), "%s %s", schema_event_name(type), arg);
        if (n < 0 || (size_t)n >= sizeof(msg) || (size_t)n != len ||
            strncasecmp(msg, p, len) != 0 || schema_parse_event(&type2, again, msg, (size_t)n) != 0 ||
            type2 != type || strcmp(again, arg) != 0) {
            abort(); /* the message says exactly the event, nothing after */
        }
    }
    /* a host list */
    struct schema_host *h;
    size_t num;
    if (schema_parse_hosts(&h, &num, p, len, err, sizeof(err)) == 0) {
        fuzz_check_hosts(h, num);
        fuzz_hosts_round_trip(h, num);
        free(h);
    } else {
        fuzz_refused(err);
        if (h != NULL || num != 0) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_items it;
    const char *f[FUZZ_MAX_ITEMS / 2], *v[FUZZ_MAX_ITEMS / 2];
    size_t fl[FUZZ_MAX_ITEMS / 2], vl[FUZZ_MAX_ITEMS / 2];
    size_t num = 0;

    fuzz_split(&it, data, size);
    for (size_t i = 0; i + 1 < it.num; i += 2) {
        f[num] = it.p[i];
        fl[num] = it.len[i];
        v[num] = it.p[i + 1];
        vl[num] = it.len[i + 1];
        num++;
    }
    fuzz_user(&it, f, fl, v, vl, num);
    fuzz_domain(&it, f, fl, v, vl, num);
    fuzz_backend(f, fl, v, vl, num);
    for (size_t i = 0; i < it.num; i++) {
        fuzz_one_item(it.p[i], it.len[i]);
    }
    return 0;
}
