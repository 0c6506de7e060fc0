"""worker: one event loop and everything that lives on it. Twin: c-proxy/src/worker.c.

A Worker owns its loop's connection list, the draining state, the current upstream set
(held, not built: it knows the set only as an object with `cfg` and `retire()`), the log and
the per-worker counters the retry budget reads. It knows connections only through the
WorkerConn protocol {shutdown, abort} (the C twin's struct worker_conn_ops; `free` has no
Python need: the garbage collector is the graveyard). What happens around it is injected by
its creator (main) through WorkerHooks: installing a new upstream set for a reloaded config,
closing the listening socket when draining starts, resuming accept when a connection left.
So worker.py imports neither client nor listener, and upstream only for the type of the set
it holds (C: a forward-declared struct upstream_set).

Workers: the C twin runs N threads with one loop each; Python runs N processes (main.py forks
them), one Worker per process.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from pyproxy.log import Log
from pyproxy.metrics import Counters

if TYPE_CHECKING:
    from pyproxy.config import Config
    from pyproxy.ratelimit import Table
    from pyproxy.upstream import UpstreamSet  # held only (struct upstream_set * in C)


class WorkerConn(Protocol):
    """What the worker may ask of a connection it holds (struct worker_conn_ops)."""

    def shutdown(self) -> None:
        """Draining started: close now if idle, else after the current exchange."""
        ...

    def abort(self) -> None:
        """Shutdown timeout: close now."""
        ...


class WorkerHooks(Protocol):
    """Callbacks of the worker's creator (struct worker_hooks)."""

    def on_config(self, w: Worker, cfg: Config) -> None:
        """A reloaded config: build its upstream set and w.install_set() it."""
        ...

    def on_drain(self, w: Worker) -> None:
        """Draining starts: stop accepting, retire the upstream set (before conns are shut)."""
        ...

    def on_conn_gone(self, w: Worker) -> None:
        """A live connection left (the global client count went down)."""
        ...


class WorkerRateLimit:
    """What the hot path needs of rate_limit (struct worker_ratelimit), rebuilt by the
    creator for each config: the table (borrowed, shared by every worker), the header of
    header:NAME lowercased (None: client_ip) and the IPv6 grouping."""

    __slots__ = ("header", "ipv6_prefix", "table")

    def __init__(self, table: Table, header: bytes | None, ipv6_prefix: int) -> None:
        self.table = table  # every worker's buckets (shared memory with workers > 1)
        self.header = header  # lowercase NAME of header:NAME, None for client_ip
        self.ipv6_prefix = ipv6_prefix  # client_ip keys of IPv6 peers: per /prefix


class Worker:
    """One event loop's context (struct worker). Owns the connection set and the current
    upstream set; install_set() must be called once before the loop runs."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        log: Log,
        wid: int = 0,
        hooks: WorkerHooks | None = None,
    ) -> None:
        self.loop = loop
        self.id = wid  # worker number (logs; worker 0 runs the active health checks)
        self.log = log  # access + event log (a reload may replace it)
        self.hooks = hooks  # the creator's callbacks, None in unit tests
        self.uset: UpstreamSet  # current upstream set (install_set), owned
        self.cfg: Config  # config of the current set
        self.conns: set[WorkerConn] = set()  # live client connections
        self.draining = False  # shutdown in progress: no accept, no keep-alive
        # retry budget inputs (contract 6), kept by the exchanges of this worker
        self.requests_in_flight = 0  # requests routed and not yet answered
        self.retries_in_flight = 0  # of those, requests on a retry attempt
        self.rl: WorkerRateLimit | None = None  # rate limiting of the listener, None: off
        self.counters = Counters()  # metrics counters (the creator may give shared ones)
        self.crow = Counters.row(wid)  # this worker's row in `counters`

    # connections ------------------------------------------------------------------------------

    def conn_add(self, c: WorkerConn) -> None:
        """A new live connection: shutdown/abort reach it from now on (worker_conn_add)."""
        self.conns.add(c)

    def conn_remove(self, c: WorkerConn) -> None:
        """A live connection closed: unlist it (worker_conn_bury)."""
        if c in self.conns:
            self.conns.discard(c)
            if self.hooks is not None:
                self.hooks.on_conn_gone(self)

    # reload and shutdown ---------------------------------------------------------------------

    def install_set(self, uset: UpstreamSet) -> None:
        """Make `uset` the current set (ownership moves in); the previous one is retired: its
        idle connections close now, in-flight exchanges finish on it (upstream_set_install)."""
        old = self.__dict__.get("uset")  # None at the first install
        self.uset = uset
        self.cfg = uset.cfg
        if old is not None:
            old.retire()

    def take_config(self, cfg: Config) -> None:
        """Reload: new requests use `cfg`; in-flight ones finish on the set they started
        with (the hook installs a new set and retires the old one)."""
        if not self.draining and self.hooks is not None:
            self.hooks.on_config(self, cfg)

    def begin_drain(self) -> None:
        """Stop accepting, close idle connections, let the others finish their exchange."""
        if self.draining:
            return
        self.draining = True
        if self.hooks is not None:
            self.hooks.on_drain(self)  # no accept; idle upstream conns close now
        for c in list(self.conns):
            c.shutdown()

    def abort_all(self) -> None:
        """Shutdown timeout: close what is left."""
        for c in list(self.conns):
            c.abort()
