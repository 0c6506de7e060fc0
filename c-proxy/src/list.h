/* list: an intrusive doubly linked list (Linux list_head style).
 *
 * Twin: py-proxy uses its own containers (dict/deque/list); there is no list.py.
 * A struct list_head is embedded in the object that is listed; the list's owner
 * holds another one as the head (an empty list points at itself). list_entry()
 * gets the object back from its link (container_of). Every list of c-proxy uses
 * it: the worker's connections and graveyard, an upstream's idle pool and its
 * wait queue. Nothing here allocates; a node is in at most one list per link.
 *
 * A node that is not in a list is kept self-linked (list_init() / list_del()),
 * so list_linked() tells whether it is in one and list_del() twice is harmless.
 */
#ifndef TWINPROXY_LIST_H
#define TWINPROXY_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_head {
    struct list_head *next; /* next node, or the head after the last */
    struct list_head *prev; /* previous node, or the head before the first */
};

#define list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define list_first_entry(head, type, member) list_entry((head)->next, type, member)

/* Iterate over nodes; `pos` may be removed from the list inside the loop. */
#define list_for_each_safe(pos, tmp, head)                                                         \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

/* An empty list, or an unlinked node. */
static inline void list_init(struct list_head *h)
{
    h->next = h->prev = h;
}

static inline bool list_empty(const struct list_head *h)
{
    return h->next == h;
}

/* Whether node n is in a list (a node list_init()ed or list_del()ed is not). */
static inline bool list_linked(const struct list_head *n)
{
    return n->next != n;
}

static inline void list_insert_(struct list_head *n, struct list_head *prev, struct list_head *next)
{
    next->prev = n;
    n->next = next;
    n->prev = prev;
    prev->next = n;
}

/* Add n at the front of list h. */
static inline void list_add(struct list_head *n, struct list_head *h)
{
    list_insert_(n, h, h->next);
}

/* Add n at the back of list h. */
static inline void list_add_tail(struct list_head *n, struct list_head *h)
{
    list_insert_(n, h->prev, h);
}

/* Remove n from its list and leave it unlinked (no-op when it is not linked). */
static inline void list_del(struct list_head *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

#endif
