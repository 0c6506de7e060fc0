/* schedule: intended send times of an open-loop run.
 *
 * Times are microseconds after the run start (t=0 is the first request). Constant
 * rate: t_i = floor(i * 1e6 / rate), computed from i each time so nothing drifts.
 * Poisson: exponential gaps with mean 1e6 / rate from a seeded splitmix64 stream,
 * so a given --seed replays the same arrivals. Pure: no clock, no I/O.
 */
#ifndef OLGEN_SCHEDULE_H
#define OLGEN_SCHEDULE_H

#include <stdint.h>

struct schedule {
    double rate;    /* requests per second, > 0 */
    double gap_us;  /* mean gap between requests: 1e6 / rate */
    int poisson;    /* nonzero: exponential gaps instead of constant ones */
    uint64_t index; /* requests taken so far (index of the next one) */
    double next_us; /* intended time of the next request, unrounded */
    uint64_t rng;   /* splitmix64 state, Poisson only */
};

/* Start a schedule at t=0; the first request is due at t=0 in both modes. */
void schedule_init(struct schedule *s, double rate, int poisson, uint64_t seed);
/* Intended time of the next request, microseconds after the start. */
uint64_t schedule_peek(const struct schedule *s);
/* Move on to the following request. */
void schedule_advance(struct schedule *s);
/* Constant rate only: requests due in [0, end_us), i.e. how many a run of that length
 * must send. Used for the expected count and to size the sample store up front. */
uint64_t schedule_count_before(double rate, uint64_t end_us);
/* One uniform double in (0, 1] from a splitmix64 state (exposed for tests). */
double schedule_uniform(uint64_t *state);

#endif
