"""balancer: smooth weighted round robin and the strategy table.
Twin: c-proxy/tests/test_balancer.c."""

from __future__ import annotations

import pytest

from pyproxy.balancer import STRATEGIES, Balancer, balancer_new
from pyproxy.config import ConfigBalancer


def picks(b: Balancer, n: int, tried: int = 0) -> list[int]:
    return [b.pick(tried) for _ in range(n)]


def test_nginx_sequence_5_1_1() -> None:
    b = Balancer("round_robin", [5, 1, 1])
    assert picks(b, 7) == [0, 0, 1, 0, 2, 0, 0]


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_equal_weights_exact(n: int) -> None:
    b = Balancer("round_robin", [1] * n)
    k = 13
    got = picks(b, n * k)
    assert all(got.count(i) == k for i in range(n))


def test_weighted_counts() -> None:
    b = Balancer("round_robin", [3, 1])
    got = picks(b, 400)
    assert got.count(0) == 300 and got.count(1) == 100


def test_tried_bitmap_skips() -> None:
    b = Balancer("round_robin", [1, 1, 1])
    assert all(b.pick(0b010) != 1 for _ in range(10))
    assert b.pick(0b011) == 2
    assert b.pick(0b111) == -1


def test_ops_for() -> None:
    assert "round_robin" in STRATEGIES
    assert isinstance(balancer_new(ConfigBalancer.ROUND_ROBIN, [1]), Balancer)
    assert isinstance(
        balancer_new(ConfigBalancer.HASH, [1]).strategy, type(Balancer("round_robin", [1]).strategy)
    )
    with pytest.raises(ValueError):
        Balancer("nope", [1])
