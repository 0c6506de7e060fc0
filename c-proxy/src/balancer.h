/* balancer: picks the upstream for one attempt.
 *
 * Twin: py-proxy/pyproxy/balancer.py (+ balancer_<name>.py).
 *
 * A strategy is a small callbacks table (h2o's balancer.h): create/destroy its
 * private state, pick() one peer, and optional attempt_begin/attempt_end hooks.
 * Strategies live in balancer_<name>.c and only balancer.c knows the list.
 * Peers are the upstreams of one upstream set, by index; a struct
 * balancer_peer carries what every strategy may read: the configured weight,
 * the attempts in flight and the shared health verdict. Time, the tried bitmap
 * and the hash key come in through struct balancer_ctx, so strategies are pure
 * functions of their inputs and unit-testable.
 *
 * Only balancer code writes peer state: `active` changes in
 * balancer_attempt_begin/end, which also tell health (health_attempt_begin/end).
 */
#ifndef TWINPROXY_BALANCER_H
#define TWINPROXY_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "health.h"

struct balancer_peer {
    unsigned weight;             /* configured weight, 1..1000 */
    unsigned active;             /* attempts in flight on it (this worker); balancer writes */
    struct health_state *health; /* shared verdict; NULL = always healthy (unit tests) */
    const char *name;            /* upstream name: its identity on the hash ring (NULL: index) */
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
    const struct balancer_tried *tried; /* skip these (NULL: none tried) */
    double now;                         /* loop time */
    const char *client_ip;              /* hash fallback key (NULL: "") */
    const char *key;                    /* hash key bytes (header value / path / client ip) */
    size_t key_len;                     /* 0: hash client_ip instead */
};

struct balancer_ops {
    const char *name; /* config name */
    /* NULL on failure. group: states created with the same non-NULL group are one
     * state shared by the workers (round_robin: one rotation for the whole process,
     * keyed by the config generation); NULL: a private state. */
    void *(*create)(const struct balancer_peer *peers, size_t n, const void *group);
    void (*destroy)(void *state);
    /* Index of an eligible peer (balancer_peer_eligible) to try, or -1 when none is. */
    int (*pick)(void *state, const struct balancer_peer *peers, size_t n,
                const struct balancer_ctx *ctx);
    /* Strategy bookkeeping when an attempt on peer i starts / ends, after / before
     * the common `active` accounting. May be NULL. */
    void (*attempt_begin)(void *state, struct balancer_peer *peers, size_t i);
    void (*attempt_end)(void *state, struct balancer_peer *peers, size_t i);
};

struct balancer {
    const struct balancer_ops *ops; /* the strategy */
    void *state;                    /* its private state (owned) */
    struct balancer_peer *peers;    /* borrowed from the owner (the upstream set) */
    size_t n;                       /* peers */
};

/* Eligible = not in ctx->tried, and health_available(peer's health, ctx->now):
 * not down, not drained, or the single passive probe after fail_timeout is free.
 * Inline: every pick asks it for every peer. */
static inline bool balancer_peer_eligible(const struct balancer_peer *peers, size_t i,
                                          const struct balancer_ctx *ctx)
{
    if (ctx->tried && balancer_tried_has(ctx->tried, i))
        return false;
    return health_available(peers[i].health, ctx->now);
}

/* Set up b over peers (borrowed, must outlive b). group: the sharing key (see
 * balancer_ops.create; the upstream set passes its cfgref, NULL: private state).
 * Returns 0 or -1 (no memory). */
int balancer_init(struct balancer *b, const struct balancer_ops *ops, struct balancer_peer *peers,
                  size_t n, const void *group);
/* Free the strategy state; a zeroed or deinitialised b is fine. */
void balancer_deinit(struct balancer *b);
/* Index of the peer for the next attempt, or -1 when no peer is eligible. */
static inline int balancer_pick(struct balancer *b, const struct balancer_ctx *ctx)
{
    return b->ops->pick(b->state, b->peers, b->n, ctx);
}
/* An attempt on peer i starts: active++, the strategy hook, health_attempt_begin
 * (which claims the probe of an upstream whose fail_timeout is over). Inline (as
 * balancer_attempt_end): once per request each, on the data path. */
static inline void balancer_attempt_begin(struct balancer *b, size_t i, double now)
{
    if (i >= b->n)
        return;
    struct balancer_peer *p = &b->peers[i];
    p->active++;
    if (b->ops->attempt_begin)
        b->ops->attempt_begin(b->state, b->peers, i);
    health_attempt_begin(p->health, now);
}

/* That attempt ended with outcome o (reason: a reason constant, may be NULL):
 * active--, the strategy hook, health_attempt_end. Call exactly once per begin. */
static inline void balancer_attempt_end(struct balancer *b, size_t i, enum health_outcome o,
                                        const char *reason, double now)
{
    if (i >= b->n)
        return;
    struct balancer_peer *p = &b->peers[i];
    if (b->ops->attempt_end)
        b->ops->attempt_end(b->state, b->peers, i);
    if (p->active)
        p->active--;
    health_attempt_end(p->health, o, reason, now);
}

/* The hash the ring uses (balancer_hash.c), exported for tests and the twin: 64-bit
 * FNV-1a of the bytes, then the splitmix64 finalizer. Python: balancer_hash.hash64. */
uint64_t balancer_hash64(const void *data, size_t len);

#endif
