"""listener: the listening sockets and accept. Twin: c-proxy/src/listener.c.

Accept runs on a loop reader of our own listening socket (not loop.create_server) so that
limits.max_client_connections can pause accepting: the reader is removed at the limit and
added back below it (the C twin's ev_io_stop/ev_io_start on the listen watcher); pending
connections wait in the kernel backlog, they are not refused.

Workers: the C twin runs N threads with one event loop each; Python runs N processes
(main.py forks them), each with its own SO_REUSEPORT socket bound by the parent before the fork.
A Listener watches one socket on its worker's loop and hands every accepted socket to the
protocol factory its creator injects (main passes ClientConn): the listener knows nothing
about clients.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyproxy.config import ConfigAddr
    from pyproxy.worker import Worker

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


class Listener:
    """The accept watcher of one worker's listening socket."""

    def __init__(
        self,
        w: Worker,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        counter: ClientCounter | None = None,
    ) -> None:
        self.w = w  # the loop it accepts on
        self.sock = sock  # owned: closed by stop()
        self.fd = sock.fileno()
        self.factory = factory  # injected: builds the protocol of an accepted socket
        self.counter = counter if counter is not None else ClientCounter()  # every worker's
        self.accepting = False  # the loop reader is installed (ev_io started)
        self.paused = False  # at max_client_connections (or out of descriptors)
        self.stopped = False  # stop() was called
        self.poll: asyncio.TimerHandle | None = None  # while paused: re-check the count
        # accepted sockets whose protocol is not made yet (connect_accepted_socket is a
        # task): a drain must wait for them (the C twin makes its client in accept)
        self.pending = 0

    def _limit(self) -> int:
        return self.w.cfg.limits.max_client_connections or (1 << 62)

    def start(self) -> None:
        if not self.accepting and not self.stopped:
            self.w.loop.add_reader(self.fd, self.on_accept)
            self.accepting = True

    def _stop_accepting(self) -> None:
        if self.accepting:
            self.w.loop.remove_reader(self.fd)
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
        loop = self.w.loop
        counter = self.counter
        limit = self._limit()
        for _ in range(ACCEPT_BATCH):
            if counter.value >= limit:
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
            counter.add(1)  # counts at once; conn_gone() takes it back
            self.pending += 1
            task = loop.create_task(loop.connect_accepted_socket(self.factory, conn))
            task.add_done_callback(self._on_accepted)

    def _on_accepted(self, task: asyncio.Task[object]) -> None:
        self.pending -= 1
        if task.cancelled() or task.exception() is not None:
            self.conn_gone()

    def conn_gone(self) -> None:
        """A client left (or an accepted socket never became one): the count goes down and
        accept may resume (listener_conn_gone)."""
        self.counter.add(-1)
        self.maybe_resume()

    def pause(self) -> None:
        if self.paused or self.stopped:
            return
        self.paused = True
        self._stop_accepting()
        self._arm_poll()
        self.w.log.event("warn", "accept_paused", worker=self.w.id, clients=self.counter.value)

    def _arm_poll(self) -> None:
        loop = self.w.loop
        self.poll = loop.call_at(loop.time() + ACCEPT_POLL_S, self._on_poll)

    def _on_poll(self) -> None:
        self.poll = None
        self.maybe_resume()
        if self.paused and not self.stopped:
            self._arm_poll()

    def maybe_resume(self) -> None:
        if not self.paused or self.stopped or self.counter.value >= self._limit():
            return
        self.paused = False
        if self.poll is not None:
            self.poll.cancel()
            self.poll = None
        self.start()
        self.w.log.event("info", "accept_resumed", worker=self.w.id, clients=self.counter.value)
