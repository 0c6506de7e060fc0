"""Report builder: `python -m loadtest.report RESULTS_DIR` writes report.md, report.html,
plots/ and (with Chromium installed) report-first-screen.png.

Layout: build.py (header, verdict placement, headline, appendix, entry point), verdict.py
(the five-line answer), common.py (formatting, paired-ratio tables, ↓/↑ markers, helpers
several sections share), sections/s<N>_<name>.py (one scenario's section each, found by
file name), plots.py, doc.py (Markdown + HTML), load.py (reading a results folder),
browser.py (the headless-Chromium check). Statistics live in loadtest/stats.py.

Input format: loadtest/SCHEMA.md. How to read the output: docs/benchmarking.md (part 2).
"""

from loadtest.report.build import build

__all__ = ["build"]
