"""End to end on the real tools: a tiny bench run (direct + nginx + HAProxy) writes the
SCHEMA.md layout; an unavailable contender is recorded invalid, not dropped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.runner import scenarios

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]

needs_tools = pytest.mark.skipif(
    not scenarios.UPSTREAM.exists()
    or shutil.which("wrk") is None
    or shutil.which("nginx") is None
    or shutil.which("haproxy") is None,
    reason="needs upstreams/build/upstream, wrk, nginx and haproxy (make build)",
)


@needs_tools
def test_small_bench_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.bench",
            "--profile",
            "smoke",
            "--force",
            "--no-report",
            "--out",
            str(out),
            "--only",
            "S0,S1,S8,S9",
            "--contenders",
            "direct,nginx,haproxy",
        ],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    env = json.loads((out / "env.json").read_text())
    for key in (
        "cpu_model",
        "cores",
        "kernel",
        "python",
        "versions",
        "pinning",
        "profile",
        "forced",
        "preflight",
        "git_sha",
        "started",
        "finished",
    ):
        assert key in env, key
    assert env["forced"] is True and env["profile"] == "smoke"
    assert (
        env["pinning"]["proxy_cpu"] != env["pinning"]["load_cpu"] or env["cores"] == 1
    )
    recs = [json.loads(ln) for ln in (out / "runs.jsonl").read_text().splitlines()]
    by = {(r["scenario"], r["contender"], r["params"].get("phase")) for r in recs}
    assert ("S0", "direct", None) in by
    assert ("S1", "nginx", None) in by and ("S1", "haproxy", None) in by
    for ph in ("equal", "slow", "dead", "killed"):
        assert ("S8", "nginx", ph) in by
    for r in recs:
        assert set(r) == {
            "scenario",
            "contender",
            "rep",
            "params",
            "metrics",
            "valid",
            "invalid_reason",
            "files",
            "started",
            "duration_s",
        }
        for f in r["files"].values():
            assert (out / f).exists(), f
    s9 = [r for r in recs if r["scenario"] == "S9"]
    assert all(r["metrics"].get("count_504", 0) > 0 for r in s9), s9
    # progress went to stderr
    assert "ETA" in p.stderr and "S8" in p.stderr


def test_missing_contender_recorded_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loadtest.runner import contenders, plan, processes

    monkeypatch.setattr(contenders, "C_PROXY", tmp_path / "no-such-c-proxy")
    ok, why = contenders.availability("c-proxy")
    assert not ok and "binary missing" in why
    out = tmp_path / "out"
    (out / "raw").mkdir(parents=True)
    ctx = scenarios.Ctx(
        pm=processes.ProcManager(tmp_path / "logs"),
        out=out,
        work=tmp_path / "w",
        prof=plan.load_profile("quick"),
        pin={"proxy_cpu": 1, "load_cpu": 0},
        avail={"c-proxy": (ok, why)},
    )
    scenarios.run_block(
        ctx, "S5", "c-proxy", 0
    )  # never starts anything: 4 invalid records
    recs = [json.loads(ln) for ln in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["params"]["size"] for r in recs] == [0, 1024, 16384, 1048576]
    assert all(not r["valid"] and "binary missing" in r["invalid_reason"] for r in recs)
    assert ctx.harness_errors == []


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    from loadtest import bench

    (tmp_path / "precious.txt").write_text("keep me")
    if not scenarios.upstream_available()[0]:
        pytest.skip("needs upstreams/build/upstream")
    rc = bench.main(["--profile", "smoke", "--out", str(tmp_path), "--no-report"])
    assert rc == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_bad_arguments_exit_2() -> None:
    from loadtest import bench

    assert bench.main(["--profile", "smoke", "--only", "S12"]) == 2
    assert bench.main(["--profile", "smoke", "--contenders", "envoy"]) == 2
