"""client: one client connection and the exchange it drives. Twin: c-proxy/src/client.c
(same states, same order, same flags; Python-only flags are marked).

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
import time
from enum import IntEnum
from typing import TYPE_CHECKING, cast

from pyproxy import http1
from pyproxy.balancer import BalancerCtx
from pyproxy.http1 import (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    CRLF,
    ChunkScanner,
    HeadScanner,
    HttpError,
    Request,
    RequestParser,
    Response,
    ResponseParser,
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
    from pyproxy.listener import Runtime

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


F_KEEPALIVE = 0x0001  # the client may keep the connection after this request
F_HTTP10 = 0x0002  # the request is HTTP/1.0
F_REQ_DONE = 0x0004  # the whole request was read (body included)
F_RESP_STARTED = 0x0008  # a final response head was written
F_RESP_SENT = 0x0010  # response bytes reached the client (Python: same as RESP_STARTED)
F_RESP_DONE = 0x0020  # the whole response was written
F_HEAD_METHOD = 0x0040  # HEAD: the response has no body
F_UPGRADE = 0x0080  # the request asks for an Upgrade
F_EXPECT = 0x0100  # Expect: 100-continue still to be answered
F_CLOSE_AFTER = 0x0200  # close once the response is written
F_EOF = 0x0400  # the client shut its sending side
F_UP_EOF = 0x0800  # the upstream closed its side
F_QUEUED = 0x1000  # in an upstream's wait queue
F_UP_DIRTY = 0x2000  # the upstream conn may not be pooled
F_REPLAYABLE = 0x4000  # `replay` still holds the whole request from byte 0
F_LINGER = 0x8000  # DRAIN: write side shut, discarding input
F_LOGGED = 0x10000  # the access line of this request is written
F_IN_REQUEST = 0x20000  # a request started (bytes seen): its clocks run
F_CW_PAUSED = 0x100000  # Python: client transport above its write high-water mark
F_UW_PAUSED = 0x200000  # Python: upstream transport above its write high-water mark
F_RD_STASH = 0x400000  # Python: client reading stopped, bytes wait in `stash`
F_RD_UPSTREAM = 0x800000  # Python: client reading stopped, the upstream cannot take more
F_UR_PAUSED = 0x1000000  # Python: upstream reading stopped, the client cannot take more

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

# the per-request flags cleared between requests (connection-level ones survive)
_CONN_FLAGS = F_CW_PAUSED | F_RD_STASH | F_EOF

# response body handling towards the client
OUT_NONE = 0  # no body
OUT_IDENTITY = 1  # bytes as received (Content-Length), or de-chunked / close-delimited
OUT_CHUNKED = 2  # chunk-framed here (chunked upstream re-chunked, or close-delimited)

# request body framing
IN_NONE = 0
IN_LENGTH = 1
IN_CHUNKED = 2


class ClientConn(asyncio.Protocol):
    """Owned by the runtime (its `clients` set) from connection_made to connection_lost. Owns
    its parsers; borrows its upstream set and attached upstream conn for one exchange."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt  # the worker
        self.loop = rt.loop
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
        self.linger_until = 0.0  # DRAIN+LINGER: give up reading then
        self.stash: list[bytes] = []  # client bytes not parsed yet (reading stopped)
        self.cout: list[bytes] = []  # client bytes produced by the current upstream read
        self.cout_mark = -1  # index in cout of the response head (-1: none there)
        self.pumping = False  # inside upstream_on_read: client bytes go to cout first
        self.spare: RequestParser | None = None  # the last request's parser, maybe reusable
        self._request_reset()

    def _request_reset(self) -> None:
        """Forget the request: parsers, exchange, log fields (request_reset in C)."""
        self.head_scan = HeadScanner()  # end of the request head
        self.parser: RequestParser | None = None  # request parser
        self.req: Request | None = None  # the validated head
        self.uset: UpstreamSet | None = None  # exchange's upstream set, None between requests
        self.up: Upstream | None = None  # upstream of the current attempt
        self.conn: UpstreamConn | None = None  # attached conn (CONNECTING/BUSY)
        self.need_route = False  # head done, route() at the end of this read
        self.tried = 0  # bitmask of upstreams tried by this request
        self.attempts = 0  # upstream attempts of this request
        self.req_start = 0.0  # first byte of this request (total)
        self.up_start = 0.0  # UPSTREAM: queue or connect start
        self.up_last = 0.0  # last byte read from or written to the upstream
        self.uout_last = 0.0  # last write progress to the upstream (or when it stalled)
        self.uout: list[bytes] = []  # bytes for the upstream not written yet (no conn)
        self.uout_bytes = 0  # their length
        self.replay: list[bytes] = []  # the request as sent so far (while REPLAYABLE)
        self.replay_bytes = 0  # its length
        self.in_mode = IN_NONE  # request body framing
        self.in_remaining = 0  # IN_LENGTH: body bytes still to read
        self.in_scan: ChunkScanner | None = None  # IN_CHUNKED: end of the body
        self.rparser: ResponseParser | None = None  # response parser
        self.resp: Response | None = None  # final response head
        self.resp_scan = HeadScanner()  # end of the current response head
        self.out_mode = OUT_NONE  # OUT_*
        self.out_remaining = -1  # Content-Length bytes left (-1: not length-framed)
        self.out_scan: ChunkScanner | None = None  # chunked upstream body: its end
        # access-log fields of the current request
        self.start_wall = 0.0  # wall clock at the request's first byte
        self.start_mono = 0.0  # loop time at the same moment
        self.method = b""  # b"" until the head parsed
        self.path = b""  # request target as sent
        self.request_id = b""  # the client's X-Request-ID or a generated one
        self.status = 0  # status sent (0: none)
        self.bytes_in = 0  # bytes of this request read from the client
        self.bytes_out = 0  # bytes of this request written to the client

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
        self.rt.client_opened(self)
        if self.rt.draining:
            self.close()
            return
        self.refresh_timer()

    def data_received(self, data: bytes) -> None:
        st = self.state
        if st == ClientState.TUNNEL:
            self.bytes_in += len(data)
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
        if st in (ClientState.UPSTREAM, ClientState.FORWARD) and self.flags & F_REQ_DONE:
            return True  # answer this request, then close
        # DRAIN before the linger: let the final bytes go out; otherwise the transport
        # closes and connection_lost ends the client
        return st == ClientState.DRAIN and not self.flags & F_LINGER

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()
        self.rt.client_closed(self)

    def pause_writing(self) -> None:
        self.flags |= F_CW_PAUSED
        self.out_last = self.loop.time()
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
        the next request wait in `stash` until this exchange is over."""
        pos = 0
        n = len(data)
        while pos < n:
            st = self.state
            if st == ClientState.IDLE or st == ClientState.HEAD:
                pos = self.pump_head(data, pos)
            elif st == ClientState.DRAIN or st == ClientState.CLOSED:
                break
            elif st == ClientState.TUNNEL:
                self.bytes_in += n - pos
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
        if self.need_route and self.state == ClientState.UPSTREAM:
            # routed once the body bytes of this read are checked: a malformed body that
            # arrived with its head never reaches an upstream
            self.need_route = False
            self.route()

    def _must_wait(self) -> bool:
        """The remaining bytes cannot be consumed now."""
        st = self.state
        if st == ClientState.IDLE or st == ClientState.HEAD:
            return False
        if (st != ClientState.UPSTREAM and st != ClientState.FORWARD) or self.flags & F_REQ_DONE:
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
        if self.flags & F_IN_REQUEST:
            return
        self.flags |= F_IN_REQUEST
        self.req_start = self.start_mono = self.loop.time()
        self.start_wall = time.time()
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
                self.bytes_in = e.used if e.used >= 0 else self.bytes_in + seg_end - pos
                self._take_head_fields(parser)
                self.client_error(e.code)
                return -1
            self.bytes_in += seg_end - pos
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
            self.method = parser.parser.get_method()
            self.path = req.target
            if req.request_id:
                self.request_id = req.request_id

    def on_request_head(self, req: Request) -> bool:
        """A valid head: build the upstream head; route() follows at the end of this read
        (client_on_request_head). False when the request was refused (413)."""
        cfg = self.cfg
        self.req = req
        self.method = req.method
        self.path = req.target
        self.request_id = req.request_id if req.request_id else new_request_id()
        if req.http_minor == 0:
            self.flags |= F_HTTP10
        if req.method == b"HEAD":
            self.flags |= F_HEAD_METHOD
        if req.keep_alive:
            self.flags |= F_KEEPALIVE
        max_body = cfg.limits.max_body_bytes
        if max_body and req.content_length > max_body:
            self.client_error(413)
            return False
        if req.upgrade is not None:
            self.flags |= F_UPGRADE
        if req.expect_continue and req.http_minor == 1 and req.has_body:
            self.flags |= F_EXPECT
        if self.rt.draining:
            self.flags |= F_CLOSE_AFTER
        self.flags |= F_REPLAYABLE
        self._up_send(http1.build_request_head(req, self.ip_b, self.request_id))
        assert self.parser is not None
        if self.parser.upgraded or not req.has_body:
            # no body (an upgrade request's bytes after the head belong to the tunnel)
            self.flags |= F_REQ_DONE
        elif req.chunked:
            self.in_mode = IN_CHUNKED
            self.in_scan = ChunkScanner()
        else:
            self.in_mode = IN_LENGTH
            self.in_remaining = req.content_length
        self.state = ClientState.UPSTREAM
        self.need_route = True
        return True

    def pump_body(self, data: bytes, pos: int) -> int:
        """Request body bytes from data[pos:] to the upstream. Returns the index after the
        body, or -1 when all of data was used or the request failed."""
        n = len(data)
        conn = self.conn
        attached = conn is not None and conn.state == UpstreamConnState.BUSY and not self.uout
        room = n - pos if attached else self._uout_room()
        if room <= 0:
            return pos
        if self.in_mode == IN_LENGTH:
            take = min(self.in_remaining, n - pos, room)
            self._up_send(data if pos == 0 and take == n else data[pos : pos + take])
            self.in_remaining -= take
            self.bytes_in += take
            pos += take
            if self.in_remaining == 0:
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
            self.bytes_in += (e.used if e.used >= 0 else stop) - pos
            self.client_error(e.code)
            return -1
        self.bytes_in += seg_end - pos
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
        if self.flags & F_REPLAYABLE:
            self.replay.append(data)
            self.replay_bytes += len(data)
            in_cap = max(self.cfg.limits.max_header_bytes, IN_MIN) + 1024
            if self.replay_bytes > 2 * in_cap + 2048:
                self.flags &= ~F_REPLAYABLE
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
        self.flags |= F_REQ_DONE
        if self.flags & F_RESP_DONE:
            self.finish_request()

    # ------------------------------------------------------------------ routing

    @property
    def cfg(self) -> Config:
        """The config of this request's upstream set, else the worker's current one."""
        uset = self.uset if self.uset is not None else self.rt.uset
        return uset.cfg

    def route(self) -> None:
        """Start the next attempt on an untried upstream (client_route)."""
        if self.uset is None:
            self.uset = self.rt.uset
            self.tried = 0
            self.attempts = 0
        uset = self.uset
        cfg = uset.cfg
        if self.attempts >= 1 + cfg.retries:
            self.client_error(502)
            return
        idx = uset.balancer.pick(BalancerCtx(self.tried, self.loop.time(), self.ip))
        if idx < 0:
            self.client_error(502 if self.attempts else 503)
            return
        self.tried |= 1 << idx
        up = uset.ups[idx]
        self.up = up
        self.attempts += 1
        up.requests += 1
        self.up_start = self.loop.time()
        self.state = ClientState.UPSTREAM
        result, conn = up.acquire(self)
        if result == AcquireResult.READY:
            assert conn is not None
            self.attach(conn)
        elif result == AcquireResult.CONNECTING:
            self.conn = conn
        else:
            self.flags |= F_QUEUED
        # the timer is refreshed by whoever called in from the loop (data_received,
        # upstream_on_*, on_timer): once per event, not once per step

    def attempt_failed(self, reason: str) -> None:
        """The attempt on self.up failed: count it and try the next upstream."""
        if self.up is not None:
            self.up.fails += 1
        self.conn = None
        uset = self.uset
        assert uset is not None
        if self.attempts < 1 + uset.cfg.retries and self.attempts < len(uset.ups):
            self.rt.log.event(
                "warn",
                "retry",
                upstream=self.up.name if self.up is not None else "",
                reason=reason,
                attempt=self.attempts + 1,
            )
        self.route()

    def attach(self, conn: UpstreamConn) -> None:
        """A BUSY connection for this exchange: send what waits in uout (client_attach)."""
        now = self.loop.time()
        self.conn = conn
        self.state = ClientState.FORWARD
        self.flags &= ~(F_UP_EOF | F_UP_DIRTY | F_QUEUED | F_UW_PAUSED | F_UR_PAUSED)
        self.rparser = ResponseParser()
        self.rparser.dechunk = bool(self.flags & F_HTTP10)
        self.resp = None
        if self.resp_scan.size or self.resp_scan.tail:  # a retry after a partial head
            self.resp_scan = HeadScanner()
        self.up_last = self.uout_last = now
        if self.uout:
            data = b"".join(self.uout)
            self.uout = []
            self.uout_bytes = 0
            conn.write(data)
        if self.flags & F_EXPECT:
            self.client_write(http1.CONTINUE_100)
            self.flags &= ~F_EXPECT
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
            self.attempt_failed(reason)
            self._refresh_if_open()

    def upstream_on_slot(self, conn: UpstreamConn) -> None:
        """A queued slot was granted (absorb_granted)."""
        if self.state != ClientState.UPSTREAM or self.up is None or conn.up is not self.up:
            conn.up.close(conn)
            return
        self.flags &= ~F_QUEUED
        self.up_start = self.loop.time()
        if conn.state == UpstreamConnState.BUSY:
            self.attach(conn)
        elif conn.state == UpstreamConnState.CONNECTING:
            self.conn = conn
        else:
            self.attempt_failed("connect_error")
        self._refresh_if_open()

    def upstream_on_read(self, data: bytes) -> None:
        now = self.loop.time()
        self.up_last = now
        st = self.state
        if st == ClientState.TUNNEL:
            self.idle_since = now
            self.client_write(data)
            return
        if st != ClientState.FORWARD or self.flags & F_RESP_DONE:
            return
        # the bytes this read produces are written once, at the end (as the C twin flushes
        # `out` after a pump): an error before then can still replace the response head
        self.pumping = True
        try:
            self.pump_response(data)
        except HttpError as e:
            self.flags |= F_UP_DIRTY
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
        self.flags |= F_UP_EOF
        st = self.state
        if conn is None:
            return
        if st == ClientState.TUNNEL:
            self.conn = None
            self.close()  # after the bytes already queued for the client
            return
        if st != ClientState.FORWARD or self.flags & F_RESP_DONE:
            return
        self.conn = None
        rparser = self.rparser
        nothing = (
            self.resp is None
            and self.resp_scan.size == 0
            and not self.resp_scan.tail
            and (rparser is None or not rparser.head_done)
            and not self.flags & F_RESP_STARTED
        )
        if nothing and conn.exchanges > 0 and self.flags & F_REPLAYABLE:
            # a pooled connection the upstream had closed: replay the request elsewhere
            self.uout = list(self.replay)
            self.uout_bytes = self.replay_bytes
            self.state = ClientState.UPSTREAM
            self.attempt_failed("keepalive_closed")
            return
        if self.resp is not None and self.resp.body == http1.BODY_CLOSE:
            # close-delimited body: the close is its end
            if self.out_mode == OUT_CHUNKED:
                self.client_write(b"0\r\n\r\n")
            self.flags |= F_UP_DIRTY
            self.response_done()
            return
        self.flags |= F_UP_DIRTY
        self.client_error(502)

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
                resp = rparser.finish_head(bool(self.flags & F_HEAD_METHOD))
                if resp.status < 200 and resp.status != 101:
                    # 1xx: forwarded to HTTP/1.1 clients, dropped for HTTP/1.0
                    if not self.flags & F_HTTP10:
                        self.client_write(http1.build_response_head(resp, b"", b"", True))
                    rparser.reset_head()
                    continue
                self.on_response_head(resp)
                if self.state != ClientState.FORWARD:
                    return
                if resp.status == 101:
                    self.flags |= F_RESP_DONE
                    self.enter_tunnel(data[pos:])
                    return
                if self.out_mode == OUT_NONE or self.out_remaining == 0:
                    if pos < n:
                        self.flags |= F_UP_DIRTY  # bytes after a complete response
                    self.response_done()
                    return
                continue
            resp = self.resp
            if resp.body == BODY_LENGTH:
                take = min(self.out_remaining, n - pos)
                self.client_write(data if pos == 0 and take == n else data[pos : pos + take])
                self.out_remaining -= take
                pos += take
                if self.out_remaining == 0:
                    if pos < n:
                        self.flags |= F_UP_DIRTY
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
                    self.flags |= F_UP_DIRTY
                self.response_done()
                return
            # close-delimited
            chunk = data if pos == 0 else data[pos:]
            if self.out_mode == OUT_CHUNKED:
                self.client_write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                self.client_write(chunk)
            return

    def on_response_head(self, resp: Response) -> None:
        """A final response head: framing towards the client, then the head
        (client_on_response_head)."""
        if resp.status == 101:
            if not self.flags & F_UPGRADE:
                raise HttpError(502, "101 without an upgrade request")
            connection = b"Connection: upgrade\r\n"
            if resp.upgrade is not None:
                connection += b"Upgrade: " + resp.upgrade + CRLF
            self.resp = resp
            self._response_head_out(resp, http1.build_response_head(resp, b"", connection, True))
            return
        http10 = bool(self.flags & F_HTTP10)
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
            self.flags |= F_CLOSE_AFTER
        else:
            self.out_mode = OUT_CHUNKED
            framing = b"Transfer-Encoding: chunked\r\n"
        if body == BODY_CHUNKED:
            self.out_scan = ChunkScanner(502)
        if (
            not self.flags & F_KEEPALIVE
            or self.rt.draining
            or not self.flags & F_REQ_DONE
            or self.flags & F_EOF
        ):
            self.flags |= F_CLOSE_AFTER
        if self.flags & F_CLOSE_AFTER:
            connection = b"Connection: close\r\n"
        elif http10:
            connection = b"Connection: keep-alive\r\n"
        else:
            connection = b""
        if not resp.keep_alive:
            self.flags |= F_UP_DIRTY
        self.resp = resp
        self._response_head_out(resp, http1.build_response_head(resp, framing, connection, keep_cl))

    def _response_head_out(self, resp: Response, head: bytes) -> None:
        self.flags |= F_RESP_STARTED
        if self.pumping:
            self.cout_mark = len(self.cout)
        else:
            self.flags |= F_RESP_SENT
        self.flags &= ~F_REPLAYABLE  # the upstream answered: no replay
        self.replay = []
        self.status = resp.status
        self.client_write(head)

    def enter_tunnel(self, rest: bytes) -> None:
        self.state = ClientState.TUNNEL
        self.idle_since = self.loop.time()
        self.flags |= F_CLOSE_AFTER | F_UP_DIRTY
        if rest:
            self.client_write(rest)
        # client bytes after the upgrade request are already tunnel data
        if self.stash and self.conn is not None:
            data = b"".join(self.stash)
            self.stash = []
            self.bytes_in += len(data)
            self.conn.write(data)
        self.flags &= ~F_RD_STASH
        self._resume_reading()

    def response_done(self) -> None:
        """The upstream answered in full: release or close its connection."""
        self.flags |= F_RESP_DONE
        conn = self.conn
        self.conn = None
        if conn is not None and self.up is not None:
            reusable = (
                not self.flags & (F_UP_DIRTY | F_UP_EOF)
                and bool(self.flags & F_REQ_DONE)
                and not self.uout
            )
            if self.flags & F_UR_PAUSED:
                self.flags &= ~F_UR_PAUSED
                conn.resume_reading()
            self.up.release(conn, reusable)
        if not self.flags & F_REQ_DONE:
            self.flags |= F_CLOSE_AFTER
        self.finish_request()

    # ------------------------------------------------------------------ end of a request

    def finish_request(self) -> None:
        """The response is out: log, then keep-alive or close."""
        self.log_request()
        close = bool(self.flags & (F_CLOSE_AFTER | F_EOF)) or self.rt.draining
        self._drop_upstream()
        keep = self.flags & _CONN_FLAGS
        spare = self.parser
        self._request_reset()
        self.spare = spare
        self.flags = keep
        if close:
            self.flags |= F_CLOSE_AFTER | F_LOGGED
            self.begin_drain()
            return
        self.idle_since = self.loop.time()
        self.state = ClientState.IDLE
        self._drain_stash()

    def _drain_stash(self) -> None:
        """Parse bytes held back while the previous step was in flight."""
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
        if self.up is not None and self.flags & F_QUEUED:
            self.up.cancel_wait(self)
            self.flags &= ~F_QUEUED
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.up.close(conn)

    # ------------------------------------------------------------------ errors

    def client_error(self, code: int) -> None:
        """Answer with the proxy's own error, or close if response bytes reached the client."""
        if self.flags & F_RESP_SENT:
            self.close()  # a truncated response is never completed with an error
            return
        if self.flags & F_RESP_STARTED and self.cout_mark >= 0:
            self.bytes_out -= sum(len(b) for b in self.cout[self.cout_mark :])
            del self.cout[self.cout_mark :]  # the head never left: replace it
            self.cout_mark = -1
            self.flags &= ~(F_RESP_STARTED | F_RESP_DONE)
        self._drop_upstream()
        if not self.request_id:
            self.request_id = new_request_id()
        if not self.flags & F_IN_REQUEST:
            self.flags |= F_IN_REQUEST
            self.start_wall = time.time()
            self.start_mono = self.loop.time()
        close = (
            code not in (502, 503, 504)
            or not self.flags & F_REQ_DONE
            or not self.flags & F_KEEPALIVE
            or bool(self.flags & (F_CLOSE_AFTER | F_EOF))
            or self.rt.draining
        )
        self.client_write(http1.error_response(code, self.request_id, close))
        self.status = code
        self.flags |= F_RESP_STARTED | F_RESP_DONE
        self.flags &= ~F_EXPECT
        if close:
            self.flags |= F_CLOSE_AFTER
        self.finish_request()

    # ------------------------------------------------------------------ writing and closing

    def client_write(self, data: bytes) -> None:
        if self.pumping:
            self.bytes_out += len(data)
            self.cout.append(data)
            return
        t = self.transport
        if t is not None and not t.is_closing():
            self.bytes_out += len(data)
            t.write(data)

    def _flush_out(self) -> None:
        """Write what the current upstream read produced (client_flush)."""
        self.cout_mark = -1
        if not self.cout:
            return
        data = self.cout[0] if len(self.cout) == 1 else b"".join(self.cout)
        self.cout = []
        if self.flags & F_RESP_STARTED:
            self.flags |= F_RESP_SENT
        t = self.transport
        if t is not None and not t.is_closing():
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
        self.state = ClientState.CLOSED
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

    # ------------------------------------------------------------------ shutdown

    def on_shutdown(self) -> None:
        """Worker is draining: idle clients close now, others after their response."""
        if self.state == ClientState.IDLE or (
            self.state == ClientState.HEAD and not self.flags & F_IN_REQUEST
        ):
            self.close()
            return
        self.flags |= F_CLOSE_AFTER

    # ------------------------------------------------------------------ timers

    def deadline(self) -> tuple[float, ClientTimeout]:
        """The deadline for the current state and which timeout it is (client_deadline).
        Absolute loop time; (0, NONE) when there is none. Hot: plain comparisons only."""
        u = self.uset if self.uset is not None else self.rt.uset
        st = self.state
        if st == _ST_IDLE:
            return self.idle_since + u.idle_s, _TO_IDLE
        if st == _ST_HEAD:
            return self.head_start + u.header_s, _TO_HEADER
        flags = self.flags
        if st == _ST_FORWARD:
            best, which = self.req_start + u.total_s, _TO_TOTAL
            if self.conn is not None and not flags & F_RESP_DONE:
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
            return best, which
        if st == _ST_UPSTREAM:
            best, which = self.req_start + u.total_s, _TO_TOTAL
            if flags & F_QUEUED:
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
                return self.out_last + u.write_s, _TO_WRITE
            return self.linger_until, _TO_LINGER
        return 0.0, _TO_NONE

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
        if which == ClientTimeout.WRITE:
            self.close(abort=True)  # a peer does not drain: nothing more will go out
        elif which in (ClientTimeout.IDLE, ClientTimeout.LINGER):
            self.close()
        elif which == ClientTimeout.HEADER:
            self.client_error(408)
        elif which == ClientTimeout.QUEUE:
            if self.up is not None:
                self.up.cancel_wait(self)
            self.flags &= ~F_QUEUED
            self.client_error(503)
        elif which == ClientTimeout.CONNECT:
            conn = self.conn
            self.conn = None
            if conn is not None:
                conn.up.close(conn)
            self.attempt_failed("connect_timeout")
        else:  # READ, TOTAL
            self.client_error(504)
        self._refresh_if_open()

    # ------------------------------------------------------------------ logging

    def log_request(self) -> None:
        if self.flags & F_LOGGED:
            return
        if not self.method and self.status == 0:
            return  # no request head and nothing sent: not a request
        self.flags |= F_LOGGED
        log = self.rt.log
        if not log.access_enabled:
            return
        log.access(
            self.start_wall,
            self.ip,
            text(self.method),
            text(self.path),
            self.status,
            self.up.name if self.up is not None else "",
            self.attempts,
            self.bytes_in,
            self.bytes_out,
            (self.loop.time() - self.start_mono) * 1000.0,
            self.request_id.decode("latin-1"),
        )
