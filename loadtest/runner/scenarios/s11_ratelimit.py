"""S11: rate-limit accuracy (allowed vs the token-bucket bound per client).

Parameters: loadtest/scenarios/profiles.yaml; what each figure means: docs/benchmarking.md.
"""

from __future__ import annotations

import asyncio
import csv
import statistics
from functools import partial
from typing import Any

from .. import httpclient, processes
from ..contenders import Running
from .core import (
    Block,
    Ctx,
    _measure_each,
    base_doc,
    ensure_shared_upstreams,
    join,
    raw_name,
)


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


# The registry (scenarios/__init__.py) reads these names.
PARAMS = {"S11": params_S11}
BLOCK = block_S11
