/* metrics: the Prometheus text of GET /metrics (contract 9) and the counters
 * behind it.
 *
 * Twin: py-proxy/pyproxy/metrics.py (metrics_render byte for byte; the shared
 * case is c-proxy/tests/metrics_cases/basic.args -> basic.txt, and its text is
 * in docs/admin-api.md).
 *
 * So far the series that exist: twinproxy_upstream_up,
 * twinproxy_ratelimit_decisions_total, twinproxy_ratelimit_rejected_total,
 * twinproxy_config_generation, twinproxy_build_info, in the order of contract
 * section 9, each with its HELP and TYPE lines.
 *
 * Counters are global to the process (contract 9): one atomic per counter,
 * shared by every worker thread (relaxed adds: each counter stands alone). The
 * Python twin's worker processes each write a row of a shared-memory array and
 * rendering sums the rows.
 *
 * Ownership: main owns the struct metrics_counters; workers borrow it.
 */
#ifndef TWINPROXY_METRICS_H
#define TWINPROXY_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum metrics_counter {
    METRICS_C_RL_ALLOWED = 0, /* rate limit: a token was taken (the request goes on) */
    METRICS_C_RL_LIMITED,     /* rate limit: 429 */
    METRICS_C_N,              /* counters */
};

struct metrics_counters {
    _Atomic uint64_t v[METRICS_C_N]; /* enum metrics_counter, every worker thread */
};

/* Add n to counter i of c (NULL c: no-op, unit tests without metrics). */
static inline void metrics_counters_add(struct metrics_counters *c, enum metrics_counter i,
                                        uint64_t n)
{
    if (c)
        atomic_fetch_add_explicit(&c->v[i], n, memory_order_relaxed);
}

/* Counter i summed over every worker (one atomic: already the sum). */
uint64_t metrics_counters_total(const struct metrics_counters *c, enum metrics_counter i);

/* One upstream as twinproxy_upstream_up shows it, in config order. */
struct metrics_upstream {
    const char *name; /* label value (escaped here) */
    bool healthy;     /* health verdict: 1, else 0 */
};

/* The /metrics body into out (at most cap bytes, NUL-ended when there is room);
 * returns its full length (call again with a bigger buffer when it is > cap). */
size_t metrics_render(char *out, size_t cap, const char *impl, const char *version,
                      uint64_t generation, const struct metrics_upstream *ups, size_t n_ups,
                      uint64_t rl_allowed, uint64_t rl_limited);

#endif
