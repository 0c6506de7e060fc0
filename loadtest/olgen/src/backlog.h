/* backlog: FIFO of requests that are due but not yet on a connection.
 *
 * Holds intended send times in schedule order (so the head is always the oldest).
 * A growable power-of-two ring: requests are never dropped here; the generator
 * reports the high-water mark and marks the run invalid when it passes the bound.
 */
#ifndef OLGEN_BACKLOG_H
#define OLGEN_BACKLOG_H

#include <stddef.h>
#include <stdint.h>

struct backlog {
    uint64_t *v; /* ring of intended send times; owned */
    size_t head; /* index of the oldest entry */
    size_t len;  /* entries queued */
    size_t cap;  /* slots in v, a power of two (or 0 before the first push) */
};

void backlog_init(struct backlog *b);
/* Free the ring. NULL-safe. */
void backlog_deinit(struct backlog *b);
/* Queue one request at the tail; -1 on ENOMEM (nothing queued). */
int backlog_push(struct backlog *b, uint64_t intended_us);
/* Oldest queued request into *out; -1 if empty. backlog_pop also removes it. */
int backlog_peek(const struct backlog *b, uint64_t *out);
int backlog_pop(struct backlog *b, uint64_t *out);

#endif
