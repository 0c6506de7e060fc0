/* Unit tests: balancer + balancer_roundrobin (smooth weighted round robin). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "balancer.h"

static int pick(struct balancer *b, struct balancer_tried *t)
{
    struct balancer_ctx ctx = {.tried = t, .now = 0, .client_ip = "127.0.0.1"};
    return balancer_pick(b, &ctx);
}

static void test_nginx_sequence_5_1_1(void **state)
{
    (void)state;
    struct balancer_peer peers[3] = {{.weight = 5}, {.weight = 1}, {.weight = 1}};
    struct balancer b;
    assert_int_equal(balancer_init(&b, &balancer_roundrobin_ops, peers, 3), 0);
    /* nginx's documented smooth sequence for a=5 b=1 c=1: a a b a c a a */
    const int want[] = {0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(pick(&b, NULL), want[i]);
    balancer_deinit(&b);
}

static void test_equal_weights_exact(void **state)
{
    (void)state;
    enum { N = 4, K = 25 };
    struct balancer_peer peers[N];
    for (int i = 0; i < N; i++)
        peers[i] = (struct balancer_peer){.weight = 1};
    struct balancer b;
    assert_int_equal(balancer_init(&b, &balancer_roundrobin_ops, peers, N), 0);
    int count[N] = {0};
    for (int i = 0; i < N * K; i++)
        count[pick(&b, NULL)]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(count[i], K);
    balancer_deinit(&b);
}

static void test_weighted_counts(void **state)
{
    (void)state;
    struct balancer_peer peers[3] = {{.weight = 3}, {.weight = 2}, {.weight = 5}};
    struct balancer b;
    assert_int_equal(balancer_init(&b, &balancer_roundrobin_ops, peers, 3), 0);
    int count[3] = {0};
    for (int i = 0; i < 1000; i++)
        count[pick(&b, NULL)]++;
    assert_int_equal(count[0], 300);
    assert_int_equal(count[1], 200);
    assert_int_equal(count[2], 500);
    balancer_deinit(&b);
}

static void test_tried_bitmap_skips(void **state)
{
    (void)state;
    struct balancer_peer peers[3] = {{.weight = 1}, {.weight = 1}, {.weight = 1}};
    struct balancer b;
    assert_int_equal(balancer_init(&b, &balancer_roundrobin_ops, peers, 3), 0);
    uint64_t bits[1] = {0};
    struct balancer_tried t = {.bits = bits, .n = 3};
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        int p = pick(&b, &t);
        assert_true(p >= 0 && p < 3);
        assert_false(balancer_tried_has(&t, (size_t)p));
        balancer_tried_add(&t, (size_t)p);
        seen |= 1 << p;
    }
    assert_int_equal(seen, 7);
    assert_int_equal(pick(&b, &t), -1); /* every upstream tried */
    balancer_deinit(&b);
}

static void test_down_peers_skipped(void **state)
{
    (void)state;
    struct balancer_peer peers[2] = {{.weight = 1, .down = true}, {.weight = 1}};
    struct balancer b;
    assert_int_equal(balancer_init(&b, &balancer_roundrobin_ops, peers, 2), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(pick(&b, NULL), 1);
    peers[1].down = true;
    assert_int_equal(pick(&b, NULL), -1);
    balancer_deinit(&b);
}

static void test_ops_for(void **state)
{
    (void)state;
    bool fallback = true;
    assert_ptr_equal(balancer_ops_for(CONFIG_BALANCER_ROUND_ROBIN, &fallback),
                     &balancer_roundrobin_ops);
    assert_false(fallback);
    assert_string_equal(balancer_roundrobin_ops.name, "round_robin");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nginx_sequence_5_1_1), cmocka_unit_test(test_equal_weights_exact),
        cmocka_unit_test(test_weighted_counts),      cmocka_unit_test(test_tried_bitmap_skips),
        cmocka_unit_test(test_down_peers_skipped),   cmocka_unit_test(test_ops_for),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
