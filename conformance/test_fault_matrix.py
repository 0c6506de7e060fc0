"""Upstream fault matrix (issue 11; contract 3, 4, 5, 6; docs/behaviour.md "Retries").

Every cell is one upstream fault x one request kind x whether the proxy's connection to the
faulted upstream is fresh or pooled, and says what the client gets, whether its connection
stays open, and whether the request was retried on the healthy upstream. MATRIX below is the
data; docs/conformance.md "Fault matrix" is printed from it:

    .venv/bin/python conformance/test_fault_matrix.py     # the markdown table

Setup of a cell: two upstream processes, `bad` (weight 1000) and `good` (weight 1), round
robin, passive health off (`max_fails: 0`), so the first attempt always goes to `bad` (smooth
weighted round robin picks the heaviest first) and a retry can only go to `good`.
`timeouts.connect` 300ms and `timeouts.read` 400ms keep the hang and blackhole cells short.

- fresh: the proxy has no connection to `bad` when the request comes.
- pooled: one request went through `bad` first (fault off), so the proxy holds an idle
  keep-alive connection to it; then the fault is switched on (`/fault/KIND`, or `bad` is
  stopped for refuse and blackhole) and the request comes. For the listener faults the cell
  checks that the request really went over the pooled connection (no new connection to
  `bad`).

Faults (upstreams/README.md "Faults"): refuse (nobody listens on `bad`'s port), blackhole (a
connect that never completes: `Blackhole` below), drop (closed after the request head: "close
before head"), reset (RST after the request head), reset-head (RST in the middle of the
response head), reset-body (RST in the middle of the body), hang (`stall`: never answers),
trickle (`trickle/50`: the body one byte per 50 ms, every gap below the read timeout),
malformed (a head that is not HTTP), extra (bytes after a complete response), close (the
response carries `Connection: close`), early (`early/413`: a final 413 right after the request
head; the POSTs of that row send only half of their body before reading it).

Columns: `status` the client's status; `by` who answered: `good`, `bad` or `proxy` (the proxy's
own error, exact bytes of docs/behaviour.md); `client` open (keep-alive kept: a next request on
the same connection is answered) or closed (`Connection: close`, or cut mid-body); `attempts`
the access log's attempts (2 = retried on `good`, which then got the request once; 1 = `good`
never saw it); `reuse` whether the proxy keeps its connection to `bad` afterwards (yes only
after a complete, well-framed exchange without `Connection: close`, contract 3; `-` where
`bad` is not listening).
"""

from __future__ import annotations

import socket
import sys
import zlib
from dataclasses import dataclass
from typing import Any

import pytest
from harness import (
    Conn,
    assert_proxy_error,
    build_request,
    free_port,
    pattern,
)

METHODS = ("GET", "POST", "POST+key")
POOLS = ("fresh", "pooled")

# fault -> the listener mode switched on `bad` (None: refuse / blackhole, not a mode)
FAULTS: dict[str, str | None] = {
    "refuse": None,
    "blackhole": None,
    "drop": "drop",
    "reset": "reset",
    "reset-head": "reset-head",
    "reset-body": "reset-body",
    "hang": "stall",
    "trickle": "trickle/50",
    "malformed": "malformed",
    "extra": "extra",
    "close": "close",
    "early": "early/413",
}

# One row per cell. Derivation (contract 6 / behaviour.md "Retries"): a `connect` failure
# (refuse, blackhole) is retried for every method; a failure after the request was written
# and before any response byte (drop, reset, hang: `head` phase) is retried for GET and for
# a request with an Idempotency-Key, never for a plain POST (502, or 504 after the read
# timeout); once the upstream sent response bytes there is no retry phase any more: an
# invalid or cut head (reset-head, malformed) is 502 (behaviour.md "Fault matrix"), and
# after response bytes reached the client (reset-body) the client connection is closed.
# A pooled connection changes nothing: the same phases, the same answers.
_ROWS = """
refuse      GET       fresh   200  good   open    2  -
refuse      POST      fresh   200  good   open    2  -
refuse      POST+key  fresh   200  good   open    2  -
refuse      GET       pooled  200  good   open    2  -
refuse      POST      pooled  200  good   open    2  -
refuse      POST+key  pooled  200  good   open    2  -
blackhole   GET       fresh   200  good   open    2  -
blackhole   POST      fresh   200  good   open    2  -
blackhole   POST+key  fresh   200  good   open    2  -
blackhole   GET       pooled  200  good   open    2  -
blackhole   POST      pooled  200  good   open    2  -
blackhole   POST+key  pooled  200  good   open    2  -
drop        GET       fresh   200  good   open    2  no
drop        POST      fresh   502  proxy  open    1  no
drop        POST+key  fresh   200  good   open    2  no
drop        GET       pooled  200  good   open    2  no
drop        POST      pooled  502  proxy  open    1  no
drop        POST+key  pooled  200  good   open    2  no
reset       GET       fresh   200  good   open    2  no
reset       POST      fresh   502  proxy  open    1  no
reset       POST+key  fresh   200  good   open    2  no
reset       GET       pooled  200  good   open    2  no
reset       POST      pooled  502  proxy  open    1  no
reset       POST+key  pooled  200  good   open    2  no
reset-head  GET       fresh   502  proxy  open    1  no
reset-head  POST      fresh   502  proxy  open    1  no
reset-head  POST+key  fresh   502  proxy  open    1  no
reset-head  GET       pooled  502  proxy  open    1  no
reset-head  POST      pooled  502  proxy  open    1  no
reset-head  POST+key  pooled  502  proxy  open    1  no
reset-body  GET       fresh   200  bad    closed  1  no
reset-body  POST      fresh   200  bad    closed  1  no
reset-body  POST+key  fresh   200  bad    closed  1  no
reset-body  GET       pooled  200  bad    closed  1  no
reset-body  POST      pooled  200  bad    closed  1  no
reset-body  POST+key  pooled  200  bad    closed  1  no
hang        GET       fresh   200  good   open    2  no
hang        POST      fresh   504  proxy  open    1  no
hang        POST+key  fresh   200  good   open    2  no
hang        GET       pooled  200  good   open    2  no
hang        POST      pooled  504  proxy  open    1  no
hang        POST+key  pooled  200  good   open    2  no
trickle     GET       fresh   200  bad    open    1  yes
trickle     POST      fresh   200  bad    open    1  yes
trickle     POST+key  fresh   200  bad    open    1  yes
trickle     GET       pooled  200  bad    open    1  yes
trickle     POST      pooled  200  bad    open    1  yes
trickle     POST+key  pooled  200  bad    open    1  yes
malformed   GET       fresh   502  proxy  open    1  no
malformed   POST      fresh   502  proxy  open    1  no
malformed   POST+key  fresh   502  proxy  open    1  no
malformed   GET       pooled  502  proxy  open    1  no
malformed   POST      pooled  502  proxy  open    1  no
malformed   POST+key  pooled  502  proxy  open    1  no
extra       GET       fresh   200  bad    open    1  no
extra       POST      fresh   200  bad    open    1  no
extra       POST+key  fresh   200  bad    open    1  no
extra       GET       pooled  200  bad    open    1  no
extra       POST      pooled  200  bad    open    1  no
extra       POST+key  pooled  200  bad    open    1  no
close       GET       fresh   200  bad    open    1  no
close       POST      fresh   200  bad    open    1  no
close       POST+key  fresh   200  bad    open    1  no
close       GET       pooled  200  bad    open    1  no
close       POST      pooled  200  bad    open    1  no
close       POST+key  pooled  200  bad    open    1  no
early       GET       fresh   413  bad    open    1  no
early       POST      fresh   413  bad    closed  1  no
early       POST+key  fresh   413  bad    closed  1  no
early       GET       pooled  413  bad    open    1  no
early       POST      pooled  413  bad    closed  1  no
early       POST+key  pooled  413  bad    closed  1  no
"""


@dataclass(frozen=True)
class Cell:
    fault: str
    method: str
    pool: str
    status: int
    by: str  # good | bad | proxy
    client: str  # open | closed
    attempts: int
    reuse: str  # yes | no | -

    @property
    def id(self) -> str:
        return f"{self.fault}-{self.method}-{self.pool}"


def _parse(rows: str) -> list[Cell]:
    cells = []
    for line in rows.strip().splitlines():
        f, m, pool, status, by, client, attempts, reuse = line.split()
        cells.append(Cell(f, m, pool, int(status), by, client, int(attempts), reuse))
    return cells


MATRIX = _parse(_ROWS)


def test_matrix_is_complete() -> None:
    # every fault x method x pool exactly once, and nothing else
    want = {(f, m, p) for f in FAULTS for m in METHODS for p in POOLS}
    got = [(c.fault, c.method, c.pool) for c in MATRIX]
    assert len(got) == len(set(got)) and set(got) == want
    for c in MATRIX:
        assert c.by in ("good", "bad", "proxy") and c.client in ("open", "closed")
        assert (c.by == "good") == (c.attempts == 2), c  # a retry is answered by `good`
        assert (c.reuse == "-") == (FAULTS[c.fault] is None), c


# --------------------------------------------------------------------------- the setup


class Blackhole:
    """A loopback port whose connects never complete: a listener with backlog 0 that never
    accepts, its one accept-queue slot taken by our own connection. Linux then drops every
    further SYN (the accept queue is full), so a connect neither succeeds nor is refused
    until the client gives up: the proxy's timeouts.connect. No root, no firewall rule."""

    def __init__(self, port: int) -> None:
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(0)
        self.filler = socket.create_connection(("127.0.0.1", port), timeout=2)
        # the hole holds: a further connect does not complete
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.05)
        try:
            with pytest.raises(TimeoutError):
                probe.connect(("127.0.0.1", port))
        finally:
            probe.close()

    def close(self) -> None:
        self.filler.close()
        self.lsock.close()


BODY = b"fault matrix body, replayed whole or not at all. " * 4
TIMEOUTS = {"connect": "300ms", "read": "400ms"}


def _request(cell: Cell, rid: str) -> bytes:
    """The cell's request bytes (early POSTs: head and only half of the body)."""
    headers = [("X-Request-ID", rid)]
    if cell.method == "GET":
        return build_request("GET", "/echo", headers)
    if cell.method == "POST+key":
        headers.append(("Idempotency-Key", rid))
    if cell.fault == "early":
        headers.append(("Content-Length", str(len(BODY))))
        return build_request("POST", "/echo", headers) + BODY[: len(BODY) // 2]
    return build_request("POST", "/echo", headers, body=BODY)


def _check_answer(c: Conn, cell: Cell, rid: str) -> None:
    """What the client got for the cell's request, and whether its connection stayed."""
    if cell.fault == "reset-body":
        # the head reached the client, the body is cut: the connection is closed, the
        # truncated response never completed with an error (contract 4)
        head = c.read_head()
        assert (
            head.startswith(b"HTTP/1.1 200 ") and b"\r\nX-Upstream: bad\r\n" in head
        ), head
        assert b"\r\nContent-Length: 16\r\n" in head, head
        rest = c.read_to_close()
        assert len(rest) < 16 and rest == pattern(0, len(rest)), rest
        return
    r = c.read_response("GET" if cell.method == "GET" else "POST")
    closed = cell.client == "closed"
    if cell.by == "proxy":
        assert_proxy_error(r, cell.status, close=closed, request_id=rid)
    else:
        assert (r.status, r.get("X-Upstream")) == (cell.status, cell.by), r
        assert r.get("X-Request-ID") is None or r.get("X-Request-ID") == rid, r
        assert (r.get("Connection") == "close") == closed, r
        if cell.fault == "trickle":
            assert r.body == pattern(0, 8), r
        elif cell.fault == "early":
            assert r.body == b'{"status":413}', r
        else:
            echo = r.json()
            sent = b"" if cell.method == "GET" else BODY
            # the upstream that answered got the whole request (a replay is complete)
            assert (echo["method"], echo["body_length"], echo["body_crc32"]) == (
                cell.method[:4].rstrip("+"),
                len(sent),
                zlib.crc32(sent),
            ), echo
            keys = [v for n, v in echo["headers"] if n.lower() == "idempotency-key"]
            assert keys == ([rid] if cell.method == "POST+key" else []), echo
    if closed:
        assert c.read_to_close() == b""


@pytest.mark.parametrize("cell", MATRIX, ids=[c.id for c in MATRIX])
def test_fault_cell(upstream: Any, proxy: Any, cell: Cell) -> None:
    mode = FAULTS[cell.fault]
    bad_port = free_port()
    good = upstream(["good"])
    listening = mode is not None or cell.pool == "pooled"
    bad = upstream(["bad"], ports={"bad": bad_port}) if listening else None
    bad_entry = {"address": f"127.0.0.1:{bad_port}", "name": "bad", "weight": 1000}
    p = proxy(
        [bad_entry] + good.entries(),
        balancer="round_robin",
        health={"max_fails": 0},
        retries=2,
        timeouts=TIMEOUTS,
    )
    n_logged = 0
    if cell.pool == "pooled":
        r = p.request("/echo")
        assert (r.status, r.get("X-Upstream")) == (200, "bad"), r
        n_logged += 1
        p.wait_access_log(n_logged)
    hole = None
    if mode is None:
        if bad is not None:
            bad.stop()  # closes the pooled connection: the proxy's pool check finds it dead
        if cell.fault == "blackhole":
            hole = Blackhole(bad_port)
    else:
        assert bad is not None
        bad.set_fault("bad", mode)
    try:
        bad_d = bad.counting("bad") if bad is not None and mode is not None else None
        good_d = good.counting("good")
        rid = f"cell-{cell.id}"
        with p.connect() as c:
            c.send(_request(cell, rid))
            _check_answer(c, cell, rid)
            n_logged += 1
            p.wait_access_log(n_logged)
            rec = p.access_records()[n_logged - 1]
            assert rec["request_id"] == rid, rec
            assert (rec["status"], rec["attempts"]) == (cell.status, cell.attempts), rec
            assert rec["upstream"] == ("good" if cell.by == "good" else "bad"), rec
            # who saw the request: `good` only through a retry, `bad` exactly once
            good_d.update()
            assert good_d.requests == (1 if cell.attempts == 2 else 0), cell
            if bad is not None and bad_d is not None:
                bad_d.update()
                assert bad_d.requests == 1, cell
                # fresh: a new connection to `bad`; pooled: the idle one was used
                assert bad_d.connections == (1 if cell.pool == "fresh" else 0), cell
                bad.set_fault("bad", "none")
                bad_d.update()  # not counting that /fault request
                # was the connection to `bad` kept for reuse? A new request to it tells
                r = p.request("/echo")
                assert (r.status, r.get("X-Upstream")) == (200, "bad"), r
                n_logged += 1
                bad_d.update()
                assert bad_d.requests == 1, cell
                assert bad_d.connections == (0 if cell.reuse == "yes" else 1), cell
            # the client connection: still usable, or closed by now (checked above)
            if cell.client == "open":
                r = c.request("/echo", headers=[("X-Request-ID", rid + "-next")])
                assert r.status == 200, r
    finally:
        if hole is not None:
            hole.close()


# --------------------------------------------------------------------------- the doc table


def markdown() -> str:
    """The docs/conformance.md table: one line per fault, the six cells as columns."""
    by_key = {(c.fault, c.method, c.pool): c for c in MATRIX}
    cols = [(m, pool) for pool in POOLS for m in METHODS]
    head = "| fault | " + " | ".join(f"{m} {pool}" for m, pool in cols) + " | reuse |"
    lines = [head, "|" + " --- |" * (len(cols) + 2)]
    for f in FAULTS:
        cells = []
        for m, pool in cols:
            c = by_key[(f, m, pool)]
            who = {"proxy": "", "good": " good", "bad": " bad"}[c.by]
            tags = [f"{c.status}{who}"]
            if c.fault == "reset-body":
                tags.append("body cut")
            if c.attempts == 2:
                tags.append("retried")
            if c.client == "closed":
                tags.append("closed")
            cells.append(", ".join(tags))
        reuse = by_key[(f, "GET", "fresh")].reuse
        lines.append(f"| {f} | " + " | ".join(cells) + f" | {reuse} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
