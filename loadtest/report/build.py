"""Turn a results folder into report.md, report.html and plots/*.png.

Every figure is the median over valid repetitions with [min, max]; invalid runs are
listed, marked "INVALID: reason", and kept out of medians. Sections of scenarios the
run did not measure say so instead of disappearing.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadtest import stats
from loadtest.report import plots
from loadtest.report.doc import (
    Alert,
    Block,
    Bullets,
    Heading,
    Image,
    Para,
    Table,
    to_html,
    to_markdown,
)
from loadtest.report.load import Cell, Results, Run, cell, load, order_contenders

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
S8_PHASES = ("equal", "slow", "weighted", "dead", "killed")
HEADLINE_CONNECTIONS = 64
WRK_NOTE = (
    "wrk figures are shown as capacity (requests/s) only, never as latency: wrk waits for "
    "each response before sending the next request, so a stall delays the requests that "
    "would have measured it (coordinated omission) and its latency looks better than it is."
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
    if c.summary is None:
        if not c.invalid:
            return "no data"
        return "INVALID: " + "; ".join(sorted(set(c.invalid))) if note else "INVALID"
    text = fmt_summary(c.summary)
    if c.invalid and note:
        text += f" (+{invalid_note(c)})"
    return text


def fmt_row(
    label: str, cells: Sequence[Cell | None], missing: str = MISSING
) -> tuple[str, ...]:
    """A table row; when every cell excludes the same invalid reps, say so once, by the label."""
    present = [c for c in cells if c is not None and c.total]
    shared = bool(present) and all(
        c.invalid and c.invalid == present[0].invalid for c in present
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


def ratio_table(columns: Sequence[tuple[str, dict[str, Cell]]]) -> list[Block]:
    """Rows: the standard ratios; columns: figures (name, contender -> Cell)."""
    rows: list[tuple[str, ...]] = []
    for label, num, den in RATIOS:
        row = [label]
        for _, cells in columns:
            a, b = cells.get(num), cells.get(den)
            if a is None or b is None or not a.values or not b.values:
                row.append(MISSING)
            elif min(a.values) <= 0 or min(b.values) <= 0:
                # added latency can dip below direct's median: a ratio of those means nothing
                row.append("n/a (a rep ≤ 0)")
            else:
                row.append(fmt_ratio(stats.ratio(a.values, b.values)))
        if any(c != MISSING for c in row[1:]):
            rows.append(tuple(row))
    if not rows:
        return [Para("Ratios: no pair of contenders measured on both sides.")]
    return [
        Para(
            "Ratios: ratio of medians, with [min ratio, max ratio] from the rep extremes "
            "(min a / max b, max a / min b); valid reps only."
        ),
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


# ---------------------------------------------------------------- header + headline


def _text(v: Any) -> str:
    """An env.json value for people: None as "?", lists joined, small dicts as k v."""
    if v is None or v == "":
        return "?"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_text(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_text(x) for x in v) or "none"
    return str(v)


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _busy(pre: dict[str, Any]) -> str:
    """The preflight's busy processes: "olgen (pid 22877, 94% CPU)" or as given."""
    out = []
    for b in pre.get("busy_processes") or []:
        if isinstance(b, dict) and "comm" in b:
            extra = [f"pid {b['pid']}"] if "pid" in b else []
            if isinstance(b.get("cpu_pct"), (int, float)):
                extra.append(f"{b['cpu_pct']:.0f}% CPU")
            out.append(f"{b['comm']} ({', '.join(extra)})" if extra else str(b["comm"]))
        else:
            out.append(_text(b))
    return ", ".join(out) or "none listed"


def header(res: Results, folder: str) -> list[Block]:
    env = res.env
    blocks: list[Block] = [Heading(1, f"twinproxy benchmark report — {folder}")]
    profile = str(env.get("profile", "unknown"))
    pre = _dict(env.get("preflight"))
    if env.get("forced"):
        blocks.append(
            Alert(
                "PREFLIGHT OVERRIDDEN (--force): the machine was not quiet when this run "
                f"started (loadavg {_text(pre.get('loadavg'))}; busy: {_busy(pre)}). "
                "Numbers not for reporting."
            )
        )
    if profile == "smoke":
        blocks.append(
            Alert(
                "SMOKE PROFILE: a second or so per point to prove the lab works. "
                "Numbers not for reporting."
            )
        )
    if not env:
        blocks.append(
            Alert("env.json missing or unreadable: machine and tools unknown.")
        )
    pin = _dict(env.get("pinning"))
    finished = env.get("finished") or "not finished (run interrupted or still going)"
    rows = [
        ("date", f"{_text(env.get('started'))} → {finished}"),
        ("git sha", _text(env.get("git_sha"))),
        (
            "profile",
            profile + (" (FORCED: preflight overridden)" if env.get("forced") else ""),
        ),
        (
            "machine",
            (
                f"{_text(env.get('cpu_model'))}, {_text(env.get('cores'))} cores, "
                f"kernel {_text(env.get('kernel'))}"
            ),
        ),
        ("python", _text(env.get("python"))),
        ("tool versions", _text(env.get("versions") or {})),
        (
            "pinning",
            f"proxy on CPU {_text(pin.get('proxy_cpu'))}, load generators on CPU "
            f"{_text(pin.get('load_cpu'))}"
            + ("; " + _text(pin["notes"]) if pin.get("notes") else ""),
        ),
        (
            "preflight",
            f"loadavg {_text(pre.get('loadavg'))}, busy processes: {_busy(pre)}",
        ),
    ]
    cont = env.get("contenders")
    if isinstance(cont, dict):
        missing = [
            f"{name} ({_text(info.get('reason'))})"
            for name, info in cont.items()
            if isinstance(info, dict) and not info.get("available", True)
        ]
        rows.append(("contenders", ", ".join(cont) or "none"))
        if missing:
            rows.append(("unavailable", ", ".join(missing)))
    blocks.append(Table(("run", ""), tuple(rows), text=True))
    return blocks


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


def s7_connections(res: Results) -> Any:
    conns = res.param_values("S7", "connections")
    return conns[-1] if conns else None


def headline(res: Results) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Headline", "headline")]
    names = res.contenders(("S0", "S1", "S3", "S4", "S7"))
    if not names:
        return blocks + [Para(f"Headline figures: {NOT_MEASURED}.")]
    rate3 = s3_rate(res)
    p50 = s3_added(res, rate3, "50") if rate3 is not None else {}
    p99 = s3_added(res, rate3, "99") if rate3 is not None else {}
    rate4 = s4_rate(res)
    conn7 = s7_connections(res)
    cap = {
        n: cell(capacity_runs(res, n, HEADLINE_CONNECTIONS), metric("rps"))
        for n in names
    }
    cpu = {
        n: cell(res.select("S4", n, rate=rate4), metric("cpu_us_per_req"))
        for n in names
    }
    rss = {
        n: cell(
            res.select("S7", n, connections=conn7),
            metric("rss_bytes_per_conn", scale=1 / 1024),
        )
        for n in names
    }
    columns: list[tuple[str, dict[str, Cell]]] = [
        (f"S1 capacity req/s @{HEADLINE_CONNECTIONS} conns", cap),
        (f"S3 added p50 µs (@{rate3} req/s)", p50),
        (f"S3 added p99 µs (@{rate3} req/s)", p99),
        (f"S4 CPU µs/req (@{rate4} req/s)", cpu),
        (f"S7 KiB per idle conn (@{conn7} conns)", rss),
    ]
    rows = tuple(
        fmt_row(n, [cells.get(n) for _, cells in columns], missing=NOT_MEASURED)
        for n in names
    )
    blocks.append(Table(("contender",) + tuple(h for h, _ in columns), rows))
    notes = [
        "Each figure: median over valid repetitions [min, max]; invalid runs excluded."
    ]
    if rate3 is not None and not p50:
        notes.append(
            "S3 added latency needs the direct baseline, which this run lacks."
        )
    blocks.append(Para(" ".join(notes)))
    blocks += ratio_table([(h, cells) for h, cells in columns])
    return blocks


def method_notes() -> list[Block]:
    return [
        Heading(2, "How to read this report", "method"),
        Bullets(
            (
                (
                    "Every figure is the **median over valid repetitions, with [min, max]**. "
                    "Repetitions are interleaved (A B C A B C) so slow drift hits every "
                    "contender alike."
                ),
                (
                    "Runs that failed a sanity gate (`valid: false`) are **shown marked "
                    "INVALID: reason** and **excluded from medians**; a cell with no valid rep "
                    "shows only the reasons."
                ),
                (
                    "Percentiles are **nearest-rank**: the p-th percentile of N samples is the "
                    "sample at rank ceil(p/100·N); always a measured latency, never an "
                    "interpolation."
                ),
                (
                    "Ratios are ratios of medians with [min ratio, max ratio] = [min a / max b, "
                    "max a / min b]. For req/s higher is better; for µs, CPU and memory lower "
                    "is better."
                ),
                WRK_NOTE,
                (
                    "Latency comes only from the open-loop generator (olgen, S2/S3), which "
                    "timestamps each request at its intended send time."
                ),
            )
        ),
    ]


# ---------------------------------------------------------------- S0/S1 capacity


def section_s1(ctx: Ctx) -> list[Block]:
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
        (n, c): cell(capacity_runs(res, n, c), metric("rps"))
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
        [(f"{c} conns", {n: cells[(n, c)] for n in names}) for c in conns]
    )
    blocks += invalid_list(runs)
    return blocks


# ---------------------------------------------------------------- S2 latency vs throughput


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


def section_s2(ctx: Ctx) -> list[Block]:
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


# ---------------------------------------------------------------- S3 added latency


def section_s3(ctx: Ctx) -> list[Block]:
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
                [(f"added {label}", added[k]) for label, k in PCTS[:4]]
            )
        point = CommonPoint(
            f"{rate} req/s",
            f"@{rate}",
            {n: res.select("S3", n, rate=rate) for n in names},
        )
        blocks += spectrum_block(ctx, "S3", point, f"s3-spectrum-{rate}.png")
    blocks += invalid_list(runs)
    return blocks


# ---------------------------------------------------------------- S4 CPU per request


def section_s4(ctx: Ctx) -> list[Block]:
    res = ctx.res
    blocks: list[Block] = [Heading(2, "S4 CPU per request", "s4")]
    runs = res.select("S4")
    if not runs:
        return blocks + [Para(f"CPU per request: {NOT_MEASURED}.")]
    names = res.contenders("S4")
    rates = res.param_values("S4", "rate")
    figs = (
        ("CPU µs/req", metric("cpu_us_per_req")),
        ("user s", metric("user_s")),
        ("sys s", metric("sys_s")),
        ("requests", metric("requests")),
        ("syscalls/req", metric("syscalls_per_req")),
    )
    # the plot and ratios use the common ladder (rates every contender ran); the table
    # also lists each contender's own capacity fractions
    common = [
        r for r in rates if all(res.select("S4", n, rate=r) for n in names)
    ] or rates
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
            n: [cell(res.select("S4", n, rate=r), get).summary for r in common]
            for n in names
        }
        panels.append(plots.Panel(title, unit, [f"{r} req/s" for r in common], series))
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
                "request costs."
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
    chosen = sorted(weight, key=lambda k: -weight[k])[:top]
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


# ---------------------------------------------------------------- S5 payload, S6 churn, S7 idle


def per_param_section(
    ctx: Ctx,
    scenario: str,
    title: str,
    anchor: str,
    param: str,
    label: Callable[[Any], str],
    figures: Sequence[
        tuple[str, Callable[[Run], float | None], bool]
    ],  # (name, value, log)
    fname: str,
    intro: str,
) -> list[Block]:
    """Contender × param value tables, one bar panel per figure, ratios on the first figure."""
    res = ctx.res
    blocks: list[Block] = [Heading(2, title, anchor)]
    runs = res.select(scenario)
    if not runs:
        return blocks + [Para(f"{title}: {NOT_MEASURED}.")]
    blocks.append(Para(intro))
    names = res.contenders(scenario)
    values = res.param_values(scenario, param)
    panels = []
    for fig_name, get, log in figures:
        cells = {
            (n, v): cell(res.select(scenario, n, **{param: v}), get)
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
    first_name, first_get, _ = figures[0]
    blocks += ratio_table(
        [
            (
                f"{first_name} @{label(v)}",
                {
                    n: cell(res.select(scenario, n, **{param: v}), first_get)
                    for n in names
                },
            )
            for v in values
        ]
    )
    blocks += invalid_list(runs)
    return blocks


def section_s5(ctx: Ctx) -> list[Block]:
    return per_param_section(
        ctx,
        "S5",
        "S5 Payload sizes (wrk)",
        "s5",
        "size",
        fmt_size,
        (
            ("requests/s", metric("rps"), True),
            (
                "MiB/s transferred",
                metric("transfer_bytes_per_s", scale=1 / (1 << 20)),
                True,
            ),
        ),
        "s5-payload.png",
        "Response body sizes 0 B to 1 MiB: small bodies measure per-request overhead, large ones "
        "how each proxy moves bytes (buffer sizes, copies, backpressure). " + WRK_NOTE,
    )


def section_s6(ctx: Ctx) -> list[Block]:
    return per_param_section(
        ctx,
        "S6",
        "S6 Connection churn (wrk, Connection: close)",
        "s6",
        "connections",
        str,
        (("requests/s", metric("rps"), False), ("errors", metric("errors"), False)),
        "s6-churn.png",
        "Every request opens and closes a TCP connection: accept(), socket setup and teardown "
        "dominate. " + WRK_NOTE,
    )


def section_s7(ctx: Ctx) -> list[Block]:
    return per_param_section(
        ctx,
        "S7",
        "S7 Idle connections: memory",
        "s7",
        "connections",
        str,
        (
            (
                "KiB per idle connection",
                metric("rss_bytes_per_conn", scale=1 / 1024),
                False,
            ),
            ("RSS after MiB", metric("rss_kb_after", scale=1 / 1024), False),
            ("RSS before MiB", metric("rss_kb_before", scale=1 / 1024), False),
        ),
        "s7-idle-rss.png",
        "RSS growth divided by the number of idle keep-alive client connections held open: "
        "the per-connection cost of buffers and bookkeeping.",
    )


# ---------------------------------------------------------------- S8 fairness


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


def section_s8(ctx: Ctx) -> list[Block]:
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


# ---------------------------------------------------------------- S9 timeouts


def section_s9(ctx: Ctx) -> list[Block]:
    res = ctx.res
    blocks: list[Block] = [Heading(2, "S9 Upstream read timeouts", "s9")]
    runs = res.select("S9")
    if not runs:
        return blocks + [Para(f"Timeouts: {NOT_MEASURED}.")]
    blocks.append(
        Para(
            "The upstream answers far later than the proxy's read timeout; each proxy must "
            "answer 504 at its configured read timeout, not much later, for every request, "
            "and release its sockets (fds after = before)."
        )
    )
    names = res.contenders("S9")

    def sel(n: str) -> list[Run]:
        return res.select("S9", n)

    def overshoot(run: Run) -> float | None:
        p50, t = run.metric("latency_ms", "50"), run.param("read_timeout_ms")
        return (
            None if p50 is None or not isinstance(t, (int, float)) else p50 - float(t)
        )

    def fd_delta(run: Run) -> float | None:
        a, b = run.metric("fds_after"), run.metric("fds_before")
        return None if a is None or b is None else a - b

    figures: list[tuple[str, Callable[[Run], float | None]]] = [
        ("read timeout ms", lambda r: _num(r.param("read_timeout_ms"))),
        ("requests", lambda r: _num(r.param("requests"))),
        ("504s", metric("count_504")),
        ("other", metric("other")),
        ("min ms", metric("latency_ms", "min")),
        ("p50 ms", metric("latency_ms", "50")),
        ("p99 ms", metric("latency_ms", "99")),
        ("max ms", metric("latency_ms", "max")),
        ("p50 − timeout ms", overshoot),
        ("fds after − before", fd_delta),
    ]
    cols = figure_columns(names, sel, figures)
    blocks.append(contender_table(names, "contender", cols))
    lat: dict[str, list[float]] = {}
    timeouts: dict[str, float] = {}
    for n in names:
        samples = pooled_samples(ctx, sel(n), "latency_ms", lambda s: s == 504)
        if samples is None:
            continue
        lat[n] = samples.tolist()
        t = [
            x
            for r in sel(n)
            if r.valid and (x := _num(r.param("read_timeout_ms"))) is not None
        ]
        if t:
            timeouts[n] = stats.median(t)
    if lat:
        path = plots.timeout_hist(ctx.plots_dir / "s9-timeouts.png", lat, timeouts)
        blocks.append(
            ctx.image(path, "S9 histogram of 504 latencies against the read timeout")
        )
    else:
        blocks.append(Para("Timeout histogram: no raw samples in this run."))
    blocks += invalid_list(runs)
    return blocks


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


# ---------------------------------------------------------------- S10 locust


def _pct_of(v: float | None, top: float) -> float | None:
    return None if v is None else 100.0 * v / top


def section_s10(ctx: Ctx) -> list[Block]:
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
        ("client connects", metric("client_connects")),
        ("req per connect", metric("requests_per_connect")),
        ("load core busy %", metric("host", "load_core", "busy_pct")),
    ]
    ceiling = cell(sel("direct"), metric("rps")).summary if "direct" in names else None
    if ceiling is not None and ceiling.median:
        top = ceiling.median
        figs.append(("% of locust ceiling", lambda r: _pct_of(r.metric("rps"), top)))
    blocks.append(contender_table(names, "contender", figure_columns(names, sel, figs)))
    if ceiling is not None:
        blocks.append(
            Para(
                f"Locust's own ceiling (direct, no proxy): {ceiling.median:,.0f} req/s; "
                "a contender near it is limited by locust, not by itself."
            )
        )
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


# ---------------------------------------------------------------- S11 rate-limit accuracy


def section_s11(ctx: Ctx) -> list[Block]:
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


# ---------------------------------------------------------------- appendix + entry point


def appendix(res: Results) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Appendix: runs", "appendix")]
    scenarios = sorted({r.scenario for r in res.runs}, key=lambda s: (len(s), s))
    rows = []
    for s in scenarios:
        sel = res.select(s)
        bad = [r for r in sel if not r.valid]
        rows.append((s, str(len(sel)), str(len(sel) - len(bad)), str(len(bad))))
    if rows:
        blocks.append(Table(("scenario", "runs", "valid", "invalid"), tuple(rows)))
    else:
        blocks.append(Para("runs.jsonl holds no runs."))
    missing = [s for s in (f"S{i}" for i in range(12)) if s not in scenarios]
    if missing:
        blocks.append(Para(f"Scenarios {NOT_MEASURED}: {', '.join(missing)}."))
    if res.problems:
        blocks.append(Para("Problems reading the results folder:"))
        blocks.append(Bullets(tuple(res.problems)))
    return blocks


SECTIONS = (
    section_s1,
    section_s2,
    section_s3,
    section_s4,
    section_s5,
    section_s6,
    section_s7,
    section_s8,
    section_s9,
    section_s10,
    section_s11,
)


def build(results_dir: Path) -> tuple[Path, Path]:
    """Write report.md, report.html and plots/*.png into results_dir; return the two reports."""
    t0 = time.monotonic()
    results_dir = results_dir.resolve()
    res = load(results_dir)
    ctx = Ctx(res=res, plots_dir=results_dir / "plots")
    for old in ctx.plots_dir.glob(
        "*.png"
    ):  # ours from an earlier build: none may go stale
        old.unlink()
    blocks: list[Block] = header(res, results_dir.name)
    blocks += headline(res)
    blocks += method_notes()
    for section in SECTIONS:
        blocks += section(ctx)
    blocks += appendix(res)
    blocks.append(Para(f"Built by loadtest.report in {time.monotonic() - t0:.1f} s."))
    md = results_dir / "report.md"
    html_path = results_dir / "report.html"
    md.write_text(to_markdown(blocks))
    html_path.write_text(
        to_html(blocks, f"twinproxy benchmark report — {results_dir.name}")
    )
    return md, html_path
