/* schedule: intended send times for constant and Poisson arrivals. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "schedule.h"

static void test_constant_rate_times(void **state)
{
    (void)state;
    struct schedule s;
    schedule_init(&s, 200, 0, 1);
    for (uint64_t i = 0; i < 1000; i++) {
        assert_int_equal(schedule_peek(&s), i * 5000); /* 200/s: every 5 ms */
        schedule_advance(&s);
    }
}

static void test_constant_rate_fractional_gap_no_drift(void **state)
{
    (void)state;
    struct schedule s;
    /* 3/s: gaps of 333333.33 us. t_i is computed from i, so the millionth request is
     * exactly where i * 1e6 / 3 puts it, with no accumulated rounding. */
    schedule_init(&s, 3, 0, 1);
    schedule_advance(&s);
    assert_int_equal(schedule_peek(&s), 333333);
    schedule_advance(&s);
    assert_int_equal(schedule_peek(&s), 666666);
    schedule_advance(&s);
    assert_int_equal(schedule_peek(&s), 1000000);
    for (int i = 3; i < 3000000; i++)
        schedule_advance(&s);
    assert_int_equal(schedule_peek(&s), 1000000000000ull);
}

static void test_count_before(void **state)
{
    (void)state;
    assert_int_equal(schedule_count_before(200, 3000000), 600); /* 200/s for 3 s */
    assert_int_equal(schedule_count_before(200, 3000001), 601); /* t=3.000000 is due */
    assert_int_equal(schedule_count_before(3, 1000000), 3);     /* 0, .33, .67 */
    assert_int_equal(schedule_count_before(50000, 10000000), 500000);
    assert_int_equal(schedule_count_before(1, 0), 0);
    /* Agrees with stepping the schedule. */
    struct schedule s;
    uint64_t n = 0;
    schedule_init(&s, 7.3, 0, 1);
    while (schedule_peek(&s) < 5000000) {
        n++;
        schedule_advance(&s);
    }
    assert_int_equal(schedule_count_before(7.3, 5000000), n);
}

static void test_poisson_mean_rate_and_seed(void **state)
{
    (void)state;
    struct schedule a, b, c;
    schedule_init(&a, 1000, 1, 42);
    schedule_init(&b, 1000, 1, 42);
    schedule_init(&c, 1000, 1, 43);
    int differs = 0;
    uint64_t prev = 0;
    for (int i = 0; i < 100000; i++) {
        schedule_advance(&a);
        schedule_advance(&b);
        schedule_advance(&c);
        assert_int_equal(schedule_peek(&a), schedule_peek(&b)); /* same seed, same run */
        assert_true(schedule_peek(&a) >= prev);                 /* never goes back */
        prev = schedule_peek(&a);
        differs |= schedule_peek(&a) != schedule_peek(&c);
    }
    assert_true(differs);
    /* 100000 exponential gaps of mean 1 ms: 100 s +- a few standard errors (0.3 s). */
    double total_s = (double)schedule_peek(&a) / 1e6;
    assert_true(fabs(total_s - 100.0) < 1.5);
}

static void test_uniform_open_interval(void **state)
{
    (void)state;
    uint64_t st = 0;
    double lo = 1, hi = 0;
    for (int i = 0; i < 100000; i++) {
        double u = schedule_uniform(&st);
        assert_true(u > 0 && u <= 1);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    assert_true(lo < 0.001 && hi > 0.999);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constant_rate_times),
        cmocka_unit_test(test_constant_rate_fractional_gap_no_drift),
        cmocka_unit_test(test_count_before),
        cmocka_unit_test(test_poisson_mean_rate_and_seed),
        cmocka_unit_test(test_uniform_open_interval),
    };
    return cmocka_run_group_tests_name("schedule", tests, NULL, NULL);
}
