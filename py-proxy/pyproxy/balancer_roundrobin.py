"""balancer_roundrobin: smooth weighted round robin, as nginx's ngx_http_upstream_get_peer().
Twin: c-proxy/src/balancer_roundrobin.c.

Each pick adds every eligible peer's weight to its current weight, takes the peer with the
highest current weight (first wins a tie) and subtracts the total from it. With weights 5,1,1
the sequence is a a b a c a a: spread out, and N*k picks over equal weights give exactly k each.
"""

from __future__ import annotations

from collections.abc import Sequence


class RoundRobin:
    __slots__ = ("current", "weights")

    def __init__(self, weights: Sequence[int]) -> None:
        self.weights = list(weights)  # configured weight per upstream (1..1000)
        self.current = [0] * len(weights)  # smooth WRR current weight per upstream

    def pick(self, tried: int) -> int:
        best = -1
        total = 0
        current = self.current
        for i, w in enumerate(self.weights):
            if tried >> i & 1:
                continue
            current[i] += w
            total += w
            if best < 0 or current[i] > current[best]:
                best = i
        if best >= 0:
            current[best] -= total
        return best

    def release(self, index: int) -> None:
        pass
