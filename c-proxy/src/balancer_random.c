/* balancer_random: weighted random. Each pick draws r uniformly in
 * [0, W) where W is the sum of the eligible peers' weights, and returns the
 * eligible peer whose cumulative weight range (in index order) holds r: a peer
 * of weight w gets w/W of the picks. The generator is splitmix64, one per
 * strategy state (so per worker and config generation, no locking), seeded at
 * create from the clock, the state's address and a process-wide counter.
 *
 * Twin: py-proxy/pyproxy/balancer_random.py (random.Random).
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "balancer.h"

struct random_state {
    uint64_t rng;       /* splitmix64 state */
    size_t n;           /* peers */
    unsigned char ok[]; /* scratch: eligibility of each peer during one pick */
};

static uint64_t splitmix64_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void *random_create(const struct balancer_peer *peers, size_t n, const void *group)
{
    static atomic_uint_fast64_t created; /* two states made in the same ns still differ */
    (void)peers;
    (void)group; /* independent draws per worker */
    struct random_state *s = calloc(1, sizeof *s + (n ? n : 1));
    if (!s)
        return NULL;
    s->n = n;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t seed = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    seed ^= (uint64_t)(uintptr_t)s;
    seed ^= (uint64_t)atomic_fetch_add(&created, 1) << 48;
    s->rng = seed;
    (void)splitmix64_next(&s->rng);
    return s;
}

static void random_destroy(void *state)
{
    free(state);
}

static int random_pick(void *state, const struct balancer_peer *peers, size_t n,
                       const struct balancer_ctx *ctx)
{
    struct random_state *s = state;
    if (n > s->n)
        n = s->n;
    /* Ask health once per peer: another worker may change a verdict meanwhile. */
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        s->ok[i] = balancer_peer_eligible(peers, i, ctx);
        if (s->ok[i])
            total += peers[i].weight;
    }
    if (total == 0)
        return -1;
    /* total <= 1000 * n: the modulo bias is below 2^-40 */
    uint64_t r = splitmix64_next(&s->rng) % total;
    for (size_t i = 0; i < n; i++) {
        if (!s->ok[i])
            continue;
        if (r < peers[i].weight)
            return (int)i;
        r -= peers[i].weight;
    }
    return -1; /* not reached */
}

const struct balancer_ops balancer_random_ops = {
    .name = "random",
    .create = random_create,
    .destroy = random_destroy,
    .pick = random_pick,
};
