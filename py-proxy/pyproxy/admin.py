"""admin: the admin HTTP API on admin.listen (contract section 8). Twin: c-proxy/src/admin.c.

Same routes, status codes, messages and bytes as the C twin (the shared cases in
c-proxy/tests/admin_cases/ prove it); docs/admin-api.md is the user's reference. Where the C
twin runs on its own thread and its own libev loop (store calls block that thread only), this
one runs on a given asyncio loop (worker 0's) and awaits the store's Futures, so the loop never
waits on SQLite.

HTTP/1.1 server: an asyncio Protocol fed to httptools (the same llhttp, strict), keep-alive,
pipelined requests answered in order (one at a time: reading pauses while a request is being
answered), a request head limit (431), a 64 KiB body limit (413, then a lingering close) and
an idle timeout (silent close).

Data comes through `Providers` (/upstreams, /metrics) and a `Clients` service (/clients over
the rate-limit table's pinned slots and the store), so the module is testable and main only
wires.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools

from pyproxy.ratelimit import KEY_MAX, Limit, Table
from pyproxy.store import Store, StoreClient

if TYPE_CHECKING:
    from pyproxy.config import ConfigAddr
    from pyproxy.log import Log

BODY_MAX = 65536  # request body bytes; more -> 413 (ADMIN_BODY_MAX)
HEAD_MAX = 16384  # request target + header names and values; more -> 431 (ADMIN_HEAD_MAX)
HEAD_RAW_MAX = 65536  # raw head bytes (whitespace included): memory guard, 431
IDLE_S = 60.0  # default idle timeout (ADMIN_IDLE_S)
LINGER_S = 2.0  # lingering close: read and discard this long at most
LIST_LIMIT = 100  # GET /clients default limit
LIST_MAX = 1000  # GET /clients largest limit
CAPACITY_MAX = 1000000000  # RATELIMIT_CAPACITY_MAX
CLIENT_ID_MAX = KEY_MAX  # bytes of a client_id

REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
CT_JSON = "application/json"
CT_METRICS = "text/plain; version=0.0.4; charset=utf-8"


class Providers(Protocol):
    """struct admin_providers: /upstreams and /metrics (called on the admin's loop)."""

    def upstreams(self) -> list[dict[str, Any]]:
        """GET /upstreams: upstream objects, keys in the order of contract section 8."""
        ...

    def upstream_set_state(self, name: str, drain: bool) -> dict[str, Any] | None:
        """PATCH /upstreams/{name}: set the operator state; the upstream object, or None when
        there is no upstream of that name."""
        ...

    def metrics(self) -> str:
        """GET /metrics: the Prometheus text."""
        ...


@dataclass
class Clients:
    """struct admin_clients: overrides are pinned slots of the rate-limit table (every worker
    sees them at once) and rows of the store (committed before the reply)."""

    table: Table  # shared by the workers
    store: Store  # its Futures are awaited, never waited on
    now: Callable[[], float] = time.time  # wall clock, seconds


class AdminBindError(Exception):
    """admin.listen cannot be bound; str() is the config error text."""


def admin_bind(addr: ConfigAddr, cfg_path: str) -> socket.socket:
    """admin_bind: a listening, non-blocking socket on addr. Raises
    AdminBindError("FILE:LINE: admin.listen: address in use") (or strerror)."""
    sock = socket.socket(addr.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if addr.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr.sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        why = "address in use" if e.errno == errno.EADDRINUSE else os.strerror(e.errno or 0)
        raise AdminBindError("%s:%d: admin.listen: %s" % (cfg_path, addr.line, why)) from None
    return sock


# ---- JSON out: the same bytes as the C twin's writer ---------------------------------------


def format_number(x: float) -> str:
    """admin_format_number: integral values with |x| < 2^53 as integers, else %.15g; -0 as 0."""
    if x == 0:
        return "0"
    if x == math.floor(x) and abs(x) < 9007199254740992.0:
        return "%.0f" % x
    return "%.15g" % x


_ESC = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n", 0x0D: b"\\r"}
_ESC[0x09] = b"\\t"


def json_str(s: bytes) -> bytes:
    """A JSON string: " \\ and \\b \\f \\n \\r \\t escaped, other bytes below 0x20 and 0x7f
    as \\u00xx, everything else as is (sb_jstr)."""
    out = bytearray(b'"')
    for c in s:
        e = _ESC.get(c)
        if e is not None:
            out += e
        elif c < 0x20 or c == 0x7F:
            out += b"\\u%04x" % c
        else:
            out.append(c)
    out += b'"'
    return bytes(out)


def json_value(v: Any) -> bytes:
    """Compact JSON of v (dicts in insertion order, numbers by format_number) (sb_json)."""
    if v is True:
        return b"true"
    if v is False:
        return b"false"
    if v is None:
        return b"null"
    if isinstance(v, int):
        return b"%d" % v
    if isinstance(v, float):
        return format_number(v).encode()
    if isinstance(v, str):
        return json_str(v.encode("utf-8", "surrogateescape"))
    if isinstance(v, bytes):
        return json_str(v)
    if isinstance(v, dict):
        return (
            b"{"
            + b",".join(json_str(str(k).encode()) + b":" + json_value(x) for k, x in v.items())
            + b"}"
        )
    if isinstance(v, (list, tuple)):
        return b"[" + b",".join(json_value(x) for x in v) + b"]"
    raise TypeError("not JSON: %r" % (v,))


# ---- JSON in: accept exactly what jansson (JSON_REJECT_DUPLICATES) accepts ---------------------


class _BadJSON(Exception):
    pass


def _check_str(s: str) -> None:
    # jansson refuses \u0000 and lone surrogates
    if "\x00" in s:
        raise _BadJSON()
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _BadJSON() from None


def _check_value(v: Any) -> None:
    if isinstance(v, str):
        _check_str(v)
    elif isinstance(v, list):
        for x in v:
            _check_value(x)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _BadJSON()  # JSON_REJECT_DUPLICATES
        _check_str(k)
        _check_value(v)
        out[k] = v
    return out


def _int(s: str) -> int:
    v = int(s)
    if not -(1 << 63) <= v < (1 << 63):
        raise _BadJSON()  # jansson: too big integer
    return v


def _float(s: str) -> float:
    v = float(s)
    if math.isinf(v):
        raise _BadJSON()  # jansson: real number overflow
    return v


def _const(s: str) -> Any:
    raise _BadJSON()  # NaN, Infinity


def json_decode(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None ("invalid JSON")."""
    try:
        v = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_pairs,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_const,
        )
    except (ValueError, _BadJSON, RecursionError):
        return None
    if not isinstance(v, dict):
        return None
    for x in v.values():
        _check_value(x)
    return v


# ---- responses -----------------------------------------------------------------------------


@dataclass
class Resp:
    """struct resp: one response."""

    code: int = 200  # status
    ctype: str | None = CT_JSON  # Content-Type, None on 204
    allow: str | None = None  # Allow (405)
    body: bytes = b""


def error(code: int, msg: str) -> Resp:
    """The contract 4 body {"code":N,"message":"..."}."""
    return Resp(code, CT_JSON, None, b'{"code":%d,"message":%s}' % (code, json_str(msg.encode())))


def serialize(r: Resp, close: bool) -> bytes:
    """The bytes of r (conn_queue)."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (r.code, REASONS.get(r.code, "Error").encode())]
    if r.code != 204:
        parts.append(
            b"Content-Type: %s\r\nContent-Length: %d\r\n"
            % (r.ctype.encode() if r.ctype else b"", len(r.body))
        )
    if r.allow is not None:
        parts.append(b"Allow: %s\r\n" % r.allow.encode())
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if r.code != 204:
        parts.append(r.body)
    return b"".join(parts)


# ---- request helpers -----------------------------------------------------------------------


def pct_decode(s: bytes) -> bytes | None:
    """Percent-decode s; None on a bad escape (pct_decode)."""
    out = bytearray()
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == 0x25:  # %
            esc = s[i + 1 : i + 3]
            if len(esc) < 2 or not all(ch in _HEX for ch in esc):
                return None
            out.append(int(esc, 16))
            i += 3
            continue
        out.append(c)
        i += 1
    return bytes(out)


_HEX = frozenset(b"0123456789abcdefABCDEF")


def parse_query(q: bytes) -> tuple[int, int, str | None]:
    """(limit, offset, None) of GET /clients, or the name of the bad parameter."""
    limit, offset = LIST_LIMIT, 0
    if not q:
        return limit, offset, None
    for part in q.split(b"&"):
        k, eq, v = part.partition(b"=")
        if k not in (b"limit", b"offset"):
            continue
        name = k.decode()
        if not eq or not 1 <= len(v) <= 9 or not all(0x30 <= ch <= 0x39 for ch in v):
            return limit, offset, name
        x = int(v)
        if k == b"limit":
            if not 1 <= x <= LIST_MAX:
                return limit, offset, name
            limit = x
        else:
            offset = x
    return limit, offset, None


FIELDS = ("client_id", "capacity", "rate_per_sec", "tokens", "state")


@dataclass
class Body:
    """struct body: a checked request body."""

    present: dict[str, Any] = field(default_factory=dict)  # fields given, by name
    client_id: bytes = b""
    capacity: int = 0
    rate: float = 0.0
    tokens: float = 0.0
    drain: bool = False


def body_parse(
    raw: bytes, allowed: tuple[str, ...], required: tuple[str, ...], cap_now: int
) -> Body | Resp:
    """Decode and check a body (body_parse): the Body, or the 400 to answer. cap_now is the
    capacity tokens is checked against when the body has none (PATCH)."""
    obj = json_decode(raw)
    if obj is None:
        return error(400, "invalid JSON")
    b = Body()
    for k, v in obj.items():
        if k not in FIELDS or k not in allowed:
            return error(400, "unknown field: " + k)
        b.present[k] = v
    for k in FIELDS:
        if k in required and k not in b.present:
            return error(400, "missing field: " + k)
    for k in FIELDS:
        if k not in b.present:
            continue
        v = b.present[k]
        if k in ("client_id", "state"):
            ok = isinstance(v, str)
        elif k == "capacity":
            ok = type(v) is int
        else:
            ok = type(v) is int or type(v) is float
        if not ok:
            return error(400, "wrong type: " + k)
    if "client_id" in b.present:
        b.client_id = b.present["client_id"].encode("utf-8")
    if "capacity" in b.present:
        b.capacity = b.present["capacity"]
        cap_now = b.capacity
    if "rate_per_sec" in b.present:
        b.rate = float(b.present["rate_per_sec"])
    if "tokens" in b.present:
        b.tokens = float(b.present["tokens"])
    for k in FIELDS:
        if k not in b.present:
            continue
        if k == "client_id":
            ok = 1 <= len(b.client_id) <= CLIENT_ID_MAX
        elif k == "capacity":
            ok = 1 <= b.capacity <= CAPACITY_MAX
        elif k == "rate_per_sec":
            ok = b.rate >= 0 and math.isfinite(b.rate)
        elif k == "tokens":
            ok = 0 <= b.tokens <= float(cap_now)
        else:
            ok = b.present[k] in ("drain", "active")
            b.drain = ok and b.present[k] == "drain"
        if not ok:
            return error(400, "invalid value: " + k)
    return b


def client_json(key: bytes, lim: Limit, tokens: float) -> bytes:
    return b'{"client_id":%s,"capacity":%d,"rate_per_sec":%s,"tokens":%s}' % (
        json_str(key),
        lim.capacity,
        format_number(lim.rate_per_sec).encode(),
        format_number(math.floor(tokens)).encode(),
    )


# routes: name -> the methods it allows (Allow, in the order GET, POST, PUT, PATCH, DELETE)
R_NONE, R_HEALTHZ, R_METRICS, R_UPSTREAMS, R_UPSTREAM, R_CLIENTS, R_CLIENT = range(7)
ALLOW = {
    R_HEALTHZ: ("GET",),
    R_METRICS: ("GET",),
    R_UPSTREAMS: ("GET",),
    R_UPSTREAM: ("PATCH",),
    R_CLIENTS: ("GET", "POST"),
    R_CLIENT: ("GET", "PUT", "PATCH", "DELETE"),
}


def route_of(path: bytes) -> tuple[int, bytes]:
    """The route of a path and its raw {name}/{id} segment."""
    fixed = {
        b"/healthz": R_HEALTHZ,
        b"/metrics": R_METRICS,
        b"/upstreams": R_UPSTREAMS,
        b"/clients": R_CLIENTS,
    }
    rt = fixed.get(path)
    if rt is not None:
        return rt, b""
    for prefix, r in ((b"/upstreams/", R_UPSTREAM), (b"/clients/", R_CLIENT)):
        if path.startswith(prefix) and len(path) > len(prefix):
            seg = path[len(prefix) :]
            if b"/" not in seg:
                return r, seg
    return R_NONE, b""


@dataclass
class Req:
    """One parsed request (struct admin_req, as handed to the handler)."""

    method: str
    url: bytes
    auth: bytes | None  # last Authorization value, trailing OWS trimmed
    body: bytes
    keep: bool  # llhttp_should_keep_alive and not an upgrade


class _Fail(Exception):
    """A parse failure with its status (enum admin_fail)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# ---- the server ----------------------------------------------------------------------------


class Admin:
    """struct admin: the server on one loop. start() begins accepting on sock (already bound
    and listening; the server owns it); stop() closes it and every connection."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        token: str,
        providers: Providers | None,
        clients: Clients | None,
        log: Log | None = None,
        idle_timeout: float = IDLE_S,
    ) -> None:
        self.loop = loop  # worker 0's loop
        self.sock = sock  # listening socket (owned)
        self.token = token.encode()  # b"" = no auth
        self.providers = providers  # /upstreams, /metrics
        self.clients = clients  # /clients; None = 404 (no rate_limit)
        self.log = log  # event log (upstream_drain, store_error)
        self.idle = idle_timeout if idle_timeout > 0 else IDLE_S
        self.conns: set[_Conn] = set()  # open connections
        self.lock = asyncio.Lock()  # one /clients change at a time (C: one admin thread)
        self.accepting = False  # the loop reader is installed

    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._on_accept)
        self.accepting = True

    def stop(self) -> None:
        if self.accepting:
            self.loop.remove_reader(self.sock.fileno())
            self.accepting = False
        self.sock.close()
        for c in list(self.conns):
            c.abort()

    def _on_accept(self) -> None:
        for _ in range(16):
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            conn.setblocking(False)
            self.loop.create_task(self.loop.connect_accepted_socket(lambda: _Conn(self), conn))

    # -- the handler (handle in admin.c) --

    def authorized(self, req: Req) -> bool:
        if not self.token:
            return True
        if req.auth is None:
            return False
        return hmac.compare_digest(req.auth, b"Bearer " + self.token)

    async def handle(self, req: Req) -> Resp:
        path, _, q = req.url.partition(b"?")
        rt, seg = route_of(path)
        open_ = req.method == "GET" and rt in (R_HEALTHZ, R_METRICS)
        if not open_ and not self.authorized(req):
            return error(401, "unauthorized")
        if rt in (R_CLIENTS, R_CLIENT) and self.clients is None:
            rt = R_NONE
        if rt == R_NONE:
            return error(404, "not found")
        if req.method not in ALLOW[rt]:
            r = error(405, "method not allowed")
            r.allow = ", ".join(ALLOW[rt])
            return r
        if rt == R_HEALTHZ:
            return Resp(200, CT_JSON, None, b'{"status":"ok"}')
        if rt == R_METRICS:
            text = self.providers.metrics() if self.providers is not None else ""
            return Resp(200, CT_METRICS, None, text.encode())
        if rt == R_UPSTREAMS:
            ups = self.providers.upstreams() if self.providers is not None else []
            return Resp(200, CT_JSON, None, json_value(ups))
        if rt == R_UPSTREAM:
            name = pct_decode(seg)
            if name is None:
                return error(404, "not found")
            return self.upstream_patch(name, req.body)
        assert self.clients is not None
        async with self.lock:
            if rt == R_CLIENTS:
                if req.method == "GET":
                    return self.clients_list(q)
                return await self.clients_create(req.body)
            cid = pct_decode(seg)
            if cid is None:
                return error(400, "invalid value: client_id")
            return await self.clients_one(req.method, cid, req.body)

    def _event(self, level: str, event: str, **fields: Any) -> None:
        if self.log is not None:
            self.log.event(level, event, **fields)

    def upstream_patch(self, name: bytes, raw: bytes) -> Resp:
        p = self.providers
        try:
            sname = name.decode("utf-8")
        except UnicodeDecodeError:
            sname = None
        u = None
        if p is not None and sname is not None and "\x00" not in sname:
            u = next((x for x in p.upstreams() if x.get("name") == sname), None)
        if u is None or p is None or sname is None:
            return error(404, "not found")
        was_drain = u.get("state") == "drain"
        b = body_parse(raw, ("state",), ("state",), 0)
        if isinstance(b, Resp):
            return b
        out = p.upstream_set_state(sname, b.drain)
        if out is None:
            return error(404, "not found")
        if was_drain != b.drain:
            self._event(
                "info", "upstream_drain", upstream=sname, state="drain" if b.drain else "active"
            )
        return Resp(200, CT_JSON, None, json_value(out))

    def clients_list(self, q: bytes) -> Resp:
        assert self.clients is not None
        limit, offset, bad = parse_query(q)
        if bad is not None:
            return error(400, "invalid query: " + bad)
        items = sorted(self.clients.table.pinned(self.clients.now()), key=lambda x: x[0])
        page = items[offset : offset + limit]
        return Resp(
            200,
            CT_JSON,
            None,
            b'{"clients":[%s],"total":%d}'
            % (b",".join(client_json(k, lim, t) for k, lim, t in page), len(items)),
        )

    async def _store(self, fut: Any) -> Any:
        return await asyncio.wrap_future(fut, loop=self.loop)

    def _store_failed(self, e: BaseException) -> Resp:
        self._event("error", "store_error", reason=str(e))
        return error(500, "store error")

    async def clients_create(self, raw: bytes) -> Resp:
        assert self.clients is not None
        cl = self.clients
        b = body_parse(raw, ("client_id", "capacity", "rate_per_sec", "tokens"),
                       ("client_id", "capacity", "rate_per_sec"), 0)  # fmt: skip
        if isinstance(b, Resp):
            return b
        now = cl.now()
        lim = Limit(b.capacity, b.rate)
        if cl.table.lookup(b.client_id, now) is not None:
            return error(409, "client exists")
        cid = b.present["client_id"]
        try:
            await self._store(
                cl.store.put_client(StoreClient(cid, lim.capacity, lim.rate_per_sec, now))
            )
        except Exception as e:
            return self._store_failed(e)
        tokens = b.tokens if "tokens" in b.present else float(lim.capacity)
        if not cl.table.pin(b.client_id, lim, tokens, now):
            try:
                await self._store(cl.store.delete_client(cid))
            except Exception as e:
                self._event("error", "store_error", reason=str(e))
            return error(503, "client table full")
        got = cl.table.lookup(b.client_id, now)
        assert got is not None
        return Resp(201, CT_JSON, None, client_json(b.client_id, got[0], got[1]))

    async def clients_one(self, method: str, cid: bytes, raw: bytes) -> Resp:
        assert self.clients is not None
        cl = self.clients
        now = cl.now()
        got = cl.table.lookup(cid, now)
        if got is None:
            return error(404, "not found")
        lim, tokens = got
        sid = cid.decode("utf-8", "surrogateescape")
        if method == "GET":
            return Resp(200, CT_JSON, None, client_json(cid, lim, tokens))
        if method == "DELETE":
            try:
                await self._store(cl.store.delete_client(sid))
            except Exception as e:
                return self._store_failed(e)
            cl.table.unpin(cid, now)
            return Resp(204, None)
        put = method == "PUT"
        allowed = ("capacity", "rate_per_sec") if put else ("capacity", "rate_per_sec", "tokens")
        b = body_parse(raw, allowed, ("capacity", "rate_per_sec") if put else (), lim.capacity)
        if isinstance(b, Resp):
            return b
        lim = Limit(
            b.capacity if "capacity" in b.present else lim.capacity,
            b.rate if "rate_per_sec" in b.present else lim.rate_per_sec,
        )
        try:
            await self._store(
                cl.store.put_client(StoreClient(sid, lim.capacity, lim.rate_per_sec, now))
            )
        except Exception as e:
            return self._store_failed(e)
        cl.table.pin(cid, lim, b.tokens if "tokens" in b.present else None, now)
        got = cl.table.lookup(cid, now)
        assert got is not None
        return Resp(200, CT_JSON, None, client_json(cid, got[0], got[1]))


class _Conn(asyncio.Protocol):
    """struct admin_conn: one connection."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.parser = httptools.HttpRequestParser(self)  # llhttp, strict
        self.transport: asyncio.Transport | None = None
        self.inbuf = bytearray()  # bytes read, not yet fed
        self.items: deque[Req | _Fail] = deque()  # parsed, not yet answered, in order
        self.busy = False  # a request is being answered (awaiting the store)
        self.closing = False  # last response queued: no more requests
        self.lingering = False  # write side shut down, discarding input
        self.dead = False  # the parser failed: nothing more is fed
        self.peer_eof = False  # the client closed its side
        self.write_paused = False  # the transport's buffer is full
        self.reading = True  # not paused
        self.timer: asyncio.TimerHandle | None = None  # idle timeout, then the linger bound
        self._reset()

    def _reset(self) -> None:
        self.url = bytearray()
        self.auth: bytes | None = None
        self.cl = -1  # Content-Length
        self.head_bytes = 0
        self.raw_bytes = 0
        self.head_done = False
        self.body = bytearray()

    # -- asyncio --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses (an isinstance assert
        # failed every admin connection under --loop uvloop)
        self.transport = cast(asyncio.Transport, transport)
        self.admin.conns.add(self)
        self._arm(self.admin.idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.admin.conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.closing = True

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        if self.lingering or self.closing:
            return
        self.inbuf += data
        self._pump()

    def eof_received(self) -> bool | None:
        if self.lingering:
            return None
        self.peer_eof = True
        self._pump()
        return True  # closed by _pump once everything is answered

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- timers --

    def _arm(self, delay: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.admin.loop.call_at(self.admin.loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.busy:
            self._arm(self.admin.idle)
            return
        if self.transport is not None:
            self.transport.close()

    # -- llhttp callbacks --

    def _count(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > HEAD_MAX:
            raise _Fail(431)

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        lname = name.lower()
        if lname == b"authorization":
            self.auth = value.rstrip(b" \t")
        elif lname == b"content-length":
            self.cl = int(value.strip(b" \t") or b"0")

    def on_headers_complete(self) -> None:
        self.head_done = True
        if self.cl > BODY_MAX:
            raise _Fail(413)

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > BODY_MAX:
            raise _Fail(413)
        self.body += body

    def on_message_complete(self) -> None:
        p = self.parser
        keep = p.should_keep_alive() and not p.should_upgrade()
        method = p.get_method().decode("ascii", "replace")
        self.items.append(Req(method, bytes(self.url), self.auth, bytes(self.body), keep))

    # -- processing (conn_process) --

    def _feed(self, data: bytes) -> None:
        in_head = not self.head_done
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            ctx = e.__context__
            self.items.append(ctx if isinstance(ctx, _Fail) else _Fail(400))
            self.dead = True
            return
        except httptools.HttpParserUpgrade:
            pass  # the upgrade request was queued; it closes the connection
        except httptools.HttpParserError:
            self.items.append(_Fail(400))
            self.dead = True
            return
        if in_head and not self.head_done:
            self.raw_bytes += len(data)
            if self.raw_bytes > HEAD_RAW_MAX:
                self.items.append(_Fail(431))
                self.dead = True

    def _pump(self) -> None:
        while not self.busy and not self.closing and not self.write_paused:
            if self.items:
                self._run(self.items.popleft())
                continue
            if not self.inbuf or self.dead:
                break
            data = bytes(self.inbuf)
            self.inbuf.clear()
            self._feed(data)
        t = self.transport
        if t is None or self.closing or self.lingering:
            return
        stalled = self.busy or self.write_paused or bool(self.items)
        if stalled and self.reading:
            t.pause_reading()
            self.reading = False
        elif not stalled and not self.reading and not self.peer_eof:
            t.resume_reading()
            self.reading = True
        if self.peer_eof and not self.busy and not self.items:
            t.close()

    def _run(self, item: Req | _Fail) -> None:
        if isinstance(item, _Fail):
            msg = {413: "body too large", 431: "header too large"}.get(item.code, "bad request")
            self._send(error(item.code, msg), close=True)
            return
        self.busy = True
        task = self.admin.loop.create_task(self.admin.handle(item))
        task.add_done_callback(lambda t: self._answered(item, t))

    def _answered(self, req: Req, task: asyncio.Task[Resp]) -> None:
        self.busy = False
        if self.transport is None or self.transport.is_closing():
            return
        if task.cancelled() or task.exception() is not None:
            r = error(500, "internal error")
        else:
            r = task.result()
        keep = req.keep and not self.peer_eof
        self._send(r, close=not keep)
        if keep:
            self._arm(self.admin.idle)
        self._pump()

    def _send(self, r: Resp, close: bool) -> None:
        t = self.transport
        assert t is not None
        t.write(serialize(r, close))
        if not close:
            return
        self.closing = True
        self.items.clear()
        if self.peer_eof:
            t.close()
            return
        self.lingering = True
        if not self.reading:
            t.resume_reading()
            self.reading = True
        t.write_eof()
        self._arm(LINGER_S)
