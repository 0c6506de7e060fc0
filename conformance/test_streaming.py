"""Bodies stream: big transfers arrive intact and the proxy's memory stays bounded
whatever the body size or the reader's speed (contract 3)."""

from __future__ import annotations

import socket
import time

import pytest
from harness import PatternChecker, build_request, pattern, pattern_crc32

BIG = 256 * 1024 * 1024
RSS_GROWTH_LIMIT_KB = 64 * 1024  # per-connection buffers are KiB, not MiB
SAMPLE_EVERY = 8 * 1024 * 1024


class RssSampler:
    """Takes the proxy's RSS every SAMPLE_EVERY body bytes."""

    def __init__(self, p, inner=None):
        self.p, self.inner = p, inner
        self.base = p.rss_kb()
        self.peak = self.base
        self.seen = 0
        self.next = SAMPLE_EVERY

    def sample(self) -> None:
        self.peak = max(self.peak, self.p.rss_kb())

    def __call__(self, piece) -> None:
        if self.inner:
            self.inner(piece)
        self.seen += len(piece)
        if self.seen >= self.next:
            self.next += SAMPLE_EVERY
            self.sample()

    def check(self) -> None:
        growth = self.peak - self.base
        assert growth < RSS_GROWTH_LIMIT_KB, (
            f"proxy RSS grew {growth} KiB ({self.base} -> {self.peak}) during the transfer"
        )


def warm_up(p) -> None:
    # Let both twins allocate their steady-state buffers before the baseline.
    for _ in range(3):
        assert p.request("/bytes/1048576").status == 200


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", [f"/bytes/{BIG}", f"/chunked/{BIG}?chunk=65536"])
def test_big_download(upstream, proxy, path):
    p = proxy(upstream(["u1"]))
    warm_up(p)
    check = PatternChecker()
    rss = RssSampler(p, check)
    with p.connect(timeout=30) as c:
        c.send(build_request("GET", path))
        r = c.read_response(sink=rss)
    assert r.status == 200
    assert r.body_length == BIG
    assert check.bad_at is None, f"body differs from the pattern at byte {check.bad_at}"
    rss.check()


def _upload(p, chunked_body: bool) -> None:
    piece = pattern(0, 1 << 20)
    if chunked_body:
        head = build_request("POST", "/echo", [("Transfer-Encoding", "chunked")])
        frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        tail = b"0\r\n\r\n"
    else:
        head = build_request("POST", "/echo", [("Content-Length", str(BIG))])
        frame, tail = piece, b""
    rss = RssSampler(p)
    with p.connect(timeout=30) as c:
        c.send(head)
        for i in range(BIG // len(piece)):
            c.send(frame)
            if i % 8 == 7:
                rss.sample()
        c.send(tail)
        r = c.read_response()
    assert r.status == 200
    echo = r.json()
    assert echo["body_length"] == BIG
    assert echo["body_crc32"] == pattern_crc32(BIG)
    rss.check()


@pytest.mark.timeout(180)
def test_big_upload_content_length(upstream, proxy):
    p = proxy(upstream(["u1"]))
    warm_up(p)
    _upload(p, chunked_body=False)


@pytest.mark.timeout(180)
def test_big_upload_chunked(upstream, proxy):
    p = proxy(upstream(["u1"]))
    warm_up(p)
    _upload(p, chunked_body=True)


@pytest.mark.timeout(120)
def test_slow_reader_backpressure(upstream, proxy):
    """A client that stops reading must not make the proxy buffer the upstream's body."""
    total = 1024 * 1024 * 1024
    p = proxy(upstream(["u1"]))
    warm_up(p)
    base = p.rss_kb()
    peak = base
    with p.connect(timeout=30) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(build_request("GET", f"/bytes/{total}"))
        head = c.read_head()
        assert head.startswith(b"HTTP/1.1 200 ")
        first = c.read_exactly(1 << 20)
        assert first == pattern(0, 1 << 20)
        # Stop reading: the upstream could push the whole GiB in well under this time.
        for _ in range(12):
            time.sleep(0.25)
            peak = max(peak, p.rss_kb())
        growth = peak - base
        assert growth < RSS_GROWTH_LIMIT_KB, (
            f"proxy RSS grew {growth} KiB while the client was not reading"
        )
        # Reading again resumes the same byte stream, nothing lost.
        more = c.read_exactly(8 << 20)
        assert more == pattern(1 << 20, 8 << 20)


@pytest.mark.timeout(60)
def test_memory_per_idle_connection_is_bounded(upstream, proxy):
    # 300 keep-alive clients, each after one request: the proxy holds them in bounded
    # per-connection buffers (generous bound: 256 KiB each).
    n = 300
    p = proxy(upstream(["u1"]))
    warm_up(p)
    base = p.rss_kb()
    conns = []
    try:
        for _ in range(n):
            c = p.connect()
            conns.append(c)
            assert c.request("/bytes/100").status == 200
        growth = p.rss_kb() - base
        assert growth < n * 256, f"RSS grew {growth} KiB for {n} idle connections"
    finally:
        for c in conns:
            c.close()
