"""End-to-end tests of the null proxy: bytes arrive unchanged in both directions, a
half-close is passed on, many connections at once, the process stays alive."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

BIN = os.environ.get(
    "NULLPROXY", os.path.join(os.path.dirname(__file__), "..", "build", "nullproxy")
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _echo_server() -> tuple[socket.socket, int]:
    """Echoes every byte back; after the client's EOF it sends b"bye" and closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def handle(c: socket.socket) -> None:
        with c:
            while True:
                d = c.recv(65536)
                if not d:
                    c.sendall(b"bye")
                    return
                c.sendall(d)

    def loop() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv, int(srv.getsockname()[1])


@pytest.fixture()
def relay() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    srv, up = _echo_server()
    port = _free_port()
    p = subprocess.Popen(
        [BIN, f"127.0.0.1:{port}", f"127.0.0.1:{up}"], stdout=subprocess.PIPE
    )
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    yield port, p
    p.terminate()
    assert p.wait(5) == 0
    srv.close()


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        assert d, f"EOF after {len(buf)} of {n} bytes"
        buf += d
    return buf


def test_bytes_both_ways_and_half_close(
    relay: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, p = relay
    payload = os.urandom(
        3 * 1024 * 1024
    )  # several pipe-fulls: exercises the pending path
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        got: list[bytes] = []
        t = threading.Thread(target=lambda: got.append(_recv_exact(s, len(payload))))
        t.start()
        s.sendall(payload)
        t.join(10)
        assert got == [payload]
        s.shutdown(
            socket.SHUT_WR
        )  # the upstream sees EOF only if the relay passes it on
        assert _recv_exact(s, 3) == b"bye"
        assert s.recv(1) == b""
    assert p.poll() is None


def test_many_connections(relay: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, p = relay
    conns = [
        socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)
    ]
    for i, s in enumerate(conns):
        s.sendall(b"%d\n" % i)
    for i, s in enumerate(conns):
        want = b"%d\n" % i
        assert _recv_exact(s, len(want)) == want
        s.close()
    assert p.poll() is None


def test_bad_arguments() -> None:
    r = subprocess.run([BIN, "nonsense"], capture_output=True, check=False)
    assert r.returncode == 2 and b"usage" in r.stderr
