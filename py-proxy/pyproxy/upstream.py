"""upstream: connections to the upstream servers, the keep-alive pool and the per-upstream
wait queue. Twin: c-proxy/src/upstream.c.

Per worker, an UpstreamSet is built from one config: one Upstream per configured upstream
(pool, queue, counters) and the balancer over them. A reload builds a new set and retires the
old one: its idle connections close at once, its busy ones when released.

Upstream connection states (UpstreamConn.state):

    acquire -> CONNECTING --connected--> BUSY <-----------------+
                   | failed/timeout         | release           | acquire (pool hit)
                   v                        v (reusable)        |
                CLOSED <---- not reusable --+----> IDLE --------+
                   ^                                 | readable (EOF/junk), idle timeout,
                   +---------------------------------+ retired set, found stale by acquire

A connection counts against limits.upstream_max_connections in every state but CLOSED. When
none is idle and the limit is reached, the client waits in the upstream's FIFO queue; a freed
slot goes to the first waiter (the released connection, or a connect started for it) through
owner.upstream_on_slot(), called from the loop (loop.call_soon), never on the releaser's stack.

Python: the connection is an asyncio Protocol; its transport holds the socket and the write
buffer (the C twin's fd and uout). The connect runs in a create_connection task; its timeout is
the client's (client.deadline() CONNECT), as in the C twin.
"""

from __future__ import annotations

import asyncio
import itertools
import select
import socket
from collections import deque
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol, cast

from pyproxy import metrics
from pyproxy.balancer import Peer
from pyproxy.balancer_strategies import balancer_new
from pyproxy.health import (
    HealthChecker,
    health_checker_start,
    health_checker_stop,
    health_state_get,
)

if TYPE_CHECKING:
    from pyproxy.config import Config

#: write buffer limits for every transport (both sides): the source pauses above HIGH
WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024


class UpstreamOwner(Protocol):
    """What an UpstreamConn or an Upstream calls back on (client.ClientConn)."""

    def upstream_on_connected(self, conn: UpstreamConn) -> None: ...
    def upstream_on_failed(self, conn: UpstreamConn, reason: str) -> None: ...
    def upstream_on_slot(self, conn: UpstreamConn) -> None: ...
    def upstream_on_read(self, data: bytes) -> None: ...
    def upstream_on_eof(self) -> None: ...
    def upstream_on_write_paused(self) -> None: ...
    def upstream_on_write_resumed(self) -> None: ...


class UpstreamConnState(IntEnum):
    CONNECTING = 0  # create_connection in progress; owned by its client
    BUSY = 1  # attached to one client exchange
    IDLE = 2  # in the keep-alive pool, watched for EOF
    CLOSED = 3  # transport closed


class AcquireResult(IntEnum):
    READY = 0  # the returned conn is BUSY (pool hit)
    CONNECTING = 1  # the returned conn is CONNECTING; owner.upstream_on_connected/failed later
    QUEUED = 2  # the owner waits in the queue; owner.upstream_on_slot(conn) later


# poll(2) events that make a pooled connection unusable, as the C twin's peek sees them:
# readable (EOF or bytes nobody asked for), peer shut down, error or hang-up (the last
# two are always reported). Not POLLPRI: urgent data is invisible to a peek.
_STALE_EVENTS = select.POLLIN | select.POLLRDHUP


def socket_peer_closed(sock: socket.socket) -> bool:
    """True when a connected socket has EOF, an error or unread bytes pending: one poll(2)
    with a zero timeout, the same answer as the C twin's non-blocking recv(MSG_PEEK).
    `sock` may be the loop's transport socket wrapper (no recv of its own); a poll object
    holds only the descriptor's number, so nothing here can close it. (Borrowing it
    through socket.socket(fileno=) cost a getsockname per request.)"""
    fd = sock.fileno()
    if fd < 0:
        return True
    p = select.poll()
    p.register(fd, _STALE_EVENTS)
    return bool(p.poll(0))


class UpstreamConn(asyncio.Protocol):
    """One upstream TCP connection. Owned by its Upstream; borrowed by one client while BUSY."""

    def __init__(self, up: Upstream, owner: UpstreamOwner | None) -> None:
        self.up = up  # the upstream (pool) it belongs to
        self.owner = owner  # CONNECTING/BUSY: the exchange using it
        self.state = UpstreamConnState.CONNECTING  # see the diagram
        self.transport: asyncio.Transport | None = None  # set by connection_made
        self.task: asyncio.Task[object] | None = None  # the create_connection task
        self.idle_since = 0.0  # IDLE: when it entered the pool (expiry: Upstream.idle_timer)
        self.exchanges = 0  # completed exchanges (> 0: a reused connection)
        self.lost_reason = ""  # "upstream_reset" when the connection was lost on an error

    # asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport = t
        t.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        sock = t.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.state != UpstreamConnState.CONNECTING:  # closed meanwhile
            t.abort()
            return
        self.state = UpstreamConnState.BUSY
        if self.owner is not None:
            self.owner.upstream_on_connected(self)

    def data_received(self, data: bytes) -> None:
        mb = metrics.bound
        mb.v[mb.base + metrics.C_RX_UPSTREAM] += len(data)
        if self.state == UpstreamConnState.BUSY and self.owner is not None:
            self.owner.upstream_on_read(data)
        elif self.state == UpstreamConnState.IDLE:
            # the upstream sent bytes nobody asked for: never reuse
            self.up.close(self)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.lost_reason = "upstream_reset"
        owner = self.owner if self.state == UpstreamConnState.BUSY else None
        if self.state != UpstreamConnState.CLOSED:
            self.up.close(self)
        if owner is not None:
            owner.upstream_on_eof()

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_on_write_paused()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_on_write_resumed()

    def stale(self) -> bool:
        """IDLE: did the upstream close this connection (or send bytes nobody asked for)?
        The loop may not have reported it yet, so the socket itself is asked with a
        non-blocking MSG_PEEK (as the C twin's upstream_acquire)."""
        t = self.transport
        if t is None or t.is_closing():
            return True  # EOF or an error already seen
        sock = t.get_extra_info("socket")
        if sock is None:
            return False
        return socket_peer_closed(sock)

    # for the owner -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and self.state == UpstreamConnState.BUSY and not t.is_closing():
            mb = metrics.bound
            mb.v[mb.base + metrics.C_TX_UPSTREAM] += len(data)
            t.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and self.state == UpstreamConnState.BUSY:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.state == UpstreamConnState.BUSY:
            self.transport.resume_reading()

    def write_eof(self) -> None:
        """Tunnel: the client finished sending."""
        t = self.transport
        if t is not None and self.state == UpstreamConnState.BUSY and t.can_write_eof():
            t.write_eof()

    # connect task ------------------------------------------------------------------------------

    def on_connect_done(self, task: asyncio.Task[object]) -> None:
        self.task = None
        if task.cancelled():
            return  # closed by its owner (connect timeout, client gone)
        exc = task.exception()
        if exc is None or self.state != UpstreamConnState.CONNECTING:
            return
        reason = "connect_refused" if isinstance(exc, ConnectionRefusedError) else "connect_error"
        owner = self.owner
        self.up.close(self)
        if owner is not None:
            owner.upstream_on_failed(self, reason)


class Upstream:
    """One configured upstream in one set: keep-alive pool, slots, wait queue, counters."""

    def __init__(self, uset: UpstreamSet, index: int) -> None:
        cfg = uset.cfg.upstreams[index]
        self.set = uset  # owner
        self.index = index  # position in the set / balancer peer index
        self.name = cfg.name  # for logs
        self.host = cfg.host  # connect address
        self.port = cfg.port
        self.idle: deque[UpstreamConn] = deque()  # pool, most recently used on the right
        self.idle_timer: asyncio.TimerHandle | None = None  # expiry of idle[0], the oldest
        self.n_open = 0  # CONNECTING + BUSY conns
        self.waiters: deque[UpstreamOwner] = deque()  # FIFO of clients waiting for a slot
        self.requests = 0  # attempts started (this set, this worker)
        self.fails = 0  # failed attempts (health)
        self.label = 0  # metrics label of the name (UpstreamSet sets it)
        self.idle_pub = 0  # len(idle) as last added to the metrics row (U_IDLE)

    def acquire(
        self, owner: UpstreamOwner, fresh: bool = False
    ) -> tuple[AcquireResult, UpstreamConn | None]:
        """A connection for `owner` (see AcquireResult). A pooled connection the upstream
        has closed meanwhile is closed and replaced here (contract 6: not an attempt).
        `fresh`: not from the pool (a retry after a pooled connection died under its request:
        the others in the pool are as old); at the connection limit the oldest idle one
        makes room."""
        if fresh:
            limit = self.set.cfg.limits.upstream_max_connections
            if limit and self.idle and self.n_open + len(self.idle) >= limit:
                self.close(self.idle[0])
        while self.idle and not fresh:
            conn = self.idle.pop()
            if conn.stale():
                self.close(conn)
                continue
            conn.state = UpstreamConnState.BUSY
            conn.owner = owner
            self.n_open += 1
            self.idle_sync()
            return AcquireResult.READY, conn
        limit = self.set.cfg.limits.upstream_max_connections
        if limit and self.n_open + len(self.idle) >= limit:
            self.waiters.append(owner)
            return AcquireResult.QUEUED, None
        return AcquireResult.CONNECTING, self._connect(owner)

    def _connect(self, owner: UpstreamOwner) -> UpstreamConn:
        conn = UpstreamConn(self, owner)
        self.n_open += 1
        mb = metrics.bound
        mb.v[mb.base + metrics.C_CONN_UPSTREAM] += 1
        loop = self.set.loop
        task = loop.create_task(loop.create_connection(lambda: conn, self.host, self.port))
        conn.task = task
        task.add_done_callback(conn.on_connect_done)
        return conn

    def release(self, conn: UpstreamConn, reusable: bool) -> None:
        """The exchange on a BUSY conn is over: pool it if reusable (and the pool has room and
        the set is current), else close it. A waiter gets the slot."""
        uset = self.set
        if (
            conn.state != UpstreamConnState.BUSY
            or not reusable
            or uset.retired
            or (len(self.idle) >= uset.cfg.limits.upstream_idle_connections and not self.waiters)
        ):
            self.close(conn)
            return
        conn.exchanges += 1
        conn.owner = None
        conn.state = UpstreamConnState.IDLE
        self.n_open -= 1
        self.idle.append(conn)
        self.idle_sync()
        if conn.transport is not None:
            conn.transport.resume_reading()  # watch for EOF/junk while idle
        # expiry: one lazy timer per upstream for the oldest idle conn (the C twin arms one
        # ev_timer per conn; a TimerHandle per release would cost more than the release)
        conn.idle_since = uset.loop.time()
        if self.idle_timer is None:
            self._arm_idle_timer()
        if self.waiters:
            self._wake_waiter(conn)

    def close(self, conn: UpstreamConn, graceful: bool = False) -> None:
        """Close a conn in any state (graceful: after its queued bytes are written). A waiter
        gets the freed slot."""
        if conn.state == UpstreamConnState.CLOSED:
            return
        if conn.state == UpstreamConnState.IDLE:
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
        else:
            self.n_open -= 1
        conn.state = UpstreamConnState.CLOSED
        conn.owner = None
        mb = metrics.bound
        mb.v[mb.base + metrics.C_CONN_UPSTREAM] -= 1
        self.idle_sync()
        if conn.task is not None:
            task, conn.task = conn.task, None
            task.cancel()
        if conn.transport is not None:
            if graceful:
                conn.transport.close()
            else:
                conn.transport.abort()
        if self.waiters:
            self._wake_waiter(None)

    def idle_sync(self) -> None:
        """The pool size into this worker's metrics row (GET /upstreams idle, summed over
        every worker)."""
        n = len(self.idle)
        if n != self.idle_pub:
            mb = metrics.bound
            mb.v[mb.base + metrics.ucell(self.label, metrics.U_IDLE)] += n - self.idle_pub
            self.idle_pub = n

    def cancel_wait(self, owner: UpstreamOwner) -> None:
        """Remove `owner` from the queue (timeout, client gone)."""
        try:
            self.waiters.remove(owner)
        except ValueError:
            pass

    def _arm_idle_timer(self) -> None:
        if self.idle:
            loop = self.set.loop
            when = self.idle[0].idle_since + self.set.idle_s
            self.idle_timer = loop.call_at(when, self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        self.idle_timer = None
        deadline = self.set.loop.time() - self.set.idle_s + 0.0005
        while self.idle and self.idle[0].idle_since <= deadline:
            self.close(self.idle[0])
        self._arm_idle_timer()

    def _wake_waiter(self, reusable: UpstreamConn | None) -> None:
        owner = self.waiters.popleft()
        if reusable is not None:
            self.idle.remove(reusable)
            self.idle_sync()
            reusable.state = UpstreamConnState.BUSY
            reusable.owner = owner
            self.n_open += 1
            conn = reusable
        else:
            conn = self._connect(owner)
        self.set.loop.call_soon(owner.upstream_on_slot, conn)


_sets_built = itertools.count(1)  # sets this process built: the config generation


def _group(cfg: Config) -> str:
    """The balancer's sharing key for a new set: the generation (every worker builds one
    set at start and one per applied reload, so the n-th set of each worker is the same
    generation) and the members, so that workers never share across different configs."""
    members = "\n".join("%s %d" % (u.name, u.weight or 1) for u in cfg.upstreams)
    return "%d\n%s\n%s" % (next(_sets_built), cfg.balancer, members)


class UpstreamSet:
    """The upstreams of one config generation, and its balancer. Owned by the worker
    (current set) and borrowed by every exchange routed with it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cfg: Config) -> None:
        self.loop = loop
        self.cfg = cfg  # immutable
        self.ups = [Upstream(self, i) for i in range(len(cfg.upstreams))]
        peers = []
        for up, u in zip(self.ups, cfg.upstreams, strict=True):
            # the shared verdict for this name (every worker, every config generation)
            health = health_state_get(u.name, u.addr.text)
            health.configure(cfg)
            up.label = metrics.label_of(health.id)
            peers.append(Peer(u.weight or 1, health=health, name=u.name))  # name: ring identity
        # the sharing key: one round-robin rotation for every worker's set of this config
        # generation (the C twin keys on the cfgref that all its threads share)
        self.balancer = balancer_new(cfg.balancer, peers, _group(cfg))
        self.checker: HealthChecker | None = None  # active checks (worker 0's current set)
        self.retired = False  # replaced by a reload (or shutting down): no pooling
        t = cfg.timeouts  # in seconds, for client.deadline() (hot)
        self.idle_s = t.idle_ms / 1000.0
        self.header_s = t.header_ms / 1000.0
        self.read_s = t.read_ms / 1000.0
        self.write_s = t.write_ms / 1000.0
        self.total_s = t.total_ms / 1000.0
        self.queue_s = t.queue_ms / 1000.0
        self.connect_s = t.connect_ms / 1000.0
        self.min_rate = t.min_rate  # bytes/s; 0 = off
        self.min_rate_window_s = t.min_rate_window_ms / 1000.0

    def start_checks(self) -> None:
        """Run the active health checks of this set's config on its loop (health.check; one
        worker only: the verdicts are shared). retire() stops them."""
        if self.checker is None and not self.retired:
            states = [p.health for p in self.balancer.peers if p.health is not None]
            self.checker = health_checker_start(self.loop, self.cfg, states)

    def retire(self) -> None:
        """Close idle conns now; busy ones close when released. Active checks stop. The
        balancer lets go of its shared state (later retries pick privately)."""
        self.retired = True
        self.balancer.close()
        health_checker_stop(self.checker)
        self.checker = None
        for u in self.ups:
            while u.idle:
                u.close(u.idle[-1])
            if u.idle_timer is not None:
                u.idle_timer.cancel()
                u.idle_timer = None

    # queries (GET /upstreams, contract 8) and the operator's drain ----------------------------

    def info(self, counters: metrics.Counters | None = None) -> list[dict[str, object]]:
        """Every upstream as GET /upstreams shows it (upstream_info): requests, fails, active
        and idle are summed over every worker's metrics row (per upstream name, as the C
        twin's health counters); state, healthy and last_error are the shared health verdict
        (every worker). `counters`: the process tree's rows (None: this process's own)."""
        out: list[dict[str, object]] = []
        for u, p in zip(self.ups, self.balancer.peers, strict=True):
            h = p.health
            c = self.cfg.upstreams[u.index]
            if counters is not None:
                req, fails, active, idle = (
                    counters.total(metrics.ucell(u.label, k))
                    for k in (metrics.U_REQUESTS, metrics.U_FAILS, metrics.U_ACTIVE, metrics.U_IDLE)
                )
            else:
                req, fails, active, idle = u.requests, u.fails, p.active, len(u.idle)
            out.append(
                {
                    "name": u.name,
                    "address": c.addr.text,
                    "weight": p.weight,
                    "state": "drain" if h is not None and h.is_drained() else "active",
                    "healthy": h is None or h.is_healthy(),
                    "active": max(active, 0),
                    "idle": max(idle, 0),
                    "requests": req,
                    "fails": fails,
                    "last_error": h.last_error() if h is not None else "",
                }
            )
        return out

    def set_drain(self, name: str, drain: bool) -> bool:
        """Operator drain (admin PATCH /upstreams/{name}, later): the upstream gets no new
        attempts, in-flight ones finish; shared by every worker and kept across reloads.
        False for an unknown name."""
        for u, p in zip(self.ups, self.balancer.peers, strict=True):
            if u.name == name and p.health is not None:
                p.health.set_drain(drain)
                return True
        return False
