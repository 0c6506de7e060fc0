"""The scenarios S0-S11: one function per scenario runs one contender's block of one rep.

Each block starts the contender on the scenario's twinproxy YAML, warms it up, measures
every parameter of the scenario, and stops it. Every measurement becomes one runs.jsonl
record (loadtest/SCHEMA.md), valid or not; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import csv
import http.client
import json
import os
import re
import select
import shlex
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from . import (
    contenders,
    fairness,
    hostcpu,
    httpclient,
    idleconns,
    locustdrv,
    olgen,
    processes,
    stats_util,
    tpconfig,
    wrk,
)
from .contenders import Running, StartError
from .plan import Progress
from .processes import ProcManager

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ROOT / "upstreams" / "build" / "upstream"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def short(text: str, head: int = 110, tail: int = 90) -> str:
    """One line for the progress display: whitespace collapsed, head ... tail."""
    one = " ".join(text.split())
    return one if len(one) <= head + tail + 5 else f"{one[:head]} ... {one[-tail:]}"


def upstream_cmd() -> list[str]:
    """The upstream server command (TWINPROXY_UPSTREAM overrides it, for lab development)."""
    override = os.environ.get("TWINPROXY_UPSTREAM")
    return shlex.split(override) if override else [str(UPSTREAM)]


def upstream_available() -> tuple[bool, str | None]:
    if os.environ.get("TWINPROXY_UPSTREAM"):
        return True, None
    return (
        (True, None)
        if UPSTREAM.exists()
        else (
            False,
            f"upstream binary missing: {UPSTREAM.relative_to(ROOT)} (make build)",
        )
    )


class HarnessError(RuntimeError):
    """The runner itself is broken (not a measurement that came out invalid)."""


@dataclass
class Ctx:
    pm: ProcManager
    out: Path
    work: Path
    prof: dict[str, Any]
    pin: dict[str, Any]
    progress: Progress | None = None
    avail: dict[str, tuple[bool, str | None]] = field(default_factory=dict)
    upstreams: list[tuple[str, str]] = field(
        default_factory=list
    )  # shared (address, name)
    upstream_proc: processes.Proc | None = None
    s8: dict[str, Any] = field(default_factory=dict)  # S8's own upstream processes
    capacity: dict[tuple[str, int], list[float]] = field(
        default_factory=dict
    )  # (contender, conns) -> rps
    harness_errors: list[str] = field(default_factory=list)
    generator_missing: set[str] = field(default_factory=set)
    records: int = 0
    invalid: int = 0

    @property
    def raw(self) -> Path:
        return self.out / "raw"

    @property
    def proxy_cpu(self) -> int:
        return int(self.pin["proxy_cpu"])

    @property
    def load_cpu(self) -> int:
        return int(self.pin["load_cpu"])

    def note(self, what: str) -> None:
        if self.progress is not None:
            self.progress.note(what)

    def record(
        self,
        scenario: str,
        contender: str,
        rep: int,
        params: dict[str, Any],
        metrics: dict[str, Any],
        reason: str | None,
        files: dict[str, str] | None = None,
        started: str | None = None,
        duration_s: float = 0.0,
    ) -> dict[str, Any]:
        rec = {
            "scenario": scenario,
            "contender": contender,
            "rep": rep,
            "params": params,
            "metrics": metrics,
            "valid": reason is None,
            "invalid_reason": reason,
            "files": files or {},
            "started": started or now_iso(),
            "duration_s": round(duration_s, 3),
        }
        with open(self.out / "runs.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=False) + "\n")
        self.records += 1
        if reason is not None:
            self.invalid += 1
            self.note(f"INVALID: {short(reason)}")
        return rec


# ---------------------------------------------------------------- upstreams


def start_upstream(
    ctx: Ctx, name: str, listeners: list[tuple[int, str]], timeout: float = 10.0
) -> processes.Proc:
    """Start one upstream process with the given (port, name) listeners; waits for 'ready'."""
    cmd = upstream_cmd()
    for port, n in listeners:
        cmd += ["--listen", f"127.0.0.1:{port}", "--name", n]
    cmd.append("--quiet")
    proc = ctx.pm.start(name, cmd, cpu=ctx.load_cpu, stdout=subprocess.PIPE)
    assert proc.popen.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.popen.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            if b"ready" in buf:
                # keep draining stdout in the background is unnecessary: --quiet
                return proc
        if not proc.alive():
            break
    tail = proc.log_tail()
    ctx.pm.stop(proc, grace=1)
    raise HarnessError(
        f"upstream {name} not ready within {timeout:.0f}s: {buf!r} {tail}"
    )


def ensure_shared_upstreams(ctx: Ctx) -> None:
    if ctx.upstream_proc is not None and ctx.upstream_proc.alive():
        return
    if not ctx.upstreams:
        ctx.upstreams = [
            (f"127.0.0.1:{processes.free_port()}", f"u{i + 1}") for i in range(2)
        ]
    listeners = [(tpconfig.split_hostport(a)[1], n) for a, n in ctx.upstreams]
    ctx.upstream_proc = start_upstream(ctx, "upstream", listeners)


def base_doc(ctx: Ctx, **kw: Any) -> dict[str, Any]:
    ensure_shared_upstreams(ctx)
    listen = f"127.0.0.1:{processes.free_port()}"
    ups = kw.pop("upstreams", ctx.upstreams)
    return tpconfig.bench_config(listen, list(ups), **kw)


# ---------------------------------------------------------------- helpers


def warmup(ctx: Ctx, run: Running, path: str = "/bytes/0") -> None:
    """Warm the contender (and its upstream pool): wrk for warmup_s, or 200 requests."""
    w = float(ctx.prof.get("warmup_s", 0))
    if w >= 1:
        ctx.note(f"warm-up {int(w)}s")
        try:
            wrk.run(run.url + path, 64, int(w))
        except (RuntimeError, subprocess.TimeoutExpired, ValueError):
            pass
        return
    try:
        c = http.client.HTTPConnection(run.host, run.port, timeout=2)
        for _ in range(200):
            c.request("GET", path)
            c.getresponse().read()
        c.close()
    except (OSError, http.client.HTTPException):
        pass


def crash_reason(run: Running) -> str | None:
    if run.alive():
        return None
    return f"contender crashed ({run.exit_info()[:300]})"


def join(*reasons: str | None) -> str | None:
    rs = [r for r in reasons if r]
    return "; ".join(rs) if rs else None


def raw_name(*parts: Any) -> str:
    return "-".join(str(p) for p in parts)


LOAD_BOUND_RECORDED_ONLY = {"S10"}


class Block:
    """One contender's block: records every param exactly once, even on failure."""

    def __init__(
        self,
        ctx: Ctx,
        scenario: str,
        contender: str,
        rep: int,
        params: list[dict[str, Any]],
    ):
        self.ctx, self.sc, self.c, self.rep = ctx, scenario, contender, rep
        self.params = params
        self.done: set[int] = set()

    def measure(
        self,
        i: int,
        fn: Callable[[], tuple[dict[str, Any], str | None, dict[str, str]]],
        run: Running | None,
        annotate: Callable[
            [dict[str, Any], str | None], tuple[dict[str, Any], str | None]
        ]
        | None = None,
    ) -> dict[str, Any]:
        p = self.params[i]
        self.ctx.note(
            " ".join(f"{k}={v}" for k, v in p.items() if k not in ("path",))[:34]
        )
        started, t0 = now_iso(), time.monotonic()
        hb = hostcpu.host_sample()
        try:
            metrics, reason, files = fn()
        except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as e:
            metrics, reason, files = {}, f"measurement failed: {e}"[:500], {}
        host = hostcpu.host_delta(
            hb,
            hostcpu.host_sample(),
            self.ctx.proxy_cpu,
            self.ctx.load_cpu,
            float(self.ctx.prof.get("load_bound_pct", hostcpu.LOAD_BOUND_PCT)),
        )
        metrics = {**metrics, "host": host}
        # direct has no proxy: its figure is the load side's by definition (the ceiling);
        # an idle point (rate 0) puts no load on the load side
        if self.c != "direct" and p.get("rate", 1) != 0:
            metrics["load_bound"] = host["load_bound"]
            # S10 is closed-loop locust: it saturates the load core by design and is read
            # against locust's ceiling (direct), so there it is recorded, not gated
            if self.sc not in LOAD_BOUND_RECORDED_ONLY:
                reason = join(reason, hostcpu.load_bound_reason(host))
        if run is not None:
            reason = join(reason, crash_reason(run))
        if annotate is not None:
            metrics, reason = annotate(metrics, reason)
        self.done.add(i)
        return self.ctx.record(
            self.sc,
            self.c,
            self.rep,
            p,
            metrics,
            reason,
            files,
            started,
            time.monotonic() - t0,
        )

    def fail_rest(self, reason: str) -> None:
        for i, p in enumerate(self.params):
            if i not in self.done:
                self.done.add(i)
                self.ctx.record(self.sc, self.c, self.rep, p, {}, reason)


def start_contender(
    ctx: Ctx, name: str, doc: dict[str, Any], tag: str, **kw: Any
) -> Running:
    ctx.note("start")
    return contenders.start(ctx.pm, name, doc, ctx.work / tag, ctx.proxy_cpu, **kw)


def ensure_running(ctx: Ctx, run: Running, doc: dict[str, Any], tag: str) -> Running:
    """After a crash, restart the contender so the block's next params still get measured."""
    if run.alive():
        return run
    contenders.stop(ctx.pm, run)
    return start_contender(ctx, run.name, doc, tag + "-restart")


# ---------------------------------------------------------------- S0 / S1 / S5 / S6 (wrk)


def _wrk_measure(
    ctx: Ctx,
    run: Running,
    sc: str,
    rep: int,
    path: str,
    conns: int,
    dur: int,
    headers: tuple[str, ...] = (),
    tagparts: tuple[Any, ...] = (),
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    res, text = wrk.run(run.url + path, conns, dur, headers)
    fname = f"raw/{raw_name(sc, run.name, *tagparts, 'r' + str(rep))}.wrk.txt"
    (ctx.out / fname).write_text(text, encoding="utf-8")
    metrics = {
        k: res[k]
        for k in ("rps", "transfer_bytes_per_s", "errors", "non2xx", "requests")
        if k in res
    }
    metrics["socket_errors"] = {k[7:]: res[k] for k in res if k.startswith("socket_")}
    reason = None
    if res["errors"] or res["non2xx"]:
        reason = f"{res['errors']} socket errors, {res['non2xx']} non-2xx responses"
    if res.get("requests", 1) == 0:
        reason = join(reason, "no request completed")
    return metrics, reason, {"wrk": fname}


def _wrk_block(
    ctx: Ctx,
    sc: str,
    name: str,
    rep: int,
    blk: Block,
    doc: dict[str, Any],
    each: Callable[[dict[str, Any]], tuple[str, int, tuple[str, ...], tuple[Any, ...]]],
) -> None:
    tag = raw_name(sc, name, rep)
    run = start_contender(ctx, name, doc, tag)
    try:
        warmup(ctx, run)
        dur = int(max(1, ctx.prof[sc]["duration_s"]))
        for i, p in enumerate(blk.params):
            run = ensure_running(ctx, run, doc, tag)
            path, conns, headers, tagparts = each(p)
            r = run
            rec = blk.measure(
                i,
                partial(
                    _wrk_measure, ctx, r, sc, rep, path, conns, dur, headers, tagparts
                ),
                run,
            )
            if sc in ("S0", "S1") and rec["valid"]:
                # S2 steps its offered rates up to this contender's own capacity
                ctx.capacity.setdefault((name, conns), []).append(
                    float(rec["metrics"]["rps"])
                )
    finally:
        contenders.stop(ctx.pm, run)


def params_S01(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof[sc]
    return [{"connections": c, "path": p["path"]} for c in p["connections"]]


def block_S01(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    _wrk_block(
        ctx,
        sc,
        name,
        rep,
        blk,
        base_doc(ctx),
        lambda p: (p["path"], p["connections"], (), (p["connections"],)),
    )


def params_S5(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S5"]
    return [
        {"size": s, "connections": p["connections"], "path": f"/bytes/{s}"}
        for s in p["sizes"]
    ]


def block_S5(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    _wrk_block(
        ctx,
        sc,
        name,
        rep,
        blk,
        base_doc(ctx),
        lambda p: (p["path"], p["connections"], (), (p["size"],)),
    )


def params_S6(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S6"]
    return [
        {"connections": c, "path": p["path"], "connection_close": True}
        for c in p["connections"]
    ]


def block_S6(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    _wrk_block(
        ctx,
        sc,
        name,
        rep,
        blk,
        base_doc(ctx),
        lambda p: (
            p["path"],
            p["connections"],
            ("Connection: close",),
            (p["connections"],),
        ),
    )


# ---------------------------------------------------------------- S2 / S3 / S4 (olgen)


def _need_olgen(ctx: Ctx) -> None:
    if not olgen.available():
        ctx.generator_missing.add("olgen")
        raise StartError(
            f"olgen missing: {olgen.BINARY.relative_to(ROOT)} (make build)"
        )


def _olgen_measure(
    ctx: Ctx,
    run: Running,
    sc: str,
    rep: int,
    p: dict[str, Any],
    warm: float,
    samples: bool = True,
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    rate = float(p["rate"])
    files: dict[str, str] = {}
    kw: dict[str, Any] = {
        "connections": int(p.get("connections", 16)),
        "warmup_s": warm,
    }
    if samples:
        fname = f"raw/{raw_name(sc, run.name, int(rate), 'r' + str(rep))}.csv"
        kw["samples"] = ctx.out / fname
        files["samples"] = fname
    res = olgen.run(
        run.url + p.get("path", "/bytes/0"),
        rate,
        float(ctx.prof[sc]["duration_s"]),
        **kw,
    )
    return res, olgen.gate(res, rate), files


def params_S2(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S2"]
    conns_cap = int(p["capacity_connections"])
    caps = ctx.capacity.get((name, conns_cap))
    out = []
    if caps:
        cap = statistics.median(caps)
        for f in p["fractions"]:
            out.append(
                {
                    "rate": max(100, int(round(cap * f, -2))),
                    "connections": p["connections"],
                    "path": p["path"],
                    "fraction_of_capacity": f,
                    "capacity_rps": round(cap),
                }
            )
    else:
        for r in p["fixed_rates"]:
            out.append(
                {
                    "rate": int(r),
                    "connections": p["connections"],
                    "path": p["path"],
                    "fraction_of_capacity": None,
                    "capacity_rps": None,
                }
            )
    return out


def params_S3(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S3"]
    return [{"rate": p["rate"], "connections": p["connections"], "path": p["path"]}]


def _measure_each(
    ctx: Ctx,
    sc: str,
    name: str,
    rep: int,
    blk: Block,
    doc: dict[str, Any],
    measure: Callable[[Any, dict[str, Any]], Callable[[], Any]],
    warm: bool = True,
) -> None:
    """The shape every simple block shares: start the contender, warm it up, measure each
    parameter (restarting the contender if it died), always stop it."""
    tag = raw_name(sc, name, rep)
    run = start_contender(ctx, name, doc, tag)
    try:
        if warm:
            warmup(ctx, run)
        for i, p in enumerate(blk.params):
            run = ensure_running(ctx, run, doc, tag)
            blk.measure(i, measure(run, p), run)
    finally:
        contenders.stop(ctx.pm, run)


class Ladder:
    """S2's rate ladder, lowest rate first. The honest end of a curve is the first point
    that is invalid: it is marked ``curve: "end"``; every point above it is ``past_end``
    and invalid even if its own gates passed (a valid point above an invalid one is not
    on the curve). After ``stop_after`` invalid points in a row the rest is not run."""

    def __init__(self, stop_after: int = 2) -> None:
        self.end_rate: float | None = None
        self.run_invalid = 0
        self.stop_after = stop_after

    def stopped(self) -> bool:
        return self.run_invalid >= self.stop_after

    def annotate(
        self, rate: float, metrics: dict[str, Any], reason: str | None
    ) -> tuple[dict[str, Any], str | None]:
        self.run_invalid = self.run_invalid + 1 if reason else 0
        if self.end_rate is None:
            if reason is None:
                return {**metrics, "curve": "on"}, None
            self.end_rate = rate
            return {**metrics, "curve": "end"}, reason
        past = f"past the end of the curve (rate {self.end_rate:.0f} was invalid)"
        return {**metrics, "curve": "past_end", "curve_end_rate": self.end_rate}, join(
            reason, past
        )


def _past_end(end: float) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    why = (
        f"not measured: past the end of the curve (rate {end:.0f} and the next invalid)"
    )
    return {"curve": "past_end", "curve_end_rate": end}, why, {}


def block_S23(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    _need_olgen(ctx)
    doc = base_doc(ctx)
    warm = float(ctx.prof[sc].get("warmup_s", 0))
    if sc != "S2":
        _measure_each(
            ctx,
            sc,
            name,
            rep,
            blk,
            doc,
            lambda r, p: partial(_olgen_measure, ctx, r, sc, rep, p, warm),
        )
        return
    ladder = Ladder(int(ctx.prof[sc].get("stop_after_invalid", 2)))
    tag = raw_name(sc, name, rep)
    run = start_contender(ctx, name, doc, tag)
    try:
        warmup(ctx, run)
        order = sorted(range(len(blk.params)), key=lambda i: blk.params[i]["rate"])
        for i in order:
            p = blk.params[i]
            if ladder.stopped():
                blk.measure(i, partial(_past_end, ladder.end_rate or 0.0), None)
                continue
            run = ensure_running(ctx, run, doc, tag)
            blk.measure(
                i,
                partial(_olgen_measure, ctx, run, sc, rep, p, warm),
                run,
                partial(ladder.annotate, float(p["rate"])),
            )
    finally:
        contenders.stop(ctx.pm, run)


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
    pids = processes.tree(run.pid)
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
    after = hostcpu.tasks_cpu(processes.tree(run.pid))
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
        for pid in processes.tree(run.pid):
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


# ---------------------------------------------------------------- S7 idle connections


def params_S7(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    return [{"connections": n} for n in ctx.prof["S7"]["connections"]]


def _s7_measure(
    ctx: Ctx, run: Running, n: int
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    assert run.pid is not None
    time.sleep(0.1)
    before = processes.rss_kb(run.pid)
    ic = idleconns.IdleConnections()
    try:
        opened = ic.open(run.host, run.port, n, timeout_s=10 + n / 500)
        time.sleep(float(ctx.prof["S7"]["hold_s"]))
        after = processes.rss_kb(run.pid)
        still = ic.alive()
    finally:
        ic.close()
    metrics = {
        "rss_kb_before": before,
        "rss_kb_after": after,
        "rss_bytes_per_conn": (after - before) * 1024 / opened if opened else None,
        "opened": opened,
        "still_open": still,
    }
    reason = None
    if opened < n:
        reason = f"only {opened} of {n} idle connections could be opened"
    elif still < opened:
        reason = f"the proxy closed {opened - still} of {opened} idle connections during the hold"
    return metrics, reason, {}


def block_S7(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    n_max = max(int(p["connections"]) for p in blk.params)
    doc = base_doc(ctx, max_client_connections=n_max + 1000)
    _measure_each(
        ctx,
        sc,
        name,
        rep,
        blk,
        doc,
        lambda r, p: partial(_s7_measure, ctx, r, int(p["connections"])),
    )


# ---------------------------------------------------------------- S8 round-robin fairness

S8_PHASES = ("equal", "slow", "weighted", "dead", "killed")
S8_WEIGHTS = {"u1": 3, "u2": 1, "u3": 1}  # weighted phase: u1..u3 at 3:1:1, no u4
S8_ASSERTED = ("equal", "slow", "weighted")  # phases whose split is gated


def params_S8(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S8"]
    out = []
    for ph in S8_PHASES:
        d = p["killed_duration_s"] if ph == "killed" else p["duration_s"]
        q: dict[str, Any] = {
            "phase": ph,
            "rate": p["rate"],
            "connections": p["connections"],
            "duration_s": d,
            "retries": p["retries"],
            "max_fails": p["max_fails"],
            "fail_timeout": p["fail_timeout"],
        }
        if ph == "slow":
            q["slow_delay_ms"] = p["slow_delay_ms"]
        if ph == "weighted":
            q["weights"] = dict(S8_WEIGHTS)
        out.append(q)
    return out


def ensure_s8_upstreams(ctx: Ctx) -> dict[str, Any]:
    s = ctx.s8
    if not s:
        s["ports"] = [processes.free_port() for _ in range(3)]
        s["u4"] = processes.free_port()
        s["slow"] = processes.free_port()
        s["dead"] = processes.free_port()  # never listened on
    if s.get("a") is None or not s["a"].alive():
        s["a"] = start_upstream(
            ctx, "s8-upstreams", [(p, f"u{i + 1}") for i, p in enumerate(s["ports"])]
        )
    if s.get("b") is None or not s["b"].alive():
        s["b"] = start_upstream(ctx, "s8-u4", [(s["u4"], "u4")])
    if s.get("delay") is None or not s["delay"].alive():
        cmd = [
            sys.executable,
            "-m",
            "loadtest.runner.delayproxy",
            "--listen",
            f"127.0.0.1:{s['slow']}",
            "--to",
            f"127.0.0.1:{s['u4']}",
            "--delay-ms",
            str(ctx.prof["S8"]["slow_delay_ms"]),
        ]
        s["delay"] = ctx.pm.start("s8-delayproxy", cmd, cpu=ctx.load_cpu, cwd=ROOT)
        if not processes.wait_port("127.0.0.1", s["slow"], 10, s["delay"].popen):
            raise HarnessError(f"S8 delay proxy did not start: {s['delay'].log_tail()}")
    return s


def stop_s8_upstreams(ctx: Ctx) -> None:
    for k in ("delay", "b", "a"):
        p = ctx.s8.get(k)
        if p is not None:
            ctx.pm.stop(p, grace=1)
            ctx.s8[k] = None


def _s8_measure(
    ctx: Ctx, run: Running, rep: int, p: dict[str, Any]
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    s = ctx.s8
    dur = float(p["duration_s"])
    phase = p["phase"]
    events: list[tuple[float, str, bool]] = []
    actions: list[str] = []
    at: dict[str, float] = {}
    refused: list[tuple[float, int]] = []

    def on_tick(t: float) -> None:
        if phase != "killed":
            return
        n = fairness.read_attempt_fails()
        if n is not None:
            refused.append((t, n))
        if t >= dur / 3 and "killed" not in actions:
            ctx.pm.kill(s["b"])
            actions.append("killed")
            at["killed"] = t
        elif t >= 2 * dur / 3 and "killed" in actions and "restarted" not in actions:
            cmd = upstream_cmd() + [
                "--listen",
                f"127.0.0.1:{s['u4']}",
                "--name",
                "u4",
                "--quiet",
            ]
            s["b"] = ctx.pm.start("s8-u4", cmd, cpu=ctx.load_cpu)
            actions.append("restarted")
            at["restarted"] = t

    results = asyncio.run(
        httpclient.paced(
            run.host,
            run.port,
            "/bytes/0",
            float(p["rate"]),
            dur,
            int(p["connections"]),
            timeout=5.0,
            on_tick=on_tick,
        )
    )
    # events on the same clock as on_tick: seconds since paced() started
    t0 = min((r.t_start for r in results), default=0.0)
    for r in results:
        events.append((r.t_start - t0, r.upstream, r.status == 200))
    names = ["u1", "u2", "u3"] if phase == "weighted" else ["u1", "u2", "u3", "u4"]
    counts = {n: 0 for n in names}
    errors = 0
    for _, up, ok in events:
        if ok:
            counts[up] = counts.get(up, 0) + 1
        else:
            errors += 1
    serving = names[:3] if phase == "dead" else names
    sub = {n: counts.get(n, 0) for n in serving}
    weights = p.get("weights")
    chi, dof = fairness.chi_square(sub, weights)
    figs, failed = fairness.assert_fair(sub, weights)
    seconds = max(1, int(dur + 0.999))
    rows = fairness.per_second(events, seconds)
    fname = f"raw/{raw_name('S8', run.name, phase, 'r' + str(rep))}.csv"
    with open(ctx.out / fname, "w", newline="", encoding="ascii") as f:
        w = csv.writer(f)
        w.writerow(["second", "upstream", "count", "errors"])
        w.writerows(rows)
    lat = sorted(r.latency_s * 1e6 for r in results)
    metrics = {
        "counts": counts,
        "serving": serving,
        "max_min_ratio": fairness.max_min_ratio(sub),
        "weights": weights,
        "weighted_max_min": figs["max_min"],
        "chi_square": chi,
        "dof": dof,
        "p_value": figs["p_value"],
        "fairness_asserted": phase in S8_ASSERTED,
        "fairness": (failed or "ok") if phase in S8_ASSERTED else None,
        "fairness_bounds": {"max_min": fairness.MAX_MIN_BOUND, "p_min": fairness.P_MIN},
        "health": {
            "max_fails": p["max_fails"],
            "fail_timeout": p["fail_timeout"],
            "retries": p["retries"],
        },
        "errors": errors,
        "requests": len(results),
        "achieved_rate": len(results) / dur if dur else None,
        "percentiles_us": stats_util.percentiles_us(lat),
        "events": actions,
    }
    reason = None
    if not results:
        reason = "no request completed"
    elif len(results) < 0.9 * float(p["rate"]) * dur:
        reason = (
            f"offered rate not achieved ({len(results) / dur:.0f}/s of {p['rate']}/s)"
        )
    if phase in ("equal", "slow", "weighted") and errors:
        reason = join(reason, f"{errors} errors")
    if phase in S8_ASSERTED and failed:
        reason = join(reason, f"fairness {failed}")
    if phase == "killed" and "killed" in at:
        metrics["ejection"] = fairness.ejection(
            events, refused, at["killed"], at.get("restarted"), "u4"
        )
        metrics["ejection"]["killed_at_s"] = round(at["killed"], 3)
        metrics["ejection"]["restarted_at_s"] = (
            round(at["restarted"], 3) if "restarted" in at else None
        )
    return metrics, reason, {"series": fname}


def block_S8(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    s = ensure_s8_upstreams(ctx)
    for i, p in enumerate(blk.params):
        s = ensure_s8_upstreams(ctx)
        fourth = {
            "equal": s["u4"],
            "slow": s["slow"],
            "weighted": None,
            "dead": s["dead"],
            "killed": s["u4"],
        }[p["phase"]]
        ups = [(f"127.0.0.1:{port}", f"u{j + 1}") for j, port in enumerate(s["ports"])]
        if fourth is not None:
            ups.append((f"127.0.0.1:{fourth}", "u4"))
        doc = base_doc(
            ctx,
            upstreams=ups,
            retries=int(p["retries"]),
            max_fails=int(p["max_fails"]),
            fail_timeout=str(p["fail_timeout"]),
        )
        for u in doc["upstreams"]:
            u["weight"] = int((p.get("weights") or {}).get(u["name"], 1))
        tag = raw_name(sc, name, p["phase"], rep)
        run = start_contender(ctx, name, doc, tag)
        try:
            r = run
            blk.measure(i, partial(_s8_measure, ctx, r, rep, p), run)
        finally:
            contenders.stop(ctx.pm, run)


# ---------------------------------------------------------------- S9 timeouts


def params_S9(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S9"]
    return [
        {
            "read_timeout_ms": p["read_timeout_ms"],
            "requests": p["requests"],
            "concurrency": p["concurrency"],
            "delay_ms": 3 * int(p["read_timeout_ms"]),
        }
    ]


S9_P99_SLACK_MS = (
    20.0  # p99 of the 504s, client offset removed, must be in [T, T + this]
)


def s9_calibrate(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    """The client's own offset: the same burst straight to the upstream's /delay/T. What
    it measures above T is the client and the upstream, not the proxy's timer."""
    tmo = int(p["read_timeout_ms"])
    host, port = ctx.upstreams[0][0].rsplit(":", 1)
    res = asyncio.run(
        httpclient.burst(
            host,
            int(port),
            f"/delay/{tmo}",
            int(p["requests"]),
            int(p["concurrency"]),
            timeout=tmo / 1000 + 3,
        )
    )
    lat = sorted(r.latency_s * 1000 for r in res if r.status == 200)
    return {
        "direct_delay_ms": tmo,
        "direct_ok": len(lat),
        "direct_p50_ms": stats_util.pct(lat, 50) if lat else None,
        "direct_p99_ms": stats_util.pct(lat, 99) if lat else None,
        "client_offset_ms": (stats_util.pct(lat, 50) - tmo) if lat else None,
    }


def s9_gate(metrics: dict[str, Any], slack_ms: float = S9_P99_SLACK_MS) -> str | None:
    """fd leak and timer precision gates of one S9 measurement."""
    reasons = []
    leak = metrics.get("fd_leak")
    if leak is not None and leak > 0:
        reasons.append(
            f"fd leak: {leak} more descriptors than before the timeouts "
            f"(baseline {metrics['fds_baseline']} before warm-up, "
            f"{metrics['fds_before']} after it, {metrics['fds_after']} after)"
        )
    lat = metrics.get("latency_ms") or {}
    off = metrics.get("client_offset_ms")
    t = float(metrics["read_timeout_ms"])
    if lat and off is not None:
        p99 = float(lat["99"]) - max(0.0, float(off))
        if not t <= p99 <= t + slack_ms:
            reasons.append(
                f"p99 {p99:.1f} ms (client offset {off:.1f} ms removed) outside "
                f"[{t:.0f}, {t + slack_ms:.0f}] ms"
            )
    elif not lat:
        reasons.append("no 504 responses")
    return "; ".join(reasons) or None


def _s9_measure(
    ctx: Ctx,
    run: Running,
    rep: int,
    p: dict[str, Any],
    fds_baseline: int,
    cal: dict[str, Any],
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    assert run.pid is not None
    time.sleep(0.1)
    fds_before = processes.fd_count(run.pid)
    tmo = int(p["read_timeout_ms"])
    results = asyncio.run(
        httpclient.burst(
            run.host,
            run.port,
            f"/delay/{p['delay_ms']}",
            int(p["requests"]),
            int(p["concurrency"]),
            timeout=p["delay_ms"] / 1000 + 3,
        )
    )
    t_done = time.monotonic()
    fds_after = processes.fd_count(run.pid)
    while fds_after > fds_before and time.monotonic() - t_done < 3:
        time.sleep(0.05)
        fds_after = processes.fd_count(run.pid)
    settle = time.monotonic() - t_done
    lat = sorted(r.latency_s * 1000 for r in results if r.status == 504)
    c504 = sum(1 for r in results if r.status == 504)
    other: dict[str, int] = {}
    for r in results:
        if r.status != 504:
            other[str(r.status)] = other.get(str(r.status), 0) + 1
    fname = f"raw/{raw_name('S9', run.name, 'r' + str(rep))}.csv"
    with open(ctx.out / fname, "w", newline="", encoding="ascii") as f:
        w = csv.writer(f)
        w.writerow(["latency_ms", "status"])
        for r in results:
            w.writerow([f"{r.latency_s * 1000:.3f}", r.status])
    # idle upstream connections the warm-up left in the pool may stay open; anything
    # above baseline + that pool is a leak
    pool_idle = max(0, fds_before - fds_baseline)
    metrics = {
        "count_504": c504,
        "other": sum(other.values()),
        "other_status": other,
        "latency_ms": {
            "min": lat[0],
            "50": stats_util.pct(lat, 50),
            "99": stats_util.pct(lat, 99),
            "max": lat[-1],
        }
        if lat
        else None,
        "read_timeout_ms": tmo,
        "fds_baseline": fds_baseline,
        "fds_before": fds_before,
        "fds_after": fds_after,
        "fd_delta": fds_after - fds_baseline,
        "fd_pool_idle": pool_idle,
        "fd_leak": fds_after - fds_baseline - pool_idle,
        "fds_settle_s": round(settle, 3),
        **cal,
        "p99_corrected_ms": (
            stats_util.pct(lat, 99) - max(0.0, float(cal["client_offset_ms"]))
            if lat and cal.get("client_offset_ms") is not None
            else None
        ),
        "p99_bound_ms": [tmo, tmo + S9_P99_SLACK_MS],
    }
    reason = None
    if other:
        reason = (
            f"{sum(other.values())} of {len(results)} responses were not 504: {other}"
        )
    reason = join(reason, s9_gate(metrics))
    return metrics, reason, {"samples": fname}


def block_S9(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    p0 = blk.params[0]
    ensure_shared_upstreams(ctx)
    doc = base_doc(
        ctx,
        upstreams=ctx.upstreams[:1],
        retries=0,
        timeouts={"read": f"{int(p0['read_timeout_ms'])}ms", "total": "60s"},
    )
    cal = s9_calibrate(ctx, p0)
    tag = raw_name(sc, name, rep)
    run = start_contender(ctx, name, doc, tag)
    try:
        assert run.pid is not None
        fds_baseline = processes.fd_count(run.pid)  # before the warm-up
        warmup(ctx, run)
        for i, p in enumerate(blk.params):
            run = ensure_running(ctx, run, doc, tag)
            blk.measure(
                i, partial(_s9_measure, ctx, run, rep, p, fds_baseline, cal), run
            )
    finally:
        contenders.stop(ctx.pm, run)


# ---------------------------------------------------------------- S10 locust mix


def params_S10(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S10"]
    return [
        {"users": p["users"], "workers": p["workers"], "duration_s": p["duration_s"]}
    ]


def _s10_measure(
    ctx: Ctx, run: Running, rep: int, p: dict[str, Any]
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    if not locustdrv.available():
        ctx.generator_missing.add("locust")
        raise RuntimeError("locust missing (make deps)")
    dur = max(1, round(float(p["duration_s"])))  # locust -t takes whole seconds
    prefix = ctx.work / f"locust-{run.name}-r{rep}"
    info = locustdrv.run(
        ctx.pm,
        run.url,
        int(p["users"]),
        dur,
        int(p["workers"]),
        prefix,
        processes.free_port(),
        ctx.load_cpu,
    )
    fname = f"raw/{raw_name('S10', run.name, 'r' + str(rep))}.csv"
    rows = locustdrv.merge(prefix, ctx.out / fname)
    metrics = locustdrv.metrics(rows, dur)
    nconn = locustdrv.connects(prefix)
    metrics["client_connects"] = nconn
    metrics["requests_per_connect"] = len(rows) / nconn if nconn else None
    metrics["locust_processes"] = max(1, int(p["workers"]))
    metrics["distributed"] = int(p["workers"]) > 0
    reason = None
    if not rows:
        reason = f"locust recorded no request (exit {info['returncode']}: {info['log_tail'][-200:]})"
    elif metrics["failures"]:
        reason = f"{metrics['failures']} failed requests"
    return metrics, reason, {"samples": fname}


def block_S10(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    doc = base_doc(ctx)
    _measure_each(
        ctx,
        sc,
        name,
        rep,
        blk,
        doc,
        lambda r, p: partial(_s10_measure, ctx, r, rep, p),
        warm=False,
    )


# ---------------------------------------------------------------- S11 rate-limit accuracy


def s11_sources(n: int) -> list[str]:
    """The clients' source addresses: 127.0.0.2, 127.0.0.3, ... (all loopback on Linux),
    so every contender keys them apart by client address alone."""
    if not 1 <= n <= 200:
        raise ValueError(f"S11 clients must be 1..200, not {n}")
    return [f"127.0.0.{i + 2}" for i in range(n)]


def params_S11(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S11"]
    rate = float(p["rate_per_sec"])
    return [
        {
            "clients": int(p["clients"]),
            "capacity": int(p["capacity"]),
            "rate_per_sec": rate,
            "offered_per_client": rate * float(p["offered_factor"]),
            "connections_per_client": int(p["connections_per_client"]),
            "duration_s": float(p["duration_s"]),
            "path": p.get("path", "/bytes/0"),
        }
    ]


def s11_summary(
    per_client: dict[str, list[int]], p: dict[str, Any], cpu_s: float | None
) -> tuple[dict[str, Any], str | None]:
    """Metrics and validity of one S11 measurement from each client's statuses.

    A client offered ``offered_per_client``/s for ``duration_s``; a token bucket of
    ``capacity`` refilled at ``rate_per_sec`` admits capacity + rate x duration of them
    (``expected``). accuracy = admitted / expected (1.0 = exact); admitted_per_s is what
    got through per second against the configured rate.
    """
    dur = float(p["duration_s"])
    cap, rate = int(p["capacity"]), float(p["rate_per_sec"])
    expected = cap + rate * dur
    clients: dict[str, Any] = {}
    total = errors = other = limited = 0
    for src, statuses in per_client.items():
        admitted = sum(1 for s in statuses if s == 200)
        lim = sum(1 for s in statuses if s == 429)
        err = sum(1 for s in statuses if s == 0)
        oth = len(statuses) - admitted - lim - err
        clients[src] = {
            "sent": len(statuses),
            "admitted": admitted,
            "limited": lim,
            "errors": err,
            "other": oth,
            "admitted_per_s": admitted / dur if dur else None,
            "expected_admitted": expected,
            "accuracy": admitted / expected if expected else None,
        }
        total += len(statuses)
        errors += err
        other += oth
        limited += lim
    accs = [c["accuracy"] for c in clients.values() if c["accuracy"] is not None]
    rates = [
        c["admitted_per_s"] for c in clients.values() if c["admitted_per_s"] is not None
    ]
    metrics: dict[str, Any] = {
        "clients": clients,
        "configured_rate_per_sec": rate,
        "capacity": cap,
        "expected_admitted": expected,
        "admitted_per_s_mean": statistics.fmean(rates) if rates else None,
        "admitted_per_s_min": min(rates) if rates else None,
        "admitted_per_s_max": max(rates) if rates else None,
        "accuracy_mean": statistics.fmean(accs) if accs else None,
        "accuracy_min": min(accs) if accs else None,
        "accuracy_max": max(accs) if accs else None,
        "max_abs_error_pct": max(abs(a - 1) for a in accs) * 100 if accs else None,
        "requests": total,
        "limited": limited,
        "errors": errors,
        "other": other,
        "achieved_rate": total / dur if dur else None,
        "cpu_us_per_req": cpu_s * 1e6 / total if cpu_s is not None and total else None,
    }
    offered = float(p["offered_per_client"]) * dur * len(per_client)
    reason = None
    if total == 0:
        reason = "no request completed"
    elif total < 0.9 * offered:
        reason = f"offered rate not achieved ({total} of {offered:.0f} requests sent)"
    if errors or other:
        reason = join(
            reason, f"{errors} connection errors, {other} responses neither 200 nor 429"
        )
    if total and limited == 0:
        reason = join(reason, "no request was limited (rate limiting not in effect?)")
    return metrics, reason


def _s11_measure(
    ctx: Ctx, run: Running, rep: int, p: dict[str, Any]
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    assert run.pid is not None
    sources = s11_sources(int(p["clients"]))
    dur = float(p["duration_s"])

    async def all_clients() -> list[list[httpclient.Result]]:
        return list(
            await asyncio.gather(
                *(
                    httpclient.paced(
                        run.host,
                        run.port,
                        p["path"],
                        float(p["offered_per_client"]),
                        dur,
                        int(p["connections_per_client"]),
                        timeout=5.0,
                        local_host=src,
                    )
                    for src in sources
                )
            )
        )

    before = processes.tree_stats(run.pid)
    results = asyncio.run(all_clients())
    after = processes.tree_stats(run.pid)
    user_s, sys_s = processes.cpu_delta(before, after)
    per_client = {src: [r.status for r in res] for src, res in zip(sources, results)}
    metrics, reason = s11_summary(per_client, p, user_s + sys_s)
    metrics["user_s"], metrics["sys_s"] = user_s, sys_s
    fname = f"raw/{raw_name('S11', run.name, 'r' + str(rep))}.csv"
    t0 = min((r.t_start for res in results for r in res), default=0.0)
    with open(ctx.out / fname, "w", newline="", encoding="ascii") as f:
        w = csv.writer(f)
        w.writerow(["t_ms", "client", "status"])
        for src, res in zip(sources, results):
            for r in res:
                w.writerow([f"{(r.t_start - t0) * 1000:.3f}", src, r.status])
    return metrics, reason, {"samples": fname}


def block_S11(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    p0 = blk.params[0]
    ensure_shared_upstreams(ctx)
    doc = base_doc(
        ctx,
        upstreams=ctx.upstreams[:1],
        rate_limit={"capacity": p0["capacity"], "rate_per_sec": p0["rate_per_sec"]},
    )
    # no warm-up: the readiness check and a warm-up come from 127.0.0.1, a key of its
    # own, but there is nothing to warm that the first measured requests would not
    _measure_each(
        ctx,
        sc,
        name,
        rep,
        blk,
        doc,
        lambda r, p: partial(_s11_measure, ctx, r, rep, p),
        warm=False,
    )


# ---------------------------------------------------------------- dispatch

PARAMS: dict[str, Callable[[Ctx, str, str], list[dict[str, Any]]]] = {
    "S0": params_S01,
    "S1": params_S01,
    "S2": params_S2,
    "S3": params_S3,
    "S4": params_S4,
    "S5": params_S5,
    "S6": params_S6,
    "S7": params_S7,
    "S8": params_S8,
    "S9": params_S9,
    "S10": params_S10,
    "S11": params_S11,
}
BLOCKS: dict[str, Callable[[Ctx, str, str, int, Block], None]] = {
    "S0": block_S01,
    "S1": block_S01,
    "S2": block_S23,
    "S3": block_S23,
    "S4": block_S4,
    "S5": block_S5,
    "S6": block_S6,
    "S7": block_S7,
    "S8": block_S8,
    "S9": block_S9,
    "S10": block_S10,
    "S11": block_S11,
}


def run_block(ctx: Ctx, sc: str, name: str, rep: int) -> None:
    """Run (or record as invalid) one contender's block; only harness bugs propagate as
    entries in ctx.harness_errors, never as a missing record."""
    params = PARAMS[sc](ctx, sc, name)
    blk = Block(ctx, sc, name, rep, params)
    ok, why = ctx.avail.get(name, (True, None))
    if not ok:
        blk.fail_rest(f"contender unavailable: {why}")
        return
    try:
        BLOCKS[sc](ctx, sc, name, rep, blk)
    except StartError as e:
        blk.fail_rest(str(e)[:600])
    except HarnessError as e:
        ctx.harness_errors.append(f"{sc} {name} rep {rep}: {e}")
        blk.fail_rest(f"harness error: {e}"[:600])
    except Exception as e:  # noqa: BLE001 -- a runner bug: keep going, exit non-zero at the end
        tb = traceback.format_exc()
        ctx.harness_errors.append(f"{sc} {name} rep {rep}: {tb}")
        print(tb, file=sys.stderr)
        blk.fail_rest(f"harness error: {type(e).__name__}: {e}"[:600])
    finally:
        blk.fail_rest("not measured (block aborted)")
