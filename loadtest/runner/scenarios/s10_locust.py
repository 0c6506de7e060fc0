"""S10: the realistic mix with locust (distributed), beside its own ceiling without a proxy.

Parameters: loadtest/scenarios/profiles.yaml; what each figure means: docs/benchmarking.md.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from testkit import ports

from .. import locustdrv
from ..contenders import Running
from .core import Block, Ctx, _measure_each, base_doc, raw_name


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
        ports.free_port(),
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


# The registry (scenarios/__init__.py) reads these names.
PARAMS = {"S10": params_S10}
BLOCK = block_S10
