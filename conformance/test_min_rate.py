"""timeouts.min_rate (docs/behaviour.md "Slow clients"): while the proxy waits on a client,
each min_rate_window must move min_rate x min_rate_window bytes. A request body slower
than that gets 408 (close); a client reading the response slower than that is reset. A
client is not blamed for the upstream's pace. Small windows keep the tests short."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from harness import assert_proxy_error, build_request, pattern
from slowclients import TCP_CLOSE, tcp_state

RATE = {"min_rate": "1k", "min_rate_window": "300ms", "total": "60s", "read": "30s"}


def test_body_slower_than_min_rate_gets_408(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, timeouts=RATE)
    with p.connect(timeout=10) as c:
        c.send(
            build_request(
                "POST",
                "/echo",
                [("Content-Length", "100000"), ("X-Request-ID", "slow-body")],
            )
        )
        got = b""
        for _ in range(100):  # one byte per 50 ms: 20 bytes/s
            try:
                c.send(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
            got = c.read_available(0.05)
            if got:
                break
        c.buf[:0] = got
        assert_proxy_error(c.read_response(), 408, close=True, request_id="slow-body")
        c.assert_closed()
    # the upstream exchange was aborted, not pooled half-sent
    r = p.request("/bytes/5")
    assert r.status == 200 and r.body == pattern(0, 5)


def test_body_faster_than_min_rate_completes(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts=RATE)
    with p.connect(timeout=10) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "4000")]))
        for _ in range(20):  # 200 bytes per 50 ms: 4k bytes/s, over many windows
            c.send(b"b" * 200)
            time.sleep(0.05)
        r = c.read_response()
    assert r.status == 200 and r.json()["body_length"] == 4000


def test_min_rate_off_by_default(upstream, proxy):
    # the same trickle as above without min_rate: nothing ends it in the same time
    p = proxy(upstream(["u1"]), timeouts={"total": "60s", "read": "30s"})
    with p.connect(timeout=10) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "100000")]))
        for _ in range(20):
            c.send(b"a")
            assert c.read_available(0.05) == b""
        assert c.is_open()


def test_reader_slower_than_min_rate_is_reset(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts=RATE)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", p.port))
    try:
        s.sendall(build_request("GET", "/bytes/100000000"))
        got = 0
        # read 64 bytes per 100 ms (640 bytes/s) until the proxy ends the connection
        ended = False
        for _ in range(300):
            if tcp_state(s) == TCP_CLOSE:  # a reset arrived
                ended = True
                break
            try:
                got += len(s.recv(64))
            except ConnectionResetError:
                ended = True
                break
            time.sleep(0.1)
        assert ended and got < 100000000
    finally:
        s.close()
    r = p.request("/bytes/5")
    assert r.status == 200 and r.body == pattern(0, 5)


def test_slow_upstream_is_not_the_clients_fault(upstream, proxy):
    # the response comes slower than min_rate, but the client takes every byte at once:
    # the proxy is waiting on the upstream, not on the client
    p = proxy(upstream(["u1"]), timeouts=RATE)
    r = p.request("/drip/12?interval=100")
    assert r.status == 200 and r.body == pattern(0, 12)


def test_body_held_up_by_the_upstream_is_not_the_clients_fault(proxy):
    # an upstream that never reads: the client sends its body as fast as it can, the
    # proxy's writes to the upstream stall, and the body stops moving; that is the write
    # timeout's business (close, no response), never a 408 for the client
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)  # never accepted, never read
    try:
        port = lsock.getsockname()[1]
        p = proxy([{"address": f"127.0.0.1:{port}"}], timeouts={**RATE, "write": "2s"})
        s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
        try:
            chunk, n = b"z" * (1 << 20), 256
            head = build_request("POST", "/echo", [("Content-Length", str(n << 20))])

            def pump() -> None:
                with contextlib.suppress(OSError):
                    s.sendall(head)
                    for _ in range(n):
                        s.sendall(chunk)

            t = threading.Thread(target=pump, daemon=True)
            t.start()
            got = b""
            with contextlib.suppress(OSError):
                while chunk := s.recv(65536):
                    got += chunk
            assert b"408" not in got[:12], got[:200]
        finally:
            s.close()
    finally:
        lsock.close()
