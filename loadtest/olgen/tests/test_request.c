/* request: URL parsing and the preformatted request bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "request.h"

static void test_url_forms(void **state)
{
    (void)state;
    struct url u;
    const char *err = NULL;
    assert_int_equal(url_parse(&u, "http://127.0.0.1:8080/path?q=1", &err), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_string_equal(u.port, "8080");
    assert_string_equal(u.path, "/path?q=1");
    assert_string_equal(u.authority, "127.0.0.1:8080");
    assert_int_equal(url_parse(&u, "http://localhost", &err), 0);
    assert_string_equal(u.port, "80");
    assert_string_equal(u.path, "/");
    assert_int_equal(url_parse(&u, "HTTP://[::1]:9000?x#frag", &err), 0);
    assert_string_equal(u.host, "::1");
    assert_string_equal(u.port, "9000");
    assert_string_equal(u.path, "/?x");
    assert_string_equal(u.authority, "[::1]:9000");
}

static void test_url_rejects(void **state)
{
    (void)state;
    struct url u;
    const char *err = NULL;
    const char *bad[] = {"https://x/",   "127.0.0.1:80/",   "http://:80/",
                         "http://h:0/",  "http://h:65536/", "http://h:8a/",
                         "http://[::1/", "http://h/a b",    "http://h:/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        assert_int_equal(url_parse(&u, bad[i], &err), -1);
        assert_non_null(err);
    }
}

static void test_request_get(void **state)
{
    (void)state;
    struct url u;
    struct request r;
    const char *err = NULL;
    assert_int_equal(url_parse(&u, "http://127.0.0.1:8080/p", &err), 0);
    assert_int_equal(request_build(&r, &u, "GET", NULL, 0, 0, 0, 1, &err), 0);
    const char want[] = "GET /p HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
    assert_int_equal(r.len, sizeof(want) - 1);
    assert_memory_equal(r.wire, want, r.len);
    assert_false(r.head);
    request_deinit(&r);
    request_deinit(NULL);
}

static void test_request_post_headers_close_depth(void **state)
{
    (void)state;
    struct url u;
    struct request r;
    const char *err = NULL;
    const char *h[] = {"X-A: 1", "host: other"};
    assert_int_equal(url_parse(&u, "http://h/", &err), 0);
    assert_int_equal(request_build(&r, &u, "POST", h, 2, 5, 1, 3, &err), 0);
    const char want[] = "POST / HTTP/1.1\r\nX-A: 1\r\nhost: other\r\nContent-Length: 5\r\n"
                        "Connection: close\r\n\r\nxxxxx";
    assert_int_equal(r.len, sizeof(want) - 1);
    assert_int_equal(r.depth, 3);
    for (int i = 0; i < 3; i++) /* repeated so pipelined sends are one suffix */
        assert_memory_equal(r.wire + i * r.len, want, r.len);
    request_deinit(&r);
    assert_int_equal(request_build(&r, &u, "POST", NULL, 0, 0, 0, 1, &err), 0);
    assert_non_null(strstr(r.wire, "Content-Length: 0\r\n"));
    request_deinit(&r);
    assert_int_equal(request_build(&r, &u, "HEAD", NULL, 0, 0, 0, 1, &err), 0);
    assert_true(r.head);
    request_deinit(&r);
}

static void test_request_rejects(void **state)
{
    (void)state;
    struct url u;
    struct request r;
    const char *err = NULL;
    const char *no_colon[] = {"X-A 1"};
    const char *crlf[] = {"X-A: 1\r\nX-B: 2"};
    const char *bad_name[] = {"X A: 1"};
    assert_int_equal(url_parse(&u, "http://h/", &err), 0);
    assert_int_equal(request_build(&r, &u, "GE T", NULL, 0, 0, 0, 1, &err), -1);
    assert_int_equal(request_build(&r, &u, "", NULL, 0, 0, 0, 1, &err), -1);
    assert_int_equal(request_build(&r, &u, "GET", no_colon, 1, 0, 0, 1, &err), -1);
    assert_int_equal(request_build(&r, &u, "GET", crlf, 1, 0, 0, 1, &err), -1);
    assert_int_equal(request_build(&r, &u, "GET", bad_name, 1, 0, 0, 1, &err), -1);
    assert_null(r.wire);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_forms),
        cmocka_unit_test(test_url_rejects),
        cmocka_unit_test(test_request_get),
        cmocka_unit_test(test_request_post_headers_close_depth),
        cmocka_unit_test(test_request_rejects),
    };
    return cmocka_run_group_tests_name("request", tests, NULL, NULL);
}
