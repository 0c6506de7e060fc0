"""Unit tests of pyproxy.health. Twin: c-proxy/tests/test_health.c (same names, same cases).
Time is injected: every call gets `now` (seconds). The active checker is tested on its state
machine (check_result) and once over a real loopback socket; the shared table once across a
real fork (Python only: the C twin's workers are threads sharing one registry)."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from pyproxy.config import Config, config_load_string
from pyproxy.health import (
    HealthOutcome,
    HealthState,
    health_checker_start,
    health_checker_stop,
    health_registry_free,
    health_registry_init,
    health_set_log,
    health_state_get,
)
from pyproxy.log import Log

TWO_UP = "upstreams:\n  - {address: 127.0.0.1:9001, name: u1}\n  - {address: 127.0.0.1:9002}\n"


class EventLog(Log):
    """Keeps the events instead of writing them."""

    def __init__(self) -> None:
        super().__init__("debug", "off", "json")
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.changed: asyncio.Event | None = None  # set on every event (the checker test)

    def event(self, level: str, event: str, **fields: Any) -> None:
        self.events.append((level, event, fields))
        if self.changed is not None:
            self.changed.set()


@pytest.fixture(autouse=True)
def events() -> Iterator[EventLog]:
    health_registry_free()
    log = EventLog()
    health_set_log(log)
    yield log
    health_registry_free()


def load(text: str) -> Config:
    return config_load_string("t.yaml", text)


def state_with(extra: str) -> HealthState:
    """u1 of TWO_UP + extra, configured."""
    h = health_state_get("u1", "127.0.0.1:9001")
    h.configure(load(TWO_UP + extra))
    return h


def fail_at(h: HealthState, now: float) -> None:
    h.attempt_begin(now)
    h.attempt_end(HealthOutcome.FAIL, "connect_refused", now)


def down_at_102() -> HealthState:
    """max_fails 3, fail_timeout 10s: down at 102 until 112."""
    h = state_with("health: {max_fails: 3, fail_timeout: 10s}\n")
    fail_at(h, 100)
    fail_at(h, 101)
    fail_at(h, 102)
    assert not h.is_healthy()
    return h


def test_passive_marks_down_after_max_fails(events: EventLog) -> None:
    h = state_with("health: {max_fails: 3, fail_timeout: 10s}\n")
    assert h.last_error() == ""
    fail_at(h, 100)
    fail_at(h, 101)
    assert h.available(101)
    assert h.is_healthy()
    fail_at(h, 102)
    assert not h.is_healthy()
    assert not h.available(102)
    assert not h.available(111.999)
    assert h.available(112)  # the probe is free
    assert h.last_error() == "connect_refused"
    assert events.events == [
        ("warn", "upstream_down", {"upstream": "u1", "reason": "connect_refused"})
    ]


def test_passive_failures_outside_window_do_not_count() -> None:
    h = state_with("health: {max_fails: 3, fail_timeout: 10s}\n")
    fail_at(h, 100)
    fail_at(h, 105)
    fail_at(h, 110.5)  # window 100..110 closed: a new one opens
    assert h.is_healthy()
    fail_at(h, 115)
    assert h.is_healthy()
    fail_at(h, 120.5)  # third in 110.5..120.5
    assert not h.is_healthy()


def test_passive_probe_after_fail_timeout() -> None:
    h = down_at_102()
    assert h.available(112)
    h.attempt_begin(112)  # claims the probe
    assert not h.available(112)
    assert not h.available(150)
    h.attempt_end(HealthOutcome.NEUTRAL, None, 113)  # client went away: probe freed
    assert not h.is_healthy()
    assert h.available(113)
    # a late result of an attempt started before the mark changes nothing
    health_registry_free()
    h = down_at_102()
    h.attempt_end(HealthOutcome.OK, None, 105)
    assert not h.is_healthy()
    assert not h.available(105)


def test_passive_probe_success_brings_up(events: EventLog) -> None:
    h = down_at_102()
    h.attempt_begin(112)
    h.attempt_end(HealthOutcome.OK, None, 112.5)
    assert h.is_healthy()
    assert h.available(112.5)
    assert events.events[-1] == (
        "info",
        "upstream_up",
        {"upstream": "u1", "reason": "probe_succeeded"},
    )
    # counting starts over
    fail_at(h, 113)
    fail_at(h, 114)
    assert h.is_healthy()


def test_passive_probe_failure_keeps_down(events: EventLog) -> None:
    h = down_at_102()
    h.attempt_begin(112)
    h.attempt_end(HealthOutcome.FAIL, "read_timeout", 112.5)
    assert not h.is_healthy()
    assert not h.available(113)
    assert not h.available(122.4)
    assert h.available(122.5)
    assert h.last_error() == "read_timeout"
    assert [e[1] for e in events.events] == ["upstream_down"]  # still down: no new event


def test_max_fails_zero_disables_passive() -> None:
    h = state_with("health: {max_fails: 0}\n")
    for i in range(100):
        fail_at(h, 100 + i * 0.01)
    assert h.is_healthy()
    assert h.available(101)
    # a reload that turns passive off brings a passively down upstream back
    health_registry_free()
    h = down_at_102()
    h = state_with("health: {max_fails: 0}\n")
    assert h.is_healthy()


def test_single_upstream_never_down(events: EventLog) -> None:
    one = load(
        "upstreams: [{address: 127.0.0.1:9001, name: u1}]\n"
        "health: {max_fails: 1, check: {fall: 1}}\n"
    )
    h = health_state_get("u1", "127.0.0.1:9001")
    h.configure(one)
    for i in range(10):
        fail_at(h, 100 + i)
        h.check_result(False, "check_timeout", 100 + i)
    assert h.is_healthy()
    assert h.available(200)
    assert events.events == []
    # down in a group of two, then the group shrinks to one: up again
    health_registry_free()
    health_set_log(events)
    h = down_at_102()
    h.configure(one)
    assert h.is_healthy()
    assert h.available(103)
    assert events.events[-1][1:] == ("upstream_up", {"upstream": "u1", "reason": "reconfigured"})


def test_active_fall_marks_down() -> None:
    h = state_with("health: {check: {rise: 2, fall: 2}}\n")
    h.check_result(False, "check_bad_status", 100)
    assert h.is_healthy()
    h.check_result(True, None, 102)  # a success resets the count
    h.check_result(False, "check_bad_status", 104)
    assert h.is_healthy()
    h.check_result(False, "check_timeout", 106)
    assert not h.is_healthy()
    assert not h.available(106)
    assert not h.available(1e6)  # no passive probe for an active verdict
    assert h.last_error() == "check_timeout"


def test_active_rise_brings_up(events: EventLog) -> None:
    h = state_with("health: {check: {rise: 2, fall: 1}}\n")
    h.check_result(False, "check_connect_failed", 100)
    assert not h.is_healthy()
    h.check_result(True, None, 102)
    assert not h.is_healthy()
    h.check_result(False, "check_connect_failed", 104)  # resets the rise count
    h.check_result(True, None, 106)
    assert not h.is_healthy()
    h.check_result(True, None, 108)
    assert h.is_healthy()
    assert h.available(108)
    assert [(e[1], e[2]["reason"]) for e in events.events] == [
        ("upstream_down", "check_connect_failed"),
        ("upstream_up", "check_passed"),
    ]


def test_drain_not_available() -> None:
    h = state_with("")
    assert not h.is_drained()
    h.set_drain(True)
    assert h.is_drained()
    assert not h.available(100)
    assert h.is_healthy()  # drained is not down
    h.set_drain(False)
    assert h.available(100)
    # a standalone state (the C twin's NULL state): healthy, outside the registry
    lone = HealthState()
    assert lone.available(100)
    assert lone.is_healthy()
    assert health_state_get("", "") is not lone


def test_registry_shared_by_name() -> None:
    a = health_state_get("u1", "127.0.0.1:9001")
    b = health_state_get("u1", "127.0.0.1:9009")
    c = health_state_get("u2", "127.0.0.1:9002")
    assert a is b
    assert a is not c
    assert a.name == "u1"
    # a reload keeps the name, so it keeps the verdict
    down_at_102()
    a = health_state_get("u1", "127.0.0.1:9001")
    assert not a.is_healthy()
    assert c.is_healthy()


def _child_marks_down(q: Any) -> None:
    h = health_state_get("u1", "127.0.0.1:9001")
    for t in (100, 101, 102):
        h.attempt_end(HealthOutcome.FAIL, "connect_refused", t)
    q.put(h.is_healthy())


def test_registry_shared_across_processes() -> None:
    """workers > 1 (Python only): the table is created before the fork and shared."""
    health_registry_init(shared=True, slots=8)
    health_set_log(EventLog())
    h = health_state_get("u1", "127.0.0.1:9001")
    h.configure(load(TWO_UP))
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_marks_down, args=(q,))
    p.start()
    assert q.get(timeout=10) is False
    p.join(10)
    assert p.exitcode == 0
    assert not h.is_healthy()
    assert h.last_error() == "connect_refused"
    # names past the table's slots still work, with a private verdict
    for i in range(10):
        assert health_state_get("n%d" % i, "127.0.0.1:1").is_healthy()


# ---- the active checker over a real loopback socket ----


def test_checker_probes_loopback(events: EventLog) -> None:
    loop = asyncio.new_event_loop()
    reply = [b"HTTP/1.1 204 No Content\r\n\r\n"]
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(reply[0])
        await writer.drain()
        writer.close()

    async def until(h: HealthState, want: bool) -> None:
        # every transition is an event: wait for them (a 10 s guard fails the test)
        assert events.changed is not None
        while h.is_healthy() is not want:
            events.changed.clear()
            await events.changed.wait()

    async def scenario() -> None:
        events.changed = asyncio.Event()
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.socket() as s:  # a port nothing listens on: connect is refused
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        cfg = load(
            "upstreams:\n  - {address: 127.0.0.1:%d, name: u1}\n"
            "  - {address: 127.0.0.1:%d, name: u2}\n"
            "health: {check: {path: /hc?x=1, interval: 20ms, timeout: 2s, rise: 1, fall: 1}}\n"
            % (port, dead)
        )
        states = [health_state_get(u.name, u.addr.text) for u in cfg.upstreams]
        for st in states:
            st.configure(cfg)
        states[0].check_result(False, "check_timeout", 0)  # start u1 down
        hc = health_checker_start(loop, cfg, states)
        assert hc is not None
        await asyncio.wait_for(until(states[0], True), 10)  # 204 brings u1 up
        assert requests[0] == (
            b"GET /hc?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % port
        )
        await asyncio.wait_for(until(states[1], False), 10)  # refused
        assert states[1].last_error() == "check_connect_failed"
        reply[0] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        await asyncio.wait_for(until(states[0], False), 10)
        assert states[0].last_error() == "check_bad_status"
        reply[0] = b"HTTP/1.0 302 Found\r\n\r\n"
        await asyncio.wait_for(until(states[0], True), 10)
        reply[0] = b"garbage\r\n\r\n"
        await asyncio.wait_for(until(states[0], False), 10)
        assert states[0].last_error() == "check_bad_response"
        health_checker_stop(hc)
        health_checker_stop(None)
        assert health_checker_start(loop, load(TWO_UP), states) is None
        server.close()
        await server.wait_closed()

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
