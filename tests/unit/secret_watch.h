/* secret_watch: a test's view of what the code under test released through
 * secret_free: how many blocks, how many bytes, and how many of them were
 * not all zero when they went back to the allocator. */
#ifndef IMAPMUX_TESTS_SECRET_WATCH_H
#define IMAPMUX_TESTS_SECRET_WATCH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/secret.h"

struct secret_watch {
    size_t blocks; /* blocks seen */
    size_t bytes;  /* their bytes in all */
    size_t dirty;  /* blocks with a byte other than 0 */
};

static inline void secret_watch_on_free(void *ctx, const void *block, size_t len)
{
    struct secret_watch *w = ctx;
    const uint8_t *b = block;
    w->blocks++;
    w->bytes += len;
    for (size_t i = 0; i < len; i++) {
        if (b[i] != 0) {
            w->dirty++;
            break;
        }
    }
}

static inline void secret_watch_start(struct secret_watch *w)
{
    memset(w, 0, sizeof(*w));
    secret_set_observer(secret_watch_on_free, w);
}

static inline void secret_watch_stop(void)
{
    secret_set_observer(NULL, NULL);
}

#endif
