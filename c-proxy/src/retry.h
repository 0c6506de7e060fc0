/* retry: may a failed attempt be tried again on another upstream (contract section 6)?
 *
 * Twin: py-proxy/pyproxy/retry.py (same enums in the same order, same verdicts).
 *
 * Pure: no I/O, no clock, no globals. The caller (exchange) describes the failed
 * attempt and the worker's retry budget counters; retry_decide() answers. The
 * caller still checks that an untried eligible upstream exists (the balancer) and
 * answers 502 (504 for a read timeout in the head phase) when the verdict is not
 * RETRY_GO. docs/behaviour.md "Retries" is the user-facing description.
 */
#ifndef TWINPROXY_RETRY_H
#define TWINPROXY_RETRY_H

#include <stdbool.h>

/* Where an attempt failed. */
enum retry_phase {
    RETRY_PHASE_CONNECT = 0, /* refused, failed or timed out: nothing was sent */
    RETRY_PHASE_SEND,        /* the connection failed while the request was written */
    RETRY_PHASE_HEAD,        /* reset, EOF or read timeout before any response byte */
};

/* The answer, checked in this order (the first rule that says no wins). */
enum retry_verdict {
    RETRY_GO = 0,      /* retry on another upstream */
    RETRY_NO_UNSAFE,   /* send/head phase and the request is not idempotent */
    RETRY_NO_REPLAY,   /* send/head phase and the request is no longer all buffered */
    RETRY_NO_RESPONSE, /* response bytes already reached the client */
    RETRY_NO_ATTEMPTS, /* 1 + retries attempts made */
    RETRY_NO_BUDGET,   /* retry_budget exhausted (event retry_skipped) */
};

/* retry_budget (Envoy's): retries in flight may add percent% on top of the
 * requests in flight, but min_concurrent retries are always allowed. */
struct retry_budget {
    unsigned percent;            /* config retry_budget.percent, 0..100 */
    unsigned min_concurrent;     /* config retry_budget.min_concurrent */
    unsigned requests_in_flight; /* this worker's requests being proxied now */
    unsigned retries_in_flight;  /* this worker's retries (attempts after the first) now */
};

/* One failed attempt, as the exchange sees it. */
struct retry_attempt {
    enum retry_phase phase; /* where it failed */
    bool idempotent;        /* retry_idempotent(): method, or an Idempotency-Key header */
    bool replayable;        /* the whole request is still in the upstream-side buffer */
    bool response_started;  /* response bytes reached the client */
    unsigned attempts;      /* attempts made so far, this one included (>= 1) */
    unsigned max_attempts;  /* 1 + config retries */
};

/* The verdict for a, under budget b. Rules, in order: response_started ->
 * NO_RESPONSE; attempts >= max_attempts -> NO_ATTEMPTS; send/head and not
 * idempotent -> NO_UNSAFE; send/head and not replayable -> NO_REPLAY; then the
 * budget: GO only if retries_in_flight + 1 <= max(min_concurrent,
 * percent * requests_in_flight / 100 (integer floor)), else NO_BUDGET.
 * A connect failure passes the method rules for every method. */
enum retry_verdict retry_decide(const struct retry_attempt *a, const struct retry_budget *b);

/* true when the budget allows one more retry in flight (the last rule above). */
bool retry_budget_allows(const struct retry_budget *b);

/* GET HEAD OPTIONS PUT DELETE TRACE (exact, case-sensitive as RFC 9110 methods),
 * or any method when the request carries an Idempotency-Key header. */
bool retry_idempotent(const char *method, bool has_idempotency_key);

/* "connect" | "send" | "head": the `phase` field of the retry event. */
const char *retry_phase_name(enum retry_phase p);

/* "go" | "unsafe_method" | "not_replayable" | "response_started" | "no_attempts_left" |
 * "budget_exhausted": the `reason` of a retry_skipped event, a metric label. */
const char *retry_verdict_name(enum retry_verdict v);

#endif
