"""client: one client connection, the I/O driver of its exchanges. Twin: c-proxy/src/client.c
(same states, same order, same flags; Python-only flags are marked).

The connection (sockets, buffers, timers, the state below) is here; the request's own state
and every decision about it (classification, framing, reuse, which errors close, retries) are
in exchange.Exchange, one per ClientConn, re-initialised when the next request starts.

State machine (one request at a time; pipelined bytes wait unparsed in `stash`):

  accept -> HEAD --head ok--> UPSTREAM --connected--> FORWARD --response done--+
             ^  |                |  (queued /            |                      |
             |  | 400/408/431... |   connecting; failed  | 101                  |
             |  v                |   connect: next peer) v                      |
             | DRAIN <- 502/503/504 (closing) <------ TUNNEL                    |
             |  | flushed, lingering read                | either side closes  |
             |  v                                        v                      |
             | CLOSED <-----------------------------------+                     |
  IDLE --first byte--+ <--- keep-alive (else DRAIN) <-----------------------------+

Python: an asyncio Protocol; its callbacks are the C twin's ev_io watchers and the transports
hold the socket buffers (the C twin's `out` and `uout`). transport.pause_reading/resume_reading
are ev_io_stop/ev_io_start: the client is not read while the upstream's write buffer is above
its high-water mark, the upstream is not read while the client's is, and bytes of a pipelined
request wait in `stash` (one read, reading stopped) until the exchange before them is over.
Before an upstream connection is attached, request bytes wait in `uout` (bounded like the C
twin's uout buffer); while the whole request fits there it stays replayable on another
upstream if a reused connection turns out to be closed.

Timers: one TimerHandle per client. deadline() is the ONLY place that derives the next deadline
from the state (HAProxy's h1_refresh_timeout); the hot path only stores activity timestamps.
The timer is re-armed lazily: when it fires early it is re-armed for the remainder, and it is
restarted only when a deadline moves earlier (libev "be smart about timeouts").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import time
from enum import IntEnum
from typing import TYPE_CHECKING, cast

from pyproxy import http1, metrics
from pyproxy.balancer import BalancerCtx, peer_eligible
from pyproxy.exchange import (
    IN_CHUNKED,
    IN_LENGTH,
    OUT_CHUNKED,
    OUT_NONE,
    X_ATTEMPT,
    X_CLOSE_AFTER,
    X_EXPECT,
    X_HEAD_METHOD,
    X_HEAD_OK,
    X_HTTP10,
    X_IN_REQUEST,
    X_LIMITED,
    X_LOGGED,
    X_REPLAYABLE,
    X_REQ_DONE,
    X_RESP_DONE,
    X_RESP_SENT,
    X_RESP_STARTED,
    X_UP_DIRTY,
    X_UP_EOF,
    X_UP_READ,
    Exchange,
)
from pyproxy.health import HealthOutcome
from pyproxy.http1 import (
    BODY_CHUNKED,
    BODY_LENGTH,
    ChunkScanner,
    HeadScanner,
    HttpError,
    Request,
    RequestParser,
    Response,
    ResponseParser,
)
from pyproxy.metrics import C_RL_ALLOWED, C_RL_LIMITED
from pyproxy.ratelimit import SECONDS_MAX, Limit, Result, key_ip
from pyproxy.reason import REASONS, error_reason, reason_from_name
from pyproxy.retry import (
    RetryBudget,
    RetryPhase,
    RetryVerdict,
    retry_phase_name,
    retry_verdict_name,
)
from pyproxy.upstream import (
    WRITE_HIGH,
    WRITE_LOW,
    AcquireResult,
    Upstream,
    UpstreamConn,
    UpstreamConnState,
    UpstreamSet,
)
from pyproxy.util import new_request_id, text

if TYPE_CHECKING:
    from pyproxy.config import Config
    from pyproxy.worker import Worker, WorkerRateLimit

LINGER_SECONDS = 2.0  # lingering close: discard client input this long at most
IN_MIN = 16384  # the C twin's client input buffer floor (bytes)
UIN_HEAD_MAX = 16384 + 1024  # the C twin's upstream input buffer: the longest response head


class ClientState(IntEnum):
    IDLE = 0  # keep-alive, no byte of the next request yet (timeouts.idle)
    HEAD = 1  # reading a request head (timeouts.header)
    UPSTREAM = 2  # head done; waiting for a slot (queue) or a connect
    FORWARD = 3  # connected: body up, response down (read/write/total)
    TUNNEL = 4  # after 101: raw bytes both ways (idle/write)
    DRAIN = 5  # final bytes being flushed, then lingering close (write/linger)
    CLOSED = 6  # transport closed


class ClientTimeout(IntEnum):
    """Which timeout deadline() picked."""

    NONE = 0  # no deadline
    IDLE = 1  # keep-alive/tunnel idle: silent close
    HEADER = 2  # head not complete: 408
    QUEUE = 3  # no upstream slot: 503
    CONNECT = 4  # connect not done: next upstream / 502
    READ = 5  # upstream silent: 504 / close
    WRITE = 6  # a peer does not drain: close
    TOTAL = 7  # exchange too long: 504 / close
    LINGER = 8  # lingering close over
    RATE_IN = 9  # min_rate window over (request body): 408 / close if too slow
    RATE_OUT = 10  # min_rate window over (client reading the response): close if too slow


# connection flags (ClientConn.flags); the request's own flags are exchange.X_*
F_EOF = 0x0400  # the client shut its sending side
F_QUEUED = 0x1000  # Python: in an upstream's wait queue (C: the waiter link is linked)
F_LINGER = 0x8000  # DRAIN: write side shut, discarding input
F_CW_PAUSED = 0x100000  # Python: client transport above its write high-water mark
F_UW_PAUSED = 0x200000  # Python: upstream transport above its write high-water mark
F_RD_STASH = 0x400000  # Python: client reading stopped, bytes wait in `stash`
F_RD_UPSTREAM = 0x800000  # Python: client reading stopped, the upstream cannot take more
F_UR_PAUSED = 0x1000000  # Python: upstream reading stopped, the client cannot take more
_OK, _FAIL, _NEUTRAL = HealthOutcome.OK, HealthOutcome.FAIL, HealthOutcome.NEUTRAL

# flags about the attached upstream connection: gone with it
_UP_IO_FLAGS = F_QUEUED | F_UW_PAUSED | F_RD_UPSTREAM | F_UR_PAUSED

# plain ints for the hot path (IntEnum attribute lookups are slow)
_ST_IDLE, _ST_HEAD, _ST_UPSTREAM, _ST_FORWARD, _ST_TUNNEL, _ST_DRAIN = (
    ClientState.IDLE,
    ClientState.HEAD,
    ClientState.UPSTREAM,
    ClientState.FORWARD,
    ClientState.TUNNEL,
    ClientState.DRAIN,
)
_TO_NONE, _TO_IDLE, _TO_HEADER, _TO_QUEUE = (
    ClientTimeout.NONE,
    ClientTimeout.IDLE,
    ClientTimeout.HEADER,
    ClientTimeout.QUEUE,
)
_TO_CONNECT, _TO_READ, _TO_WRITE, _TO_TOTAL, _TO_LINGER = (
    ClientTimeout.CONNECT,
    ClientTimeout.READ,
    ClientTimeout.WRITE,
    ClientTimeout.TOTAL,
    ClientTimeout.LINGER,
)
_TO_RATE_IN, _TO_RATE_OUT = ClientTimeout.RATE_IN, ClientTimeout.RATE_OUT
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def _rl_lines(r: Result) -> bytes:
    """The RateLimit-* lines of a take (contract 7; Reset omitted when rate_per_sec is 0)."""
    if r.reset is None:
        return b"RateLimit-Limit: %d\r\nRateLimit-Remaining: %d\r\n" % (r.limit, r.remaining)
    return b"RateLimit-Limit: %d\r\nRateLimit-Remaining: %d\r\nRateLimit-Reset: %d\r\n" % (
        r.limit,
        r.remaining,
        r.reset,
    )


def _rl_lines_at(lim: Limit, tokens: float) -> bytes:
    """The RateLimit-* lines of a bucket holding `tokens` now, nothing taken (a response to a
    request refused before its take), with the arithmetic of ratelimit.bucket_take."""
    reset: int | None = None
    if lim.rate_per_sec > 0:
        reset = min(max(math.ceil((lim.capacity - tokens) / lim.rate_per_sec), 0), SECONDS_MAX)
    return _rl_lines(Result(True, lim.capacity, math.floor(tokens), reset, None))


def _retry_budget(cfg: Config, requests: int, retries: int) -> RetryBudget:
    """The worker's retry budget under cfg."""
    b = cfg.retry_budget
    return RetryBudget(b.percent, b.min_concurrent, requests, retries)


class ClientConn(asyncio.Protocol):
    """Owned by the worker (its `conns` set) from connection_made to connection_lost. Owns
    its parsers; borrows its upstream set and attached upstream conn for one exchange."""

    def __init__(self, w: Worker) -> None:
        self.w = w  # the worker
        self.loop = w.loop
        self.transport: asyncio.Transport | None = None
        self.state = ClientState.HEAD  # see the diagram
        self.flags = 0  # F_*
        self.ip = ""  # peer address without port
        self.ip_b = b""  # the same, as bytes for X-Forwarded-For
        self.timer: asyncio.TimerHandle | None = None  # the one deadline timer
        self.timer_at = 0.0  # when `timer` fires (loop time)
        self.accepted = 0.0  # accept time (first head deadline)
        self.head_start = 0.0  # start of the head deadline
        self.idle_since = 0.0  # IDLE/TUNNEL: last activity
        self.out_last = 0.0  # last write progress to the client (or when it stalled)
        # timeouts.min_rate: a window opens when the proxy starts waiting on the client
        # (request body: attached, or the upstream drained; response: the transport paused)
        # and must move min_rate x min_rate_window bytes
        self.rin_start = 0.0  # request-body window: start
        self.rin_mark = 0  # ... x.bytes_in then
        self.rout_start = 0.0  # response window: start
        self.rout_mark = 0  # ... out_sent() then
        self.out_given = 0  # bytes handed to the client transport (connection lifetime)
        self.linger_until = 0.0  # DRAIN+LINGER: give up reading then
        self.stash: list[bytes] = []  # client bytes not parsed yet (reading stopped)
        self.cout: list[bytes] = []  # client bytes produced by the current upstream read
        self.cout_mark = -1  # index in cout of the response head (-1: none there)
        self.pumping = False  # inside upstream_on_read: client bytes go to cout first
        self.processing = False  # inside process(): it continues with the stash itself
        self.spare: RequestParser | None = None  # the last request's parser, maybe reusable
        self.x = Exchange()  # the current request's state and decisions (owned)
        self.uset: UpstreamSet | None = None  # exchange's upstream set, None between requests
        self.peer_counted = False  # an attempt runs: the upstream hears how it ends
        self.retry_counted = False  # that attempt is a retry: counted in w.retries_in_flight
        self.fresh_retry = False  # the next attempt takes a new connection, not a pooled one
        self.rl_key = b""  # client_ip rate-limit key of the peer (computed once per prefix)
        self.rl_prefix = -1  # ipv6_prefix rl_key was computed with (-1: not yet)
        self._request_reset()

    def _request_reset(self) -> None:
        """Forget the request's I/O state: parsers, buffers, upstream (request_reset in C).
        The request's own state is the exchange's: x.init() re-initialises it."""
        self._route_end()
        self.x.init()
        self.head_scan = HeadScanner()  # end of the request head
        self.parser: RequestParser | None = None  # request parser
        self.req: Request | None = None  # the validated head
        self.up: Upstream | None = None  # upstream of the current attempt
        self.conn: UpstreamConn | None = None  # attached conn (CONNECTING/BUSY)
        self.need_route = False  # head done, route() at the end of this read
        self.up_start = 0.0  # UPSTREAM: queue or connect start
        self.up_last = 0.0  # last byte read from or written to the upstream
        self.uout_last = 0.0  # last write progress to the upstream (or when it stalled)
        self.uout: list[bytes] = []  # bytes for the upstream not written yet (no conn)
        self.uout_bytes = 0  # their length
        self.replay: list[bytes] = []  # the request as sent so far (while X_REPLAYABLE)
        self.replay_bytes = 0  # its length
        self.in_scan: ChunkScanner | None = None  # IN_CHUNKED: end of the body
        self.rparser: ResponseParser | None = None  # response parser
        self.resp: Response | None = None  # final response head
        self.resp_scan = HeadScanner()  # end of the current response head
        self.out_scan: ChunkScanner | None = None  # chunked upstream body: its end

    # ------------------------------------------------------------------ asyncio.Protocol (client)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport = t
        t.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        peer = t.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else ""
        self.ip_b = self.ip.encode()
        # a fresh connection must send its head within timeouts.header
        self.accepted = self.head_start = self.loop.time()
        self.w.conn_add(self)
        self.w.counters.v[self.w.crow + metrics.C_CONN_CLIENT] += 1
        # accepted before a drain began (its protocol is made a little later): answered
        # like any new connection, with Connection: close
        self.refresh_timer()

    def data_received(self, data: bytes) -> None:
        w = self.w
        w.counters.v[w.crow + metrics.C_RX_CLIENT] += len(data)
        st = self.state
        if st == ClientState.TUNNEL:
            self.x.bytes_in += len(data)
            self.idle_since = self.loop.time()
            if self.conn is not None:
                self.conn.write(data)
            return
        if st == ClientState.DRAIN or st == ClientState.CLOSED:
            return  # lingering: discard
        if self.flags & F_RD_STASH:
            self.stash.append(data)  # arrived before pause_reading took effect
            return
        self.process(data)
        self._refresh_if_open()

    def eof_received(self) -> bool:
        self.flags |= F_EOF
        st = self.state
        if st == ClientState.TUNNEL:
            # the client is done: flush what it sent to the upstream, then close both
            conn = self.conn
            self.conn = None
            if conn is not None:
                conn.up.close(conn, graceful=True)
            self.close()
            return True
        if st in (ClientState.UPSTREAM, ClientState.FORWARD) and self.x.flags & X_REQ_DONE:
            return True  # answer this request, then close
        # DRAIN before the linger: let the final bytes go out; otherwise the transport
        # closes and connection_lost ends the client
        return st == ClientState.DRAIN and not self.flags & F_LINGER

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()
        self.w.conn_remove(self)

    def pause_writing(self) -> None:
        self.flags |= F_CW_PAUSED
        self.out_last = self.loop.time()
        self.rate_out_open(self.out_last)
        if self.conn is not None and not self.flags & F_UR_PAUSED:
            self.flags |= F_UR_PAUSED
            self.conn.pause_reading()
        self.refresh_timer()

    def resume_writing(self) -> None:
        self.flags &= ~F_CW_PAUSED
        self.out_last = self.loop.time()
        if self.flags & F_UR_PAUSED:
            self.flags &= ~F_UR_PAUSED
            if self.conn is not None:
                self.conn.resume_reading()
        if self.state == ClientState.DRAIN:
            self.refresh_timer()

    # ------------------------------------------------------------------ request

    def process(self, data: bytes) -> None:
        """Consume client bytes: the head, then body bytes of the current request; bytes of
        the next request wait in `stash` until this exchange is over. A request the proxy
        answers at once (an error that keeps the connection) ends its exchange inside this
        call: the loop then goes on with the stashed bytes instead of recursing (the C
        twin's continuation), so any number of pipelined answers costs no stack."""
        self.processing = True
        resumed = False
        try:
            while True:
                self._process(data)
                if self.need_route and self.state == ClientState.UPSTREAM:
                    # routed once the body bytes of this read are checked: a malformed body
                    # that arrived with its head never reaches an upstream
                    self.need_route = False
                    if self.x.flags & X_LIMITED:
                        self.client_error(429, "rate_limited")  # never routed: no upstream
                    else:
                        self.route()
                if not self.stash or self._must_wait() or self.state >= ClientState.DRAIN:
                    break
                data = self.stash[0] if len(self.stash) == 1 else b"".join(self.stash)
                self.stash = []
                self.flags &= ~F_RD_STASH
                resumed = True
        finally:
            self.processing = False
        if resumed and not self.flags & F_RD_STASH:
            self._resume_reading()

    def _process(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            st = self.state
            if st == ClientState.IDLE or st == ClientState.HEAD:
                pos = self.pump_head(data, pos)
            elif st == ClientState.DRAIN or st == ClientState.CLOSED:
                break
            elif st == ClientState.TUNNEL:
                self.x.bytes_in += n - pos
                if self.conn is not None:
                    self.conn.write(data[pos:] if pos else data)
                break
            elif self._must_wait():
                # the next request, or body bytes with no room yet: kept, reading stops
                self._stash(data[pos:] if pos else data)
                break
            else:
                pos = self.pump_body(data, pos)
            if pos < 0:
                break

    def _must_wait(self) -> bool:
        """The remaining bytes cannot be consumed now."""
        st = self.state
        if st == ClientState.IDLE or st == ClientState.HEAD:
            return False
        if (st != ClientState.UPSTREAM and st != ClientState.FORWARD) or self.x.flags & X_REQ_DONE:
            return True
        conn = self.conn
        if conn is not None and conn.state == UpstreamConnState.BUSY and not self.uout:
            return False
        return self._uout_room() <= 0

    def _stash(self, rest: bytes) -> None:
        self.stash.append(rest)
        self.flags |= F_RD_STASH
        t = self.transport
        if t is not None and not t.is_closing():
            t.pause_reading()

    def _request_begin(self) -> None:
        """The first byte of a request is in: start its clocks (once)."""
        if self.state == ClientState.IDLE:
            self.head_start = self.loop.time()
        self.state = ClientState.HEAD
        if self.x.flags & X_IN_REQUEST:
            return
        self.x.flags |= X_IN_REQUEST
        self.x.req_start = self.x.start_mono = self.loop.time()
        self.x.start_wall = time.time()
        spare = self.spare
        if spare is not None and spare.reusable():
            self.parser = spare.reuse()
        else:
            self.parser = RequestParser()
        self.spare = None

    def pump_head(self, data: bytes, pos: int) -> int:
        """Parse request-head bytes from data[pos:]. Returns the index after the head, or -1
        when all of data was used (head incomplete) or the request failed."""
        self._request_begin()
        parser = self.parser
        assert parser is not None
        limit = self.cfg.limits.max_header_bytes
        n = len(data)
        while True:
            scan = self.head_scan
            end = scan.scan(data, pos)
            seg_end = n if end < 0 else end
            try:
                parser.feed_head(data if pos == 0 and seg_end == n else data[pos:seg_end])
            except HttpError as e:
                # as the C twin: the bytes llhttp consumed before the error
                self.x.bytes_in = e.used if e.used >= 0 else self.x.bytes_in + seg_end - pos
                self._take_head_fields(parser)
                self.client_error(e.code)
                return -1
            self.x.bytes_in += seg_end - pos
            size = scan.size if end < 0 else scan.size + (end - pos)
            if end >= 0 and parser.head_done:
                break
            if size > limit:
                self.client_error(431)
                return -1
            if end < 0:
                return -1
            # blank lines before a request line: llhttp skipped them, keep scanning
            scan.size = size
            scan.tail = b""
            pos = end
            if pos >= n:
                return -1
        # a complete head: its own checks first, then its size (the C twin's on_head runs
        # inside llhttp before pump_head compares the head's bytes with the limit)
        try:
            req = parser.finish_head()
        except HttpError as e:
            self._take_head_fields(parser)
            self.client_error(e.code)
            return -1
        if not self.on_request_head(req):
            return -1
        if size > limit:
            self.client_error(431)
            return -1
        return end

    def _take_head_fields(self, parser: RequestParser) -> None:
        """Log fields of a head that completed but failed a check (set before the check in C)."""
        if parser.head_done:
            req = parser.req
            self.x.method = parser.parser.get_method()
            self.x.path = req.target
            if req.request_id:
                self.x.request_id = req.request_id

    def on_request_head(self, req: Request) -> bool:
        """A valid head: build the upstream head; route() follows at the end of this read
        (client_on_request_head). False when the request was refused (413)."""
        x = self.x
        parser = self.parser
        assert parser is not None
        self.req = req
        x.request_id = req.request_id if req.request_id else new_request_id()
        code = x.classify_request(req, self.cfg, self.w.draining, parser.upgraded)
        if code:
            self.client_error(code)
            return False
        if x.in_mode == IN_CHUNKED:
            self.in_scan = ChunkScanner()
            if parser.upgraded:
                parser.body_after_upgrade()
        rl = self.w.rl
        if rl is None or not self.ratelimit_take(rl, req):
            self._up_send(http1.build_request_head(req, self.ip_b, x.request_id))
        # a limited request is answered where it would be routed (429)
        self.state = ClientState.UPSTREAM
        self.need_route = True
        return True

    # ------------------------------------------------------------------ rate limiting

    def _rl_key(self, rl: WorkerRateLimit, req: Request | None) -> bytes:
        """The request's bucket key (contract 7): the value of header:NAME when present and
        not empty, else the peer's client_ip key (b"" if the peer has no IP address: the
        overflow bucket)."""
        name = rl.header
        if name is not None and req is not None:
            for lname, _name, value in req.headers:
                if lname == name:
                    if value:
                        return value
                    break
        if self.rl_prefix != rl.ipv6_prefix:
            self.rl_key = key_ip(self.ip, rl.ipv6_prefix) or b""
            self.rl_prefix = rl.ipv6_prefix
        return self.rl_key

    def ratelimit_take(self, rl: WorkerRateLimit, req: Request) -> bool:
        """One take for a valid head, before routing (client_ratelimit_take): its RateLimit-*
        lines go on the response, whoever answers it. True when limited (answer 429)."""
        r = rl.table.take(self._rl_key(rl, req), None, time.time())
        w = self.w
        x = self.x
        if r.allowed:
            w.counters.v[w.crow + C_RL_ALLOWED] += 1
            x.rl = _rl_lines(r)
            return False
        w.counters.v[w.crow + C_RL_LIMITED] += 1
        x.flags |= X_LIMITED
        if r.retry_after is not None:
            x.rl = b"Retry-After: %d\r\n" % r.retry_after + _rl_lines(r)
        else:
            x.rl = _rl_lines(r)
        return True

    def _rl_peek(self, rl: WorkerRateLimit) -> bytes:
        """RateLimit-* lines for a response to a request refused before its take (400, 408,
        413, 431 ...): the client's bucket as it stands; nothing is taken."""
        key = self._rl_key(rl, self.req)
        t = rl.table
        now = time.time()
        got = t.lookup(key, now)  # a pinned override: its own limit
        if got is not None:
            return _rl_lines_at(got[0], got[1])
        return _rl_lines_at(t.default, t.peek(key, None, now))

    def pump_body(self, data: bytes, pos: int) -> int:
        """Request body bytes from data[pos:] to the upstream. Returns the index after the
        body, or -1 when all of data was used or the request failed."""
        n = len(data)
        conn = self.conn
        attached = conn is not None and conn.state == UpstreamConnState.BUSY and not self.uout
        room = n - pos if attached else self._uout_room()
        if room <= 0:
            return pos
        if self.x.in_mode == IN_LENGTH:
            take = min(self.x.in_remaining, n - pos, room)
            self._up_send(data if pos == 0 and take == n else data[pos : pos + take])
            self.x.in_remaining -= take
            self.x.bytes_in += take
            pos += take
            if self.x.in_remaining == 0:
                self._request_done()
                return pos
            return pos if pos < n else -1
        scan = self.in_scan
        parser = self.parser
        assert scan is not None and parser is not None
        stop = min(n, pos + room)
        try:
            end = scan.scan(data, pos, stop)
            seg_end = stop if end < 0 else end
            parser.feed_body(data if pos == 0 and seg_end == n else data[pos:seg_end])
            if scan.trailer_bytes > self.cfg.limits.max_header_bytes:
                raise HttpError(400, "trailers too large")
            if end >= 0 and not parser.complete:
                raise HttpError(400, "chunk framing")
            max_body = self.cfg.limits.max_body_bytes
            if max_body and parser.body_bytes > max_body:
                raise HttpError(413, "body over max_body_bytes")
        except HttpError as e:
            # as the C twin: the bytes consumed before llhttp's error position
            self.x.bytes_in += (e.used if e.used >= 0 else stop) - pos
            self.client_error(e.code)
            return -1
        self.x.bytes_in += seg_end - pos
        if parser.out:
            self._up_send(b"".join(parser.out))
            parser.out.clear()
        if end >= 0:
            self._request_done()
            return end
        return seg_end if seg_end < n else -1

    def _uout_room(self) -> int:
        """Bytes the request may still buffer before a connection is attached: the C twin's
        uout capacity (2 * input buffer + 2048)."""
        in_cap = max(self.cfg.limits.max_header_bytes, IN_MIN) + 1024
        return 2 * in_cap + 2048 - self.uout_bytes

    def _up_send(self, data: bytes) -> None:
        """Bytes of the request for the upstream: written if a conn is attached, else kept."""
        x = self.x
        if x.flags & X_REPLAYABLE:
            self.replay.append(data)
            self.replay_bytes += len(data)
            in_cap = max(self.cfg.limits.max_header_bytes, IN_MIN) + 1024
            if self.replay_bytes > 2 * in_cap + 2048:
                x.flags &= ~X_REPLAYABLE  # outgrew the upstream-side buffer (contract 6)
                self.replay = []
                self.replay_bytes = 0
        conn = self.conn
        if conn is not None and conn.state == UpstreamConnState.BUSY and not self.uout:
            conn.write(data)
            self.up_last = self.loop.time()
        else:
            self.uout.append(data)
            self.uout_bytes += len(data)

    def _request_done(self) -> None:
        self.x.flags |= X_REQ_DONE
        if self.x.flags & X_RESP_DONE:
            self.finish_request()

    # ------------------------------------------------------------------ routing

    @property
    def cfg(self) -> Config:
        """The config of this request's upstream set, else the worker's current one."""
        uset = self.uset if self.uset is not None else self.w.uset
        return uset.cfg

    def route(self) -> None:
        """Start the next attempt on an eligible upstream this request has not tried
        (client_route): 503 when none is eligible at the first attempt, else 502."""
        w = self.w
        if self.uset is None:
            self.uset = w.uset
            w.requests_in_flight += 1
        uset = self.uset
        x = self.x
        now = self.loop.time()
        idx = uset.balancer.pick(BalancerCtx(x.tried, now, self.ip, x.key))
        if idx < 0:
            # nobody eligible: all down or drained (503), or every one tried (502)
            self.client_error(
                502 if x.attempts else 503, "upstreams_exhausted" if x.attempts else "no_upstream"
            )
            return
        x.tried |= 1 << idx
        up = uset.ups[idx]
        self.up = up
        x.attempts += 1
        up.requests += 1
        mv, ub = w.counters.v, w.crow + metrics.UP0 + up.label * metrics.UCELLS
        mv[ub + metrics.U_REQUESTS] += 1
        mv[ub + metrics.U_ACTIVE] += 1
        uset.balancer.attempt_begin(idx, now)  # active++, health may claim its probe
        self.peer_counted = True
        if x.attempts > 1:
            w.retries_in_flight += 1
            self.retry_counted = True
        self.up_start = self.loop.time()
        self.state = ClientState.UPSTREAM
        result, conn = up.acquire(self, self.fresh_retry)
        self.fresh_retry = False
        if result == AcquireResult.READY:
            assert conn is not None
            self.attach(conn)
        elif result == AcquireResult.CONNECTING:
            self.conn = conn
        else:
            self.flags |= F_QUEUED
        # the timer is refreshed by whoever called in from the loop (data_received,
        # upstream_on_*, on_timer): once per event, not once per step

    def _attempt_end(self, outcome: HealthOutcome, reason: str | None) -> None:
        """The current attempt ends with `outcome` (reason: a FAIL's constant): the balancer
        and health hear it once (active--, passive accounting), the retry budget counts one
        retry less if it was one. No-op when no attempt is running."""
        if self.peer_counted:
            self.peer_counted = False
            up = self.up
            uset = self.uset
            if up is not None and uset is not None:
                w = self.w
                ub = w.crow + metrics.UP0 + up.label * metrics.UCELLS
                w.counters.v[ub + metrics.U_ACTIVE] -= 1
                if outcome == _FAIL:
                    up.fails += 1
                    w.counters.v[ub + metrics.U_FAILS] += 1
                uset.balancer.attempt_end(up.index, outcome, reason, self.loop.time())
        if self.retry_counted:
            self.retry_counted = False
            self.w.retries_in_flight -= 1

    def _peer_done(self) -> None:
        """The attempt ends without a failure: OK once a response head parsed, else neutral
        (the client went away, the proxy answered)."""
        if self.peer_counted or self.retry_counted:
            self._attempt_end(_OK if self.x.flags & X_HEAD_OK else _NEUTRAL, None)

    def _route_end(self) -> None:
        """The request leaves its upstream set: its attempt ends, the worker counts one
        request in flight less."""
        self._peer_done()
        if self.uset is not None:
            self.uset = None
            self.w.requests_in_flight -= 1

    def _eligible_left(self) -> bool:
        """Is there an upstream this request has not tried that may take an attempt?"""
        uset = self.uset
        assert uset is not None
        peers = uset.balancer.peers
        ctx = BalancerCtx(self.x.tried, self.loop.time(), self.ip)
        return any(peer_eligible(peers, i, ctx) for i in range(len(peers)))

    def _request_sent(self) -> bool:
        """Every byte of the request read so far was handed to the upstream's socket."""
        if self.uout:
            return False
        conn = self.conn
        t = conn.transport if conn is not None else None
        return t is None or t.get_write_buffer_size() == 0

    def attempt_failed(
        self, phase: RetryPhase, reason: str, outcome: HealthOutcome, status: int
    ) -> None:
        """The attempt on self.up failed in `phase` (contract 6): end it with `outcome`, close
        its connection, then retry on another upstream when the exchange says so and one is
        eligible (event retry), else answer `status` (502, or 504 after a read timeout; event
        retry_skipped when the budget said no)."""
        up = self.up
        self._attempt_end(outcome, reason)
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.up.close(conn)
        uset = self.uset
        assert uset is not None
        x = self.x
        w = self.w
        budget = _retry_budget(uset.cfg, w.requests_in_flight, w.retries_in_flight)
        v = x.attempt_failed(phase, budget, uset.cfg.retries)
        name = up.name if up is not None else ""
        label = up.label if up is not None else 0
        if v == RetryVerdict.GO and self._eligible_left():
            metrics.retry(w.counters.v, w.crow, label, int(phase))
            w.log.event(
                "warn",
                "retry",
                upstream=name,
                reason=reason,
                phase=retry_phase_name(phase),
                attempt=x.attempts + 1,
            )
            if phase != RetryPhase.CONNECT:
                # the request goes again from its first byte (all of it is in `replay`)
                self.uout = list(self.replay)
                self.uout_bytes = self.replay_bytes
            self.state = ClientState.UPSTREAM
            self.route()
            return
        if v == RetryVerdict.NO_BUDGET:
            w.counters.v[w.crow + metrics.C_RETRIES_SKIPPED] += 1
            w.log.event(
                "warn",
                "retry_skipped",
                upstream=name,
                reason=retry_verdict_name(v),
                phase=retry_phase_name(phase),
            )
        self.client_error(status, reason)

    def _connect_failed(self, reason: str) -> None:
        """Connect refused, failed or timed out: nothing was sent."""
        self.attempt_failed(RetryPhase.CONNECT, reason, _FAIL, 502)

    def attach(self, conn: UpstreamConn) -> None:
        """A BUSY connection for this exchange: send what waits in uout (client_attach)."""
        now = self.loop.time()
        self.conn = conn
        self.state = ClientState.FORWARD
        x = self.x
        x.flags &= ~X_ATTEMPT
        self.flags &= ~_UP_IO_FLAGS  # a new connection: nothing paused on its account
        self.rparser = ResponseParser()
        self.rparser.dechunk = bool(x.flags & X_HTTP10)
        self.resp = None
        if self.resp_scan.size or self.resp_scan.tail:  # a retry after a partial head
            self.resp_scan = HeadScanner()
        self.up_last = self.uout_last = now
        self.rate_in_open(now)
        if self.uout:
            data = b"".join(self.uout)
            self.uout = []
            self.uout_bytes = 0
            conn.write(data)
        if x.flags & X_EXPECT:
            self.client_write(http1.CONTINUE_100)
            x.flags &= ~X_EXPECT
        if self.flags & F_CW_PAUSED and not self.flags & F_UR_PAUSED:
            self.flags |= F_UR_PAUSED
            conn.pause_reading()
        self._drain_stash()

    # upstream.UpstreamOwner ----------------------------------------------------------------------

    def upstream_on_connected(self, conn: UpstreamConn) -> None:
        if conn is self.conn and self.state == ClientState.UPSTREAM:
            self.attach(conn)
            self._refresh_if_open()

    def upstream_on_failed(self, conn: UpstreamConn, reason: str) -> None:
        if conn is self.conn and self.state == ClientState.UPSTREAM:
            self._connect_failed(reason)
            self._refresh_if_open()

    def upstream_on_slot(self, conn: UpstreamConn) -> None:
        """A queued slot was granted (absorb_granted)."""
        if self.state != ClientState.UPSTREAM or self.up is None or conn.up is not self.up:
            conn.up.close(conn)
            return
        self._queue_done()
        self.up_start = self.loop.time()
        if conn.state == UpstreamConnState.BUSY:
            self.attach(conn)
        elif conn.state == UpstreamConnState.CONNECTING:
            self.conn = conn
        else:
            self._connect_failed("connect_error")
        self._refresh_if_open()

    def upstream_on_read(self, data: bytes) -> None:
        now = self.loop.time()
        self.up_last = now
        st = self.state
        if st == ClientState.TUNNEL:
            self.idle_since = now
            self.client_write(data)
            return
        x = self.x
        if st != ClientState.FORWARD or x.flags & X_RESP_DONE:
            return
        x.flags |= X_UP_READ
        # the bytes this read produces are written once, at the end (as the C twin flushes
        # `out` after a pump): an error before then can still replace the response head
        self.pumping = True
        try:
            self.pump_response(data)
        except HttpError as e:
            x.flags |= X_UP_DIRTY
            if not x.flags & X_HEAD_OK:  # an invalid head fails the upstream; a bad body not
                self._attempt_end(_FAIL, "invalid_response")
            self.client_error(e.code)
        finally:
            self.pumping = False
            self._flush_out()
        self._refresh_if_open()

    def upstream_on_eof(self) -> None:
        """The upstream closed (or failed): finish or fail the exchange (upstream_eof)."""
        self._upstream_eof()
        self._refresh_if_open()

    def _upstream_eof(self) -> None:
        conn = self.conn
        self.x.flags |= X_UP_EOF
        st = self.state
        if conn is None:
            return
        if st == ClientState.TUNNEL:
            self.conn = None
            self.close()  # after the bytes already queued for the client
            return
        if st != ClientState.FORWARD or self.x.flags & X_RESP_DONE:
            return
        self.conn = None
        x = self.x
        why = conn.lost_reason or "upstream_closed"
        if not x.flags & X_UP_READ:
            # not one response byte: a send- or head-phase failure (contract 6). A reused
            # connection closing here is the keep-alive race (it passed the pool check before
            # the upstream's close arrived), not a sign of a sick upstream.
            outcome = _NEUTRAL if conn.exchanges > 0 else _FAIL
            self.fresh_retry = conn.exchanges > 0  # the retry must not lose the same race
            phase = x.failure_phase(True, not self.uout)
            self.attempt_failed(phase, why, outcome, 502)
            return
        x.flags |= X_UP_DIRTY
        if self.resp is not None and self.resp.body == http1.BODY_CLOSE:
            # close-delimited body: the close is its end
            if x.out_mode == OUT_CHUNKED:
                self.client_write(b"0\r\n\r\n")
            self.response_done()
            return
        if not x.flags & X_HEAD_OK:
            self._attempt_end(_FAIL, why)  # closed in the middle of the head
        self.client_error(502, "upstream_closed")

    def upstream_on_write_paused(self) -> None:
        self.flags |= F_UW_PAUSED | F_RD_UPSTREAM
        self.uout_last = self.loop.time()
        t = self.transport
        if t is not None and not t.is_closing():
            t.pause_reading()
        self.refresh_timer()

    def upstream_on_write_resumed(self) -> None:
        self.flags &= ~(F_UW_PAUSED | F_RD_UPSTREAM)
        self.up_last = self.uout_last = self.loop.time()
        self.rate_in_open(self.up_last)  # the body is awaited from the client again
        self._resume_reading()

    # ------------------------------------------------------------------ response

    def pump_response(self, data: bytes) -> None:
        """Upstream bytes to the client: heads through the parser, bodies re-framed."""
        rparser = self.rparser
        assert rparser is not None
        pos = 0
        n = len(data)
        while pos < n:
            if self.resp is None:
                scan = self.resp_scan
                end = scan.scan(data, pos)
                seg_end = n if end < 0 else end
                rparser.feed_head(data if pos == 0 and seg_end == n else data[pos:seg_end])
                size = scan.size if end < 0 else scan.size + (end - pos)
                if size > UIN_HEAD_MAX:
                    raise HttpError(502, "response head too large")
                if end < 0:
                    return
                pos = end
                self.resp_scan = HeadScanner()
                resp = rparser.finish_head(bool(self.x.flags & X_HEAD_METHOD))
                if resp.status < 200 and resp.status != 101:
                    # 1xx: forwarded to HTTP/1.1 clients, dropped for HTTP/1.0
                    if self.x.forward_interim():
                        self.client_write(http1.build_response_head(resp, b"", b"", True))
                    rparser.reset_head()
                    continue
                self.on_response_head(resp)
                if self.state != ClientState.FORWARD:
                    return
                if resp.status == 101:
                    self.x.flags |= X_RESP_DONE
                    self.enter_tunnel(data[pos:])
                    return
                if self.x.out_mode == OUT_NONE or self.x.out_remaining == 0:
                    if pos < n:
                        self.x.flags |= X_UP_DIRTY  # bytes after a complete response
                    self.response_done()
                    return
                continue
            resp = self.resp
            if resp.body == BODY_LENGTH:
                take = min(self.x.out_remaining, n - pos)
                self.client_write(data if pos == 0 and take == n else data[pos : pos + take])
                self.x.out_remaining -= take
                pos += take
                if self.x.out_remaining == 0:
                    if pos < n:
                        self.x.flags |= X_UP_DIRTY
                    self.response_done()
                return
            if resp.body == BODY_CHUNKED:
                cscan = self.out_scan
                assert cscan is not None
                end = cscan.scan(data, pos, n)
                seg_end = n if end < 0 else end
                rparser.feed_body(data if pos == 0 and seg_end == n else data[pos:seg_end])
                if cscan.trailer_bytes > UIN_HEAD_MAX:
                    raise HttpError(502, "trailers too large")
                if rparser.out:
                    self.client_write(b"".join(rparser.out))
                    rparser.out.clear()
                if end < 0:
                    return
                if not rparser.complete:
                    raise HttpError(502, "chunk framing")
                if end < n:
                    self.x.flags |= X_UP_DIRTY
                self.response_done()
                return
            # close-delimited
            chunk = data if pos == 0 else data[pos:]
            if self.x.out_mode == OUT_CHUNKED:
                self.client_write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                self.client_write(chunk)
            return

    def on_response_head(self, resp: Response) -> None:
        """A final response head: framing towards the client, then the head
        (client_on_response_head)."""
        x = self.x
        framing, connection, keep_cl = x.response_framing(
            resp, self.w.draining, bool(self.flags & F_EOF)
        )
        x.flags |= X_HEAD_OK  # the upstream answered: a health success
        if resp.body == BODY_CHUNKED:
            self.out_scan = ChunkScanner(502)
        self.resp = resp
        self._response_head_out(
            resp, http1.build_response_head(resp, framing, connection, keep_cl, x.rl)
        )

    def _response_head_out(self, resp: Response, head: bytes) -> None:
        x = self.x
        x.flags |= X_RESP_STARTED
        if self.pumping:
            self.cout_mark = len(self.cout)
        else:
            x.flags |= X_RESP_SENT
        x.flags &= ~X_REPLAYABLE  # the upstream answered: no replay
        self.replay = []
        x.status = resp.status
        self.client_write(head)

    def enter_tunnel(self, rest: bytes) -> None:
        self.state = ClientState.TUNNEL
        self.idle_since = self.loop.time()
        self.x.flags |= X_CLOSE_AFTER | X_UP_DIRTY
        if rest:
            self.client_write(rest)
        # client bytes after the upgrade request are already tunnel data
        if self.stash and self.conn is not None:
            data = b"".join(self.stash)
            self.stash = []
            self.x.bytes_in += len(data)
            self.conn.write(data)
        self.flags &= ~F_RD_STASH
        self._resume_reading()

    def response_done(self) -> None:
        """The upstream answered in full: release or close its connection."""
        x = self.x
        x.flags |= X_RESP_DONE
        self._peer_done()
        conn = self.conn
        self.conn = None
        if conn is not None and self.up is not None:
            reusable = x.upstream_reusable(bool(self.uout))
            if self.flags & F_UR_PAUSED:
                self.flags &= ~F_UR_PAUSED
                conn.resume_reading()
            self.up.release(conn, reusable)
        if not x.flags & X_REQ_DONE:
            x.flags |= X_CLOSE_AFTER
        self.finish_request()

    # ------------------------------------------------------------------ end of a request

    def finish_request(self) -> None:
        """The response is out: log, then keep-alive or close."""
        self.log_request()
        close = bool(self.x.flags & X_CLOSE_AFTER) or bool(self.flags & F_EOF) or self.w.draining
        self._drop_upstream()
        self.flags &= ~_UP_IO_FLAGS  # the upstream connection is gone
        spare = self.parser
        self._request_reset()
        self.spare = spare
        if close:
            self.x.flags |= X_CLOSE_AFTER | X_LOGGED
            self.begin_drain()
            return
        self.idle_since = self.loop.time()
        self.state = ClientState.IDLE
        self._drain_stash()

    def _drain_stash(self) -> None:
        """Parse bytes held back while the previous step was in flight. Inside process()
        (an exchange answered at once) its loop does it."""
        if self.processing:
            return
        if self.stash and not self._must_wait():
            data = self.stash[0] if len(self.stash) == 1 else b"".join(self.stash)
            self.stash = []
            self.flags &= ~F_RD_STASH
            self.process(data)
        if not self.flags & F_RD_STASH:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self.flags & (F_RD_STASH | F_RD_UPSTREAM) or self.state in (
            ClientState.DRAIN,
            ClientState.CLOSED,
        ):
            return
        t = self.transport
        if t is not None and not t.is_closing():
            t.resume_reading()

    def _drop_upstream(self) -> None:
        self._peer_done()
        if self.up is not None and self.flags & F_QUEUED:
            self.up.cancel_wait(self)
            self.flags &= ~F_QUEUED
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.up.close(conn)

    # ------------------------------------------------------------------ errors

    def _note_error(self, code: int, reason: int) -> None:
        """Count and log (debug) an error answered with `code` (0: the connection closes
        without an answer) for reason index `reason` (client.c note_error)."""
        w = self.w
        metrics.error(w.counters.v, w.crow, code, reason)
        if not w.log.enabled("debug"):
            return
        if code:
            rid = self.x.request_id.decode("latin-1") if self.x.request_id else ""
            w.log.event(
                "debug",
                "request_error",
                status=code,
                reason=REASONS[reason],
                client=self.ip,
                request_id=rid,
            )
        else:
            w.log.event("debug", "connection_closed", reason=REASONS[reason], client=self.ip)

    def _queue_done(self) -> None:
        """The attempt stops waiting for a slot (granted or timed out): its queue wait."""
        if self.flags & F_QUEUED:
            self.flags &= ~F_QUEUED
            w = self.w
            waited = self.loop.time() - self.up_start
            metrics.queue_wait(w.counters.v, w.crow, int(waited * 1e6) if waited > 0 else 0)

    def client_error(self, code: int, why: str | None = None) -> None:
        """Answer with the proxy's own error, or close if response bytes reached the client.
        `why`: a name of the reason vocabulary (else the code's own reason)."""
        x = self.x
        if x.flags & X_RESP_SENT:
            if self.state != ClientState.CLOSED:
                self._note_error(0, error_reason(code, why))
            # A truncated response is never completed with an error: what is queued still
            # goes out, then the lingering close (client_abort_exchange in C). Closing at
            # once with unread pipelined input would send an RST, which can destroy the
            # bytes in flight to the client (RFC 9112 9.6); found by the soak.
            self._drop_upstream()
            x.flags |= X_CLOSE_AFTER
            self.finish_request()
            return
        self._note_error(code, error_reason(code, why))
        if x.flags & X_RESP_STARTED and self.cout_mark >= 0:
            x.bytes_out -= sum(len(b) for b in self.cout[self.cout_mark :])
            del self.cout[self.cout_mark :]  # the head never left: replace it
            self.cout_mark = -1
            x.flags &= ~(X_RESP_STARTED | X_RESP_DONE)
        self._drop_upstream()
        if not x.request_id:
            x.request_id = new_request_id()
        if not x.flags & X_IN_REQUEST:
            x.flags |= X_IN_REQUEST
            x.start_wall = time.time()
            x.start_mono = self.loop.time()
        close = x.error_closes(code, self.w.draining, bool(self.flags & F_EOF))
        rl = x.rl
        if not rl and self.w.rl is not None:
            rl = self._rl_peek(self.w.rl)
        self.client_write(http1.error_response(code, x.request_id, close, rl, x.method == b"HEAD"))
        x.status = code
        x.flags |= X_RESP_STARTED | X_RESP_DONE
        x.flags &= ~X_EXPECT
        if close:
            x.flags |= X_CLOSE_AFTER
        self.finish_request()

    # ------------------------------------------------------------------ writing and closing

    def client_write(self, data: bytes) -> None:
        if self.pumping:
            self.x.bytes_out += len(data)
            self.cout.append(data)
            return
        t = self.transport
        if t is not None and not t.is_closing():
            self.x.bytes_out += len(data)
            self.out_given += len(data)
            w = self.w
            w.counters.v[w.crow + metrics.C_TX_CLIENT] += len(data)
            t.write(data)

    def _flush_out(self) -> None:
        """Write what the current upstream read produced (client_flush)."""
        self.cout_mark = -1
        if not self.cout:
            return
        data = self.cout[0] if len(self.cout) == 1 else b"".join(self.cout)
        self.cout = []
        if self.x.flags & X_RESP_STARTED:
            self.x.flags |= X_RESP_SENT
        t = self.transport
        if t is not None and not t.is_closing():
            self.out_given += len(data)
            w = self.w
            w.counters.v[w.crow + metrics.C_TX_CLIENT] += len(data)
            t.write(data)

    def begin_drain(self) -> None:
        """Final bytes are queued: shut the write side once they are out, then discard
        input for LINGER_SECONDS (or until the client closes), then close (begin_linger)."""
        if self.state in (ClientState.DRAIN, ClientState.CLOSED):
            return
        if self.pumping:
            self.pumping = False
            self._flush_out()
        self.log_request()
        self._drop_upstream()
        self.state = ClientState.DRAIN
        self.stash = []
        self.flags &= ~(F_RD_STASH | F_RD_UPSTREAM)
        now = self.loop.time()
        self.linger_until = now + LINGER_SECONDS
        t = self.transport
        if t is None or t.is_closing():
            self.close()
            return
        if self.flags & F_EOF:
            t.close()  # the client is gone: flush and close
            return
        self.flags |= F_LINGER
        if t.can_write_eof():
            t.write_eof()  # sent once the buffer is flushed
        t.resume_reading()
        self.refresh_timer()

    def close(self, abort: bool = False) -> None:
        """Close (client_close): log, drop the exchange, close the transport once what is
        queued is written (abort: at once, dropping it)."""
        if self.state == ClientState.CLOSED:
            return
        if self.pumping:
            self.pumping = False
            if not abort:
                self._flush_out()
        self.log_request()
        self._drop_upstream()
        self._route_end()
        self.state = ClientState.CLOSED
        w = self.w
        w.counters.v[w.crow + metrics.C_CONN_CLIENT] -= 1
        self.stash = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        t = self.transport
        if t is not None:
            if abort:
                t.abort()
            elif not t.is_closing():
                t.close()

    def reset(self, why: str) -> None:
        """Close a client that does not take what the proxy sends it (write timeout,
        min_rate): reset (SO_LINGER 0), so that the kernel drops what it still holds for that
        client instead of trickling it out to it long after the close (client_reset)."""
        if self.state == ClientState.CLOSED:
            return
        self._note_error(0, reason_from_name(why, 0))
        t = self.transport
        if t is not None and self.flags & F_CW_PAUSED:
            sock = t.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.close(abort=True)

    # ------------------------------------------------------------------ shutdown

    # worker.WorkerConn --------------------------------------------------------------------------

    def abort(self) -> None:
        """Shutdown timeout: close now, dropping what is queued."""
        self.close(abort=True)

    def shutdown(self) -> None:
        """Worker is draining: idle clients close now, others after their response."""
        # only a keep-alive connection between two requests closes now (its client sends
        # again on a new connection, RFC 9112 9.3.1); a new one that has not sent its
        # first request yet gets it answered (timeouts.header bounds the wait)
        if self.state == ClientState.IDLE:
            self._note_error(0, reason_from_name("shutting_down", 0))
            self.close()
            return
        self.x.flags |= X_CLOSE_AFTER

    # ------------------------------------------------------------------ timers

    def deadline(self) -> tuple[float, ClientTimeout]:
        """The deadline for the current state and which timeout it is (client_deadline).
        Absolute loop time; (0, NONE) when there is none. Hot: plain comparisons only."""
        u = self.uset if self.uset is not None else self.w.uset
        st = self.state
        if st == _ST_IDLE:
            return self.idle_since + u.idle_s, _TO_IDLE
        if st == _ST_HEAD:
            return self.head_start + u.header_s, _TO_HEADER
        flags = self.flags
        if st == _ST_FORWARD:
            best, which = self.x.req_start + u.total_s, _TO_TOTAL
            if self.conn is not None and not self.x.flags & X_RESP_DONE:
                # a response is awaited or streaming; a pause caused by a slow client is
                # covered by the write timeout, so client progress also counts
                last = self.up_last if self.up_last > self.out_last else self.out_last
                at = last + u.read_s
                if at < best:
                    best, which = at, _TO_READ
            if flags & F_CW_PAUSED:
                at = self.out_last + u.write_s
                if at < best:
                    best, which = at, _TO_WRITE
            if flags & F_UW_PAUSED and self.conn is not None:
                at = self.uout_last + u.write_s
                if at < best:
                    best, which = at, _TO_WRITE
            if u.min_rate:
                # the body is awaited from the client (not held up by the upstream)
                if (
                    self.conn is not None
                    and not self.x.flags & X_REQ_DONE
                    and not flags & F_UW_PAUSED
                ):
                    at = self.rin_start + u.min_rate_window_s
                    if at < best:
                        best, which = at, _TO_RATE_IN
                if flags & F_CW_PAUSED:
                    at = self.rout_start + u.min_rate_window_s
                    if at < best:
                        best, which = at, _TO_RATE_OUT
            return best, which
        if st == _ST_UPSTREAM:
            best, which = self.x.req_start + u.total_s, _TO_TOTAL
            if self.flags & F_QUEUED:
                at, kind = self.up_start + u.queue_s, _TO_QUEUE
            elif self.conn is not None:
                at, kind = self.up_start + u.connect_s, _TO_CONNECT
            else:
                return best, which
            return (at, kind) if at < best else (best, which)
        if st == _ST_TUNNEL:
            best, which = self.idle_since + u.idle_s, _TO_IDLE
            if flags & F_CW_PAUSED:
                at = self.out_last + u.write_s
                if at < best:
                    best, which = at, _TO_WRITE
            if flags & F_UW_PAUSED:
                at = self.uout_last + u.write_s
                if at < best:
                    best, which = at, _TO_WRITE
            return best, which
        if st == _ST_DRAIN:
            if flags & F_CW_PAUSED:
                at = self.rout_start + u.min_rate_window_s
                if u.min_rate and at < self.out_last + u.write_s:
                    return at, _TO_RATE_OUT
                return self.out_last + u.write_s, _TO_WRITE
            return self.linger_until, _TO_LINGER
        return 0.0, _TO_NONE

    def out_sent(self) -> int:
        """Bytes that left for the client's socket: handed to the transport, minus what it
        still buffers (client.c counts them as they are written)."""
        t = self.transport
        return self.out_given - (t.get_write_buffer_size() if t is not None else 0)

    def rate_short(self, which: ClientTimeout) -> bool:
        """At the end of a min_rate window (RATE_IN or RATE_OUT): did the client move fewer
        than min_rate x min_rate_window bytes since it opened? (client_rate_short)"""
        if which == ClientTimeout.RATE_IN:
            moved = self.x.bytes_in - self.rin_mark
        else:
            moved = self.out_sent() - self.rout_mark
        u = self.uset if self.uset is not None else self.w.uset
        return moved < u.min_rate * u.min_rate_window_s

    def rate_in_open(self, now: float) -> None:
        """A new request-body min_rate window from now."""
        self.rin_start = now
        self.rin_mark = self.x.bytes_in

    def rate_out_open(self, now: float) -> None:
        """A new response min_rate window from now."""
        self.rout_start = now
        self.rout_mark = self.out_sent()

    def _refresh_if_open(self) -> None:
        if self.state != ClientState.CLOSED:
            self.refresh_timer()

    def refresh_timer(self) -> None:
        """Re-arm lazily: only when the deadline moved earlier than the armed one."""
        at, which = self.deadline()
        if which == _TO_NONE:
            return
        if self.timer is not None:
            if self.timer_at <= at:
                return
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.loop.call_at(at, self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        at, which = self.deadline()
        if which == ClientTimeout.NONE:
            return
        now = self.loop.time()
        if at > now + 0.0005:
            # fired early: activity moved the deadline; re-arm for the remainder
            self.timer_at = at
            self.timer = self.loop.call_at(at, self.on_timer)
            return
        if which == ClientTimeout.RATE_IN or which == ClientTimeout.RATE_OUT:
            if not self.rate_short(which):
                # fast enough over this window: the next one starts now
                if which == ClientTimeout.RATE_IN:
                    self.rate_in_open(now)
                else:
                    self.rate_out_open(now)
                self.refresh_timer()
                return
            if which == ClientTimeout.RATE_OUT:
                self.reset("client_too_slow")  # the client does not read fast enough
                return
            self.client_error(408, "body_too_slow")  # slower than timeouts.min_rate
        elif which == ClientTimeout.WRITE:
            self.reset("write_timeout")  # a peer does not drain: nothing more will go out
        elif which == ClientTimeout.IDLE:
            why = "shutting_down" if self.w.draining else "idle_timeout"
            self._note_error(0, reason_from_name(why, 0))
            self.close()
        elif which == ClientTimeout.LINGER:
            self._note_error(0, reason_from_name("linger_timeout", 0))
            self.close()
        elif which == ClientTimeout.HEADER:
            self.client_error(408, "header_timeout")
        elif which == ClientTimeout.QUEUE:
            if self.up is not None:
                self.up.cancel_wait(self)
            self._queue_done()
            self.client_error(503, "queue_timeout")
        elif which == ClientTimeout.CONNECT:
            self._connect_failed("connect_timeout")  # attempt_failed closes the conn
        elif which == ClientTimeout.READ:
            x = self.x
            if self.conn is not None and not x.flags & X_UP_READ:
                # not one response byte: a head-phase failure (send if still writing)
                phase = x.failure_phase(True, self._request_sent())
                self.attempt_failed(phase, "read_timeout", _FAIL, 504)
            else:
                if not x.flags & X_HEAD_OK:
                    self._attempt_end(_FAIL, "read_timeout")  # stalled inside the head
                self.client_error(504, "read_timeout")
        else:  # TOTAL
            self.client_error(504, "total_timeout")
        self._refresh_if_open()

    # ------------------------------------------------------------------ logging

    def log_request(self) -> None:
        if self.x.flags & X_LOGGED:
            return
        if not self.x.method and self.x.status == 0:
            return  # no request head and nothing sent: not a request
        x = self.x
        x.flags |= X_LOGGED
        w = self.w
        secs = self.loop.time() - x.start_mono
        if x.flags & X_RESP_SENT or (x.status and x.flags & X_RESP_DONE):
            # the upstream's label when its response went out, else "" (the proxy's own)
            up = self.up
            label = up.label if up is not None and x.flags & X_HEAD_OK else 0
            metrics.request(
                w.counters.v, w.crow, x.status, label, int(secs * 1e6) if secs > 0 else 0
            )
        log = w.log
        if not log.access_enabled:
            return
        log.access(
            self.x.start_wall,
            self.ip,
            text(self.x.method),
            text(self.x.path),
            self.x.status,
            self.up.name if self.up is not None else "",
            self.x.attempts,
            self.x.bytes_in,
            self.x.bytes_out,
            secs * 1000.0,
            self.x.request_id.decode("latin-1"),
            self.w.id,
        )
