/* config: the command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof(a[0])) - 1)

static void test_minimal_defaults(void **state)
{
    (void)state;
    char *argv[] = {"olgen", "--url", "http://127.0.0.1:8080/x", "--rate", "200", "--duration",
                    "3",     NULL};
    struct config c;
    char err[256];
    assert_int_equal(config_parse(&c, ARGC(argv), argv, err, sizeof(err)), CONFIG_OK);
    assert_true(c.rate == 200 && c.duration_s == 3 && c.warmup_s == 0);
    assert_int_equal(c.connections, 16);
    assert_int_equal(c.pipeline, 1);
    assert_string_equal(c.method, "GET");
    assert_int_equal(c.timeout_us, 10000000);
    assert_int_equal(c.max_backlog, 8); /* 10 ms of 200/s = 2, floor 8 */
    assert_int_equal(c.max_lag_us, 10000);
    assert_true(c.trend_ratio == 2.0);
    assert_int_equal(c.trend_min_us, 1000);
    assert_true(c.min_achieved == 0.95);
    assert_int_equal(c.nheaders, 0);
    assert_string_equal(c.target.path, "/x");
    config_deinit(&c);
}

static void test_all_options(void **state)
{
    (void)state;
    char *argv[] = {
        "olgen",     "--url",      "http://h:1/", "--rate",        "0.5",       "--duration",
        "1.5",       "--warmup",   "2",           "--connections", "3",         "--header",
        "A: 1",      "--header",   "B: 2",        "--method",      "POST",      "--body-bytes",
        "10",        "--close",    "--timeout",   "250",           "--samples", "/tmp/s.csv",
        "--poisson", "--seed",     "9",           "--max-backlog", "5",         "--max-lag",
        "7",         "--pipeline", "4",           "--tick-us",     "0",         "--spin",
        NULL};
    struct config c;
    char err[256];
    assert_int_equal(config_parse(&c, ARGC(argv), argv, err, sizeof(err)), CONFIG_OK);
    assert_true(c.rate == 0.5 && c.duration_s == 1.5 && c.warmup_s == 2);
    assert_int_equal(c.connections, 3);
    assert_int_equal(c.nheaders, 2);
    assert_string_equal(c.headers[1], "B: 2");
    assert_string_equal(c.method, "POST");
    assert_int_equal(c.body_bytes, 10);
    assert_true(c.close_mode);
    assert_int_equal(c.pipeline, 1); /* --close: nothing to pipeline */
    assert_int_equal(c.timeout_us, 250000);
    assert_string_equal(c.samples_path, "/tmp/s.csv");
    assert_true(c.poisson);
    assert_int_equal(c.seed, 9);
    assert_int_equal(c.max_backlog, 5);
    assert_int_equal(c.max_lag_us, 7000);
    assert_int_equal(c.tick_us, 0);
    assert_true(c.spin);
    config_deinit(&c);
}

static void test_errors(void **state)
{
    (void)state;
    struct config c;
    char err[256];
    char *missing[] = {"olgen", "--url", "http://h/", "--rate", "10", NULL};
    char *bad_rate[] = {"olgen", "--url", "http://h/", "--rate", "0", "--duration", "1", NULL};
    char *junk[] = {"olgen", "--url", "http://h/", "--rate", "1x", "--duration", "1", NULL};
    char *bad_url[] = {"olgen", "--url", "ftp://h/", "--rate", "1", "--duration", "1", NULL};
    char *unknown[] = {"olgen", "--bogus", NULL};
    char *extra[] = {"olgen", "--url", "http://h/", "--rate", "1", "--duration", "1", "x", NULL};
    char *zero_conns[] = {"olgen",      "--url", "http://h/",     "--rate", "1",
                          "--duration", "1",     "--connections", "0",      NULL};
    char *help[] = {"olgen", "--help", NULL};
    assert_int_equal(config_parse(&c, ARGC(missing), missing, err, sizeof(err)), CONFIG_ERROR);
    assert_int_equal(config_parse(&c, ARGC(bad_rate), bad_rate, err, sizeof(err)), CONFIG_ERROR);
    assert_int_equal(config_parse(&c, ARGC(junk), junk, err, sizeof(err)), CONFIG_ERROR);
    assert_int_equal(config_parse(&c, ARGC(bad_url), bad_url, err, sizeof(err)), CONFIG_ERROR);
    assert_int_equal(config_parse(&c, ARGC(unknown), unknown, err, sizeof(err)), CONFIG_ERROR);
    assert_int_equal(config_parse(&c, ARGC(extra), extra, err, sizeof(err)), CONFIG_ERROR);
    assert_int_equal(config_parse(&c, ARGC(zero_conns), zero_conns, err, sizeof(err)),
                     CONFIG_ERROR);
    assert_int_equal(config_parse(&c, ARGC(help), help, err, sizeof(err)), CONFIG_HELP);
}

static void test_gate_options(void **state)
{
    (void)state;
    struct config c;
    char err[256];
    char *ok[] = {
        "olgen",         "--url", "http://h/",      "--rate", "20000",          "--duration", "1",
        "--trend-ratio", "3",     "--trend-min-us", "500",    "--min-achieved", "0.9",        NULL};
    assert_int_equal(config_parse(&c, ARGC(ok), ok, err, sizeof(err)), CONFIG_OK);
    assert_true(c.trend_ratio == 3.0 && c.min_achieved == 0.9);
    assert_int_equal(c.trend_min_us, 500);
    assert_int_equal(c.max_backlog, 200); /* 10 ms of 20000/s */
    config_deinit(&c);
    char *off[] = {"olgen", "--url",         "http://h/", "--rate",         "10", "--duration",
                   "1",     "--trend-ratio", "0",         "--min-achieved", "0",  NULL};
    assert_int_equal(config_parse(&c, ARGC(off), off, err, sizeof(err)), CONFIG_OK);
    assert_true(c.trend_ratio == 0 && c.min_achieved == 0);
    config_deinit(&c);
    char *low_ratio[] = {"olgen",      "--url", "http://h/",     "--rate", "10",
                         "--duration", "1",     "--trend-ratio", "0.5",    NULL};
    char *big_frac[] = {"olgen",      "--url", "http://h/",      "--rate", "10",
                        "--duration", "1",     "--min-achieved", "1.5",    NULL};
    assert_int_equal(config_parse(&c, ARGC(low_ratio), low_ratio, err, sizeof(err)), CONFIG_ERROR);
    assert_int_equal(config_parse(&c, ARGC(big_frac), big_frac, err, sizeof(err)), CONFIG_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_all_options),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_gate_options),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
