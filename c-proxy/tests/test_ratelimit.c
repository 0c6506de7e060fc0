/* Unit tests of ratelimit.c. Twin: py-proxy/tests/test_ratelimit.py (same test
 * names, same numbers). Time is injected; all values are exact in binary so the
 * expected numbers are exact too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "ratelimit.h"

static struct ratelimit_table *table(uint64_t max_clients, uint32_t cap, double rate)
{
    struct ratelimit_limit l = {.capacity = cap, .rate_per_sec = rate};
    struct ratelimit_table *t = ratelimit_table_new(max_clients, &l);
    assert_non_null(t);
    return t;
}

static struct ratelimit_result take(struct ratelimit_table *t, const char *key, double now)
{
    struct ratelimit_result r;
    memset(&r, 0xa5, sizeof r); /* every field must be written */
    ratelimit_take(t, key, strlen(key), NULL, now, &r);
    return r;
}

static struct ratelimit_result take_lim(struct ratelimit_table *t, const char *key, uint32_t cap,
                                        double rate, double now)
{
    struct ratelimit_limit l = {.capacity = cap, .rate_per_sec = rate};
    struct ratelimit_result r;
    memset(&r, 0xa5, sizeof r);
    ratelimit_take(t, key, strlen(key), &l, now, &r);
    return r;
}

static double peek(struct ratelimit_table *t, const char *key, double now)
{
    return ratelimit_peek(t, key, strlen(key), NULL, now);
}

static void test_fresh_bucket_full(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 10, 1);
    assert_true(peek(t, "a", 1000) == 10.0);
    assert_int_equal(ratelimit_count(t), 0); /* peek creates nothing */
    struct ratelimit_result r = take(t, "a", 1000);
    assert_int_equal(r.verdict, RATELIMIT_ALLOWED);
    assert_int_equal(r.limit, 10);
    assert_int_equal(r.remaining, 9);
    assert_int_equal(r.reset, 1);
    assert_int_equal(r.retry_after, -1);
    assert_false(r.overflow);
    assert_int_equal(ratelimit_count(t), 1);
    ratelimit_table_free(t);
}

static void test_take_until_empty_then_limited(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 5, 1);
    for (int i = 0; i < 5; i++) {
        struct ratelimit_result r = take(t, "a", 50);
        assert_int_equal(r.verdict, RATELIMIT_ALLOWED);
        assert_int_equal(r.remaining, (uint64_t)(4 - i));
    }
    struct ratelimit_result r = take(t, "a", 50);
    assert_int_equal(r.verdict, RATELIMIT_LIMITED);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_after, 1);
    assert_int_equal(r.reset, 5);
    ratelimit_table_free(t);
}

static void test_refill_continuous(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 10, 2);
    for (int i = 0; i < 10; i++)
        assert_int_equal(take(t, "a", 100).verdict, RATELIMIT_ALLOWED);
    assert_true(peek(t, "a", 100.25) == 0.5); /* half a token after a quarter second */
    struct ratelimit_result r = take(t, "a", 100.25);
    assert_int_equal(r.verdict, RATELIMIT_LIMITED);
    assert_int_equal(r.retry_after, 1);
    r = take(t, "a", 100.5);
    assert_int_equal(r.verdict, RATELIMIT_ALLOWED);
    assert_int_equal(r.remaining, 0);
    r = take(t, "a", 101.75); /* 0 + 1.25 s * 2 = 2.5 */
    assert_int_equal(r.verdict, RATELIMIT_ALLOWED);
    assert_int_equal(r.remaining, 1);
    assert_true(peek(t, "a", 101.75) == 1.5);
    ratelimit_table_free(t);
}

static void test_refill_capped_at_capacity(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 10, 2);
    for (int i = 0; i < 10; i++)
        take(t, "a", 100);
    assert_true(peek(t, "a", 104) == 8.0);
    assert_true(peek(t, "a", 1100) == 10.0);
    struct ratelimit_result r = take(t, "a", 1100);
    assert_int_equal(r.remaining, 9);
    assert_int_equal(r.reset, 1); /* 1 token at 2/s: 0.5 s, rounded up */
    ratelimit_table_free(t);
}

static void test_burst_equals_capacity(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 20, 1000);
    int allowed = 0;
    for (int i = 0; i < 30; i++)
        allowed += take(t, "a", 7).verdict == RATELIMIT_ALLOWED;
    assert_int_equal(allowed, 20);
    ratelimit_table_free(t);
}

static void test_retry_after_rounded_up_min_1(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 1, 0.25); /* one token per 4 s */
    take(t, "a", 10);
    struct ratelimit_result r = take(t, "a", 10);
    assert_int_equal(r.verdict, RATELIMIT_LIMITED);
    assert_int_equal(r.retry_after, 4);
    r = take(t, "a", 11); /* 0.25 token: 0.75 / 0.25 = 3 s */
    assert_int_equal(r.retry_after, 3);
    r = take(t, "a", 11.5); /* 0.375: 2.5 s -> 3 */
    assert_int_equal(r.retry_after, 3);
    r = take(t, "a", 13.75); /* 0.9375: 0.25 s -> 1 */
    assert_int_equal(r.retry_after, 1);
    assert_int_equal(take(t, "a", 14).verdict, RATELIMIT_ALLOWED);

    r = take_lim(t, "fast", 1, 1000000, 20); /* microseconds away: still 1 */
    assert_int_equal(r.verdict, RATELIMIT_ALLOWED);
    r = take_lim(t, "fast", 1, 1000000, 20);
    assert_int_equal(r.verdict, RATELIMIT_LIMITED);
    assert_int_equal(r.retry_after, 1);
    ratelimit_table_free(t);
}

static void test_ratelimit_headers_values(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 100, 10);
    struct ratelimit_result r = take(t, "a", 0);
    assert_int_equal(r.limit, 100);
    assert_int_equal(r.remaining, 99);
    assert_int_equal(r.reset, 1); /* 1 token at 10/s = 0.1 s, rounded up */
    for (int i = 0; i < 50; i++)
        r = take(t, "a", 0);
    assert_int_equal(r.remaining, 49);
    assert_int_equal(r.reset, 6); /* 51 tokens: 5.1 s */
    r = take(t, "a", 0.5);        /* 49 + 5 - 1 = 53 */
    assert_int_equal(r.remaining, 53);
    assert_int_equal(r.reset, 5); /* 47 tokens: 4.7 s */
    assert_int_equal(r.retry_after, -1);
    ratelimit_table_free(t);
}

static void test_rate_zero_never_refills_no_reset(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 3, 0);
    for (int i = 0; i < 3; i++) {
        struct ratelimit_result r = take(t, "a", 1);
        assert_int_equal(r.verdict, RATELIMIT_ALLOWED);
        assert_int_equal(r.reset, -1);
    }
    struct ratelimit_result r = take(t, "a", 1);
    assert_int_equal(r.verdict, RATELIMIT_LIMITED);
    assert_int_equal(r.retry_after, -1);
    assert_int_equal(r.reset, -1);
    r = take(t, "a", 1e9);
    assert_int_equal(r.verdict, RATELIMIT_LIMITED);
    assert_true(peek(t, "a", 1e9) == 0.0);
    ratelimit_table_free(t);
}

static void test_override_replaces_default(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 10, 1);
    struct ratelimit_result r = take_lim(t, "vip", 2, 0, 5);
    assert_int_equal(r.limit, 2);
    assert_int_equal(r.remaining, 1);
    assert_int_equal(r.reset, -1);
    r = take(t, "other", 5);
    assert_int_equal(r.limit, 10);
    assert_int_equal(r.remaining, 9);
    /* a bigger override keeps the tokens the client had: no gain */
    r = take_lim(t, "vip", 100, 0, 6);
    assert_int_equal(r.limit, 100);
    assert_int_equal(r.remaining, 0);
    /* back to the default: capped at its capacity, refilled at its rate */
    struct ratelimit_limit big = {.capacity = 100, .rate_per_sec = 50};
    assert_int_equal(ratelimit_set(t, "vip", 3, &big, 100, 6), 0);
    r = take(t, "vip", 7);
    assert_int_equal(r.limit, 10);
    assert_int_equal(r.remaining, 9);
    ratelimit_table_free(t);
}

static void test_eviction_only_full_buckets(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(2, 2, 1);
    take(t, "a", 0); /* a: 1 token */
    take(t, "b", 0);
    take(t, "b", 0); /* b: 0 tokens */
    struct ratelimit_result r = take(t, "c", 0);
    assert_true(r.overflow); /* nothing full: c has no bucket of its own */
    assert_int_equal(ratelimit_count(t), 2);
    r = take(t, "c", 1); /* a is full again (1 + 1), b is not (1) */
    assert_false(r.overflow);
    assert_int_equal(r.remaining, 1);
    assert_int_equal(ratelimit_count(t), 2);
    assert_true(peek(t, "b", 1) == 1.0); /* b kept its state */
    r = take(t, "b", 1);
    assert_false(r.overflow);
    assert_int_equal(r.remaining, 0);
    ratelimit_table_free(t);
}

/* ---- pinned overrides (admin /clients) ---- */

static int pin(struct ratelimit_table *t, const char *key, uint32_t cap, double rate, double tokens,
               double now)
{
    struct ratelimit_limit l = {.capacity = cap, .rate_per_sec = rate};
    return ratelimit_pin(t, key, strlen(key), &l, tokens, now);
}

static void test_pinned_override_never_evicted(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(2, 2, 1);
    assert_int_equal(pin(t, "vip", 5, 1, -1, 0), 0); /* full, but pinned */
    take(t, "a", 0);
    take(t, "a", 0);                              /* a: 0 tokens */
    struct ratelimit_result r = take(t, "b", 10); /* a is full again: evicted, never vip */
    assert_false(r.overflow);
    struct ratelimit_limit l;
    double tokens;
    assert_true(ratelimit_lookup(t, "vip", 3, 10, &l, &tokens));
    assert_int_equal(l.capacity, 5);
    assert_true(tokens == 5.0);
    assert_int_equal(ratelimit_count(t), 2);
    /* the stripe is full of a pinned slot and an empty bucket: no room for a new pin */
    take(t, "b", 10);
    assert_int_equal(pin(t, "c", 1, 0, -1, 10), -1);
    assert_false(ratelimit_lookup(t, "c", 1, 10, &l, &tokens));
    /* neither an empty nor an over-long key can be pinned */
    assert_int_equal(pin(t, "", 1, 0, -1, 10), -1);
    char longkey[RATELIMIT_KEY_MAX + 2];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    assert_int_equal(pin(t, longkey, 1, 0, -1, 10), -1);
    ratelimit_table_free(t);
}

static void test_take_uses_pinned_limit(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 10, 1);
    assert_int_equal(pin(t, "vip", 3, 0, -1, 0), 0);
    struct ratelimit_result r = take(t, "vip", 1);
    assert_int_equal(r.limit, 3);
    assert_int_equal(r.remaining, 2);
    assert_int_equal(r.reset, -1);
    take(t, "vip", 100);
    take(t, "vip", 100);
    r = take(t, "vip", 1000); /* rate 0: never refills */
    assert_int_equal(r.verdict, RATELIMIT_LIMITED);
    assert_true(peek(t, "vip", 2000) == 0.0);
    r = take(t, "other", 1);
    assert_int_equal(r.limit, 10);
    /* loading a saved bucket keeps the pin and its limit */
    assert_int_equal(ratelimit_set(t, "vip", 3, NULL, 2.5, 5), 0);
    r = take(t, "vip", 6);
    assert_int_equal(r.limit, 3);
    assert_int_equal(r.remaining, 1);
    ratelimit_table_free(t);
}

static void test_change_limit_clamps_tokens(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 10, 1);
    assert_int_equal(pin(t, "c", 8, 2, -1, 0), 0);
    take(t, "c", 0);
    take(t, "c", 0); /* 6 tokens at 0 */
    struct ratelimit_limit l;
    double tokens;
    /* smaller: refilled under the old limit to now (6 + 0.5 * 2 = 7), capped at 4 */
    assert_int_equal(pin(t, "c", 4, 1, -1, 0.5), 0);
    assert_true(ratelimit_lookup(t, "c", 1, 0.5, &l, &tokens));
    assert_int_equal(l.capacity, 4);
    assert_true(l.rate_per_sec == 1.0);
    assert_true(tokens == 4.0);
    take(t, "c", 0.5);
    take(t, "c", 0.5);
    take(t, "c", 0.5); /* 1 token at 0.5 */
    /* bigger: never raised, fills at the new rate */
    assert_int_equal(pin(t, "c", 100, 4, -1, 0.5), 0);
    assert_true(ratelimit_lookup(t, "c", 1, 0.5, &l, &tokens));
    assert_true(tokens == 1.0);
    assert_true(ratelimit_lookup(t, "c", 1, 1.0, &l, &tokens));
    assert_true(tokens == 3.0);
    /* explicit tokens (PATCH tokens) are set, capped at capacity */
    assert_int_equal(pin(t, "c", 100, 4, 50, 1.0), 0);
    assert_true(ratelimit_lookup(t, "c", 1, 1.0, &l, &tokens));
    assert_true(tokens == 50.0);
    assert_int_equal(pin(t, "c", 20, 4, 50, 1.0), 0);
    assert_true(ratelimit_lookup(t, "c", 1, 1.0, &l, &tokens));
    assert_true(tokens == 20.0);
    ratelimit_table_free(t);
}

static void test_unpin_restores_default(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100, 10, 1);
    assert_int_equal(pin(t, "c", 50, 0, 30, 0), 0);
    assert_true(ratelimit_unpin(t, "c", 1, 1));
    assert_false(ratelimit_unpin(t, "c", 1, 1));
    struct ratelimit_limit l;
    double tokens;
    assert_false(ratelimit_lookup(t, "c", 1, 1, &l, &tokens));
    assert_true(peek(t, "c", 1) == 10.0); /* 30 capped at the default 10 */
    struct ratelimit_result r = take(t, "c", 1);
    assert_int_equal(r.limit, 10);
    assert_int_equal(r.remaining, 9);
    /* an unpinned bucket is evictable again, and unpinning never adds tokens */
    assert_int_equal(pin(t, "d", 50, 0, 2, 1), 0);
    assert_true(ratelimit_unpin(t, "d", 1, 1));
    assert_true(peek(t, "d", 1) == 2.0);
    assert_int_equal(ratelimit_count(t), 2);
    ratelimit_table_free(t);
}

/* A model with a bucket per key and no memory bound: the table must agree with
 * it on every take it serves from a key's own bucket. */
static void test_eviction_never_gains_tokens(void **state)
{
    (void)state;
    enum { KEYS = 12, STEPS = 4000 };
    struct ratelimit_limit lim = {.capacity = 3, .rate_per_sec = 0.5};
    struct ratelimit_table *t = table(4, 3, 0.5);
    struct ratelimit_bucket model[KEYS];
    bool seen[KEYS] = {false};
    uint64_t x = 12345;
    double now = 0;
    int served = 0, overflowed = 0, limited = 0;
    unsigned served_keys = 0; /* bit k: key k had a bucket of its own at some point */

    for (int step = 0; step < STEPS; step++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        int k = (int)((x >> 33) % KEYS);
        now += (double)((x >> 20) % 4) * 0.0625; /* 0..0.1875 s, exact */
        char key[8];
        snprintf(key, sizeof key, "k%d", k);
        if (!seen[k]) {
            model[k] = (struct ratelimit_bucket){.tokens = 3, .at = now};
            seen[k] = true;
        }
        struct ratelimit_result r = take(t, key, now);
        if (r.overflow) {
            /* the key has no bucket: it may only be one that a fresh bucket equals */
            assert_true(ratelimit_bucket_full(&model[k], &lim, now));
            overflowed++;
            continue;
        }
        struct ratelimit_result m;
        ratelimit_bucket_take(&model[k], &lim, now, &m);
        assert_int_equal(r.verdict, m.verdict);
        assert_int_equal(r.remaining, m.remaining);
        assert_int_equal(r.reset, m.reset);
        assert_int_equal(r.retry_after, m.retry_after);
        served++;
        served_keys |= 1u << k;
        limited += r.verdict == RATELIMIT_LIMITED;
    }
    /* all paths ran, and exactly as in the Python twin (same hash, probing and clock hand) */
    assert_int_equal(served, 1367);
    assert_int_equal(overflowed, 2633);
    assert_int_equal(limited, 610);
    assert_int_equal(served_keys, (1u << KEYS) - 1); /* 12 keys through 4 slots: evictions */
    assert_true(ratelimit_count(t) <= 4);
    ratelimit_table_free(t);
}

static void test_overflow_bucket_when_table_full(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(2, 3, 0);
    take(t, "a", 0);
    take(t, "b", 0); /* rate 0: never full again, never evicted */
    for (int i = 0; i < 3; i++) {
        struct ratelimit_result r = take(t, i % 2 ? "c" : "d", 0);
        assert_true(r.overflow);
        assert_int_equal(r.verdict, RATELIMIT_ALLOWED);
    }
    struct ratelimit_result r = take(t, "e", 0); /* c, d, e share one bucket */
    assert_true(r.overflow);
    assert_int_equal(r.verdict, RATELIMIT_LIMITED);
    assert_int_equal(ratelimit_count(t), 2);
    char longkey[RATELIMIT_KEY_MAX + 2];
    memset(longkey, 'x', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    struct ratelimit_table *t2 = table(100, 3, 0);
    r = take(t2, longkey, 0);
    assert_true(r.overflow);
    longkey[RATELIMIT_KEY_MAX] = '\0'; /* exactly the maximum fits */
    r = take(t2, longkey, 0);
    assert_false(r.overflow);
    assert_int_equal(r.remaining, 2);
    ratelimit_table_free(t2);
    ratelimit_table_free(t);
}

static void expect_ip_key(const char *ip, unsigned prefix, const char *want)
{
    char out[RATELIMIT_IP_KEY_MAX];
    int n = ratelimit_key_ip(ip, prefix, out);
    if (want == NULL) {
        assert_int_equal(n, -1);
        return;
    }
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(out, want);
}

static void test_key_client_ip_ipv6_prefix(void **state)
{
    (void)state;
    expect_ip_key("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64");
    expect_ip_key("2001:db8:1:2:ffff::1", 64, "2001:db8:1:2::/64");
    expect_ip_key("2001:db8:1:2fff::1", 60, "2001:db8:1:2ff0::/60");
    expect_ip_key("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48");
    expect_ip_key("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6");
    expect_ip_key("2001:db8::1", 0, "::/0");
    expect_ip_key("::1", 128, "::1");
    expect_ip_key("fe80::1%eth0", 64, "fe80::/64");
    expect_ip_key("::ffff:10.1.2.3", 64, "10.1.2.3");
    expect_ip_key("10.1.2.3", 64, "10.1.2.3");
    expect_ip_key("10.1.2", 64, NULL);
    expect_ip_key("not an ip", 64, NULL);
    expect_ip_key("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 127,
                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127");
}

static void test_key_header_missing_uses_ip(void **state)
{
    (void)state;
    char buf[RATELIMIT_IP_KEY_MAX];
    const char *key;
    size_t len;
    assert_int_equal(ratelimit_key_header(NULL, 0, "192.0.2.7", 64, buf, &key, &len), 0);
    assert_int_equal(len, 9);
    assert_memory_equal(key, "192.0.2.7", 9);
    assert_int_equal(ratelimit_key_header("", 0, "2001:db8::9", 64, buf, &key, &len), 0);
    assert_memory_equal(key, "2001:db8::/64", len);
    assert_int_equal(ratelimit_key_header("k-123;x", 5, "192.0.2.7", 64, buf, &key, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(key, "k-123", 5);
    assert_int_equal(ratelimit_key_header(NULL, 0, "bogus", 64, buf, &key, &len), -1);
}

struct thread_arg {
    struct ratelimit_table *t; /* shared */
    int allowed;               /* this thread's count */
};

static void *taker(void *p)
{
    struct thread_arg *a = p;
    for (int i = 0; i < 1000; i++) {
        struct ratelimit_result r;
        ratelimit_take(a->t, "shared", 6, NULL, 1.0 + i, &r);
        a->allowed += r.verdict == RATELIMIT_ALLOWED;
        /* other keys in other stripes, concurrently */
        char key[32];
        snprintf(key, sizeof key, "k%d", i);
        ratelimit_take(a->t, key, strlen(key), NULL, 1.0 + i, &r);
    }
    return NULL;
}

static void test_threads_share_one_bucket(void **state)
{
    (void)state;
    struct ratelimit_table *t = table(100000, 1000, 0);
    pthread_t th[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){.t = t, .allowed = 0};
        assert_int_equal(pthread_create(&th[i], NULL, taker, &args[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += args[i].allowed;
    }
    assert_int_equal(total, 1000);
    assert_int_equal(ratelimit_count(t), 1001);
    ratelimit_table_free(t);
}

/* C-only helpers of the wiring (the Python twin does these inline in its client
 * and main: ClientConn._rl_peek, Table.default). */

static void test_status_reads_without_taking(void **state)
{
    (void)state;
    struct ratelimit_limit dflt = {.capacity = 4, .rate_per_sec = 0.5};
    struct ratelimit_table *t = ratelimit_table_new(64, &dflt);
    struct ratelimit_result r;
    assert_non_null(t);
    ratelimit_status(t, "a", 1, 100.0, &r); /* no bucket: a fresh one, nothing created */
    assert_int_equal(r.verdict, RATELIMIT_ALLOWED);
    assert_int_equal(r.limit, 4);
    assert_int_equal(r.remaining, 4);
    assert_int_equal(r.reset, 0);
    assert_int_equal(r.retry_after, -1);
    assert_int_equal(ratelimit_count(t), 0);
    ratelimit_take(t, "a", 1, NULL, 100.0, &r);
    ratelimit_take(t, "a", 1, NULL, 100.0, &r); /* 2 left, 4 s to full */
    ratelimit_status(t, "a", 1, 101.0, &r);     /* 2.5 at 101: nothing taken */
    assert_int_equal(r.remaining, 2);
    assert_int_equal(r.reset, 3);
    ratelimit_status(t, "a", 1, 101.0, &r);
    assert_int_equal(r.remaining, 2);
    struct ratelimit_limit pin = {.capacity = 9, .rate_per_sec = 0};
    assert_int_equal(ratelimit_pin(t, "p", 1, &pin, 5, 100.0), 0);
    ratelimit_status(t, "p", 1, 200.0, &r); /* a pinned key: its own limit */
    assert_int_equal(r.limit, 9);
    assert_int_equal(r.remaining, 5);
    assert_int_equal(r.reset, -1); /* rate 0: omitted */
    ratelimit_table_free(t);
}

static void test_set_default_applies_to_new_and_unpinned(void **state)
{
    (void)state;
    struct ratelimit_limit dflt = {.capacity = 4, .rate_per_sec = 0};
    struct ratelimit_limit pin = {.capacity = 9, .rate_per_sec = 0};
    struct ratelimit_limit bigger = {.capacity = 10, .rate_per_sec = 0};
    struct ratelimit_table *t = ratelimit_table_new(64, &dflt);
    struct ratelimit_result r;
    assert_non_null(t);
    ratelimit_take(t, "old", 3, NULL, 1.0, &r); /* 3 left under the old default */
    assert_int_equal(ratelimit_pin(t, "p", 1, &pin, -1, 1.0), 0);
    ratelimit_set_default(t, &bigger);
    ratelimit_take(t, "new", 3, NULL, 2.0, &r); /* a new key: the new default, full */
    assert_int_equal(r.limit, 10);
    assert_int_equal(r.remaining, 9);
    ratelimit_take(t, "old", 3, NULL, 2.0, &r); /* moved to it, tokens never raised */
    assert_int_equal(r.limit, 10);
    assert_int_equal(r.remaining, 2);
    ratelimit_take(t, "p", 1, NULL, 2.0, &r); /* an override keeps its own limit */
    assert_int_equal(r.limit, 9);
    assert_int_equal(r.remaining, 8);
    ratelimit_table_free(t);
}

static void test_take_hashed_is_take(void **state)
{
    (void)state;
    struct ratelimit_limit dflt = {.capacity = 2, .rate_per_sec = 0};
    struct ratelimit_table *t = ratelimit_table_new(64, &dflt);
    struct ratelimit_result r;
    assert_non_null(t);
    ratelimit_take_hashed(t, "k", 1, ratelimit_hash("k", 1), NULL, 1.0, &r);
    ratelimit_take(t, "k", 1, NULL, 1.0, &r); /* the same bucket */
    assert_int_equal(r.remaining, 0);
    assert_int_equal(ratelimit_count(t), 1);
    ratelimit_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_bucket_full),
        cmocka_unit_test(test_take_until_empty_then_limited),
        cmocka_unit_test(test_refill_continuous),
        cmocka_unit_test(test_refill_capped_at_capacity),
        cmocka_unit_test(test_burst_equals_capacity),
        cmocka_unit_test(test_retry_after_rounded_up_min_1),
        cmocka_unit_test(test_ratelimit_headers_values),
        cmocka_unit_test(test_rate_zero_never_refills_no_reset),
        cmocka_unit_test(test_override_replaces_default),
        cmocka_unit_test(test_eviction_only_full_buckets),
        cmocka_unit_test(test_eviction_never_gains_tokens),
        cmocka_unit_test(test_overflow_bucket_when_table_full),
        cmocka_unit_test(test_key_client_ip_ipv6_prefix),
        cmocka_unit_test(test_key_header_missing_uses_ip),
        cmocka_unit_test(test_threads_share_one_bucket),
        cmocka_unit_test(test_pinned_override_never_evicted),
        cmocka_unit_test(test_take_uses_pinned_limit),
        cmocka_unit_test(test_change_limit_clamps_tokens),
        cmocka_unit_test(test_unpin_restores_default),
        cmocka_unit_test(test_status_reads_without_taking),
        cmocka_unit_test(test_set_default_applies_to_new_and_unpinned),
        cmocka_unit_test(test_take_hashed_is_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
