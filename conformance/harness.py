"""Conformance harness: processes (upstream server, proxies) and a raw HTTP/1.1 client.

The proxies are black boxes here: we start them with a config file, talk to them over
sockets, read their logs and send them signals. Nothing in this module knows how either
twin is built inside.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import pytest
import yaml
from testkit.durations import duration_ms
from testkit.ports import free_port, is_listening
from testkit.proc import process_tree
from testkit.proc import rss_kb as rss_kb_of
from testkit.wire import (  # noqa: F401  (re-exported for the tests)
    Conn,
    ProtocolError,
    Response,
    build_request,
    chunked,
)

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_BIN = REPO / "upstreams" / "build" / "upstream"
PY_PROXY_BIN = REPO / ".venv" / "bin" / "py-proxy"
C_PROXY_BIN = REPO / "c-proxy" / "build" / "c-proxy"

KNOWN_IMPLS = ("c", "py", "pyuv")
"""c: c-proxy; py: py-proxy on asyncio's own loop; pyuv: py-proxy with `--loop uvloop`
(the lab benchmarks both Python loops, so both are conformance-tested)."""
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "WARNING: ThreadSanitizer",
    "runtime error:",
)

# Socket operations never wait longer than this unless a test says otherwise.
IO_TIMEOUT = 5.0
# A twin's `start` event must appear within this many seconds of its launch.
START_TIMEOUT = 15.0

REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


# --------------------------------------------------------------------------- selection


def selected_impls() -> list[str]:
    raw = os.environ.get("TWINPROXY_IMPLS", "c,py,pyuv")
    impls = [s.strip() for s in raw.split(",") if s.strip()]
    bad = [i for i in impls if i not in KNOWN_IMPLS]
    if bad or not impls:
        raise pytest.UsageError(
            f"TWINPROXY_IMPLS={raw!r}: use a comma list of {KNOWN_IMPLS}"
        )
    return impls


def impl_binary(impl: str) -> Path:
    if impl == "c":
        return Path(os.environ.get("TWINPROXY_C_PROXY") or C_PROXY_BIN)
    if impl in ("py", "pyuv"):
        return PY_PROXY_BIN
    raise ValueError(impl)


def impl_argv(impl: str) -> list[str]:
    """The command for one twin; a missing binary fails the test (never a skip)."""
    path = impl_binary(impl)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{impl}-proxy binary missing or not executable: {path}", pytrace=False
        )
    if impl == "pyuv":
        return [str(path), "--loop", "uvloop"]
    return [str(path)]


def run_impl(
    impl: str, args: list[str], cwd: Path | None = None, timeout: float = 5.0
) -> subprocess.CompletedProcess:
    """Run a twin to completion (--check, --version, bad configs)."""
    proc = subprocess.run(
        impl_argv(impl) + args,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or tempfile.gettempdir(),
        check=False,
        stdin=subprocess.DEVNULL,
    )
    check_sanitizers(proc.stderr, f"{impl}-proxy {' '.join(args)}")
    return proc


def check_sanitizers(stderr: str, what: str) -> None:
    for marker in SANITIZER_MARKERS:
        if marker in stderr:
            pytest.fail(
                f"{what}: sanitizer report on stderr:\n{stderr[-6000:]}", pytrace=False
            )


# --------------------------------------------------------------------------- ports, /proc

# free_port, is_listening, process_tree, rss_kb_of: imported from testkit (one copy for
# the suite, the upstream's tests and the lab).


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------- HTTP client


# Response, Conn (the raw client), build_request and chunked live in testkit.wire, shared
# with the upstream's tests, the soak and the lab.


# --------------------------------------------------------------------------- body pattern

_PAT_UNIT = b"0123456789abcdef"
_PAT_BLOCK = _PAT_UNIT * ((1 << 20) // 16 + 1)  # 1 MiB + 16


def pattern(offset: int, n: int) -> bytes:
    """Bytes offset..offset+n of the upstream's body pattern."""
    out = bytearray()
    while n > 0:
        k = min(n, 1 << 20)
        s = offset % 16
        out += _PAT_BLOCK[s : s + k]
        offset += k
        n -= k
    return bytes(out)


def pattern_crc32(n: int) -> int:
    crc = 0
    block = _PAT_BLOCK[: 1 << 20]
    full, rest = divmod(n, 1 << 20)
    for _ in range(full):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(block[:rest], crc)


class PatternChecker:
    """A response body sink checking the pattern without keeping the body."""

    def __init__(self) -> None:
        self.offset = 0
        self.bad_at: int | None = None

    def __call__(self, piece: memoryview) -> None:
        n = len(piece)
        if self.bad_at is None:
            pos = 0
            while pos < n:
                k = min(n - pos, 1 << 20)
                s = (self.offset + pos) % 16
                if piece[pos : pos + k] != _PAT_BLOCK[s : s + k]:
                    self.bad_at = self.offset + pos
                    break
                pos += k
        self.offset += n


# --------------------------------------------------------------------------- processes


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return ""


class Upstream:
    """upstreams/build/upstream with one listener per name."""

    def __init__(
        self,
        names: list[str],
        flags: dict[str, Any],
        workdir: Path,
        ports: dict[str, int] | None = None,
        listener_flags: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        if not (UPSTREAM_BIN.is_file() and os.access(UPSTREAM_BIN, os.X_OK)):
            pytest.fail(f"upstream server missing: {UPSTREAM_BIN}", pytrace=False)
        self.names = list(names)
        self.flags = dict(flags)
        self.listener_flags = dict(listener_flags or {})
        self.workdir = workdir
        self.ports = dict(ports) if ports else {n: free_port() for n in names}
        self.proc: subprocess.Popen | None = None
        self._start()

    @staticmethod
    def _flag_args(flags: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for k, v in flags.items():
            if v is True:
                out.append("--" + k.replace("_", "-"))
            elif v not in (False, None):
                out += ["--" + k.replace("_", "-"), str(v)]
        return out

    def _start(self) -> None:
        # Flags before the first --listen are every listener's defaults; per-listener ones
        # (--fault, --idle-close-ms) follow their --listen.
        argv = [str(UPSTREAM_BIN)] + self._flag_args(self.flags)
        for n in self.names:
            argv += ["--listen", f"127.0.0.1:{self.ports[n]}", "--name", n]
            argv += self._flag_args(self.listener_flags.get(n, {}))
        tag = "-".join(self.names)
        self.stdout_path = self.workdir / f"upstream-{tag}-{time.monotonic_ns()}.out"
        self.stderr_path = self.stdout_path.with_suffix(".err")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        ok = wait_until(
            lambda: (
                b"ready" in self.stdout_path.read_bytes()
                or self.proc.poll() is not None
            ),
            10,
        )
        if not ok or self.proc.poll() is not None:
            self.stop()
            pytest.fail(
                f"upstream did not become ready: {argv}\n{_tail(self.stderr_path)}",
                pytrace=False,
            )

    def address(self, name: str | None = None) -> str:
        return f"127.0.0.1:{self.ports[name or self.names[0]]}"

    def port(self, name: str | None = None) -> int:
        return self.ports[name or self.names[0]]

    def entries(self, weights: dict[str, int] | None = None) -> list[dict[str, Any]]:
        """Upstream list for a proxy config."""
        out = []
        for n in self.names:
            e: dict[str, Any] = {"address": self.address(n), "name": n}
            if weights and n in weights:
                e["weight"] = weights[n]
            out.append(e)
        return out

    def request(self, path: str, name: str | None = None, **kw: Any) -> Response:
        """A request straight to the upstream (not through a proxy)."""
        headers = list(kw.pop("headers", [])) + [("Connection", "close")]
        with Conn(self.port(name)) as c:
            return c.request(path, headers=headers, **kw)

    def set_fault(self, name: str, fault: str) -> None:
        """Switch one listener's fault mode: none | reset | drop | stall | delay/MS
        (upstreams/README.md, `/fault/...`)."""
        r = self.request(f"/fault/{fault}", name)
        assert r.status == 200, r

    def stats(self, name: str | None = None) -> dict[str, Any]:
        r = self.request("/stats", name)
        assert r.status == 200, r
        return r.json()

    def counting(self, name: str | None = None) -> StatsDelta:
        return StatsDelta(self, name)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def restart(self) -> None:
        """Stop (closing every connection) and start again on the same ports."""
        self.stop()
        self._start()


class StatsDelta:
    """What reached one upstream listener between two points, not counting our own /stats
    queries (each opens one connection and is one request):

        d = up.counting("u1")          # or: with up.counting("u1") as d: ...
        ...; d.update()                # d.connections, d.requests since the last update,
                                       # d.active: connections open now
        d.wait(lambda d: d.requests >= 1)   # poll until true (fails after timeout)
    """

    def __init__(self, up: Upstream, name: str | None) -> None:
        self.up, self.name = up, name
        self.connections = self.requests = self.active = 0
        self.before = self.up.stats(self.name)
        self._after = self.before
        self._queries = 0  # our /stats queries since `before`

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.update()

    def peek(self) -> StatsDelta:
        """Refresh the figures without starting a new interval."""
        after = self._after = self.up.stats(self.name)
        self._queries += 1
        self.active = after["connections_active"] - 1  # minus our /stats connection
        self.connections = (
            after["connections_total"]
            - self.before["connections_total"]
            - self._queries
        )
        self.requests = (
            after["requests_total"] - self.before["requests_total"] - self._queries
        )
        return self

    def update(self) -> StatsDelta:
        self.peek()
        self.before, self._queries = self._after, 0
        return self

    def wait(
        self, pred: Callable[[StatsDelta], bool], timeout: float = 5.0
    ) -> StatsDelta:
        ok = wait_until(lambda: pred(self.peek()), timeout, interval=0.02)
        assert ok, (
            f"upstream {self.name or self.up.names[0]}: condition not met within {timeout}s "
            f"(connections={self.connections} requests={self.requests} active={self.active})"
        )
        return self


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Merge over into a copy of base; dicts merge, a None value deletes the key."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_ms(v: Any) -> float:
    """A config duration in milliseconds, read by py-proxy's own parser (testkit)."""
    return float(duration_ms(v))


class Proxy:
    """One running twin. Started from a config dict; stopped (SIGTERM, exit 0 asserted)
    by the fixture at teardown."""

    def __init__(
        self, impl: str, config: dict[str, Any], workdir: Path, seq: int
    ) -> None:
        self.impl = impl
        self.workdir = workdir
        self.config = config
        self.port = int(str(config["listen"]).rsplit(":", 1)[1])
        self.config_path = workdir / f"proxy-{impl}-{seq}.yaml"
        self.stdout_path = workdir / f"proxy-{impl}-{seq}.stdout"
        self.stderr_path = workdir / f"proxy-{impl}-{seq}.stderr"
        access = str(config.get("log", {}).get("access", "stdout"))
        self.access_path: Path | None = {
            "stdout": self.stdout_path,
            "stderr": self.stderr_path,
            "off": None,
        }.get(access, Path(access))
        self.write_config(config)
        argv = impl_argv(impl) + ["--config", str(self.config_path)]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=workdir
            )
        self.stopped = False
        self._wait_started(START_TIMEOUT)

    def _wait_started(self, timeout: float) -> None:
        """Wait for the twin's `start` event on stderr: both twins log it once the listen
        (and admin.listen) sockets listen and the signal handlers are installed, so a test
        may connect or signal at once. The event is info level: under log.level warn or
        error it is not written, and then a LISTEN socket on the port is what we wait for.
        stderr goes straight to a file (never a pipe a busy test could leave full, which
        would stall the proxy), so every event stays readable through events()."""
        level = str(self.config.get("log", {}).get("level", "info"))
        if level in ("debug", "info"):
            what = "log its start event"
            ready: Callable[[], bool] = lambda: bool(self.events("start"))
        else:
            what = f"listen on {self.port} (log.level {level}: no start event)"
            ready = lambda: is_listening(self.port)
        up = wait_until(lambda: ready() or self.proc.poll() is not None, timeout)
        if self.proc.poll() is not None or not up:
            rc = self.proc.poll()
            self.kill()
            pytest.fail(
                f"{self.impl}-proxy did not {what} within {timeout}s (exit {rc}); stderr:\n"
                f"{self.stderr_text()[-4000:]}\nconfig:\n{self.config_path.read_text()}",
                pytrace=False,
            )

    # --- config -----------------------------------------------------------------
    def write_config(self, config: dict[str, Any] | str) -> None:
        text = (
            config
            if isinstance(config, str)
            else yaml.safe_dump(config, sort_keys=False)
        )
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    def shutdown_s(self) -> float:
        return parse_ms(self.config.get("timeouts", {}).get("shutdown", "30s")) / 1000

    # --- observation ------------------------------------------------------------
    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def access_log_lines(self) -> list[str]:
        if self.access_path is None:
            return []
        try:
            text = self.access_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.split("\n") if line.strip()]

    def wait_access_log(self, n: int, timeout: float = 5.0) -> list[str]:
        """At least n access log lines (logged after each response), or fail."""
        lines = wait_until(
            lambda: len(self.access_log_lines()) >= n and self.access_log_lines(),
            timeout,
        )
        lines = self.access_log_lines()
        assert len(lines) >= n, (
            f"expected {n} access log lines within {timeout}s, got {lines}"
        )
        return lines

    def wait_stderr(self, needle: str, timeout: float = 5.0) -> str:
        ok = wait_until(lambda: needle in self.stderr_text(), timeout)
        assert ok, (
            f"{needle!r} not on stderr within {timeout}s:\n{self.stderr_text()[-3000:]}"
        )
        return self.stderr_text()

    def events(self, name: str) -> list[dict[str, Any]]:
        """Event-log records on stderr with event == name, in either log format:
        JSON lines, or text `ts level event key=value ...`."""
        out = []
        for line in self.stderr_text().splitlines():
            rec: Any = None
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
            else:
                parts = line.split(" ", 3)
                if len(parts) >= 3 and re.match(r"\d{4}-\d\d-\d\dT", parts[0]):
                    rec = {"ts": parts[0], "level": parts[1], "event": parts[2]}
                    rec["text"] = parts[3] if len(parts) > 3 else ""
            if isinstance(rec, dict) and rec.get("event") == name:
                out.append(rec)
        return out

    def wait_event(
        self, name: str, count: int = 1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        ok = wait_until(lambda: len(self.events(name)) >= count, timeout)
        assert ok, (
            f"no {count}x {name!r} event on stderr within {timeout}s:\n{self.stderr_text()[-3000:]}"
        )
        return self.events(name)

    def rss_kb(self) -> int:
        return rss_kb_of(self.proc.pid)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    # --- talking ------------------------------------------------------------------
    def connect(self, timeout: float = IO_TIMEOUT, source: str | None = None) -> Conn:
        return Conn(self.port, timeout=timeout, source=source)

    def request(
        self,
        target: str = "/",
        method: str = "GET",
        source: str | None = None,
        **kw: Any,
    ) -> Response:
        """One request on a fresh connection (from the local address `source`)."""
        with self.connect(source=source) as c:
            return c.request(target, method=method, **kw)

    def access_records(self) -> list[dict[str, Any]]:
        """The access log as dicts (log.format json)."""
        return [json.loads(line) for line in self.access_log_lines()]

    def workers_serving(self, first: int, total: int) -> set[int]:
        """The `worker` ids (behaviour.md "Logs") of access records first.. once total
        lines are logged: which workers served those requests."""
        self.wait_access_log(total)
        return {r["worker"] for r in self.access_records()[first:]}

    def reload(self, config: dict[str, Any]) -> None:
        """Write config, SIGHUP, wait for the `reload` event (a `reload_failed` fails)."""
        self.config = config
        self.write_config(config)
        ok, failed = len(self.events("reload")), len(self.events("reload_failed"))
        self.signal(signal.SIGHUP)
        self.wait_event("reload", ok + 1)
        assert len(self.events("reload_failed")) == failed, self.stderr_text()[-2000:]

    # --- teardown -------------------------------------------------------------------
    def kill(self) -> None:
        for p in reversed(process_tree(self.proc.pid)):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> int:
        """SIGTERM and wait (bounded by timeouts.shutdown + 5 s); returns the exit code."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(self.shutdown_s() + 5)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.impl}-proxy still running {self.shutdown_s() + 5}s after SIGTERM; killed"
            ) from None


# --------------------------------------------------------------------------- factories


class UpstreamFactory:
    """upstream(["u1", "u2"], **flags) -> a started Upstream; all stopped by close().

    flags apply to every listener (`idle_close_ms=1` -> `--idle-close-ms 1`);
    per_listener={"u1": {"fault": "reset"}} to one listener only; ports={"u1": P} picks
    the port (e.g. one a proxy has been refused on)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Upstream] = []

    def __call__(
        self,
        names: list[str] | None = None,
        per_listener: dict[str, dict[str, Any]] | None = None,
        ports: dict[str, int] | None = None,
        **flags: Any,
    ) -> Upstream:
        up = Upstream(
            names or ["u1"],
            flags,
            self.workdir,
            ports=ports,
            listener_flags=per_listener,
        )
        self.started.append(up)
        return up

    def close(self) -> None:
        for up in self.started:
            up.stop()


def base_config(workdir: Path, seq: int, impl: str) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{free_port()}",
        "workers": 1,
        "upstreams": [],
        # Teardown waits at most shutdown + 5 s for exit 0.
        "timeouts": {"shutdown": "3s"},
        "log": {
            "level": "info",
            "access": str(workdir / f"access-{impl}-{seq}.log"),
            "format": "json",
        },
    }


class ProxyFactory:
    """proxy(upstreams, **overrides) -> a started Proxy of the twin under test.

    upstreams: an Upstream (all its listeners), a list of Upstreams and/or config entries.
    overrides: config keys merged over base_config (nested dicts merge, None deletes).
    close() stops every proxy: SIGTERM, exit 0 within timeouts.shutdown + 5 s, no
    sanitizer report; returns what went wrong."""

    def __init__(self, impl: str, workdir: Path) -> None:
        self.impl = impl
        self.workdir = workdir
        self.started: list[Proxy] = []

    def __call__(self, upstreams: Any = None, **overrides: Any) -> Proxy:
        cfg = base_config(self.workdir, len(self.started), self.impl)
        if isinstance(upstreams, Upstream):
            cfg["upstreams"] = upstreams.entries()
        elif isinstance(upstreams, list):
            cfg["upstreams"] = [
                e
                for u in upstreams
                for e in (u.entries() if isinstance(u, Upstream) else [u])
            ]
        cfg = deep_merge(cfg, overrides)
        p = Proxy(self.impl, cfg, self.workdir, len(self.started))
        self.started.append(p)
        return p

    def close(self) -> list[str]:
        problems = []
        for p in self.started:
            try:
                rc = p.stop()
                if rc != 0:
                    problems.append(
                        f"{p.impl}-proxy exit code {rc} after SIGTERM (want 0); stderr:\n"
                        f"{p.stderr_text()[-3000:]}"
                    )
            except AssertionError as e:
                problems.append(str(e))
            finally:
                if p.proc.poll() is None:
                    p.kill()
        for p in self.started:
            check_sanitizers(p.stderr_text(), f"{p.impl}-proxy")
        return problems


# --------------------------------------------------------------------------- assertions


def assert_proxy_error(
    r: Response, code: int, close: bool, request_id: str | None = None
) -> None:
    """The exact bytes of behaviour.md "Errors the proxy sends". request_id: the id the
    client sent (must be kept); None: the proxy generates 32 lowercase hex."""
    reason = REASONS[code]
    body = json.dumps({"code": code, "message": reason}, separators=(",", ":")).encode()
    rid = r.get("X-Request-ID")
    assert rid is not None, f"no X-Request-ID on {code}: {r.raw_head!r}"
    if request_id is None:
        assert GENERATED_ID.match(rid), f"generated X-Request-ID not 32 hex: {rid!r}"
    else:
        assert rid == request_id, f"X-Request-ID {rid!r}, client sent {request_id!r}"
    head = (
        f"HTTP/1.1 {code} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {rid}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    ).encode()
    assert (r.raw_head, r.body) == (head, body)
