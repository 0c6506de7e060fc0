"""S9: timeouts (p99 within [T, T+20 ms] after calibrating the client's own offset, fd delta from a baseline taken before warm-up).

Parameters: loadtest/scenarios/profiles.yaml; what each figure means: docs/benchmarking.md.
"""

from __future__ import annotations

import asyncio
import csv
import time
from functools import partial
from typing import Any

from testkit import proc

from .. import contenders, httpclient, stats_util
from ..contenders import Running
from .core import (
    Block,
    Ctx,
    base_doc,
    ensure_running,
    ensure_shared_upstreams,
    join,
    raw_name,
    start_contender,
    warmup,
)


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
    fds_before = proc.fd_count(run.pid)
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
    fds_after = proc.fd_count(run.pid)
    while fds_after > fds_before and time.monotonic() - t_done < 3:
        time.sleep(0.05)
        fds_after = proc.fd_count(run.pid)
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
        fds_baseline = proc.fd_count(run.pid)  # before the warm-up
        warmup(ctx, run)
        for i, p in enumerate(blk.params):
            run = ensure_running(ctx, run, doc, tag)
            blk.measure(
                i, partial(_s9_measure, ctx, run, rep, p, fds_baseline, cal), run
            )
    finally:
        contenders.stop(ctx.pm, run)


# The registry (scenarios/__init__.py) reads these names.
PARAMS = {"S9": params_S9}
BLOCK = block_S9
