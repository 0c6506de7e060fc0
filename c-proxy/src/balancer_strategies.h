/* balancer_strategies: the table of strategies by config name.
 *
 * Twin: py-proxy/pyproxy/balancer_strategies.py.
 *
 * Kept apart from balancer.c so the module graph stays a DAG: every strategy
 * (balancer_<name>.c) uses the contract in balancer.h, and only this module
 * (used by upstream.c) names the strategies.
 */
#ifndef TWINPROXY_BALANCER_STRATEGIES_H
#define TWINPROXY_BALANCER_STRATEGIES_H

#include "balancer.h"
#include "config.h"

extern const struct balancer_ops balancer_roundrobin_ops;
extern const struct balancer_ops balancer_random_ops;
extern const struct balancer_ops balancer_leastconn_ops;
extern const struct balancer_ops balancer_hash_ops;

/* The strategy for a config value (every config strategy exists). */
const struct balancer_ops *balancer_ops_for(enum config_balancer kind);

#endif
