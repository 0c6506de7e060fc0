"""S7: memory and fds per idle client connection.

Parameters: loadtest/scenarios/profiles.yaml; what each figure means: docs/benchmarking.md.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from testkit import proc

from .. import idleconns
from ..contenders import Running
from .core import Block, Ctx, _measure_each, base_doc


def params_S7(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    return [{"connections": n} for n in ctx.prof["S7"]["connections"]]


def _s7_measure(
    ctx: Ctx, run: Running, n: int
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    assert run.pid is not None
    time.sleep(0.1)
    before = proc.rss_kb(run.pid)
    ic = idleconns.IdleConnections()
    try:
        opened = ic.open(run.host, run.port, n, timeout_s=10 + n / 500)
        time.sleep(float(ctx.prof["S7"]["hold_s"]))
        after = proc.rss_kb(run.pid)
        still = ic.alive()
    finally:
        ic.close()
    metrics = {
        "rss_kb_before": before,
        "rss_kb_after": after,
        "rss_bytes_per_conn": (after - before) * 1024 / opened if opened else None,
        "opened": opened,
        "still_open": still,
    }
    reason = None
    if opened < n:
        reason = f"only {opened} of {n} idle connections could be opened"
    elif still < opened:
        reason = f"the proxy closed {opened - still} of {opened} idle connections during the hold"
    return metrics, reason, {}


def block_S7(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    n_max = max(int(p["connections"]) for p in blk.params)
    doc = base_doc(ctx, max_client_connections=n_max + 1000)
    _measure_each(
        ctx,
        sc,
        name,
        rep,
        blk,
        doc,
        lambda r, p: partial(_s7_measure, ctx, r, int(p["connections"])),
    )


# The registry (scenarios/__init__.py) reads these names.
PARAMS = {"S7": params_S7}
BLOCK = block_S7
