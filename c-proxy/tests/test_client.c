/* Unit tests: client_deadline(), the one function that picks a client
 * connection's next deadline from its state (time injected via timestamps). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "client.h"
#include "config.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_idle_and_head, setup),
        cmocka_unit_test_setup(test_upstream_queue_connect_total, setup),
        cmocka_unit_test_setup(test_forward_read_write_total, setup),
        cmocka_unit_test_setup(test_tunnel_drain_closed, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
