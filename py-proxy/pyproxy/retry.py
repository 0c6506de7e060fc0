"""retry: may a failed attempt be retried (contract 6)? Pure. Twin: c-proxy/src/retry.c.

An attempt fails in a phase: CONNECT (nothing was sent), SEND (the connection failed while
the request was being written), HEAD (reset, EOF or read timeout after the request was
written, before any response byte). retry_decide() applies the rules in this order:
response started -> NO_RESPONSE; attempts used up -> NO_ATTEMPTS; SEND/HEAD of a request that
is neither idempotent nor carries an Idempotency-Key -> NO_UNSAFE; SEND/HEAD of a request no
longer held whole for replay -> NO_REPLAY; retries in flight over the budget -> NO_BUDGET.
The caller checks that an untried eligible upstream exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class RetryPhase(IntEnum):
    CONNECT = 0  # refused, failed or timed out: nothing was sent
    SEND = 1  # failed while the request was being written
    HEAD = 2  # request written, no response byte yet


class RetryVerdict(IntEnum):
    GO = 0  # retry on another upstream
    NO_UNSAFE = 1  # send/head phase of a non-idempotent request
    NO_REPLAY = 2  # send/head phase, the request is no longer held whole
    NO_RESPONSE = 3  # response bytes reached the client
    NO_ATTEMPTS = 4  # 1 + retries attempts made
    NO_BUDGET = 5  # retry_budget exhausted


@dataclass(slots=True)
class RetryBudget:
    percent: int  # config retry_budget.percent
    min_concurrent: int  # config retry_budget.min_concurrent
    requests_in_flight: int  # worker counter
    retries_in_flight: int  # worker counter


@dataclass(slots=True)
class RetryAttempt:
    phase: RetryPhase  # where the attempt failed
    idempotent: bool  # idempotent method or Idempotency-Key present
    replayable: bool  # the whole request is still held for replay
    response_started: bool  # response bytes reached the client
    attempts: int  # attempts made so far (this one included)
    max_attempts: int  # 1 + retries


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def retry_idempotent(method: str, has_idempotency_key: bool) -> bool:
    """GET HEAD OPTIONS PUT DELETE TRACE, or any method with an Idempotency-Key."""
    return has_idempotency_key or method in _IDEMPOTENT


def retry_phase_name(p: RetryPhase) -> str:
    """ "connect" | "send" | "head" (event and metric label)."""
    return ("connect", "send", "head")[p]


def retry_decide(a: RetryAttempt, b: RetryBudget) -> RetryVerdict:
    if a.response_started:
        return RetryVerdict.NO_RESPONSE
    if a.attempts >= a.max_attempts:
        return RetryVerdict.NO_ATTEMPTS
    if a.phase != RetryPhase.CONNECT:
        if not a.idempotent:
            return RetryVerdict.NO_UNSAFE
        if not a.replayable:
            return RetryVerdict.NO_REPLAY
    allowed = max(b.min_concurrent, b.percent * b.requests_in_flight // 100)
    if b.retries_in_flight + 1 > allowed:
        return RetryVerdict.NO_BUDGET
    return RetryVerdict.GO
