"""The one HTTP/1.1 wire client the suites and the lab share.

A response is read by the same rules wherever it comes from: `parse_head` (strict: a
status line `HTTP/x.y NNN reason`, no obs-fold, no whitespace in a header name),
`body_framing` (HEAD/1xx/204/304 have no body; Transfer-Encoding ending in chunked is
chunked, any other Transfer-Encoding is close-delimited; one agreed Content-Length;
otherwise close-delimited), `parse_chunk_size`, `parse_trailer`. Three transports read
through them:

- `Conn`: a blocking socket with its own buffer, every byte visible to the test
  (the conformance suite's client; large bodies can stream into a sink).
- `read_response_stream` / `read_head_stream`: a buffered binary file
  (`socket.makefile("rb")`), for the upstream server's own tests.
- `read_response_async`: an asyncio StreamReader (the soak and the lab's per-response
  client); raises `Cut` carrying the partial response when the connection ends inside a
  body, EOFError when it ends before a head.

`build_request` and `chunked` write requests the same way for all of them.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, Self

IO_TIMEOUT = 5.0
MAX_LINE = 1 << 20


class Response:
    """A response as read off the wire: status line, ordered headers, body."""

    def __init__(self) -> None:
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.interim: list[Response] = []  # 1xx responses read before this one
        self.body = b""
        self.body_length = 0  # bytes of body (also when streamed into a sink)
        self.raw_head = b""  # status line + headers + empty line, exact bytes
        self.framing = ""  # "length" | "chunked" | "close" | "none"
        self.raw_size = 0  # bytes of this response on the wire (head + framed body)
        self.chunks: list[int] = []  # chunk sizes as framed, the last (0) included

    def get(self, name: str, default: str | None = None) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def has(self, name: str) -> bool:
        return any(n.lower() == name.lower() for n, _ in self.headers)

    def names(self) -> list[str]:
        return [n for n, _ in self.headers]

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers!r} body={self.body[:200]!r}>"


class ProtocolError(AssertionError):
    """The peer sent something that is not HTTP/1.1 (an AssertionError, so a test
    reading it fails with the bytes in the message)."""


class Cut(Exception):
    """The connection ended inside a response, after its head; args[0] is the response
    with the body read so far."""


_STATUS_LINE = re.compile(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$")
_HEX = re.compile(rb"[0-9a-fA-F]+")


def parse_head(head: bytes) -> Response:
    """A response head (status line, header lines, the empty line) into a Response."""
    r = Response()
    r.raw_head = head
    r.raw_size = len(head)
    lines = head.removesuffix(b"\r\n\r\n").split(b"\r\n")
    m = _STATUS_LINE.match(lines[0])
    if not m:
        raise ProtocolError(f"bad status line {lines[0][:200]!r}")
    r.version = m.group(1).decode()
    r.status = int(m.group(2))
    r.reason = (m.group(3) or b"").decode("latin-1")
    for line in lines[1:]:
        if b":" not in line or line[:1] in (b" ", b"\t"):
            raise ProtocolError(f"bad header line {line!r} in {head[:300]!r}")
        name, value = line.split(b":", 1)
        if name != name.strip():
            raise ProtocolError(f"whitespace in header name {line!r}")
        r.headers.append(
            (name.decode("latin-1"), value.strip(b" \t").decode("latin-1"))
        )
    return r


def body_framing(method: str, r: Response) -> tuple[str, int]:
    """("none" | "chunked" | "length" | "close", length) for r's body (RFC 9112 6.3)."""
    if method == "HEAD" or 100 <= r.status < 200 or r.status in (204, 304):
        return "none", 0
    te = [
        t.strip().lower() for v in r.get_all("Transfer-Encoding") for t in v.split(",")
    ]
    if te:
        return ("chunked", 0) if te[-1] == "chunked" else ("close", 0)
    cls = r.get_all("Content-Length")
    if cls:
        if len(set(cls)) != 1 or not cls[0].isdigit():
            raise ProtocolError(f"bad Content-Length {cls!r}")
        return "length", int(cls[0])
    return "close", 0


def parse_chunk_size(line: bytes) -> int:
    """A chunk-size line (without CRLF), extensions allowed."""
    size_txt = line.split(b";", 1)[0].strip()
    if not _HEX.fullmatch(size_txt):
        raise ProtocolError(f"bad chunk size line {line[:200]!r}")
    return int(size_txt, 16)


def parse_trailer(line: bytes) -> tuple[str, str]:
    name, sep, value = line.partition(b":")
    if not sep or name != name.strip() or not name:
        raise ProtocolError(f"bad trailer line {line[:200]!r}")
    return name.decode("latin-1"), value.strip(b" \t").decode("latin-1")


def is_interim(r: Response) -> bool:
    """A 1xx other than 101: another response follows it."""
    return 100 <= r.status < 200 and r.status != 101


def _final(r: Response, interim: list[Response], method: str) -> int:
    """Settle the final response r (after its interim 1xx): its framing, and the body
    length when framed by Content-Length."""
    r.interim = interim
    r.framing, length = body_framing(method, r)
    return length


# --------------------------------------------------------------------------- requests


def build_request(
    method: str = "GET",
    target: str = "/",
    headers: Iterable[tuple[str, str]] | None = None,
    body: bytes | None = None,
    version: str = "HTTP/1.1",
    host: str | None = "test.local",
) -> bytes:
    """Request bytes: Host first (unless host=None or given in headers), then headers,
    then Content-Length when a body is given without explicit framing."""
    hs = list(headers or [])
    names = {n.lower() for n, _ in hs}
    if host is not None and "host" not in names:
        hs.insert(0, ("Host", host))
    if (
        body is not None
        and "content-length" not in names
        and "transfer-encoding" not in names
    ):
        hs.append(("Content-Length", str(len(body))))
    out = f"{method} {target} {version}\r\n".encode()
    out += b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in hs)
    out += b"\r\n"
    if body is not None:
        out += body
    return out


def chunked(*parts: bytes, trailers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A chunked body: one chunk per non-empty part, the last chunk, trailers."""
    out = b""
    for p in parts:
        if p:
            out += f"{len(p):x}\r\n".encode() + p + b"\r\n"
    out += b"0\r\n"
    out += b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers)
    return out + b"\r\n"


# --------------------------------------------------------------------------- socket


class Conn:
    """One client TCP connection with its own buffer, so a test controls every byte it
    sends and sees every byte it gets."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = IO_TIMEOUT,
        source: str | None = None,
    ):
        # source: the local address to connect from (any 127.0.0.0/8 address is loopback
        # on Linux), so tests can be different clients by IP.
        self.sock = socket.create_connection(
            (host, port),
            timeout=timeout,
            source_address=(source, 0) if source else None,
        )
        self.sock.settimeout(timeout)
        self._init_buffer()

    @classmethod
    def wrap(cls, sock: socket.socket) -> Self:
        """A Conn over a socket that is already connected (a socketpair, an accepted
        connection)."""
        c = cls.__new__(cls)
        c.sock = sock
        c._init_buffer()
        return c

    def _init_buffer(self) -> None:
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.received = 0  # total bytes read from the socket

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def settimeout(self, t: float) -> None:
        self.sock.settimeout(t)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, n: int = 65536) -> bool:
        if self.eof:
            return False
        try:
            d = self.sock.recv(n)
        except ConnectionResetError:
            self.reset = True
            d = b""
        if not d:
            self.eof = True
            return False
        self.received += len(d)
        self.buf += d
        return True

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _line(self, what: str) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                return self._take(i + 2)[:-2]
            if len(self.buf) > MAX_LINE:
                raise ProtocolError(f"{what}: line too long")
            if not self._fill():
                raise EOFError(
                    f"connection closed while reading {what}; got {bytes(self.buf)!r}"
                )

    def read_head(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                return self._take(i + 4)
            if not self._fill():
                raise EOFError(
                    f"connection closed before a complete response head; got {bytes(self.buf)!r}"
                )

    def read_response(
        self,
        method: str = "GET",
        sink: Callable[[memoryview], None] | None = None,
        interim: bool = False,
    ) -> Response:
        """Read one response. 1xx (except 101) are collected in .interim and skipped,
        unless interim=True (then the 1xx itself is returned). With sink, the body is
        passed to sink piece by piece instead of being kept."""
        collected: list[Response] = []
        while True:
            r = self._read_one(method, sink)
            if is_interim(r) and not interim:
                collected.append(r)
                continue
            r.interim = collected
            return r

    def _read_one(
        self, method: str, sink: Callable[[memoryview], None] | None
    ) -> Response:
        r = parse_head(self.read_head())
        body = bytearray()

        def put(piece: memoryview | bytes) -> None:
            r.body_length += len(piece)
            if sink is not None:
                sink(memoryview(piece))
            else:
                body.extend(piece)

        r.framing, length = body_framing(method, r)
        if r.framing == "chunked":
            self._read_chunked(r, put)
        elif r.framing == "length":
            self._read_length(length, put)
            r.raw_size += length
        elif r.framing == "close":
            self._read_to_eof(put)
        r.body = bytes(body)
        return r

    def _read_length(self, n: int, put: Callable[[bytes | memoryview], None]) -> None:
        if self.buf:
            take = min(n, len(self.buf))
            put(self._take(take))
            n -= take
        if n == 0:
            return
        chunk = bytearray(1 << 20)
        view = memoryview(chunk)
        while n > 0:
            try:
                got = self.sock.recv_into(view, min(n, len(chunk)))
            except ConnectionResetError:
                self.reset = True
                got = 0
            if got == 0:
                self.eof = True
                raise EOFError(f"connection closed with {n} body bytes missing")
            self.received += got
            put(view[:got])
            n -= got

    def _read_to_eof(self, put: Callable[[bytes | memoryview], None]) -> None:
        while True:
            if self.buf:
                put(self._take(len(self.buf)))
            if not self._fill():
                return

    def _read_chunked(
        self, r: Response, put: Callable[[bytes | memoryview], None]
    ) -> None:
        while True:
            line = self._line("chunk size")
            r.raw_size += len(line) + 2
            size = parse_chunk_size(line)
            r.chunks.append(size)
            if size == 0:
                break
            self._read_length(size, put)
            r.raw_size += size + 2
            if self._line("chunk end") != b"":
                raise ProtocolError("chunk data not followed by CRLF")
        while True:
            line = self._line("trailer")
            r.raw_size += len(line) + 2
            if line == b"":
                return
            r.trailers.append(parse_trailer(line))

    def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(
                    f"closed after {len(self.buf)} of {n} bytes: {bytes(self.buf)!r}"
                )
        return self._take(n)

    def read_available(self, wait: float) -> bytes:
        """Whatever arrives within `wait` seconds (stops early on EOF)."""
        deadline = time.monotonic() + wait
        old = self.sock.gettimeout()
        try:
            while not self.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                try:
                    if not self._fill():
                        break
                except TimeoutError:
                    break
        finally:
            self.sock.settimeout(old)
        return self._take(len(self.buf))

    def read_to_close(self, timeout: float = IO_TIMEOUT) -> bytes:
        """Read until the peer closes; fails if it does not close within timeout."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except TimeoutError:
            raise AssertionError(
                f"connection not closed within {timeout}s; pending {bytes(self.buf)[:300]!r}"
            ) from None
        finally:
            self.sock.settimeout(old)
        return self._take(len(self.buf))

    def assert_closed(self, timeout: float = IO_TIMEOUT) -> None:
        """The peer closes the connection without sending anything more."""
        extra = self.read_to_close(timeout)
        assert extra == b"", f"unexpected bytes before close: {extra[:300]!r}"

    def is_open(self, wait: float = 0.2) -> bool:
        """True when the peer has neither closed nor sent anything within `wait`."""
        data = self.read_available(wait)
        if data:
            self.buf[:0] = data
        return not self.eof

    def request(self, *args: Any, method: str = "GET", **kw: Any) -> Response:
        self.send(build_request(method, *args, **kw))
        return self.read_response(method)


# --------------------------------------------------------------------------- buffered file


def _file_line(f: BinaryIO, what: str) -> bytes:
    line = f.readline(MAX_LINE + 2)
    if not line:
        raise EOFError(f"connection closed while reading {what}")
    if not line.endswith(b"\r\n"):
        raise ProtocolError(f"{what}: line not CRLF terminated: {line[:200]!r}")
    return line[:-2]


def read_head_stream(f: BinaryIO) -> Response:
    """One response head (any status, 1xx included) from a buffered binary file."""
    lines = [_file_line(f, "status line")]
    while lines[-1]:
        lines.append(_file_line(f, "header line"))
    return parse_head(b"\r\n".join(lines) + b"\r\n")


def _file_exactly(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError(
            f"connection closed with {n - len(data)} of {n} body bytes missing"
        )
    return data


def read_response_stream(f: BinaryIO, method: str = "GET") -> Response:
    """One final response from a buffered binary file (1xx other than 101 collected in
    .interim)."""
    interim: list[Response] = []
    while is_interim(r := read_head_stream(f)):
        interim.append(r)
    length = _final(r, interim, method)
    if r.framing == "chunked":
        body = bytearray()
        while True:
            size = parse_chunk_size(_file_line(f, "chunk size"))
            r.chunks.append(size)
            if size == 0:
                break
            body += _file_exactly(f, size)
            if _file_exactly(f, 2) != b"\r\n":
                raise ProtocolError("chunk data not followed by CRLF")
        while line := _file_line(f, "trailer"):
            r.trailers.append(parse_trailer(line))
        r.body = bytes(body)
    elif r.framing == "length":
        r.body = _file_exactly(f, length)
    elif r.framing == "close":
        r.body = f.read()
    r.body_length = len(r.body)
    return r


# --------------------------------------------------------------------------- asyncio


async def read_response_async(
    reader: asyncio.StreamReader, method: str = "GET"
) -> Response:
    """One final response from an asyncio stream (1xx other than 101 collected in
    .interim). EOFError before a complete head; Cut(response) inside the body."""
    interim: list[Response] = []
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            raise EOFError(
                f"closed before a response head; got {e.partial[:200]!r}"
            ) from None
        if not is_interim(r := parse_head(head)):
            break
        interim.append(r)
    length = _final(r, interim, method)
    body = bytearray()
    try:
        if r.framing == "chunked":
            while True:
                size = parse_chunk_size((await reader.readuntil(b"\r\n"))[:-2])
                r.chunks.append(size)
                if size == 0:
                    break
                body += await reader.readexactly(size)
                if await reader.readexactly(2) != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
            while (line := (await reader.readuntil(b"\r\n"))[:-2]) != b"":
                r.trailers.append(parse_trailer(line))
        elif r.framing == "length":
            body += await reader.readexactly(length)
        elif r.framing == "close":
            body += await reader.read(-1)
    except asyncio.IncompleteReadError as e:
        body += e.partial
        r.body, r.body_length = bytes(body), len(body)
        raise Cut(r) from None
    except ConnectionError:
        r.body, r.body_length = bytes(body), len(body)
        raise Cut(r) from None
    r.body, r.body_length = bytes(body), len(body)
    return r
