"""S0/S1: closed-loop capacity with wrk (S0 direct to the upstream as the ceiling, S1 through each contender) at each connection count.

Parameters: loadtest/scenarios/profiles.yaml; what each figure means: docs/benchmarking.md.
"""

from __future__ import annotations

from typing import Any

from .core import Block, Ctx, _wrk_block, base_doc


def params_S01(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof[sc]
    return [{"connections": c, "path": p["path"]} for c in p["connections"]]


def block_S01(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    _wrk_block(
        ctx,
        sc,
        name,
        rep,
        blk,
        base_doc(ctx),
        lambda p: (p["path"], p["connections"], (), (p["connections"],)),
    )


# The registry (scenarios/__init__.py) reads these names.
PARAMS = {"S0": params_S01, "S1": params_S01}
BLOCK = block_S01
