/* Unit tests: the balancer strategy/peer contract and every strategy
 * (round_robin, random, least_conn, hash).
 *
 * Twin: py-proxy/tests/test_balancer.py (same test names, same cases).
 *
 * Health is a fake here: the link wraps health_available/attempt_begin/attempt_end
 * (see the Makefile), so these tests are about what the balancer does with a
 * verdict, not how health reaches it. Statistical bounds are stated where a test
 * samples.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "balancer_strategies.h"

/* ---------------------------------------------------------------- fake health */

struct health_state {
    bool down;                   /* health_available() answers !down */
    unsigned begins;             /* health_attempt_begin calls */
    unsigned ends;               /* health_attempt_end calls */
    enum health_outcome outcome; /* last outcome given */
    const char *reason;          /* last reason given */
};

bool __wrap_health_available(const struct health_state *h, double now);
void __wrap_health_attempt_begin(struct health_state *h, double now);
void __wrap_health_attempt_end(struct health_state *h, enum health_outcome o, const char *reason,
                               double now);

bool __wrap_health_available(const struct health_state *h, double now)
{
    (void)now;
    return h == NULL || !h->down;
}

void __wrap_health_attempt_begin(struct health_state *h, double now)
{
    (void)now;
    if (h)
        h->begins++;
}

void __wrap_health_attempt_end(struct health_state *h, enum health_outcome o, const char *reason,
                               double now)
{
    (void)now;
    if (h) {
        h->ends++;
        h->outcome = o;
        h->reason = reason;
    }
}

/* ---------------------------------------------------------------- helpers */

#define MAXP 8

/* A balancer over up to MAXP peers, each with its own fake health. */
struct fixture {
    struct balancer_peer peers[MAXP];
    struct health_state health[MAXP];
    struct balancer b;
};

static void make(struct fixture *f, const struct balancer_ops *ops, const unsigned *weights,
                 size_t n, const char *const *names)
{
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < n; i++) {
        f->peers[i].weight = weights[i];
        f->peers[i].health = &f->health[i];
        f->peers[i].name = names ? names[i] : NULL;
    }
    assert_int_equal(balancer_init(&f->b, ops, f->peers, n, NULL), 0);
}

static int pick_ctx(struct balancer *b, uint64_t tried, const char *key, const char *ip)
{
    uint64_t bits[1] = {tried};
    struct balancer_tried t = {.bits = bits, .n = b->n};
    struct balancer_ctx ctx = {
        .tried = &t, .now = 0, .client_ip = ip, .key = key, .key_len = key ? strlen(key) : 0};
    return balancer_pick(b, &ctx);
}

static int pick(struct balancer *b, uint64_t tried)
{
    return pick_ctx(b, tried, NULL, "127.0.0.1");
}

static int pick_key(struct balancer *b, const char *key)
{
    return pick_ctx(b, 0, key, "127.0.0.1");
}

static const char *key_n(char *buf, size_t size, int i)
{
    snprintf(buf, size, "key-%d", i);
    return buf;
}

/* ---------------------------------------------------------------- round_robin */

static void test_nginx_sequence_5_1_1(void **state)
{
    (void)state;
    struct fixture f;
    make(&f, &balancer_roundrobin_ops, (unsigned[]){5, 1, 1}, 3, NULL);
    /* nginx's documented smooth sequence for a=5 b=1 c=1: a a b a c a a */
    const int want[] = {0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(pick(&f.b, 0), want[i]);
    balancer_deinit(&f.b);
}

static void test_equal_weights_exact(void **state)
{
    (void)state;
    enum { N = 4, K = 25 };
    struct fixture f;
    make(&f, &balancer_roundrobin_ops, (unsigned[]){1, 1, 1, 1}, N, NULL);
    int count[N] = {0};
    for (int i = 0; i < N * K; i++)
        count[pick(&f.b, 0)]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(count[i], K);
    balancer_deinit(&f.b);
}

static void test_weighted_counts(void **state)
{
    (void)state;
    struct fixture f;
    make(&f, &balancer_roundrobin_ops, (unsigned[]){3, 2, 5}, 3, NULL);
    int count[3] = {0};
    for (int i = 0; i < 1000; i++)
        count[pick(&f.b, 0)]++;
    assert_int_equal(count[0], 300);
    assert_int_equal(count[1], 200);
    assert_int_equal(count[2], 500);
    balancer_deinit(&f.b);
}

static void test_tried_bitmap_skips(void **state)
{
    (void)state;
    struct fixture f;
    make(&f, &balancer_roundrobin_ops, (unsigned[]){1, 1, 1}, 3, NULL);
    uint64_t bits[1] = {0};
    struct balancer_tried t = {.bits = bits, .n = 3};
    struct balancer_ctx ctx = {.tried = &t, .client_ip = "127.0.0.1"};
    for (int i = 0; i < 3; i++) {
        int p = balancer_pick(&f.b, &ctx);
        assert_true(p >= 0 && p < 3);
        assert_false(balancer_tried_has(&t, (size_t)p));
        balancer_tried_add(&t, (size_t)p);
    }
    assert_int_equal(bits[0], 7);
    assert_int_equal(balancer_pick(&f.b, &ctx), -1); /* every upstream tried */
    balancer_deinit(&f.b);
}

static void test_down_peers_skipped(void **state)
{
    (void)state;
    struct fixture f;
    make(&f, &balancer_roundrobin_ops, (unsigned[]){1, 1}, 2, NULL);
    f.health[0].down = true;
    for (int i = 0; i < 5; i++)
        assert_int_equal(pick(&f.b, 0), 1);
    f.health[1].down = true;
    assert_int_equal(pick(&f.b, 0), -1);
    balancer_deinit(&f.b);
}

/* States created with the same group are one rotation (the workers' sets of one
 * config generation); another group is another rotation. */
static void test_round_robin_group_shared(void **state)
{
    (void)state;
    static const int gen1 = 1, gen2 = 2; /* group keys: any distinct addresses */
    struct fixture a, b, c;
    make(&a, &balancer_roundrobin_ops, (unsigned[]){1, 1, 1}, 3, NULL);
    balancer_deinit(&a.b);
    assert_int_equal(balancer_init(&a.b, &balancer_roundrobin_ops, a.peers, 3, &gen1), 0);
    make(&b, &balancer_roundrobin_ops, (unsigned[]){1, 1, 1}, 3, NULL);
    balancer_deinit(&b.b);
    assert_int_equal(balancer_init(&b.b, &balancer_roundrobin_ops, b.peers, 3, &gen1), 0);
    make(&c, &balancer_roundrobin_ops, (unsigned[]){1, 1, 1}, 3, NULL);
    balancer_deinit(&c.b);
    assert_int_equal(balancer_init(&c.b, &balancer_roundrobin_ops, c.peers, 3, &gen2), 0);
    /* alternating between a and b walks one sequence: 0 1 2 0 1 2 */
    for (int i = 0; i < 6; i++)
        assert_int_equal(pick(i % 2 ? &b.b : &a.b, 0), i % 3);
    assert_int_equal(pick(&c.b, 0), 0); /* its own rotation, from the start */
    balancer_deinit(&a.b);
    assert_int_equal(pick(&b.b, 0), 0); /* the shared state outlives a */
    balancer_deinit(&b.b);
    balancer_deinit(&c.b);
}

struct rr_thread {
    struct fixture f;
    int count[2];
};

enum { RR_THREAD_PICKS = 1001 };

static void *rr_picker(void *arg)
{
    struct rr_thread *t = arg;
    for (int i = 0; i < RR_THREAD_PICKS; i++)
        t->count[pick(&t->f.b, 0)]++;
    return NULL;
}

/* Two threads picking at once from one group: exact counts over all picks. Private
 * states would give 501+501 / 500+500 (each thread's own odd count). */
static void test_round_robin_group_concurrent(void **state)
{
    (void)state;
    static const int gen = 1;
    struct rr_thread t[2];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 2; i++) {
        make(&t[i].f, &balancer_roundrobin_ops, (unsigned[]){1, 1}, 2, NULL);
        balancer_deinit(&t[i].f.b);
        assert_int_equal(balancer_init(&t[i].f.b, &balancer_roundrobin_ops, t[i].f.peers, 2, &gen),
                         0);
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, rr_picker, &t[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(t[0].count[0] + t[1].count[0], RR_THREAD_PICKS);
    assert_int_equal(t[0].count[1] + t[1].count[1], RR_THREAD_PICKS);
    for (int i = 0; i < 2; i++)
        balancer_deinit(&t[i].f.b);
}

static void test_ops_for(void **state)
{
    (void)state;
    const struct {
        enum config_balancer kind;
        const char *name;
    } all[] = {{CONFIG_BALANCER_ROUND_ROBIN, "round_robin"},
               {CONFIG_BALANCER_RANDOM, "random"},
               {CONFIG_BALANCER_LEAST_CONN, "least_conn"},
               {CONFIG_BALANCER_HASH, "hash"}};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const struct balancer_ops *ops = balancer_ops_for(all[i].kind);
        assert_string_equal(ops->name, all[i].name);
        struct fixture f;
        make(&f, ops, (unsigned[]){1}, 1, NULL);
        assert_int_equal(pick(&f.b, 0), 0);
        balancer_deinit(&f.b);
    }
    assert_ptr_equal(balancer_ops_for(CONFIG_BALANCER_ROUND_ROBIN), &balancer_roundrobin_ops);
}

static void test_attempt_begin_end_counts_active(void **state)
{
    (void)state;
    struct fixture f;
    make(&f, &balancer_leastconn_ops, (unsigned[]){1, 1}, 2, NULL);
    balancer_attempt_begin(&f.b, 1, 0);
    balancer_attempt_begin(&f.b, 1, 0);
    assert_int_equal(f.peers[0].active, 0);
    assert_int_equal(f.peers[1].active, 2);
    assert_int_equal(f.health[1].begins, 2);
    balancer_attempt_end(&f.b, 1, HEALTH_FAIL, "connect_refused", 1);
    assert_int_equal(f.health[1].outcome, HEALTH_FAIL);
    assert_string_equal(f.health[1].reason, "connect_refused");
    balancer_attempt_end(&f.b, 1, HEALTH_OK, NULL, 1);
    assert_int_equal(f.health[1].outcome, HEALTH_OK);
    balancer_attempt_end(&f.b, 1, HEALTH_NEUTRAL, NULL, 1); /* one too many: active stays 0 */
    assert_int_equal(f.peers[1].active, 0);
    assert_int_equal(f.health[1].ends, 3);
    balancer_attempt_begin(&f.b, 7, 0); /* out of range: ignored */
    assert_int_equal(f.peers[0].active + f.peers[1].active, 0);
    balancer_deinit(&f.b);
}

/* ---------------------------------------------------------------- random */

static void test_random_distribution_weighted(void **state)
{
    (void)state;
    enum { PICKS = 40000 };
    /* 3:1 over 40,000 picks: peer 0 expects 75%. One standard deviation is 0.22%, so the
     * stated bound of +-3 points is over 13 sigma away: this cannot fail by chance. */
    struct fixture f;
    make(&f, &balancer_random_ops, (unsigned[]){3, 1}, 2, NULL);
    int count[2] = {0};
    for (int i = 0; i < PICKS; i++)
        count[pick(&f.b, 0)]++;
    assert_true(abs(count[0] - PICKS * 3 / 4) <= PICKS * 3 / 100);
    balancer_deinit(&f.b);
    /* 1:2:5 over 40,000: 12.5% / 25% / 62.5%, each within +-3 points (> 13 sigma) */
    make(&f, &balancer_random_ops, (unsigned[]){1, 2, 5}, 3, NULL);
    int c3[3] = {0};
    for (int i = 0; i < PICKS; i++)
        c3[pick(&f.b, 0)]++;
    const int want[3] = {PICKS / 8, PICKS / 4, PICKS * 5 / 8};
    for (int i = 0; i < 3; i++)
        assert_true(abs(c3[i] - want[i]) <= PICKS * 3 / 100);
    balancer_deinit(&f.b);
}

static void test_random_skips_tried_and_down(void **state)
{
    (void)state;
    struct fixture f;
    make(&f, &balancer_random_ops, (unsigned[]){1, 1, 1}, 3, NULL);
    f.health[1].down = true;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(pick(&f.b, 0x1), 2);
    /* peer 1 down: 0 and 2 split 50/50 over 10,000 picks within +-5 points (> 10 sigma) */
    int count[3] = {0};
    for (int i = 0; i < 10000; i++)
        count[pick(&f.b, 0)]++;
    assert_int_equal(count[1], 0);
    assert_true(abs(count[0] - 5000) <= 500);
    assert_int_equal(pick(&f.b, 0x5), -1);
    balancer_deinit(&f.b);
}

/* ---------------------------------------------------------------- least_conn */

static void set_active(struct fixture *f, const unsigned *active, size_t n)
{
    for (size_t i = 0; i < n; i++)
        f->peers[i].active = active[i];
}

static void test_least_conn_prefers_fewest_active_per_weight(void **state)
{
    (void)state;
    struct fixture f;
    make(&f, &balancer_leastconn_ops, (unsigned[]){1, 2, 1}, 3, NULL);
    set_active(&f, (unsigned[]){1, 1, 1}, 3);
    assert_int_equal(pick(&f.b, 0), 1); /* 1/2 < 1/1 */
    set_active(&f, (unsigned[]){2, 3, 1}, 3);
    assert_int_equal(pick(&f.b, 0), 2); /* 1/1 < 3/2 < 2/1 */
    balancer_deinit(&f.b);
    make(&f, &balancer_leastconn_ops, (unsigned[]){3, 2}, 2, NULL);
    set_active(&f, (unsigned[]){2, 1}, 2);
    assert_int_equal(pick(&f.b, 0), 1); /* 1/2 < 2/3, compared as 1*3 < 2*2 */
    balancer_deinit(&f.b);
    /* attempts that never end: the load follows the weights exactly */
    make(&f, &balancer_leastconn_ops, (unsigned[]){2, 1}, 2, NULL);
    for (int i = 0; i < 300; i++)
        balancer_attempt_begin(&f.b, (size_t)pick(&f.b, 0), 0);
    assert_int_equal(f.peers[0].active, 200);
    assert_int_equal(f.peers[1].active, 100);
    balancer_deinit(&f.b);
}

static void test_least_conn_ties_round_robin(void **state)
{
    (void)state;
    struct fixture f;
    make(&f, &balancer_leastconn_ops, (unsigned[]){1, 1, 1}, 3, NULL);
    for (int i = 0; i < 9; i++)
        assert_int_equal(pick(&f.b, 0), i % 3); /* no load: plain rotation */
    balancer_deinit(&f.b);
    make(&f, &balancer_leastconn_ops, (unsigned[]){5, 1, 1}, 3, NULL);
    const int want[] = {0, 0, 1, 0, 2, 0, 0}; /* tied by weight: smooth WRR order */
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(pick(&f.b, 0), want[i]);
    balancer_deinit(&f.b);
    make(&f, &balancer_leastconn_ops, (unsigned[]){1, 1, 1}, 3, NULL);
    f.peers[2].active = 5;
    for (int i = 0; i < 6; i++)
        assert_int_equal(pick(&f.b, 0), i % 2); /* round robin among the tied only */
    balancer_deinit(&f.b);
}

/* ---------------------------------------------------------------- hash */

static void test_hash_sticky(void **state)
{
    (void)state;
    struct fixture f;
    make(&f, &balancer_hash_ops, (unsigned[]){1, 1, 1, 1}, 4, NULL);
    char k[32];
    int seen = 0;
    for (int i = 0; i < 200; i++) {
        int first = pick_key(&f.b, key_n(k, sizeof k, i));
        for (int j = 0; j < 5; j++)
            assert_int_equal(pick_key(&f.b, k), first);
        seen |= 1 << first;
    }
    assert_int_equal(seen, 0xf);
    /* no key: the client ip is hashed, exactly as hash_key: client_ip would hash it */
    const char *ips[] = {"10.0.0.1", "10.0.0.2", "::1", "192.168.7.9"};
    for (size_t i = 0; i < sizeof ips / sizeof ips[0]; i++)
        assert_int_equal(pick_ctx(&f.b, 0, NULL, ips[i]),
                         pick_ctx(&f.b, 0, ips[i], "198.51.100.1"));
    balancer_deinit(&f.b);
}

static void test_hash_weights(void **state)
{
    (void)state;
    /* 1:2:3:4 over 20,000 keys: each share within +-20% of its weight share (relative).
     * The ring's own unevenness at 160 points per weight unit is ~8% for weight 1. */
    enum { KEYS = 20000 };
    const unsigned w[4] = {1, 2, 3, 4};
    const char *names[4] = {"u0", "u1", "u2", "u3"};
    struct fixture f;
    make(&f, &balancer_hash_ops, w, 4, names);
    int count[4] = {0};
    char k[32];
    for (int i = 0; i < KEYS; i++)
        count[pick_key(&f.b, key_n(k, sizeof k, i))]++;
    for (int i = 0; i < 4; i++) {
        double want = KEYS * w[i] / 10.0;
        assert_true(count[i] >= want * 0.8 && count[i] <= want * 1.2);
    }
    balancer_deinit(&f.b);
}

static void test_hash_skips_down_to_next_on_ring(void **state)
{
    (void)state;
    struct fixture f, without;
    make(&f, &balancer_hash_ops, (unsigned[]){1, 2, 1, 1}, 4, (const char *[]){"a", "b", "c", "d"});
    /* the ring without "b": where a key owned by "b" must go when "b" is not eligible */
    make(&without, &balancer_hash_ops, (unsigned[]){1, 1, 1}, 3, (const char *[]){"a", "c", "d"});
    const int back[3] = {0, 2, 3};
    enum { KEYS = 2000 };
    static int owner[KEYS];
    char k[32];
    for (int i = 0; i < KEYS; i++)
        owner[i] = pick_key(&f.b, key_n(k, sizeof k, i));
    f.health[1].down = true;
    int moved = 0;
    for (int i = 0; i < KEYS; i++) {
        int got = pick_key(&f.b, key_n(k, sizeof k, i));
        assert_int_equal(got, back[pick_key(&without.b, k)]);
        if (owner[i] != 1)
            assert_int_equal(got, owner[i]); /* keys of eligible peers stay */
        else
            moved++;
    }
    assert_true(moved > 0);
    f.health[1].down = false;
    for (int i = 0; i < KEYS; i++) { /* tried skips the same way */
        key_n(k, sizeof k, i);
        assert_int_equal(pick_ctx(&f.b, 0x2, k, "127.0.0.1"), back[pick_key(&without.b, k)]);
    }
    for (int i = 0; i < 4; i++)
        f.health[i].down = true;
    assert_int_equal(pick_key(&f.b, "x"), -1);
    balancer_deinit(&f.b);
    balancer_deinit(&without.b);
}

static void test_hash_remap_share_on_removal(void **state)
{
    (void)state;
    /* 10,000 keys over N=5 upstreams; remove one (a reload without it). Stated bounds: the
     * share of keys that move is 1/N = 20% +- 5 points, and every key whose upstream
     * survives stays where it was. */
    enum { KEYS = 10000, REMOVED = 2 };
    const char *names[5] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80",
                            "10.0.0.5:80"};
    const char *rest[4] = {names[0], names[1], names[3], names[4]};
    struct fixture full, after;
    make(&full, &balancer_hash_ops, (unsigned[]){1, 1, 1, 1, 1}, 5, names);
    make(&after, &balancer_hash_ops, (unsigned[]){1, 1, 1, 1}, 4, rest);
    int moved = 0, stayed = 0;
    char k[32];
    for (int i = 0; i < KEYS; i++) {
        const char *before = names[pick_key(&full.b, key_n(k, sizeof k, i))];
        const char *now = rest[pick_key(&after.b, k)];
        if (before == names[REMOVED]) {
            moved++;
        } else {
            assert_string_equal(now, before);
            stayed++;
        }
    }
    assert_true(moved >= KEYS * 15 / 100 && moved <= KEYS * 25 / 100);
    assert_int_equal(stayed, KEYS - moved);
    balancer_deinit(&full.b);
    balancer_deinit(&after.b);
}

/* The shared vectors file, or NULL. */
static FILE *open_vectors(void)
{
    static const char rel[] = "balancer_cases/hash_vectors.txt";
    char path[512];
    const char *env = getenv("BALANCER_CASES_DIR");
    if (env && env[0]) {
        snprintf(path, sizeof path, "%s/hash_vectors.txt", env);
        return fopen(path, "rb");
    }
    const char *tries[] = {"tests/", "c-proxy/tests/"};
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        snprintf(path, sizeof path, "%s%s", tries[i], rel);
        FILE *fp = fopen(path, "rb");
        if (fp)
            return fp;
    }
    const char *slash = strrchr(__FILE__, '/');
    snprintf(path, sizeof path, "%.*s/%s", slash ? (int)(slash - __FILE__) : 1,
             slash ? __FILE__ : ".", rel);
    return fopen(path, "rb");
}

/* Split off the last space-separated field of line (in place); NULL if none. */
static char *last_field(char *line)
{
    char *sp = strrchr(line, ' ');
    if (!sp)
        return NULL;
    *sp = '\0';
    return sp + 1;
}

static void test_hash_same_ring_in_both_twins(void **state)
{
    (void)state;
    FILE *fp = open_vectors();
    assert_non_null(fp);
    static char names[MAXP][64];
    unsigned weights[MAXP];
    const char *name_ptrs[MAXP];
    size_t n = 0;
    struct fixture f;
    bool built = false;
    int cases = 0;
    char line[512];
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        char *rest = strchr(line, ' ');
        assert_non_null(rest);
        *rest++ = '\0';
        if (strcmp(line, "peer") == 0) {
            assert_false(built);
            assert_true(n < MAXP);
            char *w = last_field(rest);
            assert_non_null(w);
            snprintf(names[n], sizeof names[n], "%s", rest);
            name_ptrs[n] = names[n];
            weights[n++] = (unsigned)strtoul(w, NULL, 10);
            continue;
        }
        if (!built) {
            make(&f, &balancer_hash_ops, weights, n, name_ptrs);
            built = true;
        }
        char *want = last_field(rest);
        assert_non_null(want);
        if (strcmp(line, "hash") == 0) {
            char got[17];
            snprintf(got, sizeof got, "%016llx",
                     (unsigned long long)balancer_hash64(rest, strlen(rest)));
            if (strcmp(got, want) != 0)
                fail_msg("hash %s: got %s want %s", rest, got, want);
        } else if (strcmp(line, "key") == 0) {
            int got = pick_ctx(&f.b, 0, rest, "");
            if (got != atoi(want))
                fail_msg("key %s: got %d want %s", rest, got, want);
        } else if (strcmp(line, "ip") == 0) {
            int got = pick_ctx(&f.b, 0, NULL, rest);
            if (got != atoi(want))
                fail_msg("ip %s: got %d want %s", rest, got, want);
        } else if (strcmp(line, "down") == 0) {
            char *down = last_field(rest);
            assert_non_null(down);
            int got = pick_ctx(&f.b, (uint64_t)1 << atoi(down), rest, "");
            if (got != atoi(want))
                fail_msg("down %s %s: got %d want %s", rest, down, got, want);
        } else {
            fail_msg("unknown line kind %s", line);
        }
        cases++;
    }
    fclose(fp);
    assert_int_equal(n, 4);
    assert_true(cases >= 100);
    balancer_deinit(&f.b);
}

/* ---------------------------------------------------------------- every strategy */

static void test_every_strategy_skips_drained(void **state)
{
    (void)state;
    const struct balancer_ops *all[] = {&balancer_roundrobin_ops, &balancer_random_ops,
                                        &balancer_leastconn_ops, &balancer_hash_ops};
    for (size_t s = 0; s < sizeof all / sizeof all[0]; s++) {
        struct fixture f;
        make(&f, all[s], (unsigned[]){1, 3, 1}, 3, NULL);
        f.health[1].down = true; /* drained (or down): no new attempts */
        int count[3] = {0};
        char k[32];
        for (int i = 0; i < 300; i++) {
            int p = pick_key(&f.b, key_n(k, sizeof k, i));
            assert_true(p >= 0 && p < 3);
            count[p]++;
        }
        if (count[1] != 0)
            fail_msg("%s picked a drained peer %d times", all[s]->name, count[1]);
        f.health[0].down = f.health[2].down = true;
        assert_int_equal(pick_key(&f.b, "k"), -1);
        balancer_deinit(&f.b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nginx_sequence_5_1_1),
        cmocka_unit_test(test_equal_weights_exact),
        cmocka_unit_test(test_weighted_counts),
        cmocka_unit_test(test_tried_bitmap_skips),
        cmocka_unit_test(test_down_peers_skipped),
        cmocka_unit_test(test_round_robin_group_shared),
        cmocka_unit_test(test_round_robin_group_concurrent),
        cmocka_unit_test(test_ops_for),
        cmocka_unit_test(test_attempt_begin_end_counts_active),
        cmocka_unit_test(test_random_distribution_weighted),
        cmocka_unit_test(test_random_skips_tried_and_down),
        cmocka_unit_test(test_least_conn_prefers_fewest_active_per_weight),
        cmocka_unit_test(test_least_conn_ties_round_robin),
        cmocka_unit_test(test_hash_sticky),
        cmocka_unit_test(test_hash_weights),
        cmocka_unit_test(test_hash_skips_down_to_next_on_ring),
        cmocka_unit_test(test_hash_remap_share_on_removal),
        cmocka_unit_test(test_hash_same_ring_in_both_twins),
        cmocka_unit_test(test_every_strategy_skips_drained),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
