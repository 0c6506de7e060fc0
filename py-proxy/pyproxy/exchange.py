"""exchange: one request/response exchange's state and every decision about it, without I/O.
Twin: c-proxy/src/exchange.c (struct exchange; same flags, same order).

The request state lives here, the connection state in client.ClientConn (HAProxy's h1s and
h1c). A ClientConn holds one Exchange and calls init() when the next request starts, so no
per-request flag is ever cleared by hand. The decision methods read only the exchange and
their arguments (no sockets, no clock, no loop): the unit tests and the C twin's fuzzer drive
them directly.

    classify_request   a parsed head -> 0 or an error status; keep-alive, HTTP/1.0, HEAD,
                       upgrade, expect, idempotent, close-after, request body framing
    forward_interim    is a 1xx response forwarded
    response_framing   a response head -> framing towards the client + the close decision
    upstream_reusable  may the upstream connection go back to the pool
    error_closes       does an error answer close the client connection
    closes_after       does the client connection close after this exchange
    failure_phase      where a failed attempt failed: connect, send or head
    attempt_failed     a failed attempt -> retry verdict (retry.retry_decide)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyproxy.config import ConfigBalancer, ConfigKeyKind
from pyproxy.http1 import BODY_LENGTH, BODY_NONE, CRLF, HttpError
from pyproxy.retry import (
    RetryAttempt,
    RetryBudget,
    RetryPhase,
    RetryVerdict,
    retry_decide,
    retry_idempotent,
)

if TYPE_CHECKING:
    from pyproxy.config import Config
    from pyproxy.http1 import Request, Response


def _hash_key(req: Request, cfg: Config) -> bytes:
    """The hash_key bytes of a request: the path up to '?' (path), the first value of the
    named header (header:NAME), else b"" (client_ip, or the header is absent: the balancer
    hashes the client address then)."""
    if cfg.hash_key is ConfigKeyKind.PATH:
        return req.target.split(b"?", 1)[0]
    if cfg.hash_key is ConfigKeyKind.HEADER and cfg.hash_header:
        name = cfg.hash_header.lower().encode("latin-1")
        for lname, _name, value in req.headers:
            if lname == name:
                return value
    return b""


# per-request flags (Exchange.flags): the C twin's EXCHANGE_F_*, same values
X_KEEPALIVE = 0x0001  # the client may keep the connection after this request
X_HTTP10 = 0x0002  # the request is HTTP/1.0
X_REQ_DONE = 0x0004  # the whole request was read (body included)
X_RESP_STARTED = 0x0008  # a final response head was written
X_RESP_SENT = 0x0010  # response bytes reached the client
X_RESP_DONE = 0x0020  # the whole response was written
X_HEAD_METHOD = 0x0040  # HEAD: the response has no body
X_UPGRADE = 0x0080  # the request asks for an Upgrade
X_EXPECT = 0x0100  # Expect: 100-continue still to be answered
X_CLOSE_AFTER = 0x0200  # close the client connection once the response is written
X_UP_EOF = 0x0800  # the upstream closed its side
X_UP_DIRTY = 0x2000  # the upstream conn may not be pooled (also: it said close, bytes after)
X_REPLAYABLE = 0x4000  # the client's `replay` still holds the whole request from byte 0
X_LOGGED = 0x10000  # the access line of this request is written
X_IN_REQUEST = 0x20000  # a request started (bytes seen): its clocks run
X_IDEMPOTENT = 0x80000  # idempotent method or Idempotency-Key: retry-safe after sending
X_UP_READ = 0x100000  # this attempt: bytes arrived from the upstream
X_HEAD_OK = 0x200000  # this attempt: a response head parsed (health OK)
X_LIMITED = 0x400000  # the rate limiter said no: answered 429, never routed
# (C's EXCHANGE_F_UP_WFAIL has no Python need: a failed upstream write is its EOF)

#: flags that describe one attempt: cleared when the next one is attached
X_ATTEMPT = X_UP_EOF | X_UP_DIRTY | X_UP_READ | X_HEAD_OK

# request body framing (in_mode)
IN_NONE = 0  # no body
IN_LENGTH = 1  # Content-Length: in_remaining bytes
IN_CHUNKED = 2  # chunked, re-framed towards the upstream

# response body handling towards the client (out_mode)
OUT_NONE = 0  # no body
OUT_IDENTITY = 1  # bytes as received (Content-Length), or de-chunked / close-delimited
OUT_CHUNKED = 2  # chunk-framed here (chunked upstream re-chunked, or close-delimited)

_CONN_CLOSE = b"Connection: close\r\n"
_CONN_KEEPALIVE = b"Connection: keep-alive\r\n"
_TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_PROXY_ANSWERS = frozenset({429, 502, 503, 504})  # errors that may keep the client connection


class Exchange:
    """One request and its response (struct exchange). Owned by its ClientConn."""

    __slots__ = (
        "attempts",
        "bytes_in",
        "bytes_out",
        "flags",
        "in_mode",
        "in_remaining",
        "key",
        "method",
        "out_mode",
        "out_remaining",
        "path",
        "phase",
        "req_start",
        "request_id",
        "rl",
        "start_mono",
        "start_wall",
        "status",
        "tried",
    )

    def __init__(self) -> None:
        self.init()

    def init(self) -> None:
        """Re-initialise for the next request (exchange_init)."""
        self.flags = 0  # X_*
        self.in_mode = IN_NONE  # request body framing
        self.in_remaining = 0  # IN_LENGTH: body bytes still to read
        self.out_mode = OUT_NONE  # OUT_*
        self.out_remaining = -1  # Content-Length bytes left towards the client (-1: none)
        self.tried = 0  # bitmask of upstreams tried (bit i = upstream i of the set)
        self.attempts = 0  # upstream attempts made
        self.phase = RetryPhase.CONNECT  # phase of the last failed attempt
        self.key = b""  # balancer: hash key bytes (header value, path); b"": the client ip
        self.rl = b""  # RateLimit-* header lines of this request's take (b"": none yet)
        # access-log fields
        self.start_wall = 0.0  # wall clock at the request's first byte
        self.start_mono = 0.0  # loop time at the same moment
        self.req_start = 0.0  # loop time of the first byte (timeouts.total)
        self.method = b""  # b"" until the head parsed
        self.path = b""  # request target as sent
        self.request_id = b""  # the client's X-Request-ID or a generated one
        self.status = 0  # status sent (0: none)
        self.bytes_in = 0  # bytes of this request read from the client
        self.bytes_out = 0  # bytes of this request written to the client

    # decisions -------------------------------------------------------------------------------

    def classify_request(
        self, req: Request, cfg: Config, draining: bool, upgraded: bool = False
    ) -> int:
        """A valid head: 0, or the status to refuse it with (413). Sets the request flags
        and the body framing; `upgraded`: llhttp stopped after the head for an upgrade (the
        bytes after it belong to the tunnel)."""
        flags = self.flags
        self.method = req.method
        self.path = req.target
        if req.http_minor == 0:
            flags |= X_HTTP10
        if req.method == b"HEAD":
            flags |= X_HEAD_METHOD
        if req.keep_alive:
            flags |= X_KEEPALIVE
        max_body = cfg.limits.max_body_bytes
        if max_body and req.content_length > max_body:
            self.flags = flags
            return 413
        if req.upgrade is not None:
            flags |= X_UPGRADE
        if req.expect_continue and req.http_minor == 1 and req.has_body:
            flags |= X_EXPECT
        if draining:
            flags |= X_CLOSE_AFTER
        flags |= X_REPLAYABLE
        if retry_idempotent(req.method.decode("latin-1"), req.idempotency_key):
            flags |= X_IDEMPOTENT
        if cfg.balancer is ConfigBalancer.HASH:
            self.key = _hash_key(req, cfg)
        # An upgrade request's body is still its body (RFC 9112 6.3): it goes upstream
        # before any 101, as the C twin's llhttp reads it (httptools skips it: see
        # RequestParser.body_after_upgrade); only a request with no body is done here.
        if not req.has_body:
            flags |= X_REQ_DONE
        elif req.chunked:
            self.in_mode = IN_CHUNKED
        else:
            self.in_mode = IN_LENGTH
            self.in_remaining = req.content_length
        self.flags = flags
        return 0

    def response_framing(
        self, resp: Response, draining: bool, client_eof: bool
    ) -> tuple[bytes, bytes, bool]:
        """A final response head: (framing field, Connection field, keep Content-Length) for
        the head towards the client. Sets out_mode/out_remaining, X_CLOSE_AFTER and
        X_UP_DIRTY. Raises HttpError(502) for a 101 nobody asked for."""
        flags = self.flags
        if resp.status == 101:
            if not flags & X_UPGRADE:
                raise HttpError(502, "101 without an upgrade request")
            connection = b"Connection: upgrade\r\n"
            if resp.upgrade is not None:
                connection += b"Upgrade: " + resp.upgrade + CRLF
            return b"", connection, True
        http10 = flags & X_HTTP10
        body = resp.body
        framing = b""
        keep_cl = False
        if body == BODY_NONE:
            self.out_mode = OUT_NONE
            keep_cl = True
        elif body == BODY_LENGTH:
            self.out_mode = OUT_IDENTITY
            self.out_remaining = resp.content_length
            keep_cl = True
        elif http10:  # chunked or close-delimited to an HTTP/1.0 client: close-delimited
            self.out_mode = OUT_IDENTITY
            flags |= X_CLOSE_AFTER
        else:
            self.out_mode = OUT_CHUNKED
            framing = _TE_CHUNKED
        if not flags & X_KEEPALIVE or draining or not flags & X_REQ_DONE or client_eof:
            flags |= X_CLOSE_AFTER
        if flags & X_CLOSE_AFTER:
            connection = _CONN_CLOSE
        elif http10:
            connection = _CONN_KEEPALIVE
        else:
            connection = b""
        if not resp.keep_alive:
            flags |= X_UP_DIRTY
        self.flags = flags
        return framing, connection, keep_cl

    def forward_interim(self) -> bool:
        """Is an interim (1xx, not 101) response forwarded? Not to HTTP/1.0 clients."""
        return not self.flags & X_HTTP10

    def upstream_reusable(self, request_pending: bool) -> bool:
        """The response is complete: may its upstream connection be pooled? Only after a
        whole, well-framed exchange (`request_pending`: request bytes were never written)."""
        flags = self.flags
        return (
            not flags & (X_UP_DIRTY | X_UP_EOF) and bool(flags & X_REQ_DONE) and not request_pending
        )

    def error_closes(self, code: int, draining: bool, client_eof: bool) -> bool:
        """Does answering with the proxy's own error `code` close the client connection?
        Only 429/502/503/504 after a whole request on a keep-alive connection keep it."""
        flags = self.flags
        return (
            code not in _PROXY_ANSWERS
            or not flags & X_REQ_DONE
            or not flags & X_KEEPALIVE
            or bool(flags & X_CLOSE_AFTER)
            or client_eof
            or draining
        )

    def closes_after(self, draining: bool, client_eof: bool) -> bool:
        """Does the client connection close once this exchange is finished?"""
        return bool(self.flags & X_CLOSE_AFTER) or client_eof or draining

    def failure_phase(self, attached: bool, request_sent: bool) -> RetryPhase:
        """Where the current attempt failed: CONNECT (not attached: nothing was sent), SEND
        (attached, the request not all written), HEAD (all written, no response yet)."""
        if not attached:
            return RetryPhase.CONNECT
        if not request_sent or not self.flags & X_REQ_DONE:
            return RetryPhase.SEND
        return RetryPhase.HEAD

    def attempt_failed(self, phase: RetryPhase, budget: RetryBudget, retries: int) -> RetryVerdict:
        """The current attempt failed in `phase`: may the request go to another upstream?
        `retries`: config retries (at most 1 + retries attempts). The caller still needs an
        untried eligible upstream."""
        self.phase = phase
        attempt = RetryAttempt(
            phase=phase,
            idempotent=bool(self.flags & X_IDEMPOTENT),
            replayable=bool(self.flags & X_REPLAYABLE),
            response_started=bool(self.flags & (X_RESP_STARTED | X_RESP_SENT)),
            attempts=self.attempts,
            max_attempts=1 + retries,
        )
        return retry_decide(attempt, budget)
