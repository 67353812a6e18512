/* oauth_http: the HTTP/1.1 client of the oauth thread, for its two needs: a
 * GET of a key set and a form POST to an introspection endpoint, over http://
 * or https:// (BoringSSL, certificate and name verified).  Non-blocking: the
 * thread polls every request's descriptor (oauth_http_poll) and steps it
 * (oauth_http_step) until it is done or its deadline passes.
 *
 * Why not libcurl: Debian's libcurl (GnuTLS flavour included) links libssh2,
 * which links OpenSSL's libcrypto; loaded beside BoringSSL, OpenSSL's own
 * references bind to BoringSSL's same-named symbols (the dynamic linker takes
 * BoringSSL's unversioned definitions first).  A request here is one
 * connection (to the first address of the name), "Connection: close", the
 * answer read to its end (Content-Length
 * or chunked), at most OAUTH_HTTP_MAX_BODY_LEN bytes; no redirects. */
#ifndef IMAPMUX_PROXY_OAUTH_HTTP_H
#define IMAPMUX_PROXY_OAUTH_HTTP_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define OAUTH_HTTP_MAX_BODY_LEN (1u << 20) /* bytes of an answer's body */

struct oauth_http_req;

/* What a request asks for. */
struct oauth_http_params {
    const char *url;         /* http:// or https:// */
    SSL_CTX *tls_ctx;        /* for https (verifying); borrowed, outlives the request */
    const char *user;        /* HTTP basic credentials, or NULL */
    const char *password;
    const char *form;        /* a POST body (application/x-www-form-urlencoded), or NULL: GET */
    size_t form_len;
    const char *user_agent;
    unsigned timeout_ms;     /* the whole request */
};

/* oauth_http_start starts resolving the URL's host (glibc's getaddrinfo_a:
 * the caller does not wait) and then connecting.  The request copies what
 * it needs (the form and the credentials inside its wiped request buffer).
 * Returns it, or NULL with a fixed reason in *out_err. */
struct oauth_http_req *oauth_http_start(const struct oauth_http_params *p, uint64_t now_ms,
                                        const char **out_err);

/* oauth_http_poll fills pfd for poll(2) (fd -1 while the name resolves) and
 * returns when the request must be stepped at the latest (monotonic ms): its
 * deadline, or soon while it resolves. */
uint64_t oauth_http_poll(const struct oauth_http_req *r, struct pollfd *pfd, uint64_t now_ms);

/* oauth_http_step moves the request on after poll (revents: what poll said,
 * 0 for a deadline check).  Returns 1 when it is done (successful or not),
 * 0 while it goes on. */
int oauth_http_step(struct oauth_http_req *r, short revents, uint64_t now_ms);

/* oauth_http_result, once done: the status code (0 on failure) and the
 * body (borrowed until oauth_http_free; NUL-terminated), or the reason. */
int oauth_http_status(const struct oauth_http_req *r, const char **out_body, size_t *out_len,
                      const char **out_err);

/* oauth_http_free closes and frees (wiping the buffers); NULL accepted.  A
 * name resolution still running is left to oauth_http_reap. */
void oauth_http_free(struct oauth_http_req *r);

/* oauth_http_reap frees the resolutions of freed requests that have ended
 * (wait: waits for every one; at shutdown).  On the thread that runs the
 * requests, like everything here. */
void oauth_http_reap(int wait);

#endif
