"""Pipelined requests are answered in order (contract 3)."""

from __future__ import annotations

import zlib

from harness import assert_proxy_error, build_request, chunked, free_port, pattern


def test_pipelined_gets_in_order(upstream, proxy):
    p = proxy(upstream(["u1"]))
    sizes = [5, 1, 300, 0, 70000, 2]
    with p.connect() as c:
        c.send(b"".join(build_request("GET", f"/bytes/{n}") for n in sizes))
        for n in sizes:
            r = c.read_response()
            assert r.status == 200 and r.body == pattern(0, n)
        assert c.is_open()


def test_pipelined_with_bodies_and_delays(upstream, proxy):
    p = proxy(upstream(["u1"]))
    b1, b2 = b"first body", bytes(range(256)) * 40
    reqs = [
        (build_request("GET", "/delay/300?then=/bytes/11"), "GET"),
        (build_request("POST", "/echo", body=b1), "POST"),
        (build_request("GET", "/status/404"), "GET"),
        (
            build_request("PUT", "/echo", [("Transfer-Encoding", "chunked")])
            + chunked(b2[:1000], b2[1000:]),
            "PUT",
        ),
        (build_request("HEAD", "/bytes/50"), "HEAD"),
        (build_request("GET", "/delay/100?then=/chunked/5000%3Fchunk%3D7"), "GET"),
        (build_request("GET", "/bytes/3"), "GET"),
    ]
    with p.connect() as c:
        c.send(b"".join(r for r, _ in reqs))
        got = [c.read_response(m) for _, m in reqs]
    assert got[0].status == 200 and got[0].body == pattern(0, 11)
    e1 = got[1].json()
    assert (e1["method"], e1["body_length"], e1["body_crc32"]) == (
        "POST",
        len(b1),
        zlib.crc32(b1),
    )
    assert got[2].status == 404 and got[2].json() == {"status": 404}
    e3 = got[3].json()
    assert (e3["method"], e3["body_length"], e3["body_crc32"]) == (
        "PUT",
        len(b2),
        zlib.crc32(b2),
    )
    assert (
        got[4].status == 200
        and got[4].body == b""
        and got[4].get("Content-Length") == "50"
    )
    assert got[5].status == 200 and got[5].body == pattern(0, 5000)
    assert got[6].status == 200 and got[6].body == pattern(0, 3)


def test_pipelined_after_connection_close_is_not_answered(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    with up.counting() as d, p.connect() as c:
        c.send(
            build_request("GET", "/bytes/2", [("Connection", "close")])
            + build_request("GET", "/bytes/3")
        )
        r = c.read_response()
        assert r.body == pattern(0, 2)
        c.assert_closed()
    assert d.requests == 1


def test_many_pipelined_requests_beyond_buffer_sizes(upstream, proxy):
    # More pipelined bytes than any per-connection buffer holds, bodies included.
    p = proxy(upstream(["u1"]))
    reqs = []
    for i in range(150):
        if i % 3 == 0:
            body = bytes([65 + i % 26]) * (2000 + i)
            reqs.append(("echo", body, build_request("POST", "/echo", body=body)))
        else:
            reqs.append(("bytes", i, build_request("GET", f"/bytes/{i}")))
    with p.connect(timeout=10) as c:
        c.send(b"".join(r for _, _, r in reqs))
        for kind, arg, _ in reqs:
            r = c.read_response()
            assert r.status == 200
            if kind == "echo":
                e = r.json()
                assert (e["body_length"], e["body_crc32"]) == (
                    len(arg),
                    zlib.crc32(arg),
                )
            else:
                assert r.body == pattern(0, arg)


def test_pipelined_self_answered_all_answered(proxy):
    # 200 pipelined GETs in one send that the proxy answers itself (502: the only
    # upstream refuses connections): every one is answered, in order, with keep-alive
    # kept, long before timeouts.header/idle (30 s) could wake a stalled connection.
    p = proxy(
        [{"address": f"127.0.0.1:{free_port()}", "name": "dead"}],
        timeouts={"header": "30s", "idle": "30s"},
    )
    n = 200
    with p.connect(timeout=10) as c:
        c.send(
            b"".join(
                build_request("GET", f"/p/{i}", [("X-Request-ID", f"pipe-{i}")])
                for i in range(n)
            )
        )
        for i in range(n):
            r = c.read_response()
            assert_proxy_error(r, 502, close=False, request_id=f"pipe-{i}")
        assert c.is_open()


def test_pipelined_all_down_all_answered(proxy):
    # The synchronous case: both upstreams refuse, the first request marks them down
    # (max_fails: 1), then 200 pipelined GETs get 503 without any upstream socket
    # event in between. Every one is answered, keep-alive kept, long before
    # timeouts.header/idle (30 s).
    p = proxy(
        [
            {"address": f"127.0.0.1:{free_port()}", "name": "a"},
            {"address": f"127.0.0.1:{free_port()}", "name": "b"},
        ],
        health={"max_fails": 1, "fail_timeout": "30s"},
        timeouts={"header": "30s", "idle": "30s"},
    )
    n = 200
    with p.connect(timeout=10) as c:
        c.send(build_request("GET", "/first", [("X-Request-ID", "first")]))
        assert_proxy_error(c.read_response(), 502, close=False, request_id="first")
        c.send(
            b"".join(
                build_request("GET", f"/p/{i}", [("X-Request-ID", f"down-{i}")])
                for i in range(n)
            )
        )
        for i in range(n):
            r = c.read_response()
            assert_proxy_error(r, 503, close=False, request_id=f"down-{i}")
        assert c.is_open()
