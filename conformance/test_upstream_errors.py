"""Upstream failures become the proxy's own errors (contract 3, 4; behaviour.md errors)."""

from __future__ import annotations

import threading
import time

import pytest
from harness import assert_proxy_error, build_request, free_port, pattern

INVALID_KINDS = ["garbage", "cl-te", "dup-cl", "bad-cl", "bad-chunk", "bad-status"]


def _expect_502_keepalive(p, path: str, rid: str) -> None:
    with p.connect() as c:
        c.send(build_request("GET", path, [("X-Request-ID", rid)]))
        r = c.read_response()
        assert_proxy_error(r, 502, close=False, request_id=rid)
        # The whole request had been read: the client connection stays usable.
        r2 = c.request("/bytes/5")
        assert r2.status == 200 and r2.body == pattern(0, 5)


def test_refused_gives_502(proxy):
    p = proxy([{"address": f"127.0.0.1:{free_port()}", "name": "dead"}])
    r = p.request("/", headers=[("X-Request-ID", "refused-1")])
    assert_proxy_error(r, 502, close=False, request_id="refused-1")


def test_refused_502_generates_request_id(proxy):
    p = proxy([{"address": f"127.0.0.1:{free_port()}", "name": "dead"}])
    r = p.request("/")
    assert_proxy_error(r, 502, close=False)


@pytest.mark.parametrize("path", ["/drop", "/reset"])
def test_upstream_closes_without_response_gives_502(upstream, proxy, path):
    p = proxy(upstream(["u1"]))
    _expect_502_keepalive(p, path, "e-" + path[1:])


@pytest.mark.parametrize("kind", INVALID_KINDS)
def test_invalid_upstream_response_gives_502(upstream, proxy, kind):
    p = proxy(upstream(["u1"]))
    _expect_502_keepalive(p, f"/invalid/{kind}", f"inv-{kind}")


def test_invalid_response_connection_not_reused(upstream, proxy):
    # After a bad response the upstream connection is closed, never pooled: the next
    # request gets a clean response on a new connection.
    up = upstream(["u1"])
    p = proxy(up)
    with up.counting() as d:
        assert p.request("/invalid/cl-te").status == 502
        r = p.request("/bytes/9")
        assert r.status == 200 and r.body == pattern(0, 9)
    assert d.connections == 2


def test_truncated_body_closes_client(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(build_request("GET", "/truncate/1000"))
        head = c.read_head()
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Length: 1000\r\n" in head
        rest = c.read_to_close()
        assert len(rest) < 1000 and rest == pattern(0, len(rest))


@pytest.mark.parametrize("behind", ["post-body", "pipelined-gets"])
def test_truncated_body_then_lingering_close_with_pipelined_input(
    upstream, proxy, behind
):
    # Found by the soak (conformance/soak.py): a response the upstream cut short, with
    # more pipelined request bytes waiting unread behind it. Closing a socket with unread
    # input sends an RST, which can destroy the response bytes still in flight to the
    # client (RFC 9112 9.6): the client saw "connection reset" instead of the head and
    # the 500 body bytes. The proxy must send what it has, then close lingering (shut its
    # write side, discard input), as after its own errors: the client reads the head, the
    # 500 bytes and a clean EOF, never a reset.
    up = upstream(["u1"])
    p = proxy(up)
    if behind == "post-body":
        rest_req = build_request("POST", "/echo", body=b"x" * 400_000)
    else:
        rest_req = b"".join(build_request("GET", f"/bytes/{i}") for i in range(2000))
    for _ in range(5):
        with up.counting() as d, p.connect() as c:
            c.send(build_request("GET", "/truncate/1000"))
            failed: list[BaseException] = []

            def more(c=c, failed=failed) -> None:
                try:
                    c.send(rest_req)
                except OSError as e:  # the proxy closed without reading it
                    failed.append(e)

            t = threading.Thread(target=more)
            t.start()
            head = c.read_head()
            assert head.startswith(b"HTTP/1.1 200 ")
            rest = c.read_to_close()
            t.join(10)
            assert not c.reset, "connection reset instead of a close"
            assert rest == pattern(0, 500)
            assert failed == []
        assert d.requests == 1  # nothing behind the cut response was forwarded


def test_queue_timeout_gives_503(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(
        up,
        limits={"upstream_max_connections": 1},
        timeouts={"queue": "200ms", "read": "10s"},
    )
    results = {}

    def slow() -> None:
        with p.connect() as c:
            results["slow"] = c.request("/delay/1500")

    d = up.counting()
    t = threading.Thread(target=slow)
    t.start()
    d.wait(lambda d: d.requests >= 1)  # the slow request holds the only upstream slot
    r = p.request("/", headers=[("X-Request-ID", "q-1")])
    assert_proxy_error(r, 503, close=False, request_id="q-1")
    t.join(10)
    assert results["slow"].status == 200
    # The slot is free again.
    assert p.request("/").status == 200


def test_queued_request_served_when_slot_frees(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, limits={"upstream_max_connections": 1}, timeouts={"queue": "3s"})
    results = {}

    def slow() -> None:
        with p.connect() as c:
            results["slow"] = c.request("/delay/400")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.1)
    r = p.request("/bytes/6")
    t.join(10)
    assert r.status == 200 and r.body == pattern(0, 6)
    assert results["slow"].status == 200


def test_failed_connect_moves_to_next_upstream(upstream, proxy):
    up = upstream(["live"])
    p = proxy([{"address": f"127.0.0.1:{free_port()}", "name": "dead"}] + up.entries())
    for _ in range(6):
        r = p.request("/bytes/2")
        assert r.status == 200 and r.get("X-Upstream") == "live"


def test_expect_100_continue_with_dead_upstream_gets_502_not_100(proxy):
    p = proxy([{"address": f"127.0.0.1:{free_port()}", "name": "dead"}])
    with p.connect() as c:
        c.send(
            build_request(
                "POST",
                "/echo",
                [
                    ("Content-Length", "100"),
                    ("Expect", "100-continue"),
                    ("X-Request-ID", "x-1"),
                ],
            )
        )
        r = c.read_response(interim=True)
        # No upstream connected: no 100; the body was never read, so the connection closes.
        assert_proxy_error(r, 502, close=True, request_id="x-1")


def test_pipelined_requests_around_a_502(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(
            build_request("GET", "/bytes/3")
            + build_request("GET", "/drop", [("X-Request-ID", "d-1")])
            + build_request("GET", "/bytes/4")
        )
        assert c.read_response().body == pattern(0, 3)
        assert_proxy_error(c.read_response(), 502, close=False, request_id="d-1")
        assert c.read_response().body == pattern(0, 4)


@pytest.mark.parametrize("path", ["/drop", "/reset"])
def test_head_error_has_no_body_and_keeps_the_connection(upstream, proxy, path):
    # A response to HEAD has no body (RFC 9112 6.3), the proxy's own errors included: the
    # 502 keeps its Content-Length (RFC 9110 9.3.2) but sends no JSON, so the next response
    # on the same connection is read from its first byte (a body here would desync it).
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(build_request("HEAD", path, [("X-Request-ID", "head-err")]))
        r = c.read_response(method="HEAD")
        assert r.status == 502 and r.body == b""
        body = b'{"code":502,"message":"Bad Gateway"}'
        assert r.raw_head == (
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nX-Request-ID: head-err\r\n\r\n" % len(body)
        )
        r2 = c.request("/bytes/5")
        assert r2.status == 200 and r2.body == pattern(0, 5)


def test_head_rejected_before_routing_has_no_body(upstream, proxy):
    # A HEAD whose head fails its checks (no Host on HTTP/1.1): the 400 is a HEAD answer
    # too, so no body follows it, then the connection closes (found by the fuzzer).
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(b"HEAD / HTTP/1.1\r\nX-Request-ID: head-400\r\n\r\n")
        r = c.read_response(method="HEAD")
        body = b'{"code":400,"message":"Bad Request"}'
        assert r.raw_head == (
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nX-Request-ID: head-400\r\nConnection: close\r\n\r\n"
            % len(body)
        )
        assert c.read_to_close() == b""
