#include "common/seenset.h"

#include <stdlib.h>

#define SEENSET_MAX_SLOTS ((size_t)1 << 28)

struct seenset_slot {
    uint64_t tag;     /* 0: empty (tag 0 is stored as 1) */
    uint64_t seen_ms; /* the caller's clock */
};

struct seenset {
    size_t mask;                 /* buckets - 1 */
    struct seenset_slot *slots;  /* (mask + 1) * SEENSET_WAYS */
};

struct seenset *seenset_new(size_t num_slots)
{
    if (num_slots > SEENSET_MAX_SLOTS) {
        return NULL;
    }
    size_t buckets = 1;
    while (buckets * SEENSET_WAYS < num_slots) {
        buckets <<= 1;
    }
    struct seenset *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    /* calloc of a large block maps zero pages: a slot costs memory only
       once a tag lands in its page */
    s->slots = calloc(buckets * SEENSET_WAYS, sizeof(*s->slots));
    if (s->slots == NULL) {
        free(s);
        return NULL;
    }
    s->mask = buckets - 1;
    return s;
}

/* seenset_find returns tag's slot, or the slot to put it in (an empty one,
 * else the older of the bucket); *out_found says which. */
static struct seenset_slot *seenset_find(struct seenset *s, uint64_t tag, int *out_found)
{
    /* the tags are keyed hashes already: their high bits pick the bucket */
    struct seenset_slot *b = &s->slots[((tag >> 32) & s->mask) * SEENSET_WAYS];
    struct seenset_slot *victim = &b[0];
    for (size_t i = 0; i < SEENSET_WAYS; i++) {
        if (b[i].tag == tag) {
            *out_found = 1;
            return &b[i];
        }
        if (b[i].tag == 0) {
            if (victim->tag != 0) {
                victim = &b[i];
            }
        } else if (victim->tag != 0 && b[i].seen_ms < victim->seen_ms) {
            victim = &b[i];
        }
    }
    *out_found = 0;
    return victim;
}

int seenset_check_note(struct seenset *s, uint64_t tag, uint64_t now_ms, uint64_t window_ms)
{
    int found = 0;
    if (tag == 0) {
        tag = 1;
    }
    struct seenset_slot *slot = seenset_find(s, tag, &found);
    int recent = found && slot->seen_ms <= now_ms && now_ms - slot->seen_ms <= window_ms;
    slot->tag = tag;
    slot->seen_ms = now_ms;
    return recent;
}

void seenset_note(struct seenset *s, uint64_t tag, uint64_t now_ms)
{
    (void)seenset_check_note(s, tag, now_ms, 0);
}

size_t seenset_num_slots(const struct seenset *s)
{
    return (s->mask + 1) * SEENSET_WAYS;
}

void seenset_free(struct seenset *s)
{
    if (s == NULL) {
        return;
    }
    free(s->slots);
    free(s);
}
