"""The report's figures (matplotlib, Agg). Each function takes prepared numbers, writes one PNG.

Kept cheap: small figures, dpi 100, no per-sample drawing (spectra are evaluated on a
fixed grid of percentiles), so a full run's report builds in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from loadtest import stats

COLORS = {
    "direct": "#7f7f7f",
    "c-proxy": "#1f77b4",
    "py-asyncio": "#ff7f0e",
    "py-uvloop": "#2ca02c",
    "nginx": "#9467bd",
    "haproxy": "#8c564b",
}
_CYCLE = ["#17becf", "#bcbd22", "#e377c2", "#d62728", "#393b79", "#637939", "#8c6d31"]
DPI = 100

# Percentile-spectrum x axis: 1/(1-p) on a log scale; these ticks, these labels.
SPECTRUM_TICKS = (
    (2.0, "50%"),
    (10.0, "90%"),
    (100.0, "99%"),
    (1e3, "99.9%"),
    (1e4, "99.99%"),
)


def color(name: str, index: int) -> str:
    return COLORS.get(name, _CYCLE[index % len(_CYCLE)])


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def spectrum_points(
    ordered: np.ndarray, max_x: float = 1e5
) -> tuple[np.ndarray, np.ndarray]:
    """(x = 1/(1-p), nearest-rank latency) on a log grid, stopping where samples run out."""
    n = len(ordered)
    top = min(max_x, float(n))  # beyond p = 1 - 1/n every percentile is the maximum
    xs = np.logspace(0.0, np.log10(top), 240) if top > 1.0 else np.array([1.0])
    ps = 1.0 - 1.0 / xs
    ranks = np.clip(np.ceil(np.round(ps * n, 9)).astype(int), 1, n)
    return xs, ordered[ranks - 1]


def spectrum(
    path: Path,
    title: str,
    series: Mapping[str, Sequence[float] | np.ndarray],
    notes: Mapping[str, str] | None = None,
) -> Path:
    """Percentile spectrum: one line per contender from its raw samples (µs)."""
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    for i, (name, samples) in enumerate(series.items()):
        ordered = np.sort(np.asarray(samples, dtype=float))
        if len(ordered) == 0:
            continue
        xs, ys = spectrum_points(ordered)
        ax.plot(
            xs,
            ys,
            label=" ".join(
                x for x in (name, (notes or {}).get(name), f"(n={len(ordered):,})") if x
            ),
            color=color(name, i),
            lw=1.6,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(
        [t for t, _ in SPECTRUM_TICKS], [label for _, label in SPECTRUM_TICKS]
    )
    ax.set_xticks([], minor=True)
    ax.set_xlim(1.0, max(t for t, _ in SPECTRUM_TICKS) * 1.2)
    ax.set_xlabel("percentile (log scale of 1/(1-p))")
    ax.set_ylabel("latency µs (log)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


@dataclass(frozen=True)
class Curve:
    """One contender's latency-vs-throughput points (medians over valid reps)."""

    achieved: list[float]
    p50: list[float]
    p99: list[float]


def latency_throughput(path: Path, title: str, curves: dict[str, Curve]) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    for i, (name, c) in enumerate(curves.items()):
        col = color(name, i)
        order = np.argsort(c.achieved)
        xs = np.asarray(c.achieved)[order]
        ax.plot(
            xs,
            np.asarray(c.p50)[order],
            "o-",
            color=col,
            label=f"{name} p50",
            lw=1.4,
            ms=4,
        )
        ax.plot(
            xs,
            np.asarray(c.p99)[order],
            "s--",
            color=col,
            label=f"{name} p99",
            lw=1.4,
            ms=4,
        )
    ax.set_yscale("log")
    ax.set_xlabel("achieved rate (requests/s)")
    ax.set_ylabel("latency µs (log)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


@dataclass(frozen=True)
class Panel:
    """Grouped bars: one group per label, one bar per series, min–max error bars."""

    title: str
    ylabel: str
    groups: list[str]
    series: dict[str, list[stats.Summary | None]]  # name -> one summary per group
    log: bool = False


def bars(path: Path, panels: list[Panel], ncols: int | None = None) -> Path:
    ncols = ncols or min(len(panels), 2)
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(6.0 * ncols, 4.0 * nrows),
        layout="constrained",
        squeeze=False,
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        names = list(panel.series)
        width = 0.8 / max(1, len(names))
        xs = np.arange(len(panel.groups))
        for i, name in enumerate(names):
            vals = panel.series[name]
            med = np.array([s.median if s else np.nan for s in vals])
            lo = np.array([s.median - s.min if s else 0.0 for s in vals])
            hi = np.array([s.max - s.median if s else 0.0 for s in vals])
            offs = xs - 0.4 + width * (i + 0.5)
            ax.bar(offs, med, width, color=color(name, i), label=name)
            ax.errorbar(
                offs, med, yerr=[lo, hi], fmt="none", ecolor="black", lw=1, capsize=2
            )
        ax.set_xticks(xs, panel.groups)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel)
        if panel.log:
            ax.set_yscale("log")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


@dataclass(frozen=True)
class Series:
    """Per-second counts per upstream for one contender's run (one subplot)."""

    title: str
    lines: dict[str, tuple[list[float], list[float]]]  # upstream -> (second, count)
    errors: tuple[list[float], list[float]]  # (second, errors)


def timeseries(path: Path, panels: list[Series]) -> Path:
    n = len(panels)
    fig, axes = plt.subplots(
        n, 1, figsize=(9, 2.4 * n + 0.6), layout="constrained", squeeze=False
    )
    for ax, panel in zip(axes.flat, panels):
        for i, (up, (secs, counts)) in enumerate(panel.lines.items()):
            marker = (
                "o" if len(secs) < 30 else None
            )  # a smoke run has a handful of seconds
            ax.plot(
                secs,
                counts,
                color=_CYCLE[i % len(_CYCLE)],
                lw=1.3,
                label=up,
                marker=marker,
            )
        esecs, errs = panel.errors
        if esecs and any(errs):
            ax.plot(esecs, errs, color="#d62728", lw=1.3, ls="--", label="errors")
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel("requests/s")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", ncol=4)
    axes.flat[-1].set_xlabel("second of the run")
    return _save(fig, path)


def timeout_hist(
    path: Path, latencies: Mapping[str, Sequence[float]], timeouts: Mapping[str, float]
) -> Path:
    """One subplot per contender: histogram of 504 latencies, red line at the read timeout."""
    n = len(latencies)
    fig, axes = plt.subplots(
        n, 1, figsize=(9, 2.2 * n + 0.6), layout="constrained", squeeze=False
    )
    everything = [v for vals in latencies.values() for v in vals] + list(
        timeouts.values()
    )
    lo = min(everything) if everything else 0.0
    hi = max(everything) if everything else 1.0
    span = max(hi - lo, 1.0)
    edges = stats.linear_edges(lo - 0.05 * span, hi + 0.05 * span, 60)
    for i, (ax, (name, vals)) in enumerate(zip(axes.flat, latencies.items())):
        counts = stats.histogram(list(vals), edges)
        ax.stairs(counts, edges, fill=True, color=color(name, i), alpha=0.8)
        if name in timeouts:
            ax.axvline(
                timeouts[name], color="#d62728", lw=1.5, ls="--", label="read timeout"
            )
            ax.legend(fontsize=7, loc="upper left")
        ax.set_title(f"{name} (n={len(vals):,} responses with status 504)", fontsize=10)
        ax.set_ylabel("responses")
        ax.grid(True, alpha=0.3)
    axes.flat[-1].set_xlabel("latency ms")
    return _save(fig, path)


@dataclass(frozen=True)
class OverTime:
    """One S2 point's raw samples: send time (s from the first), latency µs."""

    title: str
    t_s: np.ndarray
    latency_us: np.ndarray


def windowed(
    t_s: np.ndarray, lat: np.ndarray, windows: int = 40
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(window mid time, p50, p99, max) over equal time windows (nearest-rank; empty skipped)."""
    if len(t_s) == 0:
        e = np.array([])
        return e, e, e, e
    lo, hi = float(t_s.min()), float(t_s.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, windows + 1)
    idx = np.clip(np.searchsorted(edges, t_s, side="right") - 1, 0, windows - 1)
    mids, p50, p99, mx = [], [], [], []
    for w in range(windows):
        vals = np.sort(lat[idx == w])
        if len(vals) == 0:
            continue
        n = len(vals)
        mids.append((edges[w] + edges[w + 1]) / 2)
        p50.append(vals[max(1, int(np.ceil(round(0.5 * n, 9)))) - 1])
        p99.append(vals[max(1, int(np.ceil(round(0.99 * n, 9)))) - 1])
        mx.append(vals[-1])
    return np.array(mids), np.array(p50), np.array(p99), np.array(mx)


def over_time(path: Path, title: str, panels: list[OverTime], ncols: int = 3) -> Path:
    """Latency over the measurement window, one panel per S2 point: p50, p99, max per window."""
    n = max(1, len(panels))
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(4.2 * ncols, 2.8 * nrows),
        layout="constrained",
        squeeze=False,
    )
    for ax, p in zip(axes.flat, panels):
        xs, p50, p99, mx = windowed(p.t_s, p.latency_us)
        ax.plot(xs, mx, color="#d62728", lw=0.8, alpha=0.6, label="max")
        ax.plot(xs, p99, color="#ff7f0e", lw=1.4, label="p99")
        ax.plot(xs, p50, color="#1f77b4", lw=1.4, label="p50")
        ax.set_yscale("log")
        ax.set_title(p.title, fontsize=9)
        ax.set_xlabel("s since first send", fontsize=8)
        ax.set_ylabel("latency µs (log)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if panels:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def latency_offered(
    path: Path,
    title: str,
    curves: dict[str, tuple[list[float], list[float]]],
    slo_us: float,
) -> Path:
    """p99 against offered rate on one absolute axis for every contender; the SLO line."""
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        ax.plot(xs, ys, marker="o", ms=3, lw=1.5, color=color(name, i), label=name)
    ax.axhline(slo_us, color="#d62728", ls=":", lw=1, label=f"p99 = {slo_us:,.0f} µs")
    ax.set_xlabel("offered requests/s (absolute)")
    ax.set_ylabel("p99 latency µs (log)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
