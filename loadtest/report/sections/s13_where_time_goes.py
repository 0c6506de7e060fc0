"""Report section: where the time goes (after S11; not a scenario of the runner).

Reads what `make perf-profile` (loadtest/profile/profile.sh and
loadtest/perf/per_request_all.sh) wrote into the run folder's ``profile/``: the flame
graphs (``*.svg``), the CPU share table (``shares.json``) and the per-request table
(``per_request.json``). What is absent is said to be not run; nothing is made up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtest.report.common import Ctx
from loadtest.report.doc import Block, Heading, Image, Para, Table

CATEGORIES = ("kernel", "llhttp", "event loop", "proxy", "interpreter", "other")
LABELS = {
    "kernel": "kernel %",
    "llhttp": "parser (llhttp) %",
    "event loop": "event loop %",
    "proxy": "proxy's own code %",
    "interpreter": "interpreter %",
    "other": "rest (libc, other Python) %",
}
PER_REQUEST = (
    ("callgrind", "instructions / req ↓", "{:,.0f}"),
    ("strace", "syscalls / req", "{:.2f}"),  # the report marks this one ↓ itself
    ("ctxsw", "context switches / req ↓", "{:.3f}"),
)
NOT_RUN = (
    "not run in this results folder (`make perf-profile PROFILE_DIR=<run>/profile`)"
)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _num(v: Any, fmt: str) -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "no data"


def _shares(folder: Path) -> list[Block]:
    doc = _json(folder / "shares.json")
    rows = doc.get("rows") if doc else None
    if doc is None or not isinstance(rows, list) or not rows:
        return [Para(f"CPU shares and flame graphs: {NOT_RUN}.")]
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    blocks: list[Block] = [
        Para(
            f"Each proxy pinned alone on CPU {meta.get('proxy_cpu', '?')}, olgen offering "
            f"{meta.get('rate', '?')} req/s on `/bytes/0` over "
            f"{meta.get('connections', '?')} connections from CPU "
            f"{meta.get('load_cpu', '?')}, recorded {meta.get('seconds', '?')} s at "
            f"{meta.get('sample_hz', '?')} Hz (perf)"
            + (f", {meta['pyspy_hz']} Hz (py-spy)" if meta.get("pyspy_hz") else "")
            + "; load average at the end "
            f"{' '.join(str(x) for x in meta.get('loadavg') or []) or '?'}. The C-level "
            "view (perf) sees the kernel but not Python functions (they are all "
            "`interpreter` there); the Python-level view (py-spy --native) sees Python "
            "functions, and counts a leaf system-call wrapper as kernel time."
        )
    ]
    table_rows = []
    images: list[Block] = []
    for r in rows:
        if not isinstance(r, dict):
            continue
        sh = r.get("shares_pct") if isinstance(r.get("shares_pct"), dict) else {}
        assert isinstance(sh, dict)
        win = r.get("window") if isinstance(r.get("window"), dict) else {}
        assert isinstance(win, dict)
        view = "perf" if r.get("tool") == "perf" else "py-spy --native"
        table_rows.append(
            (
                str(r.get("impl", "?")),
                view,
                str(r.get("samples", "?")),
                *(_num(sh.get(c), "{:.1f}") for c in CATEGORIES),
                _num(win.get("olgen_achieved_rate"), "{:,.0f}"),
                _num(win.get("cpu_us_per_request"), "{:.1f}"),
            )
        )
        svg = folder / str(r.get("svg", ""))
        if r.get("svg") and svg.is_file():
            images.append(
                Image(
                    path=svg,
                    rel=f"profile/{svg.name}",
                    alt=f"flame graph: {r.get('impl')} ({view})",
                )
            )
        else:
            images.append(Para(f"Flame graph of {r.get('impl')} ({view}): missing."))
    blocks.append(
        Table(
            ("proxy", "view", "samples")
            + tuple(LABELS[c] for c in CATEGORIES)
            + ("achieved req/s", "proxy CPU µs/req"),
            tuple(table_rows),
        )
    )
    blocks.append(
        Para(
            "Share of the proxy's CPU samples by category (docs/performance.md, \"Where "
            "the time goes\", gives the rules); CPU µs/req is the proxy's CPU time over "
            "the recording ÷ the requests completed in it, the profiler's own cost included."
        )
    )
    blocks.append(Heading(3, "Flame graphs"))
    blocks.append(
        Para(
            "Root at the bottom; width = share of samples; colour = category (kernel "
            "orange, llhttp green, event loop blue, proxy red, interpreter purple, "
            "generic grey). Hover a box for its samples (in the SVG files under `profile/`)."
        )
    )
    return blocks + images


def _per_request(folder: Path) -> list[Block]:
    doc = _json(folder / "per_request.json")
    rows = doc.get("rows") if doc else None
    if not isinstance(rows, list) or not rows:
        return [
            Para(f"Per-request instructions, syscalls and context switches: {NOT_RUN}.")
        ]
    table_rows = []
    for e in rows:
        if not isinstance(e, dict):
            continue
        name = str(e.get("contender", "?"))
        if e.get("note"):
            name += f" ({e['note']})"
        cells = [name]
        ns = set()
        for tool, _, fmt in PER_REQUEST:
            t = e.get(tool) if isinstance(e.get(tool), dict) else None
            v = t.get("per_request") if t else None
            cells.append(_num(v, fmt) if t and t.get("values") else "not run")
            if t and t.get("n"):
                ns.add(str(t["n"]))
        cells.append(" / ".join(sorted(ns)) or "?")
        table_rows.append(tuple(cells))
    return [
        Para(
            "Keep-alive `GET /` through each contender (loadtest/perf/per_request.sh): "
            "callgrind user-space instructions and strace syscalls as (total(N) − "
            "total(0)) / N, context switches of every task over the N requests with the "
            "proxy pinned alone. `direct` is the upstream server measured on its own; the "
            "null proxy is a splice(2) relay: what any proxy pays for the extra hop."
        ),
        Table(
            ("contender",)
            + tuple(label for _, label, _ in PER_REQUEST)
            + ("requests N",),
            tuple(table_rows),
        ),
    ]


def section(ctx: Ctx) -> list[Block]:
    folder = ctx.res.root / "profile"
    blocks: list[Block] = [Heading(2, "Where the time goes", "where-time-goes")]
    if not folder.is_dir():
        return blocks + [Para(f"Profiles and per-request counts: {NOT_RUN}.")]
    return blocks + _shares(folder) + [Heading(3, "Per request")] + _per_request(folder)
