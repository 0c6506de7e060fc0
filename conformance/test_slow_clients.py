"""Hostile slow clients (issue 11): 1,000 slowloris, slow-POST and slow-read connections
(conformance/slowclients.py) while a normal client keeps sending requests. Every normal
request succeeds; every attacker is ended by the proxy at its timeout (408 where a
response is due; a slow reader is reset); the proxy's descriptors come back to the
baseline and its memory stays bounded, also after a second attack. Counts and bounds
only: how fast is measured by `make slow-clients` (docs/conformance.md)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from harness import pattern, process_tree, wait_until
from slowclients import (
    SLOW_LIMITS,
    SLOW_TIMEOUTS,
    Attack,
    fd_count,
    raise_nofile,
    run_attack,
)

EACH = 333  # connections of each kind: 999 attackers
KINDS = ("slowloris", "slowpost", "slowread")
# RSS over the baseline after an attack (any number of them): what the allocator keeps of
# 999 connections' buffers, about 25 MB for C and 80 MB for Python here, reached by the
# second attack and then flat; every attack leaking its connections' buffers (64 kB
# each) would cross it by the second
RSS_GROWTH_MAX_KB = 128 * 1024


def sanitized(pid: int) -> bool:
    """The process runs an AddressSanitizer build (libasan mapped)."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def normal_traffic(p: Any, stop: threading.Event, results: list[Any]) -> None:
    """Requests on fresh connections until stopped; each result True or what went wrong.
    Generous socket timeouts: a slow answer is not a failure here (no speed asserted)."""
    while not stop.is_set():
        try:
            with p.connect(timeout=30) as c:
                r = c.request("/bytes/1024")
            results.append(r.status == 200 and r.body == pattern(0, 1024) or r.status)
        except Exception as e:  # noqa: BLE001 - every failure is a result to report
            results.append(repr(e))


def attack_round(p: Any) -> None:
    """One attack of 3 x EACH connections, normal traffic alongside; asserts the outcomes."""
    stop, results = threading.Event(), []
    normal = threading.Thread(target=normal_traffic, args=(p, stop, results))
    normal.start()
    try:
        # bounded: every attacker is due to be ended within a few seconds (header 5s,
        # min_rate windows of 1s); one still open after 40 s was not ended by the proxy
        atk = Attack("127.0.0.1", p.port, EACH)
        got = run_attack(atk, seconds=40)
    finally:
        stop.set()
        normal.join()

    assert got["opened"] == {k: EACH for k in KINDS}, got
    by_kind: dict[str, list[Any]] = {k: [] for k in KINDS}
    for o in atk.outcomes:
        by_kind[o.kind].append(o)
    # a response was due: 408, then the connection closed
    for kind in ("slowloris", "slowpost"):
        bad = [
            o
            for o in by_kind[kind]
            if o.status != 408 or o.ended not in ("eof", "reset")
        ]
        assert not bad, (
            f"{kind}: {len(bad)} not ended with a 408: {got['outcomes'][kind]}"
        )
    # the response had started: the connection is reset before the response's end
    bad = [
        o
        for o in by_kind["slowread"]
        if o.status != 200 or o.ended != "reset" or o.received >= 10**9
    ]
    assert not bad, f"slowread: {len(bad)} not reset: {got['outcomes']['slowread']}"

    failures = [r for r in results if r is not True]
    assert results and not failures, (
        f"{len(failures)} of {len(results)} normal requests failed: {failures[:5]}"
    )


@pytest.mark.timeout(300)
def test_slow_clients_are_ended_and_normal_traffic_succeeds(upstream, proxy):
    raise_nofile(8192)
    p = proxy(
        upstream(["u1"]),
        timeouts=SLOW_TIMEOUTS,
        limits=SLOW_LIMITS,
        log={"access": "off"},
    )
    tree = process_tree(p.proc.pid)
    for _ in range(50):
        assert p.request("/bytes/1024").status == 200
    fds0, rss0 = fd_count(tree), p.rss_kb()
    # descriptors back to the baseline, a few pooled upstream connections aside
    slack = SLOW_LIMITS["upstream_idle_connections"] + 2
    for i in range(2):
        attack_round(p)
        assert wait_until(lambda: fd_count(tree) <= fds0 + slack, 20), (
            f"fds: {fds0} before the attack, {fd_count(tree)} after attack {i + 1}"
        )
        rss = p.rss_kb()
        # (an ASan build keeps freed memory in its quarantine; its leak check at exit
        # stands in for this bound)
        assert rss <= rss0 + RSS_GROWTH_MAX_KB or sanitized(p.proc.pid), (
            f"RSS {rss0} kB before, {rss} kB after attack {i + 1}"
        )
    assert p.request("/bytes/1024").status == 200
