"""Report section: S9 upstream read timeouts."""

from __future__ import annotations

from collections.abc import Callable

from loadtest import stats
from loadtest.report import plots
from loadtest.report.common import (
    NOT_MEASURED,
    Ctx,
    _num,
    contender_table,
    figure_columns,
    invalid_list,
    metric,
    pooled_samples,
)
from loadtest.report.doc import Block, Heading, Para
from loadtest.report.load import Run


def section(ctx: Ctx) -> list[Block]:
    res = ctx.res
    blocks: list[Block] = [Heading(2, "S9 Upstream read timeouts", "s9")]
    runs = res.select("S9")
    if not runs:
        return blocks + [Para(f"Timeouts: {NOT_MEASURED}.")]
    blocks.append(
        Para(
            "The upstream answers far later than the proxy's read timeout; each proxy must "
            "answer 504 at its configured read timeout, not much later, for every request, "
            "and release its sockets. Gates: the p99 minus the client's own offset (p50 of "
            "the same burst straight to the upstream's /delay/T, minus T) within "
            "[T, T + 20 ms]; fd leak = fds after − the baseline taken before the warm-up − "
            "the idle pool the warm-up left open, ≤ 0."
        )
    )
    names = res.contenders("S9")

    def sel(n: str) -> list[Run]:
        return res.select("S9", n)

    def overshoot(run: Run) -> float | None:
        p50, t = run.metric("latency_ms", "50"), run.param("read_timeout_ms")
        return (
            None if p50 is None or not isinstance(t, (int, float)) else p50 - float(t)
        )

    figures: list[tuple[str, Callable[[Run], float | None]]] = [
        ("read timeout ms", lambda r: _num(r.param("read_timeout_ms"))),
        ("requests", lambda r: _num(r.param("requests"))),
        ("504s", metric("count_504")),
        ("other", metric("other")),
        ("min ms", metric("latency_ms", "min")),
        ("p50 ms", metric("latency_ms", "50")),
        ("p99 ms", metric("latency_ms", "99")),
        ("max ms", metric("latency_ms", "max")),
        ("p50 − timeout ms", overshoot),
        ("client offset ms", metric("client_offset_ms")),
        ("calibrated p99 ms", metric("p99_corrected_ms")),
        ("fd delta (after − baseline)", metric("fd_delta")),
        ("fd leak", metric("fd_leak")),
    ]
    cols = figure_columns(names, sel, figures)
    blocks.append(contender_table(names, "contender", cols))
    lat: dict[str, list[float]] = {}
    timeouts: dict[str, float] = {}
    for n in names:
        samples = pooled_samples(ctx, sel(n), "latency_ms", lambda s: s == 504)
        if samples is None:
            continue
        lat[n] = samples.tolist()
        t = [
            x
            for r in sel(n)
            if r.valid and (x := _num(r.param("read_timeout_ms"))) is not None
        ]
        if t:
            timeouts[n] = stats.median(t)
    if lat:
        path = plots.timeout_hist(ctx.plots_dir / "s9-timeouts.png", lat, timeouts)
        blocks.append(
            ctx.image(path, "S9 histogram of 504 latencies against the read timeout")
        )
    else:
        blocks.append(Para("Timeout histogram: no raw samples in this run."))
    blocks += invalid_list(runs)
    return blocks
