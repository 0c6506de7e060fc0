"""Header handling in both directions (contract 3, behaviour.md "The request sent
upstream" / "The response sent to the client"). The upstream's /echo shows exactly what
it received: names, values, order and case."""

from __future__ import annotations

from harness import GENERATED_ID, HOP_BY_HOP, build_request


def _echo_headers(c) -> list[tuple[str, str]]:
    r = c.read_response()
    assert r.status == 200, r
    return [tuple(h) for h in r.json()["headers"]]


def _split_request_id(headers):
    """Returns the headers with the X-Request-ID value replaced by "<id>", and the id."""
    ids = [v for n, v in headers if n == "X-Request-ID"]
    assert len(ids) == 1, headers
    return [(n, "<id>" if n == "X-Request-ID" else v) for n, v in headers], ids[0]


def test_upstream_header_order_exact(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(
            build_request(
                "GET",
                "/echo",
                [
                    ("Host", "front.example"),
                    ("User-Agent", "conformance"),
                    ("Connection", "keep-alive, X-Hop"),
                    ("X-Hop", "x"),
                    ("accept", "*/*"),
                    ("Keep-Alive", "timeout=5"),
                    ("Proxy-Connection", "keep-alive"),
                    ("TE", "trailers"),
                    ("Trailer", "X-T"),
                    ("Upgrade", "h2c"),
                    ("X-Custom", "a,  b"),
                    ("x-custom", "c"),
                ],
            )
        )
        got, rid = _split_request_id(_echo_headers(c))
    assert GENERATED_ID.match(rid), rid
    assert got == [
        ("Host", "front.example"),
        ("User-Agent", "conformance"),
        ("accept", "*/*"),
        ("X-Custom", "a,  b"),
        ("x-custom", "c"),
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "front.example"),
        ("X-Request-ID", "<id>"),
        ("Via", "1.1 twinproxy"),
    ]


def test_upstream_header_order_with_body_and_client_forwarding_headers(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(
            build_request(
                "POST",
                "/echo",
                [
                    ("Host", "h.example:81"),
                    ("X-Forwarded-For", "10.0.0.1"),
                    ("Content-Length", "005"),
                    ("X-Request-ID", "client-id-7"),
                    ("Via", "1.0 edge"),
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Host", "spoofed.example"),
                    ("X-Forwarded-For", "10.0.0.2, 10.0.0.3"),
                    ("Content-Type", "text/plain"),
                ],
                body=b"hello",
            )
        )
        got = _echo_headers(c)
    assert got == [
        ("Host", "h.example:81"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "5"),
        ("X-Forwarded-For", "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "h.example:81"),
        ("X-Request-ID", "client-id-7"),
        ("Via", "1.0 edge, 1.1 twinproxy"),
    ]


def test_upstream_header_order_chunked_body(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(
            build_request(
                "PUT", "/echo", [("Transfer-Encoding", "chunked"), ("X-A", "1")]
            )
            + b"3\r\nabc\r\n0\r\nX-Trail: t\r\n\r\n"
        )
        got, _ = _split_request_id(_echo_headers(c))
    # /echo appends trailers after the headers.
    assert got == [
        ("Host", "test.local"),
        ("X-A", "1"),
        ("Transfer-Encoding", "chunked"),
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "test.local"),
        ("X-Request-ID", "<id>"),
        ("Via", "1.1 twinproxy"),
        ("X-Trail", "t"),
    ]


def test_generated_request_ids_differ(upstream, proxy):
    p = proxy(upstream(["u1"]))
    ids = set()
    with p.connect() as c:
        for _ in range(5):
            c.send(build_request("GET", "/echo"))
            _, rid = _split_request_id(_echo_headers(c))
            assert GENERATED_ID.match(rid), rid
            ids.add(rid)
    assert len(ids) == 5


def test_client_request_id_kept_as_sent(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(build_request("GET", "/echo", [("X-Request-ID", "Odd Value/+=")]))
        _, rid = _split_request_id(_echo_headers(c))
    assert rid == "Odd Value/+="


def test_response_hop_by_hop_removed(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    target = (
        "/headers?X-Before=1&Connection=X-Foo%2C%20X-Bar&X-Foo=1&Keep-Alive=timeout%3D5"
        "&Proxy-Connection=keep-alive&TE=trailers&Trailer=X-T&Upgrade=h2c&X-Bar=2&X-Keep=yes"
    )
    direct = up.request(target)
    assert (
        direct.get("X-Foo") == "1" and direct.get("Upgrade") == "h2c"
    )  # the upstream sent them
    r = p.request(target)
    assert r.status == 200 and r.body == b"ok\n"
    dropped = HOP_BY_HOP | {"x-foo", "x-bar"}
    want = [(n, v) for n, v in direct.headers if n.lower() not in dropped]
    assert r.headers == want
    assert r.get("X-Keep") == "yes" and r.get("X-Before") == "1"


def test_upgrade_request_header_order(upstream, proxy):
    # behaviour.md: on an upgrade request, `Connection: upgrade` and the client's `Upgrade`
    # follow the added headers. /echo answers 200, not 101: the connection stays HTTP.
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(
            build_request(
                "GET",
                "/echo",
                [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("X-A", "1")],
            )
        )
        got, _ = _split_request_id(_echo_headers(c))
        assert got == [
            ("Host", "test.local"),
            ("X-A", "1"),
            ("X-Forwarded-For", "127.0.0.1"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "test.local"),
            ("X-Request-ID", "<id>"),
            ("Via", "1.1 twinproxy"),
            ("Connection", "upgrade"),
            ("Upgrade", "websocket"),
        ]
        r = c.request("/bytes/3")
        assert r.status == 200 and r.body == b"012"
