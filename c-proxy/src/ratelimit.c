/* ratelimit: per-client token buckets. Twin: py-proxy/pyproxy/ratelimit.py.
 *
 * Locking: worker threads share one table. Each take touches one bucket and
 * must be atomic (refill + compare + take), which a lock-free design could only
 * do with a CAS loop over a 16-byte (tokens, at) pair plus a separate protocol
 * for inserting and evicting keys. A lock per stripe (struct rl_lock below) is
 * simpler, exact, and cheap: a take holds it for a hash probe and a few flops,
 * and with 64 stripes keyed by the key's hash two workers rarely want the same
 * one. The same
 * stripe layout is what the Python twin locks across processes, one
 * multiprocessing lock per stripe over a shared-memory table.
 */
#include "ratelimit.h"

#include <arpa/inet.h>
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* A stripe lock: an atomic flag taken with one exchange (uncontended: a few
 * instructions, where a pthread mutex costs some sixty per lock and unlock on the
 * request path). It is held for a hash probe and a few flops (a snapshot: one
 * stripe's scan), so a waiter spins, yielding the CPU between tries: on a busy
 * machine the holder may have been preempted, and yielding lets it finish. */
struct rl_lock {
    atomic_flag f; /* set: held */
};

static void rl_lock(struct rl_lock *l)
{
    while (atomic_flag_test_and_set_explicit(&l->f, memory_order_acquire))
        sched_yield();
}

static void rl_unlock(struct rl_lock *l)
{
    atomic_flag_clear_explicit(&l->f, memory_order_release);
}

/* One slot, 128 bytes, the byte layout of the Python twin's SLOT struct
 * ("=IHHIIddd88s"). key_len 0 marks an empty slot (keys are never empty). */
struct ratelimit_slot {
    uint32_t hash;               /* crc32 of the key */
    uint16_t key_len;            /* 1..RATELIMIT_KEY_MAX; 0 = empty */
    uint16_t flags;              /* RATELIMIT_SLOT_F_* */
    uint32_t capacity;           /* limit the bucket was last used with */
    uint32_t pad1;               /* zero */
    double rate_per_sec;         /* ditto */
    double tokens;               /* bucket: tokens as of at */
    double at;                   /* bucket: caller's clock */
    char key[RATELIMIT_KEY_MAX]; /* key bytes, not NUL-terminated */
};

_Static_assert(sizeof(struct ratelimit_slot) == RATELIMIT_SLOT_SIZE, "slot layout");

#define RATELIMIT_SLOT_F_PINNED                                                                    \
    0x1 /* an admin override: its limit is the slot's, never evicted                               \
         */

/* A stripe: its own lock, slots and share of max_clients. Aligned to a cache
 * line so two stripes' counters never share one. */
struct ratelimit_stripe {
    struct rl_lock lock;          /* guards everything below and the slots */
    uint32_t count;               /* used slots */
    uint32_t hand;                /* where the next eviction scan starts (clock hand) */
    struct ratelimit_slot *slots; /* slots_per_stripe, inside table->slots */
} __attribute__((aligned(64)));

struct ratelimit_table {
    struct ratelimit_limit dflt;       /* new keys and the overflow bucket */
    uint32_t n_stripes;                /* power of two, 1..64 */
    uint32_t cap_per_stripe;           /* buckets a stripe may hold */
    uint32_t slots_per_stripe;         /* cap + cap/3 + 1: load <= 75% */
    struct ratelimit_slot *slots;      /* n_stripes * slots_per_stripe */
    struct rl_lock overflow_lock;      /* guards overflow */
    struct ratelimit_bucket overflow;  /* shared by keys without a slot */
    struct ratelimit_stripe stripes[]; /* n_stripes */
};

/* ---- bucket arithmetic ------------------------------------------------------------ */

/* Seconds rounded up, clamped: the same in both twins. */
static int64_t ceil_seconds(double s)
{
    double c = ceil(s);
    if (c <= 0)
        return 0;
    if (c >= (double)RATELIMIT_SECONDS_MAX)
        return RATELIMIT_SECONDS_MAX;
    return (int64_t)c;
}

void ratelimit_refill(struct ratelimit_bucket *b, const struct ratelimit_limit *lim, double now)
{
    if (!(now > b->at))
        return;
    if (lim->rate_per_sec > 0) {
        double t = b->tokens + (now - b->at) * lim->rate_per_sec;
        b->tokens = t > (double)lim->capacity ? (double)lim->capacity : t;
    }
    b->at = now;
}

void ratelimit_bucket_take(struct ratelimit_bucket *b, const struct ratelimit_limit *lim,
                           double now, struct ratelimit_result *res)
{
    double cap = (double)lim->capacity;
    double rate = lim->rate_per_sec;

    ratelimit_refill(b, lim, now);
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        res->verdict = RATELIMIT_ALLOWED;
        res->retry_after = -1;
    } else {
        res->verdict = RATELIMIT_LIMITED;
        res->retry_after = rate > 0 ? ceil_seconds((1.0 - b->tokens) / rate) : -1;
        if (res->retry_after == 0)
            res->retry_after = 1;
    }
    res->limit = lim->capacity;
    res->remaining = (uint64_t)floor(b->tokens);
    res->reset = rate > 0 ? ceil_seconds((cap - b->tokens) / rate) : -1;
    res->overflow = false;
}

bool ratelimit_bucket_full(const struct ratelimit_bucket *b, const struct ratelimit_limit *lim,
                           double now)
{
    struct ratelimit_bucket c = *b;
    ratelimit_refill(&c, lim, now);
    return c.tokens >= (double)lim->capacity;
}

/* ---- table ------------------------------------------------------------------------ */

struct ratelimit_table *ratelimit_table_new(uint64_t max_clients,
                                            const struct ratelimit_limit *dflt)
{
    if (max_clients < 1 || max_clients > UINT32_MAX / 2 || dflt->capacity < 1 ||
        !(dflt->rate_per_sec >= 0))
        return NULL;
    uint32_t n = RATELIMIT_STRIPES_MAX;
    while (n > 1 && max_clients / n < RATELIMIT_STRIPE_MIN_CLIENTS)
        n /= 2;
    uint32_t cap = (uint32_t)(max_clients / n);
    uint32_t sps = cap + cap / 3 + 1;

    struct ratelimit_table *t = calloc(1, sizeof *t + n * sizeof t->stripes[0]);
    if (t == NULL)
        return NULL;
    /* calloc: the slots start empty, and large tables are touched only where used */
    t->slots = calloc((size_t)n * sps, sizeof *t->slots);
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    t->dflt = *dflt;
    t->n_stripes = n;
    t->cap_per_stripe = cap;
    t->slots_per_stripe = sps;
    atomic_flag_clear(&t->overflow_lock.f);
    t->overflow = (struct ratelimit_bucket){.tokens = dflt->capacity, .at = 0};
    for (uint32_t i = 0; i < n; i++) {
        atomic_flag_clear(&t->stripes[i].lock.f);
        t->stripes[i].slots = t->slots + (size_t)i * sps;
    }
    return t;
}

void ratelimit_table_free(struct ratelimit_table *t)
{
    if (t == NULL)
        return;
    free(t->slots);
    free(t);
}

static uint32_t key_hash(const char *key, size_t len)
{
    return (uint32_t)crc32(0L, (const Bytef *)key, (uInt)len);
}

static struct ratelimit_stripe *stripe_of(struct ratelimit_table *t, uint32_t h)
{
    return &t->stripes[h & (t->n_stripes - 1)];
}

static uint32_t home_of(const struct ratelimit_table *t, uint32_t h)
{
    return (h >> 6) % t->slots_per_stripe;
}

/* Slot index of key in st, or -1. Caller holds st->lock. */
static int64_t slot_find(struct ratelimit_table *t, struct ratelimit_stripe *st, uint32_t h,
                         const char *key, size_t len)
{
    uint32_t i = home_of(t, h);
    for (uint32_t n = 0; n < t->slots_per_stripe; n++) {
        const struct ratelimit_slot *s = &st->slots[i];
        if (s->key_len == 0)
            return -1;
        if (s->hash == h && s->key_len == len && memcmp(s->key, key, len) == 0)
            return i;
        i = i + 1 == t->slots_per_stripe ? 0 : i + 1;
    }
    return -1;
}

/* Empty slot i and shift later members of its probe run back (linear probing
 * without tombstones). Caller holds the lock. */
static void slot_delete(struct ratelimit_table *t, struct ratelimit_stripe *st, uint32_t i)
{
    uint32_t n = t->slots_per_stripe;
    uint32_t j = i;

    for (;;) {
        memset(&st->slots[i], 0, sizeof st->slots[i]);
        for (;;) {
            j = j + 1 == n ? 0 : j + 1;
            if (st->slots[j].key_len == 0) {
                st->count--;
                return;
            }
            uint32_t k = home_of(t, st->slots[j].hash);
            /* j stays if its home lies cyclically in (i, j] */
            bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (!stays)
                break;
        }
        st->slots[i] = st->slots[j];
        i = j;
    }
}

static struct ratelimit_bucket slot_bucket(const struct ratelimit_slot *s)
{
    return (struct ratelimit_bucket){.tokens = s->tokens, .at = s->at};
}

static struct ratelimit_limit slot_limit(const struct ratelimit_slot *s)
{
    return (struct ratelimit_limit){.capacity = s->capacity, .rate_per_sec = s->rate_per_sec};
}

/* Evict one full bucket, scanning from the clock hand. Returns true if one was. */
static bool stripe_evict(struct ratelimit_table *t, struct ratelimit_stripe *st, double now)
{
    uint32_t n = t->slots_per_stripe;
    uint32_t i = st->hand % n;

    for (uint32_t k = 0; k < n; k++) {
        const struct ratelimit_slot *s = &st->slots[i];
        if (s->key_len != 0 && !(s->flags & RATELIMIT_SLOT_F_PINNED)) {
            struct ratelimit_bucket b = slot_bucket(s);
            struct ratelimit_limit l = slot_limit(s);
            if (ratelimit_bucket_full(&b, &l, now)) {
                slot_delete(t, st, i);
                st->hand = i + 1 == n ? 0 : i + 1;
                return true;
            }
        }
        i = i + 1 == n ? 0 : i + 1;
    }
    return false;
}

/* Insert key with a fresh bucket (full under lim, at now); returns its index
 * or -1 when the stripe is at its share and no bucket is full. Caller holds
 * the lock and knows the key is absent. */
static int64_t slot_insert(struct ratelimit_table *t, struct ratelimit_stripe *st, uint32_t h,
                           const char *key, size_t len, const struct ratelimit_limit *lim,
                           double now)
{
    if (st->count >= t->cap_per_stripe && !stripe_evict(t, st, now))
        return -1;
    uint32_t i = home_of(t, h);
    while (st->slots[i].key_len != 0)
        i = i + 1 == t->slots_per_stripe ? 0 : i + 1;
    struct ratelimit_slot *s = &st->slots[i];
    memset(s, 0, sizeof *s);
    s->hash = h;
    s->key_len = (uint16_t)len;
    memcpy(s->key, key, len);
    s->capacity = lim->capacity;
    s->rate_per_sec = lim->rate_per_sec;
    s->tokens = (double)lim->capacity;
    s->at = now;
    st->count++;
    return i;
}

/* The slot's bucket under lim: refilled under its old limit first when the
 * limit changed, then capped at the new capacity (a change never adds tokens). */
static struct ratelimit_bucket slot_under(const struct ratelimit_slot *s,
                                          const struct ratelimit_limit *lim, double now)
{
    struct ratelimit_bucket b = slot_bucket(s);
    if (s->capacity != lim->capacity || s->rate_per_sec != lim->rate_per_sec) {
        struct ratelimit_limit old = slot_limit(s);
        ratelimit_refill(&b, &old, now);
        if (b.tokens > (double)lim->capacity)
            b.tokens = (double)lim->capacity;
    }
    return b;
}

static void overflow_take(struct ratelimit_table *t, double now, struct ratelimit_result *res)
{
    rl_lock(&t->overflow_lock);
    ratelimit_bucket_take(&t->overflow, &t->dflt, now, res);
    rl_unlock(&t->overflow_lock);
    res->overflow = true;
}

uint32_t ratelimit_hash(const char *key, size_t key_len)
{
    return key_hash(key, key_len);
}

void ratelimit_take(struct ratelimit_table *t, const char *key, size_t key_len,
                    const struct ratelimit_limit *lim, double now, struct ratelimit_result *res)
{
    ratelimit_take_hashed(t, key, key_len, key_hash(key, key_len), lim, now, res);
}

void ratelimit_take_hashed(struct ratelimit_table *t, const char *key, size_t key_len, uint32_t h,
                           const struct ratelimit_limit *lim, double now,
                           struct ratelimit_result *res)
{
    bool given = lim != NULL;
    if (lim == NULL)
        lim = &t->dflt;
    if (key_len == 0 || key_len > RATELIMIT_KEY_MAX) {
        overflow_take(t, now, res);
        return;
    }
    struct ratelimit_stripe *st = stripe_of(t, h);

    rl_lock(&st->lock);
    int64_t i = slot_find(t, st, h, key, key_len);
    if (i < 0)
        i = slot_insert(t, st, h, key, key_len, lim, now);
    if (i < 0) {
        rl_unlock(&st->lock);
        overflow_take(t, now, res);
        return;
    }
    struct ratelimit_slot *s = &st->slots[i];
    struct ratelimit_limit pinned;
    if (!given && (s->flags & RATELIMIT_SLOT_F_PINNED)) {
        pinned = slot_limit(s);
        lim = &pinned;
    }
    struct ratelimit_bucket b = slot_under(s, lim, now);
    ratelimit_bucket_take(&b, lim, now, res);
    s->tokens = b.tokens;
    s->at = b.at;
    s->capacity = lim->capacity;
    s->rate_per_sec = lim->rate_per_sec;
    rl_unlock(&st->lock);
}

/* The header values of bucket b under lim, nothing taken. */
static void status_of(const struct ratelimit_bucket *b, const struct ratelimit_limit *lim,
                      struct ratelimit_result *res)
{
    res->verdict = RATELIMIT_ALLOWED;
    res->limit = lim->capacity;
    res->remaining = (uint64_t)floor(b->tokens);
    res->reset = lim->rate_per_sec > 0
                     ? ceil_seconds(((double)lim->capacity - b->tokens) / lim->rate_per_sec)
                     : -1;
    res->retry_after = -1;
    res->overflow = false;
}

void ratelimit_status(struct ratelimit_table *t, const char *key, size_t key_len, double now,
                      struct ratelimit_result *res)
{
    if (key_len == 0 || key_len > RATELIMIT_KEY_MAX) {
        rl_lock(&t->overflow_lock);
        struct ratelimit_bucket b = t->overflow;
        ratelimit_refill(&b, &t->dflt, now);
        status_of(&b, &t->dflt, res);
        rl_unlock(&t->overflow_lock);
        res->overflow = true;
        return;
    }
    uint32_t h = key_hash(key, key_len);
    struct ratelimit_stripe *st = stripe_of(t, h);

    rl_lock(&st->lock);
    struct ratelimit_limit lim = t->dflt;
    struct ratelimit_bucket b = {.tokens = (double)lim.capacity, .at = now};
    int64_t i = slot_find(t, st, h, key, key_len);
    if (i >= 0) {
        const struct ratelimit_slot *s = &st->slots[i];
        if (s->flags & RATELIMIT_SLOT_F_PINNED)
            lim = slot_limit(s);
        b = slot_under(s, &lim, now);
        ratelimit_refill(&b, &lim, now);
    }
    status_of(&b, &lim, res);
    rl_unlock(&st->lock);
}

void ratelimit_set_default(struct ratelimit_table *t, const struct ratelimit_limit *dflt)
{
    /* every reader of t->dflt holds a stripe lock or the overflow lock: hold them all */
    for (uint32_t k = 0; k < t->n_stripes; k++)
        rl_lock(&t->stripes[k].lock);
    rl_lock(&t->overflow_lock);
    t->dflt = *dflt;
    rl_unlock(&t->overflow_lock);
    for (uint32_t k = t->n_stripes; k-- > 0;)
        rl_unlock(&t->stripes[k].lock);
}

double ratelimit_peek(struct ratelimit_table *t, const char *key, size_t key_len,
                      const struct ratelimit_limit *lim, double now)
{
    bool given = lim != NULL;
    if (lim == NULL)
        lim = &t->dflt; /* read under a lock only: ratelimit_set_default() */
    if (key_len == 0 || key_len > RATELIMIT_KEY_MAX) {
        rl_lock(&t->overflow_lock);
        double cap = (double)lim->capacity;
        rl_unlock(&t->overflow_lock);
        return cap;
    }
    uint32_t h = key_hash(key, key_len);
    struct ratelimit_stripe *st = stripe_of(t, h);

    rl_lock(&st->lock);
    double tokens = (double)lim->capacity;
    int64_t i = slot_find(t, st, h, key, key_len);
    if (i >= 0) {
        struct ratelimit_limit pinned;
        if (!given && (st->slots[i].flags & RATELIMIT_SLOT_F_PINNED)) {
            pinned = slot_limit(&st->slots[i]);
            lim = &pinned;
        }
        struct ratelimit_bucket b = slot_under(&st->slots[i], lim, now);
        ratelimit_refill(&b, lim, now);
        tokens = b.tokens;
    }
    rl_unlock(&st->lock);
    return tokens;
}

int ratelimit_set(struct ratelimit_table *t, const char *key, size_t key_len,
                  const struct ratelimit_limit *lim, double tokens, double at)
{
    bool given = lim != NULL;
    if (lim == NULL)
        lim = &t->dflt;
    if (key_len == 0 || key_len > RATELIMIT_KEY_MAX)
        return -1;
    if (!(tokens >= 0)) /* also NaN */
        tokens = 0;
    uint32_t h = key_hash(key, key_len);
    struct ratelimit_stripe *st = stripe_of(t, h);

    rl_lock(&st->lock);
    int64_t i = slot_find(t, st, h, key, key_len);
    struct ratelimit_limit pinned;
    if (i >= 0 && !given && (st->slots[i].flags & RATELIMIT_SLOT_F_PINNED)) {
        pinned = slot_limit(&st->slots[i]);
        lim = &pinned;
    }
    if (tokens > (double)lim->capacity)
        tokens = (double)lim->capacity;
    if (i < 0)
        i = slot_insert(t, st, h, key, key_len, lim, at);
    if (i >= 0) {
        struct ratelimit_slot *s = &st->slots[i];
        s->tokens = tokens;
        s->at = at;
        s->capacity = lim->capacity;
        s->rate_per_sec = lim->rate_per_sec;
    }
    rl_unlock(&st->lock);
    return i >= 0 ? 0 : -1;
}

int ratelimit_pin(struct ratelimit_table *t, const char *key, size_t key_len,
                  const struct ratelimit_limit *lim, double tokens, double now)
{
    if (key_len == 0 || key_len > RATELIMIT_KEY_MAX)
        return -1;
    uint32_t h = key_hash(key, key_len);
    struct ratelimit_stripe *st = stripe_of(t, h);

    rl_lock(&st->lock);
    int64_t i = slot_find(t, st, h, key, key_len);
    if (i < 0)
        i = slot_insert(t, st, h, key, key_len, lim, now);
    if (i >= 0) {
        struct ratelimit_slot *s = &st->slots[i];
        struct ratelimit_bucket b = slot_under(s, lim, now);
        ratelimit_refill(&b, lim, now);
        if (tokens >= 0) { /* an explicit value (admin POST/PATCH tokens) */
            b.tokens = tokens > (double)lim->capacity ? (double)lim->capacity : tokens;
            b.at = now;
        }
        s->tokens = b.tokens;
        s->at = b.at;
        s->capacity = lim->capacity;
        s->rate_per_sec = lim->rate_per_sec;
        s->flags |= RATELIMIT_SLOT_F_PINNED;
    }
    rl_unlock(&st->lock);
    return i >= 0 ? 0 : -1;
}

bool ratelimit_unpin(struct ratelimit_table *t, const char *key, size_t key_len, double now)
{
    if (key_len == 0 || key_len > RATELIMIT_KEY_MAX)
        return false;
    uint32_t h = key_hash(key, key_len);
    struct ratelimit_stripe *st = stripe_of(t, h);
    bool was = false;

    rl_lock(&st->lock);
    int64_t i = slot_find(t, st, h, key, key_len);
    if (i >= 0 && (st->slots[i].flags & RATELIMIT_SLOT_F_PINNED)) {
        struct ratelimit_slot *s = &st->slots[i];
        struct ratelimit_bucket b = slot_under(s, &t->dflt, now);
        ratelimit_refill(&b, &t->dflt, now);
        s->tokens = b.tokens;
        s->at = b.at;
        s->capacity = t->dflt.capacity;
        s->rate_per_sec = t->dflt.rate_per_sec;
        s->flags &= (uint16_t)~RATELIMIT_SLOT_F_PINNED;
        was = true;
    }
    rl_unlock(&st->lock);
    return was;
}

bool ratelimit_lookup(struct ratelimit_table *t, const char *key, size_t key_len, double now,
                      struct ratelimit_limit *lim, double *tokens)
{
    if (key_len == 0 || key_len > RATELIMIT_KEY_MAX)
        return false;
    uint32_t h = key_hash(key, key_len);
    struct ratelimit_stripe *st = stripe_of(t, h);
    bool pinned = false;

    rl_lock(&st->lock);
    int64_t i = slot_find(t, st, h, key, key_len);
    if (i >= 0 && (st->slots[i].flags & RATELIMIT_SLOT_F_PINNED)) {
        const struct ratelimit_slot *s = &st->slots[i];
        struct ratelimit_bucket b = slot_bucket(s);
        *lim = slot_limit(s);
        ratelimit_refill(&b, lim, now);
        *tokens = b.tokens;
        pinned = true;
    }
    rl_unlock(&st->lock);
    return pinned;
}

size_t ratelimit_pinned(struct ratelimit_table *t, double now,
                        void (*fn)(const char *key, size_t key_len,
                                   const struct ratelimit_limit *lim, double tokens, void *arg),
                        void *arg)
{
    size_t n = 0;
    for (uint32_t k = 0; k < t->n_stripes; k++) {
        struct ratelimit_stripe *st = &t->stripes[k];
        rl_lock(&st->lock);
        for (uint32_t i = 0; i < t->slots_per_stripe; i++) {
            const struct ratelimit_slot *s = &st->slots[i];
            if (s->key_len != 0 && (s->flags & RATELIMIT_SLOT_F_PINNED)) {
                struct ratelimit_bucket b = slot_bucket(s);
                struct ratelimit_limit l = slot_limit(s);
                ratelimit_refill(&b, &l, now);
                fn(s->key, s->key_len, &l, b.tokens, arg);
                n++;
            }
        }
        rl_unlock(&st->lock);
    }
    return n;
}

size_t ratelimit_snapshot(struct ratelimit_table *t,
                          void (*fn)(const char *key, size_t key_len, double tokens, double at,
                                     void *arg),
                          void *arg)
{
    size_t n = 0;
    for (uint32_t k = 0; k < t->n_stripes; k++) {
        struct ratelimit_stripe *st = &t->stripes[k];
        rl_lock(&st->lock);
        /* stop at the stripe's count: a mostly empty table is not scanned whole */
        uint32_t left = st->count;
        for (uint32_t i = 0; i < t->slots_per_stripe && left > 0; i++) {
            const struct ratelimit_slot *s = &st->slots[i];
            if (s->key_len != 0) {
                fn(s->key, s->key_len, s->tokens, s->at, arg);
                n++;
                left--;
            }
        }
        rl_unlock(&st->lock);
    }
    return n;
}

size_t ratelimit_count(struct ratelimit_table *t)
{
    size_t n = 0;
    for (uint32_t k = 0; k < t->n_stripes; k++) {
        rl_lock(&t->stripes[k].lock);
        n += t->stripes[k].count;
        rl_unlock(&t->stripes[k].lock);
    }
    return n;
}

/* ---- keys ------------------------------------------------------------------------- */

int ratelimit_key_ip(const char *ip, unsigned ipv6_prefix, char out[RATELIMIT_IP_KEY_MAX])
{
    char host[INET6_ADDRSTRLEN + 1];
    size_t len = strcspn(ip, "%");
    unsigned char a[16];

    if (len >= sizeof host)
        return -1;
    memcpy(host, ip, len);
    host[len] = '\0';
    if (inet_pton(AF_INET, host, a) == 1) {
        inet_ntop(AF_INET, a, out, RATELIMIT_IP_KEY_MAX);
        return (int)strlen(out);
    }
    if (inet_pton(AF_INET6, host, a) != 1)
        return -1;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, sizeof mapped) == 0) {
        inet_ntop(AF_INET, a + 12, out, RATELIMIT_IP_KEY_MAX);
        return (int)strlen(out);
    }
    if (ipv6_prefix >= 128) {
        inet_ntop(AF_INET6, a, out, RATELIMIT_IP_KEY_MAX);
        return (int)strlen(out);
    }
    for (unsigned bit = ipv6_prefix; bit < 128; bit++)
        a[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
    inet_ntop(AF_INET6, a, out, RATELIMIT_IP_KEY_MAX);
    size_t n = strlen(out);
    snprintf(out + n, RATELIMIT_IP_KEY_MAX - n, "/%u", ipv6_prefix);
    return (int)strlen(out);
}

int ratelimit_key_header(const char *value, size_t value_len, const char *ip, unsigned ipv6_prefix,
                         char ipbuf[RATELIMIT_IP_KEY_MAX], const char **key, size_t *key_len)
{
    if (value != NULL && value_len > 0) {
        *key = value;
        *key_len = value_len;
        return 0;
    }
    int n = ratelimit_key_ip(ip, ipv6_prefix, ipbuf);
    if (n < 0)
        return -1;
    *key = ipbuf;
    *key_len = (size_t)n;
    return 0;
}
