"""Preflight refuses a busy machine: load average, foreign CPU hogs; our own tree excluded."""

from __future__ import annotations

import pytest

from loadtest.runner import preflight

pytestmark = pytest.mark.timeout(10)


def st(
    pid: int, ppid: int, utime: int, stime: int = 0, comm: str = "x", start: int = 1
) -> dict:
    return {
        "pid": pid,
        "ppid": ppid,
        "utime": utime,
        "stime": stime,
        "comm": comm,
        "starttime": start,
        "state": "S",
        "rss": 0,
    }


def test_idle_machine_passes() -> None:
    before = [st(1, 0, 0), st(50, 1, 100)]
    after = [st(1, 0, 0), st(50, 1, 101)]  # 1 tick in 1 s = 1 %
    pf = preflight.check(
        read_loadavg=lambda: "0.05 0.10 0.20 1/100 123",
        sample=iter([before, after]).__next__,
        sleep=lambda s: None,
    )
    assert not pf.busy
    assert pf.reasons() == []


def test_high_load_average_is_busy() -> None:
    same = [st(1, 0, 0)]
    pf = preflight.check(
        read_loadavg=lambda: "3.50 1.0 1.0 1/100 123",
        sample=iter([same, same]).__next__,
        sleep=lambda s: None,
    )
    assert pf.busy
    assert "load average 3.50" in pf.reasons()[0]


def test_foreign_hog_found_and_reported() -> None:
    before = [st(1, 0, 0), st(77, 1, 1000, 0, "compiler")]
    after = [st(1, 0, 0), st(77, 1, 1060, 20, "compiler")]  # 80 ticks = 80 % at 100 Hz
    busy = preflight.busy_processes(
        before, after, 1.0, own=set(), max_pct=10.0, clk_tck=100
    )
    assert busy == [{"pid": 77, "comm": "compiler", "cpu_pct": 80.0}]


def test_own_tree_excluded() -> None:
    before = [
        st(1, 0, 0),
        st(10, 1, 0, comm="make"),
        st(20, 10, 0, comm="python"),
        st(30, 20, 0, comm="wrk"),
    ]
    after = [
        st(1, 0, 0),
        st(10, 1, 0, comm="make"),
        st(20, 10, 90, comm="python"),
        st(30, 20, 90, comm="wrk"),
    ]
    own = preflight.own_tree(after, me=20)
    assert own == {10, 20, 30}
    assert preflight.busy_processes(before, after, 1.0, own, 10.0, clk_tck=100) == []


def test_new_or_reused_pids_ignored() -> None:
    before = [st(5, 1, 0, start=1)]
    after = [
        st(5, 1, 500, start=99),
        st(6, 1, 500),
    ]  # pid 5 reused, pid 6 new: no baseline
    assert preflight.busy_processes(before, after, 1.0, set(), 10.0, clk_tck=100) == []


def test_threshold_is_strict() -> None:
    before = [st(5, 1, 0)]
    after = [st(5, 1, 10)]  # exactly 10 %
    assert preflight.busy_processes(before, after, 1.0, set(), 10.0, clk_tck=100) == []
