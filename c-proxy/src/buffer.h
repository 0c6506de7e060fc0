/* buffer: a fixed-size byte buffer with read and write cursors.
 *
 * Twin: py-proxy uses bytearray + memoryview (the runtime manages memory).
 * Bytes live in data[rpos, wpos); free room is data[wpos, cap). A buffer never
 * grows: a full buffer is the backpressure signal (stop reading the side that
 * fills it). Ownership: the struct that embeds the buffer owns data.
 */
#ifndef TWINPROXY_BUFFER_H
#define TWINPROXY_BUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct buffer {
    char *data;  /* cap bytes, owned; NULL when not allocated */
    size_t cap;  /* capacity in bytes, fixed once allocated */
    size_t rpos; /* first unread byte */
    size_t wpos; /* first free byte */
};

/* Allocate cap bytes. Returns 0, or -1 on allocation failure. */
static inline int buffer_alloc(struct buffer *b, size_t cap)
{
    b->data = malloc(cap);
    b->cap = b->data ? cap : 0;
    b->rpos = b->wpos = 0;
    return b->data ? 0 : -1;
}

/* Free the bytes; safe on a never-allocated (zeroed) buffer. */
static inline void buffer_release(struct buffer *b)
{
    free(b->data);
    b->data = NULL;
    b->cap = b->rpos = b->wpos = 0;
}

/* A worker's stock of freed blocks of one capacity. A connection gives its
 * exchange buffers back when it goes idle; the next exchange on any connection
 * of the worker takes them again instead of a malloc/free pair per request
 * (which, at these sizes, also made glibc consolidate its heap). Bounded: a
 * release beyond BUFFER_POOL_MAX blocks, or of another capacity (a reload
 * changed max_header_bytes), frees. Single-threaded: one pool per worker.
 * Ownership: the pool owns the blocks in `free`; buffer_pool_drain() frees them. */
#define BUFFER_POOL_MAX 16

struct buffer_pool {
    size_t cap;                  /* capacity of every pooled block (0: none yet) */
    unsigned n;                  /* blocks in free[] */
    char *free[BUFFER_POOL_MAX]; /* owned, unused blocks of cap bytes */
};

/* buffer_alloc(), taking a pooled block when one of cap bytes is there. */
static inline int buffer_alloc_from(struct buffer_pool *pool, struct buffer *b, size_t cap)
{
    if (pool->n > 0 && pool->cap == cap) {
        b->data = pool->free[--pool->n];
        b->cap = cap;
        b->rpos = b->wpos = 0;
        return 0;
    }
    return buffer_alloc(b, cap);
}

/* buffer_release(), keeping the block in the pool when there is room. */
static inline void buffer_release_to(struct buffer_pool *pool, struct buffer *b)
{
    if (!b->data)
        return;
    if (pool->n == 0)
        pool->cap = b->cap;
    if (pool->cap == b->cap && pool->n < BUFFER_POOL_MAX) {
        pool->free[pool->n++] = b->data;
        b->data = NULL;
        b->cap = b->rpos = b->wpos = 0;
        return;
    }
    buffer_release(b);
}

/* Free every pooled block. */
static inline void buffer_pool_drain(struct buffer_pool *pool)
{
    while (pool->n > 0)
        free(pool->free[--pool->n]);
}

static inline size_t buffer_len(const struct buffer *b)
{
    return b->wpos - b->rpos;
}

/* Free room at the tail (after buffer_compact, all of the free room). */
static inline size_t buffer_space(const struct buffer *b)
{
    return b->cap - b->wpos;
}

static inline char *buffer_head(const struct buffer *b)
{
    return b->data + b->rpos;
}

static inline char *buffer_tail(const struct buffer *b)
{
    return b->data + b->wpos;
}

/* Mark n bytes read. The bytes stay where they are (a parser may still point
 * at them); buffer_compact() or buffer_reset_if_empty() reclaim the room. */
static inline void buffer_consume(struct buffer *b, size_t n)
{
    b->rpos += n;
}

static inline void buffer_reset_if_empty(struct buffer *b)
{
    if (b->rpos == b->wpos)
        b->rpos = b->wpos = 0;
}

/* Move unread bytes to the front so all free room is at the tail. */
static inline void buffer_compact(struct buffer *b)
{
    if (b->rpos == 0)
        return;
    size_t n = b->wpos - b->rpos;
    if (n)
        memmove(b->data, b->data + b->rpos, n);
    b->rpos = 0;
    b->wpos = n;
}

/* Append n bytes; the caller has checked buffer_space() >= n. */
static inline void buffer_put(struct buffer *b, const void *p, size_t n)
{
    memcpy(b->data + b->wpos, p, n);
    b->wpos += n;
}

static inline void buffer_puts(struct buffer *b, const char *s)
{
    buffer_put(b, s, strlen(s));
}

/* Append as much of n bytes as fits; returns the number appended. */
static inline size_t buffer_put_some(struct buffer *b, const void *p, size_t n)
{
    size_t room = buffer_space(b);
    if (n > room)
        n = room;
    buffer_put(b, p, n);
    return n;
}

#endif
