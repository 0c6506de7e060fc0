"""upstream: the keep-alive pool, connection slots and the FIFO queue, on the fake loop (the
stale-connection check peeks at a real socketpair). Twin: c-proxy/tests/test_upstream.c (same
names, same cases)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from fakes import FakeLoop, make_config

from pyproxy.upstream import AcquireResult, Upstream, UpstreamConn, UpstreamConnState, UpstreamSet


class Owner:
    def __init__(self) -> None:
        self.connected: list[UpstreamConn] = []
        self.failed: list[str] = []
        self.slots: list[UpstreamConn] = []
        self.read: list[bytes] = []
        self.eof = 0

    def upstream_on_connected(self, conn: UpstreamConn) -> None:
        self.connected.append(conn)

    def upstream_on_failed(self, conn: UpstreamConn, reason: str) -> None:
        self.failed.append(reason)

    def upstream_on_slot(self, conn: UpstreamConn) -> None:
        self.slots.append(conn)

    def upstream_on_read(self, data: bytes) -> None:
        self.read.append(data)

    def upstream_on_eof(self) -> None:
        self.eof += 1

    def upstream_on_write_paused(self) -> None:
        pass

    def upstream_on_write_resumed(self) -> None:
        pass


def make_upstream(max_conns: int = 2, max_idle: int = 2) -> tuple[FakeLoop, Upstream]:
    loop = FakeLoop()
    cfg = make_config(
        "limits:\n  upstream_max_connections: %d\n  upstream_idle_connections: %d\n"
        "timeouts:\n  idle: 5s\n" % (max_conns, max_idle),
        upstreams="upstreams:\n  - address: 127.0.0.1:9001\n    name: u1\n",
    )
    uset = UpstreamSet(loop, cfg)  # type: ignore[arg-type]
    return loop, uset.ups[0]


def connected(
    loop: FakeLoop, up: Upstream, owner: Owner, sock: socket.socket | None = None
) -> UpstreamConn:
    result, conn = up.acquire(owner)
    assert result == AcquireResult.CONNECTING and conn is not None
    assert conn.state == UpstreamConnState.CONNECTING
    loop.connects.pop().succeed(sock)
    assert owner.connected == [conn] and conn.state == UpstreamConnState.BUSY
    return conn


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def test_acquire_connects_when_pool_empty() -> None:
    loop, up = make_upstream()
    conn = connected(loop, up, Owner())
    assert up.n_open == 1 and not up.idle
    # a failed connect reports its reason and frees the slot
    a = Owner()
    up.acquire(a)
    loop.connects.pop().fail()
    assert a.failed == ["connect_refused"] and up.n_open == 1
    b = Owner()
    up.acquire(b)
    loop.connects.pop().fail(OSError("unreachable"))
    assert b.failed == ["connect_error"]
    # closed by its owner while connecting: the connect is cancelled, no callback
    c = Owner()
    _, pending_conn = up.acquire(c)
    assert pending_conn is not None
    pending = loop.connects[-1]
    up.close(pending_conn)
    assert pending.task is not None and pending.task.cancelled() and not c.failed
    assert up.n_open == 1 and conn.state == UpstreamConnState.BUSY


def test_release_pools_reusable() -> None:
    loop, up = make_upstream()
    conn = connected(loop, up, Owner())
    up.release(conn, True)
    assert up.n_open == 0 and list(up.idle) == [conn] and conn.exchanges == 1
    assert conn.state == UpstreamConnState.IDLE and conn.owner is None
    result, again = up.acquire(Owner())
    assert result == AcquireResult.READY and again is conn and up.n_open == 1
    assert not loop.connects


def test_release_closes_not_reusable() -> None:
    loop, up = make_upstream()
    conn = connected(loop, up, Owner())
    up.release(conn, False)
    assert not up.idle and conn.state == UpstreamConnState.CLOSED and up.n_open == 0
    assert conn.transport is not None and conn.transport.is_closing()


def test_acquire_reuses_most_recent_first() -> None:
    loop, up = make_upstream(max_conns=3, max_idle=3)
    c1 = connected(loop, up, Owner())
    c2 = connected(loop, up, Owner())
    up.release(c1, True)
    up.release(c2, True)
    assert up.acquire(Owner()) == (AcquireResult.READY, c2)  # warmest first
    assert up.acquire(Owner()) == (AcquireResult.READY, c1)


def test_pool_keeps_at_most_idle_connections() -> None:
    loop, up = make_upstream(max_conns=3, max_idle=1)
    c1 = connected(loop, up, Owner())
    c2 = connected(loop, up, Owner())
    up.release(c1, True)
    up.release(c2, True)
    assert list(up.idle) == [c1] and c2.state == UpstreamConnState.CLOSED
    # and no longer than timeouts.idle
    loop.advance(4.9)
    assert up.idle
    loop.advance(0.2)
    assert not up.idle and c1.state == UpstreamConnState.CLOSED


def test_queue_when_max_connections() -> None:
    loop, up = make_upstream(max_conns=1)
    a, b, c = Owner(), Owner(), Owner()
    connected(loop, up, a)
    assert up.acquire(b) == (AcquireResult.QUEUED, None)
    assert up.acquire(c) == (AcquireResult.QUEUED, None)
    assert not loop.connects and list(up.waiters) == [b, c]


def test_release_wakes_first_waiter() -> None:
    loop, up = make_upstream(max_conns=1)
    a, b, c = Owner(), Owner(), Owner()
    conn = connected(loop, up, a)
    up.acquire(b)
    up.acquire(c)
    up.release(conn, True)
    assert not b.slots  # handed over from the loop, not on the releaser's stack
    loop.run_soon()
    assert b.slots == [conn] and conn.state == UpstreamConnState.BUSY and not c.slots
    up.release(conn, False)  # closed: c gets a fresh connect
    loop.run_soon()
    assert len(c.slots) == 1 and c.slots[0].state == UpstreamConnState.CONNECTING
    assert len(loop.connects) == 1


def test_cancel_wait() -> None:
    loop, up = make_upstream(max_conns=1)
    a, b = Owner(), Owner()
    conn = connected(loop, up, a)
    up.acquire(b)
    up.cancel_wait(b)
    up.release(conn, True)
    loop.run_soon()
    assert not b.slots and list(up.idle) == [conn]


def test_stale_pooled_connection_replaced(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    loop, up = make_upstream(max_conns=4, max_idle=4)
    for _ in range(3):
        pairs.append(socket.socketpair())
    conns = [connected(loop, up, Owner(), ours) for ours, _ in pairs]
    for conn in conns:
        up.release(conn, True)
    # newest first: the upstream closed it (EOF not yet reported by the loop), and the next
    # one sent bytes nobody asked for; both are closed and the oldest, quiet one is used
    pairs[2][1].close()
    pairs[1][1].send(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    result, conn = up.acquire(Owner())
    assert result == AcquireResult.READY and conn is conns[0]
    assert conns[2].state == conns[1].state == UpstreamConnState.CLOSED
    assert not up.idle and up.n_open == 1
    # an EOF the loop did report: the connection left the pool at once
    pairs.append(socket.socketpair())
    other = connected(loop, up, Owner(), pairs[3][0])
    up.release(other, True)
    other.connection_lost(None)
    assert not up.idle and other.state == UpstreamConnState.CLOSED
    # all stale: a fresh connect
    up.release(conn, True)
    pairs[0][1].close()
    result, fresh = up.acquire(Owner())
    assert result == AcquireResult.CONNECTING and fresh is not conn


def test_retired_set_does_not_pool() -> None:
    loop, up = make_upstream()
    c1 = connected(loop, up, Owner())
    c2 = connected(loop, up, Owner())
    up.release(c1, True)
    up.set.retire()
    assert c1.state == UpstreamConnState.CLOSED and not up.idle
    up.release(c2, True)
    assert c2.state == UpstreamConnState.CLOSED and not up.idle
