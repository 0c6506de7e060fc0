/* retry: the retry policy of contract section 6. Twin: py-proxy/pyproxy/retry.py. */
#include "retry.h"

#include <stdint.h>
#include <string.h>

bool retry_budget_allows(const struct retry_budget *b)
{
    uint64_t share = (uint64_t)b->percent * b->requests_in_flight / 100;
    uint64_t allowed = share > b->min_concurrent ? share : b->min_concurrent;

    return (uint64_t)b->retries_in_flight + 1 <= allowed;
}

enum retry_verdict retry_decide(const struct retry_attempt *a, const struct retry_budget *b)
{
    if (a->response_started)
        return RETRY_NO_RESPONSE;
    if (a->attempts >= a->max_attempts)
        return RETRY_NO_ATTEMPTS;
    if (a->phase != RETRY_PHASE_CONNECT) {
        if (!a->idempotent)
            return RETRY_NO_UNSAFE;
        if (!a->replayable)
            return RETRY_NO_REPLAY;
    }
    if (!retry_budget_allows(b))
        return RETRY_NO_BUDGET;
    return RETRY_GO;
}

bool retry_idempotent(const char *method, bool has_idempotency_key)
{
    static const char *const safe[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"};

    if (has_idempotency_key)
        return true;
    if (method == NULL)
        return false;
    for (size_t i = 0; i < sizeof safe / sizeof safe[0]; i++)
        if (strcmp(method, safe[i]) == 0)
            return true;
    return false;
}

const char *retry_phase_name(enum retry_phase p)
{
    switch (p) {
    case RETRY_PHASE_CONNECT:
        return "connect";
    case RETRY_PHASE_SEND:
        return "send";
    case RETRY_PHASE_HEAD:
        return "head";
    }
    return "unknown";
}

const char *retry_verdict_name(enum retry_verdict v)
{
    switch (v) {
    case RETRY_GO:
        return "go";
    case RETRY_NO_UNSAFE:
        return "unsafe_method";
    case RETRY_NO_REPLAY:
        return "not_replayable";
    case RETRY_NO_RESPONSE:
        return "response_started";
    case RETRY_NO_ATTEMPTS:
        return "no_attempts_left";
    case RETRY_NO_BUDGET:
        return "budget_exhausted";
    }
    return "unknown";
}
