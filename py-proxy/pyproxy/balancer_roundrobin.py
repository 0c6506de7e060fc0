"""balancer_roundrobin: smooth weighted round robin, as nginx's ngx_http_upstream_get_peer().
Twin: c-proxy/src/balancer_roundrobin.c.

Each pick adds every eligible peer's weight to its current weight, takes the peer with the
highest current weight (first wins a tie) and subtracts the total from it. With weights 5,1,1
the sequence is a a b a c a a: spread out, and N*k picks over equal weights give exactly k each.
Peers not eligible (tried, down, drained) take no part in a pick.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyproxy.balancer import BalancerCtx, Peer, peer_eligible


class RoundRobin:
    __slots__ = ("current",)
    name = "round_robin"

    def __init__(self, peers: Sequence[Peer]) -> None:
        self.current = [0] * len(peers)  # smooth WRR current weight per peer

    def pick(self, peers: Sequence[Peer], ctx: BalancerCtx) -> int:
        best = -1
        total = 0
        current = self.current
        for i in range(min(len(peers), len(current))):
            if not peer_eligible(peers, i, ctx):
                continue
            w = peers[i].weight
            current[i] += w
            total += w
            if best < 0 or current[i] > current[best]:
                best = i
        if best >= 0:
            current[best] -= total
        return best

    def attempt_begin(self, peers: Sequence[Peer], i: int) -> None:
        pass

    def attempt_end(self, peers: Sequence[Peer], i: int) -> None:
        pass
