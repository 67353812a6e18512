#include "proxy/verify.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/mem.h>
#include <openssl/rand.h>

#include "common/passwd.h"
#include "common/secret.h"

struct verify_job {
    uv_work_t work;
    char *hash;      /* owned copy; wiped: a stolen hash can be cracked offline */
    char *password;  /* owned copy; wiped */
    int dummy;
    int result;
    verify_cb cb;
    void *ctx;
};

static char *verify_dummy; /* read-only once the workers run */

int verify_init(void)
{
    unsigned char rnd[24];
    char pw[sizeof(rnd) * 2 + 1];
    static const char hex[] = "0123456789abcdef";
    if (verify_dummy != NULL) {
        return 0;
    }
    RAND_bytes(rnd, sizeof(rnd));
    for (size_t i = 0; i < sizeof(rnd); i++) {
        pw[2 * i] = hex[rnd[i] >> 4];
        pw[2 * i + 1] = hex[rnd[i] & 15];
    }
    pw[sizeof(pw) - 1] = '\0';
    verify_dummy = passwd_hash(PASSWD_YESCRYPT, pw);
    OPENSSL_cleanse(pw, sizeof(pw));
    return verify_dummy != NULL ? 0 : -1;
}

void verify_cleanup(void)
{
    free(verify_dummy);
    verify_dummy = NULL;
}

static void verify_work(uv_work_t *w)
{
    struct verify_job *j = w->data;
    if (j->dummy) {
        /* the same work as a real check, and never a match */
        if (verify_dummy != NULL) {
            (void)passwd_verify(verify_dummy, j->password);
        }
        j->result = 0;
        return;
    }
    j->result = passwd_verify(j->hash, j->password);
}

static void verify_after(uv_work_t *w, int status)
{
    struct verify_job *j = w->data;
    int result = status == 0 ? j->result : -1;
    secret_free_str(j->password);
    secret_free_str(j->hash);
    j->cb(j->ctx, result);
    free(j);
}

int verify_start(uv_loop_t *loop, const char *hash, const char *password, verify_cb cb,
                 void *ctx)
{
    struct verify_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        return -1;
    }
    j->dummy = hash == NULL || verify_dummy == NULL;
    j->hash = hash != NULL ? strdup(hash) : NULL;
    j->password = strdup(password);
    if ((hash != NULL && j->hash == NULL) || j->password == NULL) {
        secret_free_str(j->hash);
        secret_free_str(j->password);
        free(j);
        return -1;
    }
    j->cb = cb;
    j->ctx = ctx;
    j->work.data = j;
    if (uv_queue_work(loop, &j->work, verify_work, verify_after) != 0) {
        secret_free_str(j->hash);
        secret_free_str(j->password);
        free(j);
        return -1;
    }
    return 0;
}
