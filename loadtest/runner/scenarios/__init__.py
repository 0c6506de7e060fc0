"""The scenarios S0-S11, one module each, found in one place: here.

Each module `s<N>_<name>.py` in this package holds one scenario (or a pair that shares
its measurement: S0/S1, S2/S3): its parameters, its measurement and its block, and ends
with the names this registry reads, `PARAMS` (scenario id -> params function), `BLOCK`
(runs one contender's block of one rep) and, optionally, `FINISH` (stops what the
scenario's blocks keep running between blocks, such as S8's upstreams; called when the
run moves on to another scenario and at the end). Adding a scenario is adding one module
here (and its report section in loadtest/report/sections/, found the same way).

Each block starts the contender on the scenario's twinproxy YAML, warms it up, measures
every parameter of the scenario, and stops it. Every measurement becomes one runs.jsonl
record (loadtest/SCHEMA.md), valid or not; nothing is dropped.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any

from ..contenders import StartError
from .core import UPSTREAM, Block, Ctx, HarnessError, upstream_available
from .s2_latency import Ladder, _past_end
from .s4_cpu import params_S4, parse_strace_c, s4_fit, strace_gate
from .s9_timeouts import s9_gate
from .s11_ratelimit import s11_sources, s11_summary

ParamsFn = Callable[[Ctx, str, str], list[dict[str, Any]]]
BlockFn = Callable[[Ctx, str, str, int, Block], None]
_NAME = re.compile(r"s(\d+)_\w+$")


FinishFn = Callable[[Ctx], None]


def _discover() -> tuple[dict[str, ParamsFn], dict[str, BlockFn], dict[str, FinishFn]]:
    params: dict[str, ParamsFn] = {}
    blocks: dict[str, BlockFn] = {}
    finish: dict[str, FinishFn] = {}
    found = sorted(
        (int(m.group(1)), info.name)
        for info in pkgutil.iter_modules(__path__)
        if (m := _NAME.match(info.name))
    )
    for _, name in found:
        mod = importlib.import_module(f"{__name__}.{name}")
        for sc, fn in mod.PARAMS.items():
            if sc in params:
                raise RuntimeError(f"scenario {sc} registered twice ({name})")
            params[sc] = fn
            blocks[sc] = mod.BLOCK
            if hasattr(mod, "FINISH"):
                finish[sc] = mod.FINISH
    order = sorted(params, key=lambda s: int(s[1:]))
    return {s: params[s] for s in order}, {s: blocks[s] for s in order}, finish


PARAMS, BLOCKS, FINISH = _discover()


def finish(ctx: Ctx, sc: str | None = None) -> None:
    """Stop what scenario sc (every scenario when None) keeps running between blocks."""
    for key, fn in FINISH.items():
        if sc is None or key == sc:
            fn(ctx)


def run_block(ctx: Ctx, sc: str, name: str, rep: int) -> None:
    """Run (or record as invalid) one contender's block; only harness bugs propagate as
    entries in ctx.harness_errors, never as a missing record."""
    params = PARAMS[sc](ctx, sc, name)
    blk = Block(ctx, sc, name, rep, params)
    ok, why = ctx.avail.get(name, (True, None))
    if not ok:
        blk.fail_rest(f"contender unavailable: {why}")
        return
    try:
        BLOCKS[sc](ctx, sc, name, rep, blk)
    except StartError as e:
        blk.fail_rest(str(e)[:600])
    except HarnessError as e:
        ctx.harness_errors.append(f"{sc} {name} rep {rep}: {e}")
        blk.fail_rest(f"harness error: {e}"[:600])
    except Exception as e:  # noqa: BLE001 -- a runner bug: keep going, exit non-zero at the end
        tb = traceback.format_exc()
        ctx.harness_errors.append(f"{sc} {name} rep {rep}: {tb}")
        print(tb, file=sys.stderr)
        blk.fail_rest(f"harness error: {type(e).__name__}: {e}"[:600])
    finally:
        blk.fail_rest("not measured (block aborted)")


__all__ = [
    "BLOCKS",
    "FINISH",
    "PARAMS",
    "UPSTREAM",
    "Block",
    "Ctx",
    "HarnessError",
    "Ladder",
    "_past_end",
    "finish",
    "params_S4",
    "parse_strace_c",
    "run_block",
    "s4_fit",
    "s9_gate",
    "s11_sources",
    "s11_summary",
    "strace_gate",
    "upstream_available",
]
