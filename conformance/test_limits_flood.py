"""limits.max_client_connections under a connection flood (issue 11): 500 connections
against a limit of 50. Accept pauses (the proxy holds at most the limit, the rest wait in
the kernel's accept queue: connected, not refused, not served), nothing crashes, and once
the flood is gone service resumes."""

from __future__ import annotations

import resource
import socket

import pytest
from harness import build_request, pattern, process_tree, wait_until
from slowclients import fd_count, raise_nofile

LIMIT = 50
FLOOD = 500


def still_open(s: socket.socket) -> bool:
    """Nothing arrived on s: no byte, no EOF, no reset."""
    s.setblocking(False)
    try:
        s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


@pytest.mark.timeout(120)
def test_connection_flood_pauses_accept_and_service_resumes(upstream, proxy):
    raise_nofile(4096)
    p = proxy(
        upstream(["u1"]),
        limits={"max_client_connections": LIMIT},
        timeouts={"header": "60s", "idle": "60s"},
    )
    tree = process_tree(p.proc.pid)
    assert p.request("/bytes/8").status == 200
    fds0 = fd_count(tree)

    flood: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            # every connect succeeds: what the proxy does not accept waits in its accept
            # queue (a refusal would raise ConnectionRefusedError / ConnectionResetError)
            flood.append(socket.create_connection(("127.0.0.1", p.port), timeout=10))
        p.wait_event("accept_paused")
        # the proxy holds the limit and no more (plus its own descriptors and a pooled
        # upstream connection)
        assert wait_until(lambda: fd_count(tree) >= fds0 + LIMIT - 1, 10)
        held = fd_count(tree)
        assert held <= fds0 + LIMIT, (
            f"{held - fds0} client descriptors over the baseline"
        )

        # the connections beyond the limit are neither reset nor closed: they wait
        for s in flood[LIMIT:]:
            assert still_open(s)

        # a request behind the flood is queued, not refused and not served
        with p.connect(timeout=30) as c:
            c.send(build_request("GET", "/bytes/8"))
            early = c.read_available(0.5)
            assert early == b"" and not c.eof, f"served beyond the limit: {early!r}"
            assert p.proc.poll() is None
            # the flood ends: the proxy accepts what waited (the closed ones end at once)
            for s in flood:
                s.close()
            flood.clear()
            r = c.read_response()
            assert r.status == 200 and r.body == pattern(0, 8)
    finally:
        for s in flood:
            s.close()
    p.wait_event("accept_resumed")
    assert wait_until(lambda: fd_count(tree) <= fds0 + 2, 20), (
        f"fds: {fds0} before the flood, {fd_count(tree)} after"
    )
    r = p.request("/bytes/8")
    assert r.status == 200 and r.body == pattern(0, 8)


def test_proxy_raises_its_descriptor_limit(upstream, proxy):
    # one descriptor per client and per upstream connection: a proxy started with a low
    # soft RLIMIT_NOFILE raises it to the hard limit (the C twin did; the Python twin now too)
    up = upstream(["u1"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard RLIMIT_NOFILE {hard}: nothing to raise to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        p = proxy(up)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert p.request("/").status == 200
    for pid in process_tree(p.proc.pid):
        with open(f"/proc/{pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)], line
