"""The README's "Reference results" section, copied from the committed reference run.

    python -m loadtest.report.readme [RUN_DIR] [--check]

Takes the verdict and the headline table out of RUN_DIR/report.md (default
results/reference) — the report builder wrote them, nothing here computes a figure — adds
the run's facts from env.json, and writes them into README.md between the
`<!-- reference:begin -->` and `<!-- reference:end -->` markers. `--check` exits 1 when
the README differs from what the run says (loadtest/tests runs it, so the README cannot
drift from the committed run).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- reference:begin (python -m loadtest.report.readme writes this part) -->"
END = "<!-- reference:end -->"


def _section(md: str, title: str) -> list[str]:
    """The lines of a `## title` section of report.md, up to the next `## `."""
    lines = md.splitlines()
    try:
        start = lines.index(f"## {title}") + 1
    except ValueError:
        raise SystemExit(f"readme: no '## {title}' section in report.md") from None
    out: list[str] = []
    for ln in lines[start:]:
        if ln.startswith("## "):
            break
        out.append(ln)
    return out


def _first_table(lines: list[str]) -> list[str]:
    """The first markdown table in lines, with the legend line that follows it."""
    i = next((k for k, ln in enumerate(lines) if ln.startswith("|")), None)
    if i is None:
        raise SystemExit("readme: no table in the Headline section")
    j = i
    while j < len(lines) and lines[j].startswith("|"):
        j += 1
    table = lines[i:j]
    rest = [ln for ln in lines[j:] if ln.strip()]
    if rest and rest[0].startswith("_↓"):
        table += ["", rest[0]]
    return table


def render(run: Path) -> str:
    md = (run / "report.md").read_text()
    env = json.loads((run / "env.json").read_text())
    rel = run.resolve().relative_to(ROOT) if run.resolve().is_relative_to(ROOT) else run
    verdict = [ln for ln in _section(md, "Verdict") if ln.startswith("- ")]
    table = _first_table(_section(md, "Headline"))
    pin = env.get("pinning", {})
    minutes = float(env.get("duration_s") or 0) / 60
    facts = (
        f"From the committed reference run, [{rel}/report.md]({rel}/report.md) "
        f"([html]({rel}/report.html)), made by `make bench` ({env.get('profile')} profile, "
        f"git {env.get('git_sha')}, {env.get('started')}, {minutes:.0f} min of measurements, "
        f"{env.get('records')} measurements, {env.get('invalid_records')} invalid) on "
        f"{env.get('cpu_model')}, {env.get('cores')} cores: the proxy on CPU "
        f"{pin.get('proxy_cpu')}, load generators and upstreams on CPU {pin.get('load_cpu')}."
    )
    parts = [
        BEGIN,
        facts,
        "",
        "Verdict (paired ratios, bootstrap 95 % CI; lower is better unless marked):",
        "",
        *verdict,
        "",
        "Headline (median over valid repetitions [min, max]):",
        "",
        *table,
        END,
    ]
    return "\n".join(parts)


def splice(readme: str, block: str) -> str:
    m = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), readme, re.DOTALL)
    if not m:
        raise SystemExit(f"readme: README.md has no {BEGIN!r} ... {END!r} markers")
    return readme[: m.start()] + block + readme[m.end() :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", default=str(ROOT / "results" / "reference"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md differs")
    args = ap.parse_args(argv)
    readme = Path(args.readme)
    old = readme.read_text()
    new = splice(old, render(Path(args.run)))
    if args.check:
        if new != old:
            print(
                "readme: README.md's reference section is not the committed run's; "
                "run python -m loadtest.report.readme",
                file=sys.stderr,
            )
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
