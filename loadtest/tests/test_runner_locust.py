"""S10: the locust file's events.request hook writes raw per-request samples (µs), and
the driver merges worker files and computes metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.runner import locustdrv

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]

HOOK = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("mix", sys.argv[1])
mix = importlib.util.module_from_spec(spec); spec.loader.exec_module(mix)
from locust import events
events.init.fire(environment=None, runner=None, web_ui=None)
class R: status_code = 200
events.request.fire(request_type="GET", name="GET /bytes/0", response_time=1.2345, response_length=0,
                    response=R(), context={}, exception=None, start_time=1700000000.5, url="/bytes/0")
events.request.fire(request_type="GET", name="GET /x", response_time=10.0, response_length=0,
                    response=None, context={}, exception=OSError("refused"), start_time=1700000001.0, url="/x")
events.quitting.fire(environment=None)
"""


def test_hook_writes_microseconds(tmp_path: Path) -> None:
    prefix = tmp_path / "samples"
    env = dict(os.environ, TWINPROXY_LOCUST_SAMPLES=str(prefix))
    p = subprocess.run(
        [sys.executable, "-c", HOOK, str(locustdrv.MIX)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=50,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    parts = list(tmp_path.glob("samples-*.csv"))
    assert len(parts) == 1
    lines = parts[0].read_text().splitlines()
    assert lines == [
        "1700000000500000,GET /bytes/0,1234,200",
        "1700000001000000,GET /x,10000,0",
    ]


def test_merge_and_metrics(tmp_path: Path) -> None:
    prefix = tmp_path / "s"
    (tmp_path / "s-1.csv").write_text(
        "3000000,GET /a,300,200\n1000000,GET /a,100,200\n"
    )
    (tmp_path / "s-2.csv").write_text(
        "2000000,GET /b,200,500\n4000000,GET /c,400,404\n"
    )
    out = tmp_path / "merged.csv"
    rows = locustdrv.merge(prefix, out)
    assert [r[0] for r in rows] == [1000000, 2000000, 3000000, 4000000]
    assert out.read_text().splitlines()[0] == "ts_us,name,latency_us,status"
    assert not list(tmp_path.glob("s-*.csv"))  # parts removed
    m = locustdrv.metrics(rows, duration_s=3)
    assert (
        m["requests"] == 4 and m["failures"] == 1
    )  # the 500; 404 is an expected answer
    assert m["rps"] == pytest.approx(4 / 3)
    assert m["percentiles_us"]["50"] == 200 and m["percentiles_us"]["100"] == 400


def test_distributed_commands() -> None:
    master, workers = locustdrv.commands("http://h:1", 20, 5, 2, 5557)
    assert "--master" in master and master[master.index("--expect-workers") + 1] == "2"
    assert "--headless" in master and master[master.index("-t") + 1] == "5s"
    assert len(workers) == 2 and "--worker" in workers[0]
    local, none = locustdrv.commands("http://h:1", 20, 5, 0, 5557)
    assert "--master" not in local and none == []
