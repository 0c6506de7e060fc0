/* reason: the vocabulary. Twin: py-proxy/pyproxy/reason.py. */
#include "reason.h"

#include <string.h>

static const char *const names[REASON_N] = {
    "bad_request",     "bad_version",         "not_implemented", "head_too_large",
    "body_too_large",  "header_timeout",      "rate_limited",    "no_upstream",
    "queue_timeout",   "upstreams_exhausted", "connect_refused", "connect_error",
    "connect_timeout", "upstream_closed",     "upstream_reset",  "invalid_response",
    "read_timeout",    "total_timeout",       "out_of_memory",   "socket",
    "idle_timeout",    "write_timeout",       "linger_timeout",  "shutting_down",
    "body_too_slow",   "client_too_slow",
};

const char *reason_name(enum reason r)
{
    return (unsigned)r < REASON_N ? names[r] : "";
}

enum reason reason_from_name(const char *s, enum reason dflt)
{
    if (s == NULL)
        return dflt;
    for (unsigned i = 0; i < REASON_N; i++)
        if (strcmp(names[i], s) == 0)
            return (enum reason)i;
    return dflt;
}
