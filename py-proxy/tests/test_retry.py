"""Unit tests of pyproxy.retry. Twin: c-proxy/tests/test_retry.c (same names, same cases)."""

from __future__ import annotations

from dataclasses import replace

from pyproxy.retry import (
    RetryAttempt,
    RetryBudget,
    RetryPhase,
    RetryVerdict,
    retry_budget_allows,
    retry_decide,
    retry_idempotent,
    retry_phase_name,
    retry_verdict_name,
)

# A budget that never says no: the method/phase rules alone decide.
AMPLE = RetryBudget(percent=20, min_concurrent=3)


def attempt(phase: RetryPhase, method: str) -> RetryAttempt:
    return RetryAttempt(
        phase=phase,
        idempotent=retry_idempotent(method, False),
        replayable=True,
        response_started=False,
        attempts=1,
        max_attempts=3,
    )


def test_connect_retried_for_every_method() -> None:
    for method in ("GET", "POST", "PATCH", "PUT", "CONNECT", "FOO"):
        a = attempt(RetryPhase.CONNECT, method)
        assert retry_decide(a, AMPLE) is RetryVerdict.GO
        # nothing was sent: replay does not matter
        assert retry_decide(replace(a, replayable=False), AMPLE) is RetryVerdict.GO


def test_send_and_head_retried_when_idempotent() -> None:
    for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"):
        a = attempt(RetryPhase.SEND, method)
        assert retry_decide(a, AMPLE) is RetryVerdict.GO
        assert retry_decide(replace(a, phase=RetryPhase.HEAD), AMPLE) is RetryVerdict.GO


def test_send_and_head_post_not_retried() -> None:
    for method in ("POST", "PATCH", "CONNECT"):
        a = attempt(RetryPhase.SEND, method)
        assert retry_decide(a, AMPLE) is RetryVerdict.NO_UNSAFE
        assert retry_decide(replace(a, phase=RetryPhase.HEAD), AMPLE) is RetryVerdict.NO_UNSAFE


def test_idempotency_key_makes_post_retryable() -> None:
    a = replace(attempt(RetryPhase.HEAD, "POST"), idempotent=retry_idempotent("POST", True))
    assert a.idempotent
    assert retry_decide(a, AMPLE) is RetryVerdict.GO
    assert retry_decide(replace(a, phase=RetryPhase.SEND), AMPLE) is RetryVerdict.GO
    assert retry_idempotent("PATCH", True)


def test_never_after_response_started() -> None:
    for phase in (RetryPhase.CONNECT, RetryPhase.SEND, RetryPhase.HEAD):
        a = replace(attempt(phase, "GET"), response_started=True)
        assert retry_decide(a, AMPLE) is RetryVerdict.NO_RESPONSE


def test_not_replayable_not_retried_after_send() -> None:
    a = replace(attempt(RetryPhase.SEND, "PUT"), replayable=False)
    assert retry_decide(a, AMPLE) is RetryVerdict.NO_REPLAY
    assert retry_decide(replace(a, phase=RetryPhase.HEAD), AMPLE) is RetryVerdict.NO_REPLAY
    assert retry_decide(replace(a, phase=RetryPhase.CONNECT), AMPLE) is RetryVerdict.GO
    # an unsafe method is refused for being unsafe first
    a = replace(attempt(RetryPhase.HEAD, "POST"), replayable=False)
    assert retry_decide(a, AMPLE) is RetryVerdict.NO_UNSAFE


def test_attempts_exhausted() -> None:
    a = attempt(RetryPhase.CONNECT, "GET")
    assert retry_decide(replace(a, attempts=2), AMPLE) is RetryVerdict.GO
    assert retry_decide(replace(a, attempts=3), AMPLE) is RetryVerdict.NO_ATTEMPTS
    # retries: 0
    assert retry_decide(replace(a, attempts=1, max_attempts=1), AMPLE) is RetryVerdict.NO_ATTEMPTS


def test_budget_min_concurrent() -> None:
    a = attempt(RetryPhase.CONNECT, "GET")
    b = RetryBudget(percent=20, min_concurrent=3, requests_in_flight=1)
    # 20% of 1 is 0: min_concurrent allows 3 retries in flight
    for n in range(3):
        b.retries_in_flight = n
        assert retry_decide(a, b) is RetryVerdict.GO
    b.retries_in_flight = 3
    assert retry_decide(a, b) is RetryVerdict.NO_BUDGET


def test_budget_percent() -> None:
    a = attempt(RetryPhase.HEAD, "GET")
    b = RetryBudget(percent=20, min_concurrent=3, requests_in_flight=100)
    b.retries_in_flight = 19  # 20 allowed
    assert retry_decide(a, b) is RetryVerdict.GO
    b.retries_in_flight = 20
    assert retry_decide(a, b) is RetryVerdict.NO_BUDGET
    b.requests_in_flight = 104  # floor(20.8) = 20
    assert retry_decide(a, b) is RetryVerdict.NO_BUDGET
    b.requests_in_flight = 105  # 21
    assert retry_decide(a, b) is RetryVerdict.GO
    b.percent = 100
    b.requests_in_flight = 4294967295  # the C twin must not overflow
    b.retries_in_flight = 4294967294
    assert retry_decide(a, b) is RetryVerdict.GO


def test_budget_zero_disables_retries() -> None:
    a = attempt(RetryPhase.CONNECT, "GET")
    b = RetryBudget(percent=0, min_concurrent=0, requests_in_flight=1000)
    assert retry_decide(a, b) is RetryVerdict.NO_BUDGET
    assert not retry_budget_allows(b)


def test_phase_names() -> None:
    assert retry_phase_name(RetryPhase.CONNECT) == "connect"
    assert retry_phase_name(RetryPhase.SEND) == "send"
    assert retry_phase_name(RetryPhase.HEAD) == "head"
    assert RetryPhase.CONNECT == 0
    assert RetryPhase.HEAD == 2


def test_idempotent_methods() -> None:
    for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"):
        assert retry_idempotent(method, False)
        assert retry_idempotent(method.encode(), False)
    for method in ("POST", "PATCH", "CONNECT", "get", "PROPFIND", ""):
        assert not retry_idempotent(method, False)
        assert retry_idempotent(method, True)


def test_verdict_names() -> None:
    assert retry_verdict_name(RetryVerdict.GO) == "go"
    assert retry_verdict_name(RetryVerdict.NO_UNSAFE) == "unsafe_method"
    assert retry_verdict_name(RetryVerdict.NO_REPLAY) == "not_replayable"
    assert retry_verdict_name(RetryVerdict.NO_RESPONSE) == "response_started"
    assert retry_verdict_name(RetryVerdict.NO_ATTEMPTS) == "no_attempts_left"
    assert retry_verdict_name(RetryVerdict.NO_BUDGET) == "budget_exhausted"
