"""Randomized soak driver (issue 11): many requests over keep-alive and pipelined client
connections with random upstream faults, every answer matched to the request it answers.

The proxy is a black box on a port; the upstream is upstreams/build/upstream with its path
faults (upstreams/README.md). One run is N requests from M concurrent client tasks (asyncio,
raw sockets, so pipelining is exactly what is written). Each task opens a connection, sends
batches of 1 request or 2-5 pipelined requests, reads the answers in order and checks each
against the request at the head of its queue, then reuses the connection or opens a new
one. Everything random comes from one seed (printed in the report) and the task number, so
a failing run replays with the same requests (timing aside).

Every request carries a unique id, `S<seed>-<task>-<n>`, both as `X-Request-ID` (which the
proxy keeps and forwards) and in the target (`/echo?id=..`, `/headers?X-Soak-Id=..`,
`/delay/MS?then=%2Fecho%3Fid%3D..`, `/reset?id=..`), so:

- a 200 from `/echo` must echo this request's method, target, X-Request-ID, body length and
  body crc32; one from `/headers` must carry `X-Soak-Id: <id>`; `/bytes/N` must be the
  pattern and `/close` must be `ok\\n` (these two carry no id, but the answers around them on
  the same connection do, so a shifted or foreign answer is still caught);
- an error must be the proxy's own JSON error (docs/behaviour.md "Errors the proxy sends"),
  byte for byte, with this request's X-Request-ID;
- an answer with `Connection: close` must be followed by the proxy's close and nothing else;
  the requests pipelined behind it stay unanswered and the connection is not reused;
- the access log (JSON) must have exactly one record per answered request, with the status
  the client saw and the attempts the contract allows: 1 for every request that met no fault,
  1 for a POST without Idempotency-Key that met a fault after it was sent (contract 6: never
  retried after the send phase), 3 (= 1 + retries, one per upstream) for an idempotent one.
  The driver that calls `check_access_log` also compares the sum of attempts with the
  requests the upstream listeners counted (`/stats`), so a replay the log does not show
  would still be caught.

`run()` returns a `Report`; `failures` lists what went wrong (empty means clean).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from testkit.wire import Cut
from testkit.wire import Response as Resp
from testkit.wire import read_response_async as read_response

# The proxy config the soak is run with (merged over harness.base_config by the callers):
# three upstreams so an idempotent request meets its path fault on each (1 + retries
# attempts), no passive health (a path fault would otherwise eject upstreams and answer
# 503s), and a retry budget that is never exhausted by the soak's concurrency, so the
# expected attempts are exact.
UPSTREAM_NAMES = ["u1", "u2", "u3"]
RETRIES = 2
PROXY_OVERRIDES: dict[str, Any] = {
    "retries": RETRIES,
    "retry_budget": {"percent": 100, "min_concurrent": 256},
    "health": {"max_fails": 0},
    "timeouts": {"read": "5s", "total": "20s", "shutdown": "3s"},
}

ERROR_REASONS = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
READ_TIMEOUT = (
    15.0  # seconds a client task waits for one answer before calling it a hang
)
REPLAYABLE_BODY = 8 * 1024  # bodies up to this always fit the proxies' replay buffer
MAX_FAILURES_KEPT = 30

_RANDOM_BLOCK = random.Random(20261207).randbytes(1 << 20)
_PAT = b"0123456789abcdef" * ((1 << 18) // 16)


# --------------------------------------------------------------------------- requests


@dataclass
class Req:
    rid: str
    kind: str  # what is asked: echo, headers, bytes, close, delay-echo, reset, ...
    method: str
    target: str
    wire: bytes
    body: bytes = b""  # the body as the upstream sees it (decoded), for the echo check
    chunked: bool = False
    key: bool = False  # carries an Idempotency-Key
    closing: bool = False  # carries Connection: close
    n: int = 0  # /bytes/N, /truncate/N
    # expect: "ok" (200 checked by kind), "502" (the proxy's 502), "cut" (200 head, then
    # the proxy closes mid-body), "502|cut" (either: /invalid/bad-chunk, /truncate)
    expect: str = "ok"
    # filled in when answered
    status: int | None = None
    outcome: str = "unsent"

    @property
    def idempotent(self) -> bool:
        return self.method in ("GET", "HEAD") or self.key

    def expected_attempts(self) -> tuple[int, int]:
        """(min, max) attempts in the access log for an answered request."""
        if self.kind in ("reset", "drop", "delay-reset", "delay-drop"):
            if not self.idempotent:
                return (1, 1)
            if len(self.body) <= REPLAYABLE_BODY:
                return (1 + RETRIES, 1 + RETRIES)
            return (1, 1 + RETRIES)
        return (1, 1)


def _body(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.15:
        n = 0
    elif r < 0.75:
        n = rng.randrange(1, 1024)
    elif r < 0.96:
        n = rng.randrange(1024, 32 * 1024)
    else:
        n = rng.randrange(32 * 1024, 256 * 1024)
    off = rng.randrange(0, len(_RANDOM_BLOCK) - n + 1)
    return _RANDOM_BLOCK[off : off + n]


def _chunked(rng: random.Random, body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(body):
        k = min(len(body) - pos, rng.choice((1, 7, 100, 1000, 4096, 20000)))
        out += b"%x\r\n" % k + body[pos : pos + k] + b"\r\n"
        pos += k
    out += b"0\r\n"
    if rng.random() < 0.3:
        out += b"X-Soak-Trailer: t\r\n"
    return bytes(out + b"\r\n")


# kind, weight, methods. Faults are ~17% of requests.
KINDS: list[tuple[str, int]] = [
    ("echo", 30),
    ("post-echo", 22),
    ("headers", 10),
    ("head-headers", 5),
    ("delay-echo", 3),
    ("bytes", 4),
    ("close", 3),
    ("reset", 5),
    ("drop", 4),
    ("post-reset", 3),
    ("post-drop", 2),
    ("truncate", 2),
    ("invalid", 3),
    ("delay-reset", 1),
    ("delay-drop", 1),
]
INVALID_KINDS = ["garbage", "cl-te", "dup-cl", "bad-cl", "bad-chunk", "bad-status"]
_KIND_NAMES = [k for k, _ in KINDS]
_KIND_WEIGHTS = [w for _, w in KINDS]


def make_request(rng: random.Random, rid: str, closing: bool = False) -> Req:
    kind = rng.choices(_KIND_NAMES, _KIND_WEIGHTS)[0]
    method = "GET"
    body: bytes | None = None
    n = 0
    expect = "ok"
    if kind in ("post-echo", "post-reset", "post-drop"):
        method = "POST"
        kind = kind.removeprefix("post-")
    elif kind in ("truncate", "invalid", "delay-reset", "delay-drop"):
        method = "POST" if rng.random() < 0.3 else "GET"
    elif kind in ("reset", "drop"):
        method = "HEAD" if rng.random() < 0.2 else "GET"
    elif kind == "head-headers":
        method, kind = "HEAD", "headers"
    q = quote(f"/echo?id={rid}", safe="")
    if kind == "echo":
        target = f"/echo?id={rid}"
    elif kind == "headers":
        target = f"/headers?X-Soak-Id={rid}"
    elif kind == "delay-echo":
        target = f"/delay/{rng.randrange(1, 20)}?then={q}"
    elif kind == "bytes":
        n = rng.choice((0, 1, 100, 5000, 70000, 200000))
        target = f"/bytes/{n}?id={rid}"
    elif kind == "close":
        target = f"/close?id={rid}"
    elif kind in ("reset", "drop"):
        target = f"/{kind}?id={rid}"
        expect = "502"
    elif kind in ("delay-reset", "delay-drop"):
        then = kind.removeprefix("delay-")
        target = f"/delay/{rng.randrange(1, 10)}?then=%2F{then}&id={rid}"
        expect = "502"
    elif kind == "truncate":
        n = rng.choice((10, 1000, 50000))
        target = f"/truncate/{n}?id={rid}"
        expect = "502|cut"
    else:  # invalid
        inv = rng.choice(INVALID_KINDS)
        kind = f"invalid/{inv}"
        target = f"/invalid/{inv}?id={rid}"
        expect = "502|cut" if inv == "bad-chunk" else "502"
    headers = [("Host", "soak.test"), ("X-Request-ID", rid)]
    key = False
    chunked = False
    wire_body = b""
    if method == "POST":
        body = _body(rng)
        key = rng.random() < 0.4
        if key:
            headers.append(("Idempotency-Key", rid))
        if rng.random() < 0.3:
            chunked = True
            headers.append(("Transfer-Encoding", "chunked"))
            wire_body = _chunked(rng, body)
        else:
            headers.append(("Content-Length", str(len(body))))
            wire_body = body
    if closing:
        headers.append(("Connection", "close"))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers
    )
    return Req(
        rid=rid,
        kind=kind,
        method=method,
        target=target,
        wire=head.encode() + b"\r\n" + wire_body,
        body=body or b"",
        chunked=chunked,
        key=key,
        closing=closing,
        n=n,
        expect=expect,
    )


# --------------------------------------------------------------------------- responses


# Responses are read by testkit.wire (the one wire client of the suites and the lab):
# EOFError/ConnectionError before a complete head, Cut(response) inside a body.


def _error_bytes(code: int, rid: str, close: bool) -> tuple[bytes, bytes]:
    reason = ERROR_REASONS.get(code, "?")
    body = json.dumps({"code": code, "message": reason}, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-ID: {rid}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    ).encode()
    return head, body


def check_200(req: Req, r: Resp) -> str | None:
    """None when r is a correct 200 for req, else what is wrong (a mixed response)."""
    if r.status != 200:
        return f"status {r.status}, want 200"
    if req.kind in ("echo", "delay-echo"):
        try:
            j = json.loads(r.body)
        except ValueError:
            return f"echo body not JSON: {r.body[:200]!r}"
        hdr = {k.lower(): v for k, v in j.get("headers", [])}
        want = {
            "method": req.method,
            "path": req.target,
            "x-request-id": req.rid,
            "body_length": len(req.body),
            "body_crc32": zlib.crc32(req.body),
        }
        got = {
            "method": j.get("method"),
            "path": j.get("path"),
            "x-request-id": hdr.get("x-request-id"),
            "body_length": j.get("body_length"),
            "body_crc32": j.get("body_crc32"),
        }
        if got != want:
            return f"echo of another request: got {got}, want {want}"
    elif req.kind == "headers":
        if r.get("X-Soak-Id") != req.rid:
            return f"X-Soak-Id {r.get('X-Soak-Id')!r}, want {req.rid!r}"
        if r.body != (b"" if req.method == "HEAD" else b"ok\n"):
            return f"/headers body {r.body[:100]!r}"
    elif req.kind == "bytes":
        if r.body != _PAT[: req.n]:
            return f"/bytes/{req.n} body differs ({len(r.body)} bytes)"
    elif req.kind == "close" and r.body != b"ok\n":
        return f"/close body {r.body[:100]!r}"
    return None


def check_error(req: Req, r: Resp, code: int) -> str | None:
    close = r.get("Connection") == "close"
    head, body = _error_bytes(code, req.rid, close)
    want_body = b"" if req.method == "HEAD" else body
    if (r.raw_head, r.body) != (head, want_body):
        return f"not the proxy's {code} for {req.rid}: {r.raw_head[:300]!r} {r.body[:100]!r}"
    return None


# --------------------------------------------------------------------------- the run


@dataclass
class Report:
    seed: int
    requests: int = 0  # requests sent
    connections: int = 0
    batches: int = 0
    pipelined_batches: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    mixed: int = 0
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    seconds: float = 0.0
    stopped_by_time: bool = False
    reqs: list[Req] = field(default_factory=list)

    def fail(self, what: str) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(what)


class _Budget:
    def __init__(self, n: int, deadline: float) -> None:
        self.left = n
        self.deadline = deadline
        self.timed_out = False

    def take(self, k: int) -> int:
        if time.monotonic() > self.deadline:
            self.timed_out = True
            return 0
        k = min(k, self.left)
        self.left -= k
        return k


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        pass  # the reader side reports what the proxy did


async def _client(
    port: int, task: int, seed: int, budget: _Budget, rep: Report, tag: str
) -> None:
    rng = random.Random(f"{seed}-{tag}-{task}")
    seq = 0
    while True:
        # One connection: some batches, then maybe a closing request or an abandon.
        batches = rng.choice((1, 1, 2, 3, 5, 10, 30, 100))
        end = rng.random()
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, limit=1 << 20
            )
        except OSError as e:
            rep.fail(f"connect failed: {e!r}")
            return
        rep.connections += 1
        try:
            alive = True
            for b in range(batches):
                size = 1 if rng.random() < 0.6 else rng.randrange(2, 6)
                size = budget.take(size)
                if size == 0:
                    return
                last = b == batches - 1
                reqs = []
                for i in range(size):
                    rid = f"S{seed}-{tag}{task}-{seq}"
                    seq += 1
                    closing = last and i == size - 1 and end < 0.15
                    reqs.append(make_request(rng, rid, closing))
                rep.requests += size
                rep.batches += 1
                rep.pipelined_batches += size > 1
                rep.reqs.extend(reqs)
                for q in reqs:
                    rep.kinds[f"{q.method} {q.kind}"] += 1
                data = b"".join(q.wire for q in reqs)
                if last and 0.15 <= end < 0.18:
                    # Abandon: send and close without reading (the proxy must clean up).
                    await _send(writer, data)
                    for q in reqs:
                        q.outcome = "abandoned"
                        rep.outcomes["abandoned"] += 1
                    break  # this connection only: the task opens a new one
                sender = asyncio.create_task(_send(writer, data))
                alive = await _read_batch(reader, reqs, rep)
                await sender
                if not alive:
                    break
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


async def _read_batch(
    reader: asyncio.StreamReader, reqs: list[Req], rep: Report
) -> bool:
    """Read and check the answers to one sent batch; False when the connection ended."""
    for i, q in enumerate(reqs):
        try:
            r = await asyncio.wait_for(read_response(reader, q.method), READ_TIMEOUT)
        except TimeoutError:
            rep.fail(f"{q.rid} {q.method} {q.target}: no answer within {READ_TIMEOUT}s")
            _unanswered(reqs[i:], rep, "hang")
            return False
        except Cut as c:
            r = c.args[0]
            q.status = r.status
            if "cut" not in q.expect:
                rep.fail(
                    f"{q.rid} {q.method} {q.target}: connection ended inside the body "
                    f"of {r.raw_head[:120]!r} ({len(r.body)} bytes)"
                )
            elif r.status != 200:
                rep.fail(f"{q.rid} {q.target}: cut {r.status}, want a cut 200")
            q.outcome = "cut"
            rep.outcomes[f"{q.kind} cut 200"] += 1
            _unanswered(reqs[i + 1 :], rep, "after-close")
            return False
        except (EOFError, ConnectionError) as e:
            rep.fail(
                f"{q.rid} {q.method} {q.target}: no answer, connection ended: {e!r}; "
                f"batch: {_batch(reqs)}"
            )
            _unanswered(reqs[i:], rep, "lost")
            return False
        except AssertionError as e:
            rep.fail(f"{q.rid} {q.method} {q.target}: unparsable answer: {e}")
            _unanswered(reqs[i:], rep, "garbled")
            return False
        q.status = r.status
        problem: str | None
        if q.expect == "ok":
            problem = check_200(q, r)
            if problem and r.status == 200:
                rep.mixed += 1
        elif r.status == 200 and "cut" in q.expect:
            problem = "a complete 200 for a response the upstream cut short"
        else:
            problem = check_error(q, r, 502)
        if problem:
            rep.fail(f"{q.rid} {q.method} {q.target}: {problem}")
        closes = r.get("Connection") == "close"
        if closes != q.closing and q.expect == "ok":
            rep.fail(
                f"{q.rid} {q.target}: Connection: close {closes}, asked {q.closing}"
            )
        q.outcome = "answered"
        rep.outcomes[f"{q.kind} {r.status}" + (" close" if closes else "")] += 1
        if closes:
            try:
                extra = await asyncio.wait_for(reader.read(1 << 16), READ_TIMEOUT)
            except ConnectionError:
                extra = b""
            except TimeoutError:
                rep.fail(f"{q.rid}: Connection: close but the proxy did not close")
                extra = b""
            if extra:
                rep.fail(f"{q.rid}: bytes after Connection: close: {extra[:200]!r}")
            _unanswered(reqs[i + 1 :], rep, "after-close")
            return False
    return True


def _batch(reqs: list[Req]) -> str:
    return "; ".join(
        f"{q.method} {q.target} ({len(q.body)} B{', chunked' if q.chunked else ''}"
        f"{', key' if q.key else ''}{', close' if q.closing else ''}) -> {q.status}"
        for q in reqs
    )


def _unanswered(reqs: list[Req], rep: Report, why: str) -> None:
    for q in reqs:
        q.outcome = why
        rep.outcomes[f"unanswered ({why})"] += 1


async def _run(
    port: int, requests: int, seed: int, clients: int, max_s: float, tag: str
) -> Report:
    rep = Report(seed=seed)
    t0 = time.monotonic()
    budget = _Budget(requests, t0 + max_s)
    await asyncio.gather(
        *(_client(port, t, seed, budget, rep, tag) for t in range(clients))
    )
    rep.seconds = time.monotonic() - t0
    rep.stopped_by_time = budget.timed_out
    return rep


def run(
    port: int,
    requests: int,
    seed: int,
    clients: int = 16,
    max_seconds: float = 300.0,
    tag: str = "m",
) -> Report:
    """Run the soak against the proxy on 127.0.0.1:port (tag: part of every id, so a
    warm-up and the measured run never share ids)."""
    return asyncio.run(_run(port, requests, seed, clients, max_seconds, tag))


# --------------------------------------------------------------------------- access log


def check_access_log(
    records: list[dict[str, Any]], reps: list[Report], connect_retries: int = 0
) -> dict[str, Any]:
    """Match the proxy's access records (log.format json) to the requests of reps.
    connect_retries: the `retry` events of phase connect. Such a retry sent nothing, so it
    is allowed for every method (contract 6) and adds one attempt to any request; no
    event says which, so the attempts above each request's expected maximum must add up
    to at most that many (a loaded machine can make a 1 s connect timeout expire: the
    Python twin's event loop stalled for over a second at a load average of 17).
    Fails go into the last report; returns figures (attempts total, by kind)."""
    rep = reps[-1]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_id.setdefault(str(rec.get("request_id")), []).append(rec)
    known = {q.rid for r in reps for q in r.reqs}
    for rid in by_id.keys() - known:
        rep.fail(
            f"access log record for an unknown request id {rid!r}: {by_id[rid][0]}"
        )
    attempts = Counter[str]()
    over: list[str] = []
    excess = 0
    post_nokey_fault_attempts = Counter[int]()
    for q in (q for r in reps for q in r.reqs):
        recs = by_id.get(q.rid, [])
        if len(recs) > 1:
            rep.fail(f"{q.rid}: {len(recs)} access records: {recs}")
            continue
        if q.outcome in ("answered", "cut") and not recs:
            rep.fail(
                f"{q.rid} {q.method} {q.target}: answered but not in the access log"
            )
            continue
        if not recs:
            continue
        rec = recs[0]
        a = int(rec.get("attempts", -1))
        attempts[q.kind] += a
        if q.method == "POST" and not q.key and q.expect != "ok":
            post_nokey_fault_attempts[a] += 1
        if rec.get("method") != q.method or rec.get("path") != q.target:
            rep.fail(f"{q.rid}: access record {rec} for {q.method} {q.target}")
        if q.outcome == "answered" and rec.get("status") != q.status:
            rep.fail(
                f"{q.rid}: access status {rec.get('status')}, client saw {q.status}"
            )
        lo, hi = q.expected_attempts()
        what = f"{q.rid} {q.method} {q.target} (key={q.key}, body={len(q.body)})"
        if q.outcome in ("answered", "cut") and a < lo:
            rep.fail(f"{what}: attempts {a}, want {lo}..{hi}")
        elif a < 0:
            rep.fail(f"{what} ({q.outcome}): attempts {a}")
        if a > hi:
            # unanswered or abandoned: the proxy may have stopped at any point, but never
            # after more attempts than allowed
            over.append(f"{what} ({q.outcome}): attempts {a}, want {lo}..{hi}")
            excess += a - hi
    if excess > connect_retries:
        for o in over:
            rep.fail(o)
        rep.fail(
            f"{excess} attempts above the allowed, only {connect_retries} connect-phase retries"
        )
    return {
        "attempts_over_expected": excess,
        "records": len(records),
        "attempts_total": sum(int(r.get("attempts", 0)) for r in records),
        "attempts_by_kind": dict(attempts),
        "post_without_key_fault_attempts": dict(post_nokey_fault_attempts),
    }


def fd_count(pids: list[int]) -> int:
    """Open file descriptors of these processes (/proc/PID/fd)."""
    n = 0
    for pid in pids:
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return n


def sent(rep: Report) -> Counter[str]:
    """Requests by method, and POSTs by body framing and Idempotency-Key."""
    t = Counter[str]()
    for q in rep.reqs:
        t[q.method] += 1
        if q.method == "POST":
            t["POST chunked" if q.chunked else "POST content-length"] += 1
            t["POST with Idempotency-Key" if q.key else "POST without key"] += 1
        if q.expect != "ok":
            t["faulty path"] += 1
    return t


def totals(rep: Report) -> Counter[str]:
    """Requests by what the client got: 200, 502 (by the fault met), cut 200, closed
    after Connection: close (by whom), unanswered, abandoned."""
    t = Counter[str]()
    for q in rep.reqs:
        if q.outcome == "answered":
            fault = "" if q.expect == "ok" else f" {q.kind.split('/')[0]}"
            t[f"{q.status}{fault}"] += 1
        elif q.outcome == "cut":
            t["cut 200"] += 1
        else:
            t[q.outcome] += 1
    return t


def summary(rep: Report) -> str:
    lines = [
        f"seed {rep.seed}: {rep.requests} requests on {rep.connections} connections, "
        f"{rep.batches} batches ({rep.pipelined_batches} pipelined) in {rep.seconds:.1f} s"
        + (" (stopped by the time cap)" if rep.stopped_by_time else ""),
        f"mixed responses: {rep.mixed}; failures: {rep.failure_count}",
        "sent: " + ", ".join(f"{k}: {v}" for k, v in sorted(sent(rep).items())),
        "totals: " + ", ".join(f"{k}: {v}" for k, v in sorted(totals(rep).items())),
        "outcomes: " + ", ".join(f"{k}: {v}" for k, v in sorted(rep.outcomes.items())),
    ]
    lines += [f"  FAIL {f}" for f in rep.failures]
    return "\n".join(lines)
