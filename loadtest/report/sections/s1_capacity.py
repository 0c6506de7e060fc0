"""Report section: S0/S1 capacity (wrk)."""

from __future__ import annotations

from loadtest.report import plots
from loadtest.report.common import (
    NOT_MEASURED,
    WRK_NOTE,
    Ctx,
    capacity_runs,
    contender_table,
    invalid_list,
    metric,
    ratio_table,
)
from loadtest.report.doc import Block, Heading, Para
from loadtest.report.load import cell, order_contenders


def section(ctx: Ctx) -> list[Block]:
    res = ctx.res
    blocks: list[Block] = [Heading(2, "S0/S1 Capacity (wrk)", "s1")]
    runs = res.select("S1") + res.select("S0")
    if not runs:
        return blocks + [Para(f"Capacity: {NOT_MEASURED}.")]
    blocks.append(
        Para(WRK_NOTE + " S0 is the direct ceiling: wrk straight at the upstream.")
    )
    conns = sorted({r.params["connections"] for r in runs if "connections" in r.params})
    names = order_contenders({r.contender for r in runs})
    cells = {
        (n, c): cell(capacity_runs(res, n, c), metric("rps"), lower_bounds=True)
        for n in names
        for c in conns
    }
    blocks.append(
        contender_table(
            names,
            "contender \\ connections",
            [(f"{c} conns req/s", {n: cells[(n, c)] for n in names}) for c in conns],
        )
    )
    panel = plots.Panel(
        "S1 capacity: requests/s (median, min–max bars)",
        "requests/s",
        [str(c) for c in conns],
        {n: [cells[(n, c)].summary for c in conns] for n in names},
    )
    path = plots.bars(ctx.plots_dir / "s1-capacity.png", [panel], ncols=1)
    blocks.append(ctx.image(path, "S1 capacity bars per connection count"))
    blocks += ratio_table(
        [(f"{c} conns req/s", {n: cells[(n, c)] for n in names}) for c in conns]
    )
    blocks += invalid_list(runs)
    return blocks
