"""Every process the runner starts, and what it reads about them from /proc.

Each child runs in its own session (process group) so stopping it stops everything it
forked; a registry plus atexit and signal handlers make sure nothing outlives the run.
/proc readers are pure functions of the text they parse, so tests feed them fixtures.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- /proc parsing (pure)


def parse_stat(text: str) -> dict[str, int | str]:
    """One /proc/PID/stat line -> pid, comm, state, ppid, utime, stime (ticks), rss (pages).

    comm may hold spaces and parentheses, so split at the LAST ')'.
    """
    lpar = text.index("(")
    rpar = text.rindex(")")
    pid = int(text[:lpar].strip())
    comm = text[lpar + 1 : rpar]
    rest = text[rpar + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3]
    return {
        "pid": pid,
        "comm": comm,
        "state": rest[0],
        "ppid": int(rest[1]),
        "utime": int(rest[11]),
        "stime": int(rest[12]),
        "starttime": int(rest[19]),
        "rss": int(rest[21]),
    }


def cpu_seconds(
    stats: Sequence[dict[str, int | str]], clk_tck: int = CLK_TCK
) -> tuple[float, float]:
    """(user_s, sys_s) summed over parsed stat records."""
    u = sum(int(s["utime"]) for s in stats)
    s_ = sum(int(s["stime"]) for s in stats)
    return u / clk_tck, s_ / clk_tck


def cpu_delta(
    before: Sequence[dict[str, int | str]],
    after: Sequence[dict[str, int | str]],
    clk_tck: int = CLK_TCK,
) -> tuple[float, float]:
    """CPU (user_s, sys_s) a process tree used between two samples.

    Matched per pid: a process present only in ``after`` counts from zero, one gone
    by ``after`` contributes nothing more than its ``before`` value (so it counts 0).
    """
    b = {int(s["pid"]): s for s in before}
    du = ds = 0
    for s in after:
        prev = b.get(int(s["pid"]))
        if prev is not None and prev.get("starttime") != s.get("starttime"):
            prev = None  # pid reused
        du += int(s["utime"]) - (int(prev["utime"]) if prev else 0)
        ds += int(s["stime"]) - (int(prev["stime"]) if prev else 0)
    return du / clk_tck, ds / clk_tck


def children_map(stats: Sequence[dict[str, int | str]]) -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for s in stats:
        kids.setdefault(int(s["ppid"]), []).append(int(s["pid"]))
    return kids


def tree_pids(root: int, stats: Sequence[dict[str, int | str]]) -> list[int]:
    """root and all its descendants, from parsed stat records of every process."""
    kids = children_map(stats)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


# ---------------------------------------------------------------- /proc reading


def read_stat(pid: int) -> dict[str, int | str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return parse_stat(f.read())
    except (OSError, ValueError):
        return None


def all_stats() -> list[dict[str, int | str]]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = read_stat(int(d))
            if s is not None:
                out.append(s)
    return out


def tree_stats(root: int) -> list[dict[str, int | str]]:
    stats = all_stats()
    want = set(tree_pids(root, stats))
    return [s for s in stats if int(s["pid"]) in want]


# ---------------------------------------------------------------- ports


def wait_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen | None = None
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


# ---------------------------------------------------------------- process registry


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 800) -> str:
        if self.log is None or not self.log.exists():
            return ""
        data = self.log.read_bytes()[-n:]
        return data.decode("utf-8", "replace").strip()


class ProcManager:
    """Starts children in their own process group and guarantees they are all stopped."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[Proc] = []
        atexit.register(self.stop_all)

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        cpu: int | None = None,
        stdout: int | IO | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> Proc:
        """Start cmd (pinned with taskset to ``cpu`` if given); stderr (and stdout unless
        given) go to logdir/<name>.log."""
        argv = list(cmd)
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{name}.log"
        with open(log, "ab") as logf:  # Popen dups the fd; ours closes at once
            p = subprocess.Popen(
                argv,
                stdout=stdout if stdout is not None else logf,
                stderr=logf,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def stop(
        self, proc: Proc, grace: float = 3.0, sig: int = signal.SIGTERM
    ) -> int | None:
        """Signal the process group, wait ``grace`` s, then SIGKILL it. Returns the exit code."""
        if proc.popen.poll() is None:
            try:
                os.killpg(proc.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # the group may hold children even after the leader exited
        try:
            os.killpg(proc.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.procs:
            self.procs.remove(proc)
        if proc.popen.stdout is not None:
            try:
                proc.popen.stdout.close()
            except OSError:
                pass
        return proc.popen.returncode

    def kill(self, proc: Proc) -> None:
        """SIGKILL at once (S8 kills an upstream mid-run)."""
        self.stop(proc, grace=0.0, sig=signal.SIGKILL)

    def stop_all(self) -> None:
        for p in list(reversed(self.procs)):
            self.stop(p, grace=1.0)


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP become SystemExit so every finally block (and atexit) runs."""

    def _raise(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _raise)
