/* balancer: picks the upstream for one attempt.
 *
 * Twin: py-proxy/pyproxy/balancer.py (+ balancer_<name>.py).
 *
 * A strategy is a small callbacks table (h2o's balancer.h): create/destroy its
 * private state and pick() one peer. Strategies live in balancer_<name>.c and
 * only balancer.c knows the list. Peers are the upstreams of one upstream set,
 * by index; a struct balancer_peer carries what every strategy may read (the
 * configured weight) and what the set tracks for it (active requests, down).
 * Time and the tried bitmap come in through struct balancer_ctx, so strategies
 * are pure functions of their inputs and unit-testable.
 */
#ifndef TWINPROXY_BALANCER_H
#define TWINPROXY_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct balancer_peer {
    unsigned weight; /* configured weight, 1..1000 */
    unsigned active; /* requests in flight on this peer (least_conn) */
    bool down;       /* health: not eligible (health checks issue) */
};

/* A set of peer indexes already tried by one request (never the same twice). */
struct balancer_tried {
    uint64_t *bits; /* ceil(n/64) words */
    size_t n;       /* peers */
};

/* Peers past t->n cannot be recorded, so they count as tried. */
static inline bool balancer_tried_has(const struct balancer_tried *t, size_t i)
{
    return i >= t->n || ((t->bits[i / 64] >> (i % 64)) & 1);
}

static inline void balancer_tried_add(struct balancer_tried *t, size_t i)
{
    if (i < t->n)
        t->bits[i / 64] |= (uint64_t)1 << (i % 64);
}

struct balancer_ctx {
    const struct balancer_tried *tried; /* skip these */
    double now;                         /* loop time */
    const char *client_ip;              /* for hash strategies */
};

struct balancer_ops {
    const char *name;                                             /* config name */
    void *(*create)(const struct balancer_peer *peers, size_t n); /* NULL on failure */
    void (*destroy)(void *state);
    /* Index of the peer to try, or -1 when every peer is tried or down. */
    int (*pick)(void *state, const struct balancer_peer *peers, size_t n,
                const struct balancer_ctx *ctx);
};

extern const struct balancer_ops balancer_roundrobin_ops;

struct balancer {
    const struct balancer_ops *ops; /* the strategy */
    void *state;                    /* its private state */
    struct balancer_peer *peers;    /* borrowed from the owner (the upstream set) */
    size_t n;                       /* peers */
};

/* The strategy for kind, falling back to round_robin (with *fallback = true)
 * for strategies this build does not have yet. */
const struct balancer_ops *balancer_ops_for(enum config_balancer kind, bool *fallback);

/* Set up b over peers (borrowed, must outlive b). Returns 0 or -1. */
int balancer_init(struct balancer *b, const struct balancer_ops *ops, struct balancer_peer *peers,
                  size_t n);
void balancer_deinit(struct balancer *b);
int balancer_pick(struct balancer *b, const struct balancer_ctx *ctx);

#endif
