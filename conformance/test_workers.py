"""workers: N (docs/architecture.md "Workers"): the guarantees that must hold for the
process as a whole, however the kernel spreads new connections over the workers' listeners
(SO_REUSEPORT). Each test first makes sure two distinct workers served its requests (the
access log's `worker` field), so that it cannot pass with one worker doing everything.
Rate limiting, health and reload with two workers are in test_ratelimit.py, test_health.py
and test_signals.py, held to the same check."""

from __future__ import annotations

import pytest

MAX_CONNS = 200  # new connections tried before two workers must have been seen


def _smooth_wrr(weights: list[int], n: int) -> list[int]:
    """The reference sequence (nginx's smooth weighted round robin, behaviour.md
    "Balancing"): n picks of one rotation."""
    cur = [0] * len(weights)
    out = []
    for _ in range(n):
        best = -1
        for i, w in enumerate(weights):
            cur[i] += w
            if best < 0 or cur[i] > cur[best]:
                best = i
        cur[best] -= sum(weights)
        out.append(best)
    return out


def test_access_log_worker_field_one_worker(upstream, proxy):
    p = proxy(upstream(["u1"]))
    for _ in range(5):
        assert p.request("/").status == 200
    p.wait_access_log(5)
    assert [r["worker"] for r in p.access_records()] == [0] * 5


def test_two_workers_both_serve(upstream, proxy):
    """New connections reach both workers: two distinct ids, each 0 or 1, within
    MAX_CONNS connections."""
    p = proxy(upstream(["u1"]), workers=2)
    seen: set[int] = set()
    sent = 0
    while sent < MAX_CONNS and len(seen) < 2:
        assert p.request("/").status == 200
        sent += 1
        p.wait_access_log(sent)
        seen = {r["worker"] for r in p.access_records()}
    assert seen == {0, 1}, f"only worker(s) {seen} served {sent} new connections"


@pytest.mark.parametrize("weights", [[1, 2], [1, 1, 1]], ids=["1-2", "1-1-1"])
def test_round_robin_exact_across_workers(upstream, proxy, weights):
    """One rotation for the whole process: 300 requests, one at a time, each on a new
    connection (spread over both workers) are picked in exactly the single smooth-WRR
    sequence, and the upstreams count exactly their weight's share. A rotation per worker
    fails this as soon as the workers take turns unevenly."""
    names = ["a", "b", "c"][: len(weights)]
    up = upstream(names)
    p = proxy(
        up.entries(weights=dict(zip(names, weights, strict=True))),
        workers=2,
        balancer="round_robin",
    )
    n = 300
    deltas = {name: up.counting(name) for name in names}
    got = []
    for _ in range(n):
        r = p.request("/")
        assert r.status == 200, r
        got.append(r.get("X-Upstream"))
    assert p.workers_serving(0, n) == {0, 1}, "one worker served everything"
    want = [names[i] for i in _smooth_wrr(weights, n)]
    first_bad = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), None)
    assert first_bad is None, (
        f"pick {first_bad} went to {got[first_bad]}, the rotation says {want[first_bad]}: "
        f"{got[max(0, first_bad - 5) : first_bad + 5]}"
    )
    for name, w in zip(names, weights, strict=True):
        deltas[name].update()
        assert deltas[name].requests == n * w // sum(weights), (
            name,
            deltas[name].requests,
        )


def test_reload_starts_a_new_rotation(upstream, proxy):
    """A reload is a new config generation, so a new rotation from its start, even when
    the upstreams are unchanged (workers: 1, where the reload event means the worker
    already has the new config)."""
    up = upstream(["a", "b"])
    p = proxy(up.entries(weights={"a": 1, "b": 2}), balancer="round_robin")
    want = ["ab"[i] for i in _smooth_wrr([1, 2], 3)]  # b a b
    assert [p.request("/").get("X-Upstream") for _ in range(2)] == want[:2]
    p.reload(p.config)
    assert [p.request("/").get("X-Upstream") for _ in range(3)] == want
