"""balancer: picks the upstream for an attempt. Twin: c-proxy/src/balancer.c.

A strategy is a small callbacks table (as h2o's balancer.h): `pick(peers, ctx)` returns the
index of an eligible peer (peer_eligible) or -1; `attempt_begin/attempt_end(peers, i)` are its
bookkeeping hooks. Concrete strategies live in balancer_<name>.py; only balancer_ops_for()
knows the list. A Peer carries what every strategy may read: the configured weight, the
attempts in flight and the shared health verdict. Time, the tried bitmask and the hash key
come in through BalancerCtx, so strategies are pure functions of their inputs.

Only balancer code writes peer state: `active` changes in Balancer.attempt_begin/attempt_end,
which also tell health (HealthState.attempt_begin/attempt_end).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyproxy.health import HealthOutcome, HealthState


@dataclass(slots=True)
class Peer:
    """struct balancer_peer."""

    weight: int  # configured weight, 1..1000
    active: int = 0  # attempts in flight on it (this worker); balancer writes
    health: HealthState | None = None  # shared verdict; None = always healthy (unit tests)
    name: str = ""  # upstream name: its identity on the hash ring ("": the index)


@dataclass(slots=True)
class BalancerCtx:
    """struct balancer_ctx."""

    tried: int  # skip these (bit i = peer i)
    now: float  # loop time
    client_ip: str = ""  # hash fallback key
    key: bytes = b""  # hash key bytes (header value / path); empty: hash client_ip instead


def peer_eligible(peers: Sequence[Peer], i: int, ctx: BalancerCtx) -> bool:
    """Not in ctx.tried, and its health is available at ctx.now (not down, not drained, or
    the single passive probe after fail_timeout is free)."""
    if ctx.tried >> i & 1:
        return False
    h = peers[i].health
    return h is None or h.available(ctx.now)


class Strategy(Protocol):
    """The callbacks table every strategy implements (struct balancer_ops)."""

    name: str  # config name

    def pick(self, peers: Sequence[Peer], ctx: BalancerCtx) -> int:
        """Index of an eligible peer to try, or -1 when none is."""
        ...

    def attempt_begin(self, peers: Sequence[Peer], i: int) -> None:
        """An attempt on peer i starts (after `active` went up)."""
        ...

    def attempt_end(self, peers: Sequence[Peer], i: int) -> None:
        """That attempt ended (before `active` goes down)."""
        ...

    def close(self) -> None:
        """The set is retired (C: destroy): let go of what is shared."""
        ...


# (peers, group): states made with the same non-None group are one state shared by the
# workers (round_robin: one rotation for the process tree, per config generation; see
# upstream.py); None: a private state.
StrategyFactory = Callable[[Sequence[Peer], str | None], Strategy]


def strategy_name(strategy: object) -> str:
    """The config spelling of a strategy (a string, or an enum whose value is the spelling)."""
    value = getattr(strategy, "value", strategy)
    return str(value).lower()


class Balancer:
    """struct balancer: one per upstream set (a reload builds a new one). Owns its peers and
    its strategy state."""

    def __init__(
        self, ops: StrategyFactory, peers: Sequence[Peer], group: str | None = None
    ) -> None:
        self.peers = list(peers)  # one per upstream, same order
        self.n = len(self.peers)  # number of upstreams
        self.strategy = ops(self.peers, group)  # the concrete strategy (balancer_init)

    def pick(self, ctx: BalancerCtx) -> int:
        """Index of the peer for the next attempt, or -1 when no peer is eligible."""
        return self.strategy.pick(self.peers, ctx)

    def attempt_begin(self, i: int, now: float) -> None:
        """An attempt on peer i starts: active += 1, the strategy hook, health (which claims
        the probe of an upstream whose fail_timeout is over)."""
        if not 0 <= i < self.n:
            return
        p = self.peers[i]
        p.active += 1
        self.strategy.attempt_begin(self.peers, i)
        if p.health is not None:
            p.health.attempt_begin(now)

    def attempt_end(self, i: int, outcome: HealthOutcome, reason: str | None, now: float) -> None:
        """That attempt ended with `outcome`: the strategy hook, active -= 1, health.
        Call exactly once per attempt_begin."""
        if not 0 <= i < self.n:
            return
        p = self.peers[i]
        self.strategy.attempt_end(self.peers, i)
        if p.active:
            p.active -= 1
        if p.health is not None:
            p.health.attempt_end(outcome, reason, now)

    def close(self) -> None:
        """The set is retired (balancer_deinit): the strategy lets go of shared state."""
        self.strategy.close()
