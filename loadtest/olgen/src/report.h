/* report: the run's results as one JSON object, and the raw samples as CSV. */
#ifndef OLGEN_REPORT_H
#define OLGEN_REPORT_H

#include <jansson.h>
#include <stdio.h>

#include "config.h"
#include "gen.h"
#include "stats.h"

/* Why a run does not count: each nonzero reason is one entry of "invalid_reasons"
 * and makes "offered_rate_achieved" false. */
#define REPORT_INVALID_BACKLOG 0x01     /* due-but-unsent requests passed --max-backlog */
#define REPORT_INVALID_LAG 0x02         /* the scheduler ran late by more than --max-lag */
#define REPORT_INVALID_UNSENT 0x04      /* some measured requests never went out */
#define REPORT_INVALID_INTERRUPTED 0x08 /* stopped by a signal */
#define REPORT_INVALID_SAMPLES 0x10     /* samples were dropped for lack of memory */
#define REPORT_INVALID_ACHIEVED 0x20    /* completions in the window < min_achieved of offered */
#define REPORT_INVALID_TREND 0x40       /* last-quarter p50 grew past the trend bound */

/* Median latency of the samples intended in the first and in the last quarter of the
 * measurement window: a server that keeps up has the same p50 at both ends; a queue
 * that grows through the window shows as last >> first. n_* are the samples in each
 * quarter (p50 is 0 when a quarter has none). */
struct report_trend {
    uint32_t first_p50_us;
    uint32_t last_p50_us;
    size_t n_first;
    size_t n_last;
};

/* Fill *t from the samples (window of duration_s seconds). -1 on ENOMEM. */
int report_trend(const struct stats *s, double duration_s, struct report_trend *t);
/* 1 if the trend says the queue grew: both quarters have samples, last > ratio * first
 * and last - first >= min_us; ratio 0 disables the check. */
int report_trend_grew(const struct report_trend *t, double ratio, uint64_t min_us);
/* Completions inside the measurement window per second (not the offered rate). */
double report_achieved_rate(const struct config *cfg, const struct gen_result *res);

/* REPORT_INVALID_* flags of a finished run; 0 means the offered rate was achieved. */
unsigned report_invalid(const struct config *cfg, const struct gen_result *res);

/* Build the result object (new reference, NULL on ENOMEM). sum comes from
 * stats_summarize(&res->samples). */
json_t *report_json(const struct config *cfg, const struct gen_result *res,
                    const struct stats_summary *sum);

/* Write "intended_us,latency_us,status" with a header line, one line per sample in
 * completion order. -1 with errno set if the file cannot be written. */
int report_write_samples(const char *path, const struct stats *s);

#endif
