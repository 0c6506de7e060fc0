"""S2/S3: open-loop latency with olgen (S2 along a rate ladder until the points turn invalid, S3 the added latency at fixed rates).

Parameters: loadtest/scenarios/profiles.yaml; what each figure means: docs/benchmarking.md.
"""

from __future__ import annotations

import statistics
from functools import partial
from typing import Any

from .. import contenders
from .core import (
    Block,
    Ctx,
    _measure_each,
    _need_olgen,
    _olgen_measure,
    base_doc,
    ensure_running,
    join,
    raw_name,
    start_contender,
    warmup,
)


def params_S2(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    """One absolute rate ladder for every contender when the profile gives ``rates`` (so
    their curves share an axis and "max rate at p99 <= 1 ms" compares like with like);
    else ``fractions`` of the contender's own median S1 capacity, or ``fixed_rates``
    when S1 did not run. Each point records the fraction of the contender's own capacity
    it was, when S1 measured one."""
    p = ctx.prof["S2"]
    conns_cap = int(p["capacity_connections"])
    caps = ctx.capacity.get((name, conns_cap))
    cap = statistics.median(caps) if caps else None

    def point(rate: int, frac: float | None) -> dict[str, Any]:
        return {
            "rate": rate,
            "connections": p["connections"],
            "path": p["path"],
            "fraction_of_capacity": frac,
            "capacity_rps": round(cap) if cap else None,
        }

    if p.get("rates"):
        return [point(int(r), round(r / cap, 3) if cap else None) for r in p["rates"]]
    if cap:
        return [point(max(100, int(round(cap * f, -2))), f) for f in p["fractions"]]
    return [point(int(r), None) for r in p["fixed_rates"]]


def params_S3(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S3"]
    return [{"rate": p["rate"], "connections": p["connections"], "path": p["path"]}]


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


# The registry (scenarios/__init__.py) reads these names.
PARAMS = {"S2": params_S2, "S3": params_S3}
BLOCK = block_S23
