"""Report section: S7 idle connections: memory."""

from __future__ import annotations

from loadtest.report.common import (
    Ctx,
    metric,
    per_param_section,
)
from loadtest.report.doc import Block


def section(ctx: Ctx) -> list[Block]:
    return per_param_section(
        ctx,
        "S7",
        "S7 Idle connections: memory",
        "s7",
        "connections",
        str,
        (
            (
                "KiB per idle connection",
                metric("rss_bytes_per_conn", scale=1 / 1024),
                False,
                False,
            ),
            ("RSS after MiB", metric("rss_kb_after", scale=1 / 1024), False, False),
            ("RSS before MiB", metric("rss_kb_before", scale=1 / 1024), False, False),
        ),
        "s7-idle-rss.png",
        "RSS growth divided by the number of idle keep-alive client connections held open: "
        "the per-connection cost of buffers and bookkeeping.",
    )
