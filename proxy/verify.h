/* verify: password verification on the libuv threadpool.  Hashes are slow
 * on purpose; a loop must never wait for one.  A login without a stored hash
 * (unknown user) is verified against a dummy hash made at start-up, so that
 * it costs the same work as a wrong password. */
#ifndef IMAPMUX_PROXY_VERIFY_H
#define IMAPMUX_PROXY_VERIFY_H

#include <uv.h>

/* verify_init makes the dummy hash (once, before workers start).  Returns 0
 * or -1. */
int verify_init(void);
void verify_cleanup(void);

/* result: 1 match, 0 mismatch (always 0 for the dummy), -1 unusable hash or
 * out of memory. */
typedef void (*verify_cb)(void *ctx, int result);

/* verify_start copies hash (NULL: the dummy) and password and verifies them
 * on the threadpool; cb runs on loop afterwards, exactly once.  Returns 0, or
 * -1 (cb not called) when the work cannot be queued. */
int verify_start(uv_loop_t *loop, const char *hash, const char *password, verify_cb cb,
                 void *ctx);

#endif
