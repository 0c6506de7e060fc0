/* Unit tests: log (access-line formats, docs/behaviour.md "Logs"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "log.h"
#include "util.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_line),     cmocka_unit_test(test_text_line_and_quoting),
        cmocka_unit_test(test_json_escaping), cmocka_unit_test(test_too_small),
        cmocka_unit_test(test_ts_format),     cmocka_unit_test(test_request_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
