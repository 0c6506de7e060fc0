#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const uint32_t stats_pct_ppm[STATS_NPCT] = {500000, 900000, 950000, 990000,
                                            999000, 999900, 1000000};
const char *const stats_pct_name[STATS_NPCT] = {"50", "90", "95", "99", "99.9", "99.99", "100"};

uint64_t stats_latency_us(uint64_t intended_us, uint64_t done_us)
{
    return done_us > intended_us ? done_us - intended_us : 0;
}

int stats_init(struct stats *s, size_t expect)
{
    s->v = NULL;
    s->n = 0;
    s->cap = 0;
    if (expect == 0)
        return 0;
    s->v = malloc(expect * sizeof(*s->v));
    if (s->v == NULL)
        return -1;
    s->cap = expect;
    return 0;
}

void stats_deinit(struct stats *s)
{
    if (s == NULL)
        return;
    free(s->v);
    s->v = NULL;
    s->n = 0;
    s->cap = 0;
}

static uint32_t sat32(uint64_t x) { return x > UINT32_MAX ? UINT32_MAX : (uint32_t)x; }

int stats_add(struct stats *s, uint64_t intended_us, uint64_t latency_us, unsigned status)
{
    if (s->n == s->cap) {
        /* Large blocks are mremap'ed by glibc, so doubling does not copy the samples. */
        size_t cap = s->cap ? s->cap * 2 : 4096;
        struct sample *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    struct sample *x = &s->v[s->n++];
    x->intended_us = intended_us;
    x->latency_us = sat32(latency_us);
    x->status = status > UINT16_MAX ? UINT16_MAX : (uint16_t)status;
    return 0;
}

uint32_t stats_percentile(const uint32_t *sorted, size_t n, uint32_t ppm)
{
    if (ppm > 1000000)
        ppm = 1000000;
    /* ceil(ppm * n / 1e6) in integers: no float rounding can push 99.9% of 1000 to 1000. */
    uint64_t rank = ((uint64_t)ppm * n + 999999) / 1000000;
    if (rank < 1)
        rank = 1;
    return sorted[rank - 1];
}

void stats_mean_stddev(const uint32_t *v, size_t n, double *mean, double *stddev)
{
    *mean = 0;
    *stddev = 0;
    if (n == 0)
        return;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    double m = sum / (double)n;
    double ss = 0;
    for (size_t i = 0; i < n; i++) {
        double d = v[i] - m;
        ss += d * d;
    }
    *mean = m;
    *stddev = sqrt(ss / (double)n);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int stats_summarize(const struct stats *s, struct stats_summary *out)
{
    memset(out, 0, sizeof(*out));
    if (s->n == 0)
        return 0;
    uint32_t *lat = malloc(s->n * sizeof(*lat));
    if (lat == NULL)
        return -1;
    for (size_t i = 0; i < s->n; i++)
        lat[i] = s->v[i].latency_us;
    qsort(lat, s->n, sizeof(*lat), cmp_u32);
    out->n = s->n;
    for (int i = 0; i < STATS_NPCT; i++)
        out->pct[i] = stats_percentile(lat, s->n, stats_pct_ppm[i]);
    stats_mean_stddev(lat, s->n, &out->mean_us, &out->stddev_us);
    free(lat);
    return 0;
}
