"""http1: llhttp glue (httptools, the same llhttp 9.4.3 as the C twin) and HTTP/1.1 wire helpers.

Twin: c-proxy/src/http1.c. llhttp validates the syntax (strict, no lenient flag is ever set);
this module adds the contract checks llhttp lets through (TE not a single final chunked, any TE
on HTTP/1.0, Host count, Content-Length digits, unsupported versions) and builds every head the
proxy writes (behaviour.md: upstream request, client response, the proxy's own errors).

Message boundaries are found here in the raw bytes (HeadScanner, ChunkScanner, Content-Length
count) so that a parser is only ever fed the bytes of one message: httptools cannot pause llhttp
at a message boundary the way the C twin returns HPE_PAUSED from on_message_complete.
"""

from __future__ import annotations

import ctypes

import httptools

MAX_U64 = (1 << 64) - 1

#: standard reason phrases of the errors the proxy sends itself (behaviour.md)
REASONS: dict[int, bytes] = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}

#: hop-by-hop headers removed in both directions (contract 3)
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: dropped from the client's headers before they go upstream (re-added in a fixed place)
REQUEST_DROP = HOP_BY_HOP | {
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-request-id",
    b"via",
}
#: dropped from the upstream's headers before they go to the client
RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}
# on a rate-limited listener the proxy's RateLimit-* replace any the upstream sent
RATELIMIT_FIELDS = frozenset({b"ratelimit-limit", b"ratelimit-remaining", b"ratelimit-reset"})
HOP_BY_HOP_RL = HOP_BY_HOP | RATELIMIT_FIELDS
RESPONSE_DROP_RL = RESPONSE_DROP | RATELIMIT_FIELDS
#: dropped from trailers: framing and hop-by-hop fields, and Host (only the head routes)
TRAILER_DROP = HOP_BY_HOP | {b"content-length", b"host"}

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n"
CRLF = b"\r\n"


class HttpError(Exception):
    """A message the proxy refuses; `code` is the status to answer with (400, 431, 502 ...)."""

    def __init__(self, code: int, reason: str, used: int = -1) -> None:
        super().__init__(reason)
        self.code = code  # status the proxy answers with
        self.reason = reason  # short const text, for logs
        self.used = used  # request bytes llhttp consumed before the error, -1: all fed


def request_error_offset(data: bytes) -> int:
    """Where llhttp stops in a request prefix that fails: llhttp_get_error_pos(), which the C
    twin logs as the bytes consumed. httptools does not expose it, so the same llhttp (the
    functions httptools' extension exports) is run once more here, through ctypes, on the
    error path only. Returns len(data) if it does not fail."""
    lib = _llhttp()
    if lib is None:
        return len(data)
    parser = ctypes.create_string_buffer(256)  # llhttp_t is 80 bytes on x86_64
    settings = ctypes.create_string_buffer(512)  # llhttp_settings_t: zeroed = no callbacks
    buf = ctypes.create_string_buffer(data, len(data))
    lib.llhttp_settings_init(settings)
    lib.llhttp_init(parser, 1, settings)  # HTTP_REQUEST
    err = lib.llhttp_execute(parser, buf, len(data))
    if err == 0:
        return len(data)
    pos = lib.llhttp_get_error_pos(parser)
    base = ctypes.addressof(buf)
    if not pos or pos < base or pos > base + len(data):
        return len(data)
    return int(pos - base)


_LIB: list[ctypes.CDLL | None] = []


def _llhttp() -> ctypes.CDLL | None:
    if not _LIB:
        try:
            from httptools.parser import parser as _ext

            lib = ctypes.CDLL(_ext.__file__)
            lib.llhttp_get_error_pos.restype = ctypes.c_void_p
            lib.llhttp_execute.restype = ctypes.c_int
            lib.llhttp_execute.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
            lib.llhttp_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
            lib.llhttp_settings_init.argtypes = [ctypes.c_void_p]
            lib.llhttp_get_error_pos.argtypes = [ctypes.c_void_p]
            _LIB.append(lib)
        except (OSError, AttributeError, ImportError):
            _LIB.append(None)
    return _LIB[0]


def error_response(
    code: int, request_id: bytes, close: bool, extra: bytes = b"", head: bool = False
) -> bytes:
    """The exact bytes of an error the proxy sends itself (behaviour.md "Errors").

    `extra` is inserted after X-Request-ID (429 rate-limit headers), each line CRLF-terminated.
    `head`: the request was a HEAD, so the body is left out (Content-Length still says what a
    GET would get: RFC 9110 9.3.2), or a kept-alive client would read it as the next response.
    """
    reason = REASONS[code]
    body = b'{"code":%d,"message":"%s"}' % (code, reason)
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        code,
        reason,
        len(body),
    ) + b"X-Request-ID: %s\r\n%s%s\r\n%s" % (
        request_id,
        extra,
        b"Connection: close\r\n" if close else b"",
        b"" if head else body,
    )


def parse_content_length(value: bytes) -> int:
    """1*DIGIT (OWS already trimmed by the caller or here), digit by digit with an overflow
    bound; leading zeros allowed. Returns -1 when malformed or above 2**64-1."""
    value = value.strip(b" \t")
    if not value:
        return -1
    n = 0
    for c in value:
        if c < 48 or c > 57:
            return -1
        n = n * 10 + (c - 48)
        if n > MAX_U64:
            return -1
    return n


def list_tokens(value: bytes) -> list[bytes]:
    """A comma-separated header list as lowercase tokens, OWS trimmed, empty elements skipped."""
    return [t for t in (p.strip(b" \t").lower() for p in value.split(b",")) if t]


def _strip_ows(value: bytes) -> bytes:
    # llhttp drops leading OWS of a value but hands trailing OWS over
    if value and (value[-1] == 32 or value[-1] == 9):
        return value.rstrip(b" \t")
    return value


# ---------------------------------------------------------------------------------------------
# Raw framing: where does a message end? (no validation here; llhttp validates)


class HeadScanner:
    """Finds the end of a message head (the first CRLF CRLF) across reads.

    Keeps only the head size so far and its last 3 bytes: the parser is fed as bytes arrive,
    so the head itself is never buffered here.
    """

    __slots__ = ("size", "tail")

    def __init__(self) -> None:
        self.size = 0  # head bytes seen so far (incomplete head)
        self.tail = b""  # last 3 bytes seen, for a terminator straddling two reads

    def scan(self, data: bytes, pos: int) -> int:
        """Index in `data` just past the head end, or -1 when the head continues after `data`
        (then `size` and `tail` account for data[pos:])."""
        tail = self.tail
        if tail:
            probe = tail + data[pos : pos + 3]
            i = probe.find(b"\r\n\r\n")
            if i >= 0:
                return pos + i + 4 - len(tail)
        end = data.find(b"\r\n\r\n", pos)
        if end >= 0:
            return end + 4
        self.size += len(data) - pos
        self.tail = (tail + data[pos:])[-3:] if len(data) - pos < 3 else data[-3:]
        return -1


class ChunkScanner:
    """Tracks chunked framing in raw bytes to find where the body ends. llhttp validates the
    same bytes; a disagreement between the two is a framing error.

    Chunk lines and trailers are skipped with bytes.find (C speed), chunk data by length.
    """

    __slots__ = (
        "code",
        "ext",
        "in_ext",
        "line_len",
        "ndigits",
        "remaining",
        "size",
        "state",
        "trailer_bytes",
    )

    SIZE = 0  # in a chunk-size line (digits, then extensions until LF)
    DATA = 1  # in chunk data, `remaining` bytes left
    DATA_END = 2  # CRLF after chunk data, `remaining` bytes left
    TRAILER = 3  # in the trailer section, until an empty line
    DONE = 4  # body complete

    # inside chunk extensions: only what llhttp 9.4.3 lets through is checked here
    EXT_OTHER = 0  # before the first ";", or in a name / token value
    EXT_NAME_START = 1  # right after ";": an empty name (";=x", ";;") is malformed
    EXT_QUOTED = 2  # in a quoted-string value
    EXT_QUOTED_ESC = 3  # after a backslash in a quoted-string
    EXT_VALUE_START = 4  # right after "=": an empty value (";a=", ";a=;b") is malformed

    def __init__(self, code: int = 400) -> None:
        self.code = code  # status for a malformed body: 400 (request) or 502 (response)
        self.state = ChunkScanner.SIZE  # one of the states above
        self.size = 0  # chunk size accumulated from the hex digits so far
        self.in_ext = False  # past the digits of the current size line
        self.ndigits = 0  # hex digits of the current size line so far
        self.ext = 0  # EXT_* position inside chunk extensions
        self.remaining = 0  # bytes left in DATA / DATA_END
        self.line_len = 0  # length of the current trailer line so far
        self.trailer_bytes = 0  # total trailer section bytes (bounded by the caller)

    def scan(self, data: bytes, pos: int, end: int) -> int:
        """Consume data[pos:end]; return the index just past the body end, or -1 if the body
        continues after `end`. Raises HttpError(self.code) for a malformed size line or chunk
        end, with `used` = the index in data where llhttp stops (its error position)."""
        while pos < end:
            st = self.state
            if st == ChunkScanner.DATA:
                take = min(self.remaining, end - pos)
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = ChunkScanner.DATA_END
                    self.remaining = 2
            elif st == ChunkScanner.SIZE:
                nl = data.find(b"\n", pos, end)
                stop = end if nl < 0 else nl
                i = pos
                if not self.in_ext:
                    size = self.size
                    while i < stop:
                        c = data[i]
                        v = _HEX[c]
                        if v < 0:
                            if not self.ndigits or (c != 59 and c != 13):  # ';' '\r'
                                # llhttp reads one SP/HTAB after the digits before failing
                                at = i + 1 if self.ndigits and (c == 32 or c == 9) else i
                                raise HttpError(self.code, "invalid chunk size", at)
                            self.in_ext = True
                            break
                        size = (size << 4) | v
                        if size > MAX_U64:
                            raise HttpError(self.code, "chunk size overflow", i + 1)
                        self.ndigits += 1
                        i += 1
                    self.size = size
                    if nl >= 0 and not self.in_ext:
                        raise HttpError(self.code, "invalid chunk size", nl)  # bare LF
                if self.in_ext and (
                    self.ext or data.find(b";", i, stop) >= 0 or data.find(b"=", i, stop) >= 0
                ):
                    self._check_ext(data, i, end if nl < 0 else nl + 1)
                if nl < 0:
                    return -1
                pos = nl + 1
                self.in_ext = False
                self.ndigits = 0
                self.ext = ChunkScanner.EXT_OTHER
                if self.size == 0:
                    self.state = ChunkScanner.TRAILER
                    self.line_len = 0
                else:
                    self.state = ChunkScanner.DATA
                    self.remaining = self.size
                    self.size = 0
            elif st == ChunkScanner.DATA_END:
                if data[pos] != (13 if self.remaining == 2 else 10):
                    raise HttpError(self.code, "chunk data not followed by CRLF", pos)
                pos += 1
                self.remaining -= 1
                if self.remaining == 0:
                    self.state = ChunkScanner.SIZE
            elif st == ChunkScanner.TRAILER:
                nl = data.find(b"\n", pos, end)
                if nl < 0:
                    self.line_len += end - pos
                    self.trailer_bytes += end - pos
                    return -1
                self.line_len += nl - pos
                self.trailer_bytes += nl + 1 - pos
                pos = nl + 1
                if self.line_len <= 1:  # "\r\n" (or a bare "\n": llhttp rejects it)
                    self.state = ChunkScanner.DONE
                    return pos
                self.line_len = 0
            else:
                return pos
        return -1

    def _check_ext(self, data: bytes, i: int, stop: int) -> None:
        """Chunk extensions in data[i:stop] (the line end included when present)."""
        st = self.ext
        while i < stop:
            c = data[i]
            if st == ChunkScanner.EXT_NAME_START or st == ChunkScanner.EXT_VALUE_START:
                # llhttp 9.4.3 accepts an empty name or value; RFC 9112 7.1.1 does not
                if c in _EXT_EMPTY:
                    # the C twin fails in llhttp's name/value-complete callback: llhttp's
                    # error position is then just past the byte that ended the empty span
                    raise HttpError(self.code, "empty chunk extension", i + 1)
                st = ChunkScanner.EXT_QUOTED if c == 34 else ChunkScanner.EXT_OTHER
            elif st == ChunkScanner.EXT_QUOTED:
                if c == 34:  # '"'
                    st = ChunkScanner.EXT_OTHER
                elif c == 92:  # '\\'
                    st = ChunkScanner.EXT_QUOTED_ESC
            elif st == ChunkScanner.EXT_QUOTED_ESC:
                st = ChunkScanner.EXT_QUOTED
            elif c == 59:  # ';'
                st = ChunkScanner.EXT_NAME_START
            elif c == 61:  # '='
                st = ChunkScanner.EXT_VALUE_START
            elif c == 34:
                st = ChunkScanner.EXT_QUOTED
            i += 1
        self.ext = st


_EXT_EMPTY = frozenset(b"=;\r\n")
_HEX = [-1] * 256
for _i, _c in enumerate(b"0123456789"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"abcdef"):
    _HEX[_c] = 10 + _i
    _HEX[_c - 32] = 10 + _i


# ---------------------------------------------------------------------------------------------
# Requests


class Request:
    """One request head as parsed, plus what the contract checks need. Filled by RequestParser."""

    __slots__ = (
        "chunked",
        "cl_count",
        "conn_tokens",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "host_count",
        "http_minor",
        "idempotency_key",
        "keep_alive",
        "method",
        "request_id",
        "target",
        "te_values",
        "upgrade",
        "via",
        "xff",
    )

    def __init__(self) -> None:
        self.method = b""  # as sent, e.g. b"GET"
        self.target = b""  # request target as sent
        self.http_minor = 1  # 0 or 1 once validated
        self.headers: list[tuple[bytes, bytes, bytes]] = []  # (lowercase name, name, value)
        self.host: bytes | None = None  # first Host value
        self.host_count = 0  # number of Host fields
        self.content_length = -1  # -1: none; else the normalized value
        self.cl_count = 0  # number of Content-Length fields
        self.te_values: list[bytes] = []  # raw Transfer-Encoding values
        self.chunked = False  # body is chunked (validated)
        self.conn_tokens: frozenset[bytes] = frozenset()  # Connection tokens, lowercase
        self.upgrade: bytes | None = None  # Upgrade value when this is an upgrade request
        self.expect_continue = False  # Expect: 100-continue
        self.xff: list[bytes] = []  # client X-Forwarded-For values in order
        self.via: list[bytes] = []  # client Via values in order
        self.request_id: bytes | None = None  # client X-Request-ID (first), if any
        self.idempotency_key = False  # an Idempotency-Key field is present (retries, 6)
        self.keep_alive = True  # client wants the connection kept after this exchange

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0


class RequestParser:
    """httptools request parser for exactly one request (a new one per request).

    feed_head() raises HttpError for anything the contract rejects; after the head, chunked
    body bytes are fed with feed_body(), whose re-framed output goes to `out`.
    """

    __slots__ = (
        "body_bytes",
        "complete",
        "dechunk",
        "fed",
        "head_done",
        "keep_alive",
        "line",
        "line_done",
        "out",
        "parser",
        "req",
        "synthetic",
        "trailers",
        "upgraded",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)  # llhttp, strict
        self._clear()

    def reusable(self) -> bool:
        """llhttp is back at a message start: the request went through it whole (no body, or
        a chunked one), it is not stopped after an upgrade, and llhttp itself would read
        another message (a "Connection: close" trailer makes it refuse one)."""
        return self.complete and self.keep_alive and not self.upgraded

    def reuse(self) -> RequestParser:
        """Ready for the next request on the same connection (llhttp resets itself after a
        complete message; creating an httptools parser costs more than this)."""
        self._clear()
        return self

    def _clear(self) -> None:
        self.keep_alive = False  # llhttp_should_keep_alive() at the message end
        self.line = b""  # the request line as received (bounded by the head limit)
        self.fed: list[bytes] = []  # head bytes fed so far (for the error position)
        self.line_done = False  # `line` is complete
        self.req = Request()  # the head being parsed
        self.head_done = False  # on_headers_complete seen
        self.complete = False  # on_message_complete seen
        self.upgraded = False  # llhttp stopped for an upgrade (Upgrade or CONNECT)
        self.synthetic = False  # feeding body_after_upgrade()'s stand-in head: no callbacks
        self.out: list[bytes] = []  # re-framed body bytes waiting to be written upstream
        self.trailers: list[bytes] = []  # trailer lines kept (framing fields dropped)
        self.body_bytes = 0  # decoded body bytes seen (for max_body_bytes)
        self.dechunk = False  # always False for requests (upstream side is HTTP/1.1)

    # llhttp callbacks --------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        if not self.synthetic:
            self.req.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.synthetic:
            return
        if self.head_done:  # a trailer
            lname = name.lower()
            if lname not in TRAILER_DROP:
                self.trailers.append(name + b": " + _strip_ows(value) + CRLF)
            return
        req = self.req
        lname = name.lower()
        if value and (value[-1] == 32 or value[-1] == 9):
            value = value.rstrip(b" \t")  # llhttp hands trailing OWS over
        req.headers.append((lname, name, value))
        if lname in _REQ_SPECIAL:
            if lname == b"host":
                req.host_count += 1
                if req.host is None:
                    req.host = value
            elif lname == b"content-length":
                req.cl_count += 1
                req.content_length = parse_content_length(value)
                if req.content_length < 0 or req.cl_count > 1:
                    raise HttpError(400, "bad content-length")
            elif lname == b"transfer-encoding":
                req.te_values.append(value)
            elif lname == b"connection":
                req.conn_tokens = req.conn_tokens | frozenset(list_tokens(value))
            elif lname == b"expect":
                if value.lower() == b"100-continue":
                    req.expect_continue = True
            elif lname == b"x-forwarded-for":
                if value:
                    req.xff.append(value)
            elif lname == b"via":
                if value:
                    req.via.append(value)
            elif lname == b"x-request-id":
                if req.request_id is None and value:
                    req.request_id = value
            elif lname == b"upgrade" and req.upgrade is None:
                req.upgrade = value
            elif lname == b"idempotency-key":
                req.idempotency_key = True

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        self.out.append(b"%x\r\n" % len(body))
        self.out.append(body)
        self.out.append(CRLF)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        if self.req.chunked:
            self.out.append(LAST_CHUNK)
            self.out.extend(self.trailers)
            self.out.append(CRLF)

    # feeding -----------------------------------------------------------------------------------

    def body_after_upgrade(self) -> None:
        """httptools tells llhttp to skip the body of any request carrying Upgrade (its
        on_headers_complete returns 1), but a chunked body of an upgrade request is still the
        request's body (RFC 9112 6.3; the C twin's llhttp reads it): parse it with a fresh
        llhttp that is handed a stand-in chunked head first, its callbacks ignored."""
        self.parser = httptools.HttpRequestParser(self)
        self.synthetic = True
        try:
            self.parser.feed_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        finally:
            self.synthetic = False
        self.upgraded = False

    def feed_head(self, data: bytes) -> None:
        """Feed head bytes (the head may span calls). Raises HttpError(400) on a parse error."""
        if not self.line_done:
            # kept to tell "GET /" (HTTP/0.9, no version token: 400) from "GET / HTTP/0.9" (505)
            chunk = data if self.line else data.lstrip(b"\r\n")
            i = chunk.find(b"\n")
            if i >= 0:
                self.line += chunk[:i]
                self.line_done = True
            else:
                self.line += chunk
        self.fed.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgraded = True
        except httptools.HttpParserCallbackError as e:
            ctx = e.__context__
            if isinstance(ctx, HttpError):
                raise ctx from None
            raise HttpError(400, "callback error") from e
        except httptools.HttpParserError as e:
            used = request_error_offset(b"".join(self.fed))
            raise HttpError(400, "parse error", used) from e

    def finish_head(self) -> Request:
        """Validate a complete head (contract 3). Raises HttpError(400/505)."""
        if not self.head_done:
            raise HttpError(400, "head framing")
        req = self.req
        req.method = self.parser.get_method()
        version = self.parser.get_http_version()
        if version == "1.1":
            req.http_minor = 1
        elif version == "1.0":
            req.http_minor = 0
        elif self.line.count(b" ") < 2:
            raise HttpError(400, "missing HTTP version")
        else:
            raise HttpError(505, "unsupported HTTP version")
        if req.method == b"CONNECT":
            raise HttpError(501, "CONNECT not supported")
        if req.te_values:
            if req.http_minor == 0:
                raise HttpError(400, "transfer-encoding on http/1.0")
            if len(req.te_values) != 1 or req.te_values[0].lower() != b"chunked":
                raise HttpError(400, "bad transfer-encoding")
            if req.cl_count:
                raise HttpError(400, "content-length with transfer-encoding")
            req.chunked = True
        if req.http_minor == 1:
            if req.host_count != 1:
                raise HttpError(400, "missing or duplicate host")
            req.keep_alive = b"close" not in req.conn_tokens
        else:
            if req.host_count > 1:
                raise HttpError(400, "duplicate host")
            req.keep_alive = b"keep-alive" in req.conn_tokens and b"close" not in req.conn_tokens
        if not (self.upgraded and req.http_minor == 1 and b"upgrade" in req.conn_tokens):
            req.upgrade = None  # an Upgrade field without an upgrade: hop-by-hop, dropped
        if req.content_length < 0 and not req.chunked:
            req.content_length = -1
        return req

    def feed_body(self, data: bytes) -> None:
        """Feed chunked body bytes (never past the end the ChunkScanner found)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            raise HttpError(400, "bad chunk") from e


_REQ_SPECIAL = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"expect",
        b"x-forwarded-for",
        b"via",
        b"x-request-id",
        b"upgrade",
        b"idempotency-key",
    }
)


def build_request_head(req: Request, client_ip: bytes, request_id: bytes) -> bytes:
    """The head sent upstream (behaviour.md "The request sent upstream")."""
    drop = REQUEST_DROP | req.conn_tokens if req.conn_tokens else REQUEST_DROP
    parts = [req.method, b" ", req.target, b" HTTP/1.1\r\n"]
    for lname, name, value in req.headers:
        if lname not in drop:
            parts += (name, b": ", value, CRLF)
    if req.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif req.content_length >= 0:
        parts.append(b"Content-Length: %d\r\n" % req.content_length)
    if req.xff:
        parts.append(b"X-Forwarded-For: " + b", ".join(req.xff) + b", " + client_ip + CRLF)
    else:
        parts.append(b"X-Forwarded-For: " + client_ip + CRLF)
    parts.append(b"X-Forwarded-Proto: http\r\n")
    if req.host is not None:
        parts.append(b"X-Forwarded-Host: " + req.host + CRLF)
    parts.append(b"X-Request-ID: " + request_id + CRLF)
    if req.via:
        parts.append(b"Via: " + b", ".join(req.via) + b", 1.1 twinproxy\r\n")
    else:
        parts.append(b"Via: 1.1 twinproxy\r\n")
    if req.upgrade is not None:
        parts.append(b"Connection: upgrade\r\nUpgrade: " + req.upgrade + CRLF)
    parts.append(CRLF)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# Responses

#: how the upstream frames a response body
BODY_NONE = 0  # HEAD, 1xx, 204, 304
BODY_LENGTH = 1  # Content-Length
BODY_CHUNKED = 2  # Transfer-Encoding: chunked
BODY_CLOSE = 3  # until the upstream closes


class Response:
    """One upstream response head as parsed. Filled by ResponseParser."""

    __slots__ = (
        "body",
        "cl_count",
        "conn_tokens",
        "content_length",
        "headers",
        "http_minor",
        "keep_alive",
        "reason",
        "status",
        "te_values",
        "upgrade",
    )

    def __init__(self) -> None:
        self.status = 0  # status code
        self.reason = b""  # reason phrase as sent ("" when absent)
        self.http_minor = 1  # 0 or 1
        self.headers: list[tuple[bytes, bytes, bytes]] = []  # (lowercase name, name, value)
        self.content_length = -1  # -1 none, else the value
        self.cl_count = 0  # Content-Length fields seen
        self.te_values: list[bytes] = []  # Transfer-Encoding values
        self.conn_tokens: frozenset[bytes] = frozenset()  # Connection tokens, lowercase
        self.upgrade: bytes | None = None  # Upgrade value (101)
        self.body = BODY_NONE  # BODY_* framing of the upstream body
        self.keep_alive = True  # the upstream connection may be reused after this response


class ResponseParser:
    """httptools response parser for one exchange (1xx heads included). Heads are fed with
    feed_head(); chunked bodies with feed_body(), output (re-chunked, or de-chunked for an
    HTTP/1.0 client when `dechunk`) goes to `out`."""

    __slots__ = (
        "body_bytes",
        "complete",
        "dechunk",
        "head_done",
        "out",
        "parser",
        "resp",
        "trailers",
        "upgraded",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)  # llhttp, strict
        self.resp = Response()  # the head being parsed
        self.head_done = False  # on_headers_complete seen for the current head
        self.complete = False  # on_message_complete seen (chunked bodies)
        self.upgraded = False  # llhttp stopped after a 101
        self.dechunk = False  # write data only (HTTP/1.0 client)
        self.out: list[bytes] = []  # body bytes for the client
        self.trailers: list[bytes] = []  # trailer lines kept
        self.body_bytes = 0  # decoded body bytes

    def reset_head(self) -> None:
        """Start the next head after a 1xx (llhttp resets itself after a bodiless message)."""
        self.resp = Response()
        self.head_done = False

    def on_status(self, status: bytes) -> None:
        self.resp.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if value and (value[-1] == 32 or value[-1] == 9):
            value = value.rstrip(b" \t")  # llhttp hands trailing OWS over
        if self.head_done:
            if lname not in TRAILER_DROP:
                self.trailers.append(name + b": " + value + CRLF)
            return
        resp = self.resp
        resp.headers.append((lname, name, value))
        if lname == b"content-length":
            resp.cl_count += 1
            resp.content_length = parse_content_length(value)
            if resp.content_length < 0 or resp.cl_count > 1:
                raise HttpError(502, "bad content-length")
        elif lname == b"transfer-encoding":
            resp.te_values.append(value)
        elif lname == b"connection":
            resp.conn_tokens = resp.conn_tokens | frozenset(list_tokens(value))
        elif lname == b"upgrade":
            resp.upgrade = value

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.dechunk:
            self.out.append(body)
        else:
            self.out.append(b"%x\r\n" % len(body))
            self.out.append(body)
            self.out.append(CRLF)

    def on_message_complete(self) -> None:
        self.complete = True
        if self.head_done and not self.dechunk and self.resp.body == BODY_CHUNKED:
            self.out.append(LAST_CHUNK)
            self.out.extend(self.trailers)
            self.out.append(CRLF)

    def feed_head(self, data: bytes) -> None:
        """Feed head bytes. Raises HttpError(502) on anything unparsable."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgraded = True
        except httptools.HttpParserCallbackError as e:
            ctx = e.__context__
            if isinstance(ctx, HttpError):
                raise ctx from None
            raise HttpError(502, "callback error") from e
        except httptools.HttpParserError as e:
            if self.head_done and self.parser.get_status_code() == 101:
                # llhttp pauses after any 101 head; httptools raises HttpParserUpgrade only
                # when the head also said "Connection: upgrade"
                self.upgraded = True
                return
            raise HttpError(502, "invalid response") from e

    def finish_head(self, head_request: bool) -> Response:
        """Validate a complete head and decide the body framing. Raises HttpError(502)."""
        if not self.head_done:
            raise HttpError(502, "head framing")
        resp = self.resp
        resp.status = self.parser.get_status_code()
        if resp.status < 100 or resp.status > 999:
            raise HttpError(502, "bad status")
        version = self.parser.get_http_version()
        if version == "1.1":
            resp.http_minor = 1
            resp.keep_alive = b"close" not in resp.conn_tokens
        elif version == "1.0":
            resp.http_minor = 0
            resp.keep_alive = b"keep-alive" in resp.conn_tokens and b"close" not in resp.conn_tokens
        else:
            raise HttpError(502, "bad version")
        if resp.te_values:
            if len(resp.te_values) != 1 or resp.te_values[0].lower() != b"chunked":
                raise HttpError(502, "bad transfer-encoding")
            if resp.cl_count:
                raise HttpError(502, "content-length with transfer-encoding")
        st = resp.status
        if head_request or st < 200 or st == 204 or st == 304:
            resp.body = BODY_NONE
        elif resp.te_values:
            resp.body = BODY_CHUNKED
        elif resp.cl_count:
            resp.body = BODY_LENGTH
        else:
            resp.body = BODY_CLOSE
            resp.keep_alive = False
        return resp

    def feed_body(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            raise HttpError(502, "bad chunk") from e


def build_response_head(
    resp: Response, framing: bytes, connection: bytes, keep_cl: bool = False, rl: bytes = b""
) -> bytes:
    """The head sent to the client (behaviour.md "The response sent to the client"):
    `framing` and `connection` are complete header lines (or b"") appended after the
    upstream's headers; with keep_cl the upstream's Content-Length stays where it was, as sent
    (no body, or a length-framed body). `rl`: the RateLimit-* lines of a rate-limited
    listener, placed after the upstream's headers (whose own RateLimit-* are dropped).
    """
    parts = [b"HTTP/1.1 %d " % resp.status, resp.reason, CRLF]
    if rl:
        drop = RESPONSE_DROP_RL if not keep_cl else HOP_BY_HOP_RL
    else:
        drop = RESPONSE_DROP if not keep_cl else HOP_BY_HOP
    if resp.conn_tokens:
        drop = drop | (resp.conn_tokens - {b"content-length"} if keep_cl else resp.conn_tokens)
    for lname, name, value in resp.headers:
        if lname not in drop:
            parts += (name, b": ", value, CRLF)
    parts += (rl, framing, connection, CRLF)
    return b"".join(parts)
