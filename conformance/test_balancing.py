"""round_robin distribution (contract 5; other strategies come with their own issue)."""

from __future__ import annotations

from collections import Counter

import pytest


def _distribution(p, n: int, per_connection: bool) -> Counter:
    got: Counter = Counter()
    if per_connection:
        for _ in range(n):
            got[p.request("/").get("X-Upstream")] += 1
    else:
        with p.connect() as c:
            for _ in range(n):
                r = c.request("/")
                assert r.status == 200
                got[r.get("X-Upstream")] += 1
    return got


@pytest.mark.parametrize(
    "per_connection", [False, True], ids=["one-conn", "conn-per-request"]
)
def test_equal_weights_exactly_even(upstream, proxy, per_connection):
    up = upstream(["u1", "u2", "u3"])
    p = proxy(up, balancer="round_robin")
    assert _distribution(p, 3 * 7, per_connection) == {"u1": 7, "u2": 7, "u3": 7}


def test_default_balancer_is_round_robin(upstream, proxy):
    up = upstream(["u1", "u2"])
    p = proxy(up)
    assert _distribution(p, 10, False) == {"u1": 5, "u2": 5}


def test_weights_three_to_one(upstream, proxy):
    up = upstream(["a", "b"])
    p = proxy(up.entries(weights={"a": 3, "b": 1}), balancer="round_robin")
    assert _distribution(p, 4 * 6, False) == {"a": 18, "b": 6}


def test_smooth_weighted_order(upstream, proxy):
    # nginx's smooth weighted round robin interleaves: 5:1:1 gives a a b a c a a, not a*5 b c.
    up = upstream(["a", "b", "c"])
    p = proxy(up.entries(weights={"a": 5, "b": 1, "c": 1}))
    with p.connect() as c:
        seq = [c.request("/").get("X-Upstream") for _ in range(14)]
    assert seq == ["a", "a", "b", "a", "c", "a", "a"] * 2
