"""What the machine did during a measurement: per-core CPU, steal, load average, and the
CPU a process tree used, from schedstat (nanoseconds) rather than 10 ms ticks.

- ``/proc/stat`` ``cpuN`` lines give each core's jiffies by mode; the delta over a
  measurement says how busy the proxy core and the load core were, and how much time
  the hypervisor stole. A point whose load core was saturated (``LOAD_BOUND_PCT``) is
  measuring the generator, not the proxy: the runner marks it LOAD-BOUND.
- ``/proc/PID/task/TID/schedstat`` field 1 is the time the task ran on a CPU in ns,
  updated at every context switch (no sampling). It has no user/sys split: that split
  is taken from the tick counters of ``/proc/PID/task/TID/stat`` as a ratio only.
- ``linear_fit`` fits CPU = a + b * rate with the standard error of each coefficient.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOAD_BOUND_PCT = 95.0  # load core busier than this: the point is LOAD-BOUND

_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_proc_stat(text: str) -> dict[str, dict[str, int]]:
    """``/proc/stat`` -> {"cpu": {...}, "cpu0": {...}, ...} in jiffies per mode."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        parts = line.split()
        vals = [int(x) for x in parts[1 : 1 + len(_MODES)]]
        vals += [0] * (len(_MODES) - len(vals))
        out[parts[0]] = dict(zip(_MODES, vals, strict=True))
    return out


def read_proc_stat() -> dict[str, dict[str, int]]:
    try:
        return parse_proc_stat(Path("/proc/stat").read_text())
    except OSError:
        return {}


def core_delta(b: dict[str, int], a: dict[str, int]) -> dict[str, float]:
    """Percentages of one core's time between two samples: busy (everything but idle,
    iowait and steal), user (user+nice), system, softirq (irq+softirq), steal, idle."""
    d = {k: max(0, a.get(k, 0) - b.get(k, 0)) for k in _MODES}
    total = sum(d.values())
    if total <= 0:
        return {
            k: 0.0
            for k in ("busy_pct", "user_pct", "system_pct", "softirq_pct", "steal_pct")
        }

    def pct(x: float) -> float:
        return round(100.0 * x / total, 1)

    return {
        "busy_pct": pct(total - d["idle"] - d["iowait"] - d["steal"]),
        "user_pct": pct(d["user"] + d["nice"]),
        "system_pct": pct(d["system"]),
        "softirq_pct": pct(d["irq"] + d["softirq"]),
        "steal_pct": pct(d["steal"]),
    }


def parse_loadavg(text: str) -> float:
    return float(text.split()[0])


def read_loadavg() -> float | None:
    try:
        return parse_loadavg(Path("/proc/loadavg").read_text())
    except (OSError, ValueError, IndexError):
        return None


def host_sample() -> dict[str, Any]:
    return {"stat": read_proc_stat(), "loadavg": read_loadavg()}


def host_delta(
    before: dict[str, Any],
    after: dict[str, Any],
    proxy_cpu: int,
    load_cpu: int,
    bound_pct: float = LOAD_BOUND_PCT,
) -> dict[str, Any]:
    """The ``host`` metrics of one measurement (see loadtest/SCHEMA.md)."""
    sb, sa = before.get("stat") or {}, after.get("stat") or {}

    def core(n: int) -> dict[str, float] | None:
        k = f"cpu{n}"
        if k not in sb or k not in sa:
            return None
        return core_delta(sb[k], sa[k])

    pc, lc = core(proxy_cpu), core(load_cpu)
    allc = core_delta(sb["cpu"], sa["cpu"]) if "cpu" in sb and "cpu" in sa else None
    return {
        "proxy_core": pc,
        "load_core": lc,
        "steal_pct": allc["steal_pct"] if allc else None,
        "loadavg_1m_before": before.get("loadavg"),
        "loadavg_1m_after": after.get("loadavg"),
        "load_bound_pct": bound_pct,
        "load_bound": bool(lc and lc["busy_pct"] > bound_pct),
    }


def load_bound_reason(host: dict[str, Any]) -> str | None:
    if not host.get("load_bound"):
        return None
    lc = host.get("load_core") or {}
    return (
        f"LOAD-BOUND: load core {lc.get('busy_pct')}% busy "
        f"(> {host.get('load_bound_pct')}%): the generator side was saturated, "
        "not a figure of the proxy"
    )


# ---------------------------------------------------------------- per-task CPU


def parse_schedstat(text: str) -> int:
    """``/proc/PID/task/TID/schedstat`` -> ns on CPU (field 1)."""
    return int(text.split()[0])


def _task_stat_ticks(text: str) -> tuple[int, int]:
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[11]), int(rest[12])


def tasks_cpu(pids: Sequence[int]) -> dict[str, dict[str, int]]:
    """{"PID/TID": {"ns": on-CPU ns, "utime": ticks, "stime": ticks}} for every task."""
    out: dict[str, dict[str, int]] = {}
    for pid in pids:
        base = Path(f"/proc/{pid}/task")
        try:
            tids = os.listdir(base)
        except OSError:
            continue
        for tid in tids:
            try:
                ns = parse_schedstat((base / tid / "schedstat").read_text())
                ut, st = _task_stat_ticks((base / tid / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue
            out[f"{pid}/{tid}"] = {"ns": ns, "utime": ut, "stime": st}
    return out


def tasks_delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, float]:
    """CPU seconds between two ``tasks_cpu`` samples: total from schedstat, split into
    user and sys in the ratio of the tick counters (all user when no tick was seen).
    A task present only in ``after`` counts from zero."""
    ns = ut = st = 0
    for k, a in after.items():
        b = before.get(k, {"ns": 0, "utime": 0, "stime": 0})
        ns += max(0, a["ns"] - b["ns"])
        ut += max(0, a["utime"] - b["utime"])
        st += max(0, a["stime"] - b["stime"])
    total = ns / 1e9
    user_share = ut / (ut + st) if ut + st else 1.0
    return {
        "cpu_s": total,
        "user_s": total * user_share,
        "sys_s": total * (1 - user_share),
        "ticks_user": ut,
        "ticks_sys": st,
    }


# ---------------------------------------------------------------- fit


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float] | None:
    """Least squares y = a + b x with standard errors and r². None for < 3 points or
    no spread in x."""
    n = len(xs)
    if n < 3 or n != len(ys):
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    a = my - b * mx
    resid = [y - (a + b * x) for x, y in zip(xs, ys, strict=True)]
    sse = sum(r * r for r in resid)
    s2 = sse / (n - 2)
    se_b = math.sqrt(s2 / sxx)
    se_a = math.sqrt(s2 * (1 / n + mx * mx / sxx))
    syy = sum((y - my) ** 2 for y in ys)
    r2 = 1 - sse / syy if syy > 0 else 1.0
    return {"a": a, "b": b, "se_a": se_a, "se_b": se_b, "r2": r2, "n": n}
