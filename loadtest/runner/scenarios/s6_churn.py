"""S6: connection churn (a new connection per request, Connection: close) with wrk.

Parameters: loadtest/scenarios/profiles.yaml; what each figure means: docs/benchmarking.md.
"""

from __future__ import annotations

from typing import Any

from .core import Block, Ctx, _wrk_block, base_doc


def params_S6(ctx: Ctx, sc: str, name: str) -> list[dict[str, Any]]:
    p = ctx.prof["S6"]
    return [
        {"connections": c, "path": p["path"], "connection_close": True}
        for c in p["connections"]
    ]


def block_S6(ctx: Ctx, sc: str, name: str, rep: int, blk: Block) -> None:
    _wrk_block(
        ctx,
        sc,
        name,
        rep,
        blk,
        base_doc(ctx),
        lambda p: (
            p["path"],
            p["connections"],
            ("Connection: close",),
            (p["connections"],),
        ),
    )


# The registry (scenarios/__init__.py) reads these names.
PARAMS = {"S6": params_S6}
BLOCK = block_S6
