/* gen: the open-loop run itself: schedule -> backlog -> connections -> samples.
 *
 * One libev loop on one thread. A timerfd (watched by an ev_io) fires at each
 * intended send time with microsecond precision (epoll_wait alone rounds to ms);
 * every request due by then goes into the backlog FIFO and is handed to a free
 * connection at once, or waits there with its latency clock already running.
 * Responses are parsed with llhttp; a response's latency is its completion time
 * minus its intended send time (stats_latency_us).
 */
#ifndef OLGEN_GEN_H
#define OLGEN_GEN_H

#include <stdint.h>

#include "config.h"
#include "stats.h"

struct gen_result {
    uint64_t scheduled;           /* measured requests the schedule produced */
    uint64_t sent;                /* measured requests written to a connection */
    uint64_t completed;           /* measured requests answered with a full response */
    uint64_t completed_in_window; /* responses (any request, warm-up included) that
                                     completed inside [measure start, window end):
                                     achieved_rate = this / duration */
    uint64_t timeouts;            /* measured requests abandoned after --timeout */
    uint64_t lost;                /* measured requests in flight on a connection that failed */
    uint64_t non_2xx;             /* completed with a status outside 200..299 */
    uint64_t status[4];           /* completed by class: 2xx, 3xx, 4xx, 5xx */
    uint64_t status_other;        /* completed with a status outside 200..599 */
    uint64_t sock_connect;        /* connect attempts that failed or timed out */
    uint64_t sock_read;           /* read errors (reset ...) */
    uint64_t sock_write;          /* write errors */
    uint64_t sock_parse;          /* unparseable or unsolicited responses */
    uint64_t sock_closed;         /* peer closed with requests in flight */
    uint64_t connects;            /* connections established (churn with --close) */
    uint64_t max_backlog;         /* most due-but-unsent requests seen in the window */
    uint64_t max_lag_us;          /* most the scheduler ran behind an intended time */
    uint64_t samples_lost;        /* samples not stored for lack of memory */
    int interrupted;              /* SIGINT/SIGTERM ended the run early */
    struct stats samples;         /* completed + timed-out measured requests; owned */
};

/* Run the whole load test described by cfg (blocking) and fill *res; the caller owns
 * res->samples afterwards (stats_deinit). -1 if the run could not be set up (address
 * resolution, timerfd, memory), with the reason printed on stderr. */
int gen_run(const struct config *cfg, struct gen_result *res);

#endif
