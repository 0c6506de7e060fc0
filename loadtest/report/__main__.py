"""CLI: python -m loadtest.report RESULTS_DIR"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadtest.report.build import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.report",
        description="Write RESULTS_DIR/report.md, report.html and plots/*.png from a bench run.",
    )
    parser.add_argument(
        "results_dir", type=Path, help="a folder written by loadtest.bench"
    )
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        print(f"loadtest.report: {args.results_dir}: not a directory", file=sys.stderr)
        return 2
    md, html = build(args.results_dir)
    print(f"wrote {md}\nwrote {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
