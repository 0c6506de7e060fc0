#include "balancer_strategies.h"

const struct balancer_ops *balancer_ops_for(enum config_balancer kind)
{
    switch (kind) {
    case CONFIG_BALANCER_RANDOM:
        return &balancer_random_ops;
    case CONFIG_BALANCER_LEAST_CONN:
        return &balancer_leastconn_ops;
    case CONFIG_BALANCER_HASH:
        return &balancer_hash_ops;
    case CONFIG_BALANCER_ROUND_ROBIN:
    default:
        return &balancer_roundrobin_ops;
    }
}
