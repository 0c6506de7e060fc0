/* metrics: the Prometheus text of GET /metrics (contract 9) and the counters
 * behind it.
 *
 * Twin: py-proxy/pyproxy/metrics.py (metrics_render byte for byte; the shared
 * case is c-proxy/tests/metrics_cases/basic.args -> basic.txt).
 *
 * Every series of contract 9, in its order, each with its HELP and TYPE lines,
 * plus twinproxy_errors_total{code,reason} (docs/behaviour.md "Metrics").
 *
 * Per-worker slots (docs/architecture.md "Metrics"): every worker owns one
 * struct metrics_slot and is its only writer; the hot path adds to integers in
 * it (relaxed load + store: a plain add, no locked instruction, no shared cache
 * line). The admin thread reads every worker's slot with relaxed loads and sums
 * them into a private slot (metrics_sum) that metrics_render prints. Each cell
 * stands alone, so a reader never needs two cells to agree.
 *
 * Bounded label sets, fixed-size arrays:
 * - upstream labels: an id per upstream NAME (the health registry's, stable
 *   across reloads): label 0 is "" (the proxy answered itself), label id+1 the
 *   upstream with health id `id`; METRICS_LABELS of them (names beyond count
 *   under "", documented).
 * - {code,upstream} of twinproxy_requests_total: a per-worker open-addressed
 *   table of METRICS_REQ_SLOTS (code, label) keys with their counts; keys are
 *   never removed, so a reader sees a key before its count. A full table drops
 *   the pair (never in practice: the keys are the codes seen x the configured
 *   upstreams, a few dozen).
 * - {code,reason} of twinproxy_errors_total: code index (the codes the proxy
 *   answers itself, metrics_err_codes) x enum reason (reason.h).
 * Histograms: 14 fixed bounds (contract 9) + +Inf, per-bucket counts (not
 * cumulative) and the sum in microseconds; rendered cumulative.
 *
 * Ownership: main owns the slots (one per worker) and the process cells;
 * workers borrow theirs.
 */
#ifndef TWINPROXY_METRICS_H
#define TWINPROXY_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reason.h"

#define METRICS_BOUNDS 14                    /* finite histogram bounds */
#define METRICS_BUCKETS (METRICS_BOUNDS + 1) /* + the +Inf bucket */
#define METRICS_LABELS 1025                  /* upstream labels: "" + 1024 names */
#define METRICS_REQ_SLOTS 2048               /* (code, label) keys per worker */
#define METRICS_ERR_CODES 11                 /* codes the proxy answers itself, then "" (a close) */

/* Whole-process cells of one worker. */
enum metrics_cell {
    METRICS_RL_ALLOWED = 0,  /* rate limit: a token was taken (the request goes on) */
    METRICS_RL_LIMITED,      /* rate limit: 429 */
    METRICS_CONN_CLIENT,     /* gauge: client connections open */
    METRICS_CONN_UPSTREAM,   /* gauge: upstream connections open (connecting, busy, idle) */
    METRICS_RX_CLIENT,       /* bytes received from clients */
    METRICS_RX_UPSTREAM,     /* bytes received from upstreams */
    METRICS_TX_CLIENT,       /* bytes sent to clients */
    METRICS_TX_UPSTREAM,     /* bytes sent to upstreams */
    METRICS_RETRIES_SKIPPED, /* retry budget exhausted */
    METRICS_QUEUE_SUM_US,    /* queue wait histogram: sum (microseconds) */
    METRICS_QUEUE_B0,        /* ... its METRICS_BUCKETS bucket counts */
    METRICS_CELLS = METRICS_QUEUE_B0 + METRICS_BUCKETS,
};

/* Cells per upstream label. */
enum metrics_ucell {
    METRICS_U_DUR_SUM_US = 0, /* request duration: sum (microseconds) */
    METRICS_U_DUR_B0,         /* ... its bucket counts */
    METRICS_U_RETRY0 = METRICS_U_DUR_B0 + METRICS_BUCKETS, /* retries: connect, send, head */
    METRICS_UCELLS = METRICS_U_RETRY0 + 3,
};

struct metrics_slot {
    _Atomic uint64_t cell[METRICS_CELLS];
    _Atomic uint64_t up[METRICS_LABELS][METRICS_UCELLS];
    _Atomic uint32_t req_key[METRICS_REQ_SLOTS]; /* code * 2048 + label + 1; 0: free */
    _Atomic uint64_t req_n[METRICS_REQ_SLOTS];
    _Atomic uint64_t err[METRICS_ERR_CODES][REASON_N];
};

/* The codes of twinproxy_errors_total: 400 408 413 429 431 501 502 503 504 505 0 (""). */
extern const int metrics_err_codes[METRICS_ERR_CODES];
/* The bucket bounds in microseconds, and as `le` label text. */
extern const uint64_t metrics_bounds_us[METRICS_BOUNDS];
extern const char *const metrics_bounds_le[METRICS_BOUNDS];

/* One writer per slot: a plain add with relaxed atomics (readers: other threads). */
static inline void metrics_add_cell(_Atomic uint64_t *p, uint64_t n)
{
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Add n to cell i of s (NULL s: no-op, unit tests without metrics). */
static inline void metrics_add(struct metrics_slot *s, enum metrics_cell i, uint64_t n)
{
    if (s)
        metrics_add_cell(&s->cell[i], n);
}

/* A gauge cell of s goes down by one (its own earlier add). */
static inline void metrics_dec(struct metrics_slot *s, enum metrics_cell i)
{
    if (s)
        metrics_add_cell(&s->cell[i], UINT64_MAX); /* -1 modulo 2^64 */
}

/* The bucket of a duration in microseconds (0 .. METRICS_BOUNDS, the last +Inf). */
unsigned metrics_bucket(uint64_t us);

/* One request answered with `code` (upstream label `label`, 0: the proxy), taking
 * `us` microseconds: twinproxy_requests_total and the duration histogram. */
void metrics_request(struct metrics_slot *s, int code, unsigned label, uint64_t us);

/* One queue wait of `us` microseconds. */
void metrics_queue_wait(struct metrics_slot *s, uint64_t us);

/* A retry after a failure on upstream label `label` in phase 0 connect | 1 send | 2 head. */
void metrics_retry(struct metrics_slot *s, unsigned label, unsigned phase);

/* An error the proxy answered (code) or a connection it closed (code 0) for reason r. */
void metrics_error(struct metrics_slot *s, int code, enum reason r);

/* The label of health id `id` (SIZE_MAX: none -> 0). */
static inline unsigned metrics_label(size_t id)
{
    return id < METRICS_LABELS - 1 ? (unsigned)id + 1 : 0;
}

/* dst (zeroed first) = the sum of n slots, read with relaxed loads. */
void metrics_sum(struct metrics_slot *dst, const struct metrics_slot *const *slots, size_t n);

/* One upstream of the current config, as the per-upstream gauges show it. */
struct metrics_upstream {
    const char *name; /* label value (escaped here) */
    bool healthy;     /* twinproxy_upstream_up */
    uint64_t active;  /* twinproxy_upstream_active_connections */
    uint64_t idle;    /* twinproxy_upstream_idle_connections */
    uint64_t to_up;   /* twinproxy_health_transitions_total{to="up"} */
    uint64_t to_down; /* ... {to="down"} */
};

/* Everything that is not in the summed slot. */
struct metrics_view {
    const char *impl;                    /* c | py */
    const char *version;                 /* as --version prints it */
    uint64_t generation;                 /* twinproxy_config_generation */
    uint64_t reloads_ok, reloads_failed; /* twinproxy_config_reloads_total */
    const struct metrics_upstream *ups;  /* current config, in order */
    size_t n_ups;
    const char *const *labels; /* label -> upstream name (labels[0] = ""), NULL: unknown */
    size_t n_labels;
};

/* The /metrics body into out (at most cap bytes, NUL-ended when there is room);
 * returns its full length (call again with a bigger buffer when it is > cap).
 * Returns 0 when out of memory. */
size_t metrics_render(char *out, size_t cap, const struct metrics_view *v,
                      const struct metrics_slot *sum);

#endif
