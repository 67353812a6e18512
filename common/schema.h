/* schema: the routing table's keys in Redis, shared by the daemon and
 * imapmuxctl so that both read and write the same thing.  Pure code.
 *
 *   <prefix>user:<login>     HASH  password  crypt or argon2id hash (absent:
 *                                            the backend checks the password)
 *                                  backend   backend name (absent: domain route)
 *                                  login_as  login sent to the backend (rename)
 *                                  state     active | disabled (absent: active)
 *   <prefix>domain:<domain>  HASH  backend   backend name
 *                                  auth      local | passthrough: whether logins
 *                                            of this domain without a user hash
 *                                            are refused or passed through
 *   <prefix>backend:<name>   HASH  hosts     host:port[,host:port...] ([v6]:port)
 *                                  down      hosts (same form) taken out of use
 *   <prefix>events           channel: "kick <login>", "route <login>",
 *                                  "backend <name>", "domain <domain>"
 *   <prefix>bf:ip:<address>, <prefix>bf:login:<login>,
 *   <prefix>bf:pair:<login> <address>
 *                            STRING counters of attempts that did not prove the
 *                            password, with a TTL (an IPv6 address by its prefix)
 *   <prefix>bf:ok:<login> <address>
 *                            STRING the address logged in for the login lately
 *   <prefix>kick:<login>     STRING the login's kick generation: incremented
 *                            before each kick is published, so that an
 *                            instance that missed the event while away from
 *                            Redis finds it when it looks its sessions up again
 *
 * The prefix defaults to "imapmux:".  Logins and domains are normalised by
 * schema_normalize (ASCII lowercase) before they become part of a key. */
#ifndef IMAPMUX_COMMON_SCHEMA_H
#define IMAPMUX_COMMON_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#define SCHEMA_DEFAULT_PREFIX "imapmux:"
#define SCHEMA_MAX_LOGIN_LEN 255  /* bytes of a login name */
#define SCHEMA_MAX_NAME_LEN 64    /* bytes of a backend name */
#define SCHEMA_MAX_HOSTS 64       /* hosts per backend */

/* schema_normalize copies a login (or domain) of len bytes into out (at
 * least SCHEMA_MAX_LOGIN_LEN + 1 bytes), ASCII-lowercased.  Returns 0, or -1
 * when it is empty, longer than SCHEMA_MAX_LOGIN_LEN, or holds a byte that
 * cannot be part of a login (controls, space, DEL, '"', '\\'). */
int schema_normalize(char *out, const char *login, size_t len);

/* schema_domain returns the part after the last '@' of a normalised login,
 * or NULL without one. */
const char *schema_domain(const char *login);

/* schema_name_valid: a backend name is 1..SCHEMA_MAX_NAME_LEN bytes of
 * [A-Za-z0-9._-]. */
int schema_name_valid(const char *name);

enum schema_kind { SCHEMA_USER, SCHEMA_DOMAIN, SCHEMA_BACKEND, SCHEMA_EVENTS,
                   SCHEMA_BF_IP, SCHEMA_BF_LOGIN, SCHEMA_KICK, SCHEMA_BF_PAIR, SCHEMA_BF_OK,
                   SCHEMA_SESSIONS };

/* A kick's generation lives this long (s): a session older than that is not
 * kicked by a re-check that missed the event. */
#define SCHEMA_KICK_TTL_S 2592000

/* schema_key writes "<prefix><kind>:<name>" (or "<prefix>events") into out;
 * returns its length, or -1 if it does not fit. */
int schema_key(char *out, size_t out_len, const char *prefix, enum schema_kind kind,
               const char *name);

enum schema_state { SCHEMA_ACTIVE, SCHEMA_DISABLED };
enum schema_auth { SCHEMA_AUTH_DEFAULT, SCHEMA_AUTH_LOCAL, SCHEMA_AUTH_PASSTHROUGH };

/* A user hash.  Strings are NULL when the field is absent. */
struct schema_user {
    char *password;
    char *backend;
    char *login_as;
    enum schema_state state;
};

struct schema_domain {
    char *backend;
    enum schema_auth auth;
};

struct schema_host {
    char host[256]; /* name or numeric address, without brackets */
    uint16_t port;
    int down;       /* listed in "down" */
};

struct schema_backend {
    struct schema_host *hosts;
    size_t num_hosts;
};

/* The parsers take a hash as HGETALL returns it: fields[i] / values[i] with
 * their lengths.  Unknown fields are ignored (newer tools may add some).
 * They return 0, or -1 with a reason in err for a value they cannot use;
 * on -1 nothing needs freeing. */
int schema_parse_user(struct schema_user *u, const char *const *fields, const size_t *flens,
                      const char *const *values, const size_t *vlens, size_t num,
                      char *err, size_t err_len);
int schema_parse_domain(struct schema_domain *d, const char *const *fields, const size_t *flens,
                        const char *const *values, const size_t *vlens, size_t num,
                        char *err, size_t err_len);
int schema_parse_backend(struct schema_backend *b, const char *const *fields,
                         const size_t *flens, const char *const *values, const size_t *vlens,
                         size_t num, char *err, size_t err_len);
void schema_user_free(struct schema_user *u);
void schema_domain_free(struct schema_domain *d);
void schema_backend_free(struct schema_backend *b);

/* schema_parse_hosts parses "host:port[,host:port...]" ("[v6]:port" for IPv6
 * addresses) into a new array (*out, *num).  Returns 0 or -1 with err. */
int schema_parse_hosts(struct schema_host **out, size_t *num, const char *list, size_t len,
                       char *err, size_t err_len);

enum schema_event_type { SCHEMA_EV_KICK, SCHEMA_EV_ROUTE, SCHEMA_EV_BACKEND, SCHEMA_EV_DOMAIN };

/* schema_parse_event reads "kick alice@example.com" etc.; the argument is
 * normalised into arg (SCHEMA_MAX_LOGIN_LEN + 1 bytes).  Returns 0 or -1. */
int schema_parse_event(enum schema_event_type *type, char *arg, const char *msg, size_t len);

/* schema_event_name: "kick", "route", "backend", "domain". */
const char *schema_event_name(enum schema_event_type type);

#endif
