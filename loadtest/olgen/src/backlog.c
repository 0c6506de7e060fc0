#include "backlog.h"

#include <stdlib.h>

void backlog_init(struct backlog *b)
{
    b->v = NULL;
    b->head = 0;
    b->len = 0;
    b->cap = 0;
}

void backlog_deinit(struct backlog *b)
{
    if (b == NULL)
        return;
    free(b->v);
    backlog_init(b);
}

static int backlog_grow(struct backlog *b)
{
    size_t cap = b->cap ? b->cap * 2 : 1024;
    uint64_t *v = malloc(cap * sizeof(*v));
    if (v == NULL)
        return -1;
    for (size_t i = 0; i < b->len; i++)
        v[i] = b->v[(b->head + i) & (b->cap - 1)];
    free(b->v);
    b->v = v;
    b->head = 0;
    b->cap = cap;
    return 0;
}

int backlog_push(struct backlog *b, uint64_t intended_us)
{
    if (b->len == b->cap && backlog_grow(b) == -1)
        return -1;
    b->v[(b->head + b->len) & (b->cap - 1)] = intended_us;
    b->len++;
    return 0;
}

int backlog_peek(const struct backlog *b, uint64_t *out)
{
    if (b->len == 0)
        return -1;
    *out = b->v[b->head];
    return 0;
}

int backlog_pop(struct backlog *b, uint64_t *out)
{
    if (backlog_peek(b, out) == -1)
        return -1;
    b->head = (b->head + 1) & (b->cap - 1);
    b->len--;
    return 0;
}
