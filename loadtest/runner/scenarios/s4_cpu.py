"""S4: CPU per request (user and sys from schedstat at 0 and at rising rates, a linear fit CPU = a + b*rate) and the gated strace syscall pass.

Parameters: loadtest/scenarios/profiles.yaml; what each figure means: docs/benchmarking.md.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import time
from functools import partial
from typing import Any

from testkit import proc

from .. import contenders, hostcpu, olgen
from ..contenders import Running
from .core import (
    Block,
    Ctx,
    _need_olgen,
    base_doc,
    ensure_running,
    raw_name,
    start_contender,
    warmup,
)

_STRACE_ROW = re.compile(
    r"^\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)?\s*(\w+)\s*$"
)


def parse_strace_c(text: str) -> dict[str, int]:
    """``strace -c`` summary table -> {syscall: calls} (the 'total' row excluded).

    Rows: % time, seconds, usecs/call, calls, [errors], syscall.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[0].replace(".", "", 1).isdigit():
            continue
        name = parts[-1]
        if name == "total":
            continue
        try:
            calls = int(parts[3])
        except ValueError:
            continue
        out[name] = out.get(name, 0) + calls
    return out


def params_S4(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    """One common absolute ladder for every contender: 0 req/s (idle) and the profile's
    rates up to near saturation; a point a contender cannot sustain comes out invalid
    and stays out of its fit."""
    p = ctx.prof["S4"]
    rates = {int(r) for r in p["rates"]} | {0}
    own: set[int] = set()
    # plus fractions of this contender's own S1 capacity, so that its fit reaches near
    # its saturation (a common ladder up to 10 k/s is 15 % of a 65 k/s proxy)
    caps = ctx.capacity.get(
        (name, int(ctx.prof.get("S2", {}).get("capacity_connections", 64)))
    )
    if caps and p.get("fractions"):
        cap = statistics.median(caps)
        own = {max(100, int(round(cap * f, -2))) for f in p["fractions"]} - rates
    return [
        {
            "rate": r,
            "connections": p["connections"],
            "path": p["path"],
            "ladder": "own" if r in own else "common",
        }
        for r in sorted(rates | own)
    ]


def strace_gate(sres: dict[str, Any], connections: int) -> str | None:
    """The strace pass counts only if it ran undisturbed: every scheduled request
    completed and no connection was re-made."""
    sched = int(sres.get("scheduled") or 0)
    done = int(sres.get("completed") or 0)
    connects = int(sres.get("connects") or 0)
    reasons = []
    if done != sched:
        reasons.append(f"completed {done} of {sched} scheduled")
    if connects > connections:
        reasons.append(f"{connects - connections} reconnects")
    return "; ".join(reasons) or None


def _s4_measure(
    ctx: Ctx, run: Running, rep: int, p: dict[str, Any]
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    assert run.pid is not None
    rate = float(p["rate"])
    dur = float(ctx.prof["S4"]["duration_s"])
    pids = proc.process_tree(run.pid)
    before = hostcpu.tasks_cpu(pids)
    t0 = time.monotonic()
    if rate > 0:
        res = olgen.run(
            run.url + p["path"], rate, dur, connections=int(p["connections"])
        )
    else:
        time.sleep(dur)  # the idle point: what the proxy burns doing nothing
        res = {}
    wall = time.monotonic() - t0
    after = hostcpu.tasks_cpu(proc.process_tree(run.pid))
    cpu = hostcpu.tasks_delta(before, after)
    completed = int(res.get("completed") or 0)
    metrics: dict[str, Any] = {
        "cpu_source": "schedstat",
        "cpu_s": cpu["cpu_s"],
        "cpu_us_per_req": cpu["cpu_s"] * 1e6 / completed if completed else None,
        "user_us_per_req": cpu["user_s"] * 1e6 / completed if completed else None,
        "sys_us_per_req": cpu["sys_s"] * 1e6 / completed if completed else None,
        "user_s": cpu["user_s"],
        "sys_s": cpu["sys_s"],
        "wall_s": wall,
        "utilisation": cpu["cpu_s"] / wall if wall > 0 else None,
        "throughput_rps": completed / wall if wall > 0 else 0.0,
        "requests": completed,
        "processes": len(pids),
        "achieved_rate": res.get("achieved_rate") if rate > 0 else 0,
        "offered_rate_achieved": res.get("offered_rate_achieved") if rate > 0 else True,
        "errors": res.get("errors") if rate > 0 else 0,
        "syscalls_per_req": None,
        "syscalls": {},
    }
    reason = olgen.gate(res, rate) if rate > 0 else None
    files: dict[str, str] = {}
    # syscalls: a separate short run under strace, pinned off the load core; it slows the
    # proxy, so only its counts are used, and only if the pass ran undisturbed
    strace_s = float(ctx.prof["S4"].get("strace_s", 1))
    strace_rate = ctx.prof["S4"].get("strace_rate")
    if strace_rate is not None and int(strace_rate) != int(rate):
        strace_s = 0  # one strace pass per block, at strace_rate
    if rate > 0 and strace_s > 0 and run.alive() and reason is None:
        fname = f"raw/{raw_name('S4', run.name, int(rate), 'r' + str(rep))}.strace.txt"
        cmd = ["strace", "-c", "-f", "-q", "-o", str(ctx.out / fname)]
        for pid in proc.process_tree(run.pid):
            cmd += ["-p", str(pid)]
        aux = int(ctx.pin.get("aux_cpu", ctx.proxy_cpu))
        st = ctx.pm.start(f"strace-{run.name}", cmd, cpu=aux)
        try:
            time.sleep(0.3)  # attach
            conns = int(p["connections"])
            sres = olgen.run(run.url + p["path"], rate, strace_s, connections=conns)
        finally:
            try:
                os.kill(st.pid, signal.SIGINT)
                st.popen.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            ctx.pm.stop(st, grace=1)
        try:
            table = parse_strace_c(
                (ctx.out / fname).read_text(encoding="utf-8", errors="replace")
            )
        except OSError:
            table = {}
        scompleted = int(sres.get("completed") or 0)
        why = strace_gate(sres, conns)
        metrics["strace_cpu"] = aux
        metrics["strace_requests"] = scompleted
        metrics["strace_scheduled"] = int(sres.get("scheduled") or 0)
        metrics["strace_connects"] = int(sres.get("connects") or 0)
        metrics["strace_invalid_reason"] = why
        if table and scompleted and why is None:
            metrics["syscalls_per_req"] = sum(table.values()) / scompleted
            metrics["syscalls"] = {
                k: v / scompleted
                for k, v in sorted(table.items(), key=lambda kv: -kv[1])
            }
        files["strace"] = fname
    return metrics, reason, files


def s4_fit(recs: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """Marginal CPU cost: fit utilisation (CPU s per s) = a + b * throughput (req/s)
    over the block's valid points, idle point included. b x 1e6 is µs per request."""
    pts = [
        (float(r["metrics"]["throughput_rps"]), float(r["metrics"]["utilisation"]))
        for r in recs
        if r["valid"] and r["metrics"].get("utilisation") is not None
    ]
    pts.sort()
    loaded = [x for x, _ in pts if x > 0]
    has_idle = any(x == 0 for x, _ in pts)
    fit = hostcpu.linear_fit([x for x, _ in pts], [y for _, y in pts])
    m: dict[str, Any] = {
        "points": [{"rps": round(x, 1), "utilisation": round(y, 5)} for x, y in pts],
        "marginal_us_per_req": None,
        "marginal_se_us": None,
        "idle_utilisation": None,
        "r2": None,
        "max_rps": max(loaded) if loaded else None,
    }
    if fit is not None:
        m.update(
            marginal_us_per_req=fit["b"] * 1e6,
            marginal_se_us=fit["se_b"] * 1e6,
            idle_utilisation=fit["a"],
            idle_se=fit["se_a"],
            r2=fit["r2"],
        )
    reason = None
    if not has_idle or len(loaded) < 4:
        reason = (
            f"fit needs the idle point and >= 4 valid loaded rates "
            f"(idle: {'yes' if has_idle else 'no'}, loaded: {len(loaded)})"
        )
    elif fit is None:
        reason = "fit failed (no spread in rate)"
    return m, reason


def block_S4(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    _need_olgen(ctx)
    doc = base_doc(ctx)
    recs: list[dict[str, Any]] = []
    tag = raw_name(sc, name, rep)
    run = start_contender(ctx, name, doc, tag)
    try:
        warmup(ctx, run)
        for i, p in enumerate(blk.params):
            run = ensure_running(ctx, run, doc, tag)
            recs.append(blk.measure(i, partial(_s4_measure, ctx, run, rep, p), run))
    finally:
        contenders.stop(ctx.pm, run)
    metrics, reason = s4_fit(recs)
    ctx.record(sc, name, rep, {"fit": "utilisation = a + b * rps"}, metrics, reason)


# The registry (scenarios/__init__.py) reads these names.
PARAMS = {"S4": params_S4}
BLOCK = block_S4
