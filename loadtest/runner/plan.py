"""Profiles, the interleaved run order, and live progress (scenario, contender, rep, ETA)."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

PROFILES = Path(__file__).resolve().parents[1] / "scenarios" / "profiles.yaml"
SCENARIOS = ("S0", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11")

# Which contenders take part in each scenario. direct has no proxy process, so it cannot
# take part where the proxy's own CPU, memory, balancing or timeouts are measured.
WITH_DIRECT = {"S0", "S2", "S3", "S5", "S6", "S10"}
DIRECT_ONLY = {"S0"}


def load_profile(name: str, path: Path = PROFILES) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if name not in doc:
        raise ValueError(f"unknown profile {name!r} (known: {', '.join(doc)})")
    return dict(doc[name])


def participants(scenario: str, contenders: Iterable[str]) -> list[str]:
    cs = list(contenders)
    if scenario in DIRECT_ONLY:
        return [c for c in cs if c == "direct"]
    if scenario in WITH_DIRECT:
        return cs
    return [c for c in cs if c != "direct"]


@dataclass(frozen=True)
class Unit:
    """One contender's block of one repetition of one scenario."""

    scenario: str
    rep: int
    contender: str
    est_s: float


def scenario_reps(prof: dict[str, Any], sc: str) -> int:
    """Repetitions of one scenario: its own ``reps`` key if the profile gives one, else
    the profile's ``reps``."""
    own = (prof.get(sc) or {}).get("reps")
    return int(own if own is not None else prof["reps"])


def order(
    scenarios: Iterable[str],
    contenders: Iterable[str],
    reps: int,
    prof: dict[str, Any] | None = None,
    seed: int | None = None,
) -> list[tuple[str, int, str]]:
    """Interleaved order: for each scenario, rep 0 of every contender, then rep 1 ...
    (A B C A B C), never A A A B B B. With ``prof``, a scenario's own ``reps`` wins.
    With ``seed``, the contenders' order within each rep is shuffled (B C A, C A B ...),
    reproducibly from (seed, scenario, rep), so no contender always runs first after a
    scenario's set-up or right after the same neighbour."""
    cs = list(contenders)
    out = []
    for sc in scenarios:
        n = scenario_reps(prof, sc) if prof is not None else reps
        for rep in range(n):
            these = participants(sc, cs)
            if seed is not None:
                random.Random(f"{seed}:{sc}:{rep}").shuffle(these)
            for c in these:
                out.append((sc, rep, c))
    return out


START_S = 0.3  # contender start + stop, rough (calibrated on nginx/HAProxy)


def estimate(sc: str, prof: dict[str, Any]) -> float:
    """Rough seconds one contender block of scenario sc takes (for the ETA only)."""
    p = prof.get(sc, {})
    w = float(prof.get("warmup_s", 0)) or 0.1
    d = float(p.get("duration_s", 1))
    if sc in ("S0", "S1"):
        return START_S + w + len(p["connections"]) * (d + 0.1)
    if sc == "S2":
        n = len(
            p.get("rates") or p["fractions"]
        )  # every point (the ladder may stop early)
        return START_S + w + n * (d + float(p.get("warmup_s", 0)) + 0.2)
    if sc == "S3":
        return START_S + w + d + float(p.get("warmup_s", 0)) + 0.2
    if sc == "S4":
        n = len(p["rates"]) + (0 if 0 in p["rates"] else 1)  # + the idle point
        n += len(p.get("fractions") or [])  # + the contender's own capacity fractions
        passes = 1 if p.get("strace_rate") is not None else len(p["rates"])
        return START_S + w + n * (d + 0.6) + passes * (float(p["strace_s"]) + 0.6)
    if sc == "S5":
        return START_S + w + len(p["sizes"]) * (d + 0.1)
    if sc == "S6":
        return START_S + w + len(p["connections"]) * (d + 0.1)
    if sc == "S7":
        return START_S + w + sum(p["connections"]) / 5000 + float(p["hold_s"]) + 0.1
    if sc == "S8":
        return 5 * START_S + 4 * d + float(p["killed_duration_s"])
    if sc == "S9":
        return (
            START_S
            + w
            + float(p["read_timeout_ms"])
            / 1000
            * -(-int(p["requests"]) // int(p["concurrency"]))
            + 0.1
        )
    if sc == "S10":
        return START_S + d + (0.3 if int(p.get("workers", 0)) == 0 else 4.0)
    if sc == "S11":
        return START_S + d + 0.2
    return 1.0


def estimate_scrape(prof: dict[str, Any], contenders: Iterable[str]) -> float:
    """Rough seconds of the stats scrape cost step after the scenarios (bench.scrape_cost):
    per proxy contender a start, the warm-up requests and reps x n scrapes (HAProxy has
    two endpoints) at a few thousand per second."""
    sc = prof.get("scrape") or {}
    if not sc:
        return 0.0
    total = 0.0
    for c in contenders:
        if c == "direct":
            continue
        endpoints = 2 if c == "haproxy" else 1
        total += (
            1.5 + (int(sc["warm"]) + endpoints * int(sc["reps"]) * int(sc["n"])) / 3000
        )
    return total


def fmt_s(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 60}m{s % 60:02d}s"


class Progress:
    """One stderr line per measurement: [n/N] scenario contender rep params elapsed ETA."""

    def __init__(self, units: list[Unit], out: TextIO = sys.stderr) -> None:
        self.units = units
        self.total_est = sum(u.est_s for u in units) or 1.0
        self.done_est = 0.0
        self.i = 0
        self.t0 = time.monotonic()
        self.out = out
        self.reps = 1 + max((u.rep for u in units), default=0)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def eta(self) -> float:
        el = self.elapsed()
        remaining = self.total_est - self.done_est
        if self.done_est <= 0:
            return remaining
        return remaining * (el / self.done_est)

    def begin(self, unit: Unit) -> None:
        self.i += 1
        self.unit = unit

    def note(self, what: str) -> None:
        u = self.unit
        print(
            f"[{self.i:3d}/{len(self.units)}] {u.scenario:<3} {u.contender:<10} rep {u.rep + 1}/{self.reps} "
            f"{what:<34} elapsed {fmt_s(self.elapsed())} ETA {fmt_s(self.eta())}",
            file=self.out,
            flush=True,
        )

    def end(self, unit: Unit) -> None:
        self.done_est += unit.est_s
