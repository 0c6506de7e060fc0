#include "balancer.h"

bool balancer_peer_eligible(const struct balancer_peer *peers, size_t i,
                            const struct balancer_ctx *ctx)
{
    if (ctx->tried && balancer_tried_has(ctx->tried, i))
        return false;
    return health_available(peers[i].health, ctx->now);
}

int balancer_init(struct balancer *b, const struct balancer_ops *ops, struct balancer_peer *peers,
                  size_t n)
{
    b->ops = ops;
    b->peers = peers;
    b->n = n;
    b->state = ops->create(peers, n);
    return b->state ? 0 : -1;
}

void balancer_deinit(struct balancer *b)
{
    if (b->ops && b->state)
        b->ops->destroy(b->state);
    b->state = NULL;
}

int balancer_pick(struct balancer *b, const struct balancer_ctx *ctx)
{
    return b->ops->pick(b->state, b->peers, b->n, ctx);
}

void balancer_attempt_begin(struct balancer *b, size_t i, double now)
{
    if (i >= b->n)
        return;
    struct balancer_peer *p = &b->peers[i];
    p->active++;
    if (b->ops->attempt_begin)
        b->ops->attempt_begin(b->state, b->peers, i);
    health_attempt_begin(p->health, now);
}

void balancer_attempt_end(struct balancer *b, size_t i, enum health_outcome o, const char *reason,
                          double now)
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
