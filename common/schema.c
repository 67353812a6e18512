#include "common/schema.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void schema_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void schema_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || err_len == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

int schema_normalize(char *out, const char *login, size_t len)
{
    if (len == 0 || len > SCHEMA_MAX_LOGIN_LEN) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)login[i];
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '\\') {
            return -1;
        }
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[len] = '\0';
    return 0;
}

const char *schema_domain(const char *login)
{
    const char *at = strrchr(login, '@');
    return at != NULL && at[1] != '\0' ? at + 1 : NULL;
}

int schema_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > SCHEMA_MAX_NAME_LEN) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

static const char *const schema_kind_names[] = {
    "user:", "domain:", "backend:", "events", "bf:ip:", "bf:login:", "kick:", "bf:pair:",
    "bf:ok:", "sess:",
};

int schema_key(char *out, size_t out_len, const char *prefix, enum schema_kind kind,
               const char *name)
{
    int n;
    if (kind == SCHEMA_EVENTS) {
        n = snprintf(out, out_len, "%s%s", prefix, schema_kind_names[kind]);
    } else {
        n = snprintf(out, out_len, "%s%s%s", prefix, schema_kind_names[kind], name);
    }
    return n < 0 || (size_t)n >= out_len ? -1 : n;
}

/* --- hashes ----------------------------------------------------------------- */

static int schema_field_is(const char *f, size_t flen, const char *name)
{
    return strlen(name) == flen && memcmp(f, name, flen) == 0;
}

static int schema_value_is(const char *v, size_t vlen, const char *word)
{
    return strlen(word) == vlen && strncasecmp(v, word, vlen) == 0;
}

/* schema_dup copies a field value; values holding NUL are refused. */
static int schema_dup(char **dst, const char *field, const char *v, size_t vlen, char *err,
                      size_t err_len)
{
    if (vlen == 0 || memchr(v, '\0', vlen) != NULL) {
        schema_err(err, err_len, "field %s: empty or not text", field);
        return -1;
    }
    char *d = malloc(vlen + 1);
    if (d == NULL) {
        schema_err(err, err_len, "out of memory");
        return -1;
    }
    memcpy(d, v, vlen);
    d[vlen] = '\0';
    free(*dst);
    *dst = d;
    return 0;
}

int schema_parse_user(struct schema_user *u, const char *const *fields, const size_t *flens,
                      const char *const *values, const size_t *vlens, size_t num,
                      char *err, size_t err_len)
{
    memset(u, 0, sizeof(*u));
    for (size_t i = 0; i < num; i++) {
        const char *f = fields[i];
        size_t fl = flens[i];
        int r = 0;
        if (schema_field_is(f, fl, "password")) {
            r = schema_dup(&u->password, "password", values[i], vlens[i], err, err_len);
        } else if (schema_field_is(f, fl, "backend")) {
            r = schema_dup(&u->backend, "backend", values[i], vlens[i], err, err_len);
            if (r == 0 && !schema_name_valid(u->backend)) {
                schema_err(err, err_len, "field backend: not a backend name");
                r = -1;
            }
        } else if (schema_field_is(f, fl, "login_as")) {
            char norm[SCHEMA_MAX_LOGIN_LEN + 1];
            if (schema_normalize(norm, values[i], vlens[i]) == 0) {
                r = schema_dup(&u->login_as, "login_as", values[i], vlens[i], err, err_len);
            } else {
                /* whether or not an earlier login_as field was read */
                schema_err(err, err_len, "field login_as: not a usable login");
                r = -1;
            }
        } else if (schema_field_is(f, fl, "state")) {
            if (schema_value_is(values[i], vlens[i], "active")) {
                u->state = SCHEMA_ACTIVE;
            } else if (schema_value_is(values[i], vlens[i], "disabled")) {
                u->state = SCHEMA_DISABLED;
            } else {
                schema_err(err, err_len, "field state: expected active or disabled");
                r = -1;
            }
        }
        if (r != 0) {
            schema_user_free(u);
            return -1;
        }
    }
    return 0;
}

int schema_parse_domain(struct schema_domain *d, const char *const *fields, const size_t *flens,
                        const char *const *values, const size_t *vlens, size_t num,
                        char *err, size_t err_len)
{
    memset(d, 0, sizeof(*d));
    for (size_t i = 0; i < num; i++) {
        int r = 0;
        if (schema_field_is(fields[i], flens[i], "backend")) {
            r = schema_dup(&d->backend, "backend", values[i], vlens[i], err, err_len);
            if (r == 0 && !schema_name_valid(d->backend)) {
                schema_err(err, err_len, "field backend: not a backend name");
                r = -1;
            }
        } else if (schema_field_is(fields[i], flens[i], "auth")) {
            if (schema_value_is(values[i], vlens[i], "local")) {
                d->auth = SCHEMA_AUTH_LOCAL;
            } else if (schema_value_is(values[i], vlens[i], "passthrough")) {
                d->auth = SCHEMA_AUTH_PASSTHROUGH;
            } else {
                schema_err(err, err_len, "field auth: expected local or passthrough");
                r = -1;
            }
        }
        if (r != 0) {
            schema_domain_free(d);
            return -1;
        }
    }
    return 0;
}

/* schema_parse_one reads "host:port" or "[v6]:port". */
static int schema_parse_one(struct schema_host *h, const char *s, size_t len, char *err,
                            size_t err_len)
{
    const char *host = s, *colon;
    size_t hlen;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL || close + 1 >= s + len || close[1] != ':') {
            schema_err(err, err_len, "host %.*s: expected [address]:port", (int)len, s);
            return -1;
        }
        host = s + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = NULL;
        for (size_t i = len; i > 0; i--) {
            if (s[i - 1] == ':') {
                colon = s + i - 1;
                break;
            }
        }
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL) {
            schema_err(err, err_len, "host %.*s: expected host:port ([address]:port for IPv6)",
                       (int)len, s);
            return -1;
        }
        hlen = (size_t)(colon - s);
    }
    if (hlen == 0 || hlen >= sizeof(h->host)) {
        schema_err(err, err_len, "host %.*s: empty or too long host", (int)len, s);
        return -1;
    }
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c <= 0x20 || c >= 0x7f || c == '/' || c == ',' || c == '@') {
            schema_err(err, err_len, "host %.*s: invalid character in host", (int)len, s);
            return -1;
        }
    }
    const char *p = colon + 1;
    size_t plen = (size_t)(s + len - p);
    unsigned long port = 0;
    if (plen == 0 || plen > 5) {
        schema_err(err, err_len, "host %.*s: expected a port 1-65535", (int)len, s);
        return -1;
    }
    for (size_t i = 0; i < plen; i++) {
        if (p[i] < '0' || p[i] > '9') {
            schema_err(err, err_len, "host %.*s: expected a port 1-65535", (int)len, s);
            return -1;
        }
        port = port * 10 + (unsigned long)(p[i] - '0');
    }
    if (port == 0 || port > 65535) {
        schema_err(err, err_len, "host %.*s: expected a port 1-65535", (int)len, s);
        return -1;
    }
    memcpy(h->host, host, hlen);
    h->host[hlen] = '\0';
    h->port = (uint16_t)port;
    h->down = 0;
    return 0;
}

int schema_parse_hosts(struct schema_host **out, size_t *num, const char *list, size_t len,
                       char *err, size_t err_len)
{
    struct schema_host *hosts = NULL;
    size_t n = 0;
    size_t i = 0;

    *out = NULL;
    *num = 0;
    while (i <= len) {
        size_t start = i;
        while (i < len && list[i] != ',') {
            i++;
        }
        size_t a = start, b = i;
        while (a < b && (list[a] == ' ' || list[a] == '\t')) {
            a++;
        }
        while (b > a && (list[b - 1] == ' ' || list[b - 1] == '\t')) {
            b--;
        }
        if (a == b) {
            schema_err(err, err_len, "empty entry in host list");
            free(hosts);
            return -1;
        }
        if (n == SCHEMA_MAX_HOSTS) {
            schema_err(err, err_len, "more than %d hosts", SCHEMA_MAX_HOSTS);
            free(hosts);
            return -1;
        }
        struct schema_host *nh = realloc(hosts, (n + 1) * sizeof(*hosts));
        if (nh == NULL) {
            schema_err(err, err_len, "out of memory");
            free(hosts);
            return -1;
        }
        hosts = nh;
        if (schema_parse_one(&hosts[n], list + a, b - a, err, err_len) != 0) {
            free(hosts);
            return -1;
        }
        for (size_t j = 0; j < n; j++) {
            if (hosts[j].port == hosts[n].port && strcasecmp(hosts[j].host, hosts[n].host) == 0) {
                schema_err(err, err_len, "host %s:%u listed twice", hosts[n].host,
                           (unsigned)hosts[n].port);
                free(hosts);
                return -1;
            }
        }
        n++;
        i++; /* past the comma (or the end) */
    }
    *out = hosts;
    *num = n;
    return 0;
}

int schema_parse_backend(struct schema_backend *b, const char *const *fields,
                         const size_t *flens, const char *const *values, const size_t *vlens,
                         size_t num, char *err, size_t err_len)
{
    const char *down = NULL;
    size_t down_len = 0;

    memset(b, 0, sizeof(*b));
    for (size_t i = 0; i < num; i++) {
        if (schema_field_is(fields[i], flens[i], "hosts")) {
            free(b->hosts);
            if (schema_parse_hosts(&b->hosts, &b->num_hosts, values[i], vlens[i], err,
                                   err_len) != 0) {
                return -1;
            }
        } else if (schema_field_is(fields[i], flens[i], "down")) {
            down = values[i];
            down_len = vlens[i];
        }
    }
    if (b->num_hosts == 0) {
        schema_err(err, err_len, "field hosts: missing");
        return -1;
    }
    if (down != NULL && down_len > 0) {
        struct schema_host *dh;
        size_t dn;
        if (schema_parse_hosts(&dh, &dn, down, down_len, err, err_len) != 0) {
            schema_backend_free(b);
            return -1;
        }
        for (size_t i = 0; i < dn; i++) {
            for (size_t j = 0; j < b->num_hosts; j++) {
                if (b->hosts[j].port == dh[i].port &&
                    strcasecmp(b->hosts[j].host, dh[i].host) == 0) {
                    b->hosts[j].down = 1;
                }
            }
        }
        free(dh);
    }
    return 0;
}

void schema_user_free(struct schema_user *u)
{
    if (u->password != NULL) {
        /* a hash, not a secret, but no reason to leave it around */
        memset(u->password, 0, strlen(u->password));
    }
    free(u->password);
    free(u->backend);
    free(u->login_as);
    memset(u, 0, sizeof(*u));
}

void schema_domain_free(struct schema_domain *d)
{
    free(d->backend);
    memset(d, 0, sizeof(*d));
}

void schema_backend_free(struct schema_backend *b)
{
    free(b->hosts);
    memset(b, 0, sizeof(*b));
}

/* --- events ----------------------------------------------------------------- */

static const char *const schema_event_names[] = {"kick", "route", "backend", "domain"};

const char *schema_event_name(enum schema_event_type type)
{
    return schema_event_names[type];
}

int schema_parse_event(enum schema_event_type *type, char *arg, const char *msg, size_t len)
{
    for (size_t t = 0; t < sizeof(schema_event_names) / sizeof(schema_event_names[0]); t++) {
        size_t n = strlen(schema_event_names[t]);
        if (len > n + 1 && memcmp(msg, schema_event_names[t], n) == 0 && msg[n] == ' ') {
            const char *a = msg + n + 1;
            size_t alen = len - n - 1;
            if (t == SCHEMA_EV_BACKEND) {
                /* backend names are case-sensitive, as in the configuration;
                 * a NUL would end the name early ("backend a\0junk") */
                if (alen > SCHEMA_MAX_NAME_LEN || memchr(a, '\0', alen) != NULL) {
                    return -1;
                }
                memcpy(arg, a, alen);
                arg[alen] = '\0';
                if (!schema_name_valid(arg)) {
                    return -1;
                }
            } else if (schema_normalize(arg, a, alen) != 0) {
                return -1;
            }
            *type = (enum schema_event_type)t;
            return 0;
        }
    }
    return -1;
}
