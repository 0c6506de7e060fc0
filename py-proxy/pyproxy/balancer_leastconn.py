"""balancer_leastconn: fewest attempts in flight per weight, as nginx's least_conn.
Twin: c-proxy/src/balancer_leastconn.c.

Peer i beats peer j when active_i / weight_i < active_j / weight_j, compared exactly as
active_i * weight_j < active_j * weight_i. Peers tied at the best ratio share the picks by
smooth weighted round robin (balancer_roundrobin) over the tied ones only, so with no load at
all least_conn is round robin. `active` is this worker's count (Balancer.attempt_begin/end).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyproxy.balancer import BalancerCtx, Peer, peer_eligible


def _less(a: Peer, b: Peer) -> bool:
    """a.active / a.weight < b.active / b.weight, without division."""
    return a.active * b.weight < b.active * a.weight


class LeastConn:
    __slots__ = ("current",)
    name = "least_conn"

    def __init__(self, peers: Sequence[Peer], group: str | None = None) -> None:
        # group: counts the attempts of this worker (Peer.active)
        self.current = [0] * len(peers)  # smooth WRR current weight per peer, among ties

    def pick(self, peers: Sequence[Peer], ctx: BalancerCtx) -> int:
        n = min(len(peers), len(self.current))
        # ask health once per peer: another worker may change a verdict meanwhile
        ok = [i for i in range(n) if peer_eligible(peers, i, ctx)]
        if not ok:
            return -1
        least = ok[0]
        for i in ok:
            if _less(peers[i], peers[least]):
                least = i
        current = self.current
        total = 0
        best = -1
        for i in ok:
            if i < least or _less(peers[least], peers[i]):
                continue  # not tied with the least loaded one
            w = peers[i].weight
            current[i] += w
            total += w
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        return best

    def attempt_begin(self, peers: Sequence[Peer], i: int) -> None:
        pass

    def attempt_end(self, peers: Sequence[Peer], i: int) -> None:
        pass

    def close(self) -> None:
        pass
