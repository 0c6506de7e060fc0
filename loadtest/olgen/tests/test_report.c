/* report: validity verdict, JSON fields, samples CSV. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "report.h"

static void base(struct config *c, struct gen_result *r)
{
    memset(c, 0, sizeof(*c));
    memset(r, 0, sizeof(*r));
    c->url = "http://h/";
    c->method = "GET";
    c->rate = 100;
    c->duration_s = 2;
    c->connections = 4;
    c->pipeline = 1;
    c->timeout_us = 1000000;
    c->max_backlog = 100;
    c->max_lag_us = 100000;
    r->scheduled = r->sent = 200;
}

static void test_invalid_reasons(void **state)
{
    (void)state;
    struct config c;
    struct gen_result r;
    base(&c, &r);
    assert_int_equal(report_invalid(&c, &r), 0);
    r.max_backlog = 100; /* at the bound is still fine */
    assert_int_equal(report_invalid(&c, &r), 0);
    r.max_backlog = 101;
    assert_int_equal(report_invalid(&c, &r), REPORT_INVALID_BACKLOG);
    base(&c, &r);
    r.max_lag_us = 100001;
    assert_int_equal(report_invalid(&c, &r), REPORT_INVALID_LAG);
    base(&c, &r);
    r.sent = 199; /* one expired in the backlog without ever being sent */
    assert_int_equal(report_invalid(&c, &r), REPORT_INVALID_UNSENT);
    base(&c, &r);
    r.interrupted = 1;
    assert_int_equal(report_invalid(&c, &r), REPORT_INVALID_INTERRUPTED);
}

static void test_json_fields(void **state)
{
    (void)state;
    struct config c;
    struct gen_result r;
    struct stats_summary sum;
    base(&c, &r);
    r.completed = 198;
    r.timeouts = 1;
    r.lost = 1;
    r.non_2xx = 3;
    r.status[0] = 195;
    r.status[3] = 3;
    r.max_backlog = 150;
    r.completed_in_window = 0;
    assert_int_equal(stats_init(&r.samples, 0), 0);
    for (uint32_t i = 1; i <= 100; i++)
        stats_add(&r.samples, i * 10000, i * 100, 200);
    assert_int_equal(stats_summarize(&r.samples, &sum), 0);
    json_t *o = report_json(&c, &r, &sum);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "url")), "http://h/");
    assert_int_equal(json_integer_value(json_object_get(o, "rate")), 100);
    assert_int_equal(json_integer_value(json_object_get(o, "completed")), 198);
    assert_int_equal(json_integer_value(json_object_get(o, "errors")), 4); /* 3 5xx + 1 lost */
    assert_int_equal(json_integer_value(json_object_get(o, "timeouts")), 1);
    json_t *st = json_object_get(o, "status");
    assert_int_equal(json_integer_value(json_object_get(st, "2xx")), 195);
    assert_int_equal(json_integer_value(json_object_get(st, "5xx")), 3);
    /* completions inside the window, not the measured requests that completed */
    assert_true(json_number_value(json_object_get(o, "achieved_rate")) == 0.0);
    assert_true(json_is_false(json_object_get(o, "offered_rate_achieved")));
    json_t *why = json_object_get(o, "invalid_reasons");
    assert_int_equal(json_array_size(why), 1);
    assert_string_equal(json_string_value(json_array_get(why, 0)), "backlog");
    json_t *p = json_object_get(o, "percentiles_us");
    assert_int_equal(json_integer_value(json_object_get(p, "50")), 5000);
    assert_int_equal(json_integer_value(json_object_get(p, "99.9")), 10000);
    assert_int_equal(json_integer_value(json_object_get(p, "100")), 10000);
    assert_true(json_number_value(json_object_get(o, "mean_us")) == 5050.0);
    json_decref(o);
    stats_deinit(&r.samples);
}

static void test_json_no_samples_is_null(void **state)
{
    (void)state;
    struct config c;
    struct gen_result r;
    struct stats_summary sum;
    base(&c, &r);
    memset(&sum, 0, sizeof(sum));
    json_t *o = report_json(&c, &r, &sum);
    assert_non_null(o);
    assert_true(json_is_null(json_object_get(json_object_get(o, "percentiles_us"), "99")));
    assert_true(json_is_null(json_object_get(o, "mean_us")));
    json_decref(o);
}

static void test_samples_csv(void **state)
{
    (void)state;
    struct stats s;
    char path[] = "/tmp/olgen-test-XXXXXX", line[128];
    int fd = mkstemp(path);
    assert_true(fd != -1);
    close(fd);
    assert_int_equal(stats_init(&s, 0), 0);
    stats_add(&s, 0, 150, 200);
    stats_add(&s, 5000, 1000000, 0);
    assert_int_equal(report_write_samples(path, &s), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f));
    assert_string_equal(line, "intended_us,latency_us,status\n");
    assert_non_null(fgets(line, sizeof(line), f));
    assert_string_equal(line, "0,150,200\n");
    assert_non_null(fgets(line, sizeof(line), f));
    assert_string_equal(line, "5000,1000000,0\n");
    assert_null(fgets(line, sizeof(line), f));
    fclose(f);
    unlink(path);
    stats_deinit(&s);
    assert_int_equal(report_write_samples("/nonexistent-dir/x.csv", &s), -1);
}

static void test_achieved_rate_counts_window_completions(void **state)
{
    (void)state;
    struct config c;
    struct gen_result r;
    base(&c, &r);
    c.min_achieved = 0.95;
    r.completed = 200;           /* every measured request completed ... */
    r.completed_in_window = 150; /* ... but only 150 inside the 2 s window */
    assert_true(report_achieved_rate(&c, &r) == 75.0);
    assert_int_equal(report_invalid(&c, &r), REPORT_INVALID_ACHIEVED);
    r.completed_in_window = 190; /* 95/s of 100/s: exactly at the bound */
    assert_int_equal(report_invalid(&c, &r), 0);
    c.min_achieved = 0; /* off */
    r.completed_in_window = 0;
    assert_int_equal(report_invalid(&c, &r), 0);
}

static void fill(struct stats *s, uint32_t first_us, uint32_t last_us)
{
    /* 2 s window, one sample every 10 ms; latency ramps linearly first -> last */
    for (uint32_t i = 0; i < 200; i++)
        stats_add(s, (uint64_t)i * 10000, first_us + (uint64_t)(last_us - first_us) * i / 199, 200);
}

static void test_trend(void **state)
{
    (void)state;
    struct config c;
    struct gen_result r;
    struct report_trend t;
    base(&c, &r);
    c.trend_ratio = 2.0;
    c.trend_min_us = 1000;
    assert_int_equal(stats_init(&r.samples, 0), 0);
    fill(&r.samples, 200, 200); /* flat: keeps up */
    assert_int_equal(report_trend(&r.samples, 2.0, &t), 0);
    assert_int_equal(t.n_first, 50);
    assert_int_equal(t.n_last, 50);
    assert_int_equal(t.first_p50_us, 200);
    assert_int_equal(t.last_p50_us, 200);
    assert_int_equal(report_invalid(&c, &r), 0);
    stats_deinit(&r.samples);

    assert_int_equal(stats_init(&r.samples, 0), 0);
    fill(&r.samples, 1000, 100000); /* a queue that grows through the window */
    assert_int_equal(report_trend(&r.samples, 2.0, &t), 0);
    assert_true(t.last_p50_us > 80000 && t.first_p50_us < 20000);
    assert_int_equal(report_invalid(&c, &r), REPORT_INVALID_TREND);
    struct stats_summary sum;
    assert_int_equal(stats_summarize(&r.samples, &sum), 0);
    json_t *o = report_json(&c, &r, &sum);
    json_t *why = json_object_get(o, "invalid_reasons");
    assert_string_equal(json_string_value(json_array_get(why, 0)), "latency_trend");
    assert_int_equal(json_integer_value(json_object_get(o, "p50_first_quarter_us")),
                     t.first_p50_us);
    json_decref(o);
    c.trend_ratio = 0; /* off */
    assert_int_equal(report_invalid(&c, &r), 0);
    stats_deinit(&r.samples);

    /* doubled but tiny in absolute terms (100 -> 300 us): noise, not a queue */
    assert_int_equal(stats_init(&r.samples, 0), 0);
    fill(&r.samples, 100, 300);
    c.trend_ratio = 2.0;
    assert_int_equal(report_invalid(&c, &r), 0);
    stats_deinit(&r.samples);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_reasons),
        cmocka_unit_test(test_json_fields),
        cmocka_unit_test(test_json_no_samples_is_null),
        cmocka_unit_test(test_samples_csv),
        cmocka_unit_test(test_achieved_rate_counts_window_completions),
        cmocka_unit_test(test_trend),
    };
    return cmocka_run_group_tests_name("report", tests, NULL, NULL);
}
