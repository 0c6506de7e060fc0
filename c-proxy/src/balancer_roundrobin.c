/* balancer_roundrobin: smooth weighted round robin, as nginx's
 * ngx_http_upstream_get_peer(): every pick adds each eligible peer's weight to
 * its current weight, takes the highest (the first on a tie), and subtracts the
 * total from it. With weights 5:1:1 the sequence is a a b a c a a; with equal
 * weights N*k picks give exactly k each. Peers not eligible (tried, down,
 * drained) take no part in a pick.
 *
 * Twin: py-proxy/pyproxy/balancer_roundrobin.py.
 */
#include <stdlib.h>

#include "balancer.h"

struct rr_state {
    size_t n;       /* peers */
    long current[]; /* current weight per peer */
};

static void *rr_create(const struct balancer_peer *peers, size_t n)
{
    (void)peers;
    struct rr_state *s = calloc(1, sizeof *s + (n ? n : 1) * sizeof(long));
    if (s)
        s->n = n;
    return s;
}

static void rr_destroy(void *state)
{
    free(state);
}

static int rr_pick(void *state, const struct balancer_peer *peers, size_t n,
                   const struct balancer_ctx *ctx)
{
    struct rr_state *s = state;
    long total = 0;
    int best = -1;
    for (size_t i = 0; i < n && i < s->n; i++) {
        if (!balancer_peer_eligible(peers, i, ctx))
            continue;
        s->current[i] += (long)peers[i].weight;
        total += (long)peers[i].weight;
        if (best == -1 || s->current[i] > s->current[best])
            best = (int)i;
    }
    if (best >= 0)
        s->current[best] -= total;
    return best;
}

const struct balancer_ops balancer_roundrobin_ops = {
    .name = "round_robin",
    .create = rr_create,
    .destroy = rr_destroy,
    .pick = rr_pick,
};
