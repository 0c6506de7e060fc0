"""What every report section shares: formatting, tables, ratios, sample pooling.

A scenario's section (loadtest/report/sections/) imports from here; nothing here knows
about any one scenario except the small helpers the headline and several sections share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadtest import stats
from loadtest.report import plots
from loadtest.report.doc import Block, Bullets, Heading, Image, Para, Table
from loadtest.report.load import Cell, Results, Run, cell, load_bound_only

NOT_MEASURED = "not measured in this run"
MISSING = "—"

# (label, numerator, denominator): the ratios every comparison table shows.
RATIOS = (
    ("c/nginx", "c-proxy", "nginx"),
    ("c/HAProxy", "c-proxy", "haproxy"),
    ("py-asyncio/c", "py-asyncio", "c-proxy"),
    ("py-uvloop/c", "py-uvloop", "c-proxy"),
    ("uvloop/asyncio", "py-uvloop", "py-asyncio"),
)
HEADLINE_CONNECTIONS = 64
WRK_NOTE = (
    "wrk figures are shown as capacity (requests/s) only, never as latency: wrk waits for "
    "each response before sending the next request, so a stall delays the requests that "
    "would have measured it (coordinated omission) and its latency looks better than it is."
)

BOUND_NOTE = (
    "A throughput rep invalid only for being LOAD-BOUND (the load core saturated first) "
    "is a lower bound on the proxy's figure, shown as ≥, never as a measurement."
)


# ---------------------------------------------------------------- formatting


def fmt(x: float) -> str:
    """A number at a precision that suits its size (thousands separated, integers as such)."""
    if math.isinf(x):
        return "∞"
    a = abs(x)
    if 0 < a < 0.01:
        return f"{x:.1e}"
    if a >= 100 or x == int(x):
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_summary(s: stats.Summary) -> str:
    return f"{fmt(s.median)} [{fmt(s.min)}, {fmt(s.max)}]"


def invalid_note(c: Cell) -> str:
    return f"{len(c.invalid)} INVALID: " + "; ".join(sorted(set(c.invalid)))


def fmt_cell(c: Cell | None, note: bool = True, missing: str = MISSING) -> str:
    """median [min, max]; excluded reps marked INVALID with their reasons (unless note=False:
    the row's first cell carries the note once for the whole row)."""
    if c is None or c.total == 0:
        return missing
    if c.summary is None and c.bounds and len(c.bounds) == len(c.invalid):
        # every rep LOAD-BOUND: what the proxy sustained while the load side saturated
        return (
            f"≥ {fmt_summary(stats.summarize(list(c.bounds)))} (LOAD-BOUND in "
            f"{len(c.bounds)} of {c.total} reps: a lower bound)"
        )
    if c.summary is None:
        if not c.invalid:
            return "no data"
        return "INVALID: " + "; ".join(sorted(set(c.invalid))) if note else "INVALID"
    text = fmt_summary(c.summary)
    if not c.bounds:
        if c.invalid and note:
            text += f" (+{invalid_note(c)})"
        return text
    # capacity with LOAD-BOUND reps: those are lower bounds, said once, not as reasons
    other = [r for r in c.invalid if not load_bound_only(r)]
    if other and note:
        text += f" (+{len(other)} INVALID: " + "; ".join(sorted(set(other))) + ")"
    if note:
        bound = fmt_summary(stats.summarize(list(c.bounds)))
        text += f" (+{len(c.bounds)} LOAD-BOUND: ≥ {bound})"
    return text


def fmt_row(
    label: str, cells: Sequence[Cell | None], missing: str = MISSING
) -> tuple[str, ...]:
    """A table row; when every cell excludes the same invalid reps, say so once, by the label
    (not when they carry LOAD-BOUND lower bounds: each cell shows its own ≥)."""
    present = [c for c in cells if c is not None and c.total]
    shared = bool(present) and all(
        c.invalid and c.invalid == present[0].invalid and not c.bounds for c in present
    )
    if not shared:
        return (label,) + tuple(fmt_cell(c, missing=missing) for c in cells)
    head = present[0]
    if all(c.summary is None for c in present):
        label += " — INVALID: " + "; ".join(sorted(set(head.invalid)))
    else:
        label += f" ({invalid_note(head)}, excluded)"
    return (label,) + tuple(fmt_cell(c, note=False, missing=missing) for c in cells)


def fmt_ratio(r: stats.Ratio | None) -> str:
    if r is None:
        return MISSING
    return f"{r.value:.2f} [{r.lo:.2f}, {r.hi:.2f}]"


def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "no params"


def fmt_size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return str(n)
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{int(n // size)} {unit}"
    return f"{int(n)} B"


# ---------------------------------------------------------------- shared pieces


@dataclass
class Ctx:
    """What the sections share: the results, where plots go, which plots were written."""

    res: Results
    plots_dir: Path
    written: list[Path] = field(default_factory=list)

    def image(self, path: Path, alt: str) -> Image:
        self.written.append(path)
        return Image(path=path, rel=f"plots/{path.name}", alt=alt)


def pairs_of(a: Cell, b: Cell) -> list[tuple[float, float]]:
    """(a, b) for every rep number valid in both cells: rep i of a with rep i of b."""
    ra, rb = a.by_rep(), b.by_rep()
    return [(ra[k], rb[k]) for k in sorted(ra) if k in rb]


def paired(a: Cell | None, b: Cell | None) -> stats.PairedRatio | None:
    if a is None or b is None:
        return None
    return stats.paired_ratio(pairs_of(a, b))


NO_DIFF = "no difference shown"


def fmt_paired(r: stats.PairedRatio | None, words: bool = True) -> str:
    """2.00 [1.90, 2.10]; "no difference shown" when the CI spans 1; n pairs without CI."""
    if r is None:
        return MISSING
    if not r.has_ci:
        return f"{r.value:.2f} ({r.n} pair{'s' if r.n != 1 else ''}: no CI)"
    text = f"{r.value:.2f} [{r.lo:.2f}, {r.hi:.2f}]"
    return text + (f" {NO_DIFF}" if words and r.spans_one else "")


RATIO_NOTE = (
    "Ratios: paired — rep i of the first over rep i of the second (reps are interleaved, "
    "so a pair shared the machine's state), geometric mean of the pair ratios, "
    f"[bootstrap 95 % CI] (seeded; no CI below {stats.MIN_PAIRS_FOR_CI} valid pairs); "
    f"'{NO_DIFF}' when the CI includes 1. Valid reps only, except a throughput rep that was "
    "LOAD-BOUND (the load core saturated first): it counts as a lower bound, and a ratio "
    "using it is marked ≥ or ≤."
)


def ratio_table(columns: Sequence[tuple[str, dict[str, Cell]]]) -> list[Block]:
    """Rows: the standard ratios; columns: figures (name, contender -> Cell)."""
    rows: list[tuple[str, ...]] = []
    for label, num, den in RATIOS:
        row = [label]
        for _, cells in columns:
            a, b = cells.get(num), cells.get(den)
            # capacity cells may carry LOAD-BOUND lower bounds: a/b is then at least (a
            # bounded) or at most (b bounded) the figure; both bounded says nothing
            sign = ""
            if a is not None and b is not None and (a.bounds or b.bounds):
                if a.bounds and b.bounds:
                    row.append("n/a (both LOAD-BOUND)")
                    continue
                sign = "≥ " if a.bounds else "≤ "
                a, b = a.with_bounds(), b.with_bounds()
            if a is None or b is None or not a.values or not b.values:
                row.append(MISSING)
            elif min(a.values) <= 0 or min(b.values) <= 0:
                # added latency can dip below direct's median: a ratio of those means nothing
                row.append("n/a (a rep ≤ 0)")
            elif not pairs_of(a, b):
                row.append("no paired reps")
            else:
                row.append(sign + fmt_paired(paired(a, b)))
        if any(c != MISSING for c in row[1:]):
            rows.append(tuple(row))
    if not rows:
        return [Para("Ratios: no pair of contenders measured on both sides.")]
    return [
        Para(RATIO_NOTE),
        Table(("ratio",) + tuple(name for name, _ in columns), tuple(rows)),
    ]


def invalid_list(runs: Iterable[Run]) -> list[Block]:
    bad = [r for r in runs if not r.valid]
    if not bad:
        return []
    items = tuple(
        f"INVALID: {r.reason()} — {r.scenario} {r.contender} rep {r.rep} ({fmt_params(r.params)})"
        for r in bad
    )
    return [
        Para(
            f"{len(bad)} run(s) failed a sanity gate; shown here and excluded from medians:"
        ),
        Bullets(items),
    ]


def metric(*path: str, scale: float = 1.0) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        v = run.metric(*path)
        return None if v is None else v * scale

    return get


Column = tuple[str, dict[str, Cell]]  # (header, contender -> Cell)


def contender_table(
    contenders: Sequence[str], first: str, columns: Sequence[Column]
) -> Table:
    """Rows: contenders; columns: figures, each a Cell per contender."""
    rows = tuple(
        fmt_row(name, [cells.get(name) for _, cells in columns]) for name in contenders
    )
    return Table((first,) + tuple(h for h, _ in columns), rows)


def figure_columns(
    contenders: Sequence[str],
    runs_of: Callable[[str], list[Run]],
    figures: Sequence[tuple[str, Callable[[Run], float | None]]],
) -> list[Column]:
    """One column per figure over each contender's runs."""
    runs = {n: runs_of(n) for n in contenders}
    return [(h, {n: cell(runs[n], get) for n in contenders}) for h, get in figures]


def _runs_at(
    res: Results, scenario: str, param: str, value: Any, contender: str
) -> list[Run]:
    return res.select(scenario, contender, **{param: value})


def pooled_samples(
    ctx: Ctx,
    runs: Iterable[Run],
    column: str,
    keep_status: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray | None:
    """Samples of all valid runs' files.samples pooled; None when no file was readable."""
    parts: list[np.ndarray] = []
    for run in runs:
        if not run.valid:
            continue
        cols = ctx.res.read_columns(run, "samples", (column, "status"))
        if cols is not None:
            parts.append(cols[column][keep_status(cols["status"])])
    return np.concatenate(parts) if parts else None


def is_response(status: np.ndarray) -> np.ndarray:
    """Samples that got an HTTP response (status 0 = transport error: no latency)."""
    return (status >= 100) & (status < 600)


def s3_rate(res: Results) -> Any:
    rates = res.param_values("S3", "rate")
    return rates[0] if rates else None


def s3_added(res: Results, rate: Any, pct: str) -> dict[str, Cell]:
    """Added latency per contender at one S3 rate: rep percentile − direct's median (µs)."""
    base_cell = cell(
        res.select("S3", "direct", rate=rate), metric("percentiles_us", pct)
    )
    if base_cell.summary is None:
        return {}
    base = base_cell.summary.median
    out: dict[str, Cell] = {}
    for name in res.contenders("S3"):
        get = metric("percentiles_us", pct)

        def added(run: Run, get: Callable[[Run], float | None] = get) -> float | None:
            v = get(run)
            return None if v is None else v - base

        out[name] = cell(res.select("S3", name, rate=rate), added)
    return out


def capacity_runs(res: Results, contender: str, connections: Any) -> list[Run]:
    """S1 runs, plus S0 (the direct ceiling, same params and metrics)."""
    return res.select("S1", contender, connections=connections) + res.select(
        "S0", contender, connections=connections
    )


def s4_rate(res: Results) -> Any:
    """The highest S4 rate (above the idle 0) at which every S4 contender has a valid
    rep; else the highest rate."""
    rates = [r for r in res.param_values("S4", "rate") if r]
    names = res.contenders("S4")
    shared = [
        r
        for r in rates
        if all(any(x.valid for x in res.select("S4", n, rate=r)) for n in names)
    ]
    return (shared or rates or [None])[-1]


def s4_fit_runs(res: Results, contender: str | None = None) -> list[Run]:
    """S4's fit records (one per contender and rep): utilisation = a + b x req/s."""
    return [r for r in res.select("S4", contender) if r.params.get("fit")]


def s4_marginal(res: Results, contender: str) -> Cell:
    """S4's marginal CPU cost b (µs per request), one figure per rep."""
    return cell(s4_fit_runs(res, contender), metric("marginal_us_per_req"))


def s7_connections(res: Results) -> Any:
    conns = res.param_values("S7", "connections")
    return conns[-1] if conns else None


@dataclass(frozen=True)
class CommonPoint:
    """Where S2 contenders are compared with each other: one group of runs per contender."""

    label: str  # e.g. "20000 req/s" or "50% of each contender's own capacity"
    tag: str  # short form for column headers
    runs: dict[str, list[Run]]


def s2_common(res: Results) -> CommonPoint | None:
    """Where S2 contenders meet. With offered rates shared by every contender (the runner's
    fixed_rates): the highest one at which each has a valid run. With rates stepped by each
    contender's own capacity: the fraction_of_capacity closest to 50 % (lower on a tie) at
    which each has a valid run -- busy but not queueing, so the spectrum shows service-time
    spread rather than queue growth. None when neither exists."""
    names = res.contenders("S2")

    def everyone(param: str, value: Any) -> bool:
        return all(
            any(r.valid for r in res.select("S2", n, **{param: value})) for n in names
        )

    rates = [v for v in res.param_values("S2", "rate") if everyone("rate", v)]
    if rates:
        best = rates[-1]
        runs = {n: res.select("S2", n, rate=best) for n in names}
        return CommonPoint(f"{best} req/s", f"@{best}", runs)
    fracs = [
        v
        for v in res.param_values("S2", "fraction_of_capacity")
        if isinstance(v, (int, float)) and everyone("fraction_of_capacity", v)
    ]
    if not fracs:
        return None
    frac = min(fracs, key=lambda f: (abs(f - 0.5), f))
    runs = {n: res.select("S2", n, fraction_of_capacity=frac) for n in names}
    pct = f"{float(frac):.0%}"
    return CommonPoint(f"{pct} of each contender's own capacity", f"@{pct} cap", runs)


def rate_note(runs: Sequence[Run]) -> str:
    rates = sorted({r.params["rate"] for r in runs if r.valid and "rate" in r.params})
    return "@" + "/".join(str(r) for r in rates) + " req/s" if rates else ""


def spectrum_block(
    ctx: Ctx, scenario: str, point: CommonPoint, fname: str
) -> list[Block]:
    series: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    lacking: list[str] = []
    no_valid: list[str] = []
    for n, runs in point.runs.items():
        if not any(r.valid for r in runs):
            no_valid.append(n)
            continue
        samples = pooled_samples(ctx, runs, "latency_us", is_response)
        if samples is not None and len(samples):
            series[n] = samples
            notes[n] = rate_note(runs)
        else:
            lacking.append(n)
    blocks: list[Block] = []
    title = f"{scenario} percentile spectrum at {point.label}"
    if series:
        path = plots.spectrum(
            ctx.plots_dir / fname, title + " (valid reps pooled)", series, notes
        )
        blocks.append(ctx.image(path, title))
    else:
        blocks.append(
            Para(f"Percentile spectrum: no raw samples in this run ({title}).")
        )
    if lacking:
        blocks.append(Para(f"No readable raw samples for: {', '.join(lacking)}."))
    if no_valid:
        blocks.append(
            Para(f"Not in the spectrum (no valid run): {', '.join(no_valid)}.")
        )
    return blocks


PCTS = (("p50", "50"), ("p90", "90"), ("p99", "99"), ("p99.9", "99.9"), ("max", "100"))


def per_param_section(
    ctx: Ctx,
    scenario: str,
    title: str,
    anchor: str,
    param: str,
    label: Callable[[Any], str],
    figures: Sequence[
        tuple[str, Callable[[Run], float | None], bool, bool]
    ],  # (name, value, log, lower_bounds)
    fname: str,
    intro: str,
) -> list[Block]:
    """Contender × param value tables, one bar panel per figure, ratios on the first figure.
    A figure with lower_bounds (a throughput: the load side saturated first, so the proxy
    did at least that) keeps its LOAD-BOUND reps as bounds, as the capacity table does."""
    res = ctx.res
    blocks: list[Block] = [Heading(2, title, anchor)]
    runs = res.select(scenario)
    if not runs:
        return blocks + [Para(f"{title}: {NOT_MEASURED}.")]
    blocks.append(Para(intro))
    names = res.contenders(scenario)
    values = res.param_values(scenario, param)
    panels = []
    for fig_name, get, log, bounded in figures:
        cells = {
            (n, v): cell(res.select(scenario, n, **{param: v}), get, bounded)
            for n in names
            for v in values
        }
        blocks.append(Para(f"**{fig_name}**"))
        blocks.append(
            contender_table(
                names,
                f"contender \\ {param}",
                [(label(v), {n: cells[(n, v)] for n in names}) for v in values],
            )
        )
        summaries = {n: [cells[(n, v)].summary for v in values] for n in names}
        if any(s and s.max for row in summaries.values() for s in row):
            # an all-zero figure (errors, usually) stays in the table, out of the plot
            panels.append(
                plots.Panel(
                    fig_name, fig_name, [label(v) for v in values], summaries, log
                )
            )
    if panels:
        path = plots.bars(ctx.plots_dir / fname, panels)
        blocks.append(ctx.image(path, title))
    first_name, first_get, _, first_bounded = figures[0]
    blocks += ratio_table(
        [
            (
                f"{first_name} @{label(v)}",
                {
                    n: cell(
                        res.select(scenario, n, **{param: v}), first_get, first_bounded
                    )
                    for n in names
                },
            )
            for v in values
        ]
    )
    blocks += invalid_list(runs)
    return blocks


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


SLO_P99_US = 1000.0


def max_rate_at_p99(res: Results, contender: str, slo_us: float = SLO_P99_US) -> Cell:
    """Per rep: the highest S2 offered rate at which that rep was valid with p99 <= slo_us
    (0 when no measured rate met it); median [min, max] over reps, paired by rep number.
    A lower bound when the contender's highest measured rate still met it."""
    best: dict[int, float] = {}
    invalid: list[str] = []
    total_reps: set[int] = set()
    for run in res.select("S2", contender):
        rate = _num(run.param("rate"))
        total_reps.add(run.rep)
        if not run.valid:
            invalid.append(run.reason())
            continue
        best.setdefault(run.rep, 0.0)
        p99 = run.metric("percentiles_us", "99")
        if rate is not None and p99 is not None and p99 <= slo_us:
            best[run.rep] = max(best[run.rep], rate)
    reps = tuple(sorted(best))
    values = tuple(best[r] for r in reps)
    summary = stats.summarize(values) if values else None
    # reasons only for reps that never produced a valid run (others still count)
    lost = tuple(invalid) if not values else ()
    return Cell(values, summary, lost, len(total_reps), reps)


LOWER, HIGHER = "↓", "↑"
LEGEND = "↓ lower is better · ↑ higher is better · unmarked: a setting or a count"
_HIGHER_WORDS = ("req/s", "mib/s", "admitted", "p-value", "capacity req", "requests/s")
_LOWER_WORDS = (
    "µs",
    " ms",
    "cpu",
    "kib",
    "mib",
    "rss",
    "error",
    "syscalls",
    "max/min",
    "chi-square",
    "failures",
    "ejection",
    "re-admission",
    "while dead",
    "other",
    "fds after",
    "fd leak",
    "|error|",
    "− timeout",
)
_NEUTRAL_HEADS = (
    "read timeout ms",
    "rate/s",
    "offered/s per client",
    "s4 fit s.e. of b µs",
    "client offset ms",
)


def direction(header: str) -> str:
    """↑ / ↓ / "" for a column header, by what it measures."""
    h = re.sub(r"\(.*?\)|@\S+", "", header.lower()).strip()
    if (
        h in _NEUTRAL_HEADS
        or h.startswith("contender")
        or h in ("ratio", "syscall", "name")
    ):
        return ""
    if any(w in h for w in _HIGHER_WORDS):
        return HIGHER
    if any(w in h for w in _LOWER_WORDS):
        return LOWER
    return ""


def mark_better(blocks: list[Block]) -> list[Block]:
    """Every figure table: ↓/↑ after each column header that measures something, and the
    legend under the table. A table whose columns are param values (S5-S7) takes the
    direction from the bold figure name just above it, marked on its first header."""
    out: list[Block] = []
    for i, b in enumerate(blocks):
        if isinstance(b, Table) and not b.text:
            heads = list(b.headers)
            marked = False
            prev = blocks[i - 1] if i else None
            by_para = (
                "\\" in heads[0]
                and isinstance(prev, Para)
                and prev.text.startswith("**")
            )
            for j, h in enumerate(heads):
                d = "" if by_para else direction(h)
                if d and j > 0:
                    heads[j] = f"{h} {d}"
                    marked = True
            if not marked and isinstance(prev, Para) and prev.text.startswith("**"):
                d = direction(prev.text.strip("*"))
                if d:
                    heads[0] = f"{heads[0]} ({prev.text.strip('*')} {d})"
                    marked = True
            if marked:
                b = Table(tuple(heads), b.rows, b.text, LEGEND)
        out.append(b)
    return out
