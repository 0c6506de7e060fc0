"""S8: balancing fairness (equal, slow, 3:1:1 weighted phases asserted by max/min and chi-square) and ejection/re-admission after an upstream dies and returns.

Parameters: loadtest/scenarios/profiles.yaml; what each figure means: docs/benchmarking.md.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from functools import partial
from typing import Any

from testkit import ports

from .. import contenders, fairness, httpclient, processes, stats_util
from ..contenders import Running
from .core import (
    ROOT,
    Block,
    Ctx,
    HarnessError,
    base_doc,
    join,
    raw_name,
    start_contender,
    start_upstream,
    upstream_cmd,
)

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
        s["ports"] = [ports.free_port() for _ in range(3)]
        s["u4"] = ports.free_port()
        s["slow"] = ports.free_port()
        s["dead"] = ports.free_port()  # never listened on
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


# The registry (scenarios/__init__.py) reads these names.
PARAMS = {"S8": params_S8}
BLOCK = block_S8
FINISH = stop_s8_upstreams
