"""Parsers and math of the runner: wrk text, olgen JSON and its gates, strace -c,
/proc stat CPU accounting, fairness (chi-square, per-second series)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.runner import fairness, olgen, processes, scenarios, stats_util, wrk

pytestmark = pytest.mark.timeout(10)
FIX = Path(__file__).parent / "fixtures"


def test_wrk_ok() -> None:
    r = wrk.parse((FIX / "wrk_ok.txt").read_text())
    assert r["rps"] == pytest.approx(444.60)
    assert r["transfer_bytes_per_s"] == pytest.approx(444.66 * 1024 * 1024)
    assert r["requests"] == 455
    assert r["duration_s"] == pytest.approx(1.02)
    assert r["errors"] == 0 and r["non2xx"] == 0


def test_wrk_errors() -> None:
    r = wrk.parse((FIX / "wrk_errors.txt").read_text())
    assert r["rps"] == pytest.approx(20105.0)
    assert r["transfer_bytes_per_s"] == pytest.approx(2.62 * 1024 * 1024)
    assert (
        r["socket_connect"],
        r["socket_read"],
        r["socket_write"],
        r["socket_timeout"],
    ) == (3, 12, 0, 7)
    assert r["errors"] == 22
    assert r["non2xx"] == 41


def test_wrk_garbage_raises() -> None:
    with pytest.raises(ValueError):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused")


def test_wrk_command() -> None:
    cmd = wrk.command("http://h/x", 64, 3, ["Connection: close"])
    assert cmd[:7] == ["wrk", "-t", "1", "-c", "64", "-d", "3s"]
    assert cmd[-3:] == ["-H", "Connection: close", "http://h/x"]


OLGEN = {
    "sent": 1000,
    "completed": 1000,
    "errors": 0,
    "timeouts": 0,
    "status": {"2xx": 1000, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0},
    "achieved_rate": 1000,
    "offered_rate_achieved": True,
    "invalid_reasons": [],
    "max_backlog": 3,
    "percentiles_us": {
        "50": 100,
        "90": 200,
        "95": 300,
        "99": 400,
        "99.9": 500,
        "99.99": 600,
        "100": 700,
    },
}


def test_olgen_parse_pretty_and_line() -> None:
    assert olgen.parse(json.dumps(OLGEN, indent=2)) == OLGEN
    assert olgen.parse("warming up\n" + json.dumps(OLGEN)) == OLGEN


def test_olgen_gates() -> None:
    assert olgen.gate(OLGEN, 1000) is None
    sat = dict(
        OLGEN, offered_rate_achieved=False, invalid_reasons=["backlog over bound"]
    )
    assert "generator saturated" in olgen.gate(sat, 1000)
    assert "backlog over bound" in olgen.gate(sat, 1000)
    slow = dict(OLGEN, achieved_rate=700)
    assert "offered rate not achieved" in olgen.gate(slow, 1000)
    bad = dict(OLGEN, errors=2, status={"2xx": 990, "5xx": 8})
    reason = olgen.gate(bad, 1000)
    assert "2 errors" in reason and "8 non-2xx" in reason


def test_olgen_command() -> None:
    cmd = olgen.command(
        "http://h/",
        2000,
        0.5,
        warmup_s=1,
        connections=8,
        headers=["A: b"],
        close=True,
        samples="/tmp/s.csv",
    )
    assert cmd[1:] == [
        "--url",
        "http://h/",
        "--rate",
        "2000",
        "--duration",
        "0.5",
        "--connections",
        "8",
        "--warmup",
        "1",
        "--header",
        "A: b",
        "--close",
        "--samples",
        "/tmp/s.csv",
    ]


def test_strace_summary() -> None:
    t = scenarios.parse_strace_c((FIX / "strace_c.txt").read_text())
    assert t == {
        "writev": 2000,
        "recvfrom": 2005,
        "getsockopt": 1000,
        "epoll_wait": 254,
        "accept4": 9,
    }
    assert sum(t.values()) == 5268  # the 'total' row is not counted twice


def test_proc_stat_parse_and_cpu() -> None:
    lines = (FIX / "proc_stat.txt").read_text().splitlines()
    stats = [processes.parse_stat(ln) for ln in lines]
    assert stats[1]["comm"] == "py proxy (w)"  # spaces and parentheses in comm
    assert (
        stats[0]["utime"] == 250 and stats[0]["stime"] == 120 and stats[0]["ppid"] == 1
    )
    assert processes.tree_pids(100, stats) == [100, 101, 103]
    tree = [s for s in stats if s["pid"] in (100, 101, 103)]
    assert processes.cpu_seconds(tree, clk_tck=100) == pytest.approx((3.35, 1.60))
    later = [
        dict(s, utime=int(s["utime"]) + 100, stime=int(s["stime"]) + 50) for s in tree
    ]
    u, s_ = processes.cpu_delta(tree, later, clk_tck=100)
    assert (u, s_) == pytest.approx((3.0, 1.5))
    # 1.5 s user + 0.75 s sys ... per 10000 requests = cpu us per request
    assert (u + s_) * 1e6 / 10000 == pytest.approx(450.0)


def test_cpu_delta_new_process_counts_from_zero_and_reused_pid() -> None:
    a = [{"pid": 1, "utime": 10, "stime": 0, "starttime": 5}]
    b = [
        {"pid": 1, "utime": 12, "stime": 0, "starttime": 5},
        {"pid": 2, "utime": 3, "stime": 1, "starttime": 9},
    ]
    assert processes.cpu_delta(a, b, clk_tck=1) == (5.0, 1.0)
    reused = [{"pid": 1, "utime": 4, "stime": 0, "starttime": 77}]
    assert processes.cpu_delta(a, reused, clk_tck=1) == (4.0, 0.0)


def test_chi_square_equal_and_weighted() -> None:
    assert fairness.chi_square({"a": 25, "b": 25, "c": 25, "d": 25}) == (0.0, 3)
    chi, dof = fairness.chi_square({"a": 30, "b": 10})
    assert dof == 1 and chi == pytest.approx(10.0)  # (30-20)^2/20 + (10-20)^2/20
    chi, _ = fairness.chi_square({"a": 30, "b": 10}, {"a": 3, "b": 1})
    assert chi == pytest.approx(0.0)
    assert fairness.chi_square({}) == (0.0, 0)


def test_max_min_ratio() -> None:
    assert fairness.max_min_ratio({"a": 30, "b": 10}) == 3.0
    assert fairness.max_min_ratio({"a": 30, "b": 0}) is None


def test_per_second_series_fills_zeros() -> None:
    ev = [
        (0.1, "u1", True),
        (0.2, "u2", True),
        (1.5, "u1", True),
        (1.6, "", False),
        (2.2, "u2", False),
    ]
    rows = fairness.per_second(ev, 3)
    assert rows == [
        (0, "u1", 1, 0),
        (0, "u2", 1, 0),
        (0, "", 0, 0),
        (1, "u1", 1, 0),
        (1, "u2", 0, 0),
        (1, "", 0, 1),
        (2, "u1", 0, 0),
        (2, "u2", 0, 1),
        (2, "", 0, 0),
    ]


def test_percentiles_nearest_rank() -> None:
    p = stats_util.percentiles_us(list(range(1, 1001)))
    assert p["50"] == 500 and p["99"] == 990 and p["99.9"] == 999 and p["100"] == 1000
    assert stats_util.percentiles_us([]) is None
