#include "schedule.h"

#include <math.h>

double schedule_uniform(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    /* 53 random bits, shifted by one so 0 never comes out and log() stays finite. */
    return (double)((z >> 11) + 1) * (1.0 / 9007199254740992.0);
}

void schedule_init(struct schedule *s, double rate, int poisson, uint64_t seed)
{
    s->rate = rate;
    s->gap_us = 1e6 / rate;
    s->poisson = poisson;
    s->index = 0;
    s->next_us = 0;
    s->rng = seed;
}

uint64_t schedule_peek(const struct schedule *s) { return (uint64_t)s->next_us; }

void schedule_advance(struct schedule *s)
{
    s->index++;
    if (s->poisson)
        s->next_us += -log(schedule_uniform(&s->rng)) * s->gap_us;
    else
        s->next_us = (double)s->index * 1e6 / s->rate;
}

uint64_t schedule_count_before(double rate, uint64_t end_us)
{
    /* Smallest i with floor(i * 1e6 / rate) >= end_us; checked against the exact
     * formula used by schedule_advance so the two can never disagree by one. */
    uint64_t i = (uint64_t)ceil((double)end_us * rate / 1e6);
    while (i > 0 && (uint64_t)((double)(i - 1) * 1e6 / rate) >= end_us)
        i--;
    while ((uint64_t)((double)i * 1e6 / rate) < end_us)
        i++;
    return i;
}
