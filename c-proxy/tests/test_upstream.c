/* Unit tests: upstream (connections, the keep-alive pool, the wait queue).
 *
 * Twin: py-proxy/tests/test_upstream.py (same names, same cases). Real loopback
 * sockets against a listening socket of the test (the kernel completes the
 * handshakes from its backlog), a real worker loop, and fake owners: the module
 * reaches its users only through struct upstream_owner_ops.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "upstream.h"
#include "worker.h"

struct fake_owner {
    struct upstream_owner uo;
    int io;    /* on_io calls */
    int slots; /* on_slot calls */
};

static void fake_on_io(struct upstream_owner *o, int revents)
{
    (void)revents;
    container_of(o, struct fake_owner, uo)->io++;
}

static void fake_on_slot(struct upstream_owner *o)
{
    container_of(o, struct fake_owner, uo)->slots++;
}

static const struct upstream_owner_ops fake_ops = {.on_io = fake_on_io, .on_slot = fake_on_slot};

struct env {
    int lfd;            /* the "upstream": a listening socket */
    struct worker w;    /* loop, graveyard */
    struct upstream *u; /* the one upstream of the set */
    struct fake_owner o[4];
};

static struct env E;

static int env_up(unsigned max_conns, unsigned idle_conns)
{
    memset(&E, 0, sizeof E);
    E.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (E.lfd == -1 || bind(E.lfd, (struct sockaddr *)&a, sizeof a) == -1 ||
        listen(E.lfd, 64) == -1 || getsockname(E.lfd, (struct sockaddr *)&a, &len) == -1)
        return -1;
    char yaml[512];
    int n = snprintf(yaml, sizeof yaml,
                     "listen: 127.0.0.1:1\n"
                     "upstreams:\n  - address: 127.0.0.1:%u\n    name: u1\n"
                     "limits:\n  upstream_max_connections: %u\n"
                     "  upstream_idle_connections: %u\n"
                     "log: {access: \"off\"}\n",
                     (unsigned)ntohs(a.sin_port), max_conns, idle_conns);
    char err[CONFIG_ERR_MAX];
    struct config *cfg = config_load_string("test.yaml", yaml, (size_t)n, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    struct cfgref *ref = cfgref_new(cfg);
    if (worker_init(&E.w, 0, NULL, NULL) == -1 || upstream_set_install(&E.w, ref) == -1)
        return -1;
    cfgref_release(ref); /* the set holds its own */
    E.u = &E.w.set->ups[0];
    for (size_t i = 0; i < 4; i++)
        upstream_owner_init(&E.o[i].uo, &fake_ops);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    return env_up(256, 8);
}

static int setup_max1(void **state)
{
    (void)state;
    return env_up(1, 8);
}

static int setup_idle1(void **state)
{
    (void)state;
    return env_up(256, 1);
}

static int teardown(void **state)
{
    (void)state;
    upstream_set_uninstall(&E.w); /* idle conns close; busy ones were closed by the test */
    worker_join_and_deinit(&E.w); /* frees the graveyard, the loop */
    health_registry_free();
    close(E.lfd);
    return 0;
}

/* Run the loop until o saw an io event (the connect finished). */
static void wait_io(struct fake_owner *o)
{
    for (int i = 0; i < 1000 && o->io == 0; i++)
        ev_run(E.w.loop, EVRUN_ONCE);
    assert_true(o->io > 0);
}

/* A BUSY conn for owner o (a new connect). */
static struct upstream_conn *busy_conn(struct fake_owner *o)
{
    struct upstream_conn *conn = NULL;
    const char *reason = NULL;
    assert_int_equal(upstream_acquire(E.u, &o->uo, &conn, &reason), UPSTREAM_CONNECTING);
    assert_non_null(conn);
    assert_int_equal(conn->state, UPC_CONNECTING);
    wait_io(o);
    assert_int_equal(upstream_connect_done(conn, &reason), 0);
    assert_int_equal(conn->state, UPC_BUSY);
    return conn;
}

static void test_acquire_connects_when_pool_empty(void **state)
{
    (void)state;
    struct upstream_conn *conn = busy_conn(&E.o[0]);
    assert_ptr_equal(conn->owner, &E.o[0].uo);
    assert_int_equal(E.u->n_open, 1);
    assert_int_equal(E.u->n_idle, 0);
    upstream_close(conn);
    assert_int_equal(E.u->n_open, 0);
}

static void test_release_pools_reusable(void **state)
{
    (void)state;
    struct upstream_conn *conn = busy_conn(&E.o[0]);
    upstream_release(conn, true);
    assert_int_equal(conn->state, UPC_IDLE);
    assert_int_equal(E.u->n_idle, 1);
    assert_int_equal(E.u->n_open, 0);
    assert_null(conn->owner);
    /* the next acquire takes it from the pool */
    struct upstream_conn *again = NULL;
    const char *reason = NULL;
    assert_int_equal(upstream_acquire(E.u, &E.o[1].uo, &again, &reason), UPSTREAM_READY);
    assert_ptr_equal(again, conn);
    assert_int_equal(again->state, UPC_BUSY);
    assert_ptr_equal(again->owner, &E.o[1].uo);
    assert_int_equal(again->exchanges, 1);
    upstream_close(again);
}

static void test_release_closes_not_reusable(void **state)
{
    (void)state;
    struct upstream_conn *conn = busy_conn(&E.o[0]);
    upstream_release(conn, false);
    assert_int_equal(conn->state, UPC_CLOSED);
    assert_int_equal(conn->fd, -1);
    assert_int_equal(E.u->n_idle, 0);
    assert_int_equal(E.u->n_open, 0);
}

static void test_acquire_reuses_most_recent_first(void **state)
{
    (void)state;
    struct upstream_conn *a = busy_conn(&E.o[0]);
    struct upstream_conn *b = busy_conn(&E.o[1]);
    upstream_release(a, true);
    upstream_release(b, true);
    assert_int_equal(E.u->n_idle, 2);
    struct upstream_conn *got = NULL;
    const char *reason = NULL;
    assert_int_equal(upstream_acquire(E.u, &E.o[2].uo, &got, &reason), UPSTREAM_READY);
    assert_ptr_equal(got, b);
    assert_int_equal(upstream_acquire(E.u, &E.o[3].uo, &got, &reason), UPSTREAM_READY);
    assert_ptr_equal(got, a);
    upstream_close(a);
    upstream_close(b);
}

static void test_pool_keeps_at_most_idle_connections(void **state)
{
    (void)state; /* upstream_idle_connections: 1 */
    struct upstream_conn *a = busy_conn(&E.o[0]);
    struct upstream_conn *b = busy_conn(&E.o[1]);
    upstream_release(a, true);
    upstream_release(b, true);
    assert_int_equal(a->state, UPC_IDLE);
    assert_int_equal(b->state, UPC_CLOSED);
    assert_int_equal(E.u->n_idle, 1);
}

static void test_queue_when_max_connections(void **state)
{
    (void)state; /* upstream_max_connections: 1 */
    struct upstream_conn *a = busy_conn(&E.o[0]);
    struct upstream_conn *got = NULL;
    const char *reason = NULL;
    assert_int_equal(upstream_acquire(E.u, &E.o[1].uo, &got, &reason), UPSTREAM_QUEUED);
    assert_null(got);
    assert_true(E.o[1].uo.queued);
    assert_int_equal(E.u->n_waiting, 1);
    upstream_cancel_wait(E.u, &E.o[1].uo);
    upstream_close(a);
}

static void test_release_wakes_first_waiter(void **state)
{
    (void)state; /* upstream_max_connections: 1 */
    struct upstream_conn *a = busy_conn(&E.o[0]);
    struct upstream_conn *got = NULL;
    const char *reason = NULL;
    assert_int_equal(upstream_acquire(E.u, &E.o[1].uo, &got, &reason), UPSTREAM_QUEUED);
    assert_int_equal(upstream_acquire(E.u, &E.o[2].uo, &got, &reason), UPSTREAM_QUEUED);
    upstream_release(a, true);
    /* the released conn goes straight to the first waiter, not to the pool */
    assert_int_equal(E.o[1].slots, 1);
    assert_false(E.o[1].uo.queued);
    assert_ptr_equal(E.o[1].uo.granted, a);
    assert_int_equal(a->state, UPC_BUSY);
    assert_ptr_equal(a->owner, &E.o[1].uo);
    assert_int_equal(E.u->n_idle, 0);
    assert_int_equal(E.o[2].slots, 0);
    assert_true(E.o[2].uo.queued);
    /* a close frees the slot too: the next waiter gets a new connect */
    upstream_close(a);
    assert_int_equal(E.o[2].slots, 1);
    assert_non_null(E.o[2].uo.granted);
    assert_int_equal(E.o[2].uo.granted->state, UPC_CONNECTING);
    assert_int_equal(E.u->n_waiting, 0);
    upstream_close(E.o[2].uo.granted);
}

static void test_cancel_wait(void **state)
{
    (void)state; /* upstream_max_connections: 1 */
    struct upstream_conn *a = busy_conn(&E.o[0]);
    struct upstream_conn *got = NULL;
    const char *reason = NULL;
    assert_int_equal(upstream_acquire(E.u, &E.o[1].uo, &got, &reason), UPSTREAM_QUEUED);
    upstream_cancel_wait(E.u, &E.o[1].uo);
    assert_false(E.o[1].uo.queued);
    assert_int_equal(E.u->n_waiting, 0);
    upstream_cancel_wait(E.u, &E.o[1].uo); /* twice: harmless */
    upstream_release(a, true);
    assert_int_equal(E.o[1].slots, 0);
    assert_int_equal(a->state, UPC_IDLE); /* nobody waits: pooled */
}

static void test_stale_pooled_connection_replaced(void **state)
{
    (void)state;
    struct upstream_conn *a = busy_conn(&E.o[0]);
    upstream_release(a, true);
    assert_int_equal(a->state, UPC_IDLE);
    /* the upstream closes the pooled connection; its FIN arrives but the loop does
     * not run, so the idle watcher has not seen it yet: only the check can */
    int sfd = accept(E.lfd, NULL, NULL);
    assert_true(sfd != -1);
    close(sfd);
    struct pollfd pfd = {.fd = a->fd, .events = POLLIN | POLLRDHUP};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    struct upstream_conn *got = NULL;
    const char *reason = NULL;
    assert_int_equal(upstream_acquire(E.u, &E.o[1].uo, &got, &reason), UPSTREAM_CONNECTING);
    assert_ptr_not_equal(got, a);
    assert_int_equal(a->state, UPC_CLOSED);
    assert_int_equal(E.u->n_idle, 0);
    assert_int_equal(E.u->stale, 1);
    assert_int_equal(E.u->n_open, 1);
    upstream_close(got);
}

static void test_retired_set_does_not_pool(void **state)
{
    (void)state;
    struct upstream_conn *idle = busy_conn(&E.o[0]);
    struct upstream_conn *busy = busy_conn(&E.o[1]);
    upstream_release(idle, true);
    assert_int_equal(idle->state, UPC_IDLE);
    upstream_set_retire(E.w.set);
    assert_int_equal(idle->state, UPC_CLOSED); /* idle conns close at once */
    upstream_release(busy, true);
    assert_int_equal(busy->state, UPC_CLOSED); /* busy ones when released */
    assert_int_equal(E.u->n_idle, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_acquire_connects_when_pool_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_pools_reusable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_closes_not_reusable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acquire_reuses_most_recent_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_keeps_at_most_idle_connections, setup_idle1,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_when_max_connections, setup_max1, teardown),
        cmocka_unit_test_setup_teardown(test_release_wakes_first_waiter, setup_max1, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_wait, setup_max1, teardown),
        cmocka_unit_test_setup_teardown(test_stale_pooled_connection_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retired_set_does_not_pool, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
