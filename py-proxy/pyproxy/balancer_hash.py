"""balancer_hash: consistent hashing on a ketama-style ring. Twin: c-proxy/src/balancer_hash.c.

Each peer puts 160 points per weight unit on a 64-bit ring: point j of the peer named NAME is
hash64(b"NAME-j") (j in decimal, 0-based), NAME being the upstream's name (its index in decimal
when it has none). The ring is sorted by (point, peer index). A request's key hashes to h; its
owner is the peer of the first point >= h (wrapping to the first point). A key whose owner is
not eligible (tried, down, drained) goes to the next eligible peer clockwise, which is exactly
where the ring without that peer would send it: removing one of N upstreams moves only the keys
it owned (about 1/N).

The key is ctx.key (header value or path); when empty, ctx.client_ip, i.e. the very bytes
`hash_key: client_ip` would hash.

hash64 = 64-bit FNV-1a, then the splitmix64 finalizer; the C twin computes the same values
(c-proxy/tests/balancer_cases/hash_vectors.txt proves it).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from pyproxy.balancer import BalancerCtx, Peer, peer_eligible

POINTS_PER_WEIGHT = 160

_MASK = (1 << 64) - 1
_PEER_BITS = 32
_PEER_MASK = (1 << _PEER_BITS) - 1
_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3


def _fnv1a64(h: int, data: bytes) -> int:
    for b in data:
        h = ((h ^ b) * _FNV64_PRIME) & _MASK
    return h


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def hash64(data: bytes) -> int:
    """balancer_hash64(): 64-bit FNV-1a of the bytes, then the splitmix64 finalizer."""
    return _mix64(_fnv1a64(_FNV64_OFFSET, data))


class Hash:
    __slots__ = ("owners", "points")
    name = "hash"

    def __init__(self, peers: Sequence[Peer], group: str | None = None) -> None:
        # group: the ring is a pure function of the peers: nothing to share
        ring: list[int] = []  # point << _PEER_BITS | peer: ints sort faster than tuples
        for i, p in enumerate(peers):
            name = (p.name or str(i)).encode()
            prefix = _fnv1a64(_FNV64_OFFSET, name + b"-")
            # FNV-1a of "NAME-j": the state after the digits of j // 10, then j's last digit
            # (one step per point instead of one per digit; the same value)
            state = [0] * (p.weight * POINTS_PER_WEIGHT)
            for j in range(len(state)):
                h = prefix if j < 10 else state[j // 10]
                h = state[j] = ((h ^ (0x30 + j % 10)) * _FNV64_PRIME) & _MASK
                ring.append(_mix64(h) << _PEER_BITS | i)
        ring.sort()
        self.points = [v >> _PEER_BITS for v in ring]  # sorted ring positions
        self.owners = [v & _PEER_MASK for v in ring]  # peer index of each position

    def pick(self, peers: Sequence[Peer], ctx: BalancerCtx) -> int:
        n = len(peers)
        size = len(self.points)
        if size == 0 or not any(peer_eligible(peers, i, ctx) for i in range(n)):
            return -1
        key = ctx.key or ctx.client_ip.encode()
        at = bisect_left(self.points, hash64(key))
        owners = self.owners
        for _ in range(size):  # clockwise to the first eligible owner; at most one lap
            if at == size:
                at = 0
            peer = owners[at]
            if peer < n and peer_eligible(peers, peer, ctx):
                return peer
            at += 1
        return -1  # the last eligible peer went down during the lap

    def attempt_begin(self, peers: Sequence[Peer], i: int) -> None:
        pass

    def attempt_end(self, peers: Sequence[Peer], i: int) -> None:
        pass

    def close(self) -> None:
        pass
