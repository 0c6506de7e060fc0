"""reason: the one vocabulary of why the proxy answered an error or closed a connection on
its own (snake_case constants, also metric label values).

Twin: c-proxy/src/reason.h (same names, same order). The list is data:
c-proxy/tests/registry_cases/reasons.txt, which both twins' unit tests check these tables
against (test_log). docs/behaviour.md "Reasons" says when each applies.
"""

from __future__ import annotations

REASONS: tuple[str, ...] = (
    "bad_request",  # 400: malformed or ambiguous request
    "bad_version",  # 505: unsupported HTTP version
    "not_implemented",  # 501: unknown transfer coding
    "head_too_large",  # 431: limits.max_header_bytes
    "body_too_large",  # 413: limits.max_body_bytes
    "header_timeout",  # 408: timeouts.header
    "rate_limited",  # 429
    "no_upstream",  # 503: none healthy (down or drained)
    "queue_timeout",  # 503: timeouts.queue
    "upstreams_exhausted",  # 502: every eligible upstream was tried
    "connect_refused",  # connect refused
    "connect_error",  # connect failed otherwise
    "connect_timeout",  # timeouts.connect
    "upstream_closed",  # upstream EOF before the response ended
    "upstream_reset",  # upstream read error (reset)
    "invalid_response",  # unparsable or ambiguous upstream response
    "read_timeout",  # timeouts.read
    "total_timeout",  # timeouts.total
    "out_of_memory",  # a local allocation failed
    "socket",  # no socket for an upstream connect
    "idle_timeout",  # timeouts.idle: keep-alive client closed
    "write_timeout",  # timeouts.write: a stalled client closed
    "linger_timeout",  # the lingering close after an error ended
    "shutting_down",  # graceful stop: an idle connection closed
    "body_too_slow",  # 408: request body slower than timeouts.min_rate
    "client_too_slow",  # a client reading slower than timeouts.min_rate: reset
)
REASON_N = len(REASONS)
_INDEX = {name: i for i, name in enumerate(REASONS)}


def reason_from_name(s: str | None, dflt: int) -> int:
    """The index of reason `s`, or `dflt` when s is None or not a name of the list."""
    if s is None:
        return dflt
    return _INDEX.get(s, dflt)


def error_reason(code: int, why: str | None) -> int:
    """The reason of an error answered with `code`: `why` when it is a name of the list, else
    the code's own (as C's error_reason)."""
    if code == 505:
        dflt = 1
    elif code == 501:
        dflt = 2
    elif code == 413:
        dflt = 4
    elif code == 431:
        dflt = 3
    elif code >= 500:
        dflt = 15  # invalid_response
    else:
        dflt = 0
    return reason_from_name(why, dflt)
