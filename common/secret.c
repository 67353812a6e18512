#include "common/secret.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/mem.h>

/* Per thread: a test's observer never sees another thread's blocks. */
static _Thread_local secret_observer_cb secret_observer;
static _Thread_local void *secret_observer_ctx;

void secret_free(void *p, size_t len)
{
    if (p == NULL) {
        return;
    }
    OPENSSL_cleanse(p, len);
    if (secret_observer != NULL) {
        secret_observer(secret_observer_ctx, p, len);
    }
    free(p);
}

void secret_free_str(char *s)
{
    if (s != NULL) {
        secret_free(s, strlen(s) + 1);
    }
}

void *secret_grow(void *p, size_t old_len, size_t new_len)
{
    void *n = malloc(new_len > 0 ? new_len : 1);
    if (n == NULL) {
        return NULL;
    }
    if (p != NULL) {
        memcpy(n, p, old_len < new_len ? old_len : new_len);
        secret_free(p, old_len);
    }
    return n;
}

void secret_set_observer(secret_observer_cb cb, void *ctx)
{
    secret_observer = cb;
    secret_observer_ctx = ctx;
}
