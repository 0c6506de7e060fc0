/* stats: the measured samples and the numbers reported from them.
 *
 * Every measured request that ended with a response (or a timeout) is kept as one
 * struct sample; percentiles are exact nearest-rank over all of them, computed once
 * at the end from a sorted copy of the latencies. No histogram, no estimation.
 */
#ifndef OLGEN_STATS_H
#define OLGEN_STATS_H

#include <stddef.h>
#include <stdint.h>

#define STATS_NPCT 7 /* entries in stats_pct_ppm / stats_pct_name */

struct sample {
    uint64_t intended_us; /* intended send time, microseconds after the measurement start */
    uint32_t latency_us;  /* completion - intended send time (CO-corrected), saturating */
    uint16_t status;      /* HTTP status code; 0 = timed out, no response */
};

struct stats {
    struct sample *v; /* samples in completion order; owned */
    size_t n;         /* samples stored */
    size_t cap;       /* slots allocated in v */
};

struct stats_summary {
    size_t n;                 /* samples summarized */
    uint32_t pct[STATS_NPCT]; /* latency at each stats_pct_ppm, microseconds */
    double mean_us;           /* arithmetic mean latency */
    double stddev_us;         /* population standard deviation */
};

/* The reported percentiles, in parts per million (50% == 500000) so that the rank
 * arithmetic is exact integers, and their JSON key names. */
extern const uint32_t stats_pct_ppm[STATS_NPCT];
extern const char *const stats_pct_name[STATS_NPCT];

/* Latency of a request under the coordinated-omission correction: measured from the
 * time the schedule said it should be sent, not from when it was actually written.
 * A request that waited behind a stalled server or connection carries that wait.
 * Returns 0 if done_us precedes intended_us (cannot happen with a monotonic clock). */
uint64_t stats_latency_us(uint64_t intended_us, uint64_t done_us);

/* Prepare an empty store with room for `expect` samples (0 is fine); -1 on ENOMEM. */
int stats_init(struct stats *s, size_t expect);
/* Free the samples; the struct can be stats_init'ed again. NULL-safe. */
void stats_deinit(struct stats *s);
/* Append one sample; latency above UINT32_MAX us (71 min) saturates. -1 on ENOMEM (sample lost). */
int stats_add(struct stats *s, uint64_t intended_us, uint64_t latency_us, unsigned status);

/* Nearest-rank percentile of an ascending array: the value at rank ceil(ppm/1e6 * n)
 * (1-based), rank at least 1. ppm == 1000000 gives the maximum. n must be > 0. */
uint32_t stats_percentile(const uint32_t *sorted, size_t n, uint32_t ppm);
/* Mean and population standard deviation of v[0..n); both 0 when n == 0. */
void stats_mean_stddev(const uint32_t *v, size_t n, double *mean, double *stddev);
/* Sort a copy of the latencies and fill *out; with no samples pct[] are 0 and n is 0.
 * -1 on ENOMEM. */
int stats_summarize(const struct stats *s, struct stats_summary *out);

#endif
