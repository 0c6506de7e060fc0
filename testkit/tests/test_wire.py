"""testkit.wire: the same bytes read the same way over a socket, a buffered file and an
asyncio stream (real sockets: a socketpair whose far end writes canned bytes)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import pytest

from testkit import wire

CHUNKED = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Upstream: a\r\n\r\n"
    b"4;ext=1\r\nabcd\r\n2\r\nef\r\n0\r\nX-Trailer: done\r\n\r\n"
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop"
LENGTH = NOT_FOUND + b"HTTP/1.1 204 No Content\r\n\r\n"
CLOSE = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end"
CUT = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"


def _pair(data: bytes) -> socket.socket:
    """The near end of a socketpair whose far end sends data and closes."""
    a, b = socket.socketpair()
    a.settimeout(5)

    def send() -> None:
        with b:
            b.sendall(data)

    threading.Thread(target=send, daemon=True).start()
    return a


def _via_conn(data: bytes, method: str = "GET") -> list[wire.Response]:
    c = wire.Conn.wrap(_pair(data))
    out = [c.read_response(method)]
    while c.buf or c._fill():
        out.append(c.read_response())
    c.close()
    return out


def _via_file(data: bytes, method: str = "GET") -> list[wire.Response]:
    s = _pair(data)
    out = []
    with s, s.makefile("rb") as f:
        out.append(wire.read_response_stream(f, method))
        while f.peek(1):
            out.append(wire.read_response_stream(f))
    return out


def _via_async(data: bytes, method: str = "GET") -> list[wire.Response]:
    async def run() -> list[wire.Response]:
        reader, writer = await asyncio.open_connection(sock=_pair(data))
        out = [await wire.read_response_async(reader, method)]
        while not reader.at_eof():
            try:
                out.append(await wire.read_response_async(reader))
            except EOFError:
                break
        writer.close()
        return out

    return asyncio.run(run())


READERS: list[Callable[..., list[wire.Response]]] = [_via_conn, _via_file, _via_async]


@pytest.mark.parametrize("read", READERS, ids=["socket", "file", "asyncio"])
def test_chunked_with_interim_extensions_and_trailers(
    read: Callable[..., list[wire.Response]],
) -> None:
    [r] = read(CHUNKED)
    assert (r.status, r.reason, r.framing) == (200, "OK", "chunked")
    assert [i.status for i in r.interim] == [100]
    assert r.body == b"abcdef" and r.body_length == 6
    assert r.chunks == [4, 2, 0]
    assert r.trailers == [("X-Trailer", "done")]
    assert r.get("x-upstream") == "a" and r.names() == [
        "Transfer-Encoding",
        "X-Upstream",
    ]


@pytest.mark.parametrize("read", READERS, ids=["socket", "file", "asyncio"])
def test_length_then_bodiless_response_on_one_connection(
    read: Callable[..., list[wire.Response]],
) -> None:
    a, b = read(LENGTH)
    assert (a.status, a.body, a.framing) == (404, b"nop", "length")
    assert (b.status, b.body, b.framing) == (204, b"", "none")


@pytest.mark.parametrize("read", READERS, ids=["socket", "file", "asyncio"])
def test_close_delimited_body_reads_to_eof(
    read: Callable[..., list[wire.Response]],
) -> None:
    [r] = read(CLOSE)
    assert (r.version, r.framing, r.body) == ("HTTP/1.0", "close", b"until the end")


@pytest.mark.parametrize("read", READERS, ids=["socket", "file", "asyncio"])
def test_head_response_has_no_body(read: Callable[..., list[wire.Response]]) -> None:
    a, b = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + NOT_FOUND, "HEAD")
    assert (a.framing, a.body, a.get("Content-Length")) == ("none", b"", "5")
    assert (b.status, b.body) == (404, b"nop")


def test_a_body_cut_short_is_reported_by_each_transport() -> None:
    with pytest.raises(EOFError, match="5 body bytes missing"):
        _via_conn(CUT)
    with pytest.raises(EOFError, match="5 of 10 body bytes missing"):
        _via_file(CUT)
    with pytest.raises(wire.Cut) as cut:
        _via_async(CUT)
    r = cut.value.args[0]
    assert (r.status, r.body) == (200, b"12345")


def test_nothing_before_close_is_eof_not_a_response() -> None:
    for read in READERS:
        with pytest.raises(EOFError):
            read(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: no\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nName : v\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ],
)
def test_parse_head_refuses_what_is_not_http(head: bytes) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.parse_head(head)


@pytest.mark.parametrize(
    ("method", "status", "headers", "want"),
    [
        ("GET", 200, [("Content-Length", "7")], ("length", 7)),
        ("HEAD", 200, [("Content-Length", "7")], ("none", 0)),
        ("GET", 304, [("Content-Length", "7")], ("none", 0)),
        ("GET", 101, [], ("none", 0)),
        ("GET", 200, [("Transfer-Encoding", "gzip, chunked")], ("chunked", 0)),
        ("GET", 200, [("Transfer-Encoding", "chunked, gzip")], ("close", 0)),
        ("GET", 200, [("Content-Length", "3"), ("Content-Length", "3")], ("length", 3)),
        ("GET", 200, [], ("close", 0)),
    ],
)
def test_body_framing_follows_rfc9112(
    method: str, status: int, headers: list[tuple[str, str]], want: tuple[str, int]
) -> None:
    r = wire.Response()
    r.status, r.headers = status, headers
    assert wire.body_framing(method, r) == want


@pytest.mark.parametrize(
    "headers",
    [[("Content-Length", "3"), ("Content-Length", "4")], [("Content-Length", "-1")]],
)
def test_conflicting_or_bad_content_length_is_an_error(
    headers: list[tuple[str, str]],
) -> None:
    r = wire.Response()
    r.status, r.headers = 200, headers
    with pytest.raises(wire.ProtocolError):
        wire.body_framing("GET", r)


def test_build_request_puts_host_first_and_frames_a_body() -> None:
    assert wire.build_request("POST", "/x", [("A", "1")], b"hi") == (
        b"POST /x HTTP/1.1\r\nHost: test.local\r\nA: 1\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert wire.build_request(host=None) == b"GET / HTTP/1.1\r\n\r\n"
    assert wire.chunked(b"ab", b"", b"c", trailers=[("T", "1")]) == (
        b"2\r\nab\r\n1\r\nc\r\n0\r\nT: 1\r\n\r\n"
    )
