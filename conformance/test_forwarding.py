"""Forwarding: requests and responses pass through intact (contract 3, behaviour.md)."""

from __future__ import annotations

import socket
import time
import zlib

import pytest
from harness import assert_proxy_error, build_request, chunked, pattern

BODY = bytes((i * 7 + 3) % 251 for i in range(100_000))


def test_get_round_trip(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    r = p.request("/bytes/1000")
    assert r.status == 200 and r.reason == "OK"
    assert r.body == pattern(0, 1000)
    assert r.get("Content-Length") == "1000"
    assert r.get("X-Upstream") == "u1"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_request_body_arrives_intact(upstream, proxy, method):
    p = proxy(upstream(["u1"]))
    r = p.request("/echo", method=method, body=BODY)
    assert r.status == 200
    echo = r.json()
    assert echo["method"] == method
    assert echo["body_length"] == len(BODY)
    assert echo["body_crc32"] == zlib.crc32(BODY)
    assert echo["version"] == "1.1"


def test_chunked_request_body_arrives_intact(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(
            build_request("POST", "/echo", [("Transfer-Encoding", "chunked")])
            + chunked(BODY[:1], BODY[1:4097], BODY[4097:])
        )
        r = c.read_response()
    assert r.status == 200
    echo = r.json()
    assert (echo["body_length"], echo["body_crc32"]) == (len(BODY), zlib.crc32(BODY))


def test_get_without_body_sends_no_framing(upstream, proxy):
    p = proxy(upstream(["u1"]))
    echo = p.request("/echo").json()
    names = [n.lower() for n, _ in echo["headers"]]
    assert "content-length" not in names and "transfer-encoding" not in names
    assert echo["body_length"] == 0


@pytest.mark.parametrize("code", [200, 201, 301, 404, 418, 500, 503])
def test_status_and_reason_pass_through(upstream, proxy, code):
    up = upstream(["u1"])
    p = proxy(up)
    direct = up.request(f"/status/{code}")
    r = p.request(f"/status/{code}")
    assert (r.status, r.reason, r.body) == (direct.status, direct.reason, direct.body)
    assert r.json() == {"status": code}


def test_host_and_query_unchanged(upstream, proxy):
    p = proxy(upstream(["u1"]))
    target = "/echo?a=1&b=%20x&c"
    r = p.request(target, headers=[("Host", "Example.COM:8080")])
    echo = r.json()
    assert echo["path"] == target
    hosts = [v for n, v in echo["headers"] if n.lower() == "host"]
    assert hosts == ["Example.COM:8080"]


def test_response_headers_pass_through(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    target = (
        "/headers?X-Custom=abc&Set-Cookie=a%3Db&set-cookie=c%3Dd&Cache-Control=no-store"
    )
    direct = up.request(target)
    r = p.request(target)
    assert r.status == 200 and r.body == b"ok\n"
    # Same headers, same order, same case (nothing hop-by-hop was sent).
    want = [(n, v) for n, v in direct.headers if n.lower() != "connection"]
    assert r.headers == want


def test_http10_client_gets_close(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(build_request("GET", "/bytes/100", version="HTTP/1.0", host=None))
        r = c.read_response()
        assert r.status == 200 and r.body == pattern(0, 100)
        assert r.get("Connection", "").lower() == "close"
        c.assert_closed()


def test_http10_keepalive_when_asked(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        for i in range(3):
            c.send(
                build_request(
                    "GET",
                    f"/bytes/{10 + i}",
                    [("Connection", "keep-alive")],
                    version="HTTP/1.0",
                )
            )
            r = c.read_response()
            assert r.status == 200 and r.body == pattern(0, 10 + i)
            assert r.get("Connection", "").lower() == "keep-alive"
            assert r.get("Content-Length") == str(10 + i)
        assert c.is_open()


def test_http10_request_goes_upstream_as_11(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(build_request("GET", "/echo", version="HTTP/1.0"))
        r = c.read_response()
    assert r.json()["version"] == "1.1"


@pytest.mark.parametrize("keepalive", [False, True])
def test_chunked_response_dechunked_for_http10(upstream, proxy, keepalive):
    p = proxy(upstream(["u1"]))
    hdrs = [("Connection", "keep-alive")] if keepalive else []
    with p.connect() as c:
        c.send(
            build_request(
                "GET", "/chunked/10000?chunk=999&trailer=1", hdrs, version="HTTP/1.0"
            )
        )
        head = c.read_head().decode("latin-1")
        body = c.read_to_close()  # close-delimited: the proxy must close after it
    assert head.startswith("HTTP/1.1 200 ")
    lower = head.lower()
    assert "transfer-encoding" not in lower and "content-length" not in lower
    assert "\r\nconnection: close\r\n" in lower
    assert body == pattern(0, 10000)


def test_chunked_response_to_http11_with_trailers(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(build_request("GET", "/chunked/10000?chunk=999&trailer=1"))
        r = c.read_response()
        assert r.status == 200 and r.framing == "chunked"
        assert r.body == pattern(0, 10000)
        assert ("X-Trailer", "done") in r.trailers
        assert not r.has("Trailer")  # hop-by-hop
        # The connection is still usable afterwards.
        r2 = c.request("/bytes/5")
        assert r2.body == pattern(0, 5)


def test_head_has_no_body(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    with p.connect() as c:
        c.send(build_request("HEAD", "/bytes/1000") + build_request("GET", "/bytes/7"))
        r = c.read_response("HEAD")
        assert r.status == 200 and r.get("Content-Length") == "1000"
        r2 = c.read_response()  # would be garbage if HEAD had carried a body
        assert r2.status == 200 and r2.body == pattern(0, 7)


@pytest.mark.parametrize("code", [204, 304])
def test_204_304_have_no_body(upstream, proxy, code):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(
            build_request("GET", f"/status/{code}") + build_request("GET", "/bytes/7")
        )
        r = c.read_response()
        assert r.status == code
        assert not r.has("Transfer-Encoding")
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == pattern(0, 7)


def test_expect_100_continue(upstream, proxy):
    p = proxy(upstream(["u1"]))
    body = BODY[:5000]
    with p.connect() as c:
        c.send(
            build_request(
                "POST",
                "/echo",
                [("Content-Length", "5000"), ("Expect", "100-continue")],
            )
        )
        interim = c.read_response(interim=True)
        assert interim.raw_head == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(body)
        r = c.read_response()
    assert r.status == 200 and r.interim == []
    echo = r.json()
    assert (echo["body_length"], echo["body_crc32"]) == (5000, zlib.crc32(body))
    assert "expect" not in [n.lower() for n, _ in echo["headers"]]


def test_other_expect_value_is_dropped(upstream, proxy):
    p = proxy(upstream(["u1"]))
    r = p.request(
        "/echo", method="POST", headers=[("Expect", "something")], body=b"abc"
    )
    assert r.status == 200
    echo = r.json()
    assert echo["body_length"] == 3
    assert "expect" not in [n.lower() for n, _ in echo["headers"]]


def test_head_on_chunked_response_has_no_body(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(
            build_request("HEAD", "/chunked/1000") + build_request("GET", "/bytes/7")
        )
        r = c.read_response("HEAD")
        assert r.status == 200
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == pattern(0, 7)


def test_large_response_header_passes(upstream, proxy):
    p = proxy(upstream(["u1"]))
    big = "v" * 8000
    r = p.request(f"/headers?X-Big={big}")
    assert r.status == 200 and r.get("X-Big") == big


def test_connect_method_gets_501(upstream, proxy):
    # docs/architecture.md: CONNECT is not proxied.
    up = upstream(["u1"])
    p = proxy(up)
    with up.counting() as d, p.connect() as c:
        c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        assert_proxy_error(c.read_response(), 501, close=True)
        c.assert_closed()
    assert d.requests == 0


def test_multiple_workers(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, workers=2)
    for i in range(20):
        r = p.request(f"/bytes/{i}")
        assert r.status == 200 and r.body == pattern(0, i)
    with p.connect() as c:
        for _ in range(5):
            assert (
                c.request("/echo", method="POST", body=BODY[:999]).json()["body_length"]
                == 999
            )
    assert p.workers_serving(0, 25) == {0, 1}, "one worker served all 21 connections"


@pytest.mark.parametrize("code", [100, 102, 103])
def test_interim_1xx_forwarded_to_http11(upstream, proxy, code):
    up = upstream(["u1"])
    p = proxy(up)
    with p.connect() as c:
        c.send(build_request("GET", f"/status/{code}"))
        interim = c.read_response(interim=True)
        assert interim.status == code
        assert interim.reason == up.request(f"/status/{code}").interim[0].reason
        final = c.read_response()
        assert final.status == 200 and final.json() == {"status": code}
        assert c.request("/bytes/2").body == pattern(0, 2)


@pytest.mark.parametrize("code", [100, 103])
def test_interim_1xx_dropped_for_http10(upstream, proxy, code):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(build_request("GET", f"/status/{code}", version="HTTP/1.0"))
        r = c.read_response(interim=True)
        assert r.status == 200 and r.json() == {"status": code}


def test_request_sent_one_byte_at_a_time(upstream, proxy):
    p = proxy(upstream(["u1"]))
    body = b"0123456789" * 5
    raw = build_request(
        "POST", "/echo", [("X-A", "1"), ("Transfer-Encoding", "chunked")]
    ) + chunked(body[:7], body[7:], trailers=[("X-T", "t")])
    with p.connect() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(raw)):
            c.send(raw[i : i + 1])
            time.sleep(0.001)
        r = c.read_response()
    e = r.json()
    assert (e["body_length"], e["body_crc32"]) == (len(body), zlib.crc32(body))
    assert ["X-A", "1"] in e["headers"] and ["X-T", "t"] in e["headers"]
