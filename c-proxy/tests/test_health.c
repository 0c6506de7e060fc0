/* Unit tests of health.c. Twin: py-proxy/tests/test_health.py (same names, same cases).
 * Time is injected: every call gets `now` (seconds). The active checker is tested on
 * its state machine (health_check_result) and once over a real loopback socket. */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "health.h"

#define TWO_UP                                                                                     \
    "upstreams:\n  - {address: 127.0.0.1:9001, name: u1}\n  - {address: 127.0.0.1:9002}\n"

static struct config *load(const char *text)
{
    char err[CONFIG_ERR_MAX] = "";
    struct config *cfg = config_load_string("t.yaml", text, strlen(text), err, sizeof err);

    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

/* u1 of TWO_UP + extra, configured. */
static struct health_state *state_with(const char *extra)
{
    char text[1024];
    struct config *cfg;
    struct health_state *h = health_state_get("u1", "127.0.0.1:9001");

    snprintf(text, sizeof text, TWO_UP "%s", extra);
    cfg = load(text);
    assert_non_null(h);
    health_configure(h, cfg);
    config_free(cfg);
    return h;
}

static void fail_at(struct health_state *h, double now)
{
    health_attempt_begin(h, now);
    health_attempt_end(h, HEALTH_FAIL, "connect_refused", now);
}

static int teardown(void **state)
{
    (void)state;
    health_registry_free();
    return 0;
}

/* max_fails 3, fail_timeout 10s: down at 102 until 112. */
static struct health_state *down_at_102(void)
{
    struct health_state *h = state_with("health: {max_fails: 3, fail_timeout: 10s}\n");

    fail_at(h, 100);
    fail_at(h, 101);
    fail_at(h, 102);
    assert_false(health_is_healthy(h));
    return h;
}

static void test_passive_marks_down_after_max_fails(void **state)
{
    struct health_state *h = state_with("health: {max_fails: 3, fail_timeout: 10s}\n");

    (void)state;
    assert_string_equal(health_last_error(h), "");
    fail_at(h, 100);
    fail_at(h, 101);
    assert_true(health_available(h, 101));
    assert_true(health_is_healthy(h));
    fail_at(h, 102);
    assert_false(health_is_healthy(h));
    assert_false(health_available(h, 102));
    assert_false(health_available(h, 111.999));
    assert_true(health_available(h, 112)); /* the probe is free */
    assert_string_equal(health_last_error(h), "connect_refused");
}

static void test_passive_failures_outside_window_do_not_count(void **state)
{
    struct health_state *h = state_with("health: {max_fails: 3, fail_timeout: 10s}\n");

    (void)state;
    fail_at(h, 100);
    fail_at(h, 105);
    fail_at(h, 110.5); /* window 100..110 closed: a new one opens */
    assert_true(health_is_healthy(h));
    fail_at(h, 115);
    assert_true(health_is_healthy(h));
    fail_at(h, 120.5); /* third in 110.5..120.5 */
    assert_false(health_is_healthy(h));
}

static void test_passive_probe_after_fail_timeout(void **state)
{
    struct health_state *h = down_at_102();

    (void)state;
    assert_true(health_available(h, 112));
    health_attempt_begin(h, 112); /* claims the probe */
    assert_false(health_available(h, 112));
    assert_false(health_available(h, 150));
    health_attempt_end(h, HEALTH_NEUTRAL, NULL, 113); /* client went away: probe freed */
    assert_false(health_is_healthy(h));
    assert_true(health_available(h, 113));
    /* a late result of an attempt started before the mark changes nothing */
    health_registry_free();
    h = down_at_102();
    health_attempt_end(h, HEALTH_OK, NULL, 105);
    assert_false(health_is_healthy(h));
    assert_false(health_available(h, 105));
}

static void test_passive_probe_success_brings_up(void **state)
{
    struct health_state *h = down_at_102();

    (void)state;
    health_attempt_begin(h, 112);
    health_attempt_end(h, HEALTH_OK, NULL, 112.5);
    assert_true(health_is_healthy(h));
    assert_true(health_available(h, 112.5));
    /* counting starts over */
    fail_at(h, 113);
    fail_at(h, 114);
    assert_true(health_is_healthy(h));
}

static void test_passive_probe_failure_keeps_down(void **state)
{
    struct health_state *h = down_at_102();

    (void)state;
    health_attempt_begin(h, 112);
    health_attempt_end(h, HEALTH_FAIL, "read_timeout", 112.5);
    assert_false(health_is_healthy(h));
    assert_false(health_available(h, 113));
    assert_false(health_available(h, 122.4));
    assert_true(health_available(h, 122.5));
    assert_string_equal(health_last_error(h), "read_timeout");
}

static void test_max_fails_zero_disables_passive(void **state)
{
    struct health_state *h = state_with("health: {max_fails: 0}\n");

    (void)state;
    for (int i = 0; i < 100; i++)
        fail_at(h, 100 + i * 0.01);
    assert_true(health_is_healthy(h));
    assert_true(health_available(h, 101));
    /* a reload that turns passive off brings a passively down upstream back */
    health_registry_free();
    h = down_at_102();
    h = state_with("health: {max_fails: 0}\n");
    assert_true(health_is_healthy(h));
}

static void test_single_upstream_never_down(void **state)
{
    struct config *one = load("upstreams: [{address: 127.0.0.1:9001, name: u1}]\n"
                              "health: {max_fails: 1, check: {fall: 1}}\n");
    struct health_state *h = health_state_get("u1", "127.0.0.1:9001");

    (void)state;
    health_configure(h, one);
    for (int i = 0; i < 10; i++) {
        fail_at(h, 100 + i);
        health_check_result(h, false, "check_timeout", 100 + i);
    }
    assert_true(health_is_healthy(h));
    assert_true(health_available(h, 200));
    /* down in a group of two, then the group shrinks to one: up again */
    health_registry_free();
    h = down_at_102();
    health_configure(h, one);
    assert_true(health_is_healthy(h));
    assert_true(health_available(h, 103));
    config_free(one);
}

static void test_active_fall_marks_down(void **state)
{
    struct health_state *h = state_with("health: {check: {rise: 2, fall: 2}}\n");

    (void)state;
    health_check_result(h, false, "check_bad_status", 100);
    assert_true(health_is_healthy(h));
    health_check_result(h, true, NULL, 102); /* a success resets the count */
    health_check_result(h, false, "check_bad_status", 104);
    assert_true(health_is_healthy(h));
    health_check_result(h, false, "check_timeout", 106);
    assert_false(health_is_healthy(h));
    assert_false(health_available(h, 106));
    assert_false(health_available(h, 1e6)); /* no passive probe for an active verdict */
    assert_string_equal(health_last_error(h), "check_timeout");
}

static void test_active_rise_brings_up(void **state)
{
    struct health_state *h = state_with("health: {check: {rise: 2, fall: 1}}\n");

    (void)state;
    health_check_result(h, false, "check_connect_failed", 100);
    assert_false(health_is_healthy(h));
    health_check_result(h, true, NULL, 102);
    assert_false(health_is_healthy(h));
    health_check_result(h, false, "check_connect_failed", 104); /* resets the rise count */
    health_check_result(h, true, NULL, 106);
    assert_false(health_is_healthy(h));
    health_check_result(h, true, NULL, 108);
    assert_true(health_is_healthy(h));
    assert_true(health_available(h, 108));
}

static void test_drain_not_available(void **state)
{
    struct health_state *h = state_with("");

    (void)state;
    assert_false(health_is_drained(h));
    health_set_drain(h, true);
    assert_true(health_is_drained(h));
    assert_false(health_available(h, 100));
    assert_true(health_is_healthy(h)); /* drained is not down */
    health_set_drain(h, false);
    assert_true(health_available(h, 100));
    /* NULL: always healthy, calls are no-ops */
    assert_true(health_available(NULL, 100));
    assert_true(health_is_healthy(NULL));
    assert_false(health_is_drained(NULL));
    health_attempt_begin(NULL, 100);
    health_attempt_end(NULL, HEALTH_FAIL, "connect_refused", 100);
}

static void test_registry_shared_by_name(void **state)
{
    struct health_state *a = health_state_get("u1", "127.0.0.1:9001");
    struct health_state *b = health_state_get("u1", "127.0.0.1:9009");
    struct health_state *c = health_state_get("u2", "127.0.0.1:9002");

    (void)state;
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    assert_string_equal(health_name(a), "u1");
    /* a reload keeps the name, so it keeps the verdict */
    down_at_102();
    a = health_state_get("u1", "127.0.0.1:9001");
    assert_false(health_is_healthy(a));
    assert_true(health_is_healthy(c));
}

/* ---- the active checker over a real loopback socket ---- */

struct responder {
    int lfd;           /* listening socket */
    int cfd;           /* accepted connection, or -1 */
    ev_io accept_w;    /* on lfd */
    ev_io read_w;      /* on cfd */
    const char *reply; /* what to answer */
    char req[512];     /* the last request read */
    int requests;      /* requests answered */
};

static void responder_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct responder *r = (struct responder *)((char *)w - offsetof(struct responder, read_w));
    ssize_t n = recv(r->cfd, r->req, sizeof r->req - 1, 0);

    (void)revents;
    if (n > 0)
        r->req[n] = '\0';
    if (n > 0 && strstr(r->req, "\r\n\r\n") == NULL)
        return;
    if (n > 0 && send(r->cfd, r->reply, strlen(r->reply), MSG_NOSIGNAL) > 0)
        r->requests++;
    ev_io_stop(loop, w);
    close(r->cfd);
    r->cfd = -1;
}

static void responder_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct responder *r = (struct responder *)((char *)w - offsetof(struct responder, accept_w));

    (void)revents;
    if (r->cfd != -1)
        return;
    r->cfd = accept(r->lfd, NULL, NULL);
    if (r->cfd == -1)
        return;
    ev_io_init(&r->read_w, responder_on_read, r->cfd, EV_READ);
    ev_io_start(loop, &r->read_w);
}

static void on_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    *(bool *)w->data = true;
}

/* Run loop until h's health is want (or a 10 s guard fires: a failure). */
static void run_until(struct ev_loop *loop, struct health_state *h, bool want)
{
    bool expired = false;
    ev_timer guard;

    ev_timer_init(&guard, on_guard, 10., 0.);
    guard.data = &expired;
    ev_timer_start(loop, &guard);
    while (health_is_healthy(h) != want && !expired)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &guard);
    assert_false(expired);
}

/* A loopback port nothing listens on (bound, then closed): connect is refused. */
static int dead_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd != -1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static void test_checker_probes_loopback(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct responder r = {.cfd = -1, .reply = "HTTP/1.1 204 No Content\r\n\r\n"};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    char text[512], want[128];
    struct config *cfg;
    struct health_state *states[2];
    struct health_checker *hc;
    int dead;

    (void)state;
    r.lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(r.lfd != -1);
    assert_int_equal(bind(r.lfd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(r.lfd, 8), 0);
    assert_int_equal(getsockname(r.lfd, (struct sockaddr *)&sin, &len), 0);
    dead = dead_port();
    snprintf(text, sizeof text,
             "upstreams:\n  - {address: 127.0.0.1:%d, name: u1}\n  - {address: "
             "127.0.0.1:%d, name: u2}\n"
             "health: {check: {path: /hc?x=1, interval: 20ms, timeout: 2s, rise: 1, fall: 1}}\n",
             ntohs(sin.sin_port), dead);
    cfg = load(text);
    states[0] = health_state_get("u1", cfg->upstreams[0].addr.text);
    states[1] = health_state_get("u2", cfg->upstreams[1].addr.text);
    health_configure(states[0], cfg);
    health_configure(states[1], cfg);
    health_check_result(states[0], false, "check_timeout", 0); /* start u1 down */
    ev_io_init(&r.accept_w, responder_on_accept, r.lfd, EV_READ);
    ev_io_start(loop, &r.accept_w);
    hc = health_checker_start(loop, cfg, states, 2);
    assert_non_null(hc);

    run_until(loop, states[0], true); /* 204 brings u1 up */
    snprintf(want, sizeof want,
             "GET /hc?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n",
             ntohs(sin.sin_port));
    assert_string_equal(r.req, want);
    run_until(loop, states[1], false); /* refused */
    assert_string_equal(health_last_error(states[1]), "check_connect_failed");

    r.reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
    run_until(loop, states[0], false);
    assert_string_equal(health_last_error(states[0]), "check_bad_status");
    r.reply = "HTTP/1.0 302 Found\r\n\r\n";
    run_until(loop, states[0], true);
    r.reply = "garbage\r\n\r\n";
    run_until(loop, states[0], false);
    assert_string_equal(health_last_error(states[0]), "check_bad_response");

    health_checker_stop(hc);
    health_checker_stop(NULL);
    config_free(cfg);
    cfg = load(TWO_UP); /* no health.check: nothing to run */
    assert_null(health_checker_start(loop, cfg, states, 2));
    ev_io_stop(loop, &r.accept_w);
    if (r.cfd != -1) {
        ev_io_stop(loop, &r.read_w);
        close(r.cfd);
    }
    close(r.lfd);
    config_free(cfg);
    ev_loop_destroy(loop);
}

/* C only: the per-upstream counters every worker thread keeps in the registry
 * entry (GET /upstreams; the Python twin reports worker 0's upstream set). */
static void test_stats_shared_by_name(void **state)
{
    (void)state;
    struct health_state *a = health_state_get("s1", "127.0.0.1:1");
    struct health_state *b = health_state_get("s1", "127.0.0.1:1");
    struct health_stats st;
    health_stats_add(a, HEALTH_STAT_REQUESTS, 1);
    health_stats_add(b, HEALTH_STAT_REQUESTS, 1);
    health_stats_add(a, HEALTH_STAT_ACTIVE, 1);
    health_stats_add(a, HEALTH_STAT_IDLE, 2);
    health_stats_add(b, HEALTH_STAT_FAILS, 1);
    health_stats_get(b, &st);
    assert_int_equal(st.requests, 2);
    assert_int_equal(st.active, 1);
    assert_int_equal(st.idle, 2);
    assert_int_equal(st.fails, 1);
    health_stats_add(a, HEALTH_STAT_ACTIVE, -2); /* a reader never sees a gauge below 0 */
    health_stats_get(a, &st);
    assert_int_equal(st.active, 0);
    health_stats_add(NULL, HEALTH_STAT_REQUESTS, 1); /* no state: no-op, zeros */
    health_stats_get(NULL, &st);
    assert_int_equal(st.requests, 0);
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_passive_marks_down_after_max_fails, teardown),
        cmocka_unit_test_teardown(test_passive_failures_outside_window_do_not_count, teardown),
        cmocka_unit_test_teardown(test_passive_probe_after_fail_timeout, teardown),
        cmocka_unit_test_teardown(test_passive_probe_success_brings_up, teardown),
        cmocka_unit_test_teardown(test_passive_probe_failure_keeps_down, teardown),
        cmocka_unit_test_teardown(test_max_fails_zero_disables_passive, teardown),
        cmocka_unit_test_teardown(test_single_upstream_never_down, teardown),
        cmocka_unit_test_teardown(test_active_fall_marks_down, teardown),
        cmocka_unit_test_teardown(test_active_rise_brings_up, teardown),
        cmocka_unit_test_teardown(test_drain_not_available, teardown),
        cmocka_unit_test_teardown(test_registry_shared_by_name, teardown),
        cmocka_unit_test_teardown(test_stats_shared_by_name, teardown),
        cmocka_unit_test_teardown(test_checker_probes_loopback, teardown),
    };
    return cmocka_run_group_tests_name("health", tests, NULL, NULL);
}
