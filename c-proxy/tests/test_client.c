/* Unit tests: client_deadline(), the one function that picks a client
 * connection's next deadline from its state (time injected via timestamps); and
 * rate limiting in the data path (contract 7), the same names and cases as
 * py-proxy/tests/test_client.py: a real worker loop, the client on one end of a
 * socketpair (its peer address given as 127.0.0.1), the upstream a listening
 * socket of the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "config.h"
#include "health.h"
#include "metrics.h"
#include "ratelimit.h"

static struct config cfg;

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    cfg.timeouts.connect_ms = 1000;
    cfg.timeouts.header_ms = 10000;
    cfg.timeouts.idle_ms = 60000;
    cfg.timeouts.read_ms = 30000;
    cfg.timeouts.write_ms = 20000;
    cfg.timeouts.total_ms = 60000;
    cfg.timeouts.queue_ms = 500;
    return 0;
}

static ev_tstamp deadline(const struct client *c, enum client_timeout *which)
{
    return client_deadline(c, &cfg, which);
}

static void test_idle_and_head(void **state)
{
    (void)state;
    struct client c;
    memset(&c, 0, sizeof c);
    enum client_timeout w;
    c.state = CLIENT_ST_IDLE;
    c.idle_since = 100.0;
    assert_float_equal(deadline(&c, &w), 160.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_IDLE);
    c.state = CLIENT_ST_HEAD;
    c.head_start = 130.0;
    assert_float_equal(deadline(&c, &w), 140.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_HEADER);
}

static void test_upstream_queue_connect_total(void **state)
{
    (void)state;
    struct client c;
    memset(&c, 0, sizeof c);
    enum client_timeout w;
    c.state = CLIENT_ST_UPSTREAM;
    c.req_start = 100.0;
    c.up_start = 100.2;
    c.uo.queued = true;
    assert_float_equal(deadline(&c, &w), 100.7, 1e-9);
    assert_int_equal(w, CLIENT_TO_QUEUE);
    c.uo.queued = false;
    c.conn = (struct upstream_conn *)&c; /* any non-NULL: a connect in progress */
    assert_float_equal(deadline(&c, &w), 101.2, 1e-9);
    assert_int_equal(w, CLIENT_TO_CONNECT);
    c.req_start = 100.2 - 59.5; /* total expires before connect */
    assert_float_equal(deadline(&c, &w), 100.7, 1e-9);
    assert_int_equal(w, CLIENT_TO_TOTAL);
}

static void test_forward_read_write_total(void **state)
{
    (void)state;
    struct client c;
    memset(&c, 0, sizeof c);
    enum client_timeout w;
    c.state = CLIENT_ST_FORWARD;
    c.conn = (struct upstream_conn *)&c;
    c.req_start = 0.0;
    c.up_last = 10.0;
    c.out_last = 5.0;
    /* awaiting the response: read gap from the last upstream byte */
    assert_float_equal(deadline(&c, &w), 40.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_READ);
    /* client progress (draining a paused response) also counts */
    c.out_last = 20.0;
    assert_float_equal(deadline(&c, &w), 50.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_READ);
    /* a stalled client write is earlier */
    c.out_pending = true;
    c.out_last = 12.0;
    assert_float_equal(deadline(&c, &w), 32.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_WRITE);
    /* a stalled upstream write */
    c.uout_pending = true;
    c.uout_last = 3.0;
    assert_float_equal(deadline(&c, &w), 23.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_WRITE);
    /* response complete: no read deadline; total remains */
    c.out_pending = c.uout_pending = false;
    c.x.flags = EXCHANGE_F_RESP_DONE;
    assert_float_equal(deadline(&c, &w), 60.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_TOTAL);
}

static void test_tunnel_drain_closed(void **state)
{
    (void)state;
    struct client c;
    memset(&c, 0, sizeof c);
    enum client_timeout w;
    c.state = CLIENT_ST_TUNNEL;
    c.idle_since = 1000.0;
    assert_float_equal(deadline(&c, &w), 1060.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_IDLE);
    c.state = CLIENT_ST_DRAIN;
    c.out_last = 7.0;
    assert_float_equal(deadline(&c, &w), 27.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_WRITE);
    c.flags = CLIENT_F_LINGER;
    c.linger_until = 9.0;
    assert_float_equal(deadline(&c, &w), 9.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_LINGER);
    c.state = CLIENT_ST_CLOSED;
    assert_float_equal(deadline(&c, &w), 0.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_NONE);
}

static void min_rate_cfg(void)
{
    cfg.timeouts.write_ms = 20000;
    cfg.timeouts.min_rate = 100;
    cfg.timeouts.min_rate_window_ms = 2000;
}

static void test_deadline_min_rate(void **state)
{
    (void)state;
    min_rate_cfg();
    struct client c;
    memset(&c, 0, sizeof c);
    enum client_timeout w;
    c.state = CLIENT_ST_FORWARD;
    c.conn = (struct upstream_conn *)&c;
    c.req_start = 0.0;
    c.up_last = c.out_last = 10.0;
    c.rin_start = 5.0;
    /* the request body is awaited: its window ends first */
    assert_float_equal(deadline(&c, &w), 7.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_RATE_IN);
    /* held up by the upstream: no body window */
    c.uout_pending = true;
    c.uout_last = 6.0;
    assert_float_equal(deadline(&c, &w), 26.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_WRITE);
    c.uout_pending = false;
    c.x.flags = EXCHANGE_F_REQ_DONE;
    assert_float_equal(deadline(&c, &w), 40.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_READ);
    /* the client does not take the response as fast as it comes */
    c.out_pending = true;
    c.out_last = 12.0;
    c.rout_start = 12.5;
    assert_float_equal(deadline(&c, &w), 14.5, 1e-9);
    assert_int_equal(w, CLIENT_TO_RATE_OUT);
    c.state = CLIENT_ST_DRAIN;
    assert_float_equal(deadline(&c, &w), 14.5, 1e-9);
    assert_int_equal(w, CLIENT_TO_RATE_OUT);
    c.rout_start = 40.0;
    assert_float_equal(deadline(&c, &w), 32.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_WRITE);
}

static void test_deadline_without_min_rate(void **state)
{
    (void)state;
    struct client c;
    memset(&c, 0, sizeof c);
    enum client_timeout w;
    c.state = CLIENT_ST_FORWARD;
    c.conn = (struct upstream_conn *)&c;
    c.req_start = 0.0;
    c.up_last = c.out_last = 10.0;
    c.rin_start = c.rout_start = 5.0;
    c.out_pending = true;
    assert_float_equal(deadline(&c, &w), 30.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_WRITE);
    c.state = CLIENT_ST_DRAIN;
    assert_float_equal(deadline(&c, &w), 30.0, 1e-9);
    assert_int_equal(w, CLIENT_TO_WRITE);
}

static void test_min_rate_window_check(void **state)
{
    (void)state;
    min_rate_cfg();
    struct client c;
    memset(&c, 0, sizeof c);
    /* 100 bytes/s over 2 s: 200 bytes per window */
    c.rin_mark = 1000;
    c.x.bytes_in = 1199;
    assert_true(client_rate_short(&c, &cfg, CLIENT_TO_RATE_IN));
    c.x.bytes_in = 1200;
    assert_false(client_rate_short(&c, &cfg, CLIENT_TO_RATE_IN));
    c.out_sent = 500;
    c.rout_mark = 300;
    assert_false(client_rate_short(&c, &cfg, CLIENT_TO_RATE_OUT));
    c.rout_mark = 301;
    assert_true(client_rate_short(&c, &cfg, CLIENT_TO_RATE_OUT));
}

/* ---------------------------------------------------------------- rate limiting */

#define GET "GET /x HTTP/1.1\r\nHost: example\r\n\r\n"
#define OK "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

struct rl_env {
    int lfd;                   /* the upstream: a listening socket */
    int ufd;                   /* the accepted upstream connection, -1 */
    struct worker w;           /* loop */
    struct ratelimit_table *t; /* the listener's table, NULL: no rate_limit */
    struct metrics_slot counters;
};

static struct rl_env R;

/* A worker whose listener is rate-limited (capacity > 0): one private table,
 * default limit; header: rate_limit.key header:NAME, else client_ip. */
static void rl_harness(unsigned capacity, double rate, const char *header)
{
    memset(&R, 0, sizeof R);
    R.ufd = -1;
    R.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_true(R.lfd != -1 && bind(R.lfd, (struct sockaddr *)&a, sizeof a) == 0 &&
                listen(R.lfd, 64) == 0 && getsockname(R.lfd, (struct sockaddr *)&a, &len) == 0);
    char yaml[512];
    int n = snprintf(yaml, sizeof yaml,
                     "upstreams:\n  - address: 127.0.0.1:%u\n    name: u1\n"
                     "retries: 0\nlog: {access: \"off\", level: error}\n%s%s%s",
                     (unsigned)ntohs(a.sin_port), capacity ? "rate_limit:\n  key: " : "",
                     capacity ? (header ? "header:" : "client_ip") : "",
                     capacity ? (header ? header : "") : "");
    char err[CONFIG_ERR_MAX];
    struct config *c = config_load_string("test.yaml", yaml, (size_t)n, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(log_configure(c, err, sizeof err), 0);
    struct cfgref *ref = cfgref_new(c);
    assert_int_equal(worker_init(&R.w, 0, NULL, NULL), 0);
    assert_int_equal(upstream_set_install(&R.w, ref), 0);
    cfgref_release(ref);
    if (capacity) {
        struct ratelimit_limit lim = {.capacity = capacity, .rate_per_sec = rate};
        R.t = ratelimit_table_new(64, &lim);
        R.w.rl = R.t;
    }
    R.w.metrics = &R.counters;
}

static int rl_teardown(void **state)
{
    (void)state;
    if (R.ufd != -1)
        close(R.ufd);
    upstream_set_uninstall(&R.w); /* the worker's ref; clients drop theirs when freed */
    worker_join_and_deinit(&R.w); /* aborts the clients, frees the graveyard and the loop */
    health_registry_free();
    ratelimit_table_free(R.t);
    close(R.lfd);
    return 0;
}

/* A client connection from 127.0.0.1: returns the test's end. */
static int rl_client(void)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(client_new(&R.w, sv[0], (struct sockaddr *)&peer), 0);
    return sv[1];
}

static void spin(void)
{
    for (int i = 0; i < 20; i++)
        ev_run(R.w.loop, EVRUN_NOWAIT);
}

static void sendall(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k > 0) {
            s += k;
            n -= (size_t)k;
        } else {
            spin();
        }
    }
    spin();
}

/* Everything fd has for us once the loop has nothing left to do: run the loop and
 * read until want (if not NULL) shows up, or 2 s. The bytes are NUL-ended in buf. */
static size_t take(int fd, char *buf, size_t cap, const char *want)
{
    size_t len = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        spin();
        ssize_t k = recv(fd, buf + len, cap - 1 - len, MSG_DONTWAIT);
        if (k > 0)
            len += (size_t)k;
        buf[len] = '\0';
        if (want ? strstr(buf, want) != NULL : k <= 0)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9 > 2.0)
            break;
        usleep(1000);
    }
    return len;
}

/* The upstream's side: the connection the proxy opened (accepted once), or -1. */
static int upstream_conn(void)
{
    for (int i = 0; i < 200 && R.ufd == -1; i++) {
        spin();
        R.ufd = accept4(R.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (R.ufd == -1)
            usleep(1000);
    }
    return R.ufd;
}

/* No connection was made to the upstream since the last accept. */
static bool no_new_connect(void)
{
    spin();
    int fd = accept4(R.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd != -1) {
        close(fd);
        return false;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK;
}

static bool is_open(int fd)
{
    char b;
    spin();
    ssize_t k = recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);
    return k == -1 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void error_429(char *out, size_t cap, const char *rid, unsigned limit, unsigned remaining,
                      const char *extra)
{
    static const char body[] = "{\"code\":429,\"message\":\"Too Many Requests\"}";
    snprintf(out, cap,
             "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nX-Request-ID: %s\r\n%sRateLimit-Limit: %u\r\n"
             "RateLimit-Remaining: %u\r\n\r\n%s",
             sizeof body - 1, rid, extra, limit, remaining, body);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void test_ratelimit_429_before_routing(void **state)
{
    (void)state;
    char buf[8192], want[512];
    rl_harness(2, 0, NULL);
    int c = rl_client();
    for (unsigned left = 1; left + 1 > 0; left--) {
        sendall(c, GET);
        int u = upstream_conn();
        assert_true(u != -1);
        take(u, buf, sizeof buf, "\r\n\r\n");
        assert_null(strstr(buf, "RateLimit")); /* the upstream never sees the headers */
        sendall(u, OK);
        take(c, buf, sizeof buf, "ok");
        snprintf(want, sizeof want,
                 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nRateLimit-Limit: 2\r\n"
                 "RateLimit-Remaining: %u\r\n\r\nok",
                 left);
        assert_string_equal(buf, want);
        if (left == 0)
            break;
    }
    /* empty: answered by the proxy, no upstream picked, no connect, keep-alive kept */
    sendall(c, "GET /x HTTP/1.1\r\nHost: example\r\nX-Request-ID: r1\r\n\r\n");
    take(c, buf, sizeof buf, "Too Many Requests\"}");
    error_429(want, sizeof want, "r1", 2, 0, ""); /* rate 0: no Retry-After, no Reset */
    assert_string_equal(buf, want);
    assert_true(no_new_connect());
    assert_int_equal(take(R.ufd, buf, sizeof buf, NULL), 0); /* nothing reached it */
    assert_true(is_open(c));
    assert_int_equal(R.w.requests_in_flight, 0);
    /* pipelined limited requests are answered in order on the same connection */
    sendall(c, GET GET);
    take(c, buf, sizeof buf, NULL);
    assert_int_equal(count(buf, "HTTP/1.1 429 "), 2);
    assert_true(no_new_connect());
    assert_int_equal(R.counters.cell[METRICS_RL_ALLOWED], 2);
    assert_int_equal(R.counters.cell[METRICS_RL_LIMITED], 3);
    close(c);
}

static void test_ratelimit_429_retry_after_and_reset(void **state)
{
    (void)state;
    char buf[8192];
    rl_harness(1, 1e-9, NULL); /* one token per ~31 years: stable values for the test */
    int c = rl_client();
    sendall(c, GET);
    sendall(upstream_conn(), OK);
    take(c, buf, sizeof buf, "ok");
    assert_non_null(strstr(buf, "RateLimit-Reset: 1000000000\r\n\r\nok"));
    sendall(c, "GET /x HTTP/1.1\r\nHost: example\r\nX-Request-ID: r2\r\n\r\n");
    take(c, buf, sizeof buf, "}");
    assert_true(strncmp(buf, "HTTP/1.1 429 ", 13) == 0);
    assert_non_null(
        strstr(buf, "X-Request-ID: r2\r\nRetry-After: 1000000000\r\nRateLimit-Limit: 1\r\n"));
    assert_non_null(strstr(buf, "RateLimit-Remaining: 0\r\nRateLimit-Reset: 1000000000\r\n\r\n"));
    close(c);
}

static void test_ratelimit_headers_on_every_response(void **state)
{
    (void)state;
    char buf[8192];
    rl_harness(5, 0, NULL);
    int c = rl_client();
    /* an upstream's own RateLimit-* are replaced by the proxy's */
    sendall(c, GET);
    sendall(upstream_conn(), "HTTP/1.1 404 Not Found\r\nRateLimit-Limit: 99\r\n"
                             "Connection: close\r\nContent-Length: 0\r\n\r\n");
    take(c, buf, sizeof buf, "\r\n\r\n");
    assert_int_equal(count(buf, "RateLimit-Limit"), 1);
    assert_non_null(strstr(buf, "RateLimit-Limit: 5\r\nRateLimit-Remaining: 4\r\n\r\n"));
    /* a 502 the proxy answers (the connect is refused) after the take */
    close(R.ufd);
    R.ufd = -1;
    close(R.lfd); /* nothing listens any more */
    R.lfd = -1;
    sendall(c, GET);
    take(c, buf, sizeof buf, "}");
    assert_true(strncmp(buf, "HTTP/1.1 502 ", 13) == 0);
    assert_non_null(strstr(buf, "RateLimit-Limit: 5\r\nRateLimit-Remaining: 3\r\n\r\n"));
    /* a 400 refused before any take: the bucket as it stands, nothing taken */
    int c2 = rl_client();
    sendall(c2, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    take(c2, buf, sizeof buf, "}");
    assert_true(strncmp(buf, "HTTP/1.1 400 ", 13) == 0);
    assert_non_null(
        strstr(buf, "RateLimit-Limit: 5\r\nRateLimit-Remaining: 3\r\nConnection: close\r\n"));
    assert_int_equal(R.counters.cell[METRICS_RL_ALLOWED], 2);
    close(c);
    close(c2);
}

static void test_ratelimit_header_key_falls_back_to_client_ip(void **state)
{
    (void)state;
    char buf[8192];
    rl_harness(1, 0, "X-API-Key");
    int c = rl_client();
    sendall(c, "GET / HTTP/1.1\r\nHost: a\r\nX-API-Key: alice\r\n\r\n");
    int u = upstream_conn(); /* pooled after each answer: every forwarded request uses it */
    take(u, buf, sizeof buf, "\r\n\r\n");
    sendall(u, OK);
    take(c, buf, sizeof buf, "ok");
    assert_true(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
    sendall(c, "GET / HTTP/1.1\r\nHost: a\r\nX-API-Key: bob\r\n\r\n");
    take(u, buf, sizeof buf, "\r\n\r\n");
    sendall(u, OK);
    take(c, buf, sizeof buf, "ok");
    assert_true(strncmp(buf, "HTTP/1.1 200 ", 13) == 0); /* one bucket per key value */
    sendall(c, "GET / HTTP/1.1\r\nHost: a\r\nX-API-Key: alice\r\n\r\n");
    take(c, buf, sizeof buf, "}");
    assert_true(strncmp(buf, "HTTP/1.1 429 ", 13) == 0);
    sendall(c, GET); /* no header: the client address's bucket */
    take(u, buf, sizeof buf, "\r\n\r\n");
    sendall(u, OK);
    take(c, buf, sizeof buf, "ok");
    assert_true(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
    sendall(c, "GET / HTTP/1.1\r\nHost: a\r\nX-API-Key:\r\n\r\n"); /* empty: the address */
    take(c, buf, sizeof buf, "}");
    assert_true(strncmp(buf, "HTTP/1.1 429 ", 13) == 0);
    assert_int_equal(ratelimit_count(R.t), 3);
    close(c);
}

static void test_no_ratelimit_headers_without_rate_limit(void **state)
{
    (void)state;
    char buf[8192];
    rl_harness(0, 0, NULL);
    int c = rl_client();
    sendall(c, GET);
    sendall(upstream_conn(), "HTTP/1.1 200 OK\r\nRateLimit-Limit: 9\r\nContent-Length: 0\r\n\r\n");
    take(c, buf, sizeof buf, "\r\n\r\n");
    assert_non_null(strstr(buf, "RateLimit-Limit: 9\r\n")); /* passed through untouched */
    close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_idle_and_head, setup),
        cmocka_unit_test_setup(test_upstream_queue_connect_total, setup),
        cmocka_unit_test_setup(test_forward_read_write_total, setup),
        cmocka_unit_test_setup(test_tunnel_drain_closed, setup),
        cmocka_unit_test_setup(test_deadline_min_rate, setup),
        cmocka_unit_test_setup(test_deadline_without_min_rate, setup),
        cmocka_unit_test_setup(test_min_rate_window_check, setup),
        cmocka_unit_test_teardown(test_ratelimit_429_before_routing, rl_teardown),
        cmocka_unit_test_teardown(test_ratelimit_429_retry_after_and_reset, rl_teardown),
        cmocka_unit_test_teardown(test_ratelimit_headers_on_every_response, rl_teardown),
        cmocka_unit_test_teardown(test_ratelimit_header_key_falls_back_to_client_ip, rl_teardown),
        cmocka_unit_test_teardown(test_no_ratelimit_headers_without_rate_limit, rl_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
