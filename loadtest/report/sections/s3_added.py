"""Report section: S3 latency added per hop (olgen, low rate)."""

from __future__ import annotations

import functools

from loadtest.report.common import (
    NOT_MEASURED,
    PCTS,
    CommonPoint,
    Ctx,
    _runs_at,
    contender_table,
    figure_columns,
    invalid_list,
    metric,
    ratio_table,
    s3_added,
    spectrum_block,
)
from loadtest.report.doc import Block, Heading, Para


def section(ctx: Ctx) -> list[Block]:
    res = ctx.res
    blocks: list[Block] = [
        Heading(2, "S3 Latency added per hop (olgen, low rate)", "s3")
    ]
    runs = res.select("S3")
    if not runs:
        return blocks + [Para(f"Added latency: {NOT_MEASURED}.")]
    names = res.contenders("S3")
    for rate in res.param_values("S3", "rate"):
        added = {k: s3_added(res, rate, k) for _, k in PCTS[:4]}
        columns = figure_columns(
            names,
            functools.partial(_runs_at, res, "S3", "rate", rate),
            [(f"{label} µs", metric("percentiles_us", k)) for label, k in PCTS[:4]],
        )
        columns += [(f"added {label} µs", added[k]) for label, k in PCTS[:4]]
        blocks.append(Heading(3, f"At {rate} req/s"))
        blocks.append(contender_table(names, "contender", columns))
        if not added["50"]:
            blocks.append(
                Para(
                    "No valid direct run at this rate: added latency cannot be computed."
                )
            )
        else:
            blocks.append(
                Para(
                    "Added = each rep's percentile minus the median of direct's valid reps at the "
                    "same rate; direct's own row shows the baseline's rep-to-rep noise."
                )
            )
            blocks += ratio_table(
                [(f"added {label} µs", added[k]) for label, k in PCTS[:4]]
            )
        point = CommonPoint(
            f"{rate} req/s",
            f"@{rate}",
            {n: res.select("S3", n, rate=rate) for n in names},
        )
        blocks += spectrum_block(ctx, "S3", point, f"s3-spectrum-{rate}.png")
    blocks += invalid_list(runs)
    return blocks
