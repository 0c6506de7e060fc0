"""balancer: picks the upstream for an attempt. Twin: c-proxy/src/balancer.c.

A strategy is a small callbacks table (as h2o's balancer.h): `pick(tried)` returns the index
of an eligible upstream not in the `tried` bitmask, or -1. Concrete strategies live in
balancer_<name>.py and register in STRATEGIES; random, least_conn and hash come later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from pyproxy import balancer_roundrobin


class Strategy(Protocol):
    """The callbacks table every strategy implements."""

    def pick(self, tried: int) -> int:
        """Index of the next upstream not in `tried` (bit i = upstream i), or -1 if none."""
        ...

    def release(self, index: int) -> None:
        """An attempt on upstream `index` finished (least_conn bookkeeping)."""
        ...


#: strategy name (config `balancer:`) -> constructor taking the upstream weights
STRATEGIES: dict[str, Callable[[Sequence[int]], Strategy]] = {
    "round_robin": balancer_roundrobin.RoundRobin,
}


class Balancer:
    """One per config generation (a reload builds a new one). Owns its strategy state."""

    def __init__(self, strategy: str, weights: Sequence[int]) -> None:
        make = STRATEGIES.get(strategy)
        if make is None:
            raise ValueError("balancer %s not implemented" % strategy)
        self.n = len(weights)  # number of upstreams
        self.strategy = make(weights)  # the concrete strategy

    def pick(self, tried: int) -> int:
        """Next upstream index for an attempt, never one in `tried`; -1 when all are tried."""
        if tried == (1 << self.n) - 1:
            return -1
        return self.strategy.pick(tried)

    def release(self, index: int) -> None:
        self.strategy.release(index)


def strategy_name(strategy: object) -> str:
    """The config spelling of a strategy (a string, or an enum whose name is the strategy)."""
    name = getattr(strategy, "name", None)
    return (name if isinstance(name, str) else str(strategy)).lower()


def balancer_new(strategy: object, weights: Sequence[int]) -> Balancer:
    """Balancer for a config value. A strategy not implemented yet runs as round_robin (the
    runtime logs a warning) rather than refusing a config the contract allows."""
    key = strategy_name(strategy)
    return Balancer(key if key in STRATEGIES else "round_robin", weights)
