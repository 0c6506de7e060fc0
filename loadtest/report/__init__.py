"""Report builder: `python -m loadtest.report RESULTS_DIR` writes report.md, report.html, plots/.

Input format: loadtest/SCHEMA.md. How to read the output: docs/benchmarking.md (part 2).
"""

from loadtest.report.build import build

__all__ = ["build"]
