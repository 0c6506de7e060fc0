#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

void util_format_ts(double wall, char out[UTIL_TS_MAX])
{
    /* round to microseconds first (as Python's datetime does), then truncate to ms */
    long long us = llround(wall * 1e6);
    time_t sec = (time_t)(us / 1000000);
    int ms = (int)((us % 1000000) / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    snprintf(out, UTIL_TS_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void util_rng_seed(struct util_rng *r)
{
    if (getrandom(r->s, sizeof r->s, 0) != (ssize_t)sizeof r->s) {
        /* getrandom on Linux >= 3.17 does not fail for 32 bytes; keep a fallback */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r->s[0] = (uint64_t)ts.tv_nsec ^ 0x9e3779b97f4a7c15ULL;
        r->s[1] = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)r;
        r->s[2] = 0xbf58476d1ce4e5b9ULL;
        r->s[3] = 0x94d049bb133111ebULL;
    }
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
}

uint64_t util_rng_next(struct util_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Two hex digits per byte, low nibble first (the digit order util_request_id has
 * always used), built at compile time: a table lookup per byte instead of a
 * shift, mask and lookup per digit. */
#define HEXD(n) ((n) < 10 ? '0' + (n) : 'a' + (n)-10)
#define HEX2(b)                                                                                    \
    {                                                                                              \
        HEXD((b)&0xf), HEXD((b) >> 4)                                                              \
    }
#define HEX2_4(b) HEX2(b), HEX2((b) + 1), HEX2((b) + 2), HEX2((b) + 3)
#define HEX2_16(b) HEX2_4(b), HEX2_4((b) + 4), HEX2_4((b) + 8), HEX2_4((b) + 12)
#define HEX2_64(b) HEX2_16(b), HEX2_16((b) + 16), HEX2_16((b) + 32), HEX2_16((b) + 48)
static const char hex_pairs[256][2] = {HEX2_64(0), HEX2_64(64), HEX2_64(128), HEX2_64(192)};
#undef HEX2_64
#undef HEX2_16
#undef HEX2_4
#undef HEX2
#undef HEXD

void util_request_id(struct util_rng *r, char out[33])
{
    for (int k = 0; k < 2; k++) {
        uint64_t v = util_rng_next(r);
        for (int i = 0; i < 8; i++, v >>= 8)
            memcpy(out + (size_t)k * 16 + (size_t)i * 2, hex_pairs[v & 0xff], 2);
    }
    out[32] = '\0';
}

struct cfgref *cfgref_new(struct config *cfg)
{
    struct cfgref *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    r->cfg = cfg;
    atomic_init(&r->refs, 1);
    return r;
}

struct cfgref *cfgref_acquire(struct cfgref *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

void cfgref_release(struct cfgref *r)
{
    if (!r)
        return;
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1) {
        config_free(r->cfg);
        free(r);
    }
}
