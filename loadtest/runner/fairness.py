"""S8 fairness math: chi-square against weight-proportional expectation, max/min ratio."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

MAX_MIN_BOUND = (
    1.05  # equal/slow/weighted: max/min (weight-normalised) above this FAILS
)
P_MIN = 0.01  # ... and so does a chi-square p-value below this


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


def chi2_sf(x: float, dof: int) -> float:
    """Upper tail P(X >= x) of a chi-square distribution with ``dof`` degrees of freedom
    (regularised upper incomplete gamma; series / continued fraction, no scipy)."""
    if dof <= 0:
        return 1.0
    if x <= 0:
        return 1.0
    a, z = dof / 2.0, x / 2.0
    gln = math.lgamma(a)
    if z < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-z + a * math.log(z) - gln))
    b = z + 1 - a
    c = 1 / 1e-300
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-z + a * math.log(z) - gln) * h)


def weighted_max_min(
    counts: Mapping[str, int], weights: Mapping[str, float] | None = None
) -> float | None:
    """max/min of count/weight: 1.00 is a split exactly in proportion to the weights."""
    if not counts:
        return None
    norm = {n: c / (weights or {}).get(n, 1.0) for n, c in counts.items()}
    lo, hi = min(norm.values()), max(norm.values())
    return None if lo == 0 else hi / lo


def assert_fair(
    counts: Mapping[str, int],
    weights: Mapping[str, float] | None = None,
    bound: float = MAX_MIN_BOUND,
    p_min: float = P_MIN,
) -> tuple[dict[str, float | None], str | None]:
    """The S8 fairness gate: (figures, None) or (figures, "FAILED: why")."""
    chi, dof = chi_square(counts, weights)
    p = chi2_sf(chi, dof)
    mm = weighted_max_min(counts, weights)
    why = []
    if mm is None:
        why.append("an upstream that should serve got nothing")
    elif mm > bound:
        why.append(f"max/min {mm:.3f} > {bound}")
    if p < p_min:
        why.append(f"chi-square p {p:.2g} < {p_min}")
    figs: dict[str, float | None] = {"max_min": mm, "chi_square": chi, "p_value": p}
    return figs, ("FAILED: " + ", ".join(why)) if why else None


# ---------------------------------------------------------------- ejection / re-admission


def read_attempt_fails(path: str | Path = "/proc/net/snmp") -> int | None:
    """Tcp AttemptFails: connects that went SYN-SENT -> CLOSED (refused). Counts for the
    whole network namespace, so on a shared machine other processes can add to it."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    tcp = [ln.split() for ln in lines if ln.startswith("Tcp:")]
    if len(tcp) < 2:
        return None
    head, vals = tcp[0], tcp[1]
    try:
        return int(vals[head.index("AttemptFails")])
    except (ValueError, IndexError):
        return None


def ejection(
    events: Sequence[tuple[float, str, bool]],
    refused: Sequence[tuple[float, int]],
    killed_at: float,
    restarted_at: float | None,
    upstream: str,
) -> dict[str, float | int | None]:
    """Ejection and re-admission of ``upstream``, killed at ``killed_at`` and restarted at
    ``restarted_at`` (seconds on the events' clock).

    - ``refused_while_dead``: refused connects (AttemptFails delta) from the kill to the
      restart: the connections the proxy tried to open to the dead upstream.
    - ``ejection_s``: kill -> the last refused connect of the first burst after it (the
      balancer stopped choosing it); later isolated refusals are re-probes after
      fail_timeout (``reprobes``).
    - ``errors_while_dead``: responses that were not 200 between kill and restart.
    - ``served_after_kill``: responses from it after the kill (in flight at the kill).
    - ``readmission_s``: restart -> its first response after the restart.
    """
    end = restarted_at if restarted_at is not None else float("inf")
    # from the last sample before the kill (the baseline) to the restart
    first = max((i for i, (t, _) in enumerate(refused) if t < killed_at), default=0)
    dead = [(t, n) for i, (t, n) in enumerate(refused) if i >= first and t <= end]
    total = 0
    ejection_s = None
    bursts = 0
    prev_zero = True
    for i in range(1, len(dead)):
        d = dead[i][1] - dead[i - 1][1]
        total += max(0, d)
        if d > 0 and prev_zero:
            bursts += 1
        if d > 0 and bursts == 1:
            ejection_s = dead[i][0] - killed_at
        prev_zero = d <= 0
    errs = sum(1 for t, _, ok in events if not ok and killed_at <= t <= end)
    served = sum(
        1 for t, up, ok in events if ok and up == upstream and killed_at <= t <= end
    )
    back = [
        t
        for t, up, ok in events
        if ok and up == upstream and restarted_at is not None and t >= restarted_at
    ]
    return {
        "refused_while_dead": total if dead else None,
        "ejection_s": round(ejection_s, 3)
        if ejection_s is not None
        else (0.0 if dead else None),
        "reprobes": max(0, bursts - 1),
        "errors_while_dead": errs,
        "served_after_kill": served,
        "readmission_s": round(min(back) - restarted_at, 3)
        if back and restarted_at is not None
        else None,
    }
