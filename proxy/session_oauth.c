/* session_oauth: AUTHENTICATE OAUTHBEARER (RFC 7628) and XOAUTH2 from the
 * session's side.  The token is checked first (proxy/oauth.c); then the
 * login runs the usual steps (lookup, delay, cache, verify, backend) as the
 * token's identity, so that routing, account state, brute-force counters and
 * limits apply as to a password login.  A refused token still runs the steps
 * as the claimed user (when the client named one), so that the counters see
 * the failure, and its verify step refuses.  Every refusal of an OAuth login
 * answers with the error challenge of RFC 7628 section 3.2.2, waits for the
 * client's dummy reply (AQ==) and only then sends the tagged NO (3.2.3). */
#include "proxy/session_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include <openssl/mem.h>

#include "common/log.h"
#include "common/sasl_oauth.h"
#include "common/schema.h"
#include "common/secret.h"
#include "proxy/conn.h"
#include "proxy/metrics.h"
#include "proxy/oauth.h"

const char *session_oauth_capa(const struct session *s)
{
    const struct config_oauth *o = &s->cfg->oauth;
    if (!o->enabled || !oauth_running()) {
        return "";
    }
    if (o->oauthbearer && o->xoauth2) {
        return " AUTH=OAUTHBEARER AUTH=XOAUTH2";
    }
    return o->oauthbearer ? " AUTH=OAUTHBEARER" : o->xoauth2 ? " AUTH=XOAUTH2" : "";
}

int session_oauth_mech(const struct session *s, const char *name)
{
    const struct config_oauth *o = &s->cfg->oauth;
    if (!o->enabled || !oauth_running()) {
        return 0;
    }
    if (o->oauthbearer && strcasecmp(name, "OAUTHBEARER") == 0) {
        return SASL_OAUTH_BEARER;
    }
    if (o->xoauth2 && strcasecmp(name, "XOAUTH2") == 0) {
        return SASL_OAUTH_XOAUTH2;
    }
    return 0;
}

/* session_oauth_login starts the login steps for user with the token as
 * the credential (for a backend that takes the token itself). */
static void session_oauth_login(struct session *s, const char *user, const char *token)
{
    session_login_start(s, s->tag, NULL, user, strlen(user), token);
}

/* session_oauth_entry returns the oauth entry of the login in flight. */
static const struct config_oauth_domain *session_oauth_entry(const struct session *s)
{
    for (size_t i = 0; s->oauth_domain != NULL && i < s->cfg->oauth.num_domains; i++) {
        if (strcmp(s->cfg->oauth.domains[i].domain, s->oauth_domain) == 0) {
            return &s->cfg->oauth.domains[i];
        }
    }
    return NULL;
}

static void session_on_oauth(void *ctx, const struct oauth_result *r)
{
    struct session *s = ctx;
    char id[SCHEMA_MAX_LOGIN_LEN + 1];
    char *token = s->password; /* kept here while the token was checked */

    s->password = NULL;
    s->pending--;
    if (s->state != SESSION_LOGGING_IN) {
        secret_free_str(token);
        session_maybe_free(s);
        return;
    }
    /* back to pre-auth for a moment: session_login_start sets the state */
    if (r->status == OAUTH_UNAVAILABLE) {
        secret_free_str(token);
        s->oauth_state = SESSION_OAUTH_INVALID;
        session_login_refuse(s, LOGIN_REFUSE_TOKEN_UNAVAILABLE, NULL, r->reason);
        return;
    }
    if (r->status == OAUTH_VALID) {
        if (schema_normalize(id, r->identity, strlen(r->identity)) != 0) {
            secret_free_str(token);
            s->oauth_state = SESSION_OAUTH_INVALID;
            session_login_refuse(s, LOGIN_REFUSE_TOKEN, NULL, "unusable identity in the token");
            return;
        }
        if (s->user[0] != '\0' && strcmp(s->user, id) != 0) {
            /* the authzid (or user=) must be the token's own identity */
            secret_free_str(token);
            s->oauth_state = SESSION_OAUTH_INVALID;
            session_login_refuse(s, LOGIN_REFUSE_AUTHZID, NULL, "not the token's identity");
            return;
        }
        const struct config_oauth_domain *d = config_oauth_find(&s->cfg->oauth, id);
        if (d == NULL || strcmp(d->domain, s->oauth_domain) != 0) {
            /* an issuer vouches for the logins of its own domain entry only */
            secret_free_str(token);
            s->oauth_state = SESSION_OAUTH_INVALID;
            session_login_refuse(s, LOGIN_REFUSE_TOKEN, NULL,
                                 "identity outside the domain of the issuer");
            return;
        }
        session_log(s, LOG_DEBUG, "oauth: token valid%s", r->cached ? " (cached)" : "");
        s->oauth_state = SESSION_OAUTH_VALID;
        session_oauth_login(s, id, token);
        secret_free_str(token);
        return;
    }
    s->oauth_state = SESSION_OAUTH_INVALID;
    session_log(s, LOG_INFO, "oauth: token refused: %s", r->reason);
    if (s->user[0] != '\0') {
        /* the claimed user's counters see the failure: run the steps */
        char claimed[SCHEMA_MAX_LOGIN_LEN + 1];
        snprintf(claimed, sizeof(claimed), "%s", s->user); /* s->user is set anew */
        session_oauth_login(s, claimed, token);
    } else {
        session_login_refuse(s, LOGIN_REFUSE_TOKEN, NULL, r->reason);
    }
    secret_free_str(token);
}

void session_oauth_start(struct session *s, const char *b64, size_t len)
{
    struct sasl_oauth m;
    s->login_mech = s->oauth_mech == SASL_OAUTH_BEARER ? METRICS_MECH_OAUTHBEARER
                                                       : METRICS_MECH_XOAUTH2;
    int r = sasl_oauth_decode(&m, (enum sasl_oauth_mech)s->oauth_mech, b64, len);
    if (r != 0) {
        s->oauth_mech = 0;
        s->bad_commands++;
        session_sendf(s, "%s BAD Invalid SASL message: %s\r\n", s->tag, sasl_oauth_strerror(r));
        return;
    }
    s->oauth_state = SESSION_OAUTH_NONE;
    s->oauth_domain = NULL;
    char claimed[SCHEMA_MAX_LOGIN_LEN + 1] = "";
    (void)session_name_set(&s->auth_user, "");
    if (m.user[0] != '\0' && schema_normalize(claimed, m.user, strlen(m.user)) != 0) {
        (void)session_name_set(&s->user, "");
        sasl_oauth_cleanup(&m);
        s->oauth_state = SESSION_OAUTH_INVALID;
        session_login_refuse(s, LOGIN_REFUSE_BAD_NAME, NULL, NULL);
        return;
    }
    if (session_name_set(&s->user, claimed) != 0) {
        sasl_oauth_cleanup(&m);
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        return;
    }
    const struct config_oauth_domain *d = config_oauth_find(&s->cfg->oauth, s->user);
    if (d == NULL) {
        sasl_oauth_cleanup(&m);
        s->oauth_state = SESSION_OAUTH_INVALID;
        session_login_refuse(s, LOGIN_REFUSE_TOKEN, NULL,
                             s->user[0] != '\0' ? "no oauth entry for the domain"
                                                : "no user named and no \"*\" oauth entry");
        return;
    }
    s->oauth_domain = d->domain;
    session_login_clear(s);
    /* the login's duration (metrics) counts the token check, as step lookup */
    s->login_t0_ns = s->step_t0_ns = uv_hrtime();
    s->login_step = LOGIN_STEP_LOOKUP;
    s->password = malloc(m.token_len + 1);
    if (s->password == NULL) {
        sasl_oauth_cleanup(&m);
        session_login_refuse(s, LOGIN_REFUSE_INTERNAL, NULL, "out of memory");
        return;
    }
    memcpy(s->password, m.token, m.token_len + 1);
    s->pending++;
    r = oauth_validate(s->env->loop, s->client_ip, d->domain, m.token, m.token_len,
                       session_on_oauth, s);
    sasl_oauth_cleanup(&m);
    if (r != 0) {
        s->pending--;
        session_wipe(&s->password);
        s->oauth_state = SESSION_OAUTH_INVALID;
        session_login_refuse(s, r == UV_E2BIG ? LOGIN_REFUSE_TOKEN : LOGIN_REFUSE_TOKEN_UNAVAILABLE,
                             NULL,
                             r == UV_E2BIG    ? "token too long"
                             : r == UV_ENOENT ? "oauth entry not known since start-up (restart)"
                             : r == UV_EBUSY  ? "token check queue full"
                                              : "token check not running");
        return;
    }
    session_set_state(s, SESSION_LOGGING_IN);
    s->login_step = LOGIN_STEP_LOOKUP;
    conn_read_stop(s->client);
}

enum login_next session_oauth_verify(struct session *s)
{
    if (s->login_flags & SESSION_L_BLOCKED) {
        session_login_refuse(s, LOGIN_REFUSE_BLOCKED, NULL, NULL);
        return LOGIN_END;
    }
    if (s->login_flags & SESSION_L_NO_ROUTE) {
        session_login_refuse(s, LOGIN_REFUSE_NO_ROUTE, NULL, NULL);
        return LOGIN_END;
    }
    if (s->oauth_state != SESSION_OAUTH_VALID) {
        session_login_refuse(s, LOGIN_REFUSE_TOKEN, NULL, NULL);
        return LOGIN_END;
    }
    if (s->login_flags & SESSION_L_DISABLED) {
        session_login_refuse(s, LOGIN_REFUSE_DISABLED, NULL, NULL);
        return LOGIN_END;
    }
    s->login_step = LOGIN_STEP_LIMIT; /* the session limits, as after a password */
    return LOGIN_GO;
}

int session_oauth_refused(struct session *s, const char *code, const char *text)
{
    if (s->oauth_mech == 0) {
        return 0;
    }
    const struct config_oauth_domain *d = session_oauth_entry(s);
    const char *status = strcmp(code, "UNAVAILABLE") == 0 ? "temporarily_unavailable"
                                                          : "invalid_token";
    char *b64 = sasl_oauth_error_b64(status, d != NULL ? d->scope : NULL,
                                     d != NULL ? d->openid_configuration : NULL);
    s->oauth_mech = 0;
    s->oauth_state = SESSION_OAUTH_NONE;
    s->oauth_domain = NULL;
    if (b64 == NULL) {
        return 0;
    }
    s->oauth_no_code = code;
    s->oauth_no_text = text;
    s->flags |= SESSION_F_OAUTH_FAIL | SESSION_F_AUTH_CONT;
    if (s->parser != NULL) {
        imap_parser_set_line_mode(s->parser);
    }
    session_sendf(s, "+ %s\r\n", b64);
    free(b64);
    return 1;
}

void session_oauth_reply(struct session *s)
{
    s->flags &= ~SESSION_F_OAUTH_FAIL;
    session_sendf(s, "%s NO [%s] %s\r\n", s->tag, s->oauth_no_code, s->oauth_no_text);
    s->oauth_no_code = NULL;
    s->oauth_no_text = NULL;
}

int session_oauth_routed(struct session *s)
{
    char key[2 * OAUTH_KEY_LEN + 1];
    if (s->oauth_mech == 0 || s->password == NULL ||
        (s->oauth_state == SESSION_OAUTH_VALID && s->route->auth != CONFIG_BACKEND_AUTH_MASTER)) {
        return 0;
    }
    int r = oauth_token_key(key, s->password, strlen(s->password));
    session_wipe(&s->password);
    if (r == 0) {
        s->password = strdup(key);
    }
    OPENSSL_cleanse(key, sizeof(key));
    return s->password != NULL ? 0 : UV_ENOMEM;
}
