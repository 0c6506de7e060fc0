"""balancer_random: weighted random. Twin: c-proxy/src/balancer_random.c.

Each pick draws r uniformly in [0, W), W the sum of the eligible peers' weights, and returns
the eligible peer whose cumulative weight range (in index order) holds r: a peer of weight w
gets w/W of the picks. One generator per strategy state (random.Random seeded from the OS; the
C twin uses splitmix64 seeded at create).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pyproxy.balancer import BalancerCtx, Peer, peer_eligible


class Random:
    __slots__ = ("rng",)
    name = "random"

    def __init__(self, peers: Sequence[Peer], group: str | None = None) -> None:
        # group: independent draws per worker
        self.rng = random.Random()  # this state's generator, seeded from the OS

    def pick(self, peers: Sequence[Peer], ctx: BalancerCtx) -> int:
        # ask health once per peer: another worker may change a verdict meanwhile
        ok = [i for i in range(len(peers)) if peer_eligible(peers, i, ctx)]
        total = sum(peers[i].weight for i in ok)
        if total <= 0:
            return -1
        r = self.rng.randrange(total)
        for i in ok:
            w = peers[i].weight
            if r < w:
                return i
            r -= w
        return -1  # not reached

    def attempt_begin(self, peers: Sequence[Peer], i: int) -> None:
        pass

    def attempt_end(self, peers: Sequence[Peer], i: int) -> None:
        pass

    def close(self) -> None:
        pass
