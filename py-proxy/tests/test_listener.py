"""listener: accept pausing at max_client_connections, the client counter, binding.
Twin: c-proxy/tests/test_listener.c. Real sockets on loopback, a real loop; every wait is
for I/O with a deadline (no timer is driven by sleeping)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from fakes import CaptureLog, make_config

from pyproxy.client import ClientConn
from pyproxy.config import config_load_string
from pyproxy.listener import BindError, ClientCounter, Listener, listener_bind
from pyproxy.upstream import UpstreamSet
from pyproxy.worker import Worker


def test_counter_local_and_shared() -> None:
    for shared in (False, True):
        c = ClientCounter(shared=shared)
        c.add(2)
        c.add(-1)
        assert c.value == 1


def test_bind_error_names_the_listen_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = config_load_string(
            "f.yaml", "upstreams:\n  - address: 127.0.0.1:1\nlisten: 127.0.0.1:%d\n" % port
        )
        with pytest.raises(BindError) as e:
            listener_bind(cfg.listen, "f.yaml", reuseport=False)
        assert str(e.value) == "f.yaml:%d: listen: address in use" % cfg.listen.line


def test_accept_pauses_at_the_limit_and_resumes() -> None:
    cfg = make_config("limits:\n  max_client_connections: 2\n")
    loop = asyncio.new_event_loop()
    log = CaptureLog()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    port = sock.getsockname()[1]

    class Hooks:
        def on_config(self, w: Worker, cfg: object) -> None:
            pass

        def on_drain(self, w: Worker) -> None:
            pass

        def on_conn_gone(self, w: Worker) -> None:
            listener.conn_gone()

    w = Worker(loop, log, 0, Hooks())  # type: ignore[arg-type]
    w.install_set(UpstreamSet(loop, cfg))
    listener = Listener(w, sock, lambda: ClientConn(w))
    listener.start()

    async def until(cond: object, limit: float = 3.0) -> None:
        end = loop.time() + limit
        while not cond() and loop.time() < end:  # type: ignore[operator]
            await asyncio.sleep(0.01)
        assert cond(), "condition not reached"  # type: ignore[operator]

    async def scenario() -> None:
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        await until(lambda: len(w.conns) == 2 and listener.paused)
        assert [e for e, _ in log.events] == ["accept_paused"]
        # the third waits in the backlog (not refused); closing one lets it in
        clients[0].close()
        await until(lambda: len(w.conns) == 2 and "accept_resumed" in [e for e, _ in log.events])
        for c in clients[1:]:
            c.close()
        await until(lambda: not w.conns)

    try:
        loop.run_until_complete(scenario())
    finally:
        listener.stop()
        loop.close()
