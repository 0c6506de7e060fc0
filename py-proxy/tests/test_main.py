"""main: command line, exit codes and one end-to-end run through real sockets.
Twin: c-proxy/tests/test_main.c (the CLI half)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import CaptureLog
from testkit.ports import free_port

from pyproxy.config import config_load
from pyproxy.main import (
    RL_RESTART_WARNING,
    ProcessShared,
    WorkerProcess,
    load_for_reload,
    run,
    store_load_into,
    store_open_checked,
)
from pyproxy.metrics import C_RL_LIMITED, Counters
from pyproxy.ratelimit import Limit, table_new
from pyproxy.store import Store, StoreBucket, StoreClient
from pyproxy.store import dump as store_dump
from pyproxy.util import VERSION

UPSTREAM_BIN = Path(__file__).resolve().parents[2] / "upstreams" / "build" / "upstream"


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


# ---- rate limiting: the store at start and at stop --------------------------------------------


def rl_cfg(tmp_path: Path, store: Path, extra: str = "", port: int = 0) -> str:
    return write_cfg(
        tmp_path,
        port or free_port(),
        extra="rate_limit:\n  key: header:X-Key\n  default: {capacity: 5, rate_per_sec: 0}\n"
        "  store: %s\n%s" % (store, extra),
    )


def test_store_error_is_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all\n" * 100)
    path = rl_cfg(tmp_path, junk)
    for args in (["--check"], []):
        assert run(["--config", path, *args]) == 2
        assert capsys.readouterr().err == (
            "config error: %s:8: store %s: not a SQLite database\n" % (path, junk)
        )


def test_check_accepts_a_missing_store_and_creates_nothing(tmp_path: Path) -> None:
    store = tmp_path / "later.db"
    assert run(["--config", rl_cfg(tmp_path, store), "--check"]) == 0
    assert not store.exists()


def test_admin_listen_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        path = write_cfg(
            tmp_path, free_port(), extra="admin:\n  listen: 127.0.0.1:%d\n" % s.getsockname()[1]
        )
        assert run(["--config", path]) == 2
    assert capsys.readouterr().err == "config error: %s:6: admin.listen: address in use\n" % path


def test_store_loaded_on_start(tmp_path: Path) -> None:
    """Overrides are pinned first, then the saved buckets are set (a full one is left out)."""
    now = time.time()
    s = Store.open(str(tmp_path / "rl.db"))
    s.put_client(StoreClient("alice", 9, 0.0, now)).result()
    s.save_buckets(
        [
            StoreBucket("alice", 4.0, now),
            StoreBucket("bob", 1.0, now),
            StoreBucket("carol", 5.0, now - 100),  # full: equals a fresh bucket
        ]
    )
    s.flush()
    table = table_new(64, Limit(5, 0))
    assert store_load_into(s, table, now) == 0
    s.close()
    assert table.lookup(b"alice", now) == (Limit(9, 0), 4.0)
    r = table.take(b"alice", None, now)
    assert (r.limit, r.remaining) == (9, 3)
    r = table.take(b"bob", None, now)
    assert (r.limit, r.remaining) == (5, 0)
    assert table.count() == 2  # carol is not loaded


def test_store_saved_on_shutdown(tmp_path: Path) -> None:
    """What run() does after its loop stopped: the token state reaches the store (and only
    buckets that changed since the last save are written again)."""
    db = tmp_path / "rl.db"
    cfg = config_load(rl_cfg(tmp_path, db))
    store = store_open_checked(cfg, readonly=False)
    assert store is not None
    table = table_new(64, Limit(5, 0))
    sock = socket.socket()
    wp = WorkerProcess(
        cfg, sock, "asyncio", True, 0, None, ProcessShared(table, store, None, Counters())
    )
    try:
        now = time.time()
        table.take(b"alice", None, now)
        table.take(b"alice", None, now)
        assert wp.saver is not None
        assert wp.saver.writer.save() is None
        commits = store.commits
        assert wp.saver.writer.save() is None
        assert store.commits == commits  # nothing changed: nothing written
        table.take(b"bob", None, now)
        wp._stop_services()  # the graceful stop's last save, then the store closes
    finally:
        wp.loop.close()
        sock.close()
    text = store_dump(str(db))
    assert "bucket alice 3 " in text and "bucket bob 4 " in text, text


def test_reload_rate_limit_restart_warnings(tmp_path: Path) -> None:
    store = tmp_path / "rl.db"
    port = free_port()
    started = config_load(rl_cfg(tmp_path, store, port=port))
    log = CaptureLog()
    moved = rl_cfg(tmp_path, tmp_path / "other.db", port=port)
    assert load_for_reload(moved, started, log, False, started) is not None
    assert log.events == [("reload", {"warning": RL_RESTART_WARNING})]
    log.events.clear()
    plain = write_cfg(tmp_path, port)
    load_for_reload(plain, started, log, False, started)  # rate_limit removed
    assert ("reload", {"warning": RL_RESTART_WARNING}) in log.events
    log.events.clear()
    same = rl_cfg(tmp_path, store, "log: {level: info}\n", port=port)
    load_for_reload(same, started, log, False, started)  # a new default: applied, no warning
    assert log.events == []


def test_admin_providers(tmp_path: Path) -> None:
    cfg = config_load(write_cfg(tmp_path, free_port()))
    sock = socket.socket()
    wp = WorkerProcess(cfg, sock, "asyncio", True)
    try:
        assert [u["name"] for u in wp.upstreams()] == ["u1"]
        assert wp.upstream_set_state("nope", True) is None
        got = wp.upstream_set_state("u1", True)
        assert got is not None and got["state"] == "drain"
        assert wp.upstream_set_state("u1", False) == {**got, "state": "active"}
        text = wp.metrics()
        assert 'twinproxy_upstream_up{upstream="u1"} 1\n' in text
        assert "twinproxy_config_generation 1\n" in text
        assert 'twinproxy_build_info{impl="py",version="%s"} 1\n' % VERSION in text
        wp.w.counters.v[C_RL_LIMITED] += 2
        assert 'twinproxy_ratelimit_decisions_total{decision="limited"} 2\n' in wp.metrics()
    finally:
        wp.loop.close()
        sock.close()


def test_reload_new_default_applies_and_keeps_the_table(tmp_path: Path) -> None:
    port = free_port()
    cfg = config_load(rl_cfg(tmp_path, tmp_path / "rl.db", port=port))
    table = table_new(64, Limit(5, 0))
    sock = socket.socket()
    wp = WorkerProcess(
        cfg, sock, "asyncio", True, 0, None, ProcessShared(table, None, None, Counters())
    )
    try:
        assert wp.w.rl is not None and wp.w.rl.header == b"x-key"
        now = time.time()
        assert table.take(b"a", None, now).remaining == 4
        text = Path(rl_cfg(tmp_path, tmp_path / "rl.db", port=port))
        text.write_text(text.read_text().replace("capacity: 5", "capacity: 3"))
        new = config_load(str(text))
        wp.on_config(wp.w, new)
        assert table.default == Limit(3, 0)
        r = table.take(b"a", None, now)  # capped at the new capacity, never raised
        assert (r.limit, r.remaining) == (3, 2)
        assert table.take(b"b", None, now).remaining == 2  # a new bucket: the new default
        # rate_limit removed by a reload: kept as it was (needs a restart)
        wp.on_config(wp.w, config_load(write_cfg(tmp_path, port)))
        assert wp.w.rl is not None and table.default == Limit(5, 0)
    finally:
        wp.loop.close()
        sock.close()
