"""balancer_roundrobin: smooth weighted round robin, as nginx's ngx_http_upstream_get_peer().
Twin: c-proxy/src/balancer_roundrobin.c.

Each pick adds every eligible peer's weight to its current weight, takes the peer with the
highest current weight (first wins a tie) and subtracts the total from it. With weights 5,1,1
the sequence is a a b a c a a: spread out, and N*k picks over equal weights give exactly k each.
Peers not eligible (tried, down, drained) take no part in a pick.

One rotation per process tree: the states created with the same group (the workers' upstream
sets of one config generation, see upstream.py) are one state, so the picks of all workers
are one smooth sequence (docs/architecture.md "Workers"). The C twin's workers are threads
sharing a registry under a mutex; Python's workers are processes, so with workers > 1 the
current weights live in a fixed table of ctypes slots (RR_SLOTS, keyed by a digest of the
group) in a multiprocessing.shared_memory block made by the parent BEFORE forking
(rr_registry_init(shared=True), as health.py's table), picks taking the multiprocessing
lock made with it. With one worker a state is a plain list shared by group in a dict
(no lock, no ctypes: the cost of before). A slot whose last set retired (refs 0) is reused, the
longest-released first, only once no unused slot is left. A group with more than
RR_PEERS_MAX peers, or finding the table full, gets a private state: its rotation is then
per worker (documented in docs/architecture.md).
"""

from __future__ import annotations

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


class _Private:
    """A state in private memory (one worker process): a plain list, as fast as before."""

    __slots__ = ("current", "key", "n", "refs")

    def __init__(self, key: bytes, n: int) -> None:
        self.key = key
        self.n = n
        self.refs = 1
        self.current = [0] * n


class RrRegistry:
    """Every shared round-robin state of the process (tree), keyed by group: with
    shared=True in the slot table (shared memory), else in a dict of _Private."""

    def __init__(self, shared: bool = False, slots: int = RR_SLOTS) -> None:
        self.shared = shared
        self._shm: shared_memory.SharedMemory | None = None
        self._private: dict[bytes, _Private] = {}
        self.lock: Any = None  # shared: picks and slots
        self._head: Any = None
        self._table: Any = None
        if shared:
            size = ctypes.sizeof(_Head) + ctypes.sizeof(_Slot) * slots
            shm = shared_memory.SharedMemory(create=True, size=size)
            shm.unlink()  # the mapping stays; forked workers inherit it
            self._shm = shm
            self.lock = multiprocessing.get_context("fork").Lock()
            buf: Any = shm.buf
            self._head = _Head.from_buffer(buf)
            self._table = (_Slot * slots).from_buffer(buf, ctypes.sizeof(_Head))

    def acquire(self, group: str, n: int) -> Any:
        """The state of `group` (refs + 1), a fresh one for a new group; None when the
        group is too large or the table is full."""
        key = hashlib.sha256(group.encode("utf-8", "surrogateescape")).digest()
        if not self.shared:
            st = self._private.get(key)
            if st is not None and st.n == n:
                st.refs += 1
                return st
            st = _Private(key, n)
            self._private[key] = st
            return st
        if n > RR_PEERS_MAX or self._table is None:
            return None
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
        if isinstance(slot, _Private):
            slot.refs -= 1
            if slot.refs == 0 and self._private.get(slot.key) is slot:
                del self._private[slot.key]
            return
        with self.lock:
            if slot.refs:
                slot.refs -= 1
                if slot.refs == 0:
                    self._head.stamp += 1
                    slot.released = self._head.stamp

    def close(self) -> None:
        self._private.clear()
        self._table = None
        self._head = None
        if self._shm is not None:
            try:
                self._shm.close()
            except BufferError:  # states still held view it: the mapping lives on with them
                _kept.append(self._shm)
            self._shm = None


_kept: list[shared_memory.SharedMemory] = []  # closed registries' blocks still viewed
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
        self._lock: Any = None  # the shared table's lock, None for a private state
        if self._slot is None:
            self.current = [0] * len(peers)
        else:
            self.current = self._slot.current
            if not isinstance(self._slot, _Private):
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
        if self._lock is not None:
            with self._lock:
                self.current = list(slot.current[: slot.n])  # later picks (retries): private
        self._registry.release(slot)
        self._slot = None
        self._lock = None
