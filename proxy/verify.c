#include "proxy/verify.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include <openssl/mem.h>
#include <openssl/rand.h>

#include "common/keycount.h"
#include "common/list.h"
#include "common/netaddr.h"
#include "common/passwd.h"
#include "common/secret.h"

#define VERIFY_MAX_THREADS 256 /* as limits.verify_threads allows */

/* One check.  Owned by the pool from verify_start_for until its callback
 * returned; it is in the pool's queue (waiting), held by a thread (running)
 * or in its loop's done list (delivered by the loop's async handle). */
struct verify_job {
    struct list_link link;         /* pool queue or done list; under the mutex */
    struct verify_loop *vl;        /* where the callback runs */
    struct keycount_entry *client; /* the share it counts against, or NULL */
    char *hash;                    /* NULL with dummy */
    char *password;                /* wiped when freed */
    int dummy;
    int result;                    /* VERIFY_* */
    verify_cb cb;
    void *ctx;
};

/* A loop's side: its async handle and its completed checks.  Freed in the
 * handle's close callback, which runs only once no check of the loop is left
 * (num_jobs == 0), so a thread never signals a closed handle. */
struct verify_loop {
    struct list_link link;         /* in verify_pool.loops; under the mutex */
    uv_loop_t *loop;
    uv_async_t async;              /* wakes the loop for its done list */
    struct list_link done;         /* of struct verify_job, under the mutex */
    size_t num_jobs;               /* waiting, running or done, not yet called back */
    int closing;                   /* verify_loop_close ran: no new checks */
};

/* The pool: one per process.  Everything below mu is under it. */
static struct {
    uv_once_t once;
    uv_mutex_t mu;
    uv_cond_t cond;                /* a job was queued, or stop */
    int running;                   /* between verify_init and verify_cleanup */
    int stop;
    uv_thread_t threads[VERIFY_MAX_THREADS];
    unsigned num_threads;
    struct list_link queue;        /* waiting jobs, oldest first */
    size_t num_jobs;               /* waiting or running */
    size_t max_jobs;
    size_t max_per_client;
    unsigned ipv6_prefix_len;
    struct keycount *clients;      /* jobs waiting or running per client key */
    struct list_link loops;        /* open loops (struct verify_loop) */
    struct verify_stats stats;
    char *dummy;                   /* read-only while the threads run */
    char *recent;                  /* the last real hash checked (copy, under mu): the
                                      dummy check uses its scheme and cost, so that an
                                      unknown user costs what real users cost */
} verify_pool = {.once = UV_ONCE_INIT};

static void verify_once(void)
{
    uv_mutex_init(&verify_pool.mu);
    uv_cond_init(&verify_pool.cond);
    list_init(&verify_pool.queue);
    list_init(&verify_pool.loops);
}

static void verify_job_free(struct verify_job *j)
{
    secret_free_str(j->password);
    secret_free_str(j->hash); /* a stolen hash can be cracked offline */
    free(j);
}

static char *verify_make_dummy(void)
{
    unsigned char rnd[24];
    char pw[sizeof(rnd) * 2 + 1];
    static const char hex[] = "0123456789abcdef";
    char *h;
    RAND_bytes(rnd, sizeof(rnd));
    for (size_t i = 0; i < sizeof(rnd); i++) {
        pw[2 * i] = hex[rnd[i] >> 4];
        pw[2 * i + 1] = hex[rnd[i] & 15];
    }
    pw[sizeof(pw) - 1] = '\0';
    h = passwd_hash(PASSWD_YESCRYPT, pw);
    OPENSSL_cleanse(pw, sizeof(pw));
    return h;
}

/* verify_done hands j to its loop (mutex held).  The signal is sent under
 * the mutex: the loop frees its side only after taking the mutex and seeing
 * no job left, so the handle is alive here. */
static void verify_done(struct verify_job *j)
{
    keycount_release(verify_pool.clients, j->client);
    j->client = NULL;
    verify_pool.num_jobs--;
    list_push_back(&j->vl->done, &j->link);
    uv_async_send(&j->vl->async);
}

static void verify_thread(void *arg)
{
    (void)arg;
    uv_mutex_lock(&verify_pool.mu);
    for (;;) {
        struct list_link *l;
        struct verify_job *j;
        while (!verify_pool.stop && list_empty(&verify_pool.queue)) {
            uv_cond_wait(&verify_pool.cond, &verify_pool.mu);
        }
        if (verify_pool.stop) {
            break;
        }
        l = list_first(&verify_pool.queue);
        list_remove(l);
        j = LIST_ITEM(l, struct verify_job, link);
        uv_mutex_unlock(&verify_pool.mu);
        if (j->dummy) {
            /* the same work as a real check, and never a match */
            uv_mutex_lock(&verify_pool.mu);
            char *like = verify_pool.recent != NULL ? strdup(verify_pool.recent) : NULL;
            uv_mutex_unlock(&verify_pool.mu);
            if (like != NULL) {
                (void)passwd_verify(like, j->password);
                secret_free_str(like);
            } else if (verify_pool.dummy != NULL) {
                (void)passwd_verify(verify_pool.dummy, j->password);
            }
            j->result = VERIFY_MISMATCH;
        } else {
            int r = passwd_verify(j->hash, j->password);
            j->result = r == 1 ? VERIFY_MATCH : r == 0 ? VERIFY_MISMATCH : VERIFY_ERROR;
            if (r >= 0) {
                char *copy = strdup(j->hash);
                uv_mutex_lock(&verify_pool.mu);
                char *old = verify_pool.recent;
                verify_pool.recent = copy != NULL ? copy : old;
                uv_mutex_unlock(&verify_pool.mu);
                if (copy != NULL) {
                    secret_free_str(old);
                }
            }
        }
        /* the password is not needed any more: wipe it off the heap now */
        secret_free_str(j->password);
        j->password = NULL;
        uv_mutex_lock(&verify_pool.mu);
        verify_done(j);
    }
    uv_mutex_unlock(&verify_pool.mu);
}

/* verify_stop_threads tells the threads to stop (mutex held; released
 * here) and waits for them. */
static void verify_stop_threads(void)
{
    verify_pool.stop = 1;
    uv_cond_broadcast(&verify_pool.cond);
    uv_mutex_unlock(&verify_pool.mu);
    for (unsigned i = 0; i < verify_pool.num_threads; i++) {
        uv_thread_join(&verify_pool.threads[i]);
    }
    verify_pool.num_threads = 0;
}

/* verify_release frees what the pool keeps once its threads are gone. */
static void verify_release(void)
{
    keycount_free(verify_pool.clients);
    verify_pool.clients = NULL;
    secret_free_str(verify_pool.dummy);
    verify_pool.dummy = NULL;
    secret_free_str(verify_pool.recent);
    verify_pool.recent = NULL;
}

int verify_init(const struct verify_limits *lim)
{
    unsigned n = lim->num_threads != 0 ? lim->num_threads : uv_available_parallelism();
    int r = 0;

    uv_once(&verify_pool.once, verify_once);
    if (n == 0) {
        n = 1;
    }
    if (n > VERIFY_MAX_THREADS) {
        n = VERIFY_MAX_THREADS;
    }
    uv_mutex_lock(&verify_pool.mu);
    if (verify_pool.running) {
        uv_mutex_unlock(&verify_pool.mu);
        return UV_EALREADY;
    }
    uv_mutex_unlock(&verify_pool.mu);

    /* no thread runs yet: nothing else touches the pool */
    verify_pool.dummy = verify_make_dummy();
    verify_pool.clients = keycount_new();
    if (verify_pool.dummy == NULL || verify_pool.clients == NULL) {
        r = UV_ENOMEM;
        goto fail;
    }
    memset(&verify_pool.stats, 0, sizeof(verify_pool.stats));
    verify_pool.max_jobs = lim->max_jobs != 0 ? lim->max_jobs : VERIFY_DEFAULT_QUEUE;
    verify_pool.max_per_client = lim->max_per_client;
    verify_pool.ipv6_prefix_len = lim->ipv6_prefix_len != 0 ? lim->ipv6_prefix_len : 64;
    verify_pool.stop = 0;
    verify_pool.num_threads = 0;
    for (unsigned i = 0; i < n; i++) {
        r = uv_thread_create(&verify_pool.threads[i], verify_thread, NULL);
        if (r != 0) {
            goto fail;
        }
        verify_pool.num_threads++;
    }
    uv_mutex_lock(&verify_pool.mu);
    verify_pool.running = 1;
    uv_mutex_unlock(&verify_pool.mu);
    return 0;

fail:
    uv_mutex_lock(&verify_pool.mu);
    verify_stop_threads();
    verify_release();
    return r;
}

void verify_cleanup(void)
{
    uv_once(&verify_pool.once, verify_once);
    uv_mutex_lock(&verify_pool.mu);
    if (!verify_pool.running) {
        uv_mutex_unlock(&verify_pool.mu);
        return;
    }
    verify_pool.running = 0;
    verify_stop_threads();
    /* every loop closed first, so nothing waits; should a job be left, it is
     * freed without its callback: its loop is gone */
    while (!list_empty(&verify_pool.queue)) {
        struct list_link *l = list_first(&verify_pool.queue);
        list_remove(l);
        verify_job_free(LIST_ITEM(l, struct verify_job, link));
    }
    verify_pool.num_jobs = 0;
    verify_release();
}

/* verify_find returns loop's side (mutex held), or NULL. */
static struct verify_loop *verify_find(uv_loop_t *loop)
{
    struct list_link *l, *n;
    LIST_FOREACH_SAFE(l, n, &verify_pool.loops) {
        struct verify_loop *vl = LIST_ITEM(l, struct verify_loop, link);
        if (vl->loop == loop) {
            return vl;
        }
    }
    return NULL;
}

static void verify_on_async_close(uv_handle_t *h)
{
    free(h->data);
}

/* verify_on_async delivers the loop's completed checks, then closes the
 * loop's side when it is closing and nothing is left in flight. */
static void verify_on_async(uv_async_t *a)
{
    struct verify_loop *vl = a->data;
    struct list_link done;
    size_t n = 0;
    int close_now;

    list_init(&done);
    uv_mutex_lock(&verify_pool.mu);
    if (!list_empty(&vl->done)) {
        /* move the whole list: callbacks run without the mutex */
        done.next = vl->done.next;
        done.prev = vl->done.prev;
        done.next->prev = &done;
        done.prev->next = &done;
        list_init(&vl->done);
    }
    uv_mutex_unlock(&verify_pool.mu);

    while (!list_empty(&done)) {
        struct list_link *l = list_first(&done);
        struct verify_job *j = LIST_ITEM(l, struct verify_job, link);
        list_remove(l);
        j->cb(j->ctx, j->result);
        verify_job_free(j);
        n++;
    }

    uv_mutex_lock(&verify_pool.mu);
    vl->num_jobs -= n;
    close_now = vl->closing && vl->num_jobs == 0 && list_linked(&vl->link);
    if (close_now) {
        list_remove(&vl->link);
    }
    uv_mutex_unlock(&verify_pool.mu);
    if (close_now) {
        uv_close((uv_handle_t *)&vl->async, verify_on_async_close);
    }
}

int verify_loop_open(uv_loop_t *loop)
{
    struct verify_loop *vl;
    int r;

    uv_once(&verify_pool.once, verify_once);
    uv_mutex_lock(&verify_pool.mu);
    if (!verify_pool.running) {
        uv_mutex_unlock(&verify_pool.mu);
        return 0;
    }
    r = verify_find(loop) != NULL ? UV_EEXIST : 0;
    uv_mutex_unlock(&verify_pool.mu);
    if (r != 0) {
        return r;
    }
    vl = calloc(1, sizeof(*vl));
    if (vl == NULL) {
        return UV_ENOMEM;
    }
    r = uv_async_init(loop, &vl->async, verify_on_async);
    if (r != 0) {
        free(vl);
        return r;
    }
    vl->async.data = vl;
    vl->loop = loop;
    list_init(&vl->done);
    uv_mutex_lock(&verify_pool.mu);
    list_push_back(&verify_pool.loops, &vl->link);
    uv_mutex_unlock(&verify_pool.mu);
    return 0;
}

void verify_loop_close(uv_loop_t *loop)
{
    struct verify_loop *vl;
    int close_now;

    uv_once(&verify_pool.once, verify_once);
    uv_mutex_lock(&verify_pool.mu);
    vl = verify_find(loop);
    if (vl == NULL || vl->closing) {
        uv_mutex_unlock(&verify_pool.mu);
        return;
    }
    vl->closing = 1;
    close_now = vl->num_jobs == 0;
    if (close_now) {
        list_remove(&vl->link);
    }
    uv_mutex_unlock(&verify_pool.mu);
    if (close_now) {
        uv_close((uv_handle_t *)&vl->async, verify_on_async_close);
    }
}

int verify_start_for(uv_loop_t *loop, const char *client_ip, const char *hash,
                     const char *password, verify_cb cb, void *ctx)
{
    char key[NETADDR_MAX_KEY_LEN];
    struct verify_job *j;
    struct verify_loop *vl;
    int r = 0;

    uv_once(&verify_pool.once, verify_once);
    if (client_ip != NULL &&
        netaddr_key(key, sizeof(key), client_ip, 32, verify_pool.ipv6_prefix_len) < 0) {
        return UV_EINVAL;
    }
    /* copies first: the mutex is held for counting only */
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        return UV_ENOMEM;
    }
    j->dummy = hash == NULL;
    j->hash = hash != NULL ? strdup(hash) : NULL;
    j->password = strdup(password);
    j->cb = cb;
    j->ctx = ctx;
    list_init(&j->link);
    if ((hash != NULL && j->hash == NULL) || j->password == NULL) {
        verify_job_free(j);
        return UV_ENOMEM;
    }

    uv_mutex_lock(&verify_pool.mu);
    vl = verify_pool.running ? verify_find(loop) : NULL;
    if (vl == NULL || vl->closing) {
        r = UV_EINVAL;
    } else if (verify_pool.num_jobs >= verify_pool.max_jobs) {
        verify_pool.stats.busy_queue++;
        r = UV_EBUSY;
    } else if (client_ip != NULL) {
        switch (keycount_acquire(verify_pool.clients, &j->client, key,
                                 verify_pool.max_per_client)) {
        case KEYCOUNT_OK:
            break;
        case KEYCOUNT_FULL:
            verify_pool.stats.busy_client++;
            r = UV_EBUSY;
            break;
        case KEYCOUNT_NOMEM:
            r = UV_ENOMEM;
            break;
        }
    }
    if (r == 0) {
        j->vl = vl;
        vl->num_jobs++;
        verify_pool.num_jobs++;
        verify_pool.stats.started++;
        list_push_back(&verify_pool.queue, &j->link);
        uv_cond_signal(&verify_pool.cond);
    }
    uv_mutex_unlock(&verify_pool.mu);
    if (r != 0) {
        verify_job_free(j);
    }
    return r;
}

int verify_start(uv_loop_t *loop, const char *hash, const char *password, verify_cb cb,
                 void *ctx)
{
    return verify_start_for(loop, NULL, hash, password, cb, ctx);
}

void verify_cancel(uv_loop_t *loop, void *ctx)
{
    struct list_link *l, *n;
    struct verify_loop *vl;

    uv_once(&verify_pool.once, verify_once);
    uv_mutex_lock(&verify_pool.mu);
    vl = verify_find(loop);
    if (vl != NULL && vl->num_jobs > 0) {
        LIST_FOREACH_SAFE(l, n, &verify_pool.queue) {
            struct verify_job *j = LIST_ITEM(l, struct verify_job, link);
            if (j->vl == vl && j->ctx == ctx) {
                list_remove(l);
                j->result = VERIFY_CANCELED;
                verify_pool.stats.canceled++;
                verify_done(j);
            }
        }
    }
    uv_mutex_unlock(&verify_pool.mu);
}

void verify_stats(struct verify_stats *out)
{
    uv_once(&verify_pool.once, verify_once);
    uv_mutex_lock(&verify_pool.mu);
    *out = verify_pool.stats;
    out->jobs = verify_pool.num_jobs;
    out->num_threads = verify_pool.num_threads;
    uv_mutex_unlock(&verify_pool.mu);
}
