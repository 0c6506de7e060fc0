/* stats: nearest-rank percentiles, mean/stddev, and the CO latency rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "stats.h"

static void test_percentile_one_sample(void **state)
{
    (void)state;
    uint32_t v[] = {42};
    for (int i = 0; i < STATS_NPCT; i++)
        assert_int_equal(stats_percentile(v, 1, stats_pct_ppm[i]), 42);
    assert_int_equal(stats_percentile(v, 1, 0), 42); /* rank is at least 1 */
}

static void test_percentile_all_equal(void **state)
{
    (void)state;
    uint32_t v[1000];
    for (int i = 0; i < 1000; i++)
        v[i] = 7;
    for (int i = 0; i < STATS_NPCT; i++)
        assert_int_equal(stats_percentile(v, 1000, stats_pct_ppm[i]), 7);
}

static void test_percentile_nearest_rank_1_to_100(void **state)
{
    (void)state;
    uint32_t v[100];
    for (int i = 0; i < 100; i++)
        v[i] = (uint32_t)i + 1; /* value == rank */
    assert_int_equal(stats_percentile(v, 100, 500000), 50);
    assert_int_equal(stats_percentile(v, 100, 900000), 90);
    assert_int_equal(stats_percentile(v, 100, 990000), 99);
    /* 99.9% of 100 is rank 99.9 -> 100: nearest rank rounds up, never interpolates. */
    assert_int_equal(stats_percentile(v, 100, 999000), 100);
    assert_int_equal(stats_percentile(v, 100, 1000000), 100);
    assert_int_equal(stats_percentile(v, 100, 10000), 1); /* p1 */
    assert_int_equal(stats_percentile(v, 100, 10001), 2); /* just above p1 */
}

static void test_percentile_exact_ranks_no_float_error(void **state)
{
    (void)state;
    /* 99.9% of 1000 is exactly rank 999; 99.99% of 10000 exactly rank 9999.
     * (Floating point 0.999 * 1000 is 999.0000000000001 and ceil() would say 1000.) */
    uint32_t *v = malloc(10000 * sizeof(*v));
    assert_non_null(v);
    for (uint32_t i = 0; i < 10000; i++)
        v[i] = i + 1;
    assert_int_equal(stats_percentile(v, 1000, 999000), 999);
    assert_int_equal(stats_percentile(v, 10000, 999900), 9999);
    assert_int_equal(stats_percentile(v, 10000, 999000), 9990);
    assert_int_equal(stats_percentile(v, 3, 500000), 2); /* ceil(1.5) = 2 */
    assert_int_equal(stats_percentile(v, 2, 500000), 1); /* ceil(1.0) = 1 */
    free(v);
}

static void test_p100_is_max(void **state)
{
    (void)state;
    struct stats s;
    struct stats_summary sum;
    uint32_t vals[] = {5, 900, 3, 77, 12, 900000, 4};
    assert_int_equal(stats_init(&s, 0), 0);
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
        assert_int_equal(stats_add(&s, i, vals[i], 200), 0);
    assert_int_equal(stats_summarize(&s, &sum), 0);
    assert_int_equal(sum.n, 7);
    assert_int_equal(sum.pct[STATS_NPCT - 1], 900000);
    assert_int_equal(sum.pct[0], 12); /* p50 of 7: rank 4 of 3,4,5,12,77,900,900000 */
    /* Summarizing sorts a copy: samples keep completion order for the CSV. */
    assert_int_equal(s.v[0].latency_us, 5);
    assert_int_equal(s.v[5].latency_us, 900000);
    stats_deinit(&s);
}

static void test_summary_empty(void **state)
{
    (void)state;
    struct stats s;
    struct stats_summary sum;
    assert_int_equal(stats_init(&s, 16), 0);
    assert_int_equal(stats_summarize(&s, &sum), 0);
    assert_int_equal(sum.n, 0);
    assert_true(sum.mean_us == 0);
    stats_deinit(&s);
    stats_deinit(NULL);
}

static void test_mean_stddev(void **state)
{
    (void)state;
    uint32_t v[] = {2, 4, 4, 4, 5, 5, 7, 9};
    double mean, sd;
    stats_mean_stddev(v, 8, &mean, &sd);
    assert_true(mean == 5.0);
    assert_true(sd == 2.0); /* population standard deviation */
    stats_mean_stddev(v, 1, &mean, &sd);
    assert_true(mean == 2.0 && sd == 0.0);
}

static void test_add_grows_and_saturates(void **state)
{
    (void)state;
    struct stats s;
    assert_int_equal(stats_init(&s, 1), 0);
    for (uint64_t i = 0; i < 10000; i++)
        assert_int_equal(stats_add(&s, i, i * 3, 200), 0);
    assert_int_equal(s.n, 10000);
    assert_int_equal(s.v[9999].latency_us, 29997);
    assert_int_equal(stats_add(&s, 1ull << 40, 1ull << 40, 70000), 0);
    assert_int_equal(s.v[10000].latency_us, UINT32_MAX);
    assert_int_equal(s.v[10000].intended_us, 1ull << 40);
    assert_int_equal(s.v[10000].status, UINT16_MAX);
    stats_deinit(&s);
}

/* The coordinated-omission correction: latency runs from the intended send time. */
static void test_latency_from_intended_time(void **state)
{
    (void)state;
    /* Intended at 1.000 s; the connection was stuck so it went out at 1.400 s and the
     * response came 0.2 ms after that: the user waited 400.2 ms, not 0.2 ms. */
    uint64_t intended = 1000000, sent = 1400000, done = 1400200;
    assert_int_equal(stats_latency_us(intended, done), 400200);
    assert_int_equal(stats_latency_us(sent, done), 200); /* what a closed loop would say */
    assert_int_equal(stats_latency_us(done, intended), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentile_one_sample),
        cmocka_unit_test(test_percentile_all_equal),
        cmocka_unit_test(test_percentile_nearest_rank_1_to_100),
        cmocka_unit_test(test_percentile_exact_ranks_no_float_error),
        cmocka_unit_test(test_p100_is_max),
        cmocka_unit_test(test_summary_empty),
        cmocka_unit_test(test_mean_stddev),
        cmocka_unit_test(test_add_grows_and_saturates),
        cmocka_unit_test(test_latency_from_intended_time),
    };
    return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
