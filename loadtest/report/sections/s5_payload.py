"""Report section: S5 payload sizes (wrk)."""

from __future__ import annotations

from loadtest.report.common import (
    BOUND_NOTE,
    WRK_NOTE,
    Ctx,
    fmt_size,
    metric,
    per_param_section,
)
from loadtest.report.doc import Block


def section(ctx: Ctx) -> list[Block]:
    return per_param_section(
        ctx,
        "S5",
        "S5 Payload sizes (wrk)",
        "s5",
        "size",
        fmt_size,
        (
            ("requests/s", metric("rps"), True, True),
            (
                "MiB/s transferred",
                metric("transfer_bytes_per_s", scale=1 / (1 << 20)),
                True,
                True,
            ),
        ),
        "s5-payload.png",
        "Response body sizes 0 B to 1 MiB: small bodies measure per-request overhead, large ones "
        "how each proxy moves bytes (buffer sizes, copies, backpressure). "
        + WRK_NOTE
        + " "
        + BOUND_NOTE,
    )
