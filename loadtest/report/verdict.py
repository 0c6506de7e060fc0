"""The five-line verdict at the top of the report: who is cheapest per request, who has the
lowest tail at equal load, c vs py by how much; each with its paired ratio and bootstrap CI.
"""

from __future__ import annotations

import math
from typing import Any

from loadtest import stats
from loadtest.report.common import (
    HEADLINE_CONNECTIONS,
    NO_DIFF,
    capacity_runs,
    fmt,
    fmt_paired,
    metric,
    paired,
    s2_common,
    s3_rate,
    s4_rate,
)
from loadtest.report.doc import Block, Bullets, Heading, Para
from loadtest.report.load import Cell, Results, cell

PROXIES = ("c-proxy", "py-asyncio", "py-uvloop", "nginx", "haproxy")
PY = ("py-asyncio", "py-uvloop")


def _ranked(cells: dict[str, Cell], lower: bool) -> list[str]:
    have = [n for n, c in cells.items() if c.summary is not None]
    return sorted(
        have,
        key=lambda n: cells[n].summary.median if lower else -cells[n].summary.median,
    )  # type: ignore[union-attr]


def _versus(a: Cell, b: Cell) -> stats.PairedRatio | None:
    return paired(a, b)


def _ratio_words(r: stats.PairedRatio | None) -> str:
    if r is None:
        return "no paired reps"
    return fmt_paired(r, words=False) + (f" — {NO_DIFF}" if r.spans_one else "")


def _winner_line(
    what: str, cells: dict[str, Cell], unit: str, where: str, lower: bool = True
) -> str:
    ranked = _ranked(cells, lower)
    if not ranked:
        return f"**{what}**: not measured in this run."
    best = ranked[0]
    med = {n: cells[n].summary.median for n in ranked}  # type: ignore[union-attr]
    if len(ranked) == 1:
        return f"**{what}**: {best}, {fmt(med[best])} {unit} {where}, the only one measured."
    nxt = ranked[1]
    r = _versus(cells[nxt], cells[best])
    if r is not None and r.spans_one:
        # the medians order them, the paired reps do not: say it is not settled
        return (
            f"**{what}**: no clear winner {where} — {best} {fmt(med[best])} and {nxt} "
            f"{fmt(med[nxt])} {unit} (medians), {nxt}/{best} = {_ratio_words(r)}."
        )
    text = (
        f"**{what}**: {best}, {fmt(med[best])} {unit} {where}; next {nxt} at "
        f"{fmt(med[nxt])} {unit}: {nxt}/{best} = {_ratio_words(r)}"
    )
    return text + "."


def _c_vs_py(what: str, cells: dict[str, Cell], unit: str, where: str) -> str:
    c = cells.get("c-proxy")
    # a capacity cell may hold LOAD-BOUND reps: c-proxy sustained at least that much, so
    # py/c over those reps is an upper bound, said as such
    bounded = c is not None and bool(c.bounds)
    cb = c.with_bounds() if c is not None else None
    pys = [p for p in PY if cells.get(p) is not None and cells[p].summary is not None]
    if cb is None or cb.summary is None or not pys:
        return f"**{what}**: not measured for both twins in this run."
    parts = []
    for p in pys:
        r = _versus(cells[p], cb)
        parts.append(
            f"{p}/c-proxy {'≤' if bounded else '='} {_ratio_words(r)} "
            f"({fmt(cells[p].summary.median)} vs {'≥ ' if bounded else ''}"  # type: ignore[union-attr]
            f"{fmt(cb.summary.median)} {unit})"
        )
    text = f"**{what}** {where}: " + "; ".join(parts) + "."
    if bounded and c is not None:
        text += (
            f" c-proxy was LOAD-BOUND in {len(c.bounds)} of {c.total} reps (the load core "
            "saturated before it did): its capacity is at least its figure, each ratio at "
            "most the one shown."
        )
    return text


def _tail_cells(res: Results) -> tuple[dict[str, Cell], str]:
    """p99 at equal load: S2 at a shared absolute rate if the run has one, else S3."""
    point = s2_common(res)
    if point is not None and "cap" not in point.tag:
        return (
            {
                n: cell(runs, metric("percentiles_us", "99"))
                for n, runs in point.runs.items()
                if n in PROXIES
            },
            f"(S2 p99 at {point.label})",
        )
    rate = s3_rate(res)
    if rate is None:
        return {}, ""
    return (
        {
            n: cell(res.select("S3", n, rate=rate), metric("percentiles_us", "99"))
            for n in res.contenders("S3")
            if n in PROXIES
        },
        f"(S3 p99 at {rate} req/s, the same offered rate for every contender)",
    )


def verdict(res: Results) -> list[Block]:
    # CPU per request at one offered rate every contender sustained, not the fitted
    # marginal cost b: utilisation is concave in the rate on this kind of VM (wake-ups
    # batch as the load rises), so a straight line's slope depends on the range of rates
    # a contender held, which differs between contenders and between runs. b stays in
    # the headline table and S4 (docs/benchmarking.md, "S4 marginal cost").
    rate4 = s4_rate(res)
    cpu: dict[str, Cell] = {
        n: cell(res.select("S4", n, rate=rate4), metric("cpu_us_per_req"))
        for n in res.contenders("S4")
        if n in PROXIES
    }
    cpu_where = f"(S4 at {rate4} req/s, the same offered rate for every contender)"
    tail, tail_where = _tail_cells(res)
    cap: dict[str, Any] = {
        n: cell(
            capacity_runs(res, n, HEADLINE_CONNECTIONS),
            metric("rps"),
            lower_bounds=True,
        )
        for n in res.contenders(("S1",))
        if n in PROXIES
    }
    lines = (
        _winner_line("Cheapest per request", cpu, "µs CPU/req", cpu_where),
        _winner_line("Lowest tail at equal load", tail, "µs p99", tail_where),
        _c_vs_py(
            "C vs Python, CPU per request",
            cpu,
            "µs",
            cpu_where.replace(")", "; lower is better)"),
        ),
        _c_vs_py(
            "C vs Python, p99 at equal load",
            tail,
            "µs",
            tail_where.replace(")", "; lower is better)"),
        ),
        _c_vs_py(
            "C vs Python, capacity",
            cap,
            "req/s",
            f"(S1 at {HEADLINE_CONNECTIONS} connections; higher is better)",
        ),
    )
    note = (
        "Each ratio is paired (rep i over rep i), geometric mean of the pair ratios "
        f"[bootstrap 95 % CI]; '{NO_DIFF}' when the CI includes 1; "
        f"no CI with fewer than {stats.MIN_PAIRS_FOR_CI} valid pairs."
    )
    reps = len({r.rep for r in res.runs})
    if 0 < reps < 5:
        distinct = math.comb(2 * reps - 1, reps)
        note += (
            f" This run has {reps} rep(s) per point: a bootstrap over {reps} pairs has at "
            f"most {distinct} distinct resamples, so its CI is coarse (about the range of "
            "the pair ratios); 5 or more reps give a CI worth its name."
        )
    return [Heading(2, "Verdict", "verdict"), Bullets(lines), Para(note)]
