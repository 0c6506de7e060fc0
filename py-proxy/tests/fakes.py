"""Test doubles: a fake event loop with a manual clock, fake transports, a worker on them.

FakeLoop implements just what the proxy calls (time, call_at, call_soon, create_task,
create_connection); timers fire only when a test calls advance(). Nothing sleeps.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

from pyproxy.client import ClientConn
from pyproxy.config import Config, config_load_string
from pyproxy.health import health_set_log
from pyproxy.log import Log
from pyproxy.upstream import UpstreamSet
from pyproxy.worker import Worker

BASE_CONFIG = """\
listen: 127.0.0.1:8080
upstreams:
  - address: 127.0.0.1:9001
    name: u1
  - address: 127.0.0.1:9002
    name: u2
"""


def make_config(extra: str = "", upstreams: str | None = None) -> Config:
    text = BASE_CONFIG if upstreams is None else "listen: 127.0.0.1:8080\n" + upstreams
    return config_load_string("test.yaml", text + extra)


class FakeHandle:
    def __init__(self, when: float, cb: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.cb = cb
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTask:
    def __init__(self, coro: Any) -> None:
        self.coro = coro
        self.callbacks: list[Callable[[FakeTask], None]] = []
        self._done = False
        self._cancelled = False
        self._exc: BaseException | None = None

    def add_done_callback(self, cb: Callable[[FakeTask], None]) -> None:
        self.callbacks.append(cb)

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return self._cancelled

    def exception(self) -> BaseException | None:
        return self._exc

    def cancel(self) -> None:
        if not self._done:
            self._cancelled = True
            self._finish()

    def _finish(self) -> None:
        self._done = True
        for cb in self.callbacks:
            cb(self)


class PendingConnect:
    """A create_connection the test completes with succeed() or fail()."""

    def __init__(self, loop: FakeLoop, factory: Callable[[], Any], host: str, port: int) -> None:
        self.loop = loop
        self.factory = factory
        self.host = host
        self.port = port
        self.task: FakeTask | None = None

    def __await__(self) -> Any:  # never awaited for real
        raise NotImplementedError
        yield

    def succeed(self, sock: Any = None) -> FakeTransport:
        """Connected; `sock` (e.g. one end of a socketpair) is what the transport reports as
        its socket."""
        proto = self.factory()
        t = FakeTransport(self.loop, proto, peer=(self.host, self.port), sock=sock)
        proto.connection_made(t)
        assert self.task is not None
        self.task._finish()
        return t

    def fail(self, exc: BaseException | None = None) -> None:
        assert self.task is not None
        self.task._exc = exc if exc is not None else ConnectionRefusedError()
        self.task._finish()


class FakeLoop:
    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, int, FakeHandle]] = []
        self.seq = itertools.count()
        self.soon: list[FakeHandle] = []
        self.connects: list[PendingConnect] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: Callable[..., Any], *args: Any) -> FakeHandle:
        h = FakeHandle(when, cb, args)
        heapq.heappush(self.timers, (when, next(self.seq), h))
        return h

    def call_later(self, delay: float, cb: Callable[..., Any], *args: Any) -> FakeHandle:
        return self.call_at(self.now + delay, cb, *args)

    def call_soon(self, cb: Callable[..., Any], *args: Any) -> FakeHandle:
        h = FakeHandle(self.now, cb, args)
        self.soon.append(h)
        return h

    def run_soon(self) -> None:
        while self.soon:
            batch, self.soon = self.soon, []
            for h in batch:
                if not h.cancelled:
                    h.cb(*h.args)

    def advance(self, seconds: float) -> None:
        """Move the clock, firing due timers in order (and call_soon callbacks after each)."""
        end = self.now + seconds
        self.run_soon()
        while self.timers and self.timers[0][0] <= end:
            when, _, h = heapq.heappop(self.timers)
            if h.cancelled:
                continue
            self.now = max(self.now, when)
            h.cb(*h.args)
            self.run_soon()
        self.now = end

    def create_connection(self, factory: Callable[[], Any], host: str, port: int) -> Any:
        pc = PendingConnect(self, factory, host, port)
        self.connects.append(pc)
        return pc

    def create_task(self, coro: Coroutine[Any, Any, Any] | PendingConnect) -> FakeTask:
        task = FakeTask(coro)
        if isinstance(coro, PendingConnect):
            coro.task = task
        return task


class FakeTransport:
    def __init__(
        self, loop: FakeLoop, protocol: Any, peer: tuple[str, int], sock: Any = None
    ) -> None:
        self.loop = loop
        self.protocol = protocol
        self.peer = peer
        self.sock = sock  # get_extra_info("socket"), None: the fake has none
        self.written = bytearray()
        self.reading = True
        self.closing = False
        self.aborted = False
        self.lost = False
        self.eof_sent = False
        self.buffered = 0  # what get_write_buffer_size() says (bytes not yet sent)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "socket" and self.sock is not None:
            return self.sock
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.written += data

    def writelines(self, parts: list[bytes]) -> None:
        for p in parts:
            self.write(p)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_sent = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self._lost)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def _lost(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(None)

    def take(self) -> bytes:
        out = bytes(self.written)
        self.written.clear()
        return out

    def peer_close(self) -> None:
        """The remote end closes."""
        self.closing = True
        self._lost()


class CaptureLog(Log):
    """A Log that keeps access fields and events in lists."""

    def __init__(self) -> None:
        super().__init__("debug", "off", "json")
        self.lines: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []  # info and above
        self.debug_events: list[tuple[str, dict[str, Any]]] = []  # the reason-bearing ones

    @property
    def access_enabled(self) -> bool:
        return True

    def access(self, *args: Any) -> None:  # type: ignore[override]
        keys = [
            "ts",
            "client",
            "method",
            "path",
            "status",
            "upstream",
            "attempts",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "request_id",
            "worker",
        ]
        self.lines.append(dict(zip(keys, args, strict=True)))

    def event(self, level: str, event: str, **fields: Any) -> None:
        (self.debug_events if level == "debug" else self.events).append((event, fields))


class Harness:
    """A worker on a FakeLoop, plus helpers to open clients and answer upstream connects."""

    def __init__(self, cfg: Config | None = None) -> None:
        self.loop = FakeLoop()
        self.log = CaptureLog()
        self.cfg = cfg if cfg is not None else make_config()
        health_set_log(self.log)  # upstream_down / upstream_up land in self.log.events
        self.w = Worker(self.loop, self.log)  # type: ignore[arg-type]
        self.w.install_set(UpstreamSet(self.loop, self.cfg))  # type: ignore[arg-type]

    def client(self, port: int = 40000) -> tuple[ClientConn, FakeTransport]:
        c = ClientConn(self.w)
        t = FakeTransport(self.loop, c, peer=("127.0.0.1", port))
        c.connection_made(t)  # type: ignore[arg-type]
        return c, t

    def connect(self, i: int = -1) -> tuple[Any, FakeTransport]:
        """Complete pending connect i (default: the latest); returns (protocol, transport)."""
        pc = self.loop.connects.pop(i)
        t = pc.succeed()
        return t.protocol, t
