"""upstream: the keep-alive pool, connection slots and the FIFO queue.
Twin: c-proxy/tests/test_upstream.c."""

from __future__ import annotations

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


def connected(loop: FakeLoop, up: Upstream, owner: Owner) -> UpstreamConn:
    result, conn = up.acquire(owner)
    assert result == AcquireResult.CONNECTING and conn is not None
    assert conn.state == UpstreamConnState.CONNECTING
    loop.connects.pop().succeed()
    assert owner.connected == [conn] and conn.state == UpstreamConnState.BUSY
    return conn


def test_connect_then_reuse_from_pool() -> None:
    loop, up = make_upstream()
    conn = connected(loop, up, Owner())
    assert up.n_open == 1
    up.release(conn, True)
    assert up.n_open == 0 and list(up.idle) == [conn] and conn.exchanges == 1
    result, again = up.acquire(Owner())
    assert result == AcquireResult.READY and again is conn and up.n_open == 1


def test_not_reusable_is_closed() -> None:
    loop, up = make_upstream()
    conn = connected(loop, up, Owner())
    up.release(conn, False)
    assert not up.idle and conn.state == UpstreamConnState.CLOSED and up.n_open == 0
    assert conn.transport is not None and conn.transport.is_closing()


def test_idle_connection_closed_by_peer_leaves_the_pool() -> None:
    loop, up = make_upstream()
    conn = connected(loop, up, Owner())
    up.release(conn, True)
    conn.connection_lost(None)
    assert not up.idle and conn.state == UpstreamConnState.CLOSED


def test_bytes_on_idle_connection_close_it() -> None:
    loop, up = make_upstream()
    conn = connected(loop, up, Owner())
    up.release(conn, True)
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    assert not up.idle and conn.state == UpstreamConnState.CLOSED


def test_idle_expiry() -> None:
    loop, up = make_upstream()
    conn = connected(loop, up, Owner())
    up.release(conn, True)
    loop.advance(4.9)
    assert up.idle
    loop.advance(0.2)
    assert not up.idle and conn.state == UpstreamConnState.CLOSED


def test_idle_limit() -> None:
    loop, up = make_upstream(max_conns=3, max_idle=1)
    c1 = connected(loop, up, Owner())
    c2 = connected(loop, up, Owner())
    up.release(c1, True)
    up.release(c2, True)
    assert list(up.idle) == [c1] and c2.state == UpstreamConnState.CLOSED


def test_max_connections_queue_fifo_and_handover() -> None:
    loop, up = make_upstream(max_conns=1)
    a, b, c = Owner(), Owner(), Owner()
    conn = connected(loop, up, a)
    assert up.acquire(b) == (AcquireResult.QUEUED, None)
    assert up.acquire(c) == (AcquireResult.QUEUED, None)
    assert not loop.connects and list(up.waiters) == [b, c]
    up.release(conn, True)
    loop.run_soon()  # handed over from the loop, not on the releaser's stack
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


def test_connect_failure() -> None:
    loop, up = make_upstream()
    a = Owner()
    up.acquire(a)
    loop.connects.pop().fail()
    assert a.failed == ["connect_refused"] and up.n_open == 0
    b = Owner()
    up.acquire(b)
    loop.connects.pop().fail(OSError("unreachable"))
    assert b.failed == ["connect_error"]


def test_close_while_connecting_cancels_the_connect() -> None:
    loop, up = make_upstream()
    a = Owner()
    _, conn = up.acquire(a)
    assert conn is not None
    pending = loop.connects[-1]
    up.close(conn)
    assert up.n_open == 0 and pending.task is not None and pending.task.cancelled()
    assert not a.failed  # the owner closed it: no callback


def test_retired_set_closes_idle_and_does_not_pool() -> None:
    loop, up = make_upstream()
    c1 = connected(loop, up, Owner())
    c2 = connected(loop, up, Owner())
    up.release(c1, True)
    up.set.retire()
    assert c1.state == UpstreamConnState.CLOSED
    up.release(c2, True)
    assert c2.state == UpstreamConnState.CLOSED and not up.idle
