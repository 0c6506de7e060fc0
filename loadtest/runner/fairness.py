"""S8 fairness math: chi-square against weight-proportional expectation, max/min ratio."""

from __future__ import annotations

from collections.abc import Mapping


def chi_square(
    counts: Mapping[str, int], weights: Mapping[str, float] | None = None
) -> tuple[float, int]:
    """Pearson chi-square of observed counts against counts proportional to weights
    (equal when None); returns (chi2, dof = k - 1)."""
    names = list(counts)
    total = sum(counts.values())
    if not names or total == 0:
        return 0.0, max(0, len(names) - 1)
    w = {n: (weights or {}).get(n, 1.0) for n in names}
    wsum = sum(w.values())
    chi = 0.0
    for n in names:
        exp = total * w[n] / wsum
        if exp > 0:
            chi += (counts[n] - exp) ** 2 / exp
    return chi, len(names) - 1


def max_min_ratio(counts: Mapping[str, int]) -> float | None:
    """max/min over the given upstreams; None when the minimum is 0 (infinite)."""
    if not counts:
        return None
    lo, hi = min(counts.values()), max(counts.values())
    return None if lo == 0 else hi / lo


def per_second(
    events: list[tuple[float, str, bool]], seconds: int
) -> list[tuple[int, str, int, int]]:
    """(t_s, upstream, ok) events -> rows (second, upstream, count, errors).

    ``upstream`` is "" for failures nothing could attribute (no X-Upstream header).
    Every (second, upstream) seen anywhere gets a row for every second, zeros included,
    so an ejected upstream shows as a run of zeros.
    """
    names = sorted({u for _, u, _ in events if u})
    if any(not u for _, u, _ in events):
        names.append("")
    table: dict[tuple[int, str], list[int]] = {}
    for t, up, ok in events:
        sec = min(max(0, int(t)), max(0, seconds - 1))
        cell = table.setdefault((sec, up), [0, 0])
        cell[0 if ok else 1] += 1
    rows = []
    for sec in range(seconds):
        for up in names:
            c, e = table.get((sec, up), [0, 0])
            rows.append((sec, up, c, e))
    return rows
