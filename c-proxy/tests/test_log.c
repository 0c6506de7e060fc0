/* Unit tests: log (access-line formats, docs/behaviour.md "Logs"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "reason.h"
#include "util.h"

#ifndef REGISTRY_DIR
#define REGISTRY_DIR "tests/registry_cases"
#endif

/* The next non-comment, non-empty line of f (its first word in word), or 0 at the end. */
static int next_word(FILE *f, char *word, size_t cap)
{
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char fmt[16];
        snprintf(fmt, sizeof fmt, "%%%zus", cap - 1);
        if (sscanf(line, fmt, word) == 1)
            return 1;
    }
    return 0;
}

/* The shared vocabulary (reasons.txt) is enum reason, name for name, in order. */
static void test_reasons_match_shared_list(void **state)
{
    (void)state;
    FILE *f = fopen(REGISTRY_DIR "/reasons.txt", "r");
    assert_non_null(f);
    char word[64];
    unsigned n = 0;
    while (next_word(f, word, sizeof word)) {
        assert_true(n < REASON_N);
        assert_string_equal(reason_name((enum reason)n), word);
        assert_int_equal(reason_from_name(word, REASON_N), n);
        n++;
    }
    fclose(f);
    assert_int_equal(n, REASON_N);
    assert_string_equal(reason_name(REASON_N), "");
    assert_int_equal(reason_from_name("no such reason", REASON_BAD_REQUEST), REASON_BAD_REQUEST);
    assert_int_equal(reason_from_name(NULL, REASON_SOCKET), REASON_SOCKET);
}

/* The event registry (events.txt) lists every event of contract 10. */
static void test_event_registry_has_contract_events(void **state)
{
    (void)state;
    static const char *const want[] = {
        "start",         "stop",          "shutdown",          "reload", "reload_failed",
        "upstream_down", "upstream_up",   "upstream_drain",    "retry",  "retry_skipped",
        "store_error",   "request_error", "connection_closed",
    };
    bool seen[sizeof want / sizeof want[0]] = {false};
    FILE *f = fopen(REGISTRY_DIR "/events.txt", "r");
    assert_non_null(f);
    char word[64];
    while (next_word(f, word, sizeof word))
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
            seen[i] |= strcmp(word, want[i]) == 0;
    fclose(f);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!seen[i])
            fail_msg("event %s missing from events.txt", want[i]);
}

static const struct access_rec rec = {
    .start_wall = 1795314534.123,
    .client = "127.0.0.1",
    .method = "GET",
    .path = "/x",
    .status = 200,
    .upstream = "u1",
    .attempts = 1,
    .bytes_in = 78,
    .bytes_out = 123,
    .duration_ms = 0.4123,
    .request_id = "abc",
    .worker = 1,
};

static void test_json_line(void **state)
{
    (void)state;
    char out[1024];
    size_t n = log_format_access(&rec, CONFIG_LOG_JSON, out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out,
                        "{\"ts\":\"2026-11-22T02:28:54.123Z\",\"client\":\"127.0.0.1\","
                        "\"method\":\"GET\",\"path\":\"/x\",\"status\":200,\"upstream\":\"u1\","
                        "\"attempts\":1,\"bytes_in\":78,\"bytes_out\":123,"
                        "\"duration_ms\":0.412,\"request_id\":\"abc\",\"worker\":1}\n");
}

static void test_text_line_and_quoting(void **state)
{
    (void)state;
    struct access_rec r = rec;
    r.path = "/a b\"c";
    r.upstream = "";
    char out[1024];
    size_t n = log_format_access(&r, CONFIG_LOG_TEXT, out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out, "ts=2026-11-22T02:28:54.123Z client=127.0.0.1 method=GET "
                             "path=\"/a b\\\"c\" status=200 upstream= attempts=1 bytes_in=78 "
                             "bytes_out=123 duration_ms=0.412 request_id=abc worker=1\n");
}

static void test_json_escaping(void **state)
{
    (void)state;
    struct access_rec r = rec;
    r.path = "/\"\\\n\x01\xe9"; /* quote, backslash, newline, control, invalid UTF-8 */
    char out[1024];
    size_t n = log_format_access(&r, CONFIG_LOG_JSON, out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    assert_non_null(strstr(out, "\"path\":\"/\\\"\\\\\\n\\u0001\xc3\xa9\""));
}

static void test_too_small(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(log_format_access(&rec, CONFIG_LOG_JSON, out, sizeof out), 0);
}

static void test_ts_format(void **state)
{
    (void)state;
    char ts[UTIL_TS_MAX];
    util_format_ts(0.0, ts);
    assert_string_equal(ts, "1970-01-01T00:00:00.000Z");
    util_format_ts(1795314534.9999, ts);
    assert_string_equal(ts, "2026-11-22T02:28:54.999Z");
}

static void test_request_id(void **state)
{
    (void)state;
    struct util_rng r;
    util_rng_seed(&r);
    char a[33], b[33];
    util_request_id(&r, a);
    util_request_id(&r, b);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_string_not_equal(a, b);

    /* digits: each 64-bit draw, low nibble first (the order ids have always had) */
    struct util_rng r1 = {{1, 2, 3, 4}}, r2 = r1;
    util_request_id(&r1, a);
    static const char hex[] = "0123456789abcdef";
    for (int k = 0; k < 2; k++) {
        uint64_t v = util_rng_next(&r2);
        for (int i = 0; i < 16; i++)
            b[k * 16 + i] = hex[(v >> (i * 4)) & 0xf];
    }
    b[32] = '\0';
    assert_string_equal(a, b);
}

/* The whole content of path ("" when missing), in buf. */
static const char *slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_reopen_after_rename(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_log_XXXXXX", path[128], rotated[128], buf[4096], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/access.log", dir);
    snprintf(rotated, sizeof rotated, "%s/access.log.1", dir);
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.log.level = CONFIG_LOG_INFO;
    cfg.log.format = CONFIG_LOG_JSON;
    cfg.log.access = path;
    assert_int_equal(log_configure(&cfg, err, sizeof err), 0);
    struct log_buf *lb = calloc(1, sizeof *lb);
    assert_non_null(lb);
    struct access_rec r = rec;
    r.path = "/before";
    log_access(lb, &r);
    log_flush(lb);
    assert_int_equal(rename(path, rotated), 0);
    assert_int_equal(log_reopen(err, sizeof err), 0);
    r.path = "/after";
    log_access(lb, &r);
    log_flush(lb);
    assert_non_null(strstr(slurp(rotated, buf, sizeof buf), "\"/before\""));
    assert_null(strstr(buf, "/after"));
    assert_non_null(strstr(slurp(path, buf, sizeof buf), "\"/after\""));
    assert_null(strstr(buf, "/before"));

    /* the directory is gone: the reopen fails with the path, the old file stays */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(unlink(rotated), 0);
    assert_int_equal(rmdir(dir), 0);
    assert_int_equal(log_reopen(err, sizeof err), -1);
    assert_true(strncmp(err, "log.access: ", 12) == 0);
    assert_non_null(strstr(err, path));
    log_close();
    free(lb);
}

static void test_reopen_stdout_is_noop(void **state)
{
    (void)state;
    char err[256];
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.log.access = "off";
    assert_int_equal(log_configure(&cfg, err, sizeof err), 0);
    assert_int_equal(log_reopen(err, sizeof err), 0);
    log_close();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_text_line_and_quoting),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_too_small),
        cmocka_unit_test(test_ts_format),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_reopen_after_rename),
        cmocka_unit_test(test_reopen_stdout_is_noop),
        cmocka_unit_test(test_reasons_match_shared_list),
        cmocka_unit_test(test_event_registry_has_contract_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
