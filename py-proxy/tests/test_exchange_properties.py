"""exchange + http1 under mutation: the property twin of c-proxy/fuzz/fuzz_request.c and
fuzz_response.c. The seeds are the C fuzzers' (c-proxy/fuzz/seeds/, made from
conformance/test_smuggling.py); the mutations are the same kinds (bit flips, interesting
bytes, inserts, deletes, splices). Bounded example counts: the whole file runs in seconds.

Properties:
- a request is either refused with an HttpError status or forwarded; nothing else raises;
- a request read in full is forwarded as exactly one well-framed message of the same
  method (re-parsed by a fresh strict llhttp): nothing smuggled after it;
- where the input is cut into reads does not change the outcome;
- a response head is framed or refused with 502 (a 101 without an upgrade request);
- the proxy's own errors close the connection when the client may not keep it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import httptools
from fakes import make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyproxy.exchange import IN_CHUNKED, IN_LENGTH, X_KEEPALIVE, X_UPGRADE, Exchange
from pyproxy.http1 import (
    ChunkScanner,
    HeadScanner,
    HttpError,
    RequestParser,
    ResponseParser,
    build_request_head,
)

SEEDS = Path(__file__).resolve().parents[2] / "c-proxy" / "fuzz" / "seeds"
REQUESTS = sorted(p.read_bytes() for p in (SEEDS / "request").iterdir())
RESPONSES = sorted(p.read_bytes() for p in (SEEDS / "response").iterdir())
INTERESTING = b'\r\n :;,"\t\x00\x7f\xff0aF-+x'
CFG = make_config("limits:\n  max_body_bytes: 1m\n")
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with up to 5 mutations of the C fuzzers' kinds."""
    buf = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 5))):
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        kind = draw(st.integers(0, 4))
        if kind == 0 and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1 and buf:
            buf[pos] = draw(st.sampled_from(INTERESTING))
        elif kind == 2:
            buf.insert(pos, draw(st.integers(0, 255)))
        elif kind == 3 and buf:
            del buf[pos]
        elif kind == 4:
            other = draw(st.sampled_from(seeds))
            take = draw(st.integers(0, len(other)))
            buf[pos : pos + take] = other[:take]
    return bytes(buf)


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    """data cut at the given offsets (the reads the proxy would see)."""
    offs = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(offs)] or [b""]


def forward(reads: list[bytes]) -> tuple[int, bytes, bool, bytes]:
    """Drive one request through http1 + exchange as client.py does (head scan, parse,
    classify, body re-framing), ignoring buffer room. Returns (status, forwarded bytes,
    request complete, method): status 0 when forwarded."""
    data = b"".join(reads)
    parser = RequestParser()
    scan = HeadScanner()
    x = Exchange()
    fwd = bytearray()
    # the head: fed piece by piece up to its end
    pos = 0
    end = -1
    try:
        for piece_end in _ends(reads):
            while pos < piece_end:
                end = scan.scan(data[:piece_end], pos)
                seg_end = piece_end if end < 0 else end
                parser.feed_head(data[pos:seg_end])
                pos = seg_end
                if end >= 0 and parser.head_done:
                    break
                if end >= 0:  # blank lines before the request line
                    scan.size, scan.tail = 0, b""
            if parser.head_done:
                break
        if not parser.head_done:
            return 0, b"", False, b""
        req = parser.finish_head()
    except HttpError as e:
        return e.code, b"", False, b""
    code = x.classify_request(req, CFG, False, parser.upgraded)
    if code:
        return code, b"", False, req.method
    fwd += build_request_head(req, b"127.0.0.1", b"rid")
    rest = data[pos:]
    if parser.upgraded:
        return 0, bytes(fwd), True, req.method
    if x.in_mode == IN_LENGTH:
        take = min(x.in_remaining, len(rest))
        fwd += rest[:take]
        return 0, bytes(fwd), take == x.in_remaining, req.method
    if x.in_mode != IN_CHUNKED:
        return 0, bytes(fwd), True, req.method
    cscan = ChunkScanner()
    try:
        end = cscan.scan(rest, 0, len(rest))
        seg_end = len(rest) if end < 0 else end
        parser.feed_body(rest[:seg_end])
        if end >= 0 and not parser.complete:
            raise HttpError(400, "chunk framing")
    except HttpError as e:
        return e.code, b"", False, req.method
    fwd += b"".join(parser.out)
    return 0, bytes(fwd), end >= 0, req.method


def _ends(reads: list[bytes]) -> list[int]:
    out, n = [], 0
    for r in reads:
        n += len(r)
        out.append(n)
    return out


class _Count:
    def __init__(self) -> None:
        self.begun = 0
        self.done = 0

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_message_complete(self) -> None:
        self.done += 1


@PROPS
@given(mutated(REQUESTS), st.lists(st.integers(0, 1 << 16), max_size=6))
def test_request_outcome_and_forwarded_message(raw: bytes, points: list[int]) -> None:
    status, fwd, complete, method = forward([raw])
    assert status == 0 or 400 <= status <= 599
    # where the bytes are cut into reads does not matter
    assert forward(cuts(raw, points)) == (status, fwd, complete, method)
    if status or not complete:
        return
    count = _Count()
    p = httptools.HttpRequestParser(count)
    try:
        p.feed_data(fwd)
    except httptools.HttpParserUpgrade:
        pass  # the tunnel starts after the head
    assert count.begun == 1 and count.done == 1, fwd
    assert p.get_method() == method


@PROPS
@given(mutated(RESPONSES), st.integers(0, 63), st.booleans())
def test_response_framing_or_502(raw: bytes, req_flags: int, draining: bool) -> None:
    rp = ResponseParser()
    x = Exchange()
    x.flags = req_flags * X_KEEPALIVE | (X_UPGRADE if req_flags & 32 else 0)
    try:
        rp.feed_head(raw)
        resp = rp.finish_head(bool(req_flags & 16))
        framing, connection, _keep_cl = x.response_framing(resp, draining, False)
    except HttpError as e:
        assert e.code == 502
        return
    if resp.status == 101:
        assert x.flags & X_UPGRADE
    if draining:
        assert b"close" in connection or resp.status == 101
    assert framing in (b"", b"Transfer-Encoding: chunked\r\n")


@PROPS
@given(st.integers(0, 0x3FFFFF), st.sampled_from([400, 408, 413, 431, 502, 503, 504]))
def test_errors_close_without_keepalive(flags: int, code: int) -> None:
    x = Exchange()
    x.flags = flags
    assert x.error_closes(code, True, False)
    assert x.error_closes(code, False, True)
    if not flags & X_KEEPALIVE:
        assert x.error_closes(code, False, False)
