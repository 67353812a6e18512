/* oauth: validation of OAuth 2.0 bearer tokens for the logins of
 * AUTHENTICATE OAUTHBEARER and XOAUTH2, per login domain (the oauth section
 * of the configuration):
 *
 * - JWT domains: the token's signature is checked against a key set (JWKS)
 *   read from a file and/or fetched from a URL, refreshed in the background;
 *   a token naming an unknown kid triggers at most one fetch (rate limited
 *   per domain, and never twice for a kid the last fetch did not bring);
 * - introspection domains: the token goes to an RFC 7662 endpoint (HTTP POST
 *   with the configured client credentials); results are cached by a keyed
 *   hash of the token, active ones until their expiry (at most cache_s),
 *   inactive ones for negative_cache_s.
 *
 * It runs on one thread of its own that polls its HTTP requests (oauth_http:
 * http:// and https:// through BoringSSL) and owns the key sets and the
 * cache, so they are shared by all workers; JWT signatures and claims are
 * checked (BoringSSL) on a few signer threads beside it, one per CPU up to
 * four, each with a reference to the key set it checks with.  Completions go
 * back to the submitting loop through one uv_async_t per loop, as in verify.
 *
 * Tokens are secrets: the job's copy is wiped once validated, the cache holds
 * only HMAC-SHA256 keys of tokens (the HMAC key is random per process), and
 * no log line says more than a fixed reason.
 *
 * Lifetime: oauth_init (main thread, before the workers), oauth_loop_open
 * (each loop), oauth_validate ..., oauth_loop_close (each loop, when it stops),
 * oauth_cleanup (main thread, after every loop ended). */
#ifndef IMAPMUX_PROXY_OAUTH_H
#define IMAPMUX_PROXY_OAUTH_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/config.h"
#include "common/jwt.h"

#define OAUTH_KEY_LEN 32 /* bytes of a token's keyed hash */

enum oauth_status {
    OAUTH_VALID,       /* identity holds the login the token is for */
    OAUTH_INVALID,     /* refused: bad, expired, revoked, wrong issuer... */
    OAUTH_UNAVAILABLE, /* could not be decided: endpoint down, timeout, OOM */
};

struct oauth_result {
    enum oauth_status status;
    const char *reason;                       /* fixed text for the log; never token data */
    char identity[JWT_MAX_IDENTITY_LEN + 1];  /* with OAUTH_VALID */
    int cached;                               /* answered from the introspection cache */
};

/* Counters of one loop since it opened (oauth_stats). */
struct oauth_stats {
    uint64_t started;      /* validations submitted */
    uint64_t valid;
    uint64_t invalid;
    uint64_t unavailable;
    uint64_t cache_hits;   /* introspection results from the cache */
    uint64_t busy;         /* refused at once: the queue or the client's share was full */
};

/* Counters of the process (oauth_process_stats). */
struct oauth_process_stats {
    uint64_t jwks_fetches;          /* key set fetches started (background and on demand) */
    uint64_t jwks_fetch_failures;   /* ... that failed (the old keys stay) */
    uint64_t jwks_ondemand;         /* ... of those started for an unknown kid */
    uint64_t introspections;        /* introspection requests sent */
    uint64_t introspection_failures;/* ... without a usable answer */
    uint64_t cache_entries;         /* introspection results held now */
};

/* oauth_result_cb: r is borrowed for the call. */
typedef void (*oauth_cb)(void *ctx, const struct oauth_result *r);

/* oauth_init reads the key set files of cfg's oauth section and starts the
 * thread (main thread, once).  cfg is referenced until oauth_cleanup.
 * Returns 0 (also when oauth is not configured: nothing runs then), or a
 * negative code with a message logged (an unreadable key set file). */
int oauth_init(struct config *cfg);

/* oauth_cleanup stops the thread and frees everything (main thread, after
 * every loop closed its side and ran to its end).  No-op when not running. */
void oauth_cleanup(void);

/* oauth_running: oauth_init started the thread. */
int oauth_running(void);

/* oauth_loop_open prepares loop for completions (on its thread).  Returns 0
 * (also when oauth does not run), UV_EEXIST, or UV_ENOMEM. */
int oauth_loop_open(uv_loop_t *loop);

/* oauth_loop_close: no new validations for loop; its handle closes after the
 * last completion ran.  No-op for a loop that is not open. */
void oauth_loop_close(uv_loop_t *loop);

/* oauth_validate copies token (token_len bytes) and validates it with the
 * rules of the oauth domain entry named domain (its "domain" value), counted
 * against client_ip's share (a numeric address; IPv6 by its prefix of
 * limits.ipv6_prefix_len bits; at most limits.verify_per_client validations
 * in flight per client, as for password checks; NULL: no share).  cb runs on
 * loop exactly once, never from within this call.  Returns 0, or (cb not
 * called) UV_EINVAL (not running, loop not open), UV_ENOENT (no such domain
 * entry at start-up), UV_E2BIG (token too long), UV_EBUSY (the queue or the
 * client's share is full), UV_ENOMEM. */
int oauth_validate(uv_loop_t *loop, const char *client_ip, const char *domain, const char *token,
                   size_t token_len, oauth_cb cb, void *ctx);

/* oauth_token_key writes the keyed hash of a token (HMAC-SHA256 under the
 * process's random key, the one the introspection cache uses) to out as 64
 * hex digits and a NUL.  Returns 0, or UV_EINVAL when oauth does not run. */
int oauth_token_key(char out[2 * OAUTH_KEY_LEN + 1], const char *token, size_t token_len);

/* oauth_stats copies loop's counters (zero when not open). */
void oauth_stats(uv_loop_t *loop, struct oauth_stats *out);

/* oauth_process_stats copies the process's counters. */
void oauth_process_stats(struct oauth_process_stats *out);

#endif
