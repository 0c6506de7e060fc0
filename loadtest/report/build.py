"""Turn a results folder into report.md, report.html and plots/*.png.

Every figure is the median over valid repetitions with [min, max]; invalid runs are
listed, marked "INVALID: reason", and kept out of medians. Sections of scenarios the
run did not measure say so instead of disappearing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from loadtest.report.common import (
    HEADLINE_CONNECTIONS,
    NOT_MEASURED,
    SLO_P99_US,
    WRK_NOTE,
    Ctx,
    capacity_runs,
    fmt_row,
    mark_better,
    max_rate_at_p99,
    metric,
    ratio_table,
    s3_added,
    s3_rate,
    s4_fit_runs,
    s4_marginal,
    s4_rate,
    s7_connections,
)
from loadtest.report.doc import (
    Alert,
    Block,
    Bullets,
    Heading,
    Para,
    Table,
    to_html,
    to_markdown,
)
from loadtest.report.load import Cell, Results, cell, load
from loadtest.report.sections import SECTIONS
from loadtest.report.verdict import verdict

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
        n: cell(
            capacity_runs(res, n, HEADLINE_CONNECTIONS),
            metric("rps"),
            lower_bounds=True,
        )
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
    ]
    if s4_fit_runs(res):
        # the marginal cost (slope of CPU over rate) beside the fixed-rate figure the
        # verdict uses: b depends on the range of rates each rep's fit covers
        columns.append(
            ("S4 marginal µs/req (b)", {n: s4_marginal(res, n) for n in names})
        )
        columns.append(
            (
                "S4 fit s.e. of b µs",
                {n: cell(s4_fit_runs(res, n), metric("marginal_se_us")) for n in names},
            )
        )
    columns += [
        (f"S4 CPU µs/req (@{rate4} req/s)", cpu),
        (f"S7 KiB per idle conn (@{conn7} conns)", rss),
    ]
    if res.select("S2"):
        columns.append(
            (
                f"S2 max req/s at p99 ≤ {SLO_P99_US / 1000:g} ms",
                {n: max_rate_at_p99(res, n) for n in names if res.select("S2", n)},
            )
        )
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
    blocks += ratio_table([(h, cells) for h, cells in columns if "s.e." not in h])
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
                    "Ratios are **paired**: rep i of one contender over rep i of the other "
                    "(interleaved reps share the machine's state), the geometric mean of the "
                    "pair ratios with a **bootstrap 95 % CI** (seeded, so a rebuild gives the "
                    "same interval); **no difference shown** when the CI includes 1; no CI "
                    "below 3 valid pairs. Every table's columns are marked ↓ (lower is "
                    "better) or ↑ (higher is better); unmarked columns are settings or counts."
                ),
                WRK_NOTE,
                (
                    "Latency comes only from the open-loop generator (olgen, S2/S3), which "
                    "timestamps each request at its intended send time."
                ),
            )
        ),
    ]


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
    head = header(res, results_dir.name)
    at = next(i for i, b in enumerate(head) if isinstance(b, Table))
    blocks: list[Block] = head[:at] + verdict(res) + head[at:]
    blocks += headline(res)
    blocks += method_notes()
    for section in SECTIONS:
        blocks += section(ctx)
    blocks += appendix(res)
    blocks = mark_better(blocks)
    blocks.append(Para(f"Built by loadtest.report in {time.monotonic() - t0:.1f} s."))
    md = results_dir / "report.md"
    html_path = results_dir / "report.html"
    md.write_text(to_markdown(blocks))
    html_path.write_text(
        to_html(blocks, f"twinproxy benchmark report — {results_dir.name}")
    )
    return md, html_path
