"""Report section: S8 round-robin fairness."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from loadtest import stats
from loadtest.report import plots
from loadtest.report.common import (
    NOT_MEASURED,
    Ctx,
    _runs_at,
    contender_table,
    figure_columns,
    invalid_list,
    metric,
)
from loadtest.report.doc import Block, Heading, Para
from loadtest.report.load import Results, Run, cell

S8_PHASES = ("equal", "slow", "weighted", "dead", "killed")


def s8_phases(res: Results) -> list[Any]:
    seen = res.param_values("S8", "phase")
    return [p for p in S8_PHASES if p in seen] + [p for p in seen if p not in S8_PHASES]


def chi_of(run: Run) -> tuple[float | None, int | None]:
    """The run's chi-square and dof: the runner's, else computed from counts (uniform, k-1)."""
    chi, dof = run.metric("chi_square"), run.metric("dof")
    counts = [float(v) for v in (run.metrics.get("counts") or {}).values()]
    if chi is None and counts:
        chi = stats.chi_square(counts)
    if dof is None and counts:
        dof = float(len(counts) - 1)
    return chi, None if dof is None else int(dof)


def chi_value(run: Run) -> float | None:
    return chi_of(run)[0]


def p_value(run: Run) -> float | None:
    chi, dof = chi_of(run)
    if chi is None or dof is None or dof < 1:
        return None
    return stats.chi2_sf(chi, dof)


def section(ctx: Ctx) -> list[Block]:
    res = ctx.res
    blocks: list[Block] = [Heading(2, "S8 Round-robin fairness", "s8")]
    runs = res.select("S8")
    if not runs:
        return blocks + [Para(f"Fairness: {NOT_MEASURED}.")]
    blocks.append(
        Para(
            "Requests per upstream in each phase: equal (all healthy), slow (one upstream slow), "
            "dead (one refuses connections), killed (one killed mid-run, then restarted). "
            "Chi-square against an even split over the upstreams the runner counted (dof as it "
            "reports; k−1 when absent); p-value from the chi-square distribution — a small p "
            "means the split is not even."
        )
    )
    names = res.contenders("S8")
    panels = []
    for phase in s8_phases(res):
        ups = sorted(
            {
                u
                for r in res.select("S8", phase=phase)
                for u in (r.metrics.get("counts") or {})
            }
        )
        figures: list[tuple[str, Callable[[Run], float | None]]] = [
            (u, metric("counts", u)) for u in ups
        ]
        figures += [
            ("max/min", max_min_of),
            ("chi-square", chi_value),
            ("p-value", p_value),
            ("errors", metric("errors")),
            ("requests", metric("requests")),
        ]
        present = [n for n in names if res.select("S8", n, phase=phase)]
        blocks.append(Heading(3, f"Phase: {phase}"))
        cols = figure_columns(
            present, functools.partial(_runs_at, res, "S8", "phase", phase), figures
        )
        blocks.append(contender_table(present, "contender", cols))
        panels.append(
            plots.Panel(
                f"phase {phase}: requests per upstream",
                "requests",
                present,
                {
                    u: [
                        cell(
                            res.select("S8", n, phase=phase), metric("counts", u)
                        ).summary
                        for n in present
                    ]
                    for u in ups
                },
            )
        )
    if panels:
        path = plots.bars(ctx.plots_dir / "s8-fairness.png", panels)
        blocks.append(ctx.image(path, "S8 requests per upstream per phase"))
    failed = [
        f"{r.contender} {r.params.get('phase')} rep {r.rep}: {r.metrics.get('fairness')}"
        for r in runs
        if str(r.metrics.get("fairness") or "").startswith("FAILED")
    ]
    if failed:
        blocks.append(Para("**FAILED** fairness gate: " + "; ".join(failed) + "."))
    killed = [n for n in names if res.select("S8", n, phase="killed")]
    if any(r.metrics.get("ejection") for r in res.select("S8", phase="killed")):
        blocks.append(Heading(3, "Ejection and re-admission (killed phase)"))
        ej = [
            ("ejection s", metric("ejection", "ejection_s")),
            ("refused connects while dead", metric("ejection", "refused_while_dead")),
            ("errors while dead", metric("ejection", "errors_while_dead")),
            ("re-admission s", metric("ejection", "readmission_s")),
        ]
        cols = figure_columns(
            killed, functools.partial(_runs_at, res, "S8", "phase", "killed"), ej
        )
        blocks.append(contender_table(killed, "contender", cols))
    blocks += s8_series(ctx, names)
    blocks += invalid_list(runs)
    return blocks


def max_min_of(run: Run) -> float | None:
    v = run.metric("max_min_ratio")
    if v is not None:
        return v
    counts = [float(x) for x in (run.metrics.get("counts") or {}).values()]
    return stats.max_min_ratio(counts) if counts else None


def s8_series(ctx: Ctx, names: Sequence[str]) -> list[Block]:
    """Per-second series of the killed phase (else dead): ejection and re-admission."""
    res = ctx.res
    phases = s8_phases(res)
    phase = "killed" if "killed" in phases else ("dead" if "dead" in phases else None)
    if phase is None:
        return [
            Para(
                "Per-second series (ejection and re-admission): no killed or dead phase in this run."
            )
        ]
    panels = []
    for n in names:
        sel = [r for r in res.select("S8", n, phase=phase) if r.valid] or res.select(
            "S8", n, phase=phase
        )
        for run in sel:
            rows = res.read_csv(run, "series")
            if not rows:
                continue
            lines: dict[str, tuple[list[float], list[float]]] = {}
            errs: dict[float, float] = {}
            for row in rows:
                try:
                    sec, count = float(row["second"]), float(row["count"])
                except (KeyError, ValueError, TypeError):
                    continue
                up = row.get("upstream") or ""
                if up:  # "" = failures no upstream could be named for: errors only
                    xs, ys = lines.setdefault(up, ([], []))
                    xs.append(sec)
                    ys.append(count)
                try:
                    errs[sec] = errs.get(sec, 0.0) + float(row.get("errors") or 0)
                except ValueError:
                    pass
            if lines:
                tag = "" if run.valid else f" — INVALID: {run.reason()}"
                secs = sorted(errs)
                panels.append(
                    plots.Series(
                        f"{n}, phase {phase}, rep {run.rep}{tag}",
                        dict(sorted(lines.items())),
                        (secs, [errs[s] for s in secs]),
                    )
                )
                break
    if not panels:
        return [Para(f"Per-second series: no readable series files for phase {phase}.")]
    path = plots.timeseries(ctx.plots_dir / "s8-timeseries.png", panels)
    return [
        Para(
            f"Per-second requests per upstream, phase {phase} (one rep per contender, the first "
            "valid one): the dip to zero is ejection, the climb back is re-admission; the red "
            "dashed line counts errors clients saw meanwhile."
        ),
        ctx.image(path, f"S8 per-second series, phase {phase}"),
    ]
