"""balancer: the strategy/peer contract and every strategy (round_robin, random, least_conn,
hash). Twin: c-proxy/tests/test_balancer.c (same test names, same cases).

Health is a fake here (FakeHealth): these tests are about what the balancer does with a
verdict, not how health reaches it. Statistical bounds are stated where a test samples.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pyproxy.balancer import Balancer, BalancerCtx, Peer
from pyproxy.balancer_hash import POINTS_PER_WEIGHT, hash64
from pyproxy.balancer_roundrobin import rr_registry_init
from pyproxy.balancer_strategies import balancer_new, balancer_ops_for
from pyproxy.config import ConfigBalancer
from pyproxy.health import HealthOutcome, HealthState

VECTORS = Path(__file__).parents[2] / "c-proxy/tests/balancer_cases/hash_vectors.txt"


class FakeHealth(HealthState):
    """A verdict the test sets, and a record of the attempt hooks the balancer calls."""

    def __init__(self, up: bool = True) -> None:
        self.up = up  # available()
        self.begins = 0  # attempt_begin calls
        self.ends: list[tuple[HealthOutcome, str | None]] = []  # attempt_end calls

    def available(self, now: float) -> bool:
        return self.up

    def attempt_begin(self, now: float) -> None:
        self.begins += 1

    def attempt_end(self, outcome: HealthOutcome, reason: str | None, now: float) -> None:
        self.ends.append((outcome, reason))


def make(strategy: str, weights: Sequence[int], names: Sequence[str] | None = None) -> Balancer:
    peers = [
        Peer(w, health=FakeHealth(), name=names[i] if names else "") for i, w in enumerate(weights)
    ]
    return balancer_new(strategy, peers)


def health(b: Balancer, i: int) -> FakeHealth:
    h = b.peers[i].health
    assert isinstance(h, FakeHealth)
    return h


def pick(b: Balancer, tried: int = 0, key: bytes = b"", ip: str = "127.0.0.1") -> int:
    return b.pick(BalancerCtx(tried, 0.0, ip, key))


def picks(b: Balancer, n: int, tried: int = 0) -> list[int]:
    return [pick(b, tried) for _ in range(n)]


# ---------------------------------------------------------------- round_robin


def test_nginx_sequence_5_1_1() -> None:
    b = make("round_robin", [5, 1, 1])
    # nginx's documented smooth sequence for a=5 b=1 c=1: a a b a c a a
    assert picks(b, 14) == [0, 0, 1, 0, 2, 0, 0] * 2


def test_equal_weights_exact() -> None:
    n, k = 4, 25
    b = make("round_robin", [1] * n)
    assert Counter(picks(b, n * k)) == {i: k for i in range(n)}


def test_weighted_counts() -> None:
    b = make("round_robin", [3, 2, 5])
    assert Counter(picks(b, 1000)) == {0: 300, 1: 200, 2: 500}


def test_tried_bitmap_skips() -> None:
    b = make("round_robin", [1, 1, 1])
    tried = 0
    for _ in range(3):
        p = pick(b, tried)
        assert 0 <= p < 3 and not tried >> p & 1
        tried |= 1 << p
    assert tried == 0b111
    assert pick(b, tried) == -1  # every upstream tried


def test_down_peers_skipped() -> None:
    b = make("round_robin", [1, 1])
    health(b, 0).up = False
    assert picks(b, 5) == [1] * 5
    health(b, 1).up = False
    assert pick(b) == -1


def _grouped(weights: Sequence[int], group: str) -> Balancer:
    return balancer_new("round_robin", [Peer(w, health=FakeHealth()) for w in weights], group)


def test_round_robin_group_shared() -> None:
    """States made with the same group are one rotation (the workers' sets of one config
    generation); another group is another rotation."""
    a, b = _grouped([1, 1, 1], "gen1"), _grouped([1, 1, 1], "gen1")
    c = _grouped([1, 1, 1], "gen2")
    # alternating between a and b walks one sequence: 0 1 2 0 1 2
    assert [pick(b if i % 2 else a) for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert pick(c) == 0  # its own rotation, from the start
    a.close()
    assert pick(b) == 0  # the shared state outlives a
    b.close()
    c.close()


RR_CHILD_PICKS = 1001


def _rr_child(q: Any) -> None:
    b = _grouped([1, 1], "gen")
    q.put(Counter(picks(b, RR_CHILD_PICKS)))


def test_round_robin_group_concurrent() -> None:
    """Two processes (the C twin: threads) picking at once from one group in the shared
    table: exact counts over all picks. Private states would give 501+501 / 500+500."""
    rr_registry_init(shared=True, slots=4)
    try:
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        procs = [ctx.Process(target=_rr_child, args=(q,)) for _ in range(2)]
        for p in procs:
            p.start()
        total = q.get(timeout=20) + q.get(timeout=20)
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
        assert total == {0: RR_CHILD_PICKS, 1: RR_CHILD_PICKS}
    finally:
        rr_registry_init(shared=False)


def test_round_robin_table_full_and_reuse() -> None:
    """Python only (the shared table is fixed): a full table gives a private state; a
    released slot is reused for a new group, the longest released first."""
    rr_registry_init(shared=True, slots=2)
    try:
        a, b = _grouped([1, 1], "a"), _grouped([1, 1], "b")
        c, c2 = _grouped([1, 1], "c"), _grouped([1, 1], "c")  # no slot: private each
        assert [pick(c), pick(c2)] == [0, 0]
        b.close()
        a.close()
        d, d2 = _grouped([1, 1], "d"), _grouped([1, 1], "d")  # b's old slot
        assert [pick(d), pick(d2)] == [0, 1]
        assert pick(a) == 0  # a retired set still picks, privately
    finally:
        rr_registry_init(shared=False)


def test_ops_for() -> None:
    for kind in ConfigBalancer:
        b = balancer_new(kind, [Peer(1)])
        assert b.strategy.name == kind.value
        assert balancer_ops_for(kind.value) is balancer_ops_for(kind)
    with pytest.raises(ValueError):
        balancer_ops_for("nope")


def test_attempt_begin_end_counts_active() -> None:
    b = make("least_conn", [1, 1])
    b.attempt_begin(1, 0.0)
    b.attempt_begin(1, 0.0)
    assert [p.active for p in b.peers] == [0, 2]
    assert health(b, 1).begins == 2
    b.attempt_end(1, HealthOutcome.FAIL, "connect_refused", 1.0)
    b.attempt_end(1, HealthOutcome.OK, None, 1.0)
    b.attempt_end(1, HealthOutcome.NEUTRAL, None, 1.0)  # one too many: active stays 0
    assert [p.active for p in b.peers] == [0, 0]
    assert health(b, 1).ends == [
        (HealthOutcome.FAIL, "connect_refused"),
        (HealthOutcome.OK, None),
        (HealthOutcome.NEUTRAL, None),
    ]
    b.attempt_begin(7, 0.0)  # out of range: ignored
    assert [p.active for p in b.peers] == [0, 0]


# ---------------------------------------------------------------- random


def test_random_distribution_weighted() -> None:
    # 3:1 over 40,000 picks: peer 0 expects 75%. One standard deviation is 0.22%, so the
    # stated bound of +-3 points is over 13 sigma away: this cannot fail by chance.
    b = make("random", [3, 1])
    got = Counter(picks(b, 40_000))
    assert abs(got[0] / 40_000 - 0.75) <= 0.03
    # 1:2:5 over 40,000: 12.5% / 25% / 62.5%, each within +-3 points (> 13 sigma)
    b = make("random", [1, 2, 5])
    got = Counter(picks(b, 40_000))
    for i, share in enumerate([0.125, 0.25, 0.625]):
        assert abs(got[i] / 40_000 - share) <= 0.03


def test_random_skips_tried_and_down() -> None:
    b = make("random", [1, 1, 1])
    health(b, 1).up = False
    assert set(picks(b, 1000, tried=0b001)) == {2}
    # peer 1 down: 0 and 2 split 50/50 over 10,000 picks within +-5 points (> 10 sigma)
    got = Counter(picks(b, 10_000))
    assert got[1] == 0 and abs(got[0] / 10_000 - 0.5) <= 0.05
    assert pick(b, tried=0b101) == -1


# ---------------------------------------------------------------- least_conn


def test_least_conn_prefers_fewest_active_per_weight() -> None:
    b = make("least_conn", [1, 2, 1])
    for i, a in enumerate([1, 1, 1]):
        b.peers[i].active = a
    assert pick(b) == 1  # 1/2 < 1/1
    for i, a in enumerate([2, 3, 1]):
        b.peers[i].active = a
    assert pick(b) == 2  # 1/1 < 3/2 < 2/1
    b = make("least_conn", [3, 2])
    b.peers[0].active, b.peers[1].active = 2, 1
    assert pick(b) == 1  # 1/2 < 2/3, compared as 1*3 < 2*2
    # attempts that never end: the load follows the weights exactly
    b = make("least_conn", [2, 1])
    for _ in range(300):
        b.attempt_begin(pick(b), 0.0)
    assert [p.active for p in b.peers] == [200, 100]


def test_least_conn_ties_round_robin() -> None:
    b = make("least_conn", [1, 1, 1])
    assert picks(b, 9) == [0, 1, 2] * 3  # no load: plain rotation
    b = make("least_conn", [5, 1, 1])
    assert picks(b, 7) == [0, 0, 1, 0, 2, 0, 0]  # tied by weight: smooth WRR order
    b = make("least_conn", [1, 1, 1])
    b.peers[2].active = 5
    assert picks(b, 6) == [0, 1] * 3  # round robin among the tied only


# ---------------------------------------------------------------- hash


def keys(n: int) -> list[bytes]:
    return [b"key-%d" % i for i in range(n)]


def test_hash_sticky() -> None:
    b = make("hash", [1, 1, 1, 1])
    for k in keys(200):
        first = pick(b, key=k)
        assert all(pick(b, key=k) == first for _ in range(5))
    assert set(pick(b, key=k) for k in keys(200)) == {0, 1, 2, 3}
    # no key: the client ip is hashed, exactly as hash_key: client_ip would hash it
    for ip in ["10.0.0.1", "10.0.0.2", "::1", "192.168.7.9"]:
        assert pick(b, ip=ip) == pick(b, key=ip.encode(), ip="198.51.100.1")


def test_hash_weights() -> None:
    # 1:2:3:4 over 20,000 keys: each share within +-20% of its weight share (relative).
    # The ring's own unevenness at 160 points per weight unit is ~8% for weight 1.
    weights = [1, 2, 3, 4]
    b = make("hash", weights, [f"u{i}" for i in range(4)])
    got = Counter(pick(b, key=k) for k in keys(20_000))
    for i, w in enumerate(weights):
        want = w / sum(weights)
        assert abs(got[i] / 20_000 - want) <= 0.2 * want, (i, got)
    assert len(b.strategy.points) == POINTS_PER_WEIGHT * sum(weights)  # type: ignore[attr-defined]


def test_hash_skips_down_to_next_on_ring() -> None:
    names = ["a", "b", "c", "d"]
    b = make("hash", [1, 2, 1, 1], names)
    # the ring without "b": where a key owned by "b" must go when "b" is not eligible
    without = make("hash", [1, 1, 1], ["a", "c", "d"])
    back = [0, 2, 3]
    owners = {k: pick(b, key=k) for k in keys(2000)}
    health(b, 1).up = False
    moved = 0
    for k, owner in owners.items():
        got = pick(b, key=k)
        assert got == back[pick(without, key=k)]
        if owner != 1:
            assert got == owner  # keys of eligible peers stay
        else:
            moved += 1
    assert moved > 0
    health(b, 1).up = True
    for k in owners:  # tried skips the same way
        assert pick(b, tried=0b0010, key=k) == back[pick(without, key=k)]
    for i in range(4):
        health(b, i).up = False
    assert pick(b, key=b"x") == -1


def test_hash_remap_share_on_removal() -> None:
    # 10,000 keys over N=5 upstreams; remove one (a reload without it). Stated bounds: the
    # share of keys that move is 1/N = 20% +- 5 points, and every key whose upstream
    # survives stays where it was.
    names = [f"10.0.0.{i}:80" for i in range(1, 6)]
    full = make("hash", [1] * 5, names)
    removed = 2
    rest = [n for i, n in enumerate(names) if i != removed]
    after = make("hash", [1] * 4, rest)
    moved = stayed = 0
    for k in keys(10_000):
        before = names[pick(full, key=k)]
        now = rest[pick(after, key=k)]
        if before == names[removed]:
            moved += 1
        else:
            assert now == before
            stayed += 1
    assert abs(moved / 10_000 - 1 / 5) <= 0.05
    assert stayed == 10_000 - moved


def test_hash_same_ring_in_both_twins() -> None:
    peers: list[Peer] = []
    cases = 0
    for raw in VECTORS.read_bytes().splitlines():
        if not raw or raw.startswith(b"#"):
            continue
        kind, rest = raw.split(b" ", 1)
        if kind == b"peer":
            name, weight = rest.split(b" ")
            peers.append(Peer(int(weight), name=name.decode()))
            continue
        b = balancer_new("hash", peers)
        if kind == b"hash":
            key, want = rest.rsplit(b" ", 1)
            assert hash64(key) == int(want, 16), raw
        elif kind == b"key":
            key, want = rest.rsplit(b" ", 1)
            assert b.pick(BalancerCtx(0, 0.0, "", key)) == int(want), raw
        elif kind == b"ip":
            ip, want = rest.rsplit(b" ", 1)
            assert b.pick(BalancerCtx(0, 0.0, ip.decode())) == int(want), raw
        elif kind == b"down":
            key, down, want = rest.rsplit(b" ", 2)
            assert b.pick(BalancerCtx(1 << int(down), 0.0, "", key)) == int(want), raw
        else:
            raise AssertionError(raw)
        cases += 1
    assert len(peers) == 4 and cases >= 100


# ---------------------------------------------------------------- every strategy


@pytest.mark.parametrize("strategy", [k.value for k in ConfigBalancer])
def test_every_strategy_skips_drained(strategy: str) -> None:
    b = make(strategy, [1, 3, 1])
    health(b, 1).up = False  # drained (or down): no new attempts
    got = Counter(pick(b, key=k) for k in keys(300))
    assert got[1] == 0 and got[0] + got[2] == 300
    health(b, 0).up = health(b, 2).up = False
    assert pick(b, key=b"k") == -1
