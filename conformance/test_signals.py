"""SIGTERM drains, SIGHUP reloads (contract 11, behaviour.md "Reload", "Shutdown")."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time

import pytest
import yaml
from harness import (
    Conn,
    base_config,
    build_request,
    check_sanitizers,
    deep_merge,
    free_port,
    impl_argv,
    is_listening,
    pattern,
    wait_until,
)


def _in_background(fn):
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised by the caller
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()

    def join():
        t.join(15)
        assert not t.is_alive(), "background request did not finish"
        if "error" in out:
            raise out["error"]
        return out["value"]

    return join


def test_sigterm_lets_in_flight_request_finish(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, timeouts={"shutdown": "5s"})
    d = up.counting()
    c = p.connect()
    c.send(build_request("GET", "/delay/1000?then=/bytes/20"))
    d.wait(lambda d: d.requests >= 1)  # the request is in flight
    p.signal(signal.SIGTERM)
    r = c.read_response()
    assert r.status == 200 and r.body == pattern(0, 20)
    assert r.get("Connection", "").lower() == "close"
    c.assert_closed()
    c.close()
    assert p.proc.wait(10) == 0
    assert p.events("shutdown") and p.events("stop")


def test_sigterm_stops_accepting_at_once(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, timeouts={"shutdown": "5s"})
    d = up.counting()
    c = p.connect()
    c.send(build_request("GET", "/delay/1500"))
    d.wait(lambda d: d.requests >= 1)
    p.signal(signal.SIGTERM)
    assert wait_until(lambda: not is_listening(p.port), 5), (
        "listener still open after SIGTERM"
    )
    assert p.proc.poll() is None  # still draining the in-flight request
    with pytest.raises(ConnectionRefusedError):
        Conn(p.port, timeout=2).close()
    assert c.read_response().status == 200
    c.close()
    assert p.proc.wait(10) == 0


def test_sigterm_closes_idle_keepalive_connections(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"idle": "60s"})
    c = p.connect()
    assert c.request("/").status == 200
    p.signal(signal.SIGTERM)
    c.assert_closed(timeout=5)
    c.close()
    assert p.proc.wait(10) == 0


def test_sigint_is_graceful_too(upstream, proxy):
    p = proxy(upstream(["u1"]))
    assert p.request("/").status == 200
    p.signal(signal.SIGINT)
    assert p.proc.wait(10) == 0


def test_shutdown_timeout_bounds_the_drain(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, timeouts={"shutdown": "500ms", "read": "30s"})
    d = up.counting()
    c = p.connect()
    c.send(build_request("GET", "/delay/20000"))
    d.wait(lambda d: d.requests >= 1)
    p.signal(signal.SIGTERM)
    # The request outlives timeouts.shutdown: its connection is closed, exit is still 0.
    assert p.proc.wait(10) == 0
    c.read_to_close(timeout=5)
    c.close()


def _reload(p, cfg) -> None:
    p.config = cfg
    p.write_config(cfg)
    ok, failed = len(p.events("reload")), len(p.events("reload_failed"))
    p.signal(signal.SIGHUP)
    p.wait_event("reload", ok + 1)
    assert len(p.events("reload_failed")) == failed, p.stderr_text()[-2000:]


def test_sighup_switches_upstreams(upstream, proxy):
    up = upstream(["old", "new"])
    p = proxy([up.entries()[0]])
    assert p.request("/").get("X-Upstream") == "old"
    d = up.counting("old")
    slow = _in_background(lambda: p.request("/delay/1000?then=/bytes/30"))
    d.wait(lambda d: d.requests >= 1)
    _reload(p, deep_merge(p.config, {"upstreams": [up.entries()[1]]}))
    assert "reload_failed" not in p.stderr_text()
    for _ in range(4):
        assert p.request("/").get("X-Upstream") == "new"
    r = slow()  # the in-flight request was not disturbed
    assert r.status == 200 and r.get("X-Upstream") == "old" and r.body == pattern(0, 30)
    assert p.proc.poll() is None


def test_sighup_keeps_listener_and_keepalive_connections(upstream, proxy):
    up = upstream(["old", "new"])
    p = proxy([up.entries()[0]])
    with p.connect() as c:
        assert c.request("/").get("X-Upstream") == "old"
        _reload(p, deep_merge(p.config, {"upstreams": [up.entries()[1]]}))
        r = c.request("/")
        assert r.status == 200 and r.get("X-Upstream") == "new"


def test_sighup_bad_file_keeps_old_config(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    good = p.config_path.read_text()
    p.write_config(good + "bogus_key: 1\n")
    p.signal(signal.SIGHUP)
    rec = p.wait_event("reload_failed")[0]
    assert f"{p.config_path}:" in str(rec), rec
    assert p.proc.poll() is None
    r = p.request("/bytes/6")
    assert r.status == 200 and r.get("X-Upstream") == "u1" and r.body == pattern(0, 6)
    # A later good file is taken again.
    _reload(p, p.config)
    assert p.request("/").status == 200


def test_sighup_listen_change_is_ignored(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    other = free_port()
    p.config = deep_merge(p.config, {"listen": f"127.0.0.1:{other}"})
    p.write_config(p.config)
    p.signal(signal.SIGHUP)
    recs = p.wait_event("reload")
    assert any(r["level"] == "warn" for r in recs), recs
    assert p.request("/").status == 200  # still on the old port
    assert not is_listening(other)


def test_sighup_applies_log_format(upstream, proxy):
    p = proxy(upstream(["u1"]))
    assert p.request("/").status == 200
    _reload(p, deep_merge(p.config, {"log": {"format": "text"}}))
    assert p.request("/bytes/1").status == 200
    lines = p.wait_access_log(2)
    assert lines[0].startswith("{") and lines[1].startswith("ts="), lines


def test_sighup_applies_new_timeouts(upstream, proxy):
    p = proxy(upstream(["u1"]), timeouts={"read": "10s"})
    assert p.request("/delay/600").status == 200
    _reload(p, deep_merge(p.config, {"timeouts": {"read": "200ms"}}))
    assert p.request("/delay/600").status == 504


def test_sighup_reaches_every_worker(upstream, proxy):
    up = upstream(["old", "new"])
    p = proxy([up.entries()[0]], workers=2)
    assert p.request("/").get("X-Upstream") == "old"
    _reload(p, deep_merge(p.config, {"upstreams": [up.entries()[1]]}))
    time.sleep(0.3)  # workers pick the new config up on their own loops
    seen = {p.request("/").get("X-Upstream") for _ in range(32)}
    assert seen == {"new"}
    assert p.workers_serving(1, 33) == {0, 1}, "one worker served all 32"


# --------------------------------------------------------------------------- signals at start


def _spawn_raw(
    impl: str, config: dict, workdir, tag: str, block: set[int] | None = None
):
    """Start a twin outside the fixture (its start must be watched from the first
    instant); `block`: signals the process starts with blocked (inherited mask)."""
    path = workdir / f"raw-{tag}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    err = workdir / f"raw-{tag}.stderr"

    # the child inherits the mask of the thread that starts it
    was = signal.pthread_sigmask(signal.SIG_BLOCK, block or set())
    try:
        with open(err, "wb") as e:
            proc = subprocess.Popen(
                impl_argv(impl) + ["--config", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=e,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
            )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, was)
    return proc, err


def _events_in(path, name: str) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == name:
                out.append(rec)
    return out


def _stop_raw(proc, err) -> None:
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, err.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    check_sanitizers(err.read_text(errors="replace"), "proxy")


def test_sighup_pending_at_start_is_a_reload_not_a_death(impl, upstream, tmp_path):
    # A SIGHUP sent the instant the process exists: with the signal blocked in the
    # mask it inherits (as a supervisor may leave it) the signal stays pending through
    # exec; the proxy must install its watchers before letting it in, and let it in
    # whatever mask it was started with. It starts, serves, and that SIGHUP is a reload.
    up = upstream(["u1"])
    for i in range(3):
        _pending_sighup_once(impl, up, tmp_path, i)


def _pending_sighup_once(impl, up, tmp_path, i: int) -> None:
    cfg = base_config(tmp_path, 100 + i, impl)
    cfg["upstreams"] = up.entries()
    port = int(cfg["listen"].rsplit(":", 1)[1])
    proc, err = _spawn_raw(impl, cfg, tmp_path, f"pending{i}", block={signal.SIGHUP})
    try:
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: is_listening(port) or proc.poll() is not None, 15)
        assert proc.poll() is None, f"died: {proc.returncode}\n{err.read_text()}"
        assert wait_until(lambda: _events_in(err, "reload"), 10), (
            f"the pending SIGHUP was never handled:\n{err.read_text()}"
        )
        with Conn(port) as c:
            assert c.request("/").status == 200
        # and the signal is not left blocked: a later SIGHUP reloads again
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(_events_in(err, "reload")) >= 2, 10), (
            err.read_text()
        )
    finally:
        _stop_raw(proc, err)


def test_sighup_the_instant_the_port_listens(impl, upstream, tmp_path):
    # SIGHUP as soon as the port listens (polled without connecting): never fatal.
    up = upstream(["u1"])
    for i in range(5):
        _instant_sighup_once(impl, up, tmp_path, i)


def _instant_sighup_once(impl, up, tmp_path, i: int) -> None:
    cfg = base_config(tmp_path, 200 + i, impl)
    cfg["upstreams"] = up.entries()
    port = int(cfg["listen"].rsplit(":", 1)[1])
    proc, err = _spawn_raw(impl, cfg, tmp_path, f"instant{i}")
    try:
        assert wait_until(
            lambda: is_listening(port) or proc.poll() is not None, 15, interval=0
        )
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: _events_in(err, "reload"), 10), (
            f"no reload (exit {proc.poll()}):\n{err.read_text()}"
        )
        assert proc.poll() is None
        with Conn(port) as c:
            assert c.request("/").status == 200
    finally:
        _stop_raw(proc, err)


# --------------------------------------------------------------------------- SIGHUP semantics


UPGRADE_HEADERS = [("Upgrade", "websocket"), ("Connection", "Upgrade")]


def test_sighup_keeps_upgrade_tunnel_on_removed_upstream(upstream, proxy):
    up = upstream(["old", "new"])
    p = proxy([up.entries()[0]])
    with p.connect() as t:
        t.send(build_request("GET", "/upgrade", UPGRADE_HEADERS))
        assert t.read_response().status == 101
        t.send(b"before")
        assert t.read_exactly(6) == b"before"
        p.reload(deep_merge(p.config, {"upstreams": [up.entries()[1]]}))
        assert p.request("/").get("X-Upstream") == "new"
        for msg in (b"after", b"x" * 50_000):
            t.send(msg)
            assert t.read_exactly(len(msg)) == msg
        d = up.counting("old")
        assert d.peek().active == 1  # the tunnel is the old upstream's last connection
    d.wait(lambda d: d.active == 0)


def test_sighup_closes_pooled_connections_of_removed_upstreams(upstream, proxy):
    up = upstream(["old", "new"])
    p = proxy([up.entries()[0]])
    d = up.counting("old")
    for _ in range(3):
        assert p.request("/").get("X-Upstream") == "old"
    d.wait(lambda d: d.active >= 1)  # kept in the pool
    slow = _in_background(lambda: p.request("/delay/800?then=/bytes/10"))
    d.wait(lambda d: d.requests >= 4)
    p.reload(deep_merge(p.config, {"upstreams": [up.entries()[1]]}))
    r = slow()  # the in-flight one finished on the removed upstream ...
    assert r.status == 200 and r.get("X-Upstream") == "old" and r.body == pattern(0, 10)
    # ... and then its connection closed as well: nothing left open to "old"
    d.wait(lambda d: d.active == 0)
    d.update()
    for _ in range(3):
        assert p.request("/").get("X-Upstream") == "new"
    assert d.update().requests == 0 and d.active == 0


def test_sighup_bad_file_counts_a_failure(upstream, proxy):
    # twinproxy_config_reloads_total{result} (contract 9), where the build exposes it.
    admin = free_port()
    p = proxy(upstream(["u1"]), admin={"listen": f"127.0.0.1:{admin}"})

    def metrics() -> str:
        with Conn(admin) as c:
            r = c.request("/metrics", headers=[("Connection", "close")])
            assert r.status == 200
            return r.body.decode()

    def failures(text: str) -> float | None:
        m = re.search(
            r'^twinproxy_config_reloads_total\{result="failure"\} (\S+)$',
            text,
            re.MULTILINE,
        )
        return float(m.group(1)) if m else None

    before = failures(metrics())
    good = p.config_path.read_text()
    p.write_config(good + "bogus_key: 1\n")
    p.signal(signal.SIGHUP)
    p.wait_event("reload_failed")
    assert p.request("/").status == 200
    after = failures(metrics())
    if before is None and after is None:
        assert "twinproxy_config_reloads_total" not in metrics()
        return  # the series is not exposed by this build yet
    assert before is not None and after == before + 1


def _keepalive_client(port: int, stop: threading.Event, stats: dict, path: str) -> None:
    """Requests back to back on keep-alive connections until stop; every failure is
    recorded (a connection the proxy closes after a `Connection: close` response is
    replaced; nothing else is tolerated)."""
    c = None
    while not stop.is_set():
        try:
            if c is None:
                c = Conn(port)
            r = c.request(path)
            if r.status != 200 or r.body != pattern(0, 64):
                stats["failures"].append(f"{r.status} {r.body[:80]!r}")
            stats["ok"] += 1
            if (r.get("Connection") or "").lower() == "close":
                c.close()
                c = None
        except Exception as e:  # noqa: BLE001 - every error is a failed request
            stats["failures"].append(repr(e))
            if c is not None:
                c.close()
            c = None
    if c is not None:
        c.close()


def test_ten_reloads_under_keepalive_traffic(upstream, proxy):
    up = upstream(["a", "b"])
    a, b = up.entries()
    p = proxy([a], limits={"upstream_idle_connections": 4})
    stop = threading.Event()
    stats = [{"ok": 0, "failures": []} for _ in range(3)]
    threads = [
        threading.Thread(target=_keepalive_client, args=(p.port, stop, s, "/bytes/64"))
        for s in stats
    ]
    for t in threads:
        t.start()
    try:
        for i in range(10):
            done = sum(s["ok"] for s in stats)
            # traffic runs across every reload
            assert wait_until(lambda d=done: sum(s["ok"] for s in stats) >= d + 20, 10)
            p.reload(deep_merge(p.config, {"upstreams": [b if i % 2 == 0 else a]}))
        done = sum(s["ok"] for s in stats)
        assert wait_until(lambda: sum(s["ok"] for s in stats) >= done + 20, 10)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    failures = [f for s in stats for f in s["failures"]]
    assert not failures, failures[:10]
    assert len(p.events("reload")) == 10 and not p.events("reload_failed")
    assert p.proc.poll() is None


# --------------------------------------------------------------------------- SIGTERM details


def test_sigterm_closes_idle_connections_at_once_while_draining(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, timeouts={"shutdown": "30s"})
    d = up.counting()
    idle = p.connect()
    assert idle.request("/").status == 200
    busy = p.connect()
    busy.send(build_request("GET", "/delay/4000?then=/bytes/5"))
    d.wait(lambda d: d.requests >= 2)  # in flight
    p.signal(signal.SIGTERM)
    p.wait_event("shutdown")
    idle.assert_closed(timeout=3)  # not at the end of the drain: now
    idle.close()
    assert p.proc.poll() is None and busy.read_available(0) == b""  # still in flight
    r = busy.read_response()
    assert r.status == 200 and r.body == pattern(0, 5)
    assert (r.get("Connection") or "").lower() == "close"
    busy.assert_closed()
    busy.close()
    assert p.proc.wait(10) == 0


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("workers", [1, 2])
def test_second_signal_stops_at_once(upstream, proxy, second, workers):
    up = upstream(["u1"])
    p = proxy(up, workers=workers, timeouts={"shutdown": "30s", "read": "60s"})
    d = up.counting()
    c = p.connect()
    c.send(build_request("GET", "/delay/20000"))
    d.wait(lambda d: d.requests >= 1)
    p.signal(signal.SIGTERM)
    p.wait_event("shutdown")
    assert wait_until(lambda: not is_listening(p.port), 5)
    assert p.proc.poll() is None  # draining: the request is still in flight
    p.signal(second)
    # exit 0 long before the 20 s request or the 30 s drain could have ended
    assert p.proc.wait(10) == 0
    assert c.read_to_close(timeout=5) == b""  # cut, never answered
    c.close()
    recs = p.events("shutdown")
    assert len(recs) == 2 and recs[1].get("immediate") is True, recs
    assert p.events("stop")
    assert not [r for r in p.access_records() if r["status"] == 200]
