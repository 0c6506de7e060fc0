"""loadtest/perf/scrape_cost.py and its report section (s12_scrape)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from loadtest.perf import scrape_cost
from loadtest.report.common import Ctx
from loadtest.report.doc import Heading, Table
from loadtest.report.load import Results
from loadtest.report.sections import s12_scrape


def test_tree_cpu_counts_every_thread() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    t = threading.Thread(target=spin)
    before, nproc, nthr = scrape_cost.tree_cpu_ns(os.getpid())
    t.start()
    try:
        # the spinning thread's time must show in the total (it is not the main thread)
        for _ in range(200):
            now, _, threads = scrape_cost.tree_cpu_ns(os.getpid())
            if now - before > 20_000_000 and threads >= nthr + 1:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        t.join()
    assert nproc >= 1
    assert now - before > 20_000_000


def test_table_rows() -> None:
    row = scrape_cost.Row(
        "c-proxy", "/metrics", 10, 51.25, 40.0, 60.0, 3, 0.5, 80.0, 957, 1, 2
    )
    text = scrape_cost.table([row])
    assert (
        "| c-proxy | `/metrics` | 10 × 3 | 51.2 [40.0, 60.0] | 0.5 | 957 | 1 / 2 |"
        in text
    )


def _ctx(root: Path) -> Ctx:
    return Ctx(Results(root, {}, []), root / "plots")


def test_section_absent_without_file(tmp_path: Path) -> None:
    assert s12_scrape.section(_ctx(tmp_path)) == []


def test_section_shows_the_file(tmp_path: Path) -> None:
    row = scrape_cost.Row(
        "nginx", "/stub_status", 5, 40.0, 39.0, 41.0, 3, 0.0, 60.0, 99, 1, 1
    )
    (tmp_path / "scrape_cost.json").write_text(
        json.dumps(
            {
                "command": "python -m loadtest.perf.scrape_cost -n 5",
                "rows": [row.__dict__],
            }
        )
    )
    blocks = s12_scrape.section(_ctx(tmp_path))
    assert isinstance(blocks[0], Heading)
    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables and tables[0].rows == (
        ("nginx", "/stub_status", "5 × 3", "40.0 [39.0, 41.0]", "0.0", "99"),
    )
