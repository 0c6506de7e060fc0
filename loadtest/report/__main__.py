"""CLI: python -m loadtest.report [--no-browser] RESULTS_DIR

Builds the report, then (when Chromium is installed) renders report.html headless,
checks every image loads and keeps report-first-screen.png beside it; `make bench`
runs this, so every bench run gets the screenshot too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from loadtest.report import browser
from loadtest.report.build import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.report",
        description="Write RESULTS_DIR/report.md, report.html and plots/*.png from a bench run.",
    )
    parser.add_argument(
        "results_dir", type=Path, help="a folder written by loadtest.bench"
    )
    parser.add_argument(
        "--no-browser",
        action="store_true",
        help="skip the headless-Chromium check (images load, report-first-screen.png)",
    )
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        print(f"loadtest.report: {args.results_dir}: not a directory", file=sys.stderr)
        return 2
    md, html = build(args.results_dir)
    print(f"wrote {md}\nwrote {html}")
    if args.no_browser:
        return 0
    if browser.chromium() is None:
        print(
            "loadtest.report: chromium not installed (make deps): browser check skipped",
            file=sys.stderr,
        )
        return 0
    try:
        result = browser.check(html)
    except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        print(f"loadtest.report: browser check failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"browser check: {len(result.images)} image(s) loaded in headless Chromium, "
        f"{len(result.broken)} not; wrote {result.screenshot}"
    )
    for alt in result.broken:
        print(f"loadtest.report: image not loaded: {alt}", file=sys.stderr)
    return 1 if result.broken or result.screenshot is None else 0


if __name__ == "__main__":
    sys.exit(main())
