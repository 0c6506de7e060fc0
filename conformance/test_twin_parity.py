"""Twin parity: the same bytes in give the same bytes out. Each case goes to both twins
(same config, same upstream) and the responses, the requests the upstream saw (/echo) and
the access-log records must be identical once generated values are masked (request ids,
timestamps, durations). Catches differences no other test names explicitly."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import (
    Conn,
    ProxyFactory,
    UpstreamFactory,
    wait_until,
)

pytestmark = pytest.mark.both_impls

H = b"Host: parity.test\r\n"


def req(line: bytes, hdrs: bytes = b"", body: bytes = b"") -> bytes:
    return line + b"\r\n" + H + hdrs + b"\r\n" + body


CASES = {
    "simple-echo": req(b"GET /echo HTTP/1.1"),
    "empty-header-value": req(b"GET /echo HTTP/1.1", b"X-Empty:\r\nX-B: 1\r\n"),
    "padded-header-value": req(b"GET /echo HTTP/1.1", b"X-Pad:   v  \t \r\n"),
    "tab-in-header-value": req(b"GET /echo HTTP/1.1", b"X-Tab: a\tb\r\n"),
    "obs-text-header-value": req(b"GET /echo HTTP/1.1", b"X-Obs: caf\xe9 \xff\r\n"),
    "long-target": req(b"GET /echo?" + b"q=" + b"z" * 4000 + b" HTTP/1.1"),
    "percent-target": req(b"GET /echo/%E2%82%AC?a=%20&b=+ HTTP/1.1"),
    "absolute-form": b"GET http://other.example/echo?x=1 HTTP/1.1\r\n" + H + b"\r\n",
    "options-asterisk": req(b"OPTIONS * HTTP/1.1"),
    "custom-method": req(b"PURGE /echo HTTP/1.1"),
    "lowercase-method": req(b"get /echo HTTP/1.1"),
    "http10-no-host": b"GET /echo HTTP/1.0\r\n\r\n",
    "http10-keepalive": b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n"
    + H
    + b"\r\n",
    "connection-close-mixed-case": req(b"GET /echo HTTP/1.1", b"Connection: Close\r\n"),
    "connection-list": req(
        b"GET /echo HTTP/1.1", b"Connection: x-a, close, X-B\r\nX-A: 1\r\nX-B: 2\r\n"
    ),
    "two-connection-headers": req(
        b"GET /echo HTTP/1.1",
        b"Connection: x-a\r\nConnection: x-b\r\nX-A: 1\r\nX-B: 2\r\n",
    ),
    "empty-xff-and-via": req(b"GET /echo HTTP/1.1", b"X-Forwarded-For:\r\nVia:\r\n"),
    "empty-request-id": req(b"GET /echo HTTP/1.1", b"X-Request-ID:\r\n"),
    "expect-mixed-case": req(
        b"POST /echo HTTP/1.1", b"Expect: 100-Continue\r\nContent-Length: 3\r\n", b"abc"
    ),
    "te-trailers": req(b"GET /echo HTTP/1.1", b"TE: trailers\r\n"),
    "chunk-extensions-and-trailers": req(
        b"POST /echo HTTP/1.1",
        b"Transfer-Encoding: chunked\r\n",
        b'3;name=val;q="x y"\r\nabc\r\n0\r\nX-T1: a\r\nX-T2: b\r\n\r\n',
    ),
    "content-length-zeros": req(b"POST /echo HTTP/1.1", b"Content-Length: 000\r\n"),
    "get-with-body": req(b"GET /echo HTTP/1.1", b"Content-Length: 4\r\n", b"body"),
    "host-with-port": b"GET /echo HTTP/1.1\r\nHost: h.example:8080\r\n\r\n",
    "empty-host": b"GET /echo HTTP/1.1\r\nHost:\r\n\r\n",
    "double-space-request-line": req(b"GET  /echo HTTP/1.1"),
    "trailing-space-after-version": req(b"GET /echo HTTP/1.1 "),
    "leading-empty-line": b"\r\n" + req(b"GET /echo HTTP/1.1"),
    "status-unknown-reason": req(b"GET /status/599 HTTP/1.1"),
    "status-299": req(b"GET /status/299 HTTP/1.1"),
    "chunked-to-http10": b"GET /chunked/3000?chunk=1000&trailer=1 HTTP/1.0\r\n\r\n",
    "head-chunked": req(b"HEAD /chunked/100 HTTP/1.1"),
    "head-http10": b"HEAD /bytes/10 HTTP/1.0\r\n\r\n",
    "response-odd-headers": req(
        b"GET /headers?X-E=&X-D=1&X-D=2&Connection=X-Gone%2C%20close&X-Gone=1&x-lower=v HTTP/1.1"
    ),
    "upgrade-426": req(b"GET /upgrade HTTP/1.1"),
    "pipelined-mix": req(b"GET /bytes/1 HTTP/1.1")
    + req(b"POST /echo HTTP/1.1", b"Content-Length: 2\r\n", b"ok")
    + req(b"GET /status/404 HTTP/1.1"),
    "http11-connection-keepalive": req(
        b"GET /bytes/2 HTTP/1.1", b"Connection: keep-alive\r\n"
    ),
}

_HEX32 = re.compile(rb"[0-9a-f]{32}")


def _exchange(port: int, raw: bytes) -> bytes:
    with Conn(port, timeout=5) as c:
        c.send(raw)
        # Everything the proxy sends until it closes or stays quiet.
        out = b""
        while True:
            got = c.read_available(0.2)
            out += got
            if c.eof or not got:
                break
        return out + (b"<closed>" if c.eof else b"<open>")


def _mask_log(line: str) -> dict:
    rec = json.loads(line)
    rec["ts"] = "<ts>"
    rec["duration_ms"] = "<ms>"
    if re.fullmatch(r"[0-9a-f]{32}", str(rec.get("request_id"))):
        rec["request_id"] = "<id>"
    return rec


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    ups = UpstreamFactory(tmp_path_factory.mktemp("parity-up"))
    factories = [
        ProxyFactory(i, tmp_path_factory.mktemp(f"parity-{i}")) for i in ("c", "py")
    ]
    up = ups(["u1"])
    proxies = [f(up) for f in factories]
    yield proxies
    problems = [x for f in factories for x in f.close()]
    ups.close()
    assert not problems, problems


def _one(p, raw: bytes) -> tuple[bytes, list[dict]]:
    if p.proc.poll() is not None:
        pytest.fail(f"{p.impl}-proxy is not running (exit {p.proc.returncode})")
    before = len(p.access_log_lines())
    wire = _HEX32.sub(b"<id>", _exchange(p.port, raw))
    wait_until(lambda: len(p.access_log_lines()) > before, 1.0)
    time.sleep(0.05)  # a pipelined case logs several lines
    return wire, [_mask_log(ln) for ln in p.access_log_lines()[before:]]


@pytest.mark.parametrize("raw", list(CASES.values()), ids=list(CASES))
def test_same_bytes_out(twins, raw):
    with ThreadPoolExecutor(2) as ex:
        c, py = ex.map(lambda p: _one(p, raw), twins)
    assert c[0] != b"<open>", "no response at all"
    assert c[0] == py[0], "responses differ"
    assert c[1] == py[1], "access log records differ"
