"""Read one results folder (loadtest/SCHEMA.md): env.json, runs.jsonl, raw/ files.

Tolerant by design: a smoke run or a run cut short may lack scenarios, contenders,
files or metrics; every accessor returns None / empty rather than raising, and the
report says "not measured in this run".
"""

from __future__ import annotations

import csv
import json
import lzma
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from loadtest import stats

# The order contenders appear in every table and plot; unknown names follow, sorted.
CONTENDERS = ("direct", "c-proxy", "py-asyncio", "py-uvloop", "nginx", "haproxy")


@dataclass(frozen=True)
class Run:
    """One runs.jsonl record."""

    scenario: str
    contender: str
    rep: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    valid: bool
    invalid_reason: str | None
    files: dict[str, str]
    started: str | None
    duration_s: float | None
    line: int  # 1-based line in runs.jsonl, to find the record again

    def param(self, name: str) -> Any:
        return self.params.get(name)

    def metric(self, *path: str) -> float | None:
        """A numeric metric, following nested keys; None when absent or not a number."""
        node: Any = self.metrics
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            return None
        value = float(node)
        return None if math.isnan(value) else value

    def reason(self) -> str:
        """The invalid_reason on one line (a table cell or a list item must not break)."""
        return " ".join((self.invalid_reason or "").split()) or "no reason given"


@dataclass
class Results:
    """A whole results folder."""

    root: Path
    env: dict[str, Any]
    runs: list[Run]
    problems: list[str] = field(
        default_factory=list
    )  # unreadable lines or files, shown

    def select(
        self, scenario: str, contender: str | None = None, **params: Any
    ) -> list[Run]:
        """Runs of a scenario (and contender, and param values), in rep order."""
        out = [
            r
            for r in self.runs
            if r.scenario == scenario
            and (contender is None or r.contender == contender)
            and all(r.params.get(k) == v for k, v in params.items())
        ]
        return sorted(out, key=lambda r: (r.rep, r.line))

    def contenders(self, scenario: str | Iterable[str]) -> list[str]:
        """Contenders present in the scenario(s), in the report's order."""
        names = {scenario} if isinstance(scenario, str) else set(scenario)
        return order_contenders({r.contender for r in self.runs if r.scenario in names})

    def param_values(self, scenario: str, name: str) -> list[Any]:
        """Distinct values of one param in a scenario, sorted (numbers numerically)."""
        seen = {r.params.get(name) for r in self.runs if r.scenario == scenario}
        seen.discard(None)
        return sorted(seen, key=_sort_key)

    def raw_path(self, run: Run, kind: str) -> Path | None:
        name = run.files.get(kind)
        if not name:
            return None
        path = self.root / name
        if path.is_file():
            return path
        # an archived run keeps its raw CSVs xz-compressed (results/reference/README.md)
        packed = path.with_name(path.name + ".xz")
        return packed if packed.is_file() else None

    def read_csv(self, run: Run, kind: str) -> list[dict[str, str]] | None:
        """Rows of a raw CSV named in run.files[kind]; None when missing or unreadable."""
        path = self.raw_path(run, kind)
        if path is None:
            return None
        try:
            with _open_text(path, newline="") as fh:
                return list(csv.DictReader(fh))
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            self.problems.append(f"{path.relative_to(self.root)}: {exc}")
            return None

    def read_columns(
        self, run: Run, kind: str, columns: tuple[str, ...]
    ) -> dict[str, np.ndarray] | None:
        """Numeric columns of a raw CSV named in run.files[kind]; None when missing/unreadable.

        Big sample files go through numpy's C parser; a file it rejects (a torn last line,
        a non-number) is read again line by line, skipping the bad rows. A header line is
        expected; without one, columns are taken in the caller's order (SCHEMA.md's).
        """
        path = self.raw_path(run, kind)
        if path is None:
            return None
        rel = path.relative_to(self.root)
        try:
            with _open_text(path) as fh:
                first = fh.readline().strip().split(",")
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(f"{rel}: {exc}")
            return None
        has_header = _to_float(first[0]) is None
        header = [h.strip() for h in first] if has_header else list(columns)
        missing = [c for c in columns if c not in header]
        if missing:
            self.problems.append(f"{rel}: no column {', '.join(missing)}")
            return None
        idx = [header.index(c) for c in columns]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore"
                )  # an empty file warns; we return empty arrays
                with _open_text(path) as fh:
                    data = np.loadtxt(
                        fh,
                        delimiter=",",
                        skiprows=1 if has_header else 0,
                        usecols=idx,
                        ndmin=2,
                        dtype=float,
                    )
            return {c: data[:, i] for i, c in enumerate(columns)}
        except (ValueError, IndexError):
            pass
        except OSError as exc:
            self.problems.append(f"{rel}: {exc}")
            return None
        lists: list[list[float]] = [[] for _ in columns]
        bad = 0
        with _open_text(path, errors="replace") as fh:
            if has_header:
                fh.readline()
            for line in fh:
                parts = line.split(",")
                try:
                    vals = [float(parts[i]) for i in idx]
                except (ValueError, IndexError):
                    bad += 1
                    continue
                for target, v in zip(lists, vals):
                    target.append(v)
        if bad:
            self.problems.append(f"{rel}: {bad} unreadable row(s) skipped")
        return {c: np.asarray(v, dtype=float) for c, v in zip(columns, lists)}


def _sort_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _to_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def order_contenders(names: Iterable[str]) -> list[str]:
    known = [c for c in CONTENDERS if c in names]
    return known + sorted(n for n in names if n not in CONTENDERS)


def load(root: Path) -> Results:
    """Read env.json and runs.jsonl; a missing env.json gives an empty env (reported)."""
    problems: list[str] = []
    env: dict[str, Any] = {}
    env_path = root / "env.json"
    try:
        loaded = json.loads(env_path.read_text())
        if isinstance(loaded, dict):
            env = loaded
        else:
            problems.append("env.json: not a JSON object")
    except FileNotFoundError:
        problems.append("env.json: missing")
    except (OSError, json.JSONDecodeError) as exc:
        problems.append(f"env.json: {exc}")

    runs: list[Run] = []
    runs_path = root / "runs.jsonl"
    try:
        lines = runs_path.read_text().splitlines()
    except FileNotFoundError:
        problems.append("runs.jsonl: missing")
        lines = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
            runs.append(_run_from(record, number))
        except (json.JSONDecodeError, TypeError, ValueError, KeyError) as exc:
            # A run killed mid-write leaves a torn last line: say so, keep the rest.
            problems.append(f"runs.jsonl line {number}: {exc}")
    return Results(root=root, env=env, runs=runs, problems=problems)


def _run_from(record: Any, line: int) -> Run:
    if not isinstance(record, dict):
        raise TypeError("record is not a JSON object")
    valid = record.get("valid", True)
    reason = record.get("invalid_reason")
    duration = record.get("duration_s")
    return Run(
        scenario=str(record["scenario"]),
        contender=str(record["contender"]),
        rep=int(record.get("rep", 0)),
        params=dict(record.get("params") or {}),
        metrics=dict(record.get("metrics") or {}),
        valid=bool(valid),
        invalid_reason=None if reason is None else str(reason),
        files={str(k): str(v) for k, v in (record.get("files") or {}).items()},
        started=record.get("started"),
        duration_s=float(duration) if isinstance(duration, (int, float)) else None,
        line=line,
    )


@dataclass(frozen=True)
class Cell:
    """One figure for one contender: summary over valid reps, plus what was excluded."""

    values: tuple[float, ...]  # valid reps' values, rep order
    summary: stats.Summary | None  # None when no valid rep had the figure
    invalid: tuple[str, ...]  # reasons of the excluded (invalid) reps
    total: int  # reps recorded, valid or not
    reps: tuple[
        int, ...
    ] = ()  # rep number of each value (pairs reps across contenders)
    # capacity figures only (cell(..., lower_bounds=True)): the value of each rep excluded
    # as LOAD-BOUND, and its rep number. The load side saturated first, so the proxy
    # sustained at least that much: a lower bound, never a measurement.
    bounds: tuple[float, ...] = ()
    bound_reps: tuple[int, ...] = ()

    def by_rep(self) -> dict[int, float]:
        return dict(zip(self.reps, self.values))

    def with_bounds(self) -> Cell:
        """Valid values and lower bounds together, by rep (for a ratio that is then a
        bound itself); self when there are no bounds."""
        if not self.bounds:
            return self
        merged = sorted(
            list(zip(self.reps, self.values)) + list(zip(self.bound_reps, self.bounds))
        )
        vals = tuple(v for _, v in merged)
        return Cell(
            vals,
            stats.summarize(list(vals)),
            (),
            self.total,
            tuple(r for r, _ in merged),
        )


LOAD_BOUND = "LOAD-BOUND"


def load_bound_only(reason: str) -> bool:
    """A run invalid for being LOAD-BOUND and nothing else (its capacity is a bound)."""
    return reason.startswith(LOAD_BOUND) and ";" not in reason


def cell(
    runs: Iterable[Run],
    value: Callable[[Run], float | None],
    lower_bounds: bool = False,
) -> Cell:
    """Summarize value(run) over the valid runs; invalid ones only counted and explained.
    lower_bounds (capacity figures): keep the value of a run invalid only for being
    LOAD-BOUND as a lower bound."""
    values: list[float] = []
    reps: list[int] = []
    invalid: list[str] = []
    bounds: list[float] = []
    bound_reps: list[int] = []
    total = 0
    for run in runs:
        total += 1
        if not run.valid:
            invalid.append(run.reason())
            if lower_bounds and load_bound_only(run.reason()):
                b = value(run)
                if b is not None:
                    bounds.append(b)
                    bound_reps.append(run.rep)
            continue
        v = value(run)
        if v is not None:
            values.append(v)
            reps.append(run.rep)
    summary = stats.summarize(values) if values else None
    return Cell(
        tuple(values),
        summary,
        tuple(invalid),
        total,
        tuple(reps),
        tuple(bounds),
        tuple(bound_reps),
    )


def _open_text(path: Path, **kw: Any) -> IO[str]:
    """A raw file for reading as text; `.xz` files are decompressed on the fly."""
    if path.suffix == ".xz":
        return lzma.open(path, "rt", **kw)
    return path.open(**kw)
