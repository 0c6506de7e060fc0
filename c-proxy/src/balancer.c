#include "balancer.h"

int balancer_init(struct balancer *b, const struct balancer_ops *ops, struct balancer_peer *peers,
                  size_t n, const void *group)
{
    b->ops = ops;
    b->peers = peers;
    b->n = n;
    b->state = ops->create(peers, n, group);
    return b->state ? 0 : -1;
}

void balancer_deinit(struct balancer *b)
{
    if (b->ops && b->state)
        b->ops->destroy(b->state);
    b->state = NULL;
}
