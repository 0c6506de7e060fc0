"""Report section: S2 latency vs throughput (olgen, open loop)."""

from __future__ import annotations

import numpy as np

from loadtest.report import plots
from loadtest.report.common import (
    NOT_MEASURED,
    PCTS,
    SLO_P99_US,
    Ctx,
    contender_table,
    fmt_row,
    invalid_list,
    is_response,
    max_rate_at_p99,
    metric,
    ratio_table,
    s2_common,
    spectrum_block,
)
from loadtest.report.doc import Block, Heading, Para, Table
from loadtest.report.load import Run, cell


def section(ctx: Ctx) -> list[Block]:
    res = ctx.res
    blocks: list[Block] = [
        Heading(2, "S2 Latency vs throughput (olgen, open loop)", "s2")
    ]
    runs = res.select("S2")
    if not runs:
        return blocks + [Para(f"Latency vs throughput: {NOT_MEASURED}.")]
    rates = res.param_values("S2", "rate")
    names = res.contenders("S2")
    rows = []
    curves: dict[str, plots.Curve] = {}
    for n in names:
        ach: list[float] = []
        p50: list[float] = []
        p99: list[float] = []
        for rate in rates:
            sel = res.select("S2", n, rate=rate)
            if not sel:
                continue
            a = cell(sel, metric("achieved_rate"))
            cells = [a] + [cell(sel, metric("percentiles_us", k)) for _, k in PCTS]
            cells.append(cell(sel, metric("errors")))
            frac = sel[0].params.get("fraction_of_capacity")
            label = f"{n} @{rate}"
            if isinstance(frac, (int, float)):
                label += f" ({frac:.0%} of capacity)"
            rows.append(fmt_row(label, cells))
            c50 = cell(sel, metric("percentiles_us", "50"))
            c99 = cell(sel, metric("percentiles_us", "99"))
            if a.summary and c50.summary and c99.summary:
                ach.append(a.summary.median)
                p50.append(c50.summary.median)
                p99.append(c99.summary.median)
        if ach:
            curves[n] = plots.Curve(ach, p50, p99)
    headers: tuple[str, ...] = ("contender @offered req/s", "achieved req/s")
    headers += tuple(f"{label} µs" for label, _ in PCTS) + ("errors",)
    blocks.append(Table(headers, tuple(rows)))
    if curves:
        path = plots.latency_throughput(
            ctx.plots_dir / "s2-latency-throughput.png",
            "S2 latency vs achieved throughput (p50 solid, p99 dashed; valid reps' medians)",
            curves,
        )
        blocks.append(ctx.image(path, "S2 latency vs throughput"))
    blocks += offered_ladder(ctx, names, rates)
    blocks += over_time_plots(ctx, names, rates)
    point = s2_common(res)
    if point is None:
        blocks.append(
            Para(
                "No S2 rate (nor fraction of capacity) where every contender has a valid "
                "run: no common spectrum, no ratios (the S3 spectrum below compares all "
                "contenders at one low rate)."
            )
        )
    else:
        blocks.append(
            Para(
                f"Compared at **{point.label}**: the highest offered rate every contender "
                "sustained with a valid run; when each contender got its own rates (fractions "
                "of its own S1 capacity), the fraction closest to 50 % that all sustained."
            )
        )
        blocks += spectrum_block(ctx, "S2", point, "s2-spectrum.png")
        blocks += ratio_table(
            [
                (
                    f"{label} µs {point.tag}",
                    {
                        n: cell(runs, metric("percentiles_us", k))
                        for n, runs in point.runs.items()
                    },
                )
                for label, k in PCTS[:4]
            ]
        )
    blocks += invalid_list(runs)
    return blocks


def offered_ladder(ctx: Ctx, names: list[str], rates: list) -> list[Block]:
    """p99 vs offered rate on one absolute axis, and the max rate each kept p99 <= 1 ms."""
    res = ctx.res
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for n in names:
        xs, ys = [], []
        for rate in rates:
            c = cell(res.select("S2", n, rate=rate), metric("percentiles_us", "99"))
            if c.summary is not None and isinstance(rate, (int, float)):
                xs.append(float(rate))
                ys.append(c.summary.median)
        if xs:
            curves[n] = (xs, ys)
    if not curves:
        return []
    slo = f"p99 ≤ {SLO_P99_US / 1000:g} ms"
    path = plots.latency_offered(
        ctx.plots_dir / "s2-p99-vs-offered.png",
        f"S2 p99 vs offered rate, every contender on one absolute axis ({slo} dotted)",
        curves,
        SLO_P99_US,
    )
    shared = [r for r in rates if all(res.select("S2", n, rate=r) for n in names)]
    ladder = (
        "Every contender was offered the same absolute rates."
        if shared and len(shared) == len(rates)
        else "This run stepped each contender's rates by its own capacity, so the "
        "contenders' points sit at different absolute rates on the common axis."
    )
    table = contender_table(
        names,
        "contender",
        [(f"max offered req/s at {slo}", {n: max_rate_at_p99(res, n) for n in names})],
    )
    return [
        ctx.image(path, "S2 p99 vs offered rate on one absolute axis"),
        Para(
            f"**Max rate at {slo}**: per rep, the highest offered rate whose run was valid "
            f"with p99 ≤ {SLO_P99_US:,.0f} µs (0 = none measured met it); median [min, max] "
            "over reps. A lower bound when it is the contender's highest measured rate. "
            + ladder
        ),
        table,
    ]


def first_valid(runs: list[Run]) -> Run | None:
    return next((r for r in runs if r.valid), None)


def over_time_plots(ctx: Ctx, names: list[str], rates: list) -> list[Block]:
    """Per contender, latency over the window at each S2 point (first valid rep), from the
    raw samples: a queue that grows through the window shows as a rising line."""
    res = ctx.res
    blocks: list[Block] = []
    lacking: list[str] = []
    for n in names:
        panels: list[plots.OverTime] = []
        for rate in rates:
            run = first_valid(res.select("S2", n, rate=rate))
            if run is None:
                continue
            cols = res.read_columns(
                run, "samples", ("intended_us", "latency_us", "status")
            )
            if cols is None or not len(cols["intended_us"]):
                continue
            keep = is_response(cols["status"])
            t = cols["intended_us"][keep]
            if not len(t):
                continue
            panels.append(
                plots.OverTime(
                    f"@{rate} req/s, rep {run.rep}",
                    (t - t.min()) / 1e6,
                    np.asarray(cols["latency_us"][keep], dtype=float),
                )
            )
        if not panels:
            lacking.append(n)
            continue
        path = plots.over_time(
            ctx.plots_dir / f"s2-over-time-{n}.png",
            f"S2 {n}: latency over the window per offered rate (p50, p99, max per window)",
            panels,
        )
        blocks.append(ctx.image(path, f"S2 latency over time, {n}"))
    if blocks:
        blocks.insert(
            0,
            Para(
                "**Latency over time** at each S2 point (first valid rep; 40 equal windows "
                "of the measurement, nearest-rank p50 / p99 / max per window): a flat line "
                "is a steady state, a rising one a queue growing through the window that a "
                "summary percentile hides."
            ),
        )
    if lacking:
        blocks.append(
            Para(
                f"Latency over time: no raw samples with send times for {', '.join(lacking)}."
            )
        )
    return blocks
