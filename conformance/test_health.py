"""Passive and active health (contract 5, 10; issue 7): ejection and return, active checks,
`upstream_down` / `upstream_up` events, all down -> 503, single-upstream groups.

Events asserted: `upstream_down` and `upstream_up` carry `upstream` (the name) and a
non-empty `reason`. Active checks use the upstream's own /health (upstreams/README.md):
`/health/fail` and `/health/ok` on a listener switch it.
"""

from __future__ import annotations

import time

import pytest
from harness import assert_proxy_error, build_request, free_port, wait_until

ACTIVE = {
    "max_fails": 0,  # active only: passive verdicts would blur what these tests assert
    "check": {
        "path": "/health",
        "interval": "100ms",
        "timeout": "500ms",
        "rise": 2,
        "fall": 2,
    },
}


def _event_for(p, name: str, upstream: str, count: int = 1, timeout: float = 5.0):
    ok = wait_until(
        lambda: (
            len([e for e in p.events(name) if e.get("upstream") == upstream]) >= count
        ),
        timeout,
    )
    evs = [e for e in p.events(name) if e.get("upstream") == upstream]
    assert ok, (
        f"no {count}x {name} for {upstream} within {timeout}s:\n{p.stderr_text()[-3000:]}"
    )
    for e in evs:
        assert isinstance(e.get("reason"), str) and e["reason"], e
    return evs


def _serving(p, n: int) -> list[str]:
    """X-Upstream of n requests, each on a new connection (so with workers > 1 they
    spread over the workers)."""
    out = []
    for _ in range(n):
        r = p.request("/")
        assert r.status == 200, r
        out.append(r.get("X-Upstream"))
    return out


# --------------------------------------------------------------------------- passive


@pytest.mark.parametrize("workers", [1, 2])
def test_passive_refusing_upstream_ejected_for_fail_timeout_then_back(
    upstream, proxy, workers
):
    # `flaky` is a port nobody listens on (connect refused). max_fails 1: the first
    # refusal marks it down for fail_timeout (2 s); within that window it is not tried
    # at all (every access log line: attempts 1, upstream live), even once something
    # listens there again (its /stats count no request). After the window one request
    # probes it, succeeds, and it is back (`upstream_up`). With workers: 2 the verdict
    # reached in one worker applies to all (requests on new connections spread over both).
    live = upstream(["live"])
    flaky_port = free_port()
    p = proxy(
        [{"address": f"127.0.0.1:{flaky_port}", "name": "flaky"}] + live.entries(),
        workers=workers,
        health={"max_fails": 1, "fail_timeout": "2s"},
    )
    first = p.request("/")
    assert (first.status, first.get("X-Upstream")) == (200, "live")
    t_down = time.monotonic()  # ejected at or before this moment
    p.wait_access_log(1)
    (rec,) = p.access_records()
    if rec["attempts"] == 1:  # the balancer started on `live`: the next pick is flaky
        assert p.request("/").status == 200
        t_down = time.monotonic()
        p.wait_access_log(2)
        rec = p.access_records()[1]
    assert (rec["attempts"], rec["upstream"]) == (2, "live"), rec
    _event_for(p, "upstream_down", "flaky")
    seen_before = len(p.access_records())

    # window, part 1: still refusing; never tried (attempts 1 every time)
    assert _serving(p, 8) == ["live"] * 8
    # window, part 2: something listens there again, but it is down until fail_timeout
    flaky = upstream(["flaky"], ports={"flaky": flaky_port})
    with flaky.counting() as d:
        while time.monotonic() < t_down + 1.5:  # fail_timeout 2 s minus a margin
            assert _serving(p, 1) == ["live"]
    assert d.requests == 0, "flaky was tried within fail_timeout"
    recs = p.access_records()[seen_before:]
    assert recs and all((r["attempts"], r["upstream"]) == (1, "live") for r in recs), (
        recs
    )
    if workers == 2:  # decisive only if the worker that saw no failure served some
        assert {r["worker"] for r in recs} == {0, 1}, "one worker served the window"

    # after fail_timeout it gets traffic again (the probe succeeds)
    assert wait_until(lambda: "flaky" in _serving(p, 2), 6), "flaky never came back"
    _event_for(p, "upstream_up", "flaky")


def test_passive_all_down_gives_503_and_pipelined_self_answers_all_come(proxy):
    # Both upstreams refuse: the first request tries both (502) and marks both down; from
    # then on the balancer finds nobody and the proxy answers 503 itself. 200 pipelined
    # requests answered by the proxy itself all get their answer in order, without
    # waiting for any timer (header/idle timeouts are 30 s, the client waits 5 s).
    dead = [{"address": f"127.0.0.1:{free_port()}", "name": n} for n in ("d1", "d2")]
    p = proxy(
        dead,
        health={"max_fails": 1, "fail_timeout": "30s"},
        timeouts={"header": "30s", "idle": "30s"},
    )
    r = p.request("/", headers=[("X-Request-ID", "first")])
    assert_proxy_error(r, 502, close=False, request_id="first")
    _event_for(p, "upstream_down", "d1")
    _event_for(p, "upstream_down", "d2")
    r = p.request("/", headers=[("X-Request-ID", "none-left")])
    assert_proxy_error(r, 503, close=False, request_id="none-left")
    n = 200
    with p.connect() as c:
        c.send(
            b"".join(
                build_request("GET", f"/p/{i}", [("X-Request-ID", f"pipe-{i}")])
                for i in range(n)
            )
        )
        for i in range(n):
            assert_proxy_error(
                c.read_response(), 503, close=False, request_id=f"pipe-{i}"
            )


def test_single_upstream_group_never_marked_down(upstream, proxy):
    # A group with one upstream is never marked down: failures beyond max_fails within
    # fail_timeout still leave it eligible, so once it answers again the very next
    # request gets through (a down verdict would give 503 for the next 30 s).
    port = free_port()
    p = proxy(
        [{"address": f"127.0.0.1:{port}", "name": "only"}],
        health={"max_fails": 1, "fail_timeout": "30s"},
    )
    for i in range(3):
        r = p.request("/", headers=[("X-Request-ID", f"refused-{i}")])
        assert_proxy_error(r, 502, close=False, request_id=f"refused-{i}")
    upstream(["only"], ports={"only": port})
    r = p.request("/bytes/3")
    assert (r.status, r.get("X-Upstream")) == (200, "only")
    assert [e for e in p.events("upstream_down") if e.get("upstream") == "only"] == []


# --------------------------------------------------------------------------- active


@pytest.mark.parametrize("workers", [1, 2])
def test_active_check_removes_and_restores(upstream, proxy, workers):
    up = upstream(["u1", "u2"])
    p = proxy(up, workers=workers, health=ACTIVE)
    assert set(_serving(p, 4)) == {"u1", "u2"}
    up.request("/health/fail", "u1")
    _event_for(p, "upstream_down", "u1")
    # u1 itself still answers requests: only the check says it is down (in every worker:
    # worker 0 runs the checks, so with workers: 2 requests go on until worker 1 served)
    sent = 4
    got = _serving(p, 10)
    sent += 10
    while workers == 2 and p.workers_serving(4, sent) != {0, 1} and sent < 200:
        got += _serving(p, 1)
        sent += 1
    assert got == ["u2"] * len(got)
    if workers == 2:
        assert p.workers_serving(4, sent) == {0, 1}, "worker 1 served none of them"
    up.request("/health/ok", "u1")
    _event_for(p, "upstream_up", "u1")
    # back at once: round robin over two gives u1 one of the next two picks at most later
    assert "u1" in _serving(p, 4)
    assert len([e for e in p.events("upstream_down") if e.get("upstream") == "u1"]) == 1


def test_active_check_all_down_gives_503_then_back(upstream, proxy):
    up = upstream(
        ["u1", "u2"], health_fail=True
    )  # both /health answer 503 from the start
    p = proxy(up, health=ACTIVE)
    _event_for(p, "upstream_down", "u1")
    _event_for(p, "upstream_down", "u2")
    r = p.request("/", headers=[("X-Request-ID", "all-down")])
    assert_proxy_error(r, 503, close=False, request_id="all-down")
    up.request("/health/ok", "u2")
    _event_for(p, "upstream_up", "u2")
    assert _serving(p, 3) == ["u2"] * 3
