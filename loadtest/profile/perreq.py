"""Per-request table from loadtest/perf/per_request_all.sh's JSON lines.

    python -m loadtest.profile.perreq DIR   # DIR/per_request.jsonl -> per_request.{json,md}

One row per contender (by kind: c-proxy, py-proxy, nginx, haproxy, nullproxy, direct),
the median over repetitions of instructions (callgrind), syscalls (strace) and context
switches (ctxsw) per request, with the requests N each was measured over.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

ORDER = ("direct", "nullproxy", "c-proxy", "nginx", "haproxy", "py-proxy")
NOTES = {
    "direct": "the upstream server alone (no proxy): for scale",
    "nullproxy": "splice(2) TCP relay: the floor of any proxy",
}
TOOLS = (
    ("callgrind", "instructions / req", "{:,.0f}"),
    ("strace", "syscalls / req", "{:.2f}"),
    ("ctxsw", "context switches / req", "{:.3f}"),
)


def load(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kinds = sorted(
        {str(r.get("kind")) for r in rows},
        key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k),
    )
    out = []
    for kind in kinds:
        entry: dict[str, Any] = {"contender": kind, "note": NOTES.get(kind, "")}
        for tool, _, _ in TOOLS:
            mine = [r for r in rows if r.get("kind") == kind and r.get("tool") == tool]
            vals = [
                float(r["per_request"])
                for r in mine
                if isinstance(r.get("per_request"), (int, float))
            ]
            entry[tool] = {
                "per_request": statistics.median(vals) if vals else None,
                "values": vals,
                "n": mine[0].get("n") if mine else None,
                "breakdown": mine[-1].get("breakdown", "") if mine else "",
            }
        out.append(entry)
    return out


def markdown(entries: list[dict[str, Any]]) -> str:
    head = ["contender"] + [label for _, label, _ in TOOLS] + ["requests N"]
    lines = [
        "| " + " | ".join(head) + " |",
        "| --- | " + " | ".join("---:" for _ in head[1:]) + " |",
    ]
    for e in entries:
        cells = [e["contender"] + (f" — {e['note']}" if e["note"] else "")]
        ns = set()
        for tool, _, fmt in TOOLS:
            v = e[tool]["per_request"]
            cells.append(fmt.format(v) if v is not None else "not run")
            if e[tool]["n"]:
                ns.add(str(e[tool]["n"]))
        cells.append(" / ".join(sorted(ns)) or "?")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for e in entries:
        bd = e["strace"]["breakdown"]
        if bd:
            lines.append(f"- {e['contender']} syscalls per request: {bd}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    folder = Path(argv[1])
    entries = table(load(folder / "per_request.jsonl"))
    (folder / "per_request.json").write_text(
        json.dumps({"rows": entries}, indent=2) + "\n", encoding="utf-8"
    )
    md = markdown(entries)
    (folder / "per_request.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
