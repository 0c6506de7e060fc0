"""The bench runner: every contender through every scenario, interleaved, into one folder.

    python -m loadtest.bench --profile full|quick|smoke [--force] [--out DIR]
                             [--only S2,S8] [--contenders c-proxy,nginx]

Writes results/<UTC time>-<git sha>/ (or --out DIR) as loadtest/SCHEMA.md fixes, then runs
``python -m loadtest.report DIR``. Exit status: 0 when the harness worked (even if some
measurements are invalid: they are recorded and shown, never hidden); 1 when the harness
itself broke (a runner bug, a missing generator, the report builder failing); 2 on bad
arguments or a missing upstream server; 3 when preflight found the machine busy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .runner import contenders, pinning, plan, preflight, processes, scenarios
from .runner.idleconns import raise_nofile

ROOT = Path(__file__).resolve().parents[1]


def git_sha() -> str:
    try:
        p = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return p.stdout.strip() or "nogit"
    except (OSError, subprocess.TimeoutExpired):
        return "nogit"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def utc(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts or time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--profile", choices=("full", "quick", "smoke"), default="full")
    ap.add_argument(
        "--force",
        action="store_true",
        help="run even if preflight finds the machine busy",
    )
    ap.add_argument(
        "--out", help="results folder (default results/<UTC time>-<git sha>)"
    )
    ap.add_argument("--only", help="comma-separated scenarios, e.g. S2,S8")
    ap.add_argument(
        "--contenders", help="comma-separated contenders (py-proxy = both loops)"
    )
    ap.add_argument(
        "--no-report", action="store_true", help="do not run loadtest.report at the end"
    )
    ap.add_argument(
        "--seed",
        type=int,
        help="seed of the contenders' shuffled order within each rep (default: from the "
        "clock; recorded in env.json as order_seed)",
    )
    ap.add_argument(
        "--fixed-order",
        action="store_true",
        help="the same contender order in every rep (A B C A B C) instead of a shuffled one",
    )
    ap.add_argument("--loadavg-max", type=float, default=preflight.LOADAVG_MAX)
    ap.add_argument(
        "--proc-cpu-max",
        type=float,
        default=preflight.PROC_CPU_MAX_PCT,
        help="percent of one CPU a foreign process may use",
    )
    return ap.parse_args(argv)


def report_available() -> bool:
    pkg = ROOT / "loadtest" / "report"
    return (pkg / "__main__.py").exists()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cs = contenders.select(args.contenders)
        only = (
            [s.strip().upper() for s in args.only.split(",")]
            if args.only
            else list(plan.SCENARIOS)
        )
        bad = [s for s in only if s not in plan.SCENARIOS]
        if bad:
            raise ValueError(
                f"unknown scenario(s) {bad} (known: {', '.join(plan.SCENARIOS)})"
            )
        prof = plan.load_profile(args.profile)
    except ValueError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    ok, why = scenarios.upstream_available()
    if not ok:
        print(f"bench: {why}", file=sys.stderr)
        return 2

    sha = git_sha()
    started = time.time()
    out = (
        Path(args.out)
        if args.out
        else ROOT
        / "results"
        / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started))}-{sha}"
    )
    # --out reused (CI: build/bench-smoke): start from an empty folder, never mix runs;
    # but only ever delete what looks like an earlier results folder
    looks_like_results = (out / "env.json").exists() or (out / "runs.jsonl").exists()
    if out.exists() and any(out.iterdir()) and not looks_like_results:
        print(
            f"bench: --out {out} is not empty and not a results folder; refusing to "
            "overwrite it",
            file=sys.stderr,
        )
        return 2

    print(
        f"bench: preflight (sampling /proc for {preflight.SAMPLE_S:.0f}s) ...",
        file=sys.stderr,
    )
    pf = preflight.check(args.loadavg_max, args.proc_cpu_max)
    for r in pf.reasons():
        print(f"bench: preflight: {r}", file=sys.stderr)
    if pf.busy and not args.force:
        print(
            "bench: the machine is busy; refusing to benchmark (use --force to override, "
            "env.json and the report will say so)",
            file=sys.stderr,
        )
        return 3
    if not pf.busy:
        print(f"bench: preflight ok (load average {pf.loadavg:.2f})", file=sys.stderr)

    if out.exists():
        shutil.rmtree(out)
    (out / "raw").mkdir(parents=True, exist_ok=True)

    pin = pinning.plan()
    pinning.pin_self(int(pin["load_cpu"]))
    nofile = raise_nofile()
    avail = {c: contenders.availability(c) for c in cs}
    order_seed = (
        None
        if args.fixed_order
        else (
            args.seed if args.seed is not None else int(time.time() * 1000) % 1_000_000
        )
    )
    env: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "python": platform.python_version(),
        "versions": contenders.versions(),
        "pinning": pin,
        "profile": args.profile,
        "forced": bool(args.force),
        "forced_while_busy": bool(args.force and pf.busy),
        "preflight": pf.as_json(),
        "git_sha": sha,
        "started": utc(started),
        "finished": None,
        "contenders": {c: {"available": a, "reason": r} for c, (a, r) in avail.items()},
        "scenarios": only,
        "order_seed": order_seed,
        "nofile_limit": nofile,
        "notes": list(pin["notes"]),
    }
    write_env(out, env)
    (out / "runs.jsonl").touch()
    for c, (a, r) in avail.items():
        if not a:
            print(
                f"bench: contender {c} unavailable: {r} (recorded as invalid)",
                file=sys.stderr,
            )

    work = Path(tempfile.mkdtemp(prefix="twinproxy-bench-"))
    pm = processes.ProcManager(work / "logs")
    processes.install_signal_handlers()
    ctx = scenarios.Ctx(pm=pm, out=out, work=work, prof=prof, pin=pin, avail=avail)
    order = plan.order(only, cs, int(prof["reps"]), prof, seed=order_seed)
    units = [plan.Unit(sc, rep, c, plan.estimate(sc, prof)) for sc, rep, c in order]
    # the ETA leaves out the scrape cost step after the scenarios (plan.estimate_scrape)
    progress = plan.Progress(units)
    ctx.progress = progress
    print(
        f"bench: profile {args.profile}, {len(units)} blocks, estimated {plan.fmt_s(progress.total_est)}, "
        f"proxy on CPU {pin['proxy_cpu']}, load on CPU {pin['load_cpu']} -> {out}",
        file=sys.stderr,
    )
    interrupted = False
    try:
        prev_sc = None
        for u in units:
            if prev_sc is not None and u.scenario != prev_sc:
                scenarios.finish(ctx, prev_sc)
            prev_sc = u.scenario
            progress.begin(u)
            scenarios.run_block(ctx, u.scenario, u.contender, u.rep)
            progress.end(u)
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted", file=sys.stderr)
    except scenarios.HarnessError as e:
        ctx.harness_errors.append(str(e))
        print(f"bench: harness error: {e}", file=sys.stderr)
    finally:
        scenarios.finish(ctx)
        pm.stop_all()
        env["finished"] = utc()
        env["duration_s"] = round(time.time() - started, 1)
        env["records"] = ctx.records
        env["invalid_records"] = ctx.invalid
        env["harness_errors"] = ctx.harness_errors
        env["interrupted"] = interrupted
        write_env(out, env)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"bench: {ctx.records} measurements ({ctx.invalid} invalid) in {plan.fmt_s(time.time() - started)} -> {out}",
        file=sys.stderr,
    )
    rc = 0
    if ctx.generator_missing:
        print(
            f"bench: generator(s) missing: {', '.join(sorted(ctx.generator_missing))}",
            file=sys.stderr,
        )
        rc = 1
    if ctx.harness_errors:
        print(f"bench: {len(ctx.harness_errors)} harness error(s):", file=sys.stderr)
        for e in ctx.harness_errors:
            print("  " + e.strip().splitlines()[-1], file=sys.stderr)
        rc = 1
    if interrupted:
        return 130
    if not args.only and not scrape_cost(prof, cs, out):
        rc = 1
    if not args.no_report:
        if report_available():
            print(f"bench: python -m loadtest.report {out}", file=sys.stderr)
            p = subprocess.run(
                [sys.executable, "-m", "loadtest.report", str(out)],
                check=False,
                cwd=ROOT,
                timeout=600,
            )
            if p.returncode != 0:
                print(
                    f"bench: the report builder failed (exit {p.returncode})",
                    file=sys.stderr,
                )
                rc = 1
        else:
            print(
                "bench: loadtest/report has no __main__.py yet; no report written",
                file=sys.stderr,
            )
    return rc


def scrape_cost(prof: dict[str, Any], cs: list[str], out: Path) -> bool:
    """The stats scrape cost of every proxy contender into the run folder (its report
    section, docs/benchmarking.md "Scrape cost"), with the profile's `scrape` sizes, after
    the scenarios: a whole run, not one narrowed with --only. False if it failed."""
    sc = prof.get("scrape") or {}
    names = [c for c in cs if c != "direct"]
    if not sc or not names:
        return True
    cmd = [
        sys.executable, "-m", "loadtest.perf.scrape_cost",
        "-n", str(sc["n"]), "-r", str(sc["reps"]), "-w", str(sc["warm"]),
        "-o", str(out), *names,
    ]  # fmt: skip
    print(f"bench: {' '.join(cmd[1:])}", file=sys.stderr)
    p = subprocess.run(
        cmd, check=False, cwd=ROOT, timeout=600, stdout=subprocess.DEVNULL
    )
    if p.returncode != 0:
        print(f"bench: scrape cost failed (exit {p.returncode})", file=sys.stderr)
    return p.returncode == 0


def write_env(out: Path, env: dict[str, Any]) -> None:
    tmp = out / "env.json.tmp"
    tmp.write_text(json.dumps(env, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "env.json")


if __name__ == "__main__":
    sys.exit(main())
