"""listener: bind, accept, and the per-worker runtime. Twin: c-proxy/src/listener.c.

Accept runs on a loop reader of our own listening socket (not loop.create_server) so that
limits.max_client_connections can pause accepting: the reader is removed at the limit and
added back below it (the C twin's ev_io_stop/ev_io_start on the listen watcher); pending
connections wait in the kernel backlog, they are not refused.

Workers: the C twin runs N threads with one event loop each; Python runs N processes
(main.py forks them), each with its own SO_REUSEPORT socket bound by the parent before the fork.
A Runtime is one worker's state: its loop, the current config generation, the upstream pools,
the log and the set of client connections.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import TYPE_CHECKING, Any

from pyproxy.client import ClientConn
from pyproxy.log import Log
from pyproxy.upstream import UpstreamSet

if TYPE_CHECKING:
    from pyproxy.config import Config, ConfigAddr

ACCEPT_BATCH = 64  # accepts per readiness event, for fairness
ACCEPT_POLL_S = 0.1  # while paused: how often the client count is re-checked
BACKLOG = 4096


class BindError(Exception):
    """A listen socket that cannot be bound; str() is the config error text."""


def listener_bind(addr: ConfigAddr, cfg_path: str, reuseport: bool) -> socket.socket:
    """A non-blocking listening socket on addr. Raises BindError("FILE:LINE: listen: ...")."""
    sock = socket.socket(addr.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if addr.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr.sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        why = "address in use" if e.errno == errno.EADDRINUSE else os.strerror(e.errno or 0)
        raise BindError("%s:%d: listen: %s" % (cfg_path, addr.line, why)) from None
    return sock


class ClientCounter:
    """Client connections of the whole process tree (the C twin's atomic listener_clients).
    One worker: a plain int. Several: a shared-memory integer created before the fork."""

    def __init__(self, shared: bool = False) -> None:
        self._shared: Any = None  # multiprocessing Value, or None
        self._local = 0  # the count when not shared
        if shared:
            import multiprocessing

            self._shared = multiprocessing.get_context("fork").Value("q", 0)

    def add(self, n: int) -> None:
        if self._shared is None:
            self._local += n
        else:
            with self._shared.get_lock():
                self._shared.value += n

    @property
    def value(self) -> int:
        return self._local if self._shared is None else int(self._shared.value)


class Runtime:
    """One worker (struct worker): owns the current upstream set, the log, the listener and
    every ClientConn."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        cfg: Config,
        log: Log,
        wid: int = 0,
        counter: ClientCounter | None = None,
    ) -> None:
        self.loop = loop
        self.id = wid  # worker number (logs)
        self.log = log  # access + event log
        self.clients: set[ClientConn] = set()  # open client connections
        self.pending_accepts = 0  # accepted sockets whose connection_made has not run yet
        self.counter = counter if counter is not None else ClientCounter()  # every worker's
        self.draining = False  # shutdown in progress: no accept, no keep-alive
        self.listener: Listener | None = None
        self.uset = self._new_set(cfg)  # current upstream set

    def _new_set(self, cfg: Config) -> UpstreamSet:
        return UpstreamSet(self.loop, cfg)

    def take_config(self, cfg: Config) -> None:
        """Reload: new requests use `cfg`; in-flight ones finish on the set they started with.
        The old set is retired (idle upstream connections close now, busy ones on release)."""
        if self.draining:
            return
        old = self.uset
        self.uset = self._new_set(cfg)
        old.retire()

    @property
    def n_clients(self) -> int:
        """Client connections counted against limits.max_client_connections."""
        return self.counter.value

    def client_accepted(self) -> None:
        """A socket was accepted: it counts at once (its ClientConn comes a little later)."""
        self.pending_accepts += 1
        self.counter.add(1)

    def client_accept_failed(self) -> None:
        self.pending_accepts = max(0, self.pending_accepts - 1)
        self.counter.add(-1)

    def client_opened(self, c: ClientConn) -> None:
        if self.pending_accepts > 0:
            self.pending_accepts -= 1  # counted when accepted
        else:
            self.counter.add(1)
        self.clients.add(c)

    def client_closed(self, c: ClientConn) -> None:
        if c in self.clients:
            self.clients.discard(c)
            self.counter.add(-1)
        if self.listener is not None:
            self.listener.maybe_resume()

    def begin_drain(self) -> None:
        """Stop accepting, close idle connections, let the others finish their exchange."""
        if self.draining:
            return
        self.draining = True
        if self.listener is not None:
            self.listener.stop()
        self.uset.retire()
        for c in list(self.clients):
            c.on_shutdown()

    def abort_all(self) -> None:
        """Shutdown timeout: close what is left."""
        for c in list(self.clients):
            c.close(abort=True)


class Listener:
    """The accept watcher of one worker's listening socket."""

    def __init__(self, rt: Runtime, sock: socket.socket) -> None:
        self.rt = rt
        self.sock = sock  # owned: closed by stop()
        self.fd = sock.fileno()
        self.accepting = False  # the loop reader is installed (ev_io started)
        self.paused = False  # at max_client_connections (or out of descriptors)
        self.stopped = False  # stop() was called
        self.poll: asyncio.TimerHandle | None = None  # while paused: re-check the count

    def start(self) -> None:
        if not self.accepting and not self.stopped:
            self.rt.loop.add_reader(self.fd, self.on_accept)
            self.accepting = True

    def _stop_accepting(self) -> None:
        if self.accepting:
            self.rt.loop.remove_reader(self.fd)
            self.accepting = False

    def stop(self) -> None:
        """Close the listening socket for good (shutdown)."""
        self._stop_accepting()
        if self.poll is not None:
            self.poll.cancel()
            self.poll = None
        if not self.stopped:
            self.stopped = True
            self.sock.close()

    def on_accept(self) -> None:
        rt = self.rt
        limit = rt.uset.cfg.limits.max_client_connections or (1 << 62)
        for _ in range(ACCEPT_BATCH):
            if rt.n_clients >= limit:
                self.pause()
                return
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.pause()  # out of descriptors: retry on the poll timer
                return
            conn.setblocking(False)
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            rt.client_accepted()
            task = rt.loop.create_task(
                rt.loop.connect_accepted_socket(lambda: ClientConn(rt), conn)
            )
            task.add_done_callback(self._on_accepted)

    def _on_accepted(self, task: asyncio.Task[object]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.rt.client_accept_failed()
            self.maybe_resume()

    def pause(self) -> None:
        if self.paused or self.stopped:
            return
        self.paused = True
        self._stop_accepting()
        self._arm_poll()
        self.rt.log.event("warn", "accept_paused", worker=self.rt.id, clients=self.rt.n_clients)

    def _arm_poll(self) -> None:
        loop = self.rt.loop
        self.poll = loop.call_at(loop.time() + ACCEPT_POLL_S, self._on_poll)

    def _on_poll(self) -> None:
        self.poll = None
        self.maybe_resume()
        if self.paused and not self.stopped:
            self._arm_poll()

    def maybe_resume(self) -> None:
        limit = self.rt.uset.cfg.limits.max_client_connections or (1 << 62)
        if not self.paused or self.stopped or self.rt.n_clients >= limit:
            return
        self.paused = False
        if self.poll is not None:
            self.poll.cancel()
            self.poll = None
        self.start()
        self.rt.log.event("info", "accept_resumed", worker=self.rt.id, clients=self.rt.n_clients)
