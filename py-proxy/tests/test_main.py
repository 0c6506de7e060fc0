"""main: command line, exit codes and one end-to-end run through real sockets.
Twin: c-proxy/tests/test_main.c (the CLI half)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pyproxy.main import run

UPSTREAM_BIN = Path(__file__).resolve().parents[2] / "upstreams" / "build" / "upstream"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_cfg(tmp_path: Path, listen_port: int, up_port: int = 9001, extra: str = "") -> str:
    p = tmp_path / "c.yaml"
    p.write_text(
        "listen: 127.0.0.1:%d\nupstreams:\n  - address: 127.0.0.1:%d\n    name: u1\n%s"
        % (listen_port, up_port, extra)
    )
    return str(p)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.startswith("py-proxy ")


def test_check_valid(tmp_path: Path) -> None:
    assert run(["--config", write_cfg(tmp_path, free_port()), "--check"]) == 0


def test_check_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_cfg(tmp_path, free_port(), extra="bogus: 1\n")
    assert run(["--config", path, "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: %s:5: " % path) and err.count("\n") == 1


def test_listen_address_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        path = write_cfg(tmp_path, s.getsockname()[1])
        assert run(["--config", path]) == 2
    assert capsys.readouterr().err == "config error: %s:1: listen: address in use\n" % path


@pytest.mark.skipif(not UPSTREAM_BIN.exists(), reason="upstreams/build/upstream not built")
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_end_to_end_and_graceful_stop(tmp_path: Path, loop: str) -> None:
    up_port, px_port = free_port(), free_port()
    up = subprocess.Popen(
        [str(UPSTREAM_BIN), "--listen", "127.0.0.1:%d" % up_port, "--name", "u1", "--quiet"],
        stdout=subprocess.PIPE,
    )
    px = None
    try:
        assert up.stdout is not None and up.stdout.readline() == b"ready\n"
        cfg = write_cfg(tmp_path, px_port, up_port)
        px = subprocess.Popen(
            [sys.executable, "-m", "pyproxy.main", "--config", cfg, "--loop", loop],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert px.stderr is not None and b'"event":"start"' in px.stderr.readline()
        with socket.create_connection(("127.0.0.1", px_port), timeout=5) as c:
            c.sendall(b"GET /bytes/5 HTTP/1.1\r\nHost: t\r\n\r\n")
            got = b""
            while not got.endswith(b"01234"):
                got += c.recv(4096)
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Upstream: u1\r\n" in got
        px.send_signal(signal.SIGTERM)
        assert px.wait(timeout=10) == 0
        assert px.stdout is not None and b'"status":200' in px.stdout.read()
    finally:
        for p in (px, up):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
