"""testkit against the real /proc and sockets (no mocks: it is what every suite relies on)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from testkit import durations, ports, proc


def test_free_port_is_bindable_and_never_repeated() -> None:
    seen = {ports.free_port() for _ in range(50)}
    assert len(seen) == 50
    assert all(ports.LOW <= p < ports.HIGH for p in seen)
    with socket.socket() as s:
        s.bind(("127.0.0.1", seen.pop()))


def test_is_listening_sees_a_listener_and_its_close() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", ports.free_port()))
    port = s.getsockname()[1]
    assert not ports.is_listening(port)
    s.listen()
    assert ports.is_listening(port)
    s.close()
    assert not ports.is_listening(port)


def test_process_tree_counts_children_and_their_resources() -> None:
    code = "import subprocess,sys,time; c=subprocess.Popen([sys.executable,'-c','import time; time.sleep(30)']); print(c.pid, flush=True); time.sleep(30)"
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        tree = proc.process_tree(parent.pid)
        assert tree[0] == parent.pid and child in tree and len(tree) == 2
        assert proc.processes(parent.pid) == 2
        assert proc.threads(parent.pid) >= 2
        assert proc.rss_kb(parent.pid) > proc.rss_kb(child) > 0
        assert proc.fd_count(parent.pid) > proc.fd_count(child) > 0
        assert proc.cpu_s(parent.pid) >= 0.0
        os.kill(child, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while proc.state(child) != "T":
            assert time.monotonic() < deadline, proc.state(child)
            time.sleep(0.001)
        os.kill(child, signal.SIGCONT)
    finally:
        parent.kill()
        parent.wait()
        os.kill(child, 9)


def test_own_cpu_grows() -> None:
    before = proc.cpu_s(os.getpid())
    rounds = 0
    while (
        True
    ):  # burn CPU until the kernel's tick counters show it (bounded by the timeout)
        rounds += 1
        sum(range(10000))
        if proc.cpu_s(os.getpid()) > before:
            break
    assert rounds > 0


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("2s", 2000),
        ("1m", 60000),
        ("1h", 3600000),
        (1500, 1500),
        ("7", 7),
    ],
)
def test_durations_use_the_config_grammar(text: object, ms: int) -> None:
    assert durations.duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["soon", "1.5s", "-1s", "2 s", True])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        durations.duration_ms(bad)


def test_sizes() -> None:
    assert durations.size_bytes("16k") == 16384
    assert durations.size_bytes("10m") == 10 * 1024 * 1024
    assert durations.size_bytes(7) == 7
    with pytest.raises(ValueError):
        durations.size_bytes("big")
