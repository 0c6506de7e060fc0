"""Report section: S10 locust request mix."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from loadtest import stats
from loadtest.report import plots
from loadtest.report.common import (
    MISSING,
    NOT_MEASURED,
    Ctx,
    _num,
    contender_table,
    figure_columns,
    fmt,
    invalid_list,
    metric,
    ratio_table,
)
from loadtest.report.doc import Block, Heading, Para, Table
from loadtest.report.load import Run, cell


def section(ctx: Ctx) -> list[Block]:
    res = ctx.res
    blocks: list[Block] = [Heading(2, "S10 Locust request mix", "s10")]
    runs = res.select("S10")
    if not runs:
        return blocks + [Para(f"Locust mix: {NOT_MEASURED}.")]
    blocks.append(
        Para(
            "A scripted mix of paths and sizes from many simulated users; closer to an application's "
            "traffic than one repeated request. Locust is closed-loop: its latency is the users' "
            "experience at the rate they managed, not a fixed offered rate."
        )
    )
    names = res.contenders("S10")

    def sel(n: str) -> list[Run]:
        return res.select("S10", n)

    def fail_pct(run: Run) -> float | None:
        req, fail = run.metric("requests"), run.metric("failures")
        return None if not req or fail is None else 100.0 * fail / req

    figs: list[tuple[str, Callable[[Run], float | None]]] = [
        ("users", lambda r: _num(r.param("users"))),
        ("workers", lambda r: _num(r.param("workers"))),
        ("requests", metric("requests")),
        ("failures %", fail_pct),
        ("req/s", metric("rps")),
        ("p50 µs", metric("percentiles_us", "50")),
        ("p99 µs", metric("percentiles_us", "99")),
    ]
    blocks.append(contender_table(names, "contender", figure_columns(names, sel, figs)))
    panels = [
        plots.Panel(
            title, title, ["S10"], {n: [cell(sel(n), get).summary] for n in names}, log
        )
        for title, get, log in (
            ("req/s", metric("rps"), False),
            ("p50 µs", metric("percentiles_us", "50"), True),
            ("p99 µs", metric("percentiles_us", "99"), True),
        )
    ]
    path = plots.bars(ctx.plots_dir / "s10-locust.png", panels, ncols=3)
    blocks.append(ctx.image(path, "S10 locust mix"))
    blocks += locust_by_name(ctx, names, sel)
    blocks += ratio_table(
        [
            (h, {n: cell(sel(n), g) for n in names})
            for h, g in figs
            if h in ("req/s", "p50 µs", "p99 µs")
        ]
    )
    blocks += invalid_list(runs)
    return blocks


def locust_by_name(
    ctx: Ctx, names: Sequence[str], sel: Callable[[str], list[Run]]
) -> list[Block]:
    """p50/p99 per request name from the raw samples, valid reps pooled."""
    per: dict[str, dict[str, list[float]]] = {}
    for n in names:
        for run in sel(n):
            if not run.valid:
                continue
            rows = ctx.res.read_csv(run, "samples")
            for sample in rows or []:
                try:
                    per.setdefault(sample["name"], {}).setdefault(n, []).append(
                        float(sample["latency_us"])
                    )
                except (KeyError, ValueError, TypeError):
                    continue
    if not per:
        return []
    rows_out = []
    for name in sorted(per):
        row = [name]
        for n in names:
            vals = per[name].get(n)
            if vals:
                p50, p99 = stats.percentiles(vals, (50, 99))
                row.append(f"{fmt(p50)} / {fmt(p99)} (n={len(vals):,})")
            else:
                row.append(MISSING)
        rows_out.append(tuple(row))
    return [
        Para(
            "p50 / p99 µs per request name (raw samples of valid reps pooled, nearest-rank):"
        ),
        Table(("name",) + tuple(names), tuple(rows_out)),
    ]
