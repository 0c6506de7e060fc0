"""Report section: S4 CPU per request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loadtest.report import plots
from loadtest.report.common import (
    MISSING,
    NOT_MEASURED,
    Ctx,
    contender_table,
    figure_columns,
    fmt_cell,
    fmt_row,
    invalid_list,
    metric,
    ratio_table,
    s4_rate,
)
from loadtest.report.doc import Block, Heading, Para, Table
from loadtest.report.load import Cell, Results, cell


def section(ctx: Ctx) -> list[Block]:
    res = ctx.res
    blocks: list[Block] = [Heading(2, "S4 CPU per request", "s4")]
    runs = res.select("S4")
    if not runs:
        return blocks + [Para(f"CPU per request: {NOT_MEASURED}.")]
    names = res.contenders("S4")
    rates = res.param_values("S4", "rate")
    figs = (
        ("CPU µs/req", metric("cpu_us_per_req")),
        ("user µs/req", metric("user_us_per_req")),
        ("sys µs/req", metric("sys_us_per_req")),
        ("utilisation % of a core", metric("utilisation", scale=100)),
        ("requests", metric("requests")),
        ("syscalls/req", metric("syscalls_per_req")),
    )
    rows = []
    for n in names:
        for rate in rates:
            sel = res.select("S4", n, rate=rate)
            if sel:
                rows.append(
                    fmt_row(f"{n} @{rate}", [cell(sel, get) for _, get in figs])
                )
    blocks.append(Table(("contender @req/s",) + tuple(h for h, _ in figs), tuple(rows)))
    panels = []
    for title, get, unit in (
        ("CPU per request (user+sys)", metric("cpu_us_per_req"), "µs/req"),
        (
            "syscalls per request (strace -c -f)",
            metric("syscalls_per_req"),
            "syscalls/req",
        ),
    ):
        series = {
            n: [cell(res.select("S4", n, rate=r), get).summary for r in rates]
            for n in names
        }
        panels.append(plots.Panel(title, unit, [f"{r} req/s" for r in rates], series))
    path = plots.bars(ctx.plots_dir / "s4-cpu.png", panels)
    blocks.append(ctx.image(path, "S4 CPU µs per request and syscalls per request"))
    if all(r.metric("syscalls_per_req") is None for r in runs):
        blocks.append(
            Para("Syscalls per request: not measured in this run (no strace pass).")
        )
    fits = [r for r in runs if r.params.get("fit")]
    if fits:
        fig = [
            ("marginal µs/req (b)", metric("marginal_us_per_req")),
            ("± fit s.e. µs", metric("marginal_se_us")),
            ("idle utilisation (a)", metric("idle_utilisation")),
            ("r²", metric("r2")),
            ("max req/s in fit", metric("max_rps")),
        ]
        fit_names = [n for n in names if any(r.contender == n for r in fits)]
        blocks.append(
            Para(
                "Marginal CPU cost: utilisation (CPU s per s, schedstat) = a + b × req/s, "
                "fit over the idle point and every valid rate of a rep; b is the CPU one more "
                "request costs. Read it with its r² and its range: on a VM the utilisation "
                "is usually concave in the rate (wake-ups batch as the load rises, so CPU "
                "per request falls), and a straight line's slope then depends on how far up "
                "the rates a rep could go, which differs between contenders and between "
                "runs. Contenders are compared on CPU per request at the same offered rate "
                "(the table above, the ratios below and the verdict)."
            )
        )
        blocks.append(
            contender_table(
                fit_names,
                "contender",
                figure_columns(
                    fit_names,
                    lambda n: [r for r in fits if r.contender == n],
                    fig,
                ),
            )
        )
    traced = [
        r
        for r in rates
        if any(
            x.metric("syscalls_per_req") is not None for x in res.select("S4", rate=r)
        )
    ]
    rate = (traced or [s4_rate(res)])[-1]
    blocks += syscall_table(res, names, rate)
    blocks += ratio_table(
        [
            (
                f"CPU µs/req @{rate}",
                {
                    n: cell(res.select("S4", n, rate=rate), metric("cpu_us_per_req"))
                    for n in names
                },
            ),
            (
                f"syscalls/req @{rate}",
                {
                    n: cell(res.select("S4", n, rate=rate), metric("syscalls_per_req"))
                    for n in names
                },
            ),
        ]
    )
    blocks += invalid_list(runs)
    return blocks


def syscall_table(
    res: Results, names: Sequence[str], rate: Any, top: int = 10
) -> list[Block]:
    """The syscalls that dominate, per request, median over valid reps."""
    per: dict[str, dict[str, Cell]] = {}
    weight: dict[str, float] = {}
    for n in names:
        sel = [r for r in res.select("S4", n, rate=rate)]
        keys = {k for r in sel if r.valid for k in (r.metrics.get("syscalls") or {})}
        for k in keys:
            c = cell(sel, metric("syscalls", k))
            per.setdefault(k, {})[n] = c
            if c.summary:
                weight[k] = max(weight.get(k, 0.0), c.summary.median)
    if not per:
        return []
    chosen = sorted(weight, key=lambda k: (-weight[k], k))[:top]
    rows = tuple(
        (k,)
        + tuple(fmt_cell(per[k].get(n)) if per[k].get(n) else MISSING for n in names)
        for k in chosen
    )
    return [
        Para(
            f"Top {len(chosen)} syscalls per request at {rate} req/s (median [min, max] over valid reps):"
        ),
        Table(("syscall",) + tuple(names), rows),
    ]
