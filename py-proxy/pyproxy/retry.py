"""retry: may a failed attempt be tried again on another upstream (contract section 6)?

Twin: c-proxy/src/retry.c (same enums in the same order, same verdicts).

Pure: no I/O, no clock, no globals. The caller (exchange) describes the failed attempt
and the worker's retry budget counters; retry_decide() answers. The caller still checks
that an untried eligible upstream exists (the balancer) and answers 502 (504 for a read
timeout in the head phase) when the verdict is not GO. docs/behaviour.md "Retries" is
the user-facing description.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RetryPhase(enum.IntEnum):
    """enum retry_phase: where an attempt failed."""

    CONNECT = 0  # refused, failed or timed out: nothing was sent
    SEND = 1  # the connection failed while the request was written
    HEAD = 2  # reset, EOF or read timeout before any response byte


class RetryVerdict(enum.IntEnum):
    """enum retry_verdict, checked in this order (the first rule that says no wins)."""

    GO = 0  # retry on another upstream
    NO_UNSAFE = 1  # send/head phase and the request is not idempotent
    NO_REPLAY = 2  # send/head phase and the request is no longer all buffered
    NO_RESPONSE = 3  # response bytes already reached the client
    NO_ATTEMPTS = 4  # 1 + retries attempts made
    NO_BUDGET = 5  # retry_budget exhausted (event retry_skipped)


@dataclass
class RetryBudget:
    """struct retry_budget (Envoy's): retries in flight may add percent% on top of the
    requests in flight, but min_concurrent retries are always allowed."""

    percent: int  # config retry_budget.percent, 0..100
    min_concurrent: int  # config retry_budget.min_concurrent
    requests_in_flight: int = 0  # this worker's requests being proxied now
    retries_in_flight: int = 0  # this worker's retries (attempts after the first) now


@dataclass(frozen=True)
class RetryAttempt:
    """struct retry_attempt: one failed attempt, as the exchange sees it."""

    phase: RetryPhase  # where it failed
    idempotent: bool  # retry_idempotent(): method, or an Idempotency-Key header
    replayable: bool  # the whole request is still in the upstream-side buffer
    response_started: bool  # response bytes reached the client
    attempts: int  # attempts made so far, this one included (>= 1)
    max_attempts: int  # 1 + config retries


def retry_budget_allows(b: RetryBudget) -> bool:
    """True when the budget allows one more retry in flight."""
    allowed = max(b.min_concurrent, b.percent * b.requests_in_flight // 100)
    return b.retries_in_flight + 1 <= allowed


def retry_decide(a: RetryAttempt, b: RetryBudget) -> RetryVerdict:
    """The verdict for `a` under budget `b`. Rules, in order: response_started ->
    NO_RESPONSE; attempts >= max_attempts -> NO_ATTEMPTS; send/head and not idempotent
    -> NO_UNSAFE; send/head and not replayable -> NO_REPLAY; then the budget: GO only if
    retries_in_flight + 1 <= max(min_concurrent, percent * requests_in_flight // 100),
    else NO_BUDGET. A connect failure passes the method rules for every method."""
    if a.response_started:
        return RetryVerdict.NO_RESPONSE
    if a.attempts >= a.max_attempts:
        return RetryVerdict.NO_ATTEMPTS
    if a.phase is not RetryPhase.CONNECT:
        if not a.idempotent:
            return RetryVerdict.NO_UNSAFE
        if not a.replayable:
            return RetryVerdict.NO_REPLAY
    if not retry_budget_allows(b):
        return RetryVerdict.NO_BUDGET
    return RetryVerdict.GO


_IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))


def retry_idempotent(method: str | bytes, has_idempotency_key: bool) -> bool:
    """GET HEAD OPTIONS PUT DELETE TRACE (exact, case-sensitive as RFC 9110 methods), or
    any method when the request carries an Idempotency-Key header."""
    if has_idempotency_key:
        return True
    if isinstance(method, bytes):
        method = method.decode("latin-1")
    return method in _IDEMPOTENT


_PHASE_NAMES = {RetryPhase.CONNECT: "connect", RetryPhase.SEND: "send", RetryPhase.HEAD: "head"}

_VERDICT_NAMES = {
    RetryVerdict.GO: "go",
    RetryVerdict.NO_UNSAFE: "unsafe_method",
    RetryVerdict.NO_REPLAY: "not_replayable",
    RetryVerdict.NO_RESPONSE: "response_started",
    RetryVerdict.NO_ATTEMPTS: "no_attempts_left",
    RetryVerdict.NO_BUDGET: "budget_exhausted",
}


def retry_phase_name(p: RetryPhase) -> str:
    """ "connect" | "send" | "head": the `phase` field of the retry event."""
    return _PHASE_NAMES.get(p, "unknown")


def retry_verdict_name(v: RetryVerdict) -> str:
    """The `reason` of a retry_skipped event (a metric label)."""
    return _VERDICT_NAMES.get(v, "unknown")
