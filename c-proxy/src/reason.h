/* reason: the one vocabulary of why the proxy answered an error or closed a
 * connection on its own (snake_case constants, also metric label values).
 *
 * Twin: py-proxy/pyproxy/reason.py (same names, same order). The list is data:
 * c-proxy/tests/registry_cases/reasons.txt, which both twins' unit tests check
 * these tables against (test_log). docs/behaviour.md "Reasons" says when each
 * applies.
 */
#ifndef TWINPROXY_REASON_H
#define TWINPROXY_REASON_H

enum reason {
    REASON_BAD_REQUEST = 0,     /* 400: malformed or ambiguous request */
    REASON_BAD_VERSION,         /* 505: unsupported HTTP version */
    REASON_NOT_IMPLEMENTED,     /* 501: unknown transfer coding */
    REASON_HEAD_TOO_LARGE,      /* 431: limits.max_header_bytes */
    REASON_BODY_TOO_LARGE,      /* 413: limits.max_body_bytes */
    REASON_HEADER_TIMEOUT,      /* 408: timeouts.header */
    REASON_RATE_LIMITED,        /* 429 */
    REASON_NO_UPSTREAM,         /* 503: none healthy (down or drained) */
    REASON_QUEUE_TIMEOUT,       /* 503: timeouts.queue */
    REASON_UPSTREAMS_EXHAUSTED, /* 502: every eligible upstream was tried */
    REASON_CONNECT_REFUSED,     /* connect refused */
    REASON_CONNECT_ERROR,       /* connect failed otherwise */
    REASON_CONNECT_TIMEOUT,     /* timeouts.connect */
    REASON_UPSTREAM_CLOSED,     /* upstream EOF before the response ended */
    REASON_UPSTREAM_RESET,      /* upstream read error (reset) */
    REASON_INVALID_RESPONSE,    /* unparsable or ambiguous upstream response */
    REASON_READ_TIMEOUT,        /* timeouts.read */
    REASON_TOTAL_TIMEOUT,       /* timeouts.total */
    REASON_OUT_OF_MEMORY,       /* a local allocation failed */
    REASON_SOCKET,              /* no socket for an upstream connect */
    REASON_IDLE_TIMEOUT,        /* timeouts.idle: keep-alive client closed */
    REASON_WRITE_TIMEOUT,       /* timeouts.write: a stalled client closed */
    REASON_LINGER_TIMEOUT,      /* the lingering close after an error ended */
    REASON_SHUTTING_DOWN,       /* graceful stop: an idle connection closed */
    REASON_BODY_TOO_SLOW,       /* 408: request body slower than timeouts.min_rate */
    REASON_CLIENT_TOO_SLOW,     /* a client reading slower than timeouts.min_rate: reset */
    REASON_N,
};

/* The snake_case name of r ("" out of range). */
const char *reason_name(enum reason r);

/* The reason named s, or `dflt` when s is NULL or not a name of the list. */
enum reason reason_from_name(const char *s, enum reason dflt);

#endif
