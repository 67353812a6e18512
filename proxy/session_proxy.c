/* session_proxy: the PROXY protocol header of a listener behind a load
 * balancer, read before the TLS handshake and before the greeting.  The
 * header's source address becomes the session's client address (logs,
 * audit, caps, brute-force counters, ID forwarding, PROXY out), so the
 * connection caps and the audit's session_start wait for it. */
#include "proxy/session_private.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/proxy_proto.h"
#include "proxy/conn.h"

int session_proxy_begin(struct session *s)
{
    const struct config_listener *l = s->listener;
    if (!proxy_proto_trusted(l->proxy_trusted, l->num_proxy_trusted, s->peer_ip)) {
        /* nothing is sent: an untrusted peer learns nothing, not even a BYE */
        session_log(s, LOG_NOTICE, "PROXY header expected from a trusted network; "
                    "closing the connection from %s", s->peer_ip);
        session_close(s, NULL);
        return 0;
    }
    s->proxy = proxy_proto_new();
    if (s->proxy == NULL) {
        session_close(s, "out of memory");
        return 0;
    }
    s->flags |= SESSION_F_PROXY_WAIT;
    session_set_deadline(s, l->proxy_header_timeout_ms);
    int r = session_read_client(s);
    if (r != 0) {
        session_close(s, uv_strerror(r));
    }
    return 0;
}

/* session_proxy_apply takes what the header says into the session. */
static void session_proxy_apply(struct session *s, const struct proxy_proto_info *info)
{
    if (!info->local) {
        snprintf(s->client_ip, sizeof(s->client_ip), "%s", info->src_ip);
        s->client_port = info->src_port;
        snprintf(s->local_ip, sizeof(s->local_ip), "%s", info->dst_ip);
        s->local_port = info->dst_port;
    }
    snprintf(s->authority, sizeof(s->authority), "%s", info->authority);
    if (info->has_ssl && (info->ssl_client & PROXY_PROTO_CLIENT_SSL) &&
        s->listener->proxy_tls_terminated) {
        /* the balancer ended the client's TLS and says so; the listener is
           marked as one whose balancer does: TLS-protected, LOGIN allowed */
        s->flags |= SESSION_F_TLS | SESSION_F_TLS_PROXIED;
        snprintf(s->proxy_tls_version, sizeof(s->proxy_tls_version), "%s", info->ssl_version);
        snprintf(s->proxy_tls_cipher, sizeof(s->proxy_tls_cipher), "%s", info->ssl_cipher);
    }
    session_log(s, LOG_DEBUG, "PROXY v%d header from %s:%u: %s%s%s%s", info->version, s->peer_ip,
                (unsigned)s->peer_port, info->local ? "local (no client address)" : "client",
                s->authority[0] ? ", authority " : "", s->authority,
                (s->flags & SESSION_F_TLS_PROXIED) ? ", TLS ended at the balancer" : "");
}

void session_proxy_input(struct session *s, const uint8_t *data, size_t len)
{
    size_t used = 0;
    enum proxy_proto_result r = proxy_proto_feed(s->proxy, &used, data, len);
    if (r == PROXY_PROTO_MORE) {
        return;
    }
    if (r == PROXY_PROTO_ERROR) {
        /* never guessed: whatever came is not the client's first bytes */
        session_log(s, LOG_NOTICE, "PROXY header refused: %s", proxy_proto_error(s->proxy));
        session_close(s, NULL);
        return;
    }
    session_proxy_apply(s, proxy_proto_info(s->proxy));
    proxy_proto_free(s->proxy);
    s->proxy = NULL;
    s->flags &= ~SESSION_F_PROXY_WAIT;
    if (session_start(s) != 0 || s->state == SESSION_CLOSING || s->client == NULL) {
        return;
    }
    /* the client's first TLS or IMAP bytes, read with the header's last */
    if (used < len && conn_inject(s->client, data + used, len - used) != 0) {
        session_close(s, "out of memory");
    }
}

const char *session_tls_version(const struct session *s)
{
    if (s->flags & SESSION_F_TLS_PROXIED) {
        return s->proxy_tls_version;
    }
    return (s->flags & SESSION_F_TLS) && s->client != NULL ? conn_tls_version(s->client) : "";
}

const char *session_tls_cipher(const struct session *s)
{
    if (s->flags & SESSION_F_TLS_PROXIED) {
        return s->proxy_tls_cipher;
    }
    return (s->flags & SESSION_F_TLS) && s->client != NULL ? conn_tls_cipher(s->client) : "";
}

int session_proxy_header_out(struct session *s, uint8_t *out, size_t cap)
{
    struct proxy_proto_info info;
    memset(&info, 0, sizeof(info));
    info.version = 2;
    snprintf(info.src_ip, sizeof(info.src_ip), "%s", s->client_ip);
    info.src_port = s->client_port;
    snprintf(info.dst_ip, sizeof(info.dst_ip), "%s", s->local_ip);
    info.dst_port = s->local_port;
    /* the name the client asked for: the balancer's word, else its own SNI */
    const char *name = s->authority;
    if (name[0] == '\0' && (s->flags & SESSION_F_TLS) && !(s->flags & SESSION_F_TLS_PROXIED) &&
        s->client != NULL) {
        name = conn_tls_server_name(s->client);
    }
    if (strlen(name) < sizeof(info.authority)) {
        snprintf(info.authority, sizeof(info.authority), "%s", name);
    }
    size_t id_len = strlen(s->id);
    if (id_len > PROXY_PROTO_MAX_UNIQUE_ID_LEN) {
        id_len = PROXY_PROTO_MAX_UNIQUE_ID_LEN;
    }
    memcpy(info.unique_id, s->id, id_len);
    info.unique_id_len = id_len;
    if (s->flags & SESSION_F_TLS) {
        /* the backend then takes the session as secured (Dovecot: LOGIN
           allowed with disable_plaintext_auth, "TLS" in its login line) */
        info.has_ssl = 1;
        info.ssl_client = PROXY_PROTO_CLIENT_SSL;
        info.ssl_verify = 0; /* no client certificate was asked for */
        snprintf(info.ssl_version, sizeof(info.ssl_version), "%s", session_tls_version(s));
        snprintf(info.ssl_cipher, sizeof(info.ssl_cipher), "%s", session_tls_cipher(s));
    }
    int n = proxy_proto_v2_build(out, cap, &info);
    if (n < 0 && info.authority[0] != '\0') {
        /* a client's SNI that is no host name is not passed on */
        info.authority[0] = '\0';
        n = proxy_proto_v2_build(out, cap, &info);
    }
    return n;
}
