"""The shared registries (c-proxy/tests/registry_cases/): the reason vocabulary and the
event registry, parsed, and rendered into docs/behaviour.md.

    .venv/bin/python conformance/registry.py --write   # after editing a registry file

conformance/test_logs.py checks that docs/behaviour.md holds what this renders, and
conformance/test_twin_parity.py checks the event lines of both twins against the registry.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "c-proxy/tests/registry_cases"
DOC = ROOT / "docs/behaviour.md"


def _lines(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def reasons() -> list[str]:
    return _lines(CASES / "reasons.txt")


def events() -> list[tuple[str, str, tuple[str, ...], bool]]:
    """(event, level, fields in order, py_only) per shape."""
    out = []
    for line in _lines(CASES / "events.txt"):
        words = line.split()
        py_only = words[-1] == "py-only"
        if py_only:
            words = words[:-1]
        out.append((words[0], words[1], tuple(words[2:]), py_only))
    return out


def shapes() -> set[tuple[str, str, frozenset[str]]]:
    return {(e, lvl, frozenset(f)) for e, lvl, f, _ in events()}


def render_events() -> str:
    rows = [
        "| event | level | fields (after ts, level, event) |",
        "| --- | --- | --- |",
    ]
    for e, lvl, f, py_only in events():
        fields = ", ".join(f"`{x}`" for x in f) or "(none)"
        rows.append(
            f"| `{e}` | {lvl} | {fields}{' (py-proxy supervisor only)' if py_only else ''} |"
        )
    return "\n".join(rows) + "\n"


def render_reasons() -> str:
    return ", ".join(f"`{r}`" for r in reasons()) + "\n"


def _section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- registry:{name} -->\n", f"<!-- /registry:{name} -->"
    i, j = text.index(start) + len(start), text.index(end)
    return text[:i] + body + text[j:]


def rendered_doc() -> str:
    text = DOC.read_text()
    text = _section(text, "events", render_events())
    return _section(text, "reasons", render_reasons())


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: registry.py --write")
    DOC.write_text(rendered_doc())
