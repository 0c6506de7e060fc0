"""limits: max_body_bytes (413), max_header_bytes (431), max_client_connections."""

from __future__ import annotations

import time

from harness import assert_proxy_error, build_request, pattern


def test_content_length_over_max_body_gets_413(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, limits={"max_body_bytes": 1000})
    with up.counting() as d, p.connect() as c:
        # Head only: the proxy must answer from the Content-Length, before any body.
        c.send(
            build_request(
                "POST", "/echo", [("Content-Length", "2000"), ("X-Request-ID", "big-1")]
            )
        )
        r = c.read_response()
        assert_proxy_error(r, 413, close=True, request_id="big-1")
        c.assert_closed()
    assert d.requests == 0


def test_body_at_max_body_is_accepted(upstream, proxy):
    p = proxy(upstream(["u1"]), limits={"max_body_bytes": "1k"})
    r = p.request("/echo", method="POST", body=b"z" * 1024)
    assert r.status == 200 and r.json()["body_length"] == 1024


def test_chunked_body_over_max_body_gets_413(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, limits={"max_body_bytes": 1000})
    d = up.counting()
    with p.connect() as c:
        c.send(
            build_request("POST", "/echo", [("Transfer-Encoding", "chunked")])
            + b"258\r\n"
            + b"a" * 600
            + b"\r\n"
            + b"258\r\n"
            + b"b" * 600
            + b"\r\n"
        )
        r = c.read_response()
        assert_proxy_error(r, 413, close=True)
        c.assert_closed()
    # Whatever part of the body had been streamed, that upstream exchange is aborted,
    # never left open or pooled half-written: the next request gets a clean answer.
    d.wait(lambda d: d.active == 0)
    r = p.request("/bytes/5")
    assert r.status == 200 and r.body == pattern(0, 5)


def test_head_over_max_header_bytes_gets_431(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, limits={"max_header_bytes": 1024})
    with up.counting() as d, p.connect() as c:
        c.send(build_request("GET", "/", [("X-Big", "a" * 2000)]))
        r = c.read_response()
        assert_proxy_error(r, 431, close=True)
        c.assert_closed()
    assert d.requests == 0


def test_many_headers_over_max_header_bytes_gets_431(upstream, proxy):
    p = proxy(upstream(["u1"]), limits={"max_header_bytes": 1024})
    with p.connect() as c:
        c.send(build_request("GET", "/", [(f"X-H{i}", "v" * 20) for i in range(100)]))
        r = c.read_response()
        assert_proxy_error(r, 431, close=True)
        c.assert_closed()


def test_head_under_max_header_bytes_passes(upstream, proxy):
    p = proxy(upstream(["u1"]), limits={"max_header_bytes": 1024})
    r = p.request("/bytes/1", headers=[("X-Big", "a" * 700)])
    assert r.status == 200 and r.body == pattern(0, 1)


def test_max_client_connections_pauses_accept(upstream, proxy):
    p = proxy(
        upstream(["u1"]),
        limits={"max_client_connections": 2},
        timeouts={"idle": "30s", "header": "30s"},
    )
    a, b = p.connect(), p.connect()
    try:
        assert a.request("/").status == 200
        assert b.request("/").status == 200
        # A third connection is not refused (the kernel queues it) but not served either.
        with p.connect(timeout=10) as c:
            c.send(build_request("GET", "/bytes/8"))
            early = c.read_available(0.7)
            assert early == b"" and not c.eof, f"served beyond the limit: {early!r}"
            p.wait_event("accept_paused")
            a.close()
            r = c.read_response()
            assert r.status == 200 and r.body == pattern(0, 8)
        assert b.request("/").status == 200
        p.wait_event("accept_resumed")
    finally:
        a.close()
        b.close()
    time.sleep(0.1)
    assert p.request("/").status == 200


def test_max_header_bytes_boundary(upstream, proxy):
    # docs/architecture.md: the head counts from the request line's first byte through the
    # blank line's CRLF.
    p = proxy(upstream(["u1"]), limits={"max_header_bytes": 1024})
    base = build_request("GET", "/", [("X-Pad", "")])
    pad = "a" * (1024 - len(base))
    exact = build_request("GET", "/", [("X-Pad", pad)])
    assert len(exact) == 1024
    with p.connect() as c:
        c.send(exact)
        assert c.read_response().status == 200
    with p.connect() as c:
        c.send(build_request("GET", "/", [("X-Pad", pad + "a")]))
        assert_proxy_error(c.read_response(), 431, close=True)


def test_chunked_body_at_max_body_is_accepted(upstream, proxy):
    p = proxy(upstream(["u1"]), limits={"max_body_bytes": 1024})
    with p.connect() as c:
        c.send(
            build_request("POST", "/echo", [("Transfer-Encoding", "chunked")])
            + b"200\r\n"
            + b"a" * 512
            + b"\r\n"
            + b"200\r\n"
            + b"b" * 512
            + b"\r\n0\r\n\r\n"
        )
        r = c.read_response()
    assert r.status == 200 and r.json()["body_length"] == 1024


def test_expect_100_over_max_body_gets_413_without_100(upstream, proxy):
    p = proxy(upstream(["u1"]), limits={"max_body_bytes": 1000})
    with p.connect() as c:
        c.send(
            build_request(
                "POST",
                "/echo",
                [("Content-Length", "5000"), ("Expect", "100-continue")],
            )
        )
        assert_proxy_error(c.read_response(interim=True), 413, close=True)
        c.assert_closed()
