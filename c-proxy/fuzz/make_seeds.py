#!/usr/bin/env python3
"""Write the fuzz seeds (c-proxy/fuzz/seeds/<harness>/) from the repo's own cases.

    .venv/bin/python c-proxy/fuzz/make_seeds.py

request:  conformance/test_smuggling.py's raw requests (CASES, SMUGGLED), the files of
          conformance/corpus/ when it exists, and a few valid requests.
response: hand-written upstream responses (valid, hostile, interim, upgrade).
config:   c-proxy/tests/config_cases/*.yaml and twinproxy.yaml.
admin:    the requests ("> " lines) of c-proxy/tests/admin_cases/*.txt.
exchange: event sequences (fuzz_exchange.c's format) pairing requests and responses.
Seeds are named by a hash of their bytes, so rerunning is idempotent.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "c-proxy" / "fuzz" / "seeds"

VALID_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X\r\nX: 1\r\n\r\n",
    (
        b"POST /k?q HTTP/1.1\r\nHost: a\r\nX-Key:  v \r\nIdempotency-Key: 1\r\n"
        b"Content-Length: 1\r\n\r\nz"
    ),
    b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: b\r\n\r\n",
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    ),
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nraw",
    b"GET / HTTP/1.0\r\nX-Forwarded-For: 1.2.3.4\r\nVia: 1.0 x\r\nExpect: 100-continue\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: abc\r\nConnection: close\r\n\r\n",
]

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    ),
    b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nclose-delimited body",
    b"HTTP/1.1 101 Switching\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: 1\r\nKeep-Alive: t=5\r\n\r\nbody",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" * 3 + b"HTTP/1.1 200 OK\r\n\r\n",
    (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
        b"3;e=1\r\nabc\r\n0\r\nX-T: 1\r\nContent-Length: 9\r\n\r\n"
    ),
    b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 999 Weird\r\n\r\n",
]


def put(harness: str, data: bytes) -> None:
    d = SEEDS / harness
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def smuggling_requests() -> list[bytes]:
    sys.path.insert(0, str(REPO / "conformance"))
    import test_smuggling as t  # the conformance cases, as data

    out = list(t.CASES.values()) + [t.SMUGGLED]
    corpus = REPO / "conformance" / "corpus"
    if corpus.is_dir():
        out += [p.read_bytes() for p in sorted(corpus.rglob("*")) if p.is_file()]
    return out


def unescape(text: str) -> bytes:
    """The admin cases' escapes: \\r \\n \\t \\\\ \\xNN; any other backslash is literal."""
    table = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\"}
    return re.sub(
        r"\\(x[0-9a-fA-F]{2}|[rnt\\])",
        lambda m: (
            chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "x" else table[m.group(1)]
        ),
        text,
    ).encode("latin-1")


def admin_requests() -> list[bytes]:
    out = []
    for f in sorted((REPO / "c-proxy" / "tests" / "admin_cases").glob("*.txt")):
        for line in f.read_text().splitlines():
            if line.startswith("> "):
                out.append(unescape(line[2:]))
    return out


def events(*evs: tuple[int, bytes]) -> bytes:
    """fuzz_exchange's format: (op, bytes) pairs; send ops are cut into <= 255-byte pieces."""
    out = bytearray()
    for op, data in evs:
        if op in (0, 1):
            for i in range(0, max(len(data), 1), 255):
                piece = data[i : i + 255]
                out += bytes([op, len(piece)]) + piece
        else:
            out.append(op)
    return bytes(out)


def main() -> None:
    reqs = smuggling_requests() + VALID_REQUESTS
    for r in reqs:
        put("request", r)
    for r in RESPONSES:
        put("response", r)
    for f in sorted((REPO / "c-proxy" / "tests" / "config_cases").glob("*.yaml")):
        put("config", f.read_bytes())
    put("config", (REPO / "twinproxy.yaml").read_bytes())
    for r in admin_requests():
        put("admin", r)
    # the exchange: a valid request answered by each response; each hostile request
    # alone; a pipelined pair; a close mid-body; a drain during a request
    for resp in RESPONSES:
        put("exchange", events((0, VALID_REQUESTS[0]), (1, resp), (2, b"")))
    for r in reqs:
        put("exchange", events((0, r), (1, RESPONSES[0]), (1, RESPONSES[0])))
    put(
        "exchange",
        events((0, VALID_REQUESTS[6]), (1, RESPONSES[0]), (1, RESPONSES[0])),
    )
    put(
        "exchange",
        events(
            (0, VALID_REQUESTS[3]),
            (1, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab"),
            (3, b""),
        ),
    )
    put("exchange", events((0, VALID_REQUESTS[7]), (1, RESPONSES[1]), (7, b"")))
    put(
        "exchange",
        events((0, VALID_REQUESTS[4]), (1, RESPONSES[3]), (0, b"ping"), (1, b"pong")),
    )
    put(
        "exchange",
        events((5, b""), (0, VALID_REQUESTS[0]), (1, RESPONSES[2] * 40), (5, b"")),
    )


if __name__ == "__main__":
    main()
