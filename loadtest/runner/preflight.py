"""Refuse to benchmark a busy machine.

Two checks: the 1-minute load average, and foreign processes (anything outside the
runner's own process tree) using more than a share of one CPU over a ~1 s sample of
/proc. The decision is a pure function of the samples so tests inject them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import processes

LOADAVG_MAX = 1.0  # 1-min load average above this: busy
PROC_CPU_MAX_PCT = 10.0  # any foreign process above this % of one CPU: busy
SAMPLE_S = 1.0


@dataclass
class Preflight:
    loadavg: float
    busy_processes: list[dict[str, object]] = field(default_factory=list)
    loadavg_max: float = LOADAVG_MAX
    proc_cpu_max_pct: float = PROC_CPU_MAX_PCT

    @property
    def busy(self) -> bool:
        return self.loadavg > self.loadavg_max or bool(self.busy_processes)

    def reasons(self) -> list[str]:
        out = []
        if self.loadavg > self.loadavg_max:
            out.append(f"1-min load average {self.loadavg:.2f} > {self.loadavg_max}")
        for p in self.busy_processes:
            out.append(
                f"pid {p['pid']} ({p['comm']}) uses {p['cpu_pct']:.1f}% CPU > {self.proc_cpu_max_pct}%"
            )
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "loadavg": self.loadavg,
            "loadavg_max": self.loadavg_max,
            "proc_cpu_max_pct": self.proc_cpu_max_pct,
            "busy_processes": self.busy_processes,
            "busy": self.busy,
        }


def parse_loadavg(text: str) -> float:
    return float(text.split()[0])


def busy_processes(
    before: Sequence[dict[str, int | str]],
    after: Sequence[dict[str, int | str]],
    interval_s: float,
    own: set[int],
    max_pct: float = PROC_CPU_MAX_PCT,
    clk_tck: int = processes.CLK_TCK,
) -> list[dict[str, object]]:
    """Foreign processes whose CPU over the interval exceeds max_pct of one CPU."""
    b = {int(s["pid"]): s for s in before}
    found = []
    for s in after:
        pid = int(s["pid"])
        if pid in own or pid not in b or b[pid].get("starttime") != s.get("starttime"):
            continue
        ticks = (
            int(s["utime"])
            + int(s["stime"])
            - int(b[pid]["utime"])
            - int(b[pid]["stime"])
        )
        pct = 100.0 * ticks / clk_tck / interval_s
        if pct > max_pct:
            found.append({"pid": pid, "comm": s["comm"], "cpu_pct": round(pct, 1)})
    found.sort(key=lambda p: -float(p["cpu_pct"]))  # type: ignore[arg-type]
    return found


def own_tree(stats: Sequence[dict[str, int | str]], me: int | None = None) -> set[int]:
    """The runner, its descendants and its ancestors (make, the shell that started it)."""
    me = os.getpid() if me is None else me
    own = set(processes.tree_pids(me, stats))
    parent = {int(s["pid"]): int(s["ppid"]) for s in stats}
    p = parent.get(me, 0)
    while p > 1:
        own.add(p)
        p = parent.get(p, 0)
    return own


def check(
    loadavg_max: float = LOADAVG_MAX,
    proc_cpu_max_pct: float = PROC_CPU_MAX_PCT,
    sample_s: float = SAMPLE_S,
    read_loadavg: Callable[[], str] | None = None,
    sample: Callable[[], list[dict[str, int | str]]] = processes.all_stats,
    sleep: Callable[[float], None] = time.sleep,
) -> Preflight:
    if read_loadavg is None:

        def read_loadavg() -> str:
            with open("/proc/loadavg", encoding="ascii") as f:
                return f.read()

    load = parse_loadavg(read_loadavg())
    before = sample()
    sleep(sample_s)
    after = sample()
    own = own_tree(after)
    busy = busy_processes(before, after, sample_s, own, proc_cpu_max_pct)
    return Preflight(load, busy, loadavg_max, proc_cpu_max_pct)
