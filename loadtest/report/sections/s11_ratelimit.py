"""Report section: S11 rate-limit accuracy."""

from __future__ import annotations

from collections.abc import Callable

from loadtest.report import plots
from loadtest.report.common import (
    NOT_MEASURED,
    Ctx,
    _num,
    contender_table,
    figure_columns,
    fmt_cell,
    invalid_list,
    metric,
    ratio_table,
)
from loadtest.report.doc import Block, Heading, Para, Table
from loadtest.report.load import Run, cell


def section(ctx: Ctx) -> list[Block]:
    res = ctx.res
    blocks: list[Block] = [Heading(2, "S11 Rate-limit accuracy", "s11")]
    runs = res.select("S11")
    if not runs:
        return blocks + [Para(f"Rate-limit accuracy: {NOT_MEASURED}.")]
    blocks.append(
        Para(
            "Each client (its own source address, 127.0.0.2 …) offers twice its limit at a "
            "steady pace; every contender limits per client address with the same capacity "
            "and rate. A token bucket admits capacity + rate × duration requests per client: "
            "'vs token bucket' is admitted ÷ that (1.00 = exact). nginx (leaky bucket, "
            "burst = capacity − 1, nodelay) and HAProxy (admitted requests counted over a "
            "sliding window of capacity ÷ rate seconds) are the closest equivalents each "
            "product has, not the same algorithm (docs/benchmarking.md): HAProxy's window "
            "admits the configured rate but no burst on top. CPU µs/req is the proxy's "
            "user + sys time over every request, admitted or limited."
        )
    )
    names = res.contenders("S11")

    def sel(n: str) -> list[Run]:
        return res.select("S11", n)

    figs: list[tuple[str, Callable[[Run], float | None]]] = [
        ("capacity", lambda r: _num(r.param("capacity"))),
        ("rate/s", lambda r: _num(r.param("rate_per_sec"))),
        ("offered/s per client", lambda r: _num(r.param("offered_per_client"))),
        ("admitted/s per client", metric("admitted_per_s_mean")),
        ("min client", metric("admitted_per_s_min")),
        ("max client", metric("admitted_per_s_max")),
        ("vs token bucket", metric("accuracy_mean")),
        ("max |error| %", metric("max_abs_error_pct")),
        ("limited", metric("limited")),
        ("CPU µs/req", metric("cpu_us_per_req")),
    ]
    blocks.append(contender_table(names, "contender", figure_columns(names, sel, figs)))
    # per client: admitted/s, median over valid reps
    sources = sorted(
        {c for r in runs if r.valid for c in (r.metrics.get("clients") or {})},
        key=lambda a: (
            tuple(int(x) for x in a.split(".")) if a.count(".") == 3 else (a,)
        ),
    )
    if sources:
        rows = []
        for n in names:
            row = [n]
            for src in sources:
                c = cell(sel(n), metric("clients", src, "admitted_per_s"))
                row.append(fmt_cell(c, note=False))
            rows.append(tuple(row))
        blocks.append(
            Para("Admitted requests/s per client (median [min, max] over valid reps):")
        )
        blocks.append(Table(("contender",) + tuple(sources), tuple(rows)))
    panels = [
        plots.Panel(
            title,
            title,
            ["S11"],
            {n: [cell(sel(n), get).summary] for n in names},
            False,
        )
        for title, get in (
            ("admitted/s per client", metric("admitted_per_s_mean")),
            ("CPU µs/req", metric("cpu_us_per_req")),
        )
    ]
    path = plots.bars(ctx.plots_dir / "s11-ratelimit.png", panels, ncols=2)
    blocks.append(ctx.image(path, "S11 admitted rate per client and CPU per request"))
    blocks += ratio_table(
        [(h, {n: cell(sel(n), g) for n in names}) for h, g in figs if h == "CPU µs/req"]
    )
    blocks += invalid_list(runs)
    return blocks
