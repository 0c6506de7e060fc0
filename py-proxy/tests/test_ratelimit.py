"""Unit tests of pyproxy.ratelimit. Twin: c-proxy/tests/test_ratelimit.c (same test names,
same numbers). Time is injected; all values are exact in binary so the expected numbers are
exact too. test_threads_share_one_bucket is the process twin of the C thread test: two
worker processes share one bucket through the shared-memory table."""

from __future__ import annotations

import multiprocessing
from typing import Any

from pyproxy.ratelimit import (
    KEY_MAX,
    Bucket,
    Limit,
    Result,
    SharedTableHandle,
    Table,
    bucket_full,
    bucket_take,
    key_header,
    key_ip,
    shared_table_attach,
    shared_table_new,
    table_new,
)


def table(max_clients: int, cap: int, rate: float) -> Table:
    return table_new(max_clients, Limit(cap, rate))


def take(t: Table, key: str, now: float) -> Result:
    return t.take(key.encode(), None, now)


def take_lim(t: Table, key: str, cap: int, rate: float, now: float) -> Result:
    return t.take(key.encode(), Limit(cap, rate), now)


def peek(t: Table, key: str, now: float) -> float:
    return t.peek(key.encode(), None, now)


def test_fresh_bucket_full() -> None:
    t = table(100, 10, 1)
    assert peek(t, "a", 1000) == 10.0
    assert t.count() == 0  # peek creates nothing
    r = take(t, "a", 1000)
    assert r == Result(True, 10, 9, 1, None, False)
    assert t.count() == 1
    t.close()


def test_take_until_empty_then_limited() -> None:
    t = table(100, 5, 1)
    for i in range(5):
        r = take(t, "a", 50)
        assert r.allowed
        assert r.remaining == 4 - i
    r = take(t, "a", 50)
    assert not r.allowed
    assert r.remaining == 0
    assert r.retry_after == 1
    assert r.reset == 5
    t.close()


def test_refill_continuous() -> None:
    t = table(100, 10, 2)
    for _ in range(10):
        assert take(t, "a", 100).allowed
    assert peek(t, "a", 100.25) == 0.5  # half a token after a quarter second
    r = take(t, "a", 100.25)
    assert not r.allowed
    assert r.retry_after == 1
    r = take(t, "a", 100.5)
    assert r.allowed
    assert r.remaining == 0
    r = take(t, "a", 101.75)  # 0 + 1.25 s * 2 = 2.5
    assert r.allowed
    assert r.remaining == 1
    assert peek(t, "a", 101.75) == 1.5
    t.close()


def test_refill_capped_at_capacity() -> None:
    t = table(100, 10, 2)
    for _ in range(10):
        take(t, "a", 100)
    assert peek(t, "a", 104) == 8.0
    assert peek(t, "a", 1100) == 10.0
    r = take(t, "a", 1100)
    assert r.remaining == 9
    assert r.reset == 1  # 1 token at 2/s: 0.5 s, rounded up
    t.close()


def test_burst_equals_capacity() -> None:
    t = table(100, 20, 1000)
    assert sum(take(t, "a", 7).allowed for _ in range(30)) == 20
    t.close()


def test_retry_after_rounded_up_min_1() -> None:
    t = table(100, 1, 0.25)  # one token per 4 s
    take(t, "a", 10)
    r = take(t, "a", 10)
    assert not r.allowed
    assert r.retry_after == 4
    assert take(t, "a", 11).retry_after == 3  # 0.25 token: 0.75 / 0.25 = 3 s
    assert take(t, "a", 11.5).retry_after == 3  # 0.375: 2.5 s -> 3
    assert take(t, "a", 13.75).retry_after == 1  # 0.9375: 0.25 s -> 1
    assert take(t, "a", 14).allowed

    assert take_lim(t, "fast", 1, 1000000, 20).allowed  # microseconds away: still 1
    r = take_lim(t, "fast", 1, 1000000, 20)
    assert not r.allowed
    assert r.retry_after == 1
    t.close()


def test_ratelimit_headers_values() -> None:
    t = table(100, 100, 10)
    r = take(t, "a", 0)
    assert (r.limit, r.remaining, r.reset) == (100, 99, 1)  # 0.1 s, rounded up
    for _ in range(50):
        r = take(t, "a", 0)
    assert (r.remaining, r.reset) == (49, 6)  # 51 tokens: 5.1 s
    r = take(t, "a", 0.5)  # 49 + 5 - 1 = 53
    assert (r.remaining, r.reset, r.retry_after) == (53, 5, None)  # 47 tokens: 4.7 s
    t.close()


def test_rate_zero_never_refills_no_reset() -> None:
    t = table(100, 3, 0)
    for _ in range(3):
        r = take(t, "a", 1)
        assert r.allowed
        assert r.reset is None
    r = take(t, "a", 1)
    assert not r.allowed
    assert r.retry_after is None
    assert r.reset is None
    assert not take(t, "a", 1e9).allowed
    assert peek(t, "a", 1e9) == 0.0
    t.close()


def test_override_replaces_default() -> None:
    t = table(100, 10, 1)
    r = take_lim(t, "vip", 2, 0, 5)
    assert (r.limit, r.remaining, r.reset) == (2, 1, None)
    r = take(t, "other", 5)
    assert (r.limit, r.remaining) == (10, 9)
    # a bigger override keeps the tokens the client had: no gain
    r = take_lim(t, "vip", 100, 0, 6)
    assert (r.limit, r.remaining) == (100, 0)
    # back to the default: capped at its capacity, refilled at its rate
    assert t.set(b"vip", Limit(100, 50), 100, 6)
    r = take(t, "vip", 7)
    assert (r.limit, r.remaining) == (10, 9)
    t.close()


def test_eviction_only_full_buckets() -> None:
    t = table(2, 2, 1)
    take(t, "a", 0)  # a: 1 token
    take(t, "b", 0)
    take(t, "b", 0)  # b: 0 tokens
    assert take(t, "c", 0).overflow  # nothing full: c has no bucket of its own
    assert t.count() == 2
    r = take(t, "c", 1)  # a is full again (1 + 1), b is not (1)
    assert not r.overflow
    assert r.remaining == 1
    assert t.count() == 2
    assert peek(t, "b", 1) == 1.0  # b kept its state
    r = take(t, "b", 1)
    assert not r.overflow
    assert r.remaining == 0
    t.close()


def test_eviction_never_gains_tokens() -> None:
    """A model with a bucket per key and no memory bound: the table must agree with it on
    every take it serves from a key's own bucket."""
    keys, steps = 12, 4000
    lim = Limit(3, 0.5)
    t = table(4, 3, 0.5)
    model: dict[int, Bucket] = {}
    x = 12345
    now = 0.0
    served = overflowed = limited = 0
    served_keys = 0  # bit k: key k had a bucket of its own at some point
    for _ in range(steps):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        k = (x >> 33) % keys
        now += ((x >> 20) % 4) * 0.0625  # 0..0.1875 s, exact
        if k not in model:
            model[k] = Bucket(3, now)
        r = take(t, "k%d" % k, now)
        if r.overflow:
            # the key has no bucket: it may only be one that a fresh bucket equals
            assert bucket_full(model[k], lim, now)
            overflowed += 1
            continue
        m = bucket_take(model[k], lim, now)
        assert (r.allowed, r.remaining, r.reset, r.retry_after) == (
            m.allowed,
            m.remaining,
            m.reset,
            m.retry_after,
        )
        served += 1
        served_keys |= 1 << k
        limited += not r.allowed
    # all paths ran, and exactly as in the C twin (same hash, probing and clock hand)
    assert (served, overflowed, limited) == (1367, 2633, 610)
    assert served_keys == (1 << keys) - 1  # 12 keys through 4 slots: evictions
    assert t.count() <= 4
    t.close()


def test_overflow_bucket_when_table_full() -> None:
    t = table(2, 3, 0)
    take(t, "a", 0)
    take(t, "b", 0)  # rate 0: never full again, never evicted
    for i in range(3):
        r = take(t, "c" if i % 2 else "d", 0)
        assert r.overflow
        assert r.allowed
    r = take(t, "e", 0)  # c, d, e share one bucket
    assert r.overflow
    assert not r.allowed
    assert t.count() == 2
    t2 = table(100, 3, 0)
    assert t2.take(b"x" * (KEY_MAX + 1), None, 0).overflow
    r = t2.take(b"x" * KEY_MAX, None, 0)  # exactly the maximum fits
    assert not r.overflow
    assert r.remaining == 2
    t2.close()
    t.close()


def test_key_client_ip_ipv6_prefix() -> None:
    cases = [
        ("2001:db8:1:2:3:4:5:6", 64, b"2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", 64, b"2001:db8:1:2::/64"),
        ("2001:db8:1:2fff::1", 60, b"2001:db8:1:2ff0::/60"),
        ("2001:db8:1:2:3:4:5:6", 48, b"2001:db8:1::/48"),
        ("2001:db8:1:2:3:4:5:6", 128, b"2001:db8:1:2:3:4:5:6"),
        ("2001:db8::1", 0, b"::/0"),
        ("::1", 128, b"::1"),
        ("fe80::1%eth0", 64, b"fe80::/64"),
        ("::ffff:10.1.2.3", 64, b"10.1.2.3"),
        ("10.1.2.3", 64, b"10.1.2.3"),
        ("10.1.2", 64, None),
        ("not an ip", 64, None),
        (
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            127,
            b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127",
        ),
    ]
    for ip, prefix, want in cases:
        assert key_ip(ip, prefix) == want, ip


def test_key_header_missing_uses_ip() -> None:
    assert key_header(None, "192.0.2.7", 64) == b"192.0.2.7"
    assert key_header(b"", "2001:db8::9", 64) == b"2001:db8::/64"
    assert key_header(b"k-123", "192.0.2.7", 64) == b"k-123"
    assert key_header(None, "bogus", 64) is None


ROUNDS = 50  # buckets contended one after the other: a lost update shows in one of them


def _worker(handle: SharedTableHandle, start: Any, allowed: Any, me: int) -> None:
    """One worker process: per round, 100 takes on that round's shared bucket, started
    together with the other worker so they contend (allowed[round * 2 + me] counts them);
    then 50 keys of its own."""
    t = shared_table_attach(handle)
    for rnd in range(ROUNDS):
        key = b"shared%d" % rnd
        n = 0
        start.wait(10)
        for i in range(100):
            n += t.take(key, None, 1.0 + i).allowed
        allowed[rnd * 2 + me] = n
    for i in range(50 * me, 50 * me + 50):
        t.take(b"k%d" % i, None, 200.0)
    t.close()


def test_threads_share_one_bucket() -> None:
    ctx = multiprocessing.get_context("fork")
    t, handle, shm = shared_table_new(100000, Limit(100, 0), ctx)
    try:
        start = ctx.Barrier(2)
        allowed = ctx.Array("i", [-1] * (ROUNDS * 2))
        procs = [ctx.Process(target=_worker, args=(handle, start, allowed, me)) for me in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(15)
        assert [p.exitcode for p in procs] == [0, 0]
        per_bucket = [allowed[2 * r] + allowed[2 * r + 1] for r in range(ROUNDS)]
        assert per_bucket == [100] * ROUNDS  # exactly capacity, every round
        assert t.count() == ROUNDS + 100  # the shared buckets + k0..k99, written elsewhere
        assert t.take(b"shared0", None, 500).allowed is False
    finally:
        t.close()
        shm.unlink()


# ---- pinned overrides (admin /clients) ----


def pin(t: Table, key: str, cap: int, rate: float, tokens: float | None, now: float) -> bool:
    return t.pin(key.encode(), Limit(cap, rate), tokens, now)


def test_pinned_override_never_evicted() -> None:
    t = table(2, 2, 1)
    assert pin(t, "vip", 5, 1, None, 0)  # full, but pinned
    take(t, "a", 0)
    take(t, "a", 0)  # a: 0 tokens
    r = take(t, "b", 10)  # a is full again: evicted, never vip
    assert not r.overflow
    assert t.lookup(b"vip", 10) == (Limit(5, 1), 5.0)
    assert t.count() == 2
    # the stripe is full of a pinned slot and an empty bucket: no room for a new pin
    take(t, "b", 10)
    assert not pin(t, "c", 1, 0, None, 10)
    assert t.lookup(b"c", 10) is None
    # neither an empty nor an over-long key can be pinned
    assert not pin(t, "", 1, 0, None, 10)
    assert not pin(t, "k" * (KEY_MAX + 1), 1, 0, None, 10)
    t.close()


def test_take_uses_pinned_limit() -> None:
    t = table(100, 10, 1)
    assert pin(t, "vip", 3, 0, None, 0)
    r = take(t, "vip", 1)
    assert (r.limit, r.remaining, r.reset) == (3, 2, None)
    take(t, "vip", 100)
    take(t, "vip", 100)
    r = take(t, "vip", 1000)  # rate 0: never refills
    assert not r.allowed
    assert peek(t, "vip", 2000) == 0.0
    r = take(t, "other", 1)
    assert r.limit == 10
    # loading a saved bucket keeps the pin and its limit
    assert t.set(b"vip", None, 2.5, 5)
    r = take(t, "vip", 6)
    assert (r.limit, r.remaining) == (3, 1)
    t.close()


def test_change_limit_clamps_tokens() -> None:
    t = table(100, 10, 1)
    assert pin(t, "c", 8, 2, None, 0)
    take(t, "c", 0)
    take(t, "c", 0)  # 6 tokens at 0
    # smaller: refilled under the old limit to now (6 + 0.5 * 2 = 7), capped at 4
    assert pin(t, "c", 4, 1, None, 0.5)
    assert t.lookup(b"c", 0.5) == (Limit(4, 1.0), 4.0)
    take(t, "c", 0.5)
    take(t, "c", 0.5)
    take(t, "c", 0.5)  # 1 token at 0.5
    # bigger: never raised, fills at the new rate
    assert pin(t, "c", 100, 4, None, 0.5)
    assert t.lookup(b"c", 0.5) == (Limit(100, 4), 1.0)
    assert t.lookup(b"c", 1.0) == (Limit(100, 4), 3.0)
    # explicit tokens (PATCH tokens) are set, capped at capacity
    assert pin(t, "c", 100, 4, 50, 1.0)
    assert t.lookup(b"c", 1.0) == (Limit(100, 4), 50.0)
    assert pin(t, "c", 20, 4, 50, 1.0)
    assert t.lookup(b"c", 1.0) == (Limit(20, 4), 20.0)
    t.close()


def test_unpin_restores_default() -> None:
    t = table(100, 10, 1)
    assert pin(t, "c", 50, 0, 30, 0)
    assert t.unpin(b"c", 1)
    assert not t.unpin(b"c", 1)
    assert t.lookup(b"c", 1) is None
    assert peek(t, "c", 1) == 10.0  # 30 capped at the default 10
    r = take(t, "c", 1)
    assert (r.limit, r.remaining) == (10, 9)
    # an unpinned bucket is evictable again, and unpinning never adds tokens
    assert pin(t, "d", 50, 0, 2, 1)
    assert t.unpin(b"d", 1)
    assert peek(t, "d", 1) == 2.0
    assert t.count() == 2
    t.close()


def test_status_reads_without_taking() -> None:
    # C's ratelimit_status; Python reads the same through peek (and lookup for a pinned key)
    t = table(64, 4, 0.5)
    assert peek(t, "a", 100.0) == 4.0  # no bucket: a fresh one, nothing created
    assert t.count() == 0
    take(t, "a", 100.0)
    take(t, "a", 100.0)  # 2 left, 4 s to full
    assert peek(t, "a", 101.0) == 2.5  # 2.5 at 101: nothing taken
    assert peek(t, "a", 101.0) == 2.5
    assert t.pin(b"p", Limit(9, 0), 5, 100.0)
    got = t.lookup(b"p", 200.0)  # a pinned key: its own limit
    assert got is not None and got[0] == Limit(9, 0) and got[1] == 5.0


def test_set_default_applies_to_new_and_unpinned() -> None:
    t = table(64, 4, 0)
    take(t, "old", 1.0)  # 3 left under the old default
    assert t.pin(b"p", Limit(9, 0), None, 1.0)
    t.default = Limit(10, 0)  # a reload's new rate_limit.default
    r = take(t, "new", 2.0)  # a new key: the new default, full
    assert (r.limit, r.remaining) == (10, 9)
    r = take(t, "old", 2.0)  # moved to it, tokens never raised
    assert (r.limit, r.remaining) == (10, 2)
    r = take(t, "p", 2.0)  # an override keeps its own limit
    assert (r.limit, r.remaining) == (9, 8)
