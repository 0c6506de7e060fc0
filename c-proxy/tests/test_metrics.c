/* Unit tests: metrics (the /metrics text and the per-worker slots behind it).
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

/* The case file (see its header), applied to one slot through the hot-path calls. */
static void test_metrics_render_shared_case(void **state)
{
    (void)state;
    char *args = slurp(CASES_DIR "/basic.args");
    char *want = slurp(CASES_DIR "/basic.txt");
    assert_non_null(args);
    assert_non_null(want);
    struct metrics_slot *s = calloc(1, sizeof *s), *sum = calloc(1, sizeof *sum);
    assert_non_null(s);
    assert_non_null(sum);
    char impl[64] = "", version[64] = "", names[8][128], lnames[8][128];
    struct metrics_upstream ups[8];
    const char *labels[9] = {""};
    struct metrics_view v = {
        .impl = impl, .version = version, .ups = ups, .labels = labels, .n_labels = 1};
    for (char *line = strtok(args, "\n"); line; line = strtok(NULL, "\n")) {
        unsigned long long a = 0, b = 0, c = 0, d = 0;
        unsigned h = 0;
        int off = 0;
        char word[64];
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if (strncmp(line, "impl ", 5) == 0)
            snprintf(impl, sizeof impl, "%s", line + 5);
        else if (strncmp(line, "version ", 8) == 0)
            snprintf(version, sizeof version, "%s", line + 8);
        else if (sscanf(line, "generation %llu", &a) == 1)
            v.generation = a;
        else if (sscanf(line, "reloads %llu %llu", &a, &b) == 2)
            v.reloads_ok = a, v.reloads_failed = b;
        else if (sscanf(line, "upstream %u %llu %llu %llu %llu %n", &h, &a, &b, &c, &d, &off) ==
                     5 &&
                 v.n_ups < 8) {
            snprintf(names[v.n_ups], sizeof names[0], "%s", line + off);
            ups[v.n_ups] = (struct metrics_upstream){names[v.n_ups], h == 1, a, b, c, d};
            v.n_ups++;
        } else if (strncmp(line, "label ", 6) == 0 && v.n_labels < 9) {
            snprintf(lnames[v.n_labels - 1], sizeof lnames[0], "%s", line + 6);
            labels[v.n_labels] = lnames[v.n_labels - 1];
            v.n_labels++;
        } else if (sscanf(line, "request %llu %llu %llu", &a, &b, &c) == 3)
            metrics_request(s, (int)a, (unsigned)b, c);
        else if (sscanf(line, "queue %llu", &a) == 1)
            metrics_queue_wait(s, a);
        else if (sscanf(line, "retry %llu %llu", &a, &b) == 2)
            metrics_retry(s, (unsigned)a, (unsigned)b);
        else if (sscanf(line, "error %llu %63s", &a, word) == 2)
            metrics_error(s, (int)a, reason_from_name(word, REASON_N));
        else if (sscanf(line, "cell %llu %llu", &a, &b) == 2)
            metrics_add(s, (enum metrics_cell)a, b);
        else
            fail_msg("bad case line: %s", line);
    }
    const struct metrics_slot *one[1] = {s};
    metrics_sum(sum, one, 1);
    char *out = malloc(65536);
    size_t n = metrics_render(out, 65536, &v, sum);
    assert_true(n < 65536);
    if (getenv("METRICS_REGENERATE")) { /* after a deliberate change: rewrite basic.txt */
        FILE *f = fopen(CASES_DIR "/basic.txt", "wb");
        assert_non_null(f);
        fwrite(out, 1, n, f);
        fclose(f);
    } else {
        assert_string_equal(out, want);
    }
    /* too small: the full length, as much as fits */
    char small[16];
    assert_int_equal(metrics_render(small, sizeof small, &v, sum), n);
    assert_memory_equal(small, want, sizeof small);
    free(out);
    free(s);
    free(sum);
    free(args);
    free(want);
}

static void test_metrics_render_every_line_is_help_type_or_sample(void **state)
{
    (void)state;
    char *out = malloc(65536);
    char names[32][96];
    size_t n_names = 0;
    struct metrics_slot *sum = calloc(1, sizeof *sum);
    struct metrics_view v = {.impl = "c", .version = "1.2.3", .generation = 1};
    metrics_render(out, 65536, &v, sum);
    size_t len = strlen(out);
    assert_true(len > 0 && out[len - 1] == '\n');
    bool upstream_up = false;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_true(n_names < 32);
            sscanf(line + 7, "%95s", names[n_names]);
            upstream_up |= strcmp(names[n_names], "twinproxy_upstream_up") == 0;
            n_names++;
        } else if (strncmp(line, "# HELP ", 7) != 0) {
            size_t k = strcspn(line, "{ ");
            bool known = false;
            for (size_t i = 0; i < n_names; i++)
                known |= strncmp(names[i], line, strlen(names[i])) == 0 && k >= strlen(names[i]);
            if (!known)
                fail_msg("a sample without its TYPE: %s", line);
        }
    }
    assert_true(upstream_up);      /* its HELP/TYPE even with no upstream */
    assert_int_equal(n_names, 18); /* contract 9's 17 + twinproxy_errors_total */
    free(sum);
    free(out);
}

static void test_metrics_bucket_bounds_are_inclusive(void **state)
{
    (void)state;
    assert_int_equal(metrics_bucket(0), 0);
    assert_int_equal(metrics_bucket(500), 0); /* le="0.0005" holds 0.0005 itself */
    assert_int_equal(metrics_bucket(501), 1);
    assert_int_equal(metrics_bucket(10000000), METRICS_BOUNDS - 1);
    assert_int_equal(metrics_bucket(10000001), METRICS_BOUNDS); /* +Inf */
}

static void test_counters_local_rows_summed(void **state)
{
    (void)state;
    struct metrics_slot *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    struct metrics_slot *sum = calloc(1, sizeof *sum);
    metrics_add(a, METRICS_RL_ALLOWED, 2);
    metrics_add(b, METRICS_RL_ALLOWED, 3);
    metrics_add(a, METRICS_CONN_CLIENT, 1);
    metrics_add(a, METRICS_CONN_CLIENT, 1);
    metrics_dec(a, METRICS_CONN_CLIENT);
    metrics_request(a, 200, 1, 10);
    metrics_request(b, 200, 1, 10);
    metrics_request(b, 503, 0, 10);
    const struct metrics_slot *both[2] = {a, b};
    metrics_sum(sum, both, 2);
    assert_int_equal(sum->cell[METRICS_RL_ALLOWED], 5);
    assert_int_equal(sum->cell[METRICS_CONN_CLIENT], 1);
    uint64_t n200 = 0, n503 = 0;
    for (size_t i = 0; i < METRICS_REQ_SLOTS; i++) {
        if (sum->req_key[i] == 200 * 2048 + 1 + 1)
            n200 = sum->req_n[i];
        if (sum->req_key[i] == 503 * 2048 + 0 + 1)
            n503 = sum->req_n[i];
    }
    assert_int_equal(n200, 2);
    assert_int_equal(n503, 1);
    assert_int_equal(sum->up[1][METRICS_U_DUR_B0], 2);
    metrics_add(NULL, METRICS_RL_LIMITED, 1); /* no slot: no-op */
    metrics_request(NULL, 200, 0, 1);
    free(a);
    free(b);
    free(sum);
}

struct writer {
    struct metrics_slot *s;
    int code;
};

static void *write_own_slot(void *arg)
{
    struct writer *w = arg;
    for (int i = 0; i < 100000; i++) {
        metrics_add(w->s, METRICS_RL_LIMITED, 1);
        metrics_request(w->s, w->code + i % 3, 1, 100);
    }
    return NULL;
}

/* The twin's worker processes write rows of a shared array; here worker threads
 * each write their own slot while the sum is read: nothing is lost. */
static void test_counters_shared_rows_summed_across_processes(void **state)
{
    (void)state;
    struct metrics_slot *slots[4], *sum = calloc(1, sizeof *sum);
    struct writer w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        slots[i] = calloc(1, sizeof *slots[i]);
        w[i] = (struct writer){slots[i], 200 + 100 * (i % 2)};
        assert_int_equal(pthread_create(&t[i], NULL, write_own_slot, &w[i]), 0);
    }
    metrics_sum(sum, (const struct metrics_slot *const *)slots, 4); /* while they write */
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    metrics_sum(sum, (const struct metrics_slot *const *)slots, 4);
    assert_int_equal(sum->cell[METRICS_RL_LIMITED], 400000);
    assert_int_equal(sum->cell[METRICS_RL_ALLOWED], 0);
    uint64_t total = 0;
    for (size_t i = 0; i < METRICS_REQ_SLOTS; i++)
        total += sum->req_n[i];
    assert_int_equal(total, 400000);
    for (int i = 0; i < 4; i++)
        free(slots[i]);
    free(sum);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_render_shared_case),
        cmocka_unit_test(test_metrics_render_every_line_is_help_type_or_sample),
        cmocka_unit_test(test_metrics_bucket_bounds_are_inclusive),
        cmocka_unit_test(test_counters_local_rows_summed),
        cmocka_unit_test(test_counters_shared_rows_summed_across_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
