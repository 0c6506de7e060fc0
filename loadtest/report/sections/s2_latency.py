"""Report section: S2 latency vs throughput (olgen, open loop)."""

from __future__ import annotations

from loadtest.report import plots
from loadtest.report.common import (
    NOT_MEASURED,
    PCTS,
    Ctx,
    fmt_row,
    invalid_list,
    metric,
    ratio_table,
    s2_common,
    spectrum_block,
)
from loadtest.report.doc import Block, Heading, Para, Table
from loadtest.report.load import cell


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
                    f"{label} {point.tag}",
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
