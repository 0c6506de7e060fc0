#include "balancer.h"

const struct balancer_ops *balancer_ops_for(enum config_balancer kind, bool *fallback)
{
    *fallback = false;
    switch (kind) {
    case CONFIG_BALANCER_ROUND_ROBIN:
        return &balancer_roundrobin_ops;
    default:
        /* random, least_conn, hash arrive as balancer_<name>.c in their issue */
        *fallback = true;
        return &balancer_roundrobin_ops;
    }
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
