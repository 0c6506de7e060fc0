"""Report section: what one stats scrape costs each contender (loadtest/perf/scrape_cost.py).

Not a load scenario: `make perf-scrape PERF_SCRAPE_OUT=<results folder>` writes
scrape_cost.json into the folder, and this section shows it. Without the file the report
has no such section (older results folders stay as they were)."""

from __future__ import annotations

import json

from loadtest.report.common import Ctx
from loadtest.report.doc import Alert, Block, Heading, Para, Table

FILE = "scrape_cost.json"


def section(ctx: Ctx) -> list[Block]:
    path = ctx.res.root / FILE
    if not path.exists():
        return []
    blocks: list[Block] = [Heading(2, "Stats scrape cost", "scrape")]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [
            (
                str(r["contender"]),
                str(r["endpoint"]),
                f"{r['scrapes']} × {r['reps']}",
                (
                    f"{float(r['cpu_us_per_scrape']):.1f} "
                    f"[{float(r['cpu_us_min']):.1f}, {float(r['cpu_us_max']):.1f}]"
                ),
                f"{float(r['idle_cpu_us_same_wall']):.1f}",
                str(r["bytes_per_scrape"]),
            )
            for r in data["rows"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return blocks + [Alert(f"{FILE} unreadable: {e}")]
    blocks.append(
        Para(
            "CPU time of the contender's process tree across N scrapes of its stats endpoint "
            "on one keep-alive connection, divided by N (median and range over the batches (the twins' /metrics, nginx's "
            "stub_status, HAProxy's CSV stats and Prometheus exporter)), after warm-up traffic; "
            "the idle column is the same tree's CPU over an idle stretch as long, per scrape "
            f"(not subtracted). Command: `{data.get('command', 'loadtest/perf/scrape_cost.py')}`."
        )
    )
    blocks.append(
        Table(
            (
                "contender",
                "endpoint",
                "scrapes × reps",
                "CPU µs / scrape, median [min, max]",
                "idle CPU µs",
                "response bytes",
            ),
            tuple(rows),
        )
    )
    return blocks
