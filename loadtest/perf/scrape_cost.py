"""CPU cost of one stats scrape, per contender (docs/benchmarking.md "Scrape cost").

    .venv/bin/python -m loadtest.perf.scrape_cost [-n N] [-r REPS] [-w WARM] [-o DIR] [CONTENDER ...]

CONTENDER: c-proxy, py-asyncio, py-uvloop, nginx, haproxy (default: all that are
installed). Each one runs alone, started the way the lab starts it (loadtest/runner:
the same bench YAML for the twins, nginx and HAProxy rendered from it by
loadtest/runner/render.py) plus an `admin.listen`, where the stats endpoint lives:

    c-proxy, py-*   GET /metrics on admin.listen (Prometheus text)
    nginx           GET /stub_status on admin.listen
    haproxy         GET /stats;csv and GET /metrics (its built-in Prometheus exporter)

First WARM requests (default 2000) go through the proxy to two upstreams, so the
counters and histograms have content; then N (default 2000) scrapes on one keep-alive
connection, as Prometheus scrapes. The figure is the CPU time of the contender's whole
process tree (every thread, from /proc/PID/task/TID/schedstat, nanoseconds) across the
N scrapes divided by N, minus nothing; REPS (default 5) such batches per endpoint give
the median and the range. For scale, the same tree's CPU over an idle
stretch as long as the scrapes took is reported next to it (timers, health checks):
that part of the figure is not the scrape's. Response size is the body bytes of one
scrape. The upstream and this client are not measured.

Output: a Markdown table on stdout; with -o DIR also DIR/scrape_cost.json and
DIR/scrape_cost.md. `make perf-scrape` runs it into build/perf-scrape/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtest.runner import contenders, processes, tpconfig
from testkit import ports, proc

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ROOT / "upstreams" / "build" / "upstream"
KNOWN = ("c-proxy", "py-asyncio", "py-uvloop", "nginx", "haproxy")
ENDPOINTS = {
    "c-proxy": ["/metrics"],
    "py-asyncio": ["/metrics"],
    "py-uvloop": ["/metrics"],
    "nginx": ["/stub_status"],
    "haproxy": ["/stats;csv", "/metrics"],
}


@dataclass
class Row:
    contender: str
    endpoint: str
    scrapes: int
    cpu_us_per_scrape: float  # tree CPU over the scrapes / scrapes (median of the reps)
    cpu_us_min: float  # the cheapest rep
    cpu_us_max: float  # the dearest rep
    reps: int  # batches of `scrapes` scrapes
    idle_cpu_us_same_wall: float  # tree CPU over an idle stretch as long, / scrapes
    wall_us_per_scrape: float  # client-side wall clock per scrape (noisy; not a result)
    bytes_per_scrape: int  # body bytes of the last scrape
    processes: int  # processes in the tree
    threads: int  # threads in the tree


def tree_cpu_ns(root: int) -> tuple[int, int, int]:
    """(CPU ns of every thread of every process in root's tree, processes, threads)."""
    total, nthreads = 0, 0
    pids = proc.process_tree(root)
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
                nthreads += 1
            except (OSError, ValueError, IndexError):
                continue
    return total, len(pids), nthreads


def get(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path, headers={"Host": "scrape"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
    return body


def warm(port: int, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(n):
            get(conn, f"/bytes/{100 + i % 900}")
    finally:
        conn.close()


def measure(
    pid: int, port: int, path: str, n: int
) -> tuple[float, float, float, int, int, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        get(conn, path)  # connection up, first-use costs out of the way
        cpu0, _, _ = tree_cpu_ns(pid)
        t0 = time.monotonic()
        body = b""
        for _ in range(n):
            body = get(conn, path)
        wall = time.monotonic() - t0
        cpu1, nproc, nthr = tree_cpu_ns(pid)
    finally:
        conn.close()
    idle0, _, _ = tree_cpu_ns(pid)
    time.sleep(wall)
    idle1, _, _ = tree_cpu_ns(pid)
    return (
        (cpu1 - cpu0) / n / 1000,
        (idle1 - idle0) / n / 1000,
        wall / n * 1e6,
        len(body),
        nproc,
        nthr,
    )


def available(name: str) -> bool:
    if name in ("nginx", "haproxy"):
        return shutil.which(name) is not None
    return contenders.availability(name)[0]


def run_one(
    name: str, n: int, reps: int, warm_n: int, work: Path, pm: processes.ProcManager
) -> list[Row]:
    up_ports = [ports.free_port(), ports.free_port()]
    argv = [str(UPSTREAM), "--quiet"]
    for i, p in enumerate(up_ports):
        argv += ["--listen", f"127.0.0.1:{p}", "--name", f"u{i + 1}"]
    up = pm.start(f"upstream-{name}", argv, stdout=subprocess.PIPE)
    assert up.popen.stdout is not None
    if up.popen.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"upstream not ready: {up.log_tail()}")
    listen_port, admin_port = ports.free_port(), ports.free_port()
    doc = tpconfig.bench_config(
        f"127.0.0.1:{listen_port}",
        [(f"127.0.0.1:{p}", f"u{i + 1}") for i, p in enumerate(up_ports)],
    )
    doc["admin"] = {"listen": f"127.0.0.1:{admin_port}"}
    run = contenders.start(pm, name, doc, work / name, proxy_cpu=None)  # type: ignore[arg-type]
    rows = []
    try:
        if not processes.wait_port("127.0.0.1", admin_port, 10, run.proc.popen):  # type: ignore[union-attr]
            raise RuntimeError(f"{name}: admin.listen {admin_port} not listening")
        warm(listen_port, warm_n)
        for path in ENDPOINTS[name]:
            got = [measure(run.pid, admin_port, path, n) for _ in range(reps)]  # type: ignore[arg-type]
            cpus = sorted(g[0] for g in got)
            size, nproc, nthr = got[-1][3:]
            rows.append(
                Row(
                    name,
                    path,
                    n,
                    statistics.median(cpus),
                    cpus[0],
                    cpus[-1],
                    reps,
                    statistics.median(g[1] for g in got),
                    statistics.median(g[2] for g in got),
                    size,
                    nproc,
                    nthr,
                )
            )
    finally:
        contenders.stop(pm, run)
        pm.stop(up, grace=2)
    return rows


def table(rows: list[Row]) -> str:
    out = [
        (
            "| contender | endpoint | scrapes × reps | CPU µs / scrape, median [min, max] | "
            "idle CPU µs (same wall) | response bytes | processes / threads |"
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        out.append(
            f"| {r.contender} | `{r.endpoint}` | {r.scrapes} × {r.reps} | "
            f"{r.cpu_us_per_scrape:.1f} [{r.cpu_us_min:.1f}, {r.cpu_us_max:.1f}] | "
            f"{r.idle_cpu_us_same_wall:.1f} | {r.bytes_per_scrape} | {r.processes} / {r.threads} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scrape_cost",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("-n", type=int, default=2000, help="scrapes per batch")
    ap.add_argument("-r", type=int, default=5, help="batches per endpoint")
    ap.add_argument(
        "-w", type=int, default=2000, help="requests through the proxy first"
    )
    ap.add_argument("-o", type=Path, help="write scrape_cost.json and .md here")
    ap.add_argument("contenders", nargs="*", help=f"any of {', '.join(KNOWN)}")
    a = ap.parse_args(argv)
    names = a.contenders or [c for c in KNOWN if available(c)]
    bad = [c for c in names if c not in KNOWN]
    if bad or a.n < 1 or a.r < 1 or a.w < 0:
        ap.error(f"unknown contender(s) {bad}" if bad else "-n >= 1, -r >= 1, -w >= 0")
    missing = [c for c in names if not available(c)]
    if missing:
        print(
            f"scrape_cost: not available: {', '.join(missing)} (make build / make deps)",
            file=sys.stderr,
        )
        return 2
    if not UPSTREAM.exists():
        print(f"scrape_cost: {UPSTREAM} missing (make build)", file=sys.stderr)
        return 2
    processes.install_signal_handlers()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="twinproxy-scrape.") as tmp:
        work = Path(tmp)
        pm = processes.ProcManager(work / "logs")
        try:
            for name in names:
                rows += run_one(name, a.n, a.r, a.w, work, pm)
        finally:
            pm.stop_all()
    text = table(rows)
    sys.stdout.write(text)
    if a.o:
        a.o.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {
            "command": "python -m loadtest.perf.scrape_cost "
            + " ".join(argv or sys.argv[1:]),
            "versions": {
                k: v
                for k, v in contenders.versions().items()
                if k in ("c-proxy", "py-proxy", "nginx", "haproxy", "uvloop")
            },
            "rows": [asdict(r) for r in rows],
        }
        (a.o / "scrape_cost.json").write_text(json.dumps(meta, indent=2) + "\n")
        (a.o / "scrape_cost.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
