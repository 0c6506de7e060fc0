"""S7: open N idle keep-alive connections to a proxy with non-blocking sockets.

Each connection sends one GET and reads its whole response (so the proxy has parsed a
request and holds a keep-alive client connection), then stays idle. The caller measures
the proxy's RSS, then calls close().
"""

from __future__ import annotations

import resource
import selectors
import socket
import time

REQUEST = b"GET /bytes/0 HTTP/1.1\r\nHost: bench\r\n\r\n"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class IdleConnections:
    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self.ok = 0
        self.failed = 0

    def open(
        self, host: str, port: int, n: int, timeout_s: float, batch: int = 256
    ) -> int:
        """Open n connections (``batch`` connects in flight at a time); returns how many
        completed their request and are now idle."""
        sel = selectors.DefaultSelector()
        deadline = time.monotonic() + timeout_s
        pending = n
        inflight = 0
        state: dict[socket.socket, bytearray] = {}
        try:
            while (pending or inflight) and time.monotonic() < deadline:
                while pending and inflight < batch:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    try:
                        s.connect_ex((host, port))
                    except OSError:
                        s.close()
                        self.failed += 1
                        pending -= 1
                        continue
                    sel.register(s, selectors.EVENT_WRITE)
                    state[s] = bytearray()
                    pending -= 1
                    inflight += 1
                for key, ev in sel.select(timeout=0.1):
                    s = key.fileobj  # type: ignore[assignment]
                    assert isinstance(s, socket.socket)
                    try:
                        if ev & selectors.EVENT_WRITE:
                            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            if err:
                                raise OSError(err, "connect")
                            s.send(REQUEST)
                            sel.modify(s, selectors.EVENT_READ)
                            continue
                        data = s.recv(65536)
                        if not data:
                            raise OSError("closed")
                        buf = state[s]
                        buf += data
                        if b"\r\n\r\n" in buf:
                            head, _, body = bytes(buf).partition(b"\r\n\r\n")
                            cl = 0
                            for ln in head.split(b"\r\n")[1:]:
                                k, _, v = ln.partition(b":")
                                if k.strip().lower() == b"content-length":
                                    cl = int(v)
                            if len(body) >= cl:
                                sel.unregister(s)
                                del state[s]
                                inflight -= 1
                                if head.startswith(b"HTTP/1.1 2"):
                                    self.socks.append(s)
                                    self.ok += 1
                                else:
                                    s.close()
                                    self.failed += 1
                    except OSError:
                        sel.unregister(s)
                        state.pop(s, None)
                        s.close()
                        inflight -= 1
                        self.failed += 1
        finally:
            for s in list(state):
                try:
                    sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()
                self.failed += 1
            sel.close()
        return self.ok

    def alive(self) -> int:
        """How many of the idle connections the proxy has not closed (non-blocking peek)."""
        n = 0
        for s in self.socks:
            try:
                data = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                if data:
                    n += 1
            except BlockingIOError:
                n += 1
            except OSError:
                pass
        return n

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks.clear()
