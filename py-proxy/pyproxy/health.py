"""health: is an upstream fit for requests? Passive (nginx's max_fails/fail_timeout), active
(periodic GET on a fresh connection) and the operator's drain.

Twin: c-proxy/src/health.c (same names, same rules, same events; C `health_x(h, ...)` is
`HealthState.x(...)` here). docs/behaviour.md "Health" is the user-facing description.

One HealthState per upstream NAME, process-wide: every upstream set (config generation) of
the process holding that name shares it, so a verdict survives a reload that keeps the name.

Sharing across workers (the languages force a difference here): the C twin's workers are
threads sharing one registry of atomics. Python's workers are processes, so every state's
fields live in one fixed-size table of ctypes slots (`_Slot`, HEALTH_SLOTS of them, keyed by
upstream name). With one worker the table is private memory; with workers > 1 the parent
calls health_registry_init(shared=True) BEFORE forking: the table is then a
multiprocessing.shared_memory block (unlinked at once, so nothing outlives the process tree;
the forked workers inherit the mapping) and writes take a multiprocessing lock created with
it. Reads take no lock. A name that finds the table full gets a private slot: its verdict
is then per worker (documented in docs/behaviour.md "Health").

Passive: a failure (attempt_end with FAIL) is a refused/failed/timed-out connect, a reset
or read timeout before the response head, or an invalid response head. max_fails failures
within fail_timeout (the window opens at the first one) mark the upstream down for
fail_timeout; then the first attempt_begin claims the single probe (others find it
unavailable); the probe's OK brings it up, its FAIL keeps it down for another fail_timeout,
NEUTRAL frees the probe for the next request. max_fails 0 turns passive marking off.
Active: check_result() from the checker; fall consecutive failures mark it down, rise
consecutive successes bring it up. A group with ONE upstream (sole) is never marked down.
Events: upstream_down {upstream, reason} (warn) when the upstream goes from up to down,
upstream_up {upstream, reason} (info) when it comes back, once per transition.

Time is injected: `now` is the loop time in seconds (loop.time(), CLOCK_MONOTONIC: the
same clock in every worker process). Times are kept as integer milliseconds, as in C.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import hashlib
import multiprocessing
import re
from collections.abc import Sequence
from multiprocessing import shared_memory
from typing import TYPE_CHECKING, Any, cast

from pyproxy.log import Log

if TYPE_CHECKING:
    from pyproxy.config import Config

HEALTH_SLOTS = 1024  # upstream names the shared table holds
HEALTH_KEY_MAX = 128  # bytes of a name kept as the key (longer names: a digest)
HEALTH_ADDR_MAX = 128  # an address text, as ConfigAddr's
HEALTH_REASON_MAX = 64  # bytes of a reason kept
HEALTH_RESP_MAX = 1024  # bytes of a check response read to find the status line

DOWN_PASSIVE = 0x1  # max_fails within fail_timeout
DOWN_ACTIVE = 0x2  # fall consecutive failed checks

_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})")


class HealthOutcome(enum.IntEnum):
    """enum health_outcome: how an attempt ended, as health sees it."""

    OK = 0  # a valid response head arrived
    FAIL = 1  # a passive failure (see above)
    NEUTRAL = 2  # not a health signal: client went away, answered by the proxy


class _Slot(ctypes.Structure):
    """struct health_state's fields, in private or shared memory."""

    _fields_ = [
        ("used", ctypes.c_bool),  # slot taken
        ("to_up", ctypes.c_uint64),  # transitions to up (metrics)
        ("to_down", ctypes.c_uint64),  # transitions to down (metrics)
        ("key", ctypes.c_char * HEALTH_KEY_MAX),  # upstream name (or its digest)
        ("address", ctypes.c_char * HEALTH_ADDR_MAX),  # address text at creation
        ("max_fails", ctypes.c_uint32),  # config health.max_fails; 0 = passive off
        ("fail_timeout", ctypes.c_int64),  # config health.fail_timeout, ms
        ("rise", ctypes.c_uint32),  # config health.check.rise
        ("fall", ctypes.c_uint32),  # config health.check.fall
        ("sole", ctypes.c_bool),  # the only upstream of its config: never down
        ("drained", ctypes.c_bool),  # operator: no new attempts
        ("down", ctypes.c_uint32),  # DOWN_* bits; 0 = up
        ("probe_claimed", ctypes.c_bool),  # passive: the one probe after fail_timeout is out
        ("fails", ctypes.c_uint32),  # passive: failures in the current window
        ("window_start", ctypes.c_int64),  # passive: first failure of the window, ms
        ("down_until", ctypes.c_int64),  # passive: no attempt before this, ms
        ("checks_ok", ctypes.c_uint32),  # active: consecutive successes
        ("checks_failed", ctypes.c_uint32),  # active: consecutive failures
        ("last_error", ctypes.c_char * HEALTH_REASON_MAX),  # last failure reason
    ]


def _key(name: str) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) < HEALTH_KEY_MAX:
        return raw
    return b"#" + hashlib.sha256(raw).hexdigest().encode()


def _ms(now: float) -> int:
    return int(now * 1000.0)


def _slot_init(slot: Any, key: bytes, address: str) -> None:
    """A new state: up, not drained, the default config's passive settings."""
    slot.used = True
    slot.key = key
    slot.address = address.encode()[: HEALTH_ADDR_MAX - 1]
    slot.max_fails = 3
    slot.fail_timeout = 10000
    slot.rise = 2
    slot.fall = 2


class HealthState:
    """One upstream's verdict (struct health_state): a view on its slot. Get one from
    health_state_get(); HealthState() alone is a private state outside the registry
    (tests, fakes)."""

    def __init__(self, reg: HealthRegistry | None = None, slot: Any = None, name: str = "") -> None:
        if slot is None:
            slot = _Slot()
            _slot_init(slot, _key(name), "")
        self._reg = reg if reg is not None else _registry  # lock and event log
        self.id: int | None = None  # slot index: the metrics label (registry.get)
        self._s = slot  # the _Slot (private or in the shared table)
        self.name = name  # upstream name

    def transitions(self) -> tuple[int, int]:
        """(to up, to down) since the start: twinproxy_health_transitions_total."""
        return int(self._s.to_up), int(self._s.to_down)

    # ---- events ----

    def _event(self, up: bool, reason: str) -> None:
        log = self._reg.log
        if up:
            self._s.to_up += 1
            log.event("info", "upstream_up", upstream=self.name, reason=reason)
        else:
            self._s.to_down += 1
            log.event("warn", "upstream_down", upstream=self.name, reason=reason)

    def _mark_down(self, bit: int, reason: str) -> None:
        """Set bit (lock held); log when the state goes from up to down."""
        old = self._s.down
        self._s.down = old | bit
        if old == 0:
            self._event(False, reason)

    def _mark_up(self, bits: int, reason: str) -> None:
        """Clear bits (lock held); log when the state goes from down to up."""
        old = self._s.down
        self._s.down = old & ~bits
        if old & bits and not old & ~bits:
            self._event(True, reason)

    # ---- configuration ----

    def configure(self, cfg: Config) -> None:
        """health_configure(): cfg's max_fails, fail_timeout, check rise/fall, and sole =
        (cfg has one upstream). Called for each upstream of a new upstream set, at startup
        and on every reload (the newest config wins). A sole or passive-off upstream that
        was down comes back (upstream_up "reconfigured")."""
        s = self._s
        with self._reg.lock:
            s.max_fails = cfg.health.max_fails
            s.fail_timeout = cfg.health.fail_timeout_ms
            s.rise = cfg.health.check.rise
            s.fall = cfg.health.check.fall
            s.sole = len(cfg.upstreams) == 1
            if len(cfg.upstreams) == 1:
                self._mark_up(DOWN_PASSIVE | DOWN_ACTIVE, "reconfigured")
            elif cfg.health.max_fails == 0:
                self._mark_up(DOWN_PASSIVE, "reconfigured")
            if not cfg.health.check.enabled:
                self._mark_up(DOWN_ACTIVE, "reconfigured")

    # ---- data path (the balancer calls these) ----

    def available(self, now: float) -> bool:
        """May a new attempt go here now? False when drained, actively down, or passively
        down within fail_timeout or with the probe already claimed."""
        s = self._s
        if s.drained:
            return False
        down = s.down
        if down & DOWN_ACTIVE:
            return False
        if down & DOWN_PASSIVE:
            return _ms(now) >= s.down_until and not s.probe_claimed
        return True

    def attempt_begin(self, now: float) -> None:
        """An attempt starts: claims the passive probe if one is due."""
        s = self._s
        if s.down & DOWN_PASSIVE and _ms(now) >= s.down_until:
            with self._reg.lock:
                s.probe_claimed = True

    def attempt_end(self, outcome: HealthOutcome, reason: str | None, now: float) -> None:
        """The attempt ended with `outcome`; `reason` names a FAIL."""
        s = self._s
        if outcome != HealthOutcome.FAIL and not s.down & DOWN_PASSIVE:
            return  # the common case takes no lock
        t = _ms(now)
        with self._reg.lock:
            if outcome == HealthOutcome.FAIL:
                s.last_error = (reason or "").encode()[: HEALTH_REASON_MAX - 1]
            if not s.down & DOWN_PASSIVE:
                self._passive_fail(reason or "", t)
                return
            # Passively down. Results before down_until come from attempts that started
            # before the upstream was marked: they neither extend nor end the down time.
            if t < s.down_until:
                return
            if outcome == HealthOutcome.OK:
                s.fails = 0
                s.probe_claimed = False
                self._mark_up(DOWN_PASSIVE, "probe_succeeded")
            elif outcome == HealthOutcome.FAIL:
                s.down_until = t + s.fail_timeout
                s.probe_claimed = False
            else:
                s.probe_claimed = False  # the next request probes

    def _passive_fail(self, reason: str, now: int) -> None:
        """A failure while up (lock held): count it in the window, mark down at max_fails."""
        s = self._s
        if s.max_fails == 0 or s.sole:
            return
        if s.fails > 0 and now - s.window_start > s.fail_timeout:
            s.fails = 0  # the old window closed: this failure opens a new one
        s.fails += 1
        if s.fails == 1:
            s.window_start = now
        if s.fails < s.max_fails:
            return
        s.fails = 0
        s.down_until = now + s.fail_timeout
        s.probe_claimed = False
        self._mark_down(DOWN_PASSIVE, reason)

    # ---- active checks, operator state, queries ----

    def check_result(self, ok: bool, reason: str | None, now: float) -> None:
        """health_check_result(): one active check result (the checker calls it)."""
        s = self._s
        with self._reg.lock:
            if ok:
                s.checks_failed = 0
                s.checks_ok = min(s.checks_ok + 1, s.rise)
                if s.checks_ok >= s.rise:
                    self._mark_up(DOWN_ACTIVE, "check_passed")
                return
            s.last_error = (reason or "").encode()[: HEALTH_REASON_MAX - 1]
            s.checks_ok = 0
            s.checks_failed = min(s.checks_failed + 1, s.fall)
            if s.checks_failed >= s.fall and not s.sole:
                self._mark_down(DOWN_ACTIVE, reason or "")

    def set_drain(self, drain: bool) -> None:
        """Operator drain: no new attempts, in-flight ones finish. No event here: the
        caller (admin API) logs upstream_drain."""
        with self._reg.lock:
            self._s.drained = drain

    def is_drained(self) -> bool:
        return bool(self._s.drained)

    def is_healthy(self) -> bool:
        """Not down, passively or actively (drain aside)."""
        return bool(self._s.down == 0)

    def last_error(self) -> str:
        """Reason of the last failure seen (passive or active), "" if none."""
        raw: bytes = self._s.last_error
        return raw.decode("utf-8", "replace")


class HealthRegistry:
    """Every HealthState of the process (tree), keyed by upstream name."""

    def __init__(self, shared: bool = False, slots: int = HEALTH_SLOTS) -> None:
        size = ctypes.sizeof(_Slot) * slots
        self._shm: shared_memory.SharedMemory | None = None
        buf: Any
        if shared:
            self._shm = shared_memory.SharedMemory(create=True, size=size)
            self._shm.unlink()  # the mapping stays; forked workers inherit it
            buf = self._shm.buf
            self.lock: Any = multiprocessing.get_context("fork").Lock()  # writes
        else:
            buf = bytearray(size)
            self.lock = contextlib.nullcontext()
        self._table: Any = (_Slot * slots).from_buffer(buf)
        self._states: dict[str, HealthState] = {}  # this process's views, by name
        self.log = Log("info", "off", "json")  # events; health_set_log() follows the config

    def get(self, name: str, address: str) -> HealthState:
        st = self._states.get(name)
        if st is not None:
            return st
        key = _key(name)
        slot: Any = None
        sid: int | None = None
        with self.lock:
            free = None
            free_i = None
            for i, s in enumerate(self._table):
                if s.used and s.key == key:
                    slot, sid = s, i
                    break
                if free is None and not s.used:
                    free, free_i = s, i
            if slot is None:
                slot = free if free is not None else _Slot()  # full: a private slot
                sid = free_i
                _slot_init(slot, key, address)
        st = HealthState(self, slot, name)
        st.id = sid  # the metrics label of the name (None: a private slot)
        self._states[name] = st
        return st

    def label_names(self, cap: int) -> list[str | None]:
        """Upstream name by slot id (None: unknown here), ids < cap (metrics labels)."""
        out: list[str | None] = []
        for st in self._states.values():
            if st.id is not None and st.id < cap:
                if st.id >= len(out):
                    out.extend([None] * (st.id + 1 - len(out)))
                out[st.id] = st.name
        return out

    def close(self) -> None:
        self._states.clear()
        self._table = None
        if self._shm is not None:
            # views still held elsewhere keep the mapping alive; it goes with them
            with contextlib.suppress(BufferError):
                self._shm.close()
            self._shm = None


_registry = HealthRegistry()


def health_registry_init(shared: bool, slots: int = HEALTH_SLOTS) -> HealthRegistry:
    """Replace the process's registry: shared=True (workers > 1) must run in the parent
    BEFORE the workers fork. Earlier HealthStates must no longer be used."""
    global _registry
    _registry.close()
    _registry = HealthRegistry(shared, slots)
    return _registry


def health_label_names(cap: int) -> list[str | None]:
    """The process registry's label_names()."""
    return _registry.label_names(cap)


def health_registry_free() -> None:
    """A fresh private registry (at exit and between unit tests)."""
    health_registry_init(False)


def health_state_get(name: str, address: str) -> HealthState:
    """The state for upstream `name`, created on first use (up, not drained, default passive
    settings until configure()). The same object for the same name in this process, the
    same slot in every worker."""
    return _registry.get(name, address)


def health_set_log(log: Log) -> None:
    """Where upstream_down/upstream_up go (the worker's Log; call again after a reload)."""
    _registry.log = log


# ---- active checker (Python: loop.call_at + an asyncio Protocol; no threads) ----


class _ProbeConn(asyncio.Protocol):
    """One check's connection; detached (probe None) once the check has a result."""

    def __init__(self, probe: _Probe) -> None:
        self.probe: _Probe | None = probe  # None: result recorded, ignore the rest
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()  # response bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport = t
        if self.probe is None:
            t.abort()
            return
        t.write(self.probe.req)

    def data_received(self, data: bytes) -> None:
        if self.probe is None:
            return
        self.buf += data[: HEALTH_RESP_MAX - len(self.buf)]
        if b"\n" in self.buf or len(self.buf) >= HEALTH_RESP_MAX:
            self.probe.parse(bytes(self.buf))

    def eof_received(self) -> bool | None:
        self._closed()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()

    def _closed(self) -> None:
        if self.probe is None:
            return
        if self.buf:
            self.probe.parse(bytes(self.buf))
        else:
            self.probe.end(False, "check_closed")


class _Probe:
    """One upstream's periodic check (struct health_probe)."""

    def __init__(
        self, hc: HealthChecker, state: HealthState, host: str, port: int, req: bytes
    ) -> None:
        self.hc = hc  # owner
        self.state = state  # where results go
        self.host = host
        self.port = port
        self.req = req  # the request, built once
        self.tick_handle: asyncio.TimerHandle | None = None  # every interval
        self.deadline: asyncio.TimerHandle | None = None  # timeout of the check in flight
        self.task: asyncio.Task[Any] | None = None  # create_connection in flight
        self.conn: _ProbeConn | None = None  # check in flight, or None

    def tick(self) -> None:
        loop = self.hc.loop
        self.tick_handle = loop.call_at(loop.time() + self.hc.interval, self.tick)
        if self.conn is not None:
            return  # the last one is still running (timeout > interval)
        conn = self.conn = _ProbeConn(self)
        self.deadline = loop.call_at(
            loop.time() + self.hc.timeout, self.end, False, "check_timeout"
        )
        self.task = loop.create_task(loop.create_connection(lambda: conn, self.host, self.port))
        self.task.add_done_callback(self._on_connect_done)

    def _on_connect_done(self, task: asyncio.Task[Any]) -> None:
        failed = not task.cancelled() and task.exception() is not None  # always retrieved
        if task is not self.task:
            return
        self.task = None
        if failed:
            self.end(False, "check_connect_failed")

    def parse(self, resp: bytes) -> None:
        """ "HTTP/1.x NNN" at the start of the response: 2xx/3xx is a success."""
        m = _STATUS_LINE.match(resp)
        if len(resp) < 12 or m is None or (len(resp) > 12 and resp[12:13] not in b" \r\n"):
            self.end(False, "check_bad_response")
        elif 200 <= int(m.group(1)) < 400:
            self.end(True, None)
        else:
            self.end(False, "check_bad_status")

    def end(self, ok: bool, reason: str | None) -> None:
        conn = self.conn
        if conn is None:
            return
        self.conn = None
        conn.probe = None
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.task is not None:
            task, self.task = self.task, None
            task.cancel()
        if conn.transport is not None:
            conn.transport.abort()
        self.state.check_result(ok, reason, self.hc.loop.time())

    def stop(self) -> None:
        if self.tick_handle is not None:
            self.tick_handle.cancel()
            self.tick_handle = None
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.probe = None
            if conn.transport is not None:
                conn.transport.abort()
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.task is not None:
            self.task.cancel()
            self.task = None


class HealthChecker:
    """struct health_checker: active checks of one config's upstreams on one loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, cfg: Config, states: Sequence[HealthState]
    ) -> None:
        chk = cfg.health.check
        self.loop = loop
        self.interval = chk.interval_ms / 1000.0
        self.timeout = chk.timeout_ms / 1000.0
        self.probes = [
            _Probe(
                self,
                st,
                u.addr.host,
                u.addr.port,
                b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                % (chk.path.encode(), u.addr.text.encode()),
            )
            for u, st in zip(cfg.upstreams, states, strict=False)
        ]

    def start(self) -> None:
        now = self.loop.time()
        for p in self.probes:
            p.tick_handle = self.loop.call_at(now, p.tick)  # the first check at once

    def stop(self) -> None:
        for p in self.probes:
            p.stop()


def health_checker_start(
    loop: asyncio.AbstractEventLoop, cfg: Config, states: Sequence[HealthState]
) -> HealthChecker | None:
    """Start active checks on loop for cfg's upstreams: states[i] is cfg.upstreams[i]'s
    state. Every health.check.interval (the first at once) it connects to each upstream on a
    fresh connection, sends "GET <path> HTTP/1.1\\r\\nHost: <address>\\r\\nConnection:
    close\\r\\n\\r\\n" and reads the status line: 2xx/3xx within health.check.timeout is a
    success; anything else a failure with reason check_connect_failed | check_timeout |
    check_closed | check_bad_response | check_bad_status. None when health.check is absent.
    Run it in ONE worker only (worker 0): the verdicts are shared."""
    if not cfg.health.check.enabled or not states:
        return None
    hc = HealthChecker(loop, cfg, states)
    hc.start()
    return hc


def health_checker_stop(hc: HealthChecker | None) -> None:
    """Stop every timer, abort checks in flight. None is a no-op (reload: stop the old
    checker, start one for the new config)."""
    if hc is not None:
        hc.stop()
