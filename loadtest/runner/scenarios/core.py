"""What every scenario module shares: the run context, a block of measurements, contender
start-up and warm-up, the wrk and olgen measurement helpers (one scenario per module
beside this one; the package's __init__ finds them)."""

from __future__ import annotations

import http.client
import json
import os
import select
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from testkit import ports

from .. import contenders, hostcpu, olgen, processes, tpconfig, wrk
from ..contenders import Running, StartError
from ..plan import Progress
from ..processes import ProcManager

ROOT = Path(__file__).resolve().parents[3]


UPSTREAM = ROOT / "upstreams" / "build" / "upstream"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def short(text: str, head: int = 110, tail: int = 90) -> str:
    """One line for the progress display: whitespace collapsed, head ... tail."""
    one = " ".join(text.split())
    return one if len(one) <= head + tail + 5 else f"{one[:head]} ... {one[-tail:]}"


def upstream_cmd() -> list[str]:
    """The upstream server command (TWINPROXY_UPSTREAM overrides it, for lab development)."""
    override = os.environ.get("TWINPROXY_UPSTREAM")
    return shlex.split(override) if override else [str(UPSTREAM)]


def upstream_available() -> tuple[bool, str | None]:
    if os.environ.get("TWINPROXY_UPSTREAM"):
        return True, None
    return (
        (True, None)
        if UPSTREAM.exists()
        else (
            False,
            f"upstream binary missing: {UPSTREAM.relative_to(ROOT)} (make build)",
        )
    )


class HarnessError(RuntimeError):
    """The runner itself is broken (not a measurement that came out invalid)."""


@dataclass
class Ctx:
    pm: ProcManager
    out: Path
    work: Path
    prof: dict[str, Any]
    pin: dict[str, Any]
    progress: Progress | None = None
    avail: dict[str, tuple[bool, str | None]] = field(default_factory=dict)
    upstreams: list[tuple[str, str]] = field(
        default_factory=list
    )  # shared (address, name)
    upstream_proc: processes.Proc | None = None
    s8: dict[str, Any] = field(default_factory=dict)  # S8's own upstream processes
    capacity: dict[tuple[str, int], list[float]] = field(
        default_factory=dict
    )  # (contender, conns) -> rps
    harness_errors: list[str] = field(default_factory=list)
    generator_missing: set[str] = field(default_factory=set)
    records: int = 0
    invalid: int = 0

    @property
    def raw(self) -> Path:
        return self.out / "raw"

    @property
    def proxy_cpu(self) -> int:
        return int(self.pin["proxy_cpu"])

    @property
    def load_cpu(self) -> int:
        return int(self.pin["load_cpu"])

    def note(self, what: str) -> None:
        if self.progress is not None:
            self.progress.note(what)

    def record(
        self,
        scenario: str,
        contender: str,
        rep: int,
        params: dict[str, Any],
        metrics: dict[str, Any],
        reason: str | None,
        files: dict[str, str] | None = None,
        started: str | None = None,
        duration_s: float = 0.0,
    ) -> dict[str, Any]:
        rec = {
            "scenario": scenario,
            "contender": contender,
            "rep": rep,
            "params": params,
            "metrics": metrics,
            "valid": reason is None,
            "invalid_reason": reason,
            "files": files or {},
            "started": started or now_iso(),
            "duration_s": round(duration_s, 3),
        }
        with open(self.out / "runs.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=False) + "\n")
        self.records += 1
        if reason is not None:
            self.invalid += 1
            self.note(f"INVALID: {short(reason)}")
        return rec


def start_upstream(
    ctx: Ctx, name: str, listeners: list[tuple[int, str]], timeout: float = 10.0
) -> processes.Proc:
    """Start one upstream process with the given (port, name) listeners; waits for 'ready'."""
    cmd = upstream_cmd()
    for port, n in listeners:
        cmd += ["--listen", f"127.0.0.1:{port}", "--name", n]
    cmd.append("--quiet")
    proc = ctx.pm.start(name, cmd, cpu=ctx.load_cpu, stdout=subprocess.PIPE)
    assert proc.popen.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.popen.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            if b"ready" in buf:
                # keep draining stdout in the background is unnecessary: --quiet
                return proc
        if not proc.alive():
            break
    tail = proc.log_tail()
    ctx.pm.stop(proc, grace=1)
    raise HarnessError(
        f"upstream {name} not ready within {timeout:.0f}s: {buf!r} {tail}"
    )


def ensure_shared_upstreams(ctx: Ctx) -> None:
    if ctx.upstream_proc is not None and ctx.upstream_proc.alive():
        return
    if not ctx.upstreams:
        ctx.upstreams = [
            (f"127.0.0.1:{ports.free_port()}", f"u{i + 1}") for i in range(2)
        ]
    listeners = [(tpconfig.split_hostport(a)[1], n) for a, n in ctx.upstreams]
    ctx.upstream_proc = start_upstream(ctx, "upstream", listeners)


def base_doc(ctx: Ctx, **kw: Any) -> dict[str, Any]:
    ensure_shared_upstreams(ctx)
    listen = f"127.0.0.1:{ports.free_port()}"
    ups = kw.pop("upstreams", ctx.upstreams)
    return tpconfig.bench_config(listen, list(ups), **kw)


def warmup(ctx: Ctx, run: Running, path: str = "/bytes/0") -> None:
    """Warm the contender (and its upstream pool): wrk for warmup_s, or 200 requests."""
    w = float(ctx.prof.get("warmup_s", 0))
    if w >= 1:
        ctx.note(f"warm-up {int(w)}s")
        try:
            wrk.run(run.url + path, 64, int(w))
        except (RuntimeError, subprocess.TimeoutExpired, ValueError):
            pass
        return
    try:
        c = http.client.HTTPConnection(run.host, run.port, timeout=2)
        for _ in range(200):
            c.request("GET", path)
            c.getresponse().read()
        c.close()
    except (OSError, http.client.HTTPException):
        pass


def crash_reason(run: Running) -> str | None:
    if run.alive():
        return None
    return f"contender crashed ({run.exit_info()[:300]})"


def join(*reasons: str | None) -> str | None:
    rs = [r for r in reasons if r]
    return "; ".join(rs) if rs else None


def raw_name(*parts: Any) -> str:
    return "-".join(str(p) for p in parts)


LOAD_BOUND_RECORDED_ONLY = {"S10"}


class Block:
    """One contender's block: records every param exactly once, even on failure."""

    def __init__(
        self,
        ctx: Ctx,
        scenario: str,
        contender: str,
        rep: int,
        params: list[dict[str, Any]],
    ):
        self.ctx, self.sc, self.c, self.rep = ctx, scenario, contender, rep
        self.params = params
        self.done: set[int] = set()

    def measure(
        self,
        i: int,
        fn: Callable[[], tuple[dict[str, Any], str | None, dict[str, str]]],
        run: Running | None,
        annotate: Callable[
            [dict[str, Any], str | None], tuple[dict[str, Any], str | None]
        ]
        | None = None,
    ) -> dict[str, Any]:
        p = self.params[i]
        self.ctx.note(
            " ".join(f"{k}={v}" for k, v in p.items() if k not in ("path",))[:34]
        )
        started, t0 = now_iso(), time.monotonic()
        hb = hostcpu.host_sample()
        try:
            metrics, reason, files = fn()
        except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as e:
            metrics, reason, files = {}, f"measurement failed: {e}"[:500], {}
        host = hostcpu.host_delta(
            hb,
            hostcpu.host_sample(),
            self.ctx.proxy_cpu,
            self.ctx.load_cpu,
            float(self.ctx.prof.get("load_bound_pct", hostcpu.LOAD_BOUND_PCT)),
        )
        metrics = {**metrics, "host": host}
        # direct has no proxy: its figure is the load side's by definition (the ceiling);
        # an idle point (rate 0) puts no load on the load side
        if self.c != "direct" and p.get("rate", 1) != 0:
            metrics["load_bound"] = host["load_bound"]
            # S10 is closed-loop locust: it saturates the load core by design and is read
            # against locust's ceiling (direct), so there it is recorded, not gated
            if self.sc not in LOAD_BOUND_RECORDED_ONLY:
                reason = join(reason, hostcpu.load_bound_reason(host))
        if run is not None:
            reason = join(reason, crash_reason(run))
        if annotate is not None:
            metrics, reason = annotate(metrics, reason)
        self.done.add(i)
        return self.ctx.record(
            self.sc,
            self.c,
            self.rep,
            p,
            metrics,
            reason,
            files,
            started,
            time.monotonic() - t0,
        )

    def fail_rest(self, reason: str) -> None:
        for i, p in enumerate(self.params):
            if i not in self.done:
                self.done.add(i)
                self.ctx.record(self.sc, self.c, self.rep, p, {}, reason)


def start_contender(
    ctx: Ctx, name: str, doc: dict[str, Any], tag: str, **kw: Any
) -> Running:
    ctx.note("start")
    return contenders.start(ctx.pm, name, doc, ctx.work / tag, ctx.proxy_cpu, **kw)


def ensure_running(ctx: Ctx, run: Running, doc: dict[str, Any], tag: str) -> Running:
    """After a crash, restart the contender so the block's next params still get measured."""
    if run.alive():
        return run
    contenders.stop(ctx.pm, run)
    return start_contender(ctx, run.name, doc, tag + "-restart")


def _wrk_measure(
    ctx: Ctx,
    run: Running,
    sc: str,
    rep: int,
    path: str,
    conns: int,
    dur: int,
    headers: tuple[str, ...] = (),
    tagparts: tuple[Any, ...] = (),
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    res, text = wrk.run(run.url + path, conns, dur, headers)
    fname = f"raw/{raw_name(sc, run.name, *tagparts, 'r' + str(rep))}.wrk.txt"
    (ctx.out / fname).write_text(text, encoding="utf-8")
    metrics = {
        k: res[k]
        for k in ("rps", "transfer_bytes_per_s", "errors", "non2xx", "requests")
        if k in res
    }
    metrics["socket_errors"] = {k[7:]: res[k] for k in res if k.startswith("socket_")}
    reason = None
    if res["errors"] or res["non2xx"]:
        reason = f"{res['errors']} socket errors, {res['non2xx']} non-2xx responses"
    if res.get("requests", 1) == 0:
        reason = join(reason, "no request completed")
    return metrics, reason, {"wrk": fname}


def _wrk_block(
    ctx: Ctx,
    sc: str,
    name: str,
    rep: int,
    blk: Block,
    doc: dict[str, Any],
    each: Callable[[dict[str, Any]], tuple[str, int, tuple[str, ...], tuple[Any, ...]]],
) -> None:
    tag = raw_name(sc, name, rep)
    run = start_contender(ctx, name, doc, tag)
    try:
        warmup(ctx, run)
        dur = int(max(1, ctx.prof[sc]["duration_s"]))
        for i, p in enumerate(blk.params):
            run = ensure_running(ctx, run, doc, tag)
            path, conns, headers, tagparts = each(p)
            r = run
            rec = blk.measure(
                i,
                partial(
                    _wrk_measure, ctx, r, sc, rep, path, conns, dur, headers, tagparts
                ),
                run,
            )
            if sc in ("S0", "S1") and rec["valid"]:
                # S2 steps its offered rates up to this contender's own capacity
                ctx.capacity.setdefault((name, conns), []).append(
                    float(rec["metrics"]["rps"])
                )
    finally:
        contenders.stop(ctx.pm, run)


def _need_olgen(ctx: Ctx) -> None:
    if not olgen.available():
        ctx.generator_missing.add("olgen")
        raise StartError(
            f"olgen missing: {olgen.BINARY.relative_to(ROOT)} (make build)"
        )


def _olgen_measure(
    ctx: Ctx,
    run: Running,
    sc: str,
    rep: int,
    p: dict[str, Any],
    warm: float,
    samples: bool = True,
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
    rate = float(p["rate"])
    files: dict[str, str] = {}
    kw: dict[str, Any] = {
        "connections": int(p.get("connections", 16)),
        "warmup_s": warm,
    }
    if samples:
        fname = f"raw/{raw_name(sc, run.name, int(rate), 'r' + str(rep))}.csv"
        kw["samples"] = ctx.out / fname
        files["samples"] = fname
    res = olgen.run(
        run.url + p.get("path", "/bytes/0"),
        rate,
        float(ctx.prof[sc]["duration_s"]),
        **kw,
    )
    return res, olgen.gate(res, rate), files


def _measure_each(
    ctx: Ctx,
    sc: str,
    name: str,
    rep: int,
    blk: Block,
    doc: dict[str, Any],
    measure: Callable[[Any, dict[str, Any]], Callable[[], Any]],
    warm: bool = True,
) -> None:
    """The shape every simple block shares: start the contender, warm it up, measure each
    parameter (restarting the contender if it died), always stop it."""
    tag = raw_name(sc, name, rep)
    run = start_contender(ctx, name, doc, tag)
    try:
        if warm:
            warmup(ctx, run)
        for i, p in enumerate(blk.params):
            run = ensure_running(ctx, run, doc, tag)
            blk.measure(i, measure(run, p), run)
    finally:
        contenders.stop(ctx.pm, run)
