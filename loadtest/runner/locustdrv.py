"""locust driver: headless, local or distributed (--master + N --worker processes)."""

from __future__ import annotations

import csv
import glob
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import stats_util
from .processes import ProcManager

ROOT = Path(__file__).resolve().parents[2]
MIX = ROOT / "loadtest" / "scenarios" / "mix.py"
LOCUST = Path(sys.executable).parent / "locust"


def available() -> bool:
    return LOCUST.exists()


def commands(
    host: str, users: int, duration_s: int, workers: int, master_port: int
) -> tuple[list[str], list[list[str]]]:
    """(master or local command, worker commands)."""
    base = [
        str(LOCUST),
        "-f",
        str(MIX),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{max(1, duration_s)}s",
        "--host",
        host,
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "2",
    ]
    if workers <= 0:
        return base, []
    master = base + [
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(master_port),
        "--expect-workers",
        str(workers),
    ]
    worker = [
        str(LOCUST),
        "-f",
        str(MIX),
        "--worker",
        "--master-host",
        "127.0.0.1",
        "--master-port",
        str(master_port),
        "--loglevel",
        "WARNING",
    ]
    return master, [list(worker) for _ in range(workers)]


def run(
    pm: ProcManager,
    host: str,
    users: int,
    duration_s: int,
    workers: int,
    samples_prefix: Path,
    master_port: int,
    cpu: int | None,
) -> dict[str, Any]:
    """Run locust to completion (bounded) and return the merged sample rows' metrics.

    Writes nothing itself; the samples land in samples_prefix-<pid>.csv (see mix.py).
    """
    env = dict(os.environ, TWINPROXY_LOCUST_SAMPLES=str(samples_prefix))
    main_cmd, worker_cmds = commands(host, users, duration_s, workers, master_port)
    main = pm.start(
        "locust-master" if workers else "locust", main_cmd, cpu=cpu, env=env
    )
    ws = [
        pm.start(f"locust-worker{i}", c, cpu=cpu, env=env)
        for i, c in enumerate(worker_cmds)
    ]
    try:
        try:
            main.popen.wait(timeout=duration_s + 40)
        except subprocess.TimeoutExpired:
            raise RuntimeError("locust did not finish in time") from None
        for w in ws:
            try:
                w.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        rc = main.popen.returncode
        tail = main.log_tail()
    finally:
        for w in ws:
            pm.stop(w, grace=2)
        pm.stop(main, grace=2)
    return {"returncode": rc, "log_tail": tail}


def merge(samples_prefix: Path, out_csv: Path) -> list[tuple[int, str, int, int]]:
    """Merge every process's sample file into out_csv (header ts_us,name,latency_us,status),
    sorted by time; deletes the parts."""
    rows: list[tuple[int, str, int, int]] = []
    for part in sorted(glob.glob(f"{samples_prefix}-*.csv")):
        with open(part, newline="", encoding="ascii") as f:
            for r in csv.reader(f):
                if len(r) == 4:
                    rows.append((int(r[0]), r[1], int(r[2]), int(r[3])))
        os.unlink(part)
    rows.sort()
    with open(out_csv, "w", newline="", encoding="ascii") as f:
        w = csv.writer(f)
        w.writerow(["ts_us", "name", "latency_us", "status"])
        w.writerows(rows)
    return rows


def connects(samples_prefix: Path) -> int | None:
    """Sum the per-process connection counts mix.py wrote (deletes the parts); None when
    no process wrote one."""
    total, seen = 0, False
    for part in sorted(glob.glob(f"{samples_prefix}-*.conns")):
        try:
            with open(part, encoding="ascii") as f:
                total += int(f.read().strip() or 0)
            seen = True
        except (OSError, ValueError):
            pass
        os.unlink(part)
    return total if seen else None


def metrics(rows: list[tuple[int, str, int, int]], duration_s: float) -> dict[str, Any]:
    lat = [r[2] for r in rows]
    failures = sum(1 for r in rows if r[3] == 0 or (r[3] >= 400 and r[3] != 404))
    if rows:
        span = (rows[-1][0] - rows[0][0]) / 1e6
        span = span if span > 0.5 else duration_s
    else:
        span = duration_s
    return {
        "requests": len(rows),
        "failures": failures,
        "rps": len(rows) / span if span else 0.0,
        "percentiles_us": stats_util.percentiles_us(lat),
        "mean_us": (sum(lat) / len(lat)) if lat else None,
    }
