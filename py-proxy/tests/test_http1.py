"""http1: parsing glue, contract checks and the heads the proxy writes.
Twin: c-proxy/tests/test_http1.c."""

from __future__ import annotations

import pytest

from pyproxy import http1
from pyproxy.http1 import (
    BODY_CHUNKED,
    BODY_CLOSE,
    BODY_LENGTH,
    BODY_NONE,
    ChunkScanner,
    HeadScanner,
    HttpError,
    RequestParser,
    ResponseParser,
)


def parse_request(raw: bytes) -> http1.Request:
    p = RequestParser()
    p.feed_head(raw)
    return p.finish_head()


def test_error_bytes() -> None:
    assert http1.error_response(502, b"abc", False) == (
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: 36\r\n"
        b'X-Request-ID: abc\r\n\r\n{"code":502,"message":"Bad Gateway"}'
    )
    assert http1.error_response(400, b"id", True) == (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 36\r\n"
        b'X-Request-ID: id\r\nConnection: close\r\n\r\n{"code":400,"message":"Bad Request"}'
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"0", 0),
        (b"007", 7),
        (b" 12 ", 12),
        (b"18446744073709551615", 2**64 - 1),
        (b"18446744073709551616", -1),
        (b"", -1),
        (b"+1", -1),
        (b"-1", -1),
        (b"1,1", -1),
        (b"1 1", -1),
        (b"0x10", -1),
        ("\uff11".encode(), -1),  # a fullwidth digit is not DIGIT
    ],
)
def test_parse_content_length(value: bytes, expected: int) -> None:
    assert http1.parse_content_length(value) == expected


def test_head_scanner_finds_terminator_across_reads() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"
    for split in range(1, len(raw)):
        s = HeadScanner()
        a, b = raw[:split], raw[split:]
        end = s.scan(a, 0)
        if end >= 0:
            assert end == raw.index(b"BODY")
            continue
        end = s.scan(b, 0)
        assert split + end == raw.index(b"BODY"), split


def test_chunk_scanner_finds_the_end_byte_by_byte() -> None:
    body = b"3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nNEXT"
    s = ChunkScanner()
    end = -1
    for i in range(len(body)):
        end = s.scan(body, i, i + 1)
        if end >= 0:
            break
    assert end == body.index(b"NEXT")
    s = ChunkScanner()
    assert s.scan(body, 0, len(body)) == body.index(b"NEXT")


def test_chunk_scanner_overflow() -> None:
    with pytest.raises(HttpError):
        ChunkScanner().scan(b"10000000000000000\r\n", 0, 19)


def test_request_fields() -> None:
    req = parse_request(
        b"POST /p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\nX-Request-ID: rid\r\n"
        b"X-Forwarded-For: 1.1.1.1\r\nVia: 1.0 a\r\nConnection: keep-alive, X-Drop\r\n\r\n"
    )
    assert req.method == b"POST" and req.target == b"/p?q"
    assert req.content_length == 7 and not req.chunked
    assert req.request_id == b"rid" and req.keep_alive and req.host == b"h"


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET /\r\n\r\n",
    ],
)
def test_request_rejected_400(raw: bytes) -> None:
    with pytest.raises(HttpError) as e:
        parse_request(raw)
    assert e.value.code == 400


def test_connect_is_501() -> None:
    with pytest.raises(HttpError) as e:
        parse_request(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert e.value.code == 501


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9"])
def test_request_unsupported_version_505(version: bytes) -> None:
    with pytest.raises(HttpError) as e:
        parse_request(b"GET / " + version + b"\r\nHost: a\r\n\r\n")
    assert e.value.code == 505


def test_http10_without_host_is_fine() -> None:
    req = parse_request(b"GET / HTTP/1.0\r\n\r\n")
    assert req.http_minor == 0 and not req.keep_alive and req.host is None


def test_request_head_rewrite() -> None:
    req = parse_request(
        b"POST /p HTTP/1.0\r\nHost: h\r\nX-A: 1\r\nConnection: keep-alive, X-Drop\r\n"
        b"X-Drop: 1\r\nContent-Length: 010\r\nKeep-Alive: 5\r\nX-Forwarded-For: 1.1.1.1\r\n"
        b"X-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nVia: 1.0 a\r\n"
        b"X-Request-ID: mine\r\nExpect: 100-continue\r\nTE: trailers\r\nX-B: 2\r\n"
        b"X-Forwarded-For: \r\nVia: \r\n\r\n"
    )
    assert http1.build_request_head(req, b"10.0.0.1", b"mine") == (
        b"POST /p HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 10\r\n"
        b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\nX-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Host: h\r\nX-Request-ID: mine\r\nVia: 1.0 a, 1.1 twinproxy\r\n\r\n"
    )


def test_upstream_request_head_chunked_and_trailing_ows() -> None:
    req = parse_request(
        b"PUT / HTTP/1.1\r\nHost: h  \r\nTransfer-Encoding: Chunked\r\nUpgrade: x\r\n\r\n"
    )
    head = http1.build_request_head(req, b"::1", b"r")
    assert head == (
        b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: ::1\r\n"
        b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nX-Request-ID: r\r\n"
        b"Via: 1.1 twinproxy\r\n\r\n"
    )


def test_upgrade_request_head() -> None:
    p = RequestParser()
    p.feed_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
    req = p.finish_head()
    assert req.upgrade == b"websocket"
    assert http1.build_request_head(req, b"1.2.3.4", b"r").endswith(
        b"Via: 1.1 twinproxy\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    )


def parse_response(raw: bytes, head: bool = False) -> http1.Response:
    p = ResponseParser()
    p.feed_head(raw)
    return p.finish_head(head)


def test_response_framing() -> None:
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n").body == BODY_LENGTH
    assert parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").body == (
        BODY_CHUNKED
    )
    r = parse_response(b"HTTP/1.1 200 OK\r\n\r\n")
    assert r.body == BODY_CLOSE and not r.keep_alive
    assert parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").body == BODY_NONE
    assert parse_response(b"HTTP/1.1 304 NM\r\nContent-Length: 5\r\n\r\n").body == BODY_NONE
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", True).body == (BODY_NONE)
    assert not parse_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").keep_alive
    assert not parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 99x OK\r\n\r\n",
        b"HTTP/1.1 099 OK\r\n\r\n",
    ],
)
def test_response_rejected_502(raw: bytes) -> None:
    with pytest.raises(HttpError) as e:
        parse_response(raw)
    assert e.value.code == 502


def test_client_response_head() -> None:
    r = parse_response(
        b"HTTP/1.1 200 Fine\r\nX-A: 1\r\nConnection: close, X-B\r\nX-B: 2\r\n"
        b"Transfer-Encoding: chunked\r\nTrailer: X-T\r\nX-C: 3\r\n\r\n"
    )
    assert http1.build_response_head(r, b"Transfer-Encoding: chunked\r\n", b"") == (
        b"HTTP/1.1 200 Fine\r\nX-A: 1\r\nX-C: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    # a length-framed response keeps its Content-Length where and as the upstream sent it
    r = parse_response(b"HTTP/1.1 200\r\nContent-Length: 007\r\nX-A: 1\r\n\r\n")
    head = http1.build_response_head(r, b"", b"Connection: close\r\n", keep_cl=True)
    assert head == (b"HTTP/1.1 200 \r\nContent-Length: 007\r\nX-A: 1\r\nConnection: close\r\n\r\n")


def test_chunked_response_rechunked_and_trailers_filtered() -> None:
    p = ResponseParser()
    p.feed_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    p.finish_head(False)
    p.feed_body(b"3\r\nabc\r\n0\r\nX-T: 1\r\nTransfer-Encoding: x\r\n\r\n")
    assert p.complete
    assert b"".join(p.out) == b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    p = ResponseParser()
    p.dechunk = True
    p.feed_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    p.finish_head(False)
    p.feed_body(b"3\r\nabc\r\n0\r\n\r\n")
    assert b"".join(p.out) == b"abc"


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b"HELLO\r\n\r\n", 2),
        (b"get / HTTP/1.1\r\n", 0),
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 14),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 20),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27),
    ],
)
def test_request_error_offset_is_llhttps_error_pos(raw: bytes, offset: int) -> None:
    assert http1.request_error_offset(raw) == offset


def test_parse_error_carries_the_offset() -> None:
    p = RequestParser()
    p.feed_head(b"GET / HTTP/1.1\r\n")
    with pytest.raises(HttpError) as e:
        p.feed_head(b"Host : a\r\n\r\n")
    assert e.value.code == 400 and e.value.used == 20


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (b"5;=x\r\n", False),
        (b"5;;a\r\n", False),
        (b"5;a=b;c\r\n", True),
        (b'5;a="x;=y"\r\n', True),
        (b'5;a="x\\";="\r\n', True),
        (b"5;a\r\n", True),
        (b"5;a=\r\n", False),
        (b"5;a=;b\r\n", False),
        (b'5;a=""\r\n', True),
        (b"5;a=b\r\n", True),
    ],
)
def test_chunk_extension_names(line: bytes, ok: bool) -> None:
    for split in range(1, len(line)):
        s = ChunkScanner()
        try:
            s.scan(line, 0, split)
            s.scan(line, split, len(line))
            assert ok, (line, split)
        except HttpError:
            assert not ok, (line, split)


CHUNK_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "body",
    [
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b"-3\r\nabc\r\n0\r\n\r\n",
        b"1_0\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
        b"3 \r\nabc\r\n",
        b"10000000000000005\r\nhello\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"5\r\nhello\rX",
        b"5\r\nhello\r\n0x1\r\nA\r\n0\r\n\r\n",
    ],
)
def test_chunk_scanner_stops_where_llhttp_does(body: bytes) -> None:
    # the position is what the C twin logs as bytes read (llhttp_get_error_pos)
    expected = http1.request_error_offset(CHUNK_HEAD + body) - len(CHUNK_HEAD)
    assert 0 <= expected < len(body)
    for split in range(1, len(body)):
        s = ChunkScanner()
        with pytest.raises(HttpError) as e:
            if s.scan(body, 0, split) < 0:
                s.scan(body, split, len(body))
        assert e.value.used == expected, split
