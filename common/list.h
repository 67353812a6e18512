/* list: an intrusive, circular, doubly linked list.  The owner embeds a
 * struct list_link in each element and one as the head; an empty list is a
 * head that points at itself.  Nothing is allocated.  Pure code. */
#ifndef IMAPMUX_COMMON_LIST_H
#define IMAPMUX_COMMON_LIST_H

#include <stddef.h>

struct list_link {
    struct list_link *next, *prev;
};

/* LIST_ITEM: the element of type that holds link as its field member. */
#define LIST_ITEM(link, type, member) ((type *)(void *)((char *)(link) - offsetof(type, member)))

/* LIST_FOREACH_SAFE walks head from first to last; the element at l may be
 * removed in the body (n is the next one, kept). */
#define LIST_FOREACH_SAFE(l, n, head) \
    for ((l) = (head)->next, (n) = (l)->next; (l) != (head); (l) = (n), (n) = (l)->next)

/* list_init makes head (or an unlinked element) an empty list. */
static inline void list_init(struct list_link *head)
{
    head->next = head;
    head->prev = head;
}

static inline int list_empty(const struct list_link *head)
{
    return head->next == head;
}

/* list_linked: l is in a list (after list_init, only between an insert and
 * its list_remove). */
static inline int list_linked(const struct list_link *l)
{
    return l->next != l;
}

/* list_push_back / list_push_front insert l at the end / the start. */
static inline void list_push_back(struct list_link *head, struct list_link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

static inline void list_push_front(struct list_link *head, struct list_link *l)
{
    l->next = head->next;
    l->prev = head;
    head->next->prev = l;
    head->next = l;
}

/* list_remove unlinks l and leaves it an empty list of its own (so a second
 * list_remove does nothing). */
static inline void list_remove(struct list_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    list_init(l);
}

/* list_first / list_last: the first / last link, or NULL when empty. */
static inline struct list_link *list_first(const struct list_link *head)
{
    return list_empty(head) ? NULL : head->next;
}

static inline struct list_link *list_last(const struct list_link *head)
{
    return list_empty(head) ? NULL : head->prev;
}

#endif
