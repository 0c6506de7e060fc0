/* config: olgen's command line, parsed and validated into one immutable struct. */
#ifndef OLGEN_CONFIG_H
#define OLGEN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "request.h"

struct config {
    const char *url;          /* --url as given (reported back) */
    struct url target;        /* --url parsed */
    double rate;              /* --rate: requests per second, > 0 */
    double duration_s;        /* --duration: measured seconds, > 0 */
    double warmup_s;          /* --warmup: seconds sent at rate but not measured, >= 0 */
    unsigned connections;     /* --connections: keep-alive pool size, >= 1 */
    unsigned pipeline;        /* --pipeline: max requests in flight per connection, >= 1 */
    const char **headers;     /* --header strings (point into argv); array owned */
    size_t nheaders;          /* entries in headers */
    const char *method;       /* --method, default GET */
    size_t body_bytes;        /* --body-bytes: request body size */
    int close_mode;           /* --close: one request per connection, "Connection: close" */
    uint64_t timeout_us;      /* --timeout (ms): a request not answered this long after its
                                 intended send time is abandoned and counted as a timeout */
    const char *samples_path; /* --samples: CSV of raw samples, NULL for none */
    int poisson;              /* --poisson: exponential gaps instead of constant */
    uint64_t seed;            /* --seed: Poisson stream seed */
    uint64_t max_backlog;     /* --max-backlog: unsent due requests tolerated, default
                                 rate*10ms (at least CONFIG_BACKLOG_MIN) */
    uint64_t max_lag_us;      /* --max-lag (ms): scheduler lateness tolerated, default 10 ms */
    double trend_ratio;       /* --trend-ratio: last-quarter p50 / first-quarter p50 above
                                 this (and above trend_min_us apart) = queue grew, invalid;
                                 default 2.0, 0 disables */
    uint64_t trend_min_us;    /* --trend-min-us: least p50 growth that counts, default 1000 */
    double min_achieved;      /* --min-achieved: completions in the window / (rate*duration)
                                 below this = invalid; default 0.95, 0 disables */
    int spin;                 /* --spin: busy-poll instead of sleeping between events */
    uint64_t tick_us;         /* --tick-us: least time between scheduler wake-ups, default 50 */
};

#define CONFIG_BACKLOG_S 0.010 /* default backlog bound: this many seconds of requests */
#define CONFIG_BACKLOG_MIN 8   /* ... but never fewer than this many requests */
#define CONFIG_LAG_US 10000    /* default scheduler-lag bound */

enum config_result {
    CONFIG_OK = 0, /* run with *c */
    CONFIG_HELP,   /* --help: usage was asked for */
    CONFIG_ERROR,  /* invalid arguments; err holds the reason */
};

/* Parse argv (getopt_long, restartable: tests call it repeatedly). On CONFIG_OK the
 * caller owns c->headers and releases it with config_deinit. */
enum config_result config_parse(struct config *c, int argc, char **argv, char *err, size_t errlen);
/* Release what config_parse allocated. NULL-safe. */
void config_deinit(struct config *c);
/* The --help text. */
extern const char config_usage[];

#endif
