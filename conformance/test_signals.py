"""SIGTERM drains, SIGHUP reloads (contract 11, behaviour.md "Reload", "Shutdown")."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from harness import (
    Conn,
    build_request,
    deep_merge,
    free_port,
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
