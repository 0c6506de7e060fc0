/* balancer_leastconn: fewest attempts in flight per weight, as nginx's
 * ngx_http_upstream_get_least_conn_peer(). Peer i beats peer j when
 * active_i / weight_i < active_j / weight_j, compared exactly as
 * active_i * weight_j < active_j * weight_i. Peers tied at the best ratio share
 * the picks by smooth weighted round robin (balancer_roundrobin.c) run over the
 * tied ones only, so with no load at all least_conn is round robin.
 * `active` is this worker's count (balancer_attempt_begin/end).
 *
 * Twin: py-proxy/pyproxy/balancer_leastconn.py.
 */
#include <stdlib.h>

#include "balancer.h"

struct lc_state {
    size_t n;          /* peers */
    long *current;     /* smooth WRR current weight per peer, among ties */
    unsigned char *ok; /* scratch: eligibility of each peer during one pick */
};

static void lc_destroy(void *state)
{
    struct lc_state *s = state;
    if (!s)
        return;
    free(s->current);
    free(s->ok);
    free(s);
}

static void *lc_create(const struct balancer_peer *peers, size_t n, const void *group)
{
    (void)group; /* counts the attempts of this worker (peers.active) */
    (void)peers;
    struct lc_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->n = n;
    s->current = calloc(n ? n : 1, sizeof *s->current);
    s->ok = calloc(n ? n : 1, 1);
    if (!s->current || !s->ok) {
        lc_destroy(s);
        return NULL;
    }
    return s;
}

/* active_a / weight_a < active_b / weight_b, without division */
static bool lc_less(const struct balancer_peer *a, const struct balancer_peer *b)
{
    return (uint64_t)a->active * b->weight < (uint64_t)b->active * a->weight;
}

static int lc_pick(void *state, const struct balancer_peer *peers, size_t n,
                   const struct balancer_ctx *ctx)
{
    struct lc_state *s = state;
    if (n > s->n)
        n = s->n;
    /* Ask health once per peer: another worker may change a verdict meanwhile. */
    int least = -1;
    for (size_t i = 0; i < n; i++) {
        s->ok[i] = balancer_peer_eligible(peers, i, ctx);
        if (s->ok[i] && (least == -1 || lc_less(&peers[i], &peers[least])))
            least = (int)i;
    }
    if (least == -1)
        return -1;
    long total = 0;
    int best = -1;
    for (size_t i = (size_t)least; i < n; i++) {
        if (!s->ok[i] || lc_less(&peers[least], &peers[i]))
            continue; /* not tied with the least loaded one */
        s->current[i] += (long)peers[i].weight;
        total += (long)peers[i].weight;
        if (best == -1 || s->current[i] > s->current[best])
            best = (int)i;
    }
    s->current[best] -= total;
    return best;
}

const struct balancer_ops balancer_leastconn_ops = {
    .name = "least_conn",
    .create = lc_create,
    .destroy = lc_destroy,
    .pick = lc_pick,
};
