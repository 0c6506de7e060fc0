"""Timers (contract 2 timeouts, behaviour.md "Timers"). Small timeouts keep the suite fast;
asserts are on what the client sees, never on how fast."""

from __future__ import annotations

import socket
import time

import pytest
from harness import assert_proxy_error, build_request, free_port, pattern


def test_slow_request_head_gets_408(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, timeouts={"header": "300ms"})
    with up.counting() as d, p.connect() as c:
        c.send(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n")  # head never finished
        r = c.read_response()
        assert_proxy_error(r, 408, close=True)
        c.assert_closed()
    assert d.requests == 0


def test_slowloris_dripping_head_gets_408(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"header": "300ms"})
    with p.connect() as c:
        data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        got = b""
        for i in range(len(data)):
            try:
                c.send(data[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            got = c.read_available(0.05)
            if got:
                break
        c.buf[:0] = got
        r = c.read_response()
        assert_proxy_error(r, 408, close=True)
        c.assert_closed()


def test_fresh_connection_silent_gets_408(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"header": "300ms", "idle": "10s"})
    with p.connect() as c:
        r = c.read_response()
        assert_proxy_error(r, 408, close=True)
        c.assert_closed()


def test_keepalive_next_request_head_timer(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"header": "300ms", "idle": "10s"})
    with p.connect() as c:
        assert c.request("/").status == 200
        c.send(
            b"GET / HTTP/1.1\r\n"
        )  # first byte of the next request starts the header timer
        r = c.read_response()
        assert_proxy_error(r, 408, close=True)
        c.assert_closed()


def test_idle_keepalive_connection_closed_silently(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"idle": "300ms", "header": "10s"})
    with p.connect() as c:
        assert c.request("/").status == 200
        c.assert_closed(timeout=5)


def test_upstream_slower_than_read_gets_504(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, timeouts={"read": "300ms"})
    with p.connect() as c:
        c.send(build_request("GET", "/delay/2000", [("X-Request-ID", "slow-1")]))
        r = c.read_response()
        assert_proxy_error(r, 504, close=False, request_id="slow-1")
        # The request was read whole: the client connection stays usable.
        r2 = c.request("/bytes/4")
        assert r2.status == 200 and r2.body == pattern(0, 4)


def test_total_timeout_before_response_gets_504(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"read": "5s", "total": "400ms"})
    with p.connect() as c:
        c.send(build_request("GET", "/delay/2000", [("X-Request-ID", "tot-1")]))
        r = c.read_response()
        assert_proxy_error(r, 504, close=False, request_id="tot-1")


def _assert_truncated(c, n: int) -> None:
    head = c.read_head()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"Content-Length: {n}\r\n".encode() in head
    rest = c.read_to_close(timeout=5)
    # Truncated, and never completed with an error response.
    assert len(rest) < n, rest
    assert rest == pattern(0, len(rest)), rest


def test_total_timeout_during_body_closes(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"read": "5s", "total": "500ms"})
    with p.connect() as c:
        c.send(build_request("GET", "/drip/100?interval=50"))
        _assert_truncated(c, 100)


def test_drip_slower_than_read_timeout_closes(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"read": "300ms"})
    with p.connect() as c:
        c.send(build_request("GET", "/drip/10?interval=1000"))
        _assert_truncated(c, 10)


def test_drip_faster_than_read_timeout_completes(upstream, proxy):
    # The read timer is the longest gap between bytes, not a limit on the whole body.
    p = proxy(upstream(["u1"]), timeouts={"read": "500ms"})
    r = p.request("/drip/12?interval=100")
    assert r.status == 200 and r.body == pattern(0, 12)


class FullBacklog:
    """A listening socket that never accepts, with its accept queue filled, so a further
    TCP connect to it neither succeeds nor is refused (SYNs are dropped): the only way to
    get a connect timeout on loopback."""

    def __init__(self) -> None:
        self.port = free_port()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(0)
        self.fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fillers.append(s)
        time.sleep(0.05)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", self.port))
            ok = False
        except TimeoutError:
            ok = True
        finally:
            probe.close()
        assert ok, "could not fill the accept backlog: connect did not hang"

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.lsock.close()


@pytest.fixture
def blackhole():
    bh = FullBacklog()
    yield bh
    bh.close()


def test_connect_timeout_gives_502(upstream, proxy, blackhole):
    p = proxy(
        [{"address": f"127.0.0.1:{blackhole.port}", "name": "hole"}],
        timeouts={"connect": "200ms", "read": "10s"},
    )
    r = p.request("/", headers=[("X-Request-ID", "ct-1")])
    assert_proxy_error(r, 502, close=False, request_id="ct-1")


def test_connect_timeout_moves_to_next_upstream(upstream, proxy, blackhole):
    up = upstream(["live"])
    p = proxy(
        [{"address": f"127.0.0.1:{blackhole.port}", "name": "hole"}] + up.entries(),
        timeouts={"connect": "200ms", "read": "10s"},
    )
    for _ in range(4):
        r = p.request("/bytes/3")
        assert r.status == 200 and r.get("X-Upstream") == "live"


def test_write_timeout_closes_stalled_reader(upstream, proxy):
    total = 1024 * 1024 * 1024
    p = proxy(
        upstream(["u1"]), timeouts={"write": "300ms", "read": "30s", "total": "60s"}
    )
    with p.connect(timeout=10) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(build_request("GET", f"/bytes/{total}"))
        head = c.read_head()
        assert head.startswith(b"HTTP/1.1 200 ")
        assert c.read_exactly(1 << 20) == pattern(0, 1 << 20)
        time.sleep(2)  # stall far longer than timeouts.write
        # What was buffered before the close drains, then EOF; a proxy that kept the
        # connection would go on streaming.
        got = 1 << 20
        c.settimeout(3)
        while got < 256 << 20:
            try:
                n = len(c.sock.recv(1 << 20))
            except ConnectionResetError:
                n = 0
            if n == 0:
                break
            got += n
        assert got < 256 << 20, "still streaming after stalling past timeouts.write"


def test_idle_timer_does_not_cut_an_in_flight_request(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"idle": "300ms", "read": "5s"})
    with p.connect() as c:
        r = c.request("/delay/900?then=/bytes/5")
        assert r.status == 200 and r.body == pattern(0, 5)


def test_header_timer_does_not_cover_the_body(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"header": "300ms", "read": "5s"})
    with p.connect() as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "10")]))
        for i in range(10):
            time.sleep(0.1)
            c.send(b"%d" % i)
        r = c.read_response()
        assert r.status == 200 and r.json()["body_length"] == 10
