"""Small statistics the runner needs itself (nearest-rank percentiles, as the report uses)."""

from __future__ import annotations

import math
from collections.abc import Sequence

PCTS = ("50", "90", "95", "99", "99.9", "99.99", "100")


def pct(ordered: Sequence[float], p: float) -> float:
    n = len(ordered)
    rank = max(1, math.ceil(round(p / 100.0 * n, 9)))
    return ordered[min(rank, n) - 1]


def percentiles_us(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    o = sorted(values)
    return {k: o and pct(o, float(k)) for k in PCTS}
