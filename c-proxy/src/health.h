/* health: is an upstream fit for requests? Passive (nginx's max_fails/fail_timeout),
 * active (periodic GET on a fresh connection) and the operator's drain.
 *
 * Twin: py-proxy/pyproxy/health.py (same names, same rules, same events).
 * docs/behaviour.md "Health" is the user-facing description.
 *
 * One struct health_state per upstream NAME, process-wide: every worker thread
 * and every upstream set (config generation) holding that name share it, so a
 * verdict survives a reload that keeps the name. The registry (health_state_get)
 * takes a mutex to find or create a state; every field of a state is an atomic,
 * so the data path (available/attempt_begin/attempt_end) never locks. States live
 * until health_registry_free() at exit: callers keep the pointer without a count.
 *
 * Passive: a failure (attempt_end with HEALTH_FAIL) is a refused/failed/timed-out
 * connect, a reset or read timeout before the response head, or an invalid response
 * head. max_fails failures within fail_timeout (the window opens at the first one)
 * mark the upstream down for fail_timeout; then the first attempt_begin claims the
 * single probe (others find it unavailable); the probe's HEALTH_OK brings it up,
 * its HEALTH_FAIL keeps it down for another fail_timeout, HEALTH_NEUTRAL frees the
 * probe for the next request. max_fails 0 turns passive marking off.
 * Active: health_check_result() from the checker; fall consecutive failures mark it
 * down, rise consecutive successes bring it up. A group with ONE upstream (sole)
 * is never marked down, passively or actively.
 * Events (log_event): upstream_down {upstream, reason} (warn) when the upstream
 * goes from up to down, upstream_up {upstream, reason} (info) when it comes back;
 * exactly once per transition even when several threads race.
 *
 * Time is injected: `now` is the loop time in seconds (ev_now()); every worker's
 * loop reads the same clock, so one state compares times from all of them.
 * Reasons are strings with static storage (snake_case, reused as metric labels):
 * the state keeps the pointer.
 */
#ifndef TWINPROXY_HEALTH_H
#define TWINPROXY_HEALTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct ev_loop;

/* How an attempt ended, as health sees it. */
enum health_outcome {
    HEALTH_OK = 0,  /* a valid response head arrived */
    HEALTH_FAIL,    /* a passive failure (see above) */
    HEALTH_NEUTRAL, /* not a health signal: client went away, answered by the proxy */
};

struct health_state; /* one upstream's shared verdict; private to health.c */

/* ---- registry ---- */

/* The state for upstream `name`, created on first use (up, not drained, passive
 * settings of the default config until health_configure()). The same pointer for
 * the same name, from any thread, until health_registry_free(). `address` is the
 * upstream's address text (kept from the first call; informational). NULL only
 * when out of memory: callers treat NULL as "always healthy". */
struct health_state *health_state_get(const char *name, const char *address);

/* Apply cfg's health settings to h: max_fails, fail_timeout, check rise/fall, and
 * sole = (cfg has one upstream). Called by whoever builds an upstream set, for each
 * of its upstreams, at startup and on every reload (the newest config wins). A sole
 * or passive-off upstream that was down comes back (upstream_up "reconfigured"). */
void health_configure(struct health_state *h, const struct config *cfg);

/* Free every state (at exit, and between unit tests). No state may be in use. */
void health_registry_free(void);

/* ---- data path (the balancer calls these; NULL h: always healthy, no-ops) ---- */

/* May a new attempt go to h now? false when drained, actively down, or passively
 * down within fail_timeout or with the probe already claimed. */
bool health_available(const struct health_state *h, double now);

/* An attempt on h starts: claims the passive probe if h is due for one. */
void health_attempt_begin(struct health_state *h, double now);

/* The attempt ended with o; reason (static string) names a HEALTH_FAIL. */
void health_attempt_end(struct health_state *h, enum health_outcome o, const char *reason,
                        double now);

/* ---- active checks, operator state, queries ---- */

/* One active check result (the checker calls it; tests call it directly). */
void health_check_result(struct health_state *h, bool ok, const char *reason, double now);

/* Operator drain: a drained upstream gets no new attempts, in-flight ones finish.
 * No event here: the caller (admin API) logs upstream_drain. */
void health_set_drain(struct health_state *h, bool drain);
bool health_is_drained(const struct health_state *h);

/* Not down, passively or actively (drain aside). */
bool health_is_healthy(const struct health_state *h);

/* Reason of the last failure seen (passive or active), "" if none. */
const char *health_last_error(const struct health_state *h);

const char *health_name(const struct health_state *h);

/* h's id: 0, 1, ... in creation order (the metrics label of its name); SIZE_MAX for
 * NULL. health_registry_names() fills names[id] for every id < cap and returns
 * 1 + the highest id filled (0: none); the strings live until the registry is freed. */
size_t health_id(const struct health_state *h);
size_t health_registry_names(const char **names, size_t cap);

/* ---- per-upstream counters of every worker (GET /upstreams, /metrics) ----
 * Kept in the registry entry so that the admin thread reads them without
 * touching a worker's own structures: atomics, relaxed (each is a counter or a
 * gauge on its own; no reader needs two of them to agree). Like the verdict,
 * they belong to the upstream's name and survive reloads. NULL h: no-ops. */

enum health_stat {
    HEALTH_STAT_REQUESTS = 0, /* attempts started (counter) */
    HEALTH_STAT_FAILS,        /* attempts that ended with HEALTH_FAIL (counter) */
    HEALTH_STAT_ACTIVE,       /* attempts in flight (gauge) */
    HEALTH_STAT_IDLE,         /* pooled keep-alive connections (gauge) */
    HEALTH_STAT_TO_UP,        /* transitions to up (counter, metrics) */
    HEALTH_STAT_TO_DOWN,      /* transitions to down (counter, metrics) */
    HEALTH_STAT_COUNT,
};

struct health_stats {
    uint64_t requests; /* HEALTH_STAT_REQUESTS */
    uint64_t fails;    /* HEALTH_STAT_FAILS */
    uint64_t active;   /* HEALTH_STAT_ACTIVE */
    uint64_t idle;     /* HEALTH_STAT_IDLE */
    uint64_t to_up;    /* HEALTH_STAT_TO_UP */
    uint64_t to_down;  /* HEALTH_STAT_TO_DOWN */
};

/* The counters as stored: the FIRST member of struct health_state (health.c
 * asserts it), so that a state pointer is also a pointer to them (C11 6.7.2.1).
 * Public only so that health_stats_add() below can be inline: a keep-alive GET
 * makes five of these adds, and a call into health.c for each cost more than
 * the add itself. Nothing else may touch them. */
struct health_counters {
    _Atomic int64_t v[HEALTH_STAT_COUNT]; /* enum health_stat */
};

/* Add delta (negative for a gauge going down) to one counter of h. */
static inline void health_stats_add(struct health_state *h, enum health_stat which, int64_t delta)
{
    if (h != NULL && which < HEALTH_STAT_COUNT)
        atomic_fetch_add_explicit(&((struct health_counters *)(void *)h)->v[which], delta,
                                  memory_order_relaxed);
}
/* Read h's counters (zeros for NULL). */
void health_stats_get(const struct health_state *h, struct health_stats *out);

/* ---- active checker (C: ev_timer + non-blocking connect + ev_io; no threads) ---- */

struct health_checker;

/* Start active checks on loop for cfg's upstreams: states[i] is cfg->upstreams[i]'s
 * state (n == cfg->n_upstreams). Every health.check.interval (the first at once) it
 * connects to each upstream on a fresh socket, sends
 * "GET <path> HTTP/1.1\r\nHost: <address>\r\nConnection: close\r\n\r\n" and reads the
 * status line: 2xx/3xx within health.check.timeout is a success; anything else is a
 * failure with reason check_connect_failed | check_timeout | check_closed |
 * check_bad_response | check_bad_status. Copies what it needs from cfg. Returns NULL
 * when health.check is absent (nothing to run) or out of memory. Run it in ONE
 * worker only (worker 0): the verdicts are shared. Caller owns it. */
struct health_checker *health_checker_start(struct ev_loop *loop, const struct config *cfg,
                                            struct health_state *const *states, size_t n);

/* Stop every watcher, close probes in flight, free. NULL is a no-op. Call it on the
 * loop's thread (reload: stop the old checker, start one for the new config). */
void health_checker_stop(struct health_checker *hc);

#endif
