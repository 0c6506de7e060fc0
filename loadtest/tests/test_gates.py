"""The lab's gates: host CPU / LOAD-BOUND, S2 curve end, S4 fit and strace gate, S8
fairness and ejection, S9 fd and p99 gates, locust connect counts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from loadtest.runner import fairness, hostcpu, locustdrv, scenarios

STAT_BEFORE = """cpu  1000 0 500 8000 0 0 0 0 0 0
cpu0 500 0 250 4000 0 0 0 0 0 0
cpu1 500 0 250 4000 0 0 0 0 0 0
intr 1
"""
# cpu0 (load): 96 of 100 jiffies busy; cpu1 (proxy): 55 of 105 busy, 5 stolen
STAT_AFTER = """cpu  1140 0 511 8049 0 0 0 5 0 0
cpu0 590 0 256 4004 0 0 0 0 0 0
cpu1 550 0 255 4045 0 0 0 5 0 0
"""


def test_core_delta_and_load_bound() -> None:
    b = {"stat": hostcpu.parse_proc_stat(STAT_BEFORE), "loadavg": 0.5}
    a = {"stat": hostcpu.parse_proc_stat(STAT_AFTER), "loadavg": 0.7}
    h = hostcpu.host_delta(b, a, proxy_cpu=1, load_cpu=0)
    assert h["load_core"]["busy_pct"] == 96.0
    assert h["load_core"]["user_pct"] == 90.0 and h["load_core"]["system_pct"] == 6.0
    # cpu1: user 50 + system 5 + idle 45 + steal 5 = 105 jiffies
    assert h["proxy_core"]["busy_pct"] == 52.4 and h["proxy_core"]["steal_pct"] == 4.8
    assert h["loadavg_1m_before"] == 0.5 and h["loadavg_1m_after"] == 0.7
    assert h["steal_pct"] == 2.4  # 5 of 205 jiffies over all cores
    assert h["load_bound"] is True
    assert (hostcpu.load_bound_reason(h) or "").startswith(
        "LOAD-BOUND: load core 96.0%"
    )
    h = hostcpu.host_delta(b, a, proxy_cpu=1, load_cpu=0, bound_pct=97)
    assert h["load_bound"] is False and hostcpu.load_bound_reason(h) is None
    # a core that is not there: no figure, never LOAD-BOUND by accident
    h = hostcpu.host_delta(b, a, proxy_cpu=5, load_cpu=6)
    assert h["proxy_core"] is None and h["load_bound"] is False


def test_host_sample_reads_this_machine() -> None:
    s = hostcpu.host_sample()
    assert "cpu" in s["stat"] and s["loadavg"] is not None


def test_tasks_delta_splits_schedstat_by_tick_ratio() -> None:
    before = {"1/1": {"ns": 1_000_000_000, "utime": 100, "stime": 100}}
    after = {
        "1/1": {"ns": 1_400_000_000, "utime": 103, "stime": 101},
        "1/2": {"ns": 100_000_000, "utime": 0, "stime": 0},  # a new thread
    }
    d = hostcpu.tasks_delta(before, after)
    assert d["cpu_s"] == pytest.approx(0.5)
    assert d["user_s"] == pytest.approx(0.375) and d["sys_s"] == pytest.approx(0.125)


def test_tasks_cpu_of_this_process() -> None:
    import os

    t = hostcpu.tasks_cpu([os.getpid()])
    assert t and all(v["ns"] > 0 for v in t.values())


def test_linear_fit_recovers_slope_and_error() -> None:
    xs = [0, 1000, 2000, 3000, 4000]
    ys = [0.01 + 20e-6 * x for x in xs]
    f = hostcpu.linear_fit(xs, ys)
    assert f is not None
    assert f["b"] == pytest.approx(20e-6) and f["a"] == pytest.approx(0.01)
    assert f["se_b"] == pytest.approx(0, abs=1e-12) and f["r2"] == pytest.approx(1)
    noisy = [
        y + e for y, e in zip(ys, [0.001, -0.001, 0.001, -0.001, 0.0], strict=True)
    ]
    g = hostcpu.linear_fit(xs, noisy)
    assert g is not None and g["se_b"] > 0
    assert hostcpu.linear_fit([1, 1, 1], [1, 2, 3]) is None
    assert hostcpu.linear_fit([1, 2], [1, 2]) is None


def _rec(rps: float, util: float, valid: bool = True) -> dict[str, Any]:
    return {"valid": valid, "metrics": {"throughput_rps": rps, "utilisation": util}}


def test_s4_fit_needs_idle_and_four_rates() -> None:
    recs = [_rec(0, 0.01)] + [
        _rec(r, 0.01 + 25e-6 * r) for r in (500, 1000, 1500, 2000)
    ]
    m, why = scenarios.s4_fit(recs)
    assert why is None
    assert m["marginal_us_per_req"] == pytest.approx(25.0)
    assert m["idle_utilisation"] == pytest.approx(0.01)
    assert m["max_rps"] == 2000
    # an invalid point (past saturation) stays out of the fit
    m2, why2 = scenarios.s4_fit(recs + [_rec(2500, 0.9, valid=False)])
    assert why2 is None and m2["marginal_us_per_req"] == pytest.approx(25.0)
    _, why3 = scenarios.s4_fit(recs[1:])
    assert why3 is not None and "idle: no" in why3
    _, why4 = scenarios.s4_fit(recs[:4])
    assert why4 is not None and "loaded: 3" in why4


def test_strace_gate() -> None:
    ok = {"scheduled": 500, "completed": 500, "connects": 8}
    assert scenarios.strace_gate(ok, 8) is None
    assert "completed 490 of 500" in (
        scenarios.strace_gate({**ok, "completed": 490}, 8) or ""
    )
    assert "2 reconnects" in (scenarios.strace_gate({**ok, "connects": 10}, 8) or "")


def test_s2_ladder_ends_at_first_invalid_point() -> None:
    lad = scenarios.Ladder(stop_after=2)
    m, r = lad.annotate(1000, {}, None)
    assert m["curve"] == "on" and r is None
    m, r = lad.annotate(2000, {}, "olgen: latency_trend")
    assert m["curve"] == "end" and r == "olgen: latency_trend"
    assert not lad.stopped()
    # valid above an invalid point: not on the curve, so invalid too
    m, r = lad.annotate(3000, {}, None)
    assert m["curve"] == "past_end" and "past the end of the curve (rate 2000" in (
        r or ""
    )
    assert not lad.stopped()
    lad.annotate(4000, {}, "x")
    lad.annotate(5000, {}, "y")
    assert lad.stopped()
    m, r, _ = scenarios._past_end(2000.0)
    assert m["curve"] == "past_end" and r is not None and r.startswith("not measured")


def test_chi2_sf_matches_tables() -> None:
    assert fairness.chi2_sf(3.841, 1) == pytest.approx(0.05, abs=1e-3)
    assert fairness.chi2_sf(11.345, 3) == pytest.approx(0.01, abs=1e-3)
    assert fairness.chi2_sf(0.0, 3) == 1.0
    assert fairness.chi2_sf(1000, 3) < 1e-100
    assert math.isclose(fairness.chi2_sf(2.0, 2), math.exp(-1.0), rel_tol=1e-9)


def test_fairness_gate_equal_and_weighted() -> None:
    figs, why = fairness.assert_fair({"u1": 250, "u2": 250, "u3": 251, "u4": 249})
    assert why is None and figs["p_value"] > 0.9
    figs, why = fairness.assert_fair({"u1": 300, "u2": 250, "u3": 250, "u4": 200})
    assert why is not None and why.startswith("FAILED") and "max/min 1.500" in why
    assert "chi-square p" in why
    # 3:1:1 split in proportion: fair
    w = {"u1": 3, "u2": 1, "u3": 1}
    figs, why = fairness.assert_fair({"u1": 600, "u2": 200, "u3": 200}, w)
    assert why is None and figs["max_min"] == pytest.approx(1.0)
    # even split when 3:1:1 was configured: FAILED
    _, why = fairness.assert_fair({"u1": 334, "u2": 333, "u3": 333}, w)
    assert why is not None and why.startswith("FAILED")
    _, why = fairness.assert_fair({"u1": 10, "u2": 0})
    assert why is not None and "got nothing" in why


def test_ejection_and_readmission() -> None:
    # killed at 1.0 s, restarted at 2.0 s; refused connects 1.0-1.2 s, one re-probe at 1.6
    refused = [(0.9, 100), (1.05, 103), (1.1, 106), (1.15, 106), (1.2, 106), (1.6, 107),
               (1.7, 107), (2.0, 107)]  # fmt: skip
    events = [(0.5, "u4", True), (1.01, "u4", True), (1.02, "", False), (1.5, "u1", True),
              (2.3, "u4", True), (2.5, "u4", True)]  # fmt: skip
    e = fairness.ejection(events, refused, 1.0, 2.0, "u4")
    assert e["refused_while_dead"] == 7
    assert e["ejection_s"] == pytest.approx(0.1)
    assert e["reprobes"] == 1
    assert e["errors_while_dead"] == 1 and e["served_after_kill"] == 1
    assert e["readmission_s"] == pytest.approx(0.3)


def test_read_attempt_fails(tmp_path: Path) -> None:
    p = tmp_path / "snmp"
    p.write_text(
        "Tcp: RtoAlgorithm ActiveOpens AttemptFails\nTcp: 1 10 42\nUdp: X\nUdp: 1\n"
    )
    assert fairness.read_attempt_fails(p) == 42
    assert fairness.read_attempt_fails(tmp_path / "none") is None
    assert isinstance(fairness.read_attempt_fails(), int)


def _s9(**kw: Any) -> dict[str, Any]:
    m = {
        "read_timeout_ms": 200,
        "latency_ms": {"min": 200.5, "50": 201, "99": 215, "max": 216},
        "client_offset_ms": 3.0,
        "fds_baseline": 10,
        "fds_before": 12,
        "fds_after": 12,
        "fd_leak": 0,
    }
    m.update(kw)
    return m


def test_s9_gates() -> None:
    assert scenarios.s9_gate(_s9()) is None
    # 235 - 3 = 232 > 220: the timer fires late
    r = scenarios.s9_gate(
        _s9(latency_ms={"min": 201, "50": 210, "99": 235, "max": 240})
    )
    assert r is not None and "outside [200, 220]" in r
    # 199 - 0: earlier than the timeout
    r = scenarios.s9_gate(
        _s9(
            client_offset_ms=0.0,
            latency_ms={"min": 150, "50": 190, "99": 199, "max": 199},
        )
    )
    assert r is not None and "p99 199.0" in r
    r = scenarios.s9_gate(_s9(fds_after=15, fd_leak=3))
    assert r is not None and r.startswith("fd leak: 3")
    assert "no 504" in (scenarios.s9_gate(_s9(latency_ms=None)) or "")


def test_locust_connects_summed_and_removed(tmp_path: Path) -> None:
    prefix = tmp_path / "loc"
    (tmp_path / "loc-11.conns").write_text("7\n")
    (tmp_path / "loc-12.conns").write_text("5\n")
    assert locustdrv.connects(prefix) == 12
    assert not list(tmp_path.glob("*.conns"))
    assert locustdrv.connects(prefix) is None


def _ctx(tmp_path: Path) -> scenarios.Ctx:
    return scenarios.Ctx(
        pm=None,  # type: ignore[arg-type]
        out=tmp_path,
        work=tmp_path,
        prof={},
        pin={"proxy_cpu": 1, "load_cpu": 0},
    )


@pytest.mark.parametrize(
    ("sc", "contender", "params", "gated"),
    [
        ("S2", "c-proxy", {"rate": 1000}, True),
        ("S2", "direct", {"rate": 1000}, False),  # no proxy: the ceiling
        ("S4", "nginx", {"rate": 0}, False),  # idle point: no load
        ("S10", "py-asyncio", {"users": 10}, False),  # closed-loop locust: recorded
    ],
)
def test_block_marks_load_bound(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sc: str,
    contender: str,
    params: dict[str, Any],
    gated: bool,
) -> None:
    samples = iter(
        [
            {"stat": hostcpu.parse_proc_stat(STAT_BEFORE), "loadavg": 1.0},
            {"stat": hostcpu.parse_proc_stat(STAT_AFTER), "loadavg": 1.0},
        ]
    )
    monkeypatch.setattr(hostcpu, "host_sample", lambda: next(samples))
    blk = scenarios.Block(_ctx(tmp_path), sc, contender, 0, [params])
    rec = blk.measure(0, lambda: ({"x": 1}, None, {}), None)
    assert rec["metrics"]["host"]["load_core"]["busy_pct"] == 96.0
    assert rec["metrics"]["x"] == 1
    if gated:
        assert rec["valid"] is False and rec["invalid_reason"].startswith("LOAD-BOUND")
        assert rec["metrics"]["load_bound"] is True
    else:
        assert rec["valid"] is True
    if sc == "S10":
        assert rec["metrics"]["load_bound"] is True


def test_s4_ladder_idle_common_and_own_fractions(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ctx.prof = {
        "S2": {"capacity_connections": 64},
        "S4": {
            "rates": [1000, 5000],
            "fractions": [0.5, 0.8],
            "connections": 16,
            "path": "/bytes/0",
        },
    }
    # no S1 capacity: the idle point and the common ladder only
    ps = scenarios.params_S4(ctx, "S4", "c-proxy")
    assert [p["rate"] for p in ps] == [0, 1000, 5000]
    assert {p["ladder"] for p in ps} == {"common"}
    ctx.capacity[("c-proxy", 64)] = [10000.0, 10200.0, 9800.0]
    ps = scenarios.params_S4(ctx, "S4", "c-proxy")
    assert [(p["rate"], p["ladder"]) for p in ps] == [
        (0, "common"),
        (1000, "common"),
        (5000, "common"),  # 0.5 x 10000 is already on the common ladder
        (8000, "own"),
    ]
