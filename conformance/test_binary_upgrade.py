"""Binary upgrade on SIGUSR2 (docs/operations.md "Binary upgrade"): the running process
starts the binary again and hands it its listening sockets over a unix socket; once the
new one serves, the old one stops accepting, drains and exits 0. No connection is refused
and no request fails on the way.

The new process is the old one's child; when the old one exits it is re-parented. The
test process makes itself a child subreaper for the test, so every old process ends up
as its child and its exit status can be read; the proxy handle then follows the new pid.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading

import pytest
from harness import Conn, build_request, free_port, pattern, process_tree, wait_until

PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def _subreaper(on: bool) -> None:
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) != 0:
        pytest.fail(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")


class Adopted:
    """A process handle for a pid that is our child by adoption (subreaper), with the part
    of subprocess.Popen's interface the harness uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:
                return None
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        if not wait_until(lambda: self.poll() is not None, timeout or 3600, 0.01):
            raise subprocess.TimeoutExpired(str(self.pid), timeout)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _exit_code(handle) -> int:
    return handle.wait(30)


class Load:
    """Client threads against the proxy until stopped: keep-alive connections, a new
    connection per request, and slow requests that are in flight during the hand-over.
    A request that fails is recorded; the one exception every HTTP client makes (RFC 9112
    9.3.1): a request on a reused keep-alive connection that the server closed before
    sending any response byte is sent again on a new connection (counted in `retried`)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.retried = 0
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self._keepalive, args=("/bytes/64", 64)),
            threading.Thread(target=self._keepalive, args=("/bytes/64", 64)),
            threading.Thread(
                target=self._keepalive, args=("/delay/150?then=/bytes/32", 32)
            ),
            threading.Thread(target=self._fresh),
        ]
        for t in self.threads:
            t.start()

    def _done(self, r, n: int, what: str) -> None:
        with self.lock:
            if r.status == 200 and r.body == pattern(0, n):
                self.ok += 1
            else:
                self.failures.append(f"{what}: {r.status} {r.body[:80]!r}")

    def _fail(self, what: str, e: BaseException) -> None:
        with self.lock:
            self.failures.append(f"{what}: {e!r}")

    def _keepalive(self, path: str, n: int) -> None:
        c: Conn | None = None
        reused = False
        while not self.stop.is_set():
            if c is None:
                try:
                    c = Conn(self.port)
                except OSError as e:  # refused: the failure this feature prevents
                    self._fail("connect", e)
                    continue
                reused = False
            got = c.received
            try:
                c.send(build_request("GET", path))
                r = c.read_response()
            except (EOFError, OSError) as e:
                silent = c.received == got and not c.buf
                c.close()
                c = None
                if reused and silent and not isinstance(e, TimeoutError):
                    with self.lock:
                        self.retried += 1
                    continue  # sent again on a new connection
                self._fail(f"keep-alive {path}", e)
                continue
            self._done(r, n, f"keep-alive {path}")
            reused = True
            if (r.get("Connection") or "").lower() == "close":
                c.close()
                c = None

    def _fresh(self) -> None:
        while not self.stop.is_set():
            try:
                with Conn(self.port) as c:
                    r = c.request("/bytes/64", headers=[("Connection", "close")])
            except OSError as e:
                self._fail("fresh", e)
                continue
            except EOFError as e:
                self._fail("fresh", e)
                continue
            self._done(r, 64, "fresh")

    def count(self) -> int:
        with self.lock:
            return self.ok

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)
            assert not t.is_alive(), "load thread stuck"


def _upgrade_once(p, handle, n_before: int, timeout: float = 60):
    """SIGUSR2 to the current process; wait for its `upgrade` event naming the new pid
    and for the old process's exit 0. Returns the new process's handle."""
    handle.send_signal(signal.SIGUSR2)
    recs = p.wait_event("upgrade", n_before + 1, timeout=timeout)
    new_pid = recs[n_before]["pid"]
    assert any(r.get("pid") == new_pid for r in p.events("start")), p.stderr_text()[
        -2000:
    ]
    assert _exit_code(handle) == 0, p.stderr_text()[-3000:]
    return Adopted(new_pid)


@pytest.mark.parametrize("workers", [1, 2])
def test_upgrades_under_load_refuse_nothing(upstream, proxy, workers):
    up = upstream(["u1"])
    admin = free_port()
    p = proxy(up, workers=workers, admin={"listen": f"127.0.0.1:{admin}"})
    rounds = 5 if workers == 1 else 2
    _subreaper(True)
    seen = [p.proc.pid]
    load = None
    try:
        load = Load(p.port)
        handle = p.proc
        for i in range(rounds):
            done = load.count()
            assert wait_until(lambda d=done: load.count() >= d + 30, 20), "no traffic"
            handle = _upgrade_once(p, handle, i)
            seen.append(handle.pid)
            p.proc = handle  # the fixture stops (and checks) the newest process
        done = load.count()
        assert wait_until(lambda: load.count() >= done + 30, 20), "no traffic after"
        load.finish()
        failures, load = load.failures, None
        assert not failures, failures[:10]
        assert len(p.events("upgrade")) == rounds and not p.events("upgrade_failed")
        assert handle.poll() is None
        # the new process serves the port and the admin API
        with Conn(p.port) as c:
            assert c.request("/bytes/3").body == pattern(0, 3)
        with Conn(admin) as c:
            assert (
                c.request("/healthz", headers=[("Connection", "close")]).status == 200
            )
    finally:
        if load is not None:
            load.finish()
        _subreaper(False)
        for pid in seen[:-1]:  # every old one has exited (or is killed now)
            for q in reversed(process_tree(pid)) if _alive(pid) else []:
                _kill(q)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def test_upgrade_with_changed_listen_is_refused_and_old_keeps_serving(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    old_port = p.port
    cfg = dict(p.config)
    cfg["listen"] = f"127.0.0.1:{free_port()}"
    p.write_config(cfg)
    _subreaper(True)
    try:
        p.signal(signal.SIGUSR2)
        rec = p.wait_event("upgrade_failed", timeout=30)[0]
        assert "exited with 2" in rec["error"], rec
        assert (
            "config error:" in p.stderr_text() and "binary upgrade" in p.stderr_text()
        )
    finally:
        _subreaper(False)
    assert p.proc.poll() is None and not p.events("upgrade")
    with Conn(old_port) as c:
        assert c.request("/").status == 200
    # a good file again: the next SIGUSR2 upgrades
    p.write_config(p.config)
    _subreaper(True)
    try:
        new = _upgrade_once(p, p.proc, 0)
        p.proc = new
    finally:
        _subreaper(False)
    with Conn(old_port) as c:
        assert c.request("/").status == 200
