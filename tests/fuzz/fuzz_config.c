/* Fuzz target of the configuration parser: the input is a YAML configuration
 * given to config_parse.  Properties: a refusal leaves a NUL-terminated
 * message that names the file; a snapshot holds only what loading promises
 * (at least one backend, each with a valid name and at least one host, the
 * first host copied to host/port, routes pointing into the backends, every
 * limit above zero), routes look up to their backend, and parsing the same
 * bytes twice gives the same answer. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

#define FUZZ_ERR_LEN 256
#define FUZZ_NAME "fuzz.yaml"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* a *_file key may name /dev/stdin: never wait on a terminal */
    if (freopen("/dev/null", "r", stdin) == NULL) {
        abort();
    }
    return 0;
}

static int fuzz_is_backend(const struct config *c, const struct config_backend *b)
{
    return b >= c->backends && b < c->backends + c->num_backends;
}

static void fuzz_check_routes(const struct config *c, const struct config_route *r, size_t num,
                              int users)
{
    for (size_t i = 0; i < num; i++) {
        if (r[i].key == NULL || !fuzz_is_backend(c, r[i].backend)) {
            abort();
        }
        for (const char *p = r[i].key; *p; p++) {
            if (*p >= 'A' && *p <= 'Z') {
                abort(); /* keys are stored lowercased */
            }
        }
        if (users && config_route_lookup(c, r[i].key) != r[i].backend) {
            abort();
        }
    }
}

static void fuzz_check(const struct config *c)
{
    if (c->num_backends == 0 || c->path == NULL || strcmp(c->path, FUZZ_NAME) != 0 ||
        c->instance == NULL) {
        abort();
    }
    for (size_t i = 0; i < c->num_backends; i++) {
        const struct config_backend *b = &c->backends[i];
        if (b->name == NULL || strlen(b->name) == 0 || strlen(b->name) > SCHEMA_MAX_NAME_LEN ||
            config_find_backend(c, b->name) != b || b->num_hosts == 0 || b->hosts == NULL ||
            b->host == NULL || strcmp(b->host, b->hosts[0].host) != 0 ||
            b->port != b->hosts[0].port) {
            abort();
        }
        for (size_t h = 0; h < b->num_hosts; h++) {
            if (b->hosts[h].port == 0 || memchr(b->hosts[h].host, '\0',
                                                sizeof(b->hosts[h].host)) == NULL) {
                abort();
            }
        }
        if (b->auth == CONFIG_BACKEND_AUTH_MASTER &&
            (b->master_user == NULL || b->master_password == NULL)) {
            abort();
        }
    }
    if (c->default_backend != NULL && !fuzz_is_backend(c, c->default_backend)) {
        abort();
    }
    fuzz_check_routes(c, c->user_routes, c->num_user_routes, 1);
    fuzz_check_routes(c, c->domain_routes, c->num_domain_routes, 0);
    for (size_t i = 0; i < c->num_listeners; i++) {
        if (c->listeners[i].address == NULL || c->listeners[i].port == 0) {
            abort();
        }
    }
    if (c->max_line_len == 0 || c->max_preauth_literal_len == 0 || c->max_auth_failures == 0 ||
        c->preauth_timeout_ms == 0 || c->idle_timeout_ms == 0 || c->drain_timeout_ms == 0 ||
        c->backend_connect_timeout_ms == 0 || c->backend_greeting_timeout_ms == 0 ||
        c->relay_buffer_len == 0) {
        abort();
    }
    if (c->redis.enabled && (c->redis.prefix == NULL ||
                             (c->redis.host == NULL && c->redis.num_sentinels == 0))) {
        abort();
    }
    if (c->audit.to_redis && (c->audit.redis_host == NULL || c->audit.redis_key == NULL)) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err1[FUZZ_ERR_LEN], err2[FUZZ_ERR_LEN];
    struct config *c1, *c2;

    memset(err1, 'X', sizeof(err1));
    memset(err2, 'Y', sizeof(err2));
    c1 = config_parse(err1, sizeof(err1), FUZZ_NAME, (const char *)data, size);
    c2 = config_parse(err2, sizeof(err2), FUZZ_NAME, (const char *)data, size);
    if ((c1 == NULL) != (c2 == NULL)) {
        abort();
    }
    if (c1 == NULL) {
        if (memchr(err1, '\0', sizeof(err1)) == NULL || strcmp(err1, err2) != 0 ||
            strncmp(err1, FUZZ_NAME ":", strlen(FUZZ_NAME ":")) != 0) {
            abort();
        }
        return 0;
    }
    fuzz_check(c1);
    if (c1->num_backends != c2->num_backends || c1->num_user_routes != c2->num_user_routes ||
        c1->num_domain_routes != c2->num_domain_routes ||
        c1->num_listeners != c2->num_listeners) {
        abort();
    }
    struct config *extra = config_ref(c1);
    config_unref(&extra);
    if (extra != NULL) {
        abort();
    }
    config_unref(&c1);
    config_unref(&c2);
    return 0;
}
