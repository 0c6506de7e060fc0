"""The smuggling corpus (conformance/corpus/) as data, a capturing upstream, and the
delivery + judging logic shared by conformance/test_corpus.py and conformance/matrix.py.

Nothing here knows which proxy it talks to: a case is delivered to a port, the capturing
upstream records every byte the proxy forwards, and `judge` compares what the client and
the upstream saw with the case's expectation (corpus/README.md describes the format).
"""

from __future__ import annotations

import asyncio
import codecs
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
IO_TIMEOUT = 3.0

# --------------------------------------------------------------------------- the corpus


@dataclass
class Case:
    name: str
    kind: str  # "request" | "response"
    group: str  # the file it came from
    rfc: str = ""
    note: str = ""
    expect: str = ""  # "reject 400" | "reject 400,505" | "accept" | "pass 200" | "error 502" | "cut"
    raw: bytes = b""
    body_length: int | None = None  # accept: body length the upstream must receive
    method: str = "GET"  # response cases: the client's method
    then: str = "close"  # response cases: close | keep (the upstream connection)
    body: bytes | None = None  # response cases (pass): the body the client must get
    # "allowed": the error sits in the body, which a streaming proxy may already have
    # begun to forward: the upstream may hold a cut-off prefix (connection closed,
    # never a complete message) instead of nothing (or, for accept: 0 messages).
    partial: str = ""

    @property
    def outcome(self) -> str:
        return self.expect.split()[0]

    @property
    def codes(self) -> tuple[int, ...]:
        """Status codes of the reject (or pass) alternative."""
        for alt in self.expect.split(" | "):
            parts = alt.split()
            if len(parts) > 1:
                return tuple(int(c) for c in parts[1].split(","))
        return ()

    @property
    def accepts(self) -> bool:
        return "accept" in self.expect.split(" | ")

    @property
    def rejects(self) -> bool:
        return any(a.startswith("reject") for a in self.expect.split(" | "))


def unescape(text: str) -> bytes:
    r"""Corpus escapes: \r \n \t \\ \xHH (Python bytes-literal escapes); all else literal."""
    return codecs.escape_decode(text.encode("latin-1"))[0]


_REPEAT = re.compile(r"^raw\*(\d+)$")


def parse_file(path: Path, kind: str) -> list[Case]:
    cases: list[Case] = []
    cur: Case | None = None
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        where = f"{path.name}:{lineno}"
        if line.startswith("[") and line.endswith("]"):
            cur = Case(name=line[1:-1], kind=kind, group=path.stem)
            cases.append(cur)
            continue
        if cur is None or ": " not in line and not line.endswith(":"):
            raise ValueError(f"{where}: expected [name] or 'key: value'")
        key, _, value = line.partition(": ")
        key = key.rstrip(":")
        m = _REPEAT.match(key)
        if key == "raw" or m:
            cur.raw += unescape(value) * (int(m.group(1)) if m else 1)
        elif key == "rfc":
            cur.rfc = value
        elif key == "note":
            cur.note = (cur.note + " " + value).strip()
        elif key == "expect":
            cur.expect = value
        elif key == "body-length":
            cur.body_length = int(value)
        elif key == "method":
            cur.method = value
        elif key == "then":
            cur.then = value
        elif key == "partial":
            cur.partial = value
        elif key == "body":
            cur.body = unescape(value)
        else:
            raise ValueError(f"{where}: unknown key {key!r}")
    for c in cases:
        ok = (
            re.fullmatch(
                r"(reject \d{3}(,\d{3})*|accept)( \| reject \d{3}(,\d{3})*)?", c.expect
            )
            if kind == "request"
            else re.fullmatch(r"pass \d{3}|error 502|cut", c.expect)
        )
        if not ok or not c.raw or not c.rfc:
            raise ValueError(
                f"{path.name}: case {c.name}: needs raw, rfc, valid expect"
            )
    return cases


def load(kind: str) -> list[Case]:
    """All cases of one kind ("request" | "response"), files in name order."""
    out: list[Case] = []
    for p in sorted((CORPUS / f"{kind}s").glob("*.txt")):
        out.extend(parse_file(p, kind))
    names = [c.name for c in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate case names: {sorted(dup)}")
    return out


# --------------------------------------------------------------------------- strict message parser

TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# HTTP/1.0 too: the twins always send 1.1 upstream, nginx and HAProxy may forward 1.0.
REQUEST_LINE = re.compile(
    rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.[01]$"
)
FIELD_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")


class Malformed(Exception):
    pass


@dataclass
class Message:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body_length: int
    raw: bytes

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


def _lines(head: bytes) -> list[bytes]:
    if b"\r" in head.replace(b"\r\n", b"") or b"\n" in head.replace(b"\r\n", b""):
        raise Malformed("bare CR or LF in head")
    return head.split(b"\r\n")


def parse_request(buf: bytes) -> tuple[Message, int] | None:
    """One strictly well-framed HTTP/1.1 request at the start of buf: (message, bytes
    used); None if more bytes are needed; Malformed if a proxy should never send it."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise Malformed("head over 64 KiB")
        return None
    lines = _lines(buf[:end])
    m = REQUEST_LINE.match(lines[0])
    if not m:
        raise Malformed(f"request line {lines[0][:80]!r}")
    headers = []
    for ln in lines[1:]:
        name, sep, value = ln.partition(b":")
        if not sep or not TOKEN.match(name):
            raise Malformed(f"header line {ln[:80]!r}")
        value = value.strip(b" \t")
        if not FIELD_VALUE.match(value):
            raise Malformed(f"control byte in {ln[:80]!r}")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    msg = Message(m.group(1).decode(), m.group(2).decode("latin-1"), headers, 0, b"")
    hosts = msg.get_all("host")
    if len(hosts) > 1:
        raise Malformed(f"{len(hosts)} Host fields")
    cls, tes = msg.get_all("content-length"), msg.get_all("transfer-encoding")
    pos = end + 4
    if cls and tes:
        raise Malformed("Content-Length and Transfer-Encoding")
    if len(cls) > 1 or (cls and not cls[0].isdigit()):
        raise Malformed(f"Content-Length {cls}")
    if tes:
        if [t.strip(" \t").lower() for t in tes] != ["chunked"]:
            raise Malformed(f"Transfer-Encoding {tes}")
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            line = buf[pos:eol]
            if b"\n" in line or b"\r" in line:
                raise Malformed("bare CR/LF in chunk line")
            size_txt = line.partition(b";")[0]
            if not re.fullmatch(rb"[0-9a-fA-F]{1,15}", size_txt):
                raise Malformed(f"chunk size line {line[:40]!r}")
            size = int(size_txt, 16)
            pos = eol + 2
            if size == 0:
                break
            if len(buf) < pos + size + 2:
                return None
            if buf[pos + size : pos + size + 2] != b"\r\n":
                raise Malformed("chunk data not followed by CRLF")
            msg.body_length += size
            pos += size + 2
        while True:  # trailers
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            line = buf[pos:eol]
            pos = eol + 2
            if line == b"":
                break
            name, sep, value = line.partition(b":")
            if not sep or not TOKEN.match(name) or not FIELD_VALUE.match(value):
                raise Malformed(f"trailer {line[:80]!r}")
            if name.lower() in (b"content-length", b"transfer-encoding"):
                raise Malformed(f"framing field in trailer {line[:80]!r}")
    elif cls:
        n = int(cls[0])
        if len(buf) < pos + n:
            return None
        msg.body_length = n
        pos += n
    msg.raw = bytes(buf[:pos])
    return msg, pos


# --------------------------------------------------------------------------- capturing upstream


@dataclass
class Capture:
    messages: list[Message] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    bytes_in: int = 0
    connections: int = 0
    leftovers: list[bytes] = field(default_factory=list)  # partial bytes at close
    recent: list[bytes] = field(default_factory=list)  # the last reads, for reports


class CaptureUpstream:
    """An asyncio HTTP/1.1 upstream in a thread that records every request it gets.

    Any request -> 200 with the request target as body (so a client can tell whose
    response it holds). `/r/NAME` -> the raw bytes of response case NAME, then the
    connection is closed or, with `then: keep`, served on. `/early...` -> the 200 is sent
    as soon as the head is in, before the body (an early response)."""

    def __init__(self, responses: list[Case] | None = None) -> None:
        self.cap = Capture()
        self.responses = {c.name: c for c in responses or []}
        self.lock = threading.Lock()
        self.dirty = False  # set by a delivery that may have forwarded bytes
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._ready.wait(5), "capture upstream did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def settle(self, rounds: int = 4) -> None:
        """Let the upstream's loop run a few iterations, so bytes already in its sockets
        are read and counted (select -> read -> task step) before a snapshot: a slow
        loop must not charge one delivery's bytes to the next."""
        for _ in range(rounds):
            ev = threading.Event()
            self.loop.call_soon_threadsafe(ev.set)
            ev.wait(1)

    def snapshot(self) -> tuple[int, int, int]:
        if self.dirty:  # the last delivery may have left bytes in flight
            self.settle()
            self.dirty = False
        with self.lock:
            c = self.cap
            return len(c.messages), len(c.malformed), c.bytes_in

    def leftovers(self) -> int:
        with self.lock:
            return len(self.cap.leftovers)

    def wait_leftover(self, before: int, timeout: float) -> bool:
        """A connection closed with a cut-off message since `before`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.leftovers() > before:
                return True
            time.sleep(0.001)  # polls a condition, bounded by timeout
        return False

    def since(self, snap: tuple[int, int, int]) -> tuple[list[Message], list[str], int]:
        with self.lock:
            c = self.cap
            return (
                list(c.messages[snap[0] :]),
                list(c.malformed[snap[1] :]),
                c.bytes_in - snap[2],
            )

    def wait_messages(self, snap: tuple[int, int, int], n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got, bad, _ = self.since(snap)
            if len(got) >= n or bad:
                return
            time.sleep(0.001)  # polls a condition, bounded by timeout

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        buf = b""
        with self.lock:
            self.cap.connections += 1
        try:
            while True:
                try:
                    parsed = parse_request(buf)
                except Malformed as e:
                    with self.lock:
                        self.cap.malformed.append(f"{e}: {buf[:200]!r}")
                    return
                if parsed is None:
                    early = self._early_head(buf)
                    if early is not None and not getattr(writer, "_tp_early", False):
                        writer._tp_early = True  # type: ignore[attr-defined]
                        writer.write(early)
                    data = await reader.read(65536)
                    if not data:
                        if buf:
                            with self.lock:
                                self.cap.leftovers.append(buf)
                        return
                    with self.lock:
                        self.cap.bytes_in += len(data)
                        self.cap.recent = self.cap.recent[-3:] + [data[:300]]
                    buf += data
                    continue
                msg, used = parsed
                buf = buf[used:]
                with self.lock:
                    self.cap.messages.append(msg)
                if getattr(writer, "_tp_early", False):
                    writer._tp_early = False  # type: ignore[attr-defined]
                    continue
                if msg.target.startswith("/r/") and msg.target[3:] in self.responses:
                    case = self.responses[msg.target[3:]]
                    writer.write(case.raw)
                    if case.then == "close":
                        # FIN queued right behind the response (write_eof with an empty
                        # buffer shuts down at once): no proxy can see the response
                        # complete before the close, so no pooled-connection race.
                        writer.write_eof()
                        await writer.drain()
                        return
                    await writer.drain()
                    continue
                writer.write(self._ok(msg.target, msg.method))
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    @staticmethod
    def _ok(target: str, method: str) -> bytes:
        body = target.encode("latin-1")
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Capture: 1\r\n\r\n" % len(
            body
        )
        return head if method == "HEAD" else head + body

    def _early_head(self, buf: bytes) -> bytes | None:
        end = buf.find(b"\r\n\r\n")
        if (
            end < 0
            or not buf.split(b" ", 2)[1:2]
            or not buf.split(b" ", 2)[1].startswith(b"/early")
        ):
            return None
        return self._ok(buf.split(b" ", 2)[1].decode("latin-1"), "POST")


# --------------------------------------------------------------------------- deliveries


def deliveries(raw: bytes, full: bool = True) -> Iterator[tuple[str, list[bytes]]]:
    """(label, pieces): whole; byte by byte; split at every offset into two sends."""
    yield "whole", [raw]
    if not full:
        return
    yield "bytes", [raw[i : i + 1] for i in range(len(raw))]
    for k in range(1, len(raw)):
        yield f"split@{k}", [raw[:k], raw[k:]]


class Client:
    """A raw client socket with a small response reader (exact head bytes kept)."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.send_failed = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, pieces: list[bytes]) -> None:
        for p in pieces:
            if self.send_failed:
                return
            try:
                self.sock.sendall(p)
            except OSError:
                self.send_failed = True  # the proxy closed: read what it said

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            raise
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_response(self, method: str = "GET") -> dict:
        """One response (1xx collected); raises EOFError when closed first."""
        interim = 0
        while True:
            while b"\r\n\r\n" not in self.buf:
                if not self._fill():
                    raise EOFError(self.buf)
            end = self.buf.index(b"\r\n\r\n") + 4
            head, self.buf = self.buf[:end], self.buf[end:]
            m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
            if not m:
                raise ValueError(f"bad status line {head[:60]!r}")
            status = int(m.group(1))
            hdrs = [
                (n.strip().lower(), v.strip())
                for n, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:-2])
            ]
            if 100 <= status < 200 and status != 101:
                interim += 1
                continue
            break
        r = {"status": status, "head": head, "headers": hdrs, "interim": interim}
        te = [v for n, v in hdrs if n == b"transfer-encoding"]
        cl = [v for n, v in hdrs if n == b"content-length"]
        body = b""
        complete = True
        if method == "HEAD" or status in (101, 204, 304):
            pass
        elif te:
            body, complete = self._chunked()
        elif cl:
            n = int(cl[0])
            while len(self.buf) < n and self._fill():
                pass
            body, self.buf = self.buf[:n], self.buf[n:]
            complete = len(body) == n
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        r["body"] = body
        r["complete"] = complete
        r["close"] = (b"connection", b"close") in [
            (n, v.lower()) for n, v in hdrs
        ] or not head.startswith(b"HTTP/1.1")
        return r

    def _chunked(self) -> tuple[bytes, bool]:
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill():
                    return body, False
            line, self.buf = self.buf.split(b"\r\n", 1)
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                return body, False
            if size == 0:
                break
            while len(self.buf) < size + 2:
                if not self._fill():
                    return body + self.buf[:size], False
            body += self.buf[:size]
            self.buf = self.buf[size + 2 :]
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill():
                    return body, False
            line, self.buf = self.buf.split(b"\r\n", 1)
            if line == b"":
                return body, True

    def read_to_close(self) -> bytes:
        """Bytes until EOF; TimeoutError if the peer keeps the connection open."""
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out


# --------------------------------------------------------------------------- judging


@dataclass
class Result:
    ok: bool
    observed: str  # short, for the matrix: "reject 400", "accept", "502", ...
    detail: str = ""


def _method(raw: bytes) -> str:
    return raw.split(b" ", 1)[0].decode("latin-1", "replace")


def run_request(
    port: int,
    up: CaptureUpstream,
    case: Case,
    pieces: list[bytes],
    exact_error=None,
    marker_seq: list[int] | None = None,
) -> Result:
    """Deliver one request case; judge client and upstream sides."""
    snap = up.snapshot()
    cut_before = up.leftovers()
    c = Client(port)
    up.dirty = True  # until the verdict says nothing was forwarded
    try:
        c.send(pieces)
        try:
            r = c.read_response(_method(case.raw))
        except EOFError:
            _, bad, nbytes = up.since(snap)
            return _verdict_no_response(case, nbytes, bad)
        except TimeoutError:
            return Result(False, "hang", f"no response within {IO_TIMEOUT}s")
        except ValueError as e:
            return Result(False, "garbage", str(e))
        status = r["status"]
        method = _method(case.raw)
        upstream_answer = status == 200 and (b"x-capture", b"1") in r["headers"]
        if not upstream_answer:
            # the proxy answered itself (or the upstream's answer is not ours)
            try:
                rest = c.read_to_close()
                closed = True
            except TimeoutError:
                rest, closed = c.buf, False
            if case.partial == "allowed":
                up.settle()
            msgs, bad, nbytes = up.since(snap)
            up.dirty = bool(nbytes) or case.partial == "allowed"
            observed = f"reject {status}"
            problems = []
            if not case.rejects:
                problems.append(f"rejected with {status}, expected accept")
            elif status not in case.codes:
                problems.append(f"status {status}, expected {case.codes}")
            if rest:
                problems.append(f"bytes after the error: {rest[:80]!r}")
                observed += "+extra"
            if not closed:
                problems.append("connection left open after the error")
                observed += " open"
            if msgs or bad or (nbytes and case.partial != "allowed"):
                problems.append(
                    f"{nbytes} bytes / {len(msgs)} message(s) forwarded "
                    f"(last reads: {up.cap.recent[-2:]})"
                )
                observed += f" fwd={len(msgs)}"
            elif nbytes and not up.wait_leftover(cut_before, IO_TIMEOUT):
                problems.append(
                    f"{nbytes} bytes forwarded, upstream connection not closed"
                )
                observed += " fwd-open"
            if exact_error is not None and not problems:
                err = exact_error(r)
                if err:
                    problems.append(err)
            return Result(not problems, observed, "; ".join(problems))
        # the upstream answered: the request was forwarded
        up.wait_messages(snap, 1, IO_TIMEOUT)
        problems = []
        marker_ok = True
        if not r["close"]:
            seq = marker_seq[0] if marker_seq else 0
            if marker_seq:
                marker_seq[0] += 1
            target = f"/m/{seq}"
            c.send([f"GET {target} HTTP/1.1\r\nHost: m\r\n\r\n".encode()])
            try:
                r2 = c.read_response()
                if r2["body"] != target.encode():
                    marker_ok = False
                    # a request the case itself pipelines behind the first one (read
                    # as such because the first was accepted), or bytes from elsewhere
                    pipelined = b" " + r2["body"] + b" HTTP/1.1\r\n" in case.raw
                    problems.append(
                        (
                            "the pipelined request behind it was answered too: "
                            if pipelined
                            else "next response is not the marker's: "
                        )
                        + f"{r2['head'][:60]!r} {r2['body'][:60]!r}"
                    )
            except (EOFError, TimeoutError, ValueError):
                pass  # the proxy may close; what it forwarded is checked below
        else:
            try:
                rest = c.read_to_close()
                if rest:
                    marker_ok = False
                    problems.append(f"bytes after a close response: {rest[:80]!r}")
            except TimeoutError:
                problems.append("Connection: close announced but left open")
        msgs, bad, _ = up.since(snap)
        ours = [m for m in msgs if not m.target.startswith("/m/")]
        observed = "accept" if len(ours) == 1 and not bad and marker_ok else "smuggled"
        if problems and problems[0].startswith("the pipelined request"):
            observed = "accept+pipelined"
        if not case.accepts:
            problems.insert(0, "forwarded, expected reject")
        # An early response ended the exchange before the body was all forwarded: the
        # upstream holds an unfinished message on a connection that must never be used
        # again (a reuse shows up as a malformed message: test_nothing_malformed_...).
        partial_ok = case.partial == "allowed" and not ours and not bad
        if partial_ok:
            observed = "accept(cut)"
        elif len(ours) != 1:
            problems.append(
                f"{len(ours)} messages forwarded: {[m.raw[:60] for m in ours]}"
            )
        if bad:
            problems.append(f"malformed forwarded bytes: {bad}")
        if (
            case.body_length is not None
            and ours
            and ours[0].body_length != case.body_length
        ):
            problems.append(
                f"forwarded body {ours[0].body_length} bytes, expected {case.body_length}"
            )
            observed = "accept(body!)"
        if ours and method != "HEAD" and r["body"] != ours[0].target.encode("latin-1"):
            problems.append("client got a response for another request")
        return Result(not problems, observed, "; ".join(problems))
    finally:
        c.close()


def _verdict_no_response(case: Case, nbytes: int, bad: list[str]) -> Result:
    problems = ["closed without a response"]
    if nbytes:
        problems.append(f"{nbytes} bytes forwarded")
    return Result(False, "closed" + (" fwd" if nbytes else ""), "; ".join(problems))


def run_response(
    port: int, up: CaptureUpstream, case: Case, exact_error=None, seq: int = 0
) -> Result:
    """GET (or case.method) /r/NAME through the proxy; judge what the client gets.

    First one throw-away request on its own connection: it takes (and so clears) any
    pooled upstream connection the previous case's close left behind, so this case is
    judged on its own bytes."""
    s = Client(port)
    try:
        s.send([b"GET /sync HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n"])
        s.read_response()
    except (EOFError, TimeoutError, ValueError, OSError):
        pass
    finally:
        s.close()
    c = Client(port)
    try:
        c.send([f"{case.method} /r/{case.name} HTTP/1.1\r\nHost: x\r\n\r\n".encode()])
        try:
            r = c.read_response(case.method)
        except EOFError:
            ok = case.outcome == "cut"
            return Result(ok, "closed", "" if ok else "closed without a response")
        except TimeoutError:
            return Result(False, "hang", f"no response within {IO_TIMEOUT}s")
        except ValueError as e:
            return Result(False, "garbage", str(e))
        status = r["status"]
        if not r["complete"]:
            ok = case.outcome == "cut"
            return Result(ok, f"{status} cut", "" if ok else "truncated response")
        problems = []
        observed = f"{status}"
        if case.outcome in ("error", "cut"):
            if status != 502:
                problems.append(f"complete {status} forwarded, expected 502")
            elif exact_error is not None:
                err = exact_error(r)
                if err:
                    problems.append(err)
        else:
            want = case.codes[0]
            if status != want:
                problems.append(f"status {status}, expected {want}")
            if case.body is not None and r["body"] != case.body:
                problems.append(f"body {r['body'][:80]!r}, expected {case.body[:80]!r}")
                observed += " body!"
        # the connection must carry nothing else: the next request gets its own answer
        if not r["close"]:
            target = f"/m/r{seq}"
            c.send([f"GET {target} HTTP/1.1\r\nHost: m\r\n\r\n".encode()])
            try:
                r2 = c.read_response()
                if r2["body"] != target.encode():
                    problems.append(
                        f"next response is not the marker's: {r2['head'][:60]!r} {r2['body'][:40]!r}"
                    )
                    observed += " desync"
            except (EOFError, TimeoutError, ValueError):
                pass  # closing instead is safe
        else:
            try:
                rest = c.read_to_close()
                if rest:
                    problems.append(f"bytes after the response: {rest[:80]!r}")
                    observed += " extra"
            except TimeoutError:
                problems.append("Connection: close announced but left open")
        return Result(not problems, observed, "; ".join(problems))
    finally:
        c.close()
