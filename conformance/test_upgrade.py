"""Upgrade (e.g. WebSocket): 101 then a byte tunnel both ways (contract 3)."""

from __future__ import annotations

import pytest
from harness import build_request

UPGRADE_HEADERS = [("Upgrade", "websocket"), ("Connection", "Upgrade")]


def test_upgrade_tunnels_bytes_both_ways(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(build_request("GET", "/upgrade", UPGRADE_HEADERS))
        r = c.read_response()
        assert r.status == 101, r
        assert r.get("Upgrade") == "websocket"
        assert "upgrade" in r.get("Connection", "").lower()
        for msg in [b"hello", b"\x00\x01\x02 binary \xff", b"x" * 100_000]:
            c.send(msg)
            assert c.read_exactly(len(msg)) == msg
        # HTTP-looking bytes are tunnelled too, not parsed as a request.
        req = build_request("GET", "/bytes/3")
        c.send(req)
        assert c.read_exactly(len(req)) == req


def test_upgrade_bytes_sent_with_the_request(upstream, proxy):
    # Bytes right behind the upgrade request head belong to the tunnel.
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(build_request("GET", "/upgrade", UPGRADE_HEADERS) + b"early")
        r = c.read_response()
        assert r.status == 101
        assert c.read_exactly(5) == b"early"


def test_client_close_ends_tunnel(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    c = p.connect()
    c.send(build_request("GET", "/upgrade", UPGRADE_HEADERS))
    assert c.read_response().status == 101
    c.send(b"ping")
    assert c.read_exactly(4) == b"ping"
    d = up.counting()
    c.close()
    # Both sides of the tunnel are gone: the upstream has no connection left open.
    d.wait(lambda d: d.active == 0)
    assert p.request("/").status == 200


def test_no_upgrade_headers_gives_426_passed_through(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    r = p.request("/upgrade")
    assert r.status == 426 and r.reason == "Upgrade Required"
    assert r.body == b"upgrade required\n"
    assert not r.has("Upgrade")  # hop-by-hop outside a 101


def test_upgrade_header_without_connection_upgrade_is_not_an_upgrade(upstream, proxy):
    p = proxy(upstream(["u1"]))
    r = p.request("/upgrade", headers=[("Upgrade", "websocket")])
    assert r.status == 426


@pytest.mark.parametrize(
    "framing, body",
    [
        ([("Content-Length", "5")], b"hello"),
        ([("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n0\r\n\r\n"),
    ],
    ids=["content-length", "chunked"],
)
def test_upgrade_request_body_is_forwarded_not_parsed_as_a_request(
    upstream, proxy, framing, body
):
    # An upgrade request's body is its body (RFC 9112 6.3): it goes upstream before any
    # 101. Answered with a 200 (no switch), the next pipelined request is read from the
    # byte after that body; a body never becomes a request of its own (smuggling).
    up = upstream(["u1"])
    p = proxy(up)
    with up.counting() as d, p.connect() as c:
        c.send(
            build_request(
                "POST",
                "/echo",
                [("Upgrade", "h2c"), ("Connection", "Upgrade")] + framing,
            )
            + body
            + build_request("GET", "/bytes/3")
        )
        r = c.read_response()
        assert r.status == 200 and r.json()["body_length"] == 5, r
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == b"012", r2
    assert d.requests == 2
