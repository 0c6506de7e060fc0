"""The runner's own network pieces against an in-test HTTP server: the S8/S9 client
(X-Upstream, status, latency), the S7 idle-connection opener and the S8 delay proxy."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.runner import httpclient, idleconns
from testkit import ports

pytestmark = pytest.mark.timeout(30)
ROOT = Path(__file__).resolve().parents[2]


class _Handler(socketserver.StreamRequestHandler):
    """Keep-alive HTTP/1.1: GET /status/N answers N, /delay/MS waits, else 200."""

    def handle(self) -> None:
        try:
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                path = line.split(b" ")[1].decode()
                status = 200
                if path.startswith("/status/"):
                    status = int(path[8:])
                elif path.startswith("/delay/"):
                    time.sleep(int(path[7:]) / 1000)
                self.wfile.write(
                    b"HTTP/1.1 %d X\r\nX-Upstream: t1\r\nContent-Length: 3\r\n\r\nok\n"
                    % status
                )
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


def test_paced_client_counts_upstreams_and_statuses(server: Server) -> None:
    res = asyncio.run(httpclient.paced("127.0.0.1", server.port, "/", 200, 0.5, 4))
    assert 90 <= len(res) <= 101
    assert all(r.status == 200 and r.upstream == "t1" for r in res)
    errs = asyncio.run(
        httpclient.paced("127.0.0.1", server.port, "/status/502", 50, 0.2, 2)
    )
    assert errs and all(r.status == 502 for r in errs)


def test_burst_measures_latency(server: Server) -> None:
    res = asyncio.run(
        httpclient.burst("127.0.0.1", server.port, "/delay/50", 6, 3, timeout=2)
    )
    assert len(res) == 6
    assert all(r.status == 200 and 0.045 < r.latency_s < 1.0 for r in res)


def test_connection_refused_is_status_0() -> None:
    port = ports.free_port()
    res = asyncio.run(httpclient.burst("127.0.0.1", port, "/", 2, 2, timeout=1))
    assert [r.status for r in res] == [0, 0]


def test_idle_connections_open_and_stay(server: Server) -> None:
    ic = idleconns.IdleConnections()
    try:
        assert ic.open("127.0.0.1", server.port, 200, timeout_s=10) == 200
        assert ic.alive() == 200
    finally:
        ic.close()


def test_delay_proxy_adds_delay(server: Server) -> None:
    port = ports.free_port()
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtest.runner.delayproxy",
            "--listen",
            f"127.0.0.1:{port}",
            "--to",
            f"127.0.0.1:{server.port}",
            "--delay-ms",
            "40",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            for _ in range(2):  # kept alive: every request is delayed
                t0 = time.monotonic()
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while not data.endswith(b"ok\n"):
                    data += s.recv(4096)
                assert time.monotonic() - t0 >= 0.035
                assert b"X-Upstream: t1" in data
    finally:
        p.terminate()
        p.wait(timeout=5)
