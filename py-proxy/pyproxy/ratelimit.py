"""ratelimit: per-client token buckets (contract section 7), pure functions of (now, state).

Twin: c-proxy/src/ratelimit.c (same arithmetic in the same order on doubles, same slot
layout, probing, eviction and overflow rule). docs/ratelimit.md explains the choices.

A bucket is (tokens, at): tokens as of time `at`. Nothing runs between requests: a take
refills from the elapsed time, then takes one token. `now` is always passed in (seconds on
the caller's clock; use wall-clock seconds so saved state survives a restart).

The table is a fixed array of 128-byte slots (open addressing, linear probing,
backward-shift deletion) split into stripes with one lock each, all inside ONE writable
buffer. Where the C twin shares its table between worker threads, this one shares it
between worker processes: the buffer is a multiprocessing.shared_memory block and the locks
are multiprocessing locks (shared_table_new / shared_table_attach). A single process uses
the same code over an anonymous mmap and threading locks (table_new).
"""

from __future__ import annotations

import math
import mmap
import socket
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.context import BaseContext
from typing import Any

KEY_MAX = 88  # key bytes a slot holds; longer keys overflow (RATELIMIT_KEY_MAX)
SLOT_SIZE = 128  # bytes per slot, both twins
STRIPES_MAX = 64  # locks; fewer for small tables
STRIPE_MIN_CLIENTS = 16  # a stripe holds at least this many buckets
SECONDS_MAX = 2147483647  # Reset / Retry-After are clamped to this
CAPACITY_MAX = 1000000000  # config's ceiling

# struct ratelimit_slot: hash, key_len (0 = empty), flags, capacity, pad, rate, tokens, at, key
_SLOT = struct.Struct("=IHHIIddd%ds" % KEY_MAX)
_SLOT_HEAD = struct.Struct("=IH")  # hash, key_len
_SLOT_KLEN = struct.Struct("=4xH%dx" % (SLOT_SIZE - 6))  # key_len alone, one slot apart
_SLOT_FLAGS = struct.Struct("=H")  # at offset 6: RATELIMIT_SLOT_F_*
_SLOT_FLAGS_OFF = 6
SLOT_F_PINNED = 0x1  # an admin override: its limit is the slot's, never evicted
_SLOT_STATE = struct.Struct("=IIddd")  # at offset 8: capacity, pad, rate, tokens, at
_SLOT_STATE_OFF = 8
_SLOT_FSTATE = struct.Struct("=HIIddd")  # at offset 6: flags, then the state
_SLOT_KEY_OFF = 40
_ZERO_SLOT = bytes(SLOT_SIZE)
assert _SLOT.size == SLOT_SIZE

# The buffer: a 64-byte header, one 64-byte line per stripe (its own cache line: processes
# on other CPUs), then the slots.
_MAGIC = 0x31525054  # "TPR1"
_HEADER = struct.Struct("=IIIIIIddd")  # magic, stripes, cap, slots, dflt cap, pad, rate,
#                                        overflow tokens, overflow at
_HEADER_SIZE = 64
_OVERFLOW = struct.Struct("=dd")  # overflow tokens, at
_OVERFLOW_OFF = 32
_STRIPE = struct.Struct("=II")  # count, hand
_STRIPE_SIZE = 64

Lock = AbstractContextManager[Any]  # threading.Lock or a multiprocessing lock


@dataclass(frozen=True, slots=True)
class Limit:
    """struct ratelimit_limit: a client's override, else rate_limit.default."""

    capacity: int  # tokens when full, 1..CAPACITY_MAX
    rate_per_sec: float  # refill, >= 0; 0 = never refills


@dataclass(slots=True)
class Bucket:
    """struct ratelimit_bucket: tokens as of `at`."""

    tokens: float  # 0..capacity, fractional
    at: float  # caller's clock, seconds


@dataclass(frozen=True, slots=True)
class Result:
    """struct ratelimit_result: the verdict plus the header values of contract section 7."""

    allowed: bool  # RATELIMIT_ALLOWED (else RATELIMIT_LIMITED: answer 429)
    limit: int  # RateLimit-Limit: capacity
    remaining: int  # RateLimit-Remaining: whole tokens left
    reset: int | None  # RateLimit-Reset: s until full, rounded up; None = omit (rate 0)
    retry_after: int | None  # Retry-After on a 429: s, >= 1; None = omit or allowed
    overflow: bool = False  # served by the shared overflow bucket


# ---- bucket arithmetic (no table, no locks) ------------------------------------------


def _ceil_seconds(s: float) -> int:
    """Seconds rounded up, clamped: the same in both twins."""
    c = math.ceil(s)
    if c <= 0:
        return 0
    return min(c, SECONDS_MAX)


def refill(b: Bucket, lim: Limit, now: float) -> None:
    """ratelimit_refill: tokens += (now - at) * rate, capped; at = now. A now earlier than
    at (clock stepped back) changes nothing."""
    if not now > b.at:
        return
    if lim.rate_per_sec > 0:
        t = b.tokens + (now - b.at) * lim.rate_per_sec
        b.tokens = float(lim.capacity) if t > lim.capacity else t
    b.at = now


def bucket_take(b: Bucket, lim: Limit, now: float) -> Result:
    """ratelimit_bucket_take: refill, then take one token if there is a whole one."""
    cap = float(lim.capacity)
    rate = lim.rate_per_sec
    refill(b, lim, now)
    retry_after: int | None = None
    if b.tokens >= 1.0:
        b.tokens -= 1.0
        allowed = True
    else:
        allowed = False
        if rate > 0:
            retry_after = max(1, _ceil_seconds((1.0 - b.tokens) / rate))
    reset = _ceil_seconds((cap - b.tokens) / rate) if rate > 0 else None
    return Result(allowed, lim.capacity, math.floor(b.tokens), reset, retry_after)


def bucket_full(b: Bucket, lim: Limit, now: float) -> bool:
    """ratelimit_bucket_full: b refilled to now equals a fresh bucket. b is not modified."""
    c = Bucket(b.tokens, b.at)
    refill(c, lim, now)
    return c.tokens >= lim.capacity


# ---- the table -----------------------------------------------------------------------


def _geometry(max_clients: int) -> tuple[int, int, int]:
    """(stripes, buckets per stripe, slots per stripe), as ratelimit_table_new."""
    if max_clients < 1 or max_clients > 0x7FFFFFFF:
        raise ValueError("max_clients out of range")
    n = STRIPES_MAX
    while n > 1 and max_clients // n < STRIPE_MIN_CLIENTS:
        n //= 2
    cap = max_clients // n
    return n, cap, cap + cap // 3 + 1


def table_size(max_clients: int) -> int:
    """Bytes of the buffer a table for max_clients needs."""
    n, _, sps = _geometry(max_clients)
    return _HEADER_SIZE + n * _STRIPE_SIZE + n * sps * SLOT_SIZE


def table_format(buf: memoryview, max_clients: int, default: Limit) -> None:
    """Write an empty table into buf (zero-filled, table_size(max_clients) bytes)."""
    if default.capacity < 1 or not default.rate_per_sec >= 0:
        raise ValueError("bad default limit")
    n, cap, sps = _geometry(max_clients)
    _HEADER.pack_into(
        buf, 0, _MAGIC, n, cap, sps, default.capacity, 0, default.rate_per_sec,
        float(default.capacity), 0.0,
    )  # fmt: skip


class Table:
    """struct ratelimit_table over a buffer written by table_format and n_stripes + 1 locks
    (the last guards the overflow bucket). Every method is atomic under those locks, so
    threads and processes sharing the buffer and the locks may call it at once."""

    def __init__(
        self, buf: memoryview, locks: Sequence[Lock], close: Callable[[], None] | None = None
    ) -> None:
        magic, n, cap, sps, dcap, _, drate, _, _ = _HEADER.unpack_from(buf, 0)
        if magic != _MAGIC or len(locks) != n + 1:
            raise ValueError("not a ratelimit table, or wrong number of locks")
        self.default = Limit(int(dcap), float(drate))  # new keys and the overflow bucket
        self.n_stripes: int = n  # power of two, 1..64
        self.cap_per_stripe: int = cap  # buckets a stripe may hold
        self.slots_per_stripe: int = sps  # cap + cap/3 + 1: load <= 75%
        self._buf = buf  # the table's bytes
        self._locks = locks  # one per stripe, then the overflow bucket's
        self._slots: int = _HEADER_SIZE + n * _STRIPE_SIZE  # offset of slot 0 of stripe 0
        self._close = close  # releases the buffer

    def close(self) -> None:
        """Release this process's view of the buffer (the shared block stays)."""
        self._buf.release()
        if self._close is not None:
            self._close()
            self._close = None

    # -- slots, caller holds the stripe's lock --

    def _off(self, s: int, i: int) -> int:
        return self._slots + (s * self.slots_per_stripe + i) * SLOT_SIZE

    def _home(self, h: int) -> int:
        return (h >> 6) % self.slots_per_stripe

    def _find(self, s: int, h: int, key: bytes) -> int:
        buf, n, sps = self._buf, len(key), self.slots_per_stripe
        i = self._home(h)
        for _ in range(sps):
            off = self._off(s, i)
            sh, klen = _SLOT_HEAD.unpack_from(buf, off)
            if klen == 0:
                return -1
            if sh == h and klen == n and buf[off + _SLOT_KEY_OFF : off + _SLOT_KEY_OFF + n] == key:
                return i
            i = 0 if i + 1 == sps else i + 1
        return -1

    def _stripe(self, s: int) -> tuple[int, int]:
        count, hand = _STRIPE.unpack_from(self._buf, _HEADER_SIZE + s * _STRIPE_SIZE)
        return count, hand

    def _set_stripe(self, s: int, count: int, hand: int) -> None:
        _STRIPE.pack_into(self._buf, _HEADER_SIZE + s * _STRIPE_SIZE, count, hand)

    def _delete(self, s: int, i: int) -> None:
        """Empty slot i and shift later members of its probe run back (slot_delete)."""
        buf, n = self._buf, self.slots_per_stripe
        j = i
        while True:
            oi = self._off(s, i)
            buf[oi : oi + SLOT_SIZE] = _ZERO_SLOT
            while True:
                j = 0 if j + 1 == n else j + 1
                oj = self._off(s, j)
                h, klen = _SLOT_HEAD.unpack_from(buf, oj)
                if klen == 0:
                    count, hand = self._stripe(s)
                    self._set_stripe(s, count - 1, hand)
                    return
                k = self._home(h)
                stays = (i < k <= j) if i <= j else (i < k or k <= j)
                if not stays:
                    break
            buf[oi : oi + SLOT_SIZE] = buf[oj : oj + SLOT_SIZE]
            i = j

    def _flags(self, off: int) -> int:
        flags: int = _SLOT_FLAGS.unpack_from(self._buf, off + _SLOT_FLAGS_OFF)[0]
        return flags

    def _set_flags(self, off: int, flags: int) -> None:
        _SLOT_FLAGS.pack_into(self._buf, off + _SLOT_FLAGS_OFF, flags)

    def _state(self, off: int) -> tuple[Limit, Bucket]:
        cap, _, rate, tokens, at = _SLOT_STATE.unpack_from(self._buf, off + _SLOT_STATE_OFF)
        return Limit(cap, rate), Bucket(tokens, at)

    def _put_state(self, off: int, lim: Limit, b: Bucket) -> None:
        _SLOT_STATE.pack_into(
            self._buf, off + _SLOT_STATE_OFF, lim.capacity, 0, lim.rate_per_sec, b.tokens, b.at
        )

    def _evict(self, s: int, now: float) -> bool:
        """Evict one full bucket, scanning from the clock hand (stripe_evict)."""
        n = self.slots_per_stripe
        _, hand = self._stripe(s)
        i = hand % n
        for _ in range(n):
            off = self._off(s, i)
            _, klen = _SLOT_HEAD.unpack_from(self._buf, off)
            if klen != 0 and not self._flags(off) & SLOT_F_PINNED:
                lim, b = self._state(off)
                if bucket_full(b, lim, now):
                    self._delete(s, i)
                    count, _ = self._stripe(s)
                    self._set_stripe(s, count, 0 if i + 1 == n else i + 1)
                    return True
            i = 0 if i + 1 == n else i + 1
        return False

    def _insert(self, s: int, h: int, key: bytes, lim: Limit, now: float) -> int:
        """A fresh bucket for key (absent), or -1 when the stripe is at its share and no
        bucket is full (slot_insert)."""
        count, _ = self._stripe(s)
        if count >= self.cap_per_stripe and not self._evict(s, now):
            return -1
        buf, sps = self._buf, self.slots_per_stripe
        i = self._home(h)
        while _SLOT_HEAD.unpack_from(buf, self._off(s, i))[1] != 0:
            i = 0 if i + 1 == sps else i + 1
        cap = float(lim.capacity)
        _SLOT.pack_into(
            buf, self._off(s, i), h, len(key), 0, lim.capacity, 0, lim.rate_per_sec, cap, now, key
        )
        count, hand = self._stripe(s)
        self._set_stripe(s, count + 1, hand)
        return i

    def _under(self, off: int, lim: Limit, now: float) -> Bucket:
        """The slot's bucket under lim: refilled under its old limit first when the limit
        changed, then capped at the new capacity (slot_under)."""
        old, b = self._state(off)
        if old != lim:
            refill(b, old, now)
            if b.tokens > lim.capacity:
                b.tokens = float(lim.capacity)
        return b

    def _overflow_take(self, now: float) -> Result:
        with self._locks[self.n_stripes]:
            b = Bucket(*_OVERFLOW.unpack_from(self._buf, _OVERFLOW_OFF))
            r = bucket_take(b, self.default, now)
            _OVERFLOW.pack_into(self._buf, _OVERFLOW_OFF, b.tokens, b.at)
        return Result(r.allowed, r.limit, r.remaining, r.reset, r.retry_after, True)

    # -- the API --

    def take(self, key: bytes, lim: Limit | None, now: float) -> Result:
        """ratelimit_take: atomically refill and take one token from key's bucket. lim is
        the client's override, or None for the default. A new key gets a fresh bucket;
        at its stripe's share a full bucket is evicted first; when none is full (and for
        keys longer than KEY_MAX or empty) the one overflow bucket (default limit) serves.
        A bucket taken with a new limit keeps its tokens, capped at the new capacity.
        lim None on a pinned slot: the slot's own limit."""
        given = lim is not None
        if lim is None:
            lim = self.default
        if not 0 < len(key) <= KEY_MAX:
            return self._overflow_take(now)
        h = zlib.crc32(key)
        s = h & (self.n_stripes - 1)
        with self._locks[s]:
            i = self._find(s, h, key)
            if i < 0:
                i = self._insert(s, h, key, lim, now)
            if i >= 0:
                # _under + bucket_take + _put_state inlined (the request path calls this once
                # per request): the same operations on the same doubles, in the same order
                buf = self._buf
                off = self._off(s, i)
                flags, ocap, _, orate, tokens, at = _SLOT_FSTATE.unpack_from(
                    buf, off + _SLOT_FLAGS_OFF
                )
                if not given and flags & SLOT_F_PINNED:
                    cap, rate = ocap, orate  # the override's own limit
                else:
                    cap, rate = lim.capacity, lim.rate_per_sec
                    if ocap != cap or orate != rate:  # a new limit: refill under the old, cap
                        if now > at:
                            if orate > 0:
                                t = tokens + (now - at) * orate
                                tokens = float(ocap) if t > ocap else t
                            at = now
                        if tokens > cap:
                            tokens = float(cap)
                if now > at:  # refill
                    if rate > 0:
                        t = tokens + (now - at) * rate
                        tokens = float(cap) if t > cap else t
                    at = now
                retry_after: int | None = None
                if tokens >= 1.0:
                    tokens -= 1.0
                    allowed = True
                else:
                    allowed = False
                    if rate > 0:
                        retry_after = max(1, _ceil_seconds((1.0 - tokens) / rate))
                reset = _ceil_seconds((float(cap) - tokens) / rate) if rate > 0 else None
                _SLOT_STATE.pack_into(buf, off + _SLOT_STATE_OFF, cap, 0, rate, tokens, at)
                return Result(allowed, cap, math.floor(tokens), reset, retry_after)
        return self._overflow_take(now)

    def peek(self, key: bytes, lim: Limit | None, now: float) -> float:
        """ratelimit_peek: tokens key's bucket holds at now (not stored); capacity when the
        key has no bucket. lim None on a pinned slot: the slot's own limit."""
        given = lim is not None
        if lim is None:
            lim = self.default
        if not 0 < len(key) <= KEY_MAX:
            return float(lim.capacity)
        h = zlib.crc32(key)
        s = h & (self.n_stripes - 1)
        with self._locks[s]:
            i = self._find(s, h, key)
            if i < 0:
                return float(lim.capacity)
            off = self._off(s, i)
            if not given and self._flags(off) & SLOT_F_PINNED:
                lim = self._state(off)[0]
            b = self._under(off, lim, now)
            refill(b, lim, now)
            return b.tokens

    def set(self, key: bytes, lim: Limit | None, tokens: float, at: float) -> bool:
        """ratelimit_set: key's bucket becomes (tokens clamped to 0..capacity, at) under
        lim, created if needed (eviction judged at `at`). False when the key cannot have
        a bucket (too long, empty, no room). lim None: the default, or a pinned slot's own
        limit (pinning survives)."""
        given = lim is not None
        if lim is None:
            lim = self.default
        if not 0 < len(key) <= KEY_MAX:
            return False
        if not tokens >= 0:  # also NaN
            tokens = 0.0
        h = zlib.crc32(key)
        s = h & (self.n_stripes - 1)
        with self._locks[s]:
            i = self._find(s, h, key)
            if i >= 0 and not given and self._flags(self._off(s, i)) & SLOT_F_PINNED:
                lim = self._state(self._off(s, i))[0]
            tokens = min(float(tokens), float(lim.capacity))
            if i < 0:
                i = self._insert(s, h, key, lim, at)
            if i < 0:
                return False
            self._put_state(self._off(s, i), lim, Bucket(tokens, at))
            return True

    # -- pinned overrides (the admin API's /clients); docs in c-proxy/src/ratelimit.h --

    def pin(self, key: bytes, lim: Limit, tokens: float | None, now: float) -> bool:
        """ratelimit_pin: pin key with lim (creating its slot, evicting a full unpinned
        bucket at the stripe's share). Existing tokens are refilled under the old limit to
        now and capped (never raised); tokens not None sets them (capped). False when the
        key is empty or too long, or a new slot is needed and the stripe has no room."""
        if not 0 < len(key) <= KEY_MAX:
            return False
        h = zlib.crc32(key)
        s = h & (self.n_stripes - 1)
        with self._locks[s]:
            i = self._find(s, h, key)
            if i < 0:
                i = self._insert(s, h, key, lim, now)
            if i < 0:
                return False
            off = self._off(s, i)
            b = self._under(off, lim, now)
            refill(b, lim, now)
            if tokens is not None:  # an explicit value (admin POST/PATCH tokens)
                b.tokens = float(lim.capacity) if tokens > lim.capacity else float(tokens)
                b.at = now
            self._put_state(off, lim, b)
            self._set_flags(off, self._flags(off) | SLOT_F_PINNED)
            return True

    def unpin(self, key: bytes, now: float) -> bool:
        """ratelimit_unpin: back to the default limit (refilled to now under the old limit,
        then capped). Whether key was pinned."""
        if not 0 < len(key) <= KEY_MAX:
            return False
        h = zlib.crc32(key)
        s = h & (self.n_stripes - 1)
        with self._locks[s]:
            i = self._find(s, h, key)
            if i < 0:
                return False
            off = self._off(s, i)
            flags = self._flags(off)
            if not flags & SLOT_F_PINNED:
                return False
            b = self._under(off, self.default, now)
            refill(b, self.default, now)
            self._put_state(off, self.default, b)
            self._set_flags(off, flags & ~SLOT_F_PINNED)
            return True

    def lookup(self, key: bytes, now: float) -> tuple[Limit, float] | None:
        """ratelimit_lookup: (limit, tokens at now) of a pinned key, else None."""
        if not 0 < len(key) <= KEY_MAX:
            return None
        h = zlib.crc32(key)
        s = h & (self.n_stripes - 1)
        with self._locks[s]:
            i = self._find(s, h, key)
            if i < 0:
                return None
            off = self._off(s, i)
            if not self._flags(off) & SLOT_F_PINNED:
                return None
            lim, b = self._state(off)
            refill(b, lim, now)
            return lim, b.tokens

    def pinned(self, now: float) -> list[tuple[bytes, Limit, float]]:
        """ratelimit_pinned: (key, limit, tokens at now) of every pinned slot, in table
        order (the caller sorts), one stripe locked at a time."""
        out: list[tuple[bytes, Limit, float]] = []
        buf = self._buf
        for s in range(self.n_stripes):
            with self._locks[s]:
                for i in range(self.slots_per_stripe):
                    off = self._off(s, i)
                    _, klen, flags, cap, _, rate, tokens, at, key = _SLOT.unpack_from(buf, off)
                    if klen != 0 and flags & SLOT_F_PINNED:
                        lim = Limit(cap, rate)
                        b = Bucket(tokens, at)
                        refill(b, lim, now)
                        out.append((key[:klen], lim, b.tokens))
        return out

    def snapshot(self) -> list[tuple[bytes, float, float]]:
        """ratelimit_snapshot: (key, tokens, at) of every bucket, one stripe locked at a
        time (not the overflow bucket). Python: an empty stripe is skipped and a stripe's
        key lengths are read in one iter_unpack, so a big, mostly empty table costs little
        (the periodic save calls this every few seconds)."""
        out: list[tuple[bytes, float, float]] = []
        buf = self._buf
        size = self.slots_per_stripe * SLOT_SIZE
        for s in range(self.n_stripes):
            with self._locks[s]:
                if self._stripe(s)[0] == 0:
                    continue
                base = self._off(s, 0)
                for i, (klen,) in enumerate(_SLOT_KLEN.iter_unpack(buf[base : base + size])):
                    if klen != 0:
                        _, _, _, _, _, _, tokens, at, key = _SLOT.unpack_from(
                            buf, base + i * SLOT_SIZE
                        )
                        out.append((key[:klen], tokens, at))
        return out

    def count(self) -> int:
        """ratelimit_count: buckets in the table (not the overflow bucket)."""
        n = 0
        for s in range(self.n_stripes):
            with self._locks[s]:
                n += self._stripe(s)[0]
        return n


def table_new(max_clients: int, default: Limit) -> Table:
    """A table for one process: an anonymous mmap (zero pages, touched only where used)
    and threading locks."""
    n, _, _ = _geometry(max_clients)
    m = mmap.mmap(-1, table_size(max_clients))
    buf = memoryview(m)
    table_format(buf, max_clients, default)
    return Table(buf, [threading.Lock() for _ in range(n + 1)], m.close)


@dataclass(frozen=True)
class SharedTableHandle:
    """What a worker process needs to attach: pass it to the child when starting it."""

    name: str  # the shared_memory block
    locks: tuple[Lock, ...]  # multiprocessing locks, one per stripe + the overflow bucket


def shared_table_new(
    max_clients: int, default: Limit, ctx: BaseContext
) -> tuple[Table, SharedTableHandle, shared_memory.SharedMemory]:
    """A table in a new shared_memory block with ctx's locks. The caller owns the block:
    it closes the table, then unlinks the block when every worker is done."""
    n, _, _ = _geometry(max_clients)
    shm = shared_memory.SharedMemory(create=True, size=table_size(max_clients))
    try:
        buf = shm.buf
        assert buf is not None
        table_format(buf, max_clients, default)
        locks = tuple(ctx.Lock() for _ in range(n + 1))
        table = Table(buf, locks, shm.close)
    except BaseException:
        shm.close()
        shm.unlink()
        raise
    return table, SharedTableHandle(shm.name, locks), shm


def shared_table_attach(handle: SharedTableHandle) -> Table:
    """The table of handle, in a worker process."""
    if sys.version_info >= (3, 13):
        shm = shared_memory.SharedMemory(name=handle.name, track=False)
    else:
        shm = shared_memory.SharedMemory(name=handle.name)
    assert shm.buf is not None
    return Table(shm.buf, handle.locks, shm.close)


# ---- keys ----------------------------------------------------------------------------

_V4_MAPPED = bytes(10) + b"\xff\xff"


def key_ip(ip: str, ipv6_prefix: int) -> bytes | None:
    """ratelimit_key_ip: the client_ip key of a peer address (an optional "%scope" is
    ignored): IPv4 and IPv4-mapped IPv6 as dotted IPv4; IPv6 with ipv6_prefix < 128 as
    "network/prefix" (e.g. b"2001:db8::/64"), with 128 as the address. None if ip is
    not an address."""
    host = ip.split("%", 1)[0]
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, host)).encode()
    except OSError:
        pass
    try:
        a = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return None
    if a[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, a[12:]).encode()
    if ipv6_prefix >= 128:
        return socket.inet_ntop(socket.AF_INET6, a).encode()
    v = int.from_bytes(a, "big") & ~((1 << (128 - ipv6_prefix)) - 1)
    net = socket.inet_ntop(socket.AF_INET6, v.to_bytes(16, "big"))
    return ("%s/%d" % (net, ipv6_prefix)).encode()


def key_header(value: bytes | None, ip: str, ipv6_prefix: int) -> bytes | None:
    """ratelimit_key_header: the header's value when present and not empty, else the
    client_ip key of ip (None if that is not an address)."""
    if value:
        return value
    return key_ip(ip, ipv6_prefix)
