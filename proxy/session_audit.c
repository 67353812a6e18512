#include "proxy/session_private.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include <openssl/mem.h>

#include "common/audit_tap.h"
#include "common/json.h"
#include "common/log.h"
#include "proxy/audit.h"
#include "proxy/conn.h"

/* --- audit records ---------------------------------------------------------- */

#define SESSION_AUDIT_SUMMARY_US 1000000 /* a preauth_summary at most this often (us) */

uint64_t session_mono_us(void)
{
    return uv_hrtime() / 1000u;
}

/* session_audit_begin starts a record of type with the session's context. */
static void session_audit_begin(struct session *s, struct json *j, char *buf, size_t cap,
                                const char *type)
{
    char ts[32], addr[320];
    audit_time(ts, audit_now_us());
    json_begin(j, buf, cap);
    json_str(j, "time", ts);
    json_str(j, "instance", s->cfg->instance);
    json_str(j, "type", type);
    json_str(j, "session", s->id);
    json_str(j, "client", s->client_ip);
    json_u64(j, "client_port", s->client_port);
    snprintf(addr, sizeof(addr), strchr(s->listener->address, ':') ? "[%s]:%u" : "%s:%u",
             s->listener->address, (unsigned)s->listener->port);
    json_str(j, "listener", addr);
    if ((s->flags & SESSION_F_TLS) && s->client != NULL) {
        json_str(j, "tls", session_tls_version(s));
        json_str(j, "cipher", session_tls_cipher(s));
    }
    if (s->listener->proxy_protocol) {
        json_str(j, "via", s->peer_ip); /* the balancer that sent the PROXY header */
    }
    if (s->user[0] != '\0') {
        json_str(j, "user", s->user);
    }
    if (s->auth_user[0] != '\0') {
        json_str(j, "auth_user", s->auth_user);
    }
    if (s->route != NULL) {
        json_str(j, "backend", s->route_name);
        snprintf(addr, sizeof(addr), strchr(s->host, ':') ? "[%s]:%u" : "%s:%u", s->host,
                 (unsigned)s->port);
        json_str(j, "backend_host", addr);
    }
}

/* session_audit_push ends the record and queues it; a full queue pauses
 * the worker's clients (block) or marks the session for its end (close). */
static void session_audit_push(struct session *s, struct json *j)
{
    size_t len = json_end(j);
    switch (audit_push(s->env->audit, j->buf, len)) {
    case AUDIT_PUSHED:
    case AUDIT_DROPPED:
        break;
    case AUDIT_BLOCKED:
        if (!s->env->audit_paused) {
            session_audit_pause(s->env);
        }
        break;
    case AUDIT_CLOSE:
        s->flags |= SESSION_F_AUDIT_FULL;
        break;
    case AUDIT_NO_ROOM:
        break; /* only audit_push_preauth says it */
    }
}

/* session_audit_full ends a session whose record found the queue full under
 * policy close; returns 1 when it did. */
int session_audit_full(struct session *s)
{
    if (!(s->flags & SESSION_F_AUDIT_FULL) || s->state == SESSION_CLOSING) {
        return 0;
    }
    session_bye(s, "[UNAVAILABLE] Audit log unavailable, try again later", "audit queue full");
    return 1;
}

/* session_audit_logged_in: the session's records are a logged-in one's
 * (the gate is set up at login, before the LOGIN's OK goes out, and lives
 * until the session is freed). */
static int session_audit_logged_in(const struct session *s)
{
    return s->check != NULL;
}

/* session_audit_summary writes a preauth_summary with the commands before
 * login that no record holds yet: in the pre-auth share of the queue
 * (preauth), or as any other record (at login).  What does not fit stays
 * counted for the next one, or for session_end. */
static void session_audit_summary(struct session *s, int preauth)
{
    char buf[AUDIT_RECORD_MAX];
    struct json j;
    s->preauth_summary_us = session_mono_us();
    session_audit_begin(s, &j, buf, sizeof(buf), "preauth_summary");
    json_u64(&j, "unrecorded_commands", s->preauth_unrecorded);
    if (!preauth) {
        session_audit_push(s, &j);
        s->preauth_unrecorded = 0;
    } else if (audit_push_preauth(s->env->audit, j.buf, json_end(&j)) == AUDIT_PUSHED) {
        s->preauth_unrecorded = 0;
    }
}

/* session_audit_preauth_skip counts a command before login that gets no
 * record of its own; a summary follows at most once a second. */
static void session_audit_preauth_skip(struct session *s)
{
    s->preauth_unrecorded++;
    if (s->preauth_summary_us == 0 ||
        session_mono_us() - s->preauth_summary_us >= SESSION_AUDIT_SUMMARY_US) {
        session_audit_summary(s, 1);
    }
}

void session_audit_preauth_end(struct session *s)
{
    if (s->env->audit != NULL && s->preauth_unrecorded > 0) {
        session_audit_summary(s, 0);
    }
}

static void session_on_audit_cmd(void *ctx, const struct audit_cmd *c)
{
    struct session *s = ctx;
    char buf[AUDIT_RECORD_MAX];
    struct json j;
    int preauth = !session_audit_logged_in(s);
    /* a stranger's commands cannot fill the queue: the first few one by
       one, then counted */
    if (preauth && s->preauth_records >= s->cfg->audit.preauth_records) {
        session_audit_preauth_skip(s);
        return;
    }
    session_audit_begin(s, &j, buf, sizeof(buf), "command");
    json_str(&j, "tag", c->tag);
    json_str(&j, "command", c->name);
    json_bool(&j, "uid", c->uid);
    json_fields(&j, c->fields);
    json_str(&j, "status", c->status[0] != '\0' ? c->status : "none");
    if (c->code[0] != '\0') {
        json_str(&j, "code", c->code);
    }
    json_u64(&j, "duration_us", c->end_us - c->start_us);
    json_u64(&j, "bytes_in", c->bytes_in);
    json_u64(&j, "bytes_out", c->bytes_out);
    if (preauth) {
        s->preauth_records++;
        if (audit_push_preauth(s->env->audit, j.buf, json_end(&j)) == AUDIT_PUSHED) {
            s->audit_commands++;
        } else {
            session_audit_preauth_skip(s); /* past the pre-auth share: counted */
        }
        return;
    }
    s->audit_commands++;
    session_audit_push(s, &j);
}

/* session_audit_event writes a record of a session event; reason may be NULL. */
void session_audit_event(struct session *s, const char *type, const char *result,
                                const char *reason)
{
    if (s->env->audit == NULL) {
        return;
    }
    char buf[AUDIT_RECORD_MAX];
    struct json j;
    session_audit_begin(s, &j, buf, sizeof(buf), type);
    if (result != NULL) {
        json_str(&j, "result", result);
    }
    if (reason != NULL) {
        json_str(&j, "reason", reason);
    }
    if (strcmp(type, "session_end") == 0) {
        json_u64(&j, "duration_us", session_mono_us() - s->start_us);
        json_u64(&j, "commands", s->audit_commands);
        if (s->preauth_unrecorded > 0) {
            json_u64(&j, "unrecorded_commands", s->preauth_unrecorded);
        }
        json_u64(&j, "bytes_in", s->bytes_in);
        json_u64(&j, "bytes_out", s->bytes_out);
    }
    session_audit_push(s, &j);
}

/* session_tap_in / session_tap_out: what the client sent (and was taken)
 * and what it is sent.  0, or -1 when the session ended. */
int session_tap_in(struct session *s, const uint8_t *data, size_t len)
{
    if (s->tap == NULL || len == 0) {
        return 0;
    }
    if (audit_tap_client(s->tap, data, len, session_mono_us()) != 0) {
        session_bye(s, "Too many commands in flight", "too many commands in flight");
        return -1;
    }
    return session_audit_full(s) ? -1 : 0;
}

void session_tap_out(struct session *s, const uint8_t *data, size_t len)
{
    if (s->tap != NULL && len > 0) {
        audit_tap_server(s->tap, data, len, session_mono_us());
    }
}

int session_audit_start(struct session *s)
{
    const struct config_audit *ac = &s->cfg->audit;
    const struct audit_tap_opts topts = {
        .seqset_max = ac->seqset_max,
        .search_values = ac->search_values,
        .max_pending = ac->max_pending,
    };
    s->tap = audit_tap_new(&topts, session_on_audit_cmd, s);
    if (s->tap == NULL) {
        return UV_ENOMEM;
    }
    session_audit_event(s, "session_start", NULL, NULL);
    return 0;
}
