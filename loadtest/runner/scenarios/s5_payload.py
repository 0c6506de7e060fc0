"""S5: throughput by response size with wrk.

Parameters: loadtest/scenarios/profiles.yaml; what each figure means: docs/benchmarking.md.
"""

from __future__ import annotations

from typing import Any

from .core import Block, Ctx, _wrk_block, base_doc


def params_S5(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S5"]
    return [
        {"size": s, "connections": p["connections"], "path": f"/bytes/{s}"}
        for s in p["sizes"]
    ]


def block_S5(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    _wrk_block(
        ctx,
        sc,
        name,
        rep,
        blk,
        base_doc(ctx),
        lambda p: (p["path"], p["connections"], (), (p["size"],)),
    )


# The registry (scenarios/__init__.py) reads these names.
PARAMS = {"S5": params_S5}
BLOCK = block_S5
