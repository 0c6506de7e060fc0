/* The coordinated-omission correction, end to end without sockets: a constant-rate
 * schedule, one connection, a server that stalls 500 ms once. Measuring from the
 * intended send time shows the stall in ~every request due during it; measuring from
 * the actual send time (what a closed loop does) shows it once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "backlog.h"
#include "schedule.h"
#include "stats.h"

#define RATE 200              /* requests per second: one every 5 ms */
#define END_US 3000000        /* 3 s run */
#define SERVICE_US 1000       /* normal response time */
#define STALL_FROM_US 1500000 /* the server stops answering ... */
#define STALL_TO_US 2000000   /* ... until here */

/* When a request written at `sent` is answered. */
static uint64_t server_done(uint64_t sent)
{
    if (sent >= STALL_FROM_US && sent < STALL_TO_US)
        sent = STALL_TO_US;
    return sent + SERVICE_US;
}

static void test_stall_seen_by_every_request_due_during_it(void **state)
{
    (void)state;
    struct schedule s;
    struct backlog b;
    struct stats co, naive;
    struct stats_summary sco, snaive;
    uint64_t free_at = 0, t;
    size_t co_slow = 0, naive_slow = 0;

    schedule_init(&s, RATE, 0, 1);
    backlog_init(&b);
    assert_int_equal(stats_init(&co, 0), 0);
    assert_int_equal(stats_init(&naive, 0), 0);
    for (; schedule_peek(&s) < END_US; schedule_advance(&s))
        assert_int_equal(backlog_push(&b, schedule_peek(&s)), 0);
    while (backlog_pop(&b, &t) == 0) {
        /* One keep-alive connection: a request goes out at its intended time or, if the
         * connection is still busy, as soon as it is free. */
        uint64_t sent = t > free_at ? t : free_at;
        uint64_t done = server_done(sent);
        free_at = done;
        stats_add(&co, t, stats_latency_us(t, done), 200);
        stats_add(&naive, t, stats_latency_us(sent, done), 200);
        co_slow += stats_latency_us(t, done) >= 100000;
        naive_slow += stats_latency_us(sent, done) >= 100000;
    }
    assert_int_equal(co.n, 600);
    /* The 100 requests due during the stall all wait >= 100 ms: each waits for the
     * stall's end and then for the 1 ms service of those queued ahead of it on the one
     * connection (that queue, drained at 1 per ms, costs one more request its 100 ms). */
    assert_in_range(co_slow, 100, 102);
    assert_int_equal(naive_slow, 1); /* only the one on the wire when it began */
    assert_int_equal(stats_summarize(&co, &sco), 0);
    assert_int_equal(stats_summarize(&naive, &snaive), 0);
    assert_true(sco.pct[3] >= 400000);                 /* p99 shows the stall */
    assert_int_equal(sco.pct[STATS_NPCT - 1], 501000); /* max: the full stall + service */
    assert_int_equal(snaive.pct[3], SERVICE_US);       /* the closed-loop p99 hides it */
    stats_deinit(&co);
    stats_deinit(&naive);
    backlog_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stall_seen_by_every_request_due_during_it),
    };
    return cmocka_run_group_tests_name("co", tests, NULL, NULL);
}
