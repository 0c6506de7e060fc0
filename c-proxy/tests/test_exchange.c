/* Unit tests: exchange (the sans-I/O request state and its decisions).
 *
 * Twin: py-proxy/tests/test_exchange.py (same names, same cases). Heads are
 * parsed by the real parser (http1.c); the decisions run inside on_head as in
 * client.c, without sockets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exchange.h"
#include "http1.h"

static struct config cfg;

/* One parse: the parser, the exchange, what on_head decided. */
struct run {
    struct http1_parser p;
    struct exchange x;
    bool draining;            /* passed to the decision */
    int status;               /* classify: 0 or the error status */
    const char *why;          /* its reason */
    int ret;                  /* response framing: 0, 1, 2, -1 */
    struct http1_resp_opts o; /* response framing */
    enum http1_out mode;      /* response framing */
    unsigned req_flags;       /* response runs: the request's flags */
};

static int on_request_head(struct http1_parser *p)
{
    struct run *r = p->owner;
    if (exchange_keep_head(&r->x, &p->msg) == -1)
        return -1;
    r->status = exchange_classify_request(&r->x, p, &cfg, r->draining, &r->why);
    return r->status ? -1 : 0;
}

static int on_response_head(struct http1_parser *p)
{
    struct run *r = p->owner;
    r->ret = exchange_response_framing(&r->x, p, r->draining, &r->o, &r->mode, &r->why);
    return r->ret == -1 ? -1 : r->ret;
}

static void parse(struct run *r, llhttp_type_t type, const char *text)
{
    assert_int_equal(http1_parser_init(&r->p, type), 0);
    r->p.owner = r;
    r->p.on_head = type == HTTP_REQUEST ? on_request_head : on_response_head;
    size_t used = 0;
    http1_execute(&r->p, text, strlen(text), &used);
}

static void run_request(struct run *r, const char *text, bool draining)
{
    memset(r, 0, sizeof *r);
    exchange_init(&r->x);
    r->draining = draining;
    parse(r, HTTP_REQUEST, text);
}

/* A response to a request whose exchange flags are req_flags. */
static void run_response(struct run *r, unsigned req_flags, const char *text, bool draining)
{
    memset(r, 0, sizeof *r);
    exchange_init(&r->x);
    r->x.flags = req_flags;
    r->draining = draining;
    parse(r, HTTP_RESPONSE, text);
}

static void done(struct run *r)
{
    http1_parser_deinit(&r->p);
    exchange_deinit(&r->x);
}

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    cfg.limits.max_body_bytes = 1000;
    return 0;
}

#define KA_DONE (EXCHANGE_F_KEEPALIVE | EXCHANGE_F_REQ_DONE)

/* ---------------------------------------------------------------- classify */

static void test_classify_get_keepalive(void **state)
{
    (void)state;
    struct run r;
    run_request(&r, "GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_int_equal(r.status, 0);
    assert_true(r.x.flags & EXCHANGE_F_KEEPALIVE);
    assert_true(r.x.flags & EXCHANGE_F_IDEMPOTENT);
    assert_false(r.x.flags & (EXCHANGE_F_HTTP10 | EXCHANGE_F_HEAD_METHOD | EXCHANGE_F_UPGRADE |
                              EXCHANGE_F_EXPECT | EXCHANGE_F_CLOSE_AFTER));
    assert_string_equal(r.x.method, "GET");
    assert_string_equal(r.x.path, "/a?b");
    assert_int_equal(exchange_request_out_mode(&r.x), HTTP1_OUT_NONE);
    done(&r);
    run_request(&r, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false);
    assert_int_equal(r.status, 0);
    assert_false(r.x.flags & EXCHANGE_F_KEEPALIVE);
    done(&r);
}

static void test_classify_http10_close(void **state)
{
    (void)state;
    struct run r;
    run_request(&r, "GET / HTTP/1.0\r\n\r\n", false);
    assert_int_equal(r.status, 0);
    assert_true(r.x.flags & EXCHANGE_F_HTTP10);
    assert_false(r.x.flags & EXCHANGE_F_KEEPALIVE);
    done(&r);
    run_request(&r, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", false);
    assert_true(r.x.flags & EXCHANGE_F_HTTP10);
    assert_true(r.x.flags & EXCHANGE_F_KEEPALIVE);
    done(&r);
}

static void test_classify_head_method(void **state)
{
    (void)state;
    struct run r;
    run_request(&r, "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_int_equal(r.status, 0);
    assert_true(r.x.flags & EXCHANGE_F_HEAD_METHOD);
    assert_true(r.x.flags & EXCHANGE_F_IDEMPOTENT);
    assert_string_equal(r.x.method, "HEAD");
    done(&r);
}

static void test_classify_body_over_limit_413(void **state)
{
    (void)state;
    struct run r;
    run_request(&r, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", false);
    assert_int_equal(r.status, 413);
    assert_non_null(r.why);
    done(&r);
    run_request(&r, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", false);
    assert_int_equal(r.status, 0);
    assert_true(r.x.has_cl);
    assert_int_equal(r.x.cl, 1000);
    assert_false(r.x.flags & EXCHANGE_F_IDEMPOTENT);
    assert_int_equal(exchange_request_out_mode(&r.x), HTTP1_OUT_IDENTITY);
    done(&r);
    run_request(&r, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", false);
    assert_int_equal(r.status, 0);
    assert_true(r.x.chunked);
    assert_int_equal(exchange_request_out_mode(&r.x), HTTP1_OUT_CHUNKED);
    done(&r);
}

static void test_classify_upgrade(void **state)
{
    (void)state;
    struct run r;
    run_request(&r,
                "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                false);
    assert_int_equal(r.status, 0);
    assert_true(r.x.flags & EXCHANGE_F_UPGRADE);
    done(&r);
    /* Upgrade without "Connection: upgrade" is not an upgrade request */
    run_request(&r, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", false);
    assert_int_equal(r.status, 0);
    assert_false(r.x.flags & EXCHANGE_F_UPGRADE);
    done(&r);
}

static void test_classify_expect_continue(void **state)
{
    (void)state;
    struct run r;
    run_request(&r,
                "PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                false);
    assert_int_equal(r.status, 0);
    assert_true(r.x.flags & EXCHANGE_F_EXPECT);
    done(&r);
    /* nothing to wait for without a body */
    run_request(&r, "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", false);
    assert_false(r.x.flags & EXCHANGE_F_EXPECT);
    done(&r);
}

static void test_classify_draining_closes(void **state)
{
    (void)state;
    struct run r;
    run_request(&r, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", true);
    assert_int_equal(r.status, 0);
    assert_true(r.x.flags & EXCHANGE_F_CLOSE_AFTER);
    assert_true(exchange_closes_after(&r.x, false, false));
    done(&r);
}

static void test_classify_hash_key(void **state)
{
    (void)state;
    struct run r;
    cfg.balancer = CONFIG_BALANCER_HASH;
    cfg.hash_key = CONFIG_KEY_PATH;
    run_request(&r, "GET /a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_int_equal(r.x.key_len, 4);
    assert_memory_equal(r.x.key, "/a/b", 4);
    done(&r);
    cfg.hash_key = CONFIG_KEY_HEADER;
    cfg.hash_header = "X-User";
    run_request(&r, "GET / HTTP/1.1\r\nHost: x\r\nx-user:  alice \r\nX-User: bob\r\n\r\n", false);
    assert_int_equal(r.x.key_len, 5); /* the first one, trimmed */
    assert_memory_equal(r.x.key, "alice", 5);
    done(&r);
    /* absent or empty: no key (the client ip is hashed) */
    run_request(&r, "GET / HTTP/1.1\r\nHost: x\r\nX-User:\r\n\r\n", false);
    assert_null(r.x.key);
    assert_int_equal(r.x.key_len, 0);
    done(&r);
    cfg.hash_key = CONFIG_KEY_CLIENT_IP;
    run_request(&r, "GET /p HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_null(r.x.key);
    done(&r);
    cfg.hash_header = NULL;
}

/* ---------------------------------------------------------------- framing */

static void test_framing_content_length(void **state)
{
    (void)state;
    struct run r;
    run_response(&r, KA_DONE, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false);
    assert_int_equal(r.ret, 0);
    assert_int_equal(r.o.framing, HTTP1_FRAME_LENGTH);
    assert_int_equal(r.mode, HTTP1_OUT_IDENTITY);
    assert_false(r.o.close);
    assert_false(r.x.flags & EXCHANGE_F_CLOSE_AFTER);
    done(&r);
    /* the client asked to close */
    run_response(&r, EXCHANGE_F_REQ_DONE, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false);
    assert_true(r.o.close);
    assert_true(r.x.flags & EXCHANGE_F_CLOSE_AFTER);
    done(&r);
    /* draining: close */
    run_response(&r, KA_DONE, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true);
    assert_true(r.o.close);
    done(&r);
}

static void test_framing_chunked_http11(void **state)
{
    (void)state;
    struct run r;
    run_response(&r, KA_DONE, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false);
    assert_int_equal(r.o.framing, HTTP1_FRAME_CHUNKED);
    assert_int_equal(r.mode, HTTP1_OUT_CHUNKED);
    assert_false(r.o.close);
    done(&r);
    /* no framing from the upstream (close-delimited): re-chunked for HTTP/1.1 */
    run_response(&r, KA_DONE, "HTTP/1.1 200 OK\r\n\r\n", false);
    assert_int_equal(r.o.framing, HTTP1_FRAME_CHUNKED);
    assert_false(r.o.close);
    done(&r);
}

static void test_framing_http10_close_delimited(void **state)
{
    (void)state;
    struct run r;
    run_response(&r, KA_DONE | EXCHANGE_F_HTTP10,
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false);
    assert_int_equal(r.o.framing, HTTP1_FRAME_CLOSE);
    assert_int_equal(r.mode, HTTP1_OUT_IDENTITY);
    assert_true(r.o.close);
    assert_true(r.x.flags & EXCHANGE_F_CLOSE_AFTER);
    done(&r);
    /* HTTP/1.0 keep-alive with a length: "Connection: keep-alive" */
    run_response(&r, KA_DONE | EXCHANGE_F_HTTP10, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n",
                 false);
    assert_int_equal(r.o.framing, HTTP1_FRAME_LENGTH);
    assert_false(r.o.close);
    assert_true(r.o.keepalive);
    done(&r);
}

static void test_framing_no_body_head_204_304(void **state)
{
    (void)state;
    struct run r;
    run_response(&r, KA_DONE | EXCHANGE_F_HEAD_METHOD,
                 "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", false);
    assert_int_equal(r.ret, 1);
    assert_int_equal(r.o.framing, HTTP1_FRAME_NONE);
    assert_int_equal(r.mode, HTTP1_OUT_NONE);
    done(&r);
    static const char *const heads[] = {"HTTP/1.1 204 No Content\r\n\r\n",
                                        "HTTP/1.1 304 Not Modified\r\n\r\n"};
    for (size_t i = 0; i < 2; i++) {
        run_response(&r, KA_DONE, heads[i], false);
        assert_int_equal(r.ret, 0);
        assert_int_equal(r.o.framing, HTTP1_FRAME_NONE);
        assert_false(r.o.close);
        done(&r);
    }
}

static void test_framing_101_upgrade(void **state)
{
    (void)state;
    struct run r;
    const char *h =
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n";
    run_response(&r, KA_DONE | EXCHANGE_F_UPGRADE, h, false);
    assert_int_equal(r.ret, 2);
    assert_true(r.o.upgrade);
    assert_int_equal(r.o.framing, HTTP1_FRAME_NONE);
    done(&r);
    /* a 101 nobody asked for */
    run_response(&r, KA_DONE, h, false);
    assert_int_equal(r.ret, -1);
    assert_non_null(r.why);
    done(&r);
}

/* ---------------------------------------------------------------- reuse */

static void test_reusable_clean_exchange(void **state)
{
    (void)state;
    struct exchange x;
    memset(&x, 0, sizeof x);
    exchange_init(&x);
    x.flags = KA_DONE;
    assert_true(exchange_upstream_reusable(&x, true, 0, 0));
    exchange_deinit(&x);
}

static void test_not_reusable_dirty_eof_or_leftover(void **state)
{
    (void)state;
    struct exchange x;
    memset(&x, 0, sizeof x);
    exchange_init(&x);
    static const unsigned bad[] = {EXCHANGE_F_UP_DIRTY, EXCHANGE_F_UP_EOF, EXCHANGE_F_UP_WFAIL};
    for (size_t i = 0; i < 3; i++) {
        x.flags = KA_DONE | bad[i];
        assert_false(exchange_upstream_reusable(&x, true, 0, 0));
    }
    x.flags = KA_DONE;
    assert_false(exchange_upstream_reusable(&x, false, 0, 0)); /* upstream said close */
    assert_false(exchange_upstream_reusable(&x, true, 1, 0));  /* bytes after the response */
    assert_false(exchange_upstream_reusable(&x, true, 0, 1));  /* request not all sent */
    x.flags = EXCHANGE_F_KEEPALIVE;                            /* request not all read */
    assert_false(exchange_upstream_reusable(&x, true, 0, 0));
    exchange_deinit(&x);
}

/* ---------------------------------------------------------------- errors */

static void test_error_closes_4xx(void **state)
{
    (void)state;
    struct exchange x;
    memset(&x, 0, sizeof x);
    exchange_init(&x);
    x.flags = KA_DONE;
    static const int codes[] = {400, 408, 413, 431, 501, 505};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        assert_true(exchange_error_closes(&x, codes[i], false, false));
    exchange_deinit(&x);
}

static void test_error_502_keeps_keepalive(void **state)
{
    (void)state;
    struct exchange x;
    memset(&x, 0, sizeof x);
    exchange_init(&x);
    x.flags = KA_DONE;
    assert_false(exchange_error_closes(&x, 502, false, false));
    assert_false(exchange_error_closes(&x, 503, false, false));
    assert_false(exchange_error_closes(&x, 504, false, false));
    assert_true(exchange_error_closes(&x, 502, true, false)); /* draining */
    assert_true(exchange_error_closes(&x, 502, false, true)); /* client shut its side */
    x.flags = EXCHANGE_F_REQ_DONE;                            /* no keep-alive */
    assert_true(exchange_error_closes(&x, 502, false, false));
    exchange_deinit(&x);
}

static void test_error_closes_when_request_incomplete(void **state)
{
    (void)state;
    struct exchange x;
    memset(&x, 0, sizeof x);
    exchange_init(&x);
    x.flags = EXCHANGE_F_KEEPALIVE; /* body still coming */
    assert_true(exchange_error_closes(&x, 502, false, false));
    assert_true(exchange_error_closes(&x, 504, false, false));
    exchange_deinit(&x);
}

/* ---------------------------------------------------------------- attempts */

static const struct retry_budget roomy = {
    .percent = 20, .min_concurrent = 3, .requests_in_flight = 1, .retries_in_flight = 0};

static void test_attempt_failed_connect_retries_post(void **state)
{
    (void)state;
    struct run r;
    run_request(&r, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false);
    assert_false(r.x.flags & EXCHANGE_F_IDEMPOTENT);
    r.x.flags |= EXCHANGE_F_REQ_DONE | EXCHANGE_F_REPLAYABLE;
    r.x.attempts = 1;
    assert_int_equal(exchange_failure_phase(&r.x, false, false), RETRY_PHASE_CONNECT);
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_CONNECT, &roomy, 3), RETRY_GO);
    assert_int_equal(r.x.phase, RETRY_PHASE_CONNECT);
    r.x.attempts = 3; /* 1 + retries made */
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_CONNECT, &roomy, 3),
                     RETRY_NO_ATTEMPTS);
    done(&r);
}

static void test_attempt_failed_head_post_not_retried(void **state)
{
    (void)state;
    struct run r;
    run_request(&r, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false);
    r.x.flags |= EXCHANGE_F_REQ_DONE | EXCHANGE_F_REPLAYABLE;
    r.x.attempts = 1;
    assert_int_equal(exchange_failure_phase(&r.x, true, true), RETRY_PHASE_HEAD);
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_HEAD, &roomy, 3), RETRY_NO_UNSAFE);
    assert_int_equal(exchange_failure_phase(&r.x, true, false), RETRY_PHASE_SEND);
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_SEND, &roomy, 3), RETRY_NO_UNSAFE);
    done(&r);
    /* a GET is */
    run_request(&r, "GET /g HTTP/1.1\r\nHost: x\r\n\r\n", false);
    r.x.flags |= EXCHANGE_F_REQ_DONE | EXCHANGE_F_REPLAYABLE;
    r.x.attempts = 1;
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_HEAD, &roomy, 3), RETRY_GO);
    r.x.flags &= ~EXCHANGE_F_REPLAYABLE; /* the body outgrew the buffer */
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_HEAD, &roomy, 3), RETRY_NO_REPLAY);
    done(&r);
}

static void test_attempt_failed_head_post_with_key_retried(void **state)
{
    (void)state;
    struct run r;
    run_request(&r,
                "POST /p HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k1\r\n"
                "Content-Length: 0\r\n\r\n",
                false);
    assert_true(r.x.flags & EXCHANGE_F_IDEMPOTENT);
    r.x.flags |= EXCHANGE_F_REQ_DONE | EXCHANGE_F_REPLAYABLE;
    r.x.attempts = 1;
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_HEAD, &roomy, 3), RETRY_GO);
    done(&r);
}

static void test_attempt_failed_after_response_bytes(void **state)
{
    (void)state;
    struct run r;
    run_request(&r, "GET /g HTTP/1.1\r\nHost: x\r\n\r\n", false);
    r.x.flags |= EXCHANGE_F_REQ_DONE | EXCHANGE_F_REPLAYABLE | EXCHANGE_F_RESP_SENT;
    r.x.attempts = 1;
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_HEAD, &roomy, 3), RETRY_NO_RESPONSE);
    done(&r);
}

static void test_attempt_failed_budget_exhausted(void **state)
{
    (void)state;
    struct run r;
    run_request(&r, "GET /g HTTP/1.1\r\nHost: x\r\n\r\n", false);
    r.x.flags |= EXCHANGE_F_REQ_DONE | EXCHANGE_F_REPLAYABLE;
    r.x.attempts = 1;
    /* 3 retries in flight, 10 requests: max(3, 20% of 10 = 2) = 3 are allowed */
    struct retry_budget b = {
        .percent = 20, .min_concurrent = 3, .requests_in_flight = 10, .retries_in_flight = 3};
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_CONNECT, &b, 3), RETRY_NO_BUDGET);
    b.retries_in_flight = 2;
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_CONNECT, &b, 3), RETRY_GO);
    /* percent 0, min_concurrent 0: no retry ever */
    struct retry_budget off = {.requests_in_flight = 1};
    assert_int_equal(exchange_attempt_failed(&r.x, RETRY_PHASE_CONNECT, &off, 3), RETRY_NO_BUDGET);
    done(&r);
}

/* ---------------------------------------------------------------- lifecycle */

static void test_init_resets_request_state(void **state)
{
    (void)state;
    struct run r;
    /* a long target and a long request id: owned copies, freed by init */
    char req[1024];
    char longpath[300];
    memset(longpath, 'p', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    snprintf(req, sizeof req,
             "PUT %s HTTP/1.0\r\nX-Request-ID: "
             "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr\r\n"
             "Content-Length: 2\r\n\r\n",
             longpath);
    run_request(&r, req, true);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.x.path, longpath);
    assert_ptr_not_equal(r.x.path, r.x.path_buf);
    assert_ptr_not_equal(r.x.request_id, r.x.rid_buf);
    exchange_route_begin(&r.x, 300); /* a bitmap beyond the inline words */
    balancer_tried_add(&r.x.tried, 299);
    r.x.attempts = 2;
    r.x.status = 502;
    r.x.bytes_in = r.x.bytes_out = 7;
    r.x.flags |= EXCHANGE_F_RESP_SENT | EXCHANGE_F_LOGGED;
    exchange_init(&r.x);
    assert_int_equal(r.x.flags, 0);
    assert_null(r.x.method);
    assert_null(r.x.path);
    assert_null(r.x.request_id);
    assert_int_equal(r.x.status, 0);
    assert_int_equal(r.x.attempts, 0);
    assert_int_equal(r.x.bytes_in + r.x.bytes_out, 0);
    assert_false(r.x.chunked || r.x.has_cl);
    assert_ptr_equal(r.x.tried.bits, r.x.tried_small);
    assert_int_equal(r.x.tried.n, 0);
    done(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_classify_get_keepalive, setup),
        cmocka_unit_test_setup(test_classify_http10_close, setup),
        cmocka_unit_test_setup(test_classify_head_method, setup),
        cmocka_unit_test_setup(test_classify_body_over_limit_413, setup),
        cmocka_unit_test_setup(test_classify_upgrade, setup),
        cmocka_unit_test_setup(test_classify_expect_continue, setup),
        cmocka_unit_test_setup(test_classify_draining_closes, setup),
        cmocka_unit_test_setup(test_classify_hash_key, setup),
        cmocka_unit_test_setup(test_framing_content_length, setup),
        cmocka_unit_test_setup(test_framing_chunked_http11, setup),
        cmocka_unit_test_setup(test_framing_http10_close_delimited, setup),
        cmocka_unit_test_setup(test_framing_no_body_head_204_304, setup),
        cmocka_unit_test_setup(test_framing_101_upgrade, setup),
        cmocka_unit_test_setup(test_reusable_clean_exchange, setup),
        cmocka_unit_test_setup(test_not_reusable_dirty_eof_or_leftover, setup),
        cmocka_unit_test_setup(test_error_closes_4xx, setup),
        cmocka_unit_test_setup(test_error_502_keeps_keepalive, setup),
        cmocka_unit_test_setup(test_error_closes_when_request_incomplete, setup),
        cmocka_unit_test_setup(test_attempt_failed_connect_retries_post, setup),
        cmocka_unit_test_setup(test_attempt_failed_head_post_not_retried, setup),
        cmocka_unit_test_setup(test_attempt_failed_head_post_with_key_retried, setup),
        cmocka_unit_test_setup(test_attempt_failed_after_response_bytes, setup),
        cmocka_unit_test_setup(test_attempt_failed_budget_exhausted, setup),
        cmocka_unit_test_setup(test_init_resets_request_state, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
