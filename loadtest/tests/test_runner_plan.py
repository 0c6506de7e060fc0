"""Run order (interleaved repetitions), participants, profiles, progress."""

from __future__ import annotations

import io

import pytest

from loadtest.runner import contenders, pinning, plan

pytestmark = pytest.mark.timeout(10)


def test_interleaved_order() -> None:
    o = plan.order(["S1"], ["A", "B", "C"], 2)
    assert [c for _, _, c in o] == ["A", "B", "C", "A", "B", "C"]
    assert [r for _, r, _ in o] == [0, 0, 0, 1, 1, 1]


def test_participants() -> None:
    cs = list(contenders.ALL)
    assert plan.participants("S0", cs) == ["direct"]
    assert "direct" not in plan.participants("S1", cs)
    assert "direct" in plan.participants("S2", cs) and "direct" in plan.participants(
        "S3", cs
    )
    for sc in ("S4", "S7", "S8", "S9"):
        assert "direct" not in plan.participants(sc, cs)
    o = plan.order(plan.SCENARIOS, cs, 3)
    for sc in plan.SCENARIOS:  # every scenario has at least one block per rep
        assert {r for s, r, _ in o if s == sc} == {0, 1, 2}


def test_profiles_cover_every_scenario() -> None:
    for name in ("full", "quick", "smoke"):
        prof = plan.load_profile(name)
        for sc in plan.SCENARIOS:
            assert sc in prof, (name, sc)
        assert prof["reps"] >= (3 if name != "smoke" else 1)


def test_profile_budgets() -> None:
    """Estimated run times (6 contenders) stay inside each profile's budget."""
    budgets = {"full": 45 * 60, "quick": 10 * 60, "smoke": 3 * 60}
    for name, budget in budgets.items():
        prof = plan.load_profile(name)
        units = plan.order(plan.SCENARIOS, contenders.ALL, prof["reps"], prof)
        est = sum(plan.estimate(sc, prof) for sc, _, _ in units)
        est += plan.estimate_scrape(prof, contenders.ALL)
        assert est < budget * 0.95, (name, est)  # the estimate runs ~20 % high


def test_unknown_profile() -> None:
    with pytest.raises(ValueError):
        plan.load_profile("huge")


def test_select_contenders() -> None:
    assert contenders.select(None) == list(contenders.ALL)
    assert contenders.select("nginx,c-proxy") == ["c-proxy", "nginx"]
    assert contenders.select("py-proxy") == ["py-asyncio", "py-uvloop"]
    with pytest.raises(ValueError):
        contenders.select("envoy")


def test_pinning_two_cores() -> None:
    p = pinning.plan(2)
    assert (p["proxy_cpu"], p["load_cpu"], p["two_cores"]) == (1, 0, True)
    assert "only 2 cores" in p["notes"][0]
    assert pinning.plan(8)["notes"] == []


def test_progress_line() -> None:
    units = [plan.Unit("S1", 0, "nginx", 10.0), plan.Unit("S1", 0, "haproxy", 10.0)]
    out = io.StringIO()
    pr = plan.Progress(units, out)
    pr.begin(units[0])
    pr.note("connections=64")
    pr.end(units[0])
    line = out.getvalue()
    assert (
        "[  1/2] S1  nginx" in line
        and "rep 1/1" in line
        and "ETA" in line
        and "elapsed" in line
    )


def test_s11_summary_accuracy_and_gates() -> None:
    from loadtest.runner import scenarios

    p = {
        "capacity": 20,
        "rate_per_sec": 100.0,
        "offered_per_client": 200.0,
        "duration_s": 1.0,
    }
    # a token bucket admits 20 + 100 x 1 = 120 of 200
    exact = [200] * 120 + [429] * 80
    m, reason = scenarios.s11_summary(
        {"127.0.0.2": exact, "127.0.0.3": [200] * 108 + [429] * 92}, p, 0.04
    )
    assert reason is None
    assert m["clients"]["127.0.0.2"]["accuracy"] == 1.0
    assert m["clients"]["127.0.0.3"]["accuracy"] == 0.9
    assert m["accuracy_min"] == 0.9 and m["admitted_per_s_max"] == 120.0
    assert abs(m["max_abs_error_pct"] - 10.0) < 1e-9
    assert m["cpu_us_per_req"] == 0.04 * 1e6 / 400 and m["limited"] == 172
    # nothing limited: limiting not in effect
    _, reason = scenarios.s11_summary({"127.0.0.2": [200] * 200}, p, None)
    assert reason and "no request was limited" in reason
    # errors, other statuses, too few requests
    _, reason = scenarios.s11_summary(
        {"127.0.0.2": [200] * 50 + [0, 503] + [429] * 10}, p, None
    )
    assert (
        "offered rate not achieved" in reason
        and "1 connection errors, 1 responses" in reason
    )
    assert scenarios.s11_sources(4) == [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
    ]


def test_scenario_reps_override() -> None:
    prof = {"reps": 3, "S1": {}, "S11": {"reps": 1}}
    o = plan.order(["S1", "S11"], ["A", "B"], 3, prof)
    assert len([u for u in o if u[0] == "S1"]) == 6
    assert [(s, r) for s, r, _ in o if s == "S11"] == [("S11", 0), ("S11", 0)]


def test_every_scenario_is_one_registered_module() -> None:
    """The registry finds one module per scenario (S0/S1 and S2/S3 share theirs) and every
    scenario of the profiles has params, a block and a report section."""
    import pkgutil
    import re
    from pathlib import Path

    import yaml

    from loadtest.report import sections
    from loadtest.report.sections import SECTIONS
    from loadtest.runner import scenarios

    profiles = yaml.safe_load(
        (
            Path(__file__).resolve().parents[1] / "scenarios" / "profiles.yaml"
        ).read_text()
    )
    named = {
        k
        for prof in profiles.values()
        if isinstance(prof, dict)
        for k in prof
        if re.fullmatch(r"S\d+", k)
    }
    assert named, "no scenario found in profiles.yaml"
    assert named <= set(scenarios.PARAMS) == set(scenarios.BLOCKS)
    assert list(scenarios.PARAMS) == sorted(scenarios.PARAMS, key=lambda s: int(s[1:]))
    section_ids = {
        int(m.group(1))
        for info in pkgutil.iter_modules(sections.__path__)
        if (m := re.match(r"s(\d+)_", info.name))
    }
    missing = {s for s in scenarios.PARAMS if max(int(s[1:]), 1) not in section_ids}
    assert not missing, f"scenarios without a report section module: {missing}"
    assert len(SECTIONS) == len(section_ids)  # one section per module, numbered


def test_shuffled_order_within_each_rep() -> None:
    """With a seed every rep still holds each contender exactly once, reps stay in order,
    the order is reproducible from the seed, and it is not always the same."""
    cs = ["A", "B", "C", "D"]
    o = plan.order(["S1", "S2"], cs, 5, seed=7)
    assert o == plan.order(["S1", "S2"], cs, 5, seed=7)
    for sc in ("S1", "S2"):
        reps = [r for s, r, _ in o if s == sc]
        assert reps == sorted(reps)
        per_rep = [[c for s, r, c in o if s == sc and r == rep] for rep in range(5)]
        assert all(sorted(p) == cs for p in per_rep)
    orders = {
        tuple(c for s, r, c in o if s == sc and r == rep)
        for sc in ("S1", "S2")
        for rep in range(5)
    }
    assert len(orders) > 1, "the seed shuffles nothing"
    assert plan.order(["S1"], cs, 2) == plan.order(["S1"], cs, 2, seed=None)
