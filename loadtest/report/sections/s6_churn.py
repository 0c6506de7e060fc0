"""Report section: S6 connection churn (wrk, Connection: close)."""

from __future__ import annotations

from loadtest.report.common import (
    BOUND_NOTE,
    WRK_NOTE,
    Ctx,
    metric,
    per_param_section,
)
from loadtest.report.doc import Block


def section(ctx: Ctx) -> list[Block]:
    return per_param_section(
        ctx,
        "S6",
        "S6 Connection churn (wrk, Connection: close)",
        "s6",
        "connections",
        str,
        (
            ("requests/s", metric("rps"), False, True),
            ("errors", metric("errors"), False, False),
        ),
        "s6-churn.png",
        "Every request opens and closes a TCP connection: accept(), socket setup and teardown "
        "dominate. " + WRK_NOTE + " " + BOUND_NOTE,
    )
