/* balancer_hash: consistent hashing on a ketama-style ring.
 *
 * Each peer puts 160 points per weight unit on a 64-bit ring: point j of the
 * peer named NAME is balancer_hash64("NAME-j") (j in decimal, 0-based), NAME
 * being the upstream's name (its index in decimal when it has none). The ring
 * is sorted by (point, peer index). A request's key hashes to h; its owner is
 * the peer of the first point >= h (wrapping to the first point). A key whose
 * owner is not eligible (tried, down, drained) goes to the next eligible peer
 * clockwise, which is exactly where the ring without that peer would send it:
 * removing one of N upstreams moves only the keys it owned (about 1/N).
 *
 * The key is ctx->key (header value or path); when empty, ctx->client_ip, i.e.
 * the very bytes hash_key: client_ip would hash.
 *
 * balancer_hash64 = 64-bit FNV-1a, then the splitmix64 finalizer (FNV-1a alone
 * spreads short, similar strings such as "u1-17" poorly). The Python twin
 * computes the same values (tests/balancer_cases/hash_vectors.txt proves it).
 *
 * Twin: py-proxy/pyproxy/balancer_hash.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"

#define HASH_POINTS_PER_WEIGHT 160

#define FNV64_OFFSET 0xcbf29ce484222325ULL
#define FNV64_PRIME 0x100000001b3ULL

struct hash_point {
    uint64_t point; /* position on the ring */
    size_t peer;    /* owner */
};

struct hash_state {
    size_t n_points;          /* ring size: 160 * sum of weights */
    struct hash_point ring[]; /* sorted by (point, peer) */
};

static uint64_t fnv1a64(uint64_t h, const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV64_PRIME;
    }
    return h;
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t balancer_hash64(const void *data, size_t len)
{
    return mix64(fnv1a64(FNV64_OFFSET, data, len));
}

static int point_cmp(const void *a, const void *b)
{
    const struct hash_point *x = a, *y = b;
    if (x->point != y->point)
        return x->point < y->point ? -1 : 1;
    return x->peer < y->peer ? -1 : x->peer > y->peer;
}

static void *hash_create(const struct balancer_peer *peers, size_t n, const void *group)
{
    (void)group; /* the ring is a pure function of the peers: nothing to share */
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += (size_t)peers[i].weight * HASH_POINTS_PER_WEIGHT;
    struct hash_state *s = calloc(1, sizeof *s + (total ? total : 1) * sizeof s->ring[0]);
    if (!s)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char idx[24];
        const char *name = peers[i].name;
        if (!name) {
            snprintf(idx, sizeof idx, "%zu", i);
            name = idx;
        }
        /* "NAME-": hashed once, then each point continues with its digits */
        uint64_t prefix = fnv1a64(FNV64_OFFSET, (const unsigned char *)name, strlen(name));
        prefix = fnv1a64(prefix, (const unsigned char *)"-", 1);
        size_t points = (size_t)peers[i].weight * HASH_POINTS_PER_WEIGHT;
        for (size_t j = 0; j < points; j++) {
            char digits[24];
            int len = snprintf(digits, sizeof digits, "%zu", j);
            s->ring[k].point = mix64(fnv1a64(prefix, (const unsigned char *)digits, (size_t)len));
            s->ring[k].peer = i;
            k++;
        }
    }
    s->n_points = k;
    qsort(s->ring, k, sizeof s->ring[0], point_cmp);
    return s;
}

static void hash_destroy(void *state)
{
    free(state);
}

/* Index of the first ring point >= h, or 0 past the last one (the ring wraps). */
static size_t ring_find(const struct hash_state *s, uint64_t h)
{
    size_t lo = 0, hi = s->n_points;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ring[mid].point < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == s->n_points ? 0 : lo;
}

static int hash_pick(void *state, const struct balancer_peer *peers, size_t n,
                     const struct balancer_ctx *ctx)
{
    struct hash_state *s = state;
    bool any = false;
    for (size_t i = 0; i < n && !any; i++)
        any = balancer_peer_eligible(peers, i, ctx);
    if (!any || s->n_points == 0)
        return -1;
    const char *key = ctx->key;
    size_t len = ctx->key_len;
    if (!key || len == 0) {
        key = ctx->client_ip ? ctx->client_ip : "";
        len = strlen(key);
    }
    size_t at = ring_find(s, balancer_hash64(key, len));
    /* clockwise to the first eligible owner; at most one lap */
    for (size_t step = 0; step < s->n_points; step++) {
        size_t peer = s->ring[at].peer;
        if (peer < n && balancer_peer_eligible(peers, peer, ctx))
            return (int)peer;
        if (++at == s->n_points)
            at = 0;
    }
    return -1; /* the last eligible peer went down during the lap */
}

const struct balancer_ops balancer_hash_ops = {
    .name = "hash",
    .create = hash_create,
    .destroy = hash_destroy,
    .pick = hash_pick,
};
