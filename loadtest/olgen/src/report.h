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
