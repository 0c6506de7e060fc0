/* Unit tests: metrics (the /metrics text and the counters behind it).
 *
 * Twin: py-proxy/tests/test_metrics.py (same names; the same shared case,
 * c-proxy/tests/metrics_cases/basic.args -> basic.txt, byte for byte).
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

#include "metrics.h"

#ifndef CASES_DIR
#define CASES_DIR "tests/metrics_cases"
#endif

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

/* The case file: "impl NAME | version TEXT | generation N | upstream HEALTHY NAME |
 * allowed N | limited N", one per line, # comments. */
static void test_metrics_render_shared_case(void **state)
{
    (void)state;
    char *args = slurp(CASES_DIR "/basic.args");
    char *want = slurp(CASES_DIR "/basic.txt");
    assert_non_null(args);
    assert_non_null(want);
    char impl[64] = "", version[64] = "", names[8][128];
    struct metrics_upstream ups[8];
    size_t n_ups = 0;
    unsigned long long generation = 0, allowed = 0, limited = 0;
    for (char *line = strtok(args, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if (strncmp(line, "impl ", 5) == 0)
            snprintf(impl, sizeof impl, "%s", line + 5);
        else if (strncmp(line, "version ", 8) == 0)
            snprintf(version, sizeof version, "%s", line + 8);
        else if (strncmp(line, "generation ", 11) == 0)
            generation = strtoull(line + 11, NULL, 10);
        else if (strncmp(line, "allowed ", 8) == 0)
            allowed = strtoull(line + 8, NULL, 10);
        else if (strncmp(line, "limited ", 8) == 0)
            limited = strtoull(line + 8, NULL, 10);
        else if (strncmp(line, "upstream ", 9) == 0 && n_ups < 8) {
            snprintf(names[n_ups], sizeof names[n_ups], "%s", line + 11);
            ups[n_ups].name = names[n_ups];
            ups[n_ups].healthy = line[9] == '1';
            n_ups++;
        }
    }
    char out[4096];
    size_t n =
        metrics_render(out, sizeof out, impl, version, generation, ups, n_ups, allowed, limited);
    assert_true(n < sizeof out);
    assert_string_equal(out, want);
    /* too small: the full length, as much as fits */
    char small[16];
    assert_int_equal(metrics_render(small, sizeof small, impl, version, generation, ups, n_ups,
                                    allowed, limited),
                     n);
    assert_memory_equal(small, want, sizeof small);
    free(args);
    free(want);
}

static void test_metrics_render_every_line_is_help_type_or_sample(void **state)
{
    (void)state;
    char out[4096], names[16][96];
    size_t n_names = 0;
    metrics_render(out, sizeof out, "c", "1.2.3", 1, NULL, 0, 0, 0);
    size_t len = strlen(out);
    assert_true(len > 0 && out[len - 1] == '\n');
    bool upstream_up = false;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_true(n_names < 16);
            sscanf(line + 7, "%95s", names[n_names]);
            upstream_up |= strcmp(names[n_names], "twinproxy_upstream_up") == 0;
            n_names++;
        } else if (strncmp(line, "# HELP ", 7) != 0) {
            size_t k = strcspn(line, "{ ");
            bool known = false;
            for (size_t i = 0; i < n_names; i++)
                known |= strlen(names[i]) == k && strncmp(names[i], line, k) == 0;
            if (!known)
                fail_msg("a sample without its TYPE: %s", line);
        }
    }
    assert_true(upstream_up); /* its HELP/TYPE even with no upstream */
}

static void test_counters_local_rows_summed(void **state)
{
    (void)state;
    struct metrics_counters c = {0};
    metrics_counters_add(&c, METRICS_C_RL_ALLOWED, 2);
    metrics_counters_add(&c, METRICS_C_RL_LIMITED, 1);
    assert_int_equal(metrics_counters_total(&c, METRICS_C_RL_ALLOWED), 2);
    assert_int_equal(metrics_counters_total(&c, METRICS_C_RL_LIMITED), 1);
    metrics_counters_add(NULL, METRICS_C_RL_LIMITED, 1); /* no counters: no-op */
}

static void *add_limited(void *arg)
{
    for (int i = 0; i < 100000; i++)
        metrics_counters_add(arg, METRICS_C_RL_LIMITED, 1);
    return NULL;
}

/* The twin's worker processes write rows of a shared array; here worker threads
 * add to the same atomics: nothing is lost. */
static void test_counters_shared_rows_summed_across_processes(void **state)
{
    (void)state;
    struct metrics_counters c = {0};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, add_limited, &c), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(metrics_counters_total(&c, METRICS_C_RL_LIMITED), 400000);
    assert_int_equal(metrics_counters_total(&c, METRICS_C_RL_ALLOWED), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_render_shared_case),
        cmocka_unit_test(test_metrics_render_every_line_is_help_type_or_sample),
        cmocka_unit_test(test_counters_local_rows_summed),
        cmocka_unit_test(test_counters_shared_rows_summed_across_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
