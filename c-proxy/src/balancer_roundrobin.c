/* balancer_roundrobin: smooth weighted round robin, as nginx's
 * ngx_http_upstream_get_peer(): every pick adds each eligible peer's weight to
 * its current weight, takes the highest (the first on a tie), and subtracts the
 * total from it. With weights 5:1:1 the sequence is a a b a c a a; with equal
 * weights N*k picks give exactly k each. Peers not eligible (tried, down,
 * drained) take no part in a pick.
 *
 * One rotation per process: the states created with the same group (the
 * upstream set's cfgref: every worker's set of one config generation) are one
 * shared state in a process-wide registry, its current weights under a mutex.
 * So the picks of all workers are one smooth sequence, and N*k requests over
 * equal weights give exactly k each however the kernel spreads the connections
 * (docs/architecture.md "Workers"). A reload makes a new cfgref, so a new
 * rotation. The state is freed with the last set that holds it.
 *
 * Twin: py-proxy/pyproxy/balancer_roundrobin.py.
 */
#include <pthread.h>
#include <stdlib.h>

#include "balancer.h"

struct rr_state {
    const void *group;     /* registry key; NULL: private (not in the registry) */
    unsigned refs;         /* sets holding it (under registry_mu) */
    struct rr_state *next; /* registry link */
    pthread_mutex_t mu;    /* guards current[] (shared states only) */
    size_t n;              /* peers */
    long current[];        /* current weight per peer */
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rr_state *registry; /* shared states, under registry_mu */

static struct rr_state *rr_alloc(const void *group, size_t n)
{
    struct rr_state *s = calloc(1, sizeof *s + (n ? n : 1) * sizeof(long));
    if (!s)
        return NULL;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return NULL;
    }
    s->group = group;
    s->refs = 1;
    s->n = n;
    return s;
}

static void *rr_create(const struct balancer_peer *peers, size_t n, const void *group)
{
    (void)peers;
    if (!group)
        return rr_alloc(NULL, n);
    pthread_mutex_lock(&registry_mu);
    struct rr_state *s = registry;
    while (s && !(s->group == group && s->n == n))
        s = s->next;
    if (s) {
        s->refs++;
    } else if ((s = rr_alloc(group, n)) != NULL) {
        s->next = registry;
        registry = s;
    }
    pthread_mutex_unlock(&registry_mu);
    return s;
}

static void rr_destroy(void *state)
{
    struct rr_state *s = state;
    if (s->group) {
        pthread_mutex_lock(&registry_mu);
        bool last = --s->refs == 0;
        if (last) {
            struct rr_state **pp = &registry;
            while (*pp != s)
                pp = &(*pp)->next;
            *pp = s->next;
        }
        pthread_mutex_unlock(&registry_mu);
        if (!last)
            return;
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int rr_pick(void *state, const struct balancer_peer *peers, size_t n,
                   const struct balancer_ctx *ctx)
{
    struct rr_state *s = state;
    long total = 0;
    int best = -1;
    if (s->group)
        pthread_mutex_lock(&s->mu);
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
    if (s->group)
        pthread_mutex_unlock(&s->mu);
    return best;
}

const struct balancer_ops balancer_roundrobin_ops = {
    .name = "round_robin",
    .create = rr_create,
    .destroy = rr_destroy,
    .pick = rr_pick,
};
