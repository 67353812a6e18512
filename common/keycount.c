#include "common/keycount.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <openssl/siphash.h>

#define KEYCOUNT_MIN_BUCKETS 64 /* a power of two; the table never shrinks below it */

struct keycount_entry {
    struct keycount_entry *next; /* in its bucket */
    uint64_t hash;
    size_t count;                /* > 0 while the entry exists */
    char key[];
};

struct keycount {
    struct keycount_entry **buckets;
    size_t num_buckets;          /* a power of two */
    size_t num_keys;
    uint64_t sip_key[2];         /* random per table */
};

struct keycount *keycount_new(void)
{
    struct keycount *kc = calloc(1, sizeof(*kc));
    if (kc == NULL) {
        return NULL;
    }
    kc->num_buckets = KEYCOUNT_MIN_BUCKETS;
    kc->buckets = calloc(kc->num_buckets, sizeof(*kc->buckets));
    if (kc->buckets == NULL) {
        free(kc);
        return NULL;
    }
    RAND_bytes((uint8_t *)kc->sip_key, sizeof(kc->sip_key));
    return kc;
}

void keycount_free(struct keycount *kc)
{
    if (kc == NULL) {
        return;
    }
    for (size_t i = 0; i < kc->num_buckets; i++) {
        struct keycount_entry *e = kc->buckets[i];
        while (e != NULL) {
            struct keycount_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(kc->buckets);
    free(kc);
}

static uint64_t keycount_hash(const struct keycount *kc, const char *key, size_t len)
{
    return SIPHASH_24(kc->sip_key, (const uint8_t *)key, len);
}

static struct keycount_entry *keycount_find(const struct keycount *kc, const char *key,
                                            size_t len, uint64_t h)
{
    struct keycount_entry *e = kc->buckets[h & (kc->num_buckets - 1)];
    for (; e != NULL; e = e->next) {
        if (e->hash == h && strncmp(e->key, key, len + 1) == 0) {
            return e;
        }
    }
    return NULL;
}

/* keycount_grow doubles the buckets when there are more keys than buckets;
 * a failed allocation leaves the table as it was (only slower). */
static void keycount_grow(struct keycount *kc)
{
    size_t n = kc->num_buckets * 2;
    struct keycount_entry **b = calloc(n, sizeof(*b));
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i < kc->num_buckets; i++) {
        struct keycount_entry *e = kc->buckets[i];
        while (e != NULL) {
            struct keycount_entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(kc->buckets);
    kc->buckets = b;
    kc->num_buckets = n;
}

enum keycount_result keycount_acquire(struct keycount *kc, struct keycount_entry **out_entry,
                                      const char *key, size_t limit)
{
    size_t len = strlen(key);
    uint64_t h;
    struct keycount_entry *e;

    *out_entry = NULL;
    if (len > KEYCOUNT_MAX_KEY_LEN) {
        return KEYCOUNT_NOMEM;
    }
    h = keycount_hash(kc, key, len);
    e = keycount_find(kc, key, len, h);
    if (e != NULL) {
        if (limit != 0 && e->count >= limit) {
            return KEYCOUNT_FULL;
        }
        e->count++;
        *out_entry = e;
        return KEYCOUNT_OK;
    }
    /* a limit of 1 or more always admits the first */
    e = malloc(sizeof(*e) + len + 1);
    if (e == NULL) {
        return KEYCOUNT_NOMEM;
    }
    e->hash = h;
    e->count = 1;
    memcpy(e->key, key, len + 1);
    if (kc->num_keys >= kc->num_buckets) {
        keycount_grow(kc);
    }
    e->next = kc->buckets[h & (kc->num_buckets - 1)];
    kc->buckets[h & (kc->num_buckets - 1)] = e;
    kc->num_keys++;
    *out_entry = e;
    return KEYCOUNT_OK;
}

void keycount_release(struct keycount *kc, struct keycount_entry *e)
{
    struct keycount_entry **pp;
    if (e == NULL) {
        return;
    }
    if (--e->count > 0) {
        return;
    }
    for (pp = &kc->buckets[e->hash & (kc->num_buckets - 1)]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            kc->num_keys--;
            free(e);
            return;
        }
    }
}

size_t keycount_get(const struct keycount *kc, const char *key)
{
    size_t len = strlen(key);
    if (len > KEYCOUNT_MAX_KEY_LEN) {
        return 0;
    }
    const struct keycount_entry *e = keycount_find(kc, key, len, keycount_hash(kc, key, len));
    return e != NULL ? e->count : 0;
}

size_t keycount_num_keys(const struct keycount *kc)
{
    return kc->num_keys;
}
