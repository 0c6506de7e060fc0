"""balancer_roundrobin: smooth weighted round robin, as nginx's ngx_http_upstream_get_peer().
Twin: c-proxy/src/balancer_roundrobin.c.

Each pick adds every eligible peer's weight to its current weight, takes the peer with the
highest current weight (first wins a tie) and subtracts the total from it. With weights 5,1,1
the sequence is a a b a c a a: spread out, and N*k picks over equal weights give exactly k each.
Peers not eligible (tried, down, drained) take no part in a pick.

One rotation per process tree: the states created with the same group (the workers' upstream
sets of one config generation, see upstream.py) are one state, so the picks of all workers
are one smooth sequence (docs/architecture.md "Workers"). The C twin's workers are threads
sharing a registry under a mutex; Python's workers are processes, so the current weights live
in a fixed table of ctypes slots (RR_SLOTS, keyed by a digest of the group) that is private
memory with one worker and, with workers > 1, a multiprocessing.shared_memory block made by
the parent BEFORE forking (rr_registry_init(shared=True), as health.py's table), picks taking
the multiprocessing lock made with it. A slot whose last set retired (refs 0) is reused, the
longest-released first, only once no unused slot is left. A group with more than
RR_PEERS_MAX peers, or finding the table full, gets a private state: its rotation is then
per worker (documented in docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import multiprocessing
from collections.abc import Sequence
from multiprocessing import shared_memory
from typing import Any

from pyproxy.balancer import BalancerCtx, Peer, peer_eligible

RR_SLOTS = 64  # groups (config generations) the table holds at once
RR_PEERS_MAX = 128  # peers of a group kept in a slot


class _Slot(ctypes.Structure):
    """struct rr_state's fields, in private or shared memory."""

    _fields_ = [
        ("used", ctypes.c_bool),  # slot taken (by a group, live or released)
        ("refs", ctypes.c_uint32),  # sets holding it
        ("released", ctypes.c_uint64),  # release order stamp (the oldest is reused first)
        ("key", ctypes.c_char * 32),  # sha256 of the group
        ("n", ctypes.c_uint32),  # peers
        ("current", ctypes.c_int64 * RR_PEERS_MAX),  # current weight per peer
    ]


class _Head(ctypes.Structure):
    _fields_ = [("stamp", ctypes.c_uint64)]  # release counter


class RrRegistry:
    """Every shared round-robin state of the process (tree), keyed by group."""

    def __init__(self, shared: bool = False, slots: int = RR_SLOTS) -> None:
        size = ctypes.sizeof(_Head) + ctypes.sizeof(_Slot) * slots
        self._shm: shared_memory.SharedMemory | None = None
        buf: Any
        if shared:
            self._shm = shared_memory.SharedMemory(create=True, size=size)
            self._shm.unlink()  # the mapping stays; forked workers inherit it
            buf = self._shm.buf
            self.lock: Any = multiprocessing.get_context("fork").Lock()  # picks and slots
        else:
            buf = bytearray(size)
            self.lock = contextlib.nullcontext()
        self._head: Any = _Head.from_buffer(buf)
        self._table: Any = (_Slot * slots).from_buffer(buf, ctypes.sizeof(_Head))

    def acquire(self, group: str, n: int) -> Any:
        """The slot of `group` (refs + 1), a fresh one for a new group; None when the group
        is too large or the table is full."""
        if n > RR_PEERS_MAX or self._table is None:
            return None
        key = hashlib.sha256(group.encode("utf-8", "surrogateescape")).digest()
        with self.lock:
            free = reuse = None
            for s in self._table:
                if s.used and s.key == key and s.n == n:
                    s.refs += 1
                    return s
                if not s.used:
                    free = free if free is not None else s
                elif s.refs == 0 and (reuse is None or s.released < reuse.released):
                    reuse = s
            slot = free if free is not None else reuse
            if slot is None:
                return None
            ctypes.memset(ctypes.addressof(slot), 0, ctypes.sizeof(_Slot))
            slot.used = True
            slot.refs = 1
            slot.key = key
            slot.n = n
            return slot

    def release(self, slot: Any) -> None:
        with self.lock:
            if slot.refs:
                slot.refs -= 1
                if slot.refs == 0:
                    self._head.stamp += 1
                    slot.released = self._head.stamp

    def close(self) -> None:
        self._table = None
        self._head = None
        if self._shm is not None:
            with contextlib.suppress(BufferError):  # views still held keep the mapping
                self._shm.close()
            self._shm = None


_registry = RrRegistry()


def rr_registry_init(shared: bool, slots: int = RR_SLOTS) -> RrRegistry:
    """Replace the process's registry: shared=True (workers > 1) must run in the parent
    BEFORE the workers fork. States made earlier keep their old slots."""
    global _registry
    _registry.close()
    _registry = RrRegistry(shared, slots)
    return _registry


class RoundRobin:
    __slots__ = ("_lock", "_registry", "_slot", "current")
    name = "round_robin"

    def __init__(self, peers: Sequence[Peer], group: str | None = None) -> None:
        self._registry = _registry
        self._slot: Any = None if group is None else _registry.acquire(group, len(peers))
        self.current: Any  # smooth WRR current weight per peer (a list, or the slot's array)
        if self._slot is None:
            self.current = [0] * len(peers)
            self._lock: Any = None
        else:
            self.current = self._slot.current
            self._lock = _registry.lock

    def pick(self, peers: Sequence[Peer], ctx: BalancerCtx) -> int:
        if self._lock is None:
            return self._pick(peers, ctx)
        with self._lock:
            return self._pick(peers, ctx)

    def _pick(self, peers: Sequence[Peer], ctx: BalancerCtx) -> int:
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

    def close(self) -> None:
        """The set is retired: its slot may be reused once the table has no free one, so
        the picks still made on the retired set (retries in flight) go on privately."""
        slot = self._slot
        if slot is None:
            return
        with self._lock:
            self.current = list(slot.current[: slot.n])  # later picks (retries): private
        self._registry.release(slot)
        self._slot = None
        self._lock = None
