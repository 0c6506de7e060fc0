"""Metrics (contract 9; issue 9): GET /metrics after known traffic. Every counter equals
what was sent (200s, 502s, 429s, retries, errors by reason), histograms count every
request, the gauges come back to their idle values, `promtool check metrics` finds nothing
to say, and with workers: 2 (C threads, py processes) the sums over the workers still equal
the traffic sent on new connections.

Series beyond contract 9 (twinproxy_errors_total) are described in docs/behaviour.md
"Metrics"."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from typing import Any

import pytest
from admin_client import METRICS_TYPE, Admin, admin_config, rl_config
from harness import free_port, impl_argv, wait_until

SERIES_9 = [
    "twinproxy_requests_total",
    "twinproxy_request_duration_seconds",
    "twinproxy_connections_active",
    "twinproxy_bytes_received_total",
    "twinproxy_bytes_sent_total",
    "twinproxy_upstream_up",
    "twinproxy_upstream_active_connections",
    "twinproxy_upstream_idle_connections",
    "twinproxy_retries_total",
    "twinproxy_retries_skipped_total",
    "twinproxy_health_transitions_total",
    "twinproxy_queue_wait_seconds",
    "twinproxy_ratelimit_decisions_total",
    "twinproxy_ratelimit_rejected_total",
    "twinproxy_config_reloads_total",
    "twinproxy_config_generation",
    "twinproxy_build_info",
]
EXTRA = ["twinproxy_errors_total"]  # docs/behaviour.md "Metrics"

_SAMPLE = re.compile(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')

NO_PASSIVE = {"max_fails": 0}


def parse(
    text: str,
) -> tuple[list[str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """(TYPE names in order, {(sample name, labels): value}); every line is HELP, TYPE or a
    sample."""
    types: list[str] = []
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            types.append(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(m.group(3))
    return types, samples


def value(s: dict, name: str, **labels: str) -> float:
    return s.get((name, frozenset(labels.items())), 0.0)


def total(s: dict, name: str, **labels: str) -> float:
    """Sum of every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in s.items() if n == name and want <= set(ls))


def scrape(admin: Admin) -> tuple[str, dict]:
    r = admin.get("/metrics", token=None)
    assert r.status == 200
    assert r.get("Content-Type") == METRICS_TYPE
    text = r.body.decode()
    types, samples = parse(text)
    assert types == SERIES_9 + EXTRA
    return text, samples


def promtool_findings(text: str) -> str:
    """`promtool check metrics` on text: what it prints (nothing when clean) and its exit
    code. promtool comes with `make deps` (Debian's prometheus package)."""
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool missing: run `make deps` (Debian package prometheus)")
    proc = subprocess.run(
        [tool, "check", "metrics"],
        check=False,
        input=text.encode(),
        capture_output=True,
        timeout=30,
    )
    out = (proc.stdout + proc.stderr).decode().strip()
    return "" if proc.returncode == 0 and not out else f"exit {proc.returncode}: {out}"


def dead_upstream(name: str = "dead") -> dict[str, Any]:
    """An upstream entry nobody listens on: every connect is refused."""
    return {"address": f"127.0.0.1:{free_port()}", "name": name}


def _closed(p) -> list[tuple[str, str]]:
    return [("Connection", "close")]


def traffic(p, n: int, limited: int) -> list[int]:
    """n + limited GETs, each on a new connection; the statuses."""
    return [
        p.request("/bytes/10", headers=_closed(p)).status for _ in range(n + limited)
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_counters_equal_the_traffic_sent(upstream, proxy, tmp_path, workers):
    """u1 and a dead upstream, round robin, no retries, no passive health, rate_limit with
    capacity 2k and rate 0: 2k requests give exactly k 200s from u1 and k 502s
    (connect_refused, answered by the proxy), then m requests get 429. Every figure of
    /metrics equals that, summed over the workers when there are 2."""
    k, m = 6, 4
    up = upstream(["u1"])
    p = proxy(
        [*up.entries(), dead_upstream()],
        workers=workers,
        retries=0,
        health=NO_PASSIVE,
        rate_limit=rl_config(tmp_path / "rl.db", capacity=2 * k, rate=0),
        admin=admin_config(),
    )
    admin = Admin.of(p)
    statuses = traffic(p, 2 * k, m)
    # one worker: exactly k each (contract 5); two: each worker alternates on its own
    ok, bad = statuses.count(200), statuses.count(502)
    assert ok + bad == 2 * k and ok and bad, statuses
    if workers == 1:
        assert ok == bad == k, statuses
    assert statuses[2 * k :] == [429] * m, statuses
    recs = p.wait_access_log(2 * k + m) and p.access_records()
    text, s = scrape(admin)
    assert value(s, "twinproxy_requests_total", code="200", upstream="u1") == ok
    assert value(s, "twinproxy_requests_total", code="502", upstream="") == bad
    assert value(s, "twinproxy_requests_total", code="429", upstream="") == m
    assert total(s, "twinproxy_requests_total") == 2 * k + m
    # histograms: one observation per request, by the same upstream label
    assert value(s, "twinproxy_request_duration_seconds_count", upstream="u1") == ok
    assert value(s, "twinproxy_request_duration_seconds_count", upstream="") == bad + m
    assert (
        value(s, "twinproxy_request_duration_seconds_bucket", upstream="u1", le="+Inf")
        == ok
    )
    assert value(s, "twinproxy_ratelimit_decisions_total", decision="allowed") == 2 * k
    assert value(s, "twinproxy_ratelimit_decisions_total", decision="limited") == m
    assert value(s, "twinproxy_ratelimit_rejected_total") == m
    assert (
        value(s, "twinproxy_errors_total", code="502", reason="connect_refused") == bad
    )
    assert value(s, "twinproxy_errors_total", code="429", reason="rate_limited") == m
    assert total(s, "twinproxy_errors_total") == bad + m
    assert total(s, "twinproxy_retries_total") == 0
    assert value(s, "twinproxy_retries_skipped_total") == 0
    # bytes to and from clients: what the access log counted, request by request
    assert value(s, "twinproxy_bytes_sent_total", side="client") == sum(
        r["bytes_out"] for r in recs
    )
    assert value(s, "twinproxy_bytes_received_total", side="client") == sum(
        r["bytes_in"] for r in recs
    )
    assert value(s, "twinproxy_bytes_received_total", side="upstream") > 0
    assert value(s, "twinproxy_bytes_sent_total", side="upstream") > 0
    # upstream gauges and health: dead is still up (passive health off)
    assert value(s, "twinproxy_upstream_up", upstream="u1") == 1
    assert value(s, "twinproxy_upstream_up", upstream="dead") == 1
    assert value(s, "twinproxy_upstream_active_connections", upstream="u1") == 0
    assert total(s, "twinproxy_health_transitions_total") == 0
    assert value(s, "twinproxy_config_generation") == 1
    assert (
        value(
            s,
            "twinproxy_build_info",
            impl="c" if p.impl == "c" else "py",
            version=_version(p),
        )
        == 1
    )
    # every client connection closed: the gauge is back to 0; the upstream side holds the
    # pooled connections only
    gone = wait_until(
        lambda: (
            value(scrape(admin)[1], "twinproxy_connections_active", side="client") == 0
        ),
        5,
    )
    assert gone, scrape(admin)[0]
    s = scrape(admin)[1]
    assert value(s, "twinproxy_connections_active", side="upstream") == total(
        s, "twinproxy_upstream_idle_connections"
    )
    # GET /upstreams: the same figures, global over the workers
    ups = {u["name"]: u for u in admin.get("/upstreams").json()}
    assert ups["u1"]["requests"] == ok and ups["dead"]["requests"] == bad
    assert ups["dead"]["fails"] == bad and ups["u1"]["fails"] == 0
    assert ups["u1"]["idle"] == value(
        s, "twinproxy_upstream_idle_connections", upstream="u1"
    )
    assert promtool_findings(text) == ""


def _version(p) -> str:
    proc = subprocess.run(
        [*impl_argv(p.impl), "--version"],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return proc.stdout.split()[1]  # "c-proxy 0.1.0 (...)"


def test_retries_and_errors_by_reason(upstream, proxy):
    """A dead upstream first (weight 100 against 1), retries: 1: every request is retried
    once on u1 after a connect failure; twinproxy_retries_total{upstream="dead",
    phase="connect"} equals the retry events, and every request is a 200 from u1."""
    n = 5
    up = upstream(["u1"])
    dead = dict(dead_upstream(), weight=100)
    p = proxy([dead, *up.entries()], retries=1, health=NO_PASSIVE, admin=admin_config())
    admin = Admin.of(p)
    assert [p.request("/").status for _ in range(n)] == [200] * n
    retries = len(p.wait_event("retry", 1))
    p.wait_access_log(n)  # a request is counted before its access-log line is written
    _, s = scrape(admin)
    assert retries >= 1
    assert (
        value(s, "twinproxy_retries_total", upstream="dead", phase="connect") == retries
    )
    assert total(s, "twinproxy_retries_total") == retries
    assert value(s, "twinproxy_requests_total", code="200", upstream="u1") == n
    assert total(s, "twinproxy_errors_total") == 0  # retried: nothing answered in error


def test_timeouts_and_closes_are_counted_by_reason(upstream, proxy):
    """A read timeout answered 504 counts as (504, read_timeout); a keep-alive client
    closed by timeouts.idle counts as ("", idle_timeout); a head not complete within
    timeouts.header as (408, header_timeout)."""
    up = upstream(["u1"])
    p = proxy(
        up,
        retries=0,
        timeouts={"read": "300ms", "idle": "300ms", "header": "300ms"},
        admin=admin_config(),
    )
    admin = Admin.of(p)
    assert p.request("/delay/2000").status == 504
    with p.connect() as c:
        assert c.request("/").status == 200
        c.assert_closed()  # idle timeout
    with p.connect() as c:
        c.send(b"GET / HTTP/1.1\r\n")
        assert c.read_response().status == 408
    p.wait_access_log(3)  # a request is counted before its access-log line is written
    _, s = scrape(admin)
    assert value(s, "twinproxy_errors_total", code="504", reason="read_timeout") == 1
    assert value(s, "twinproxy_errors_total", code="408", reason="header_timeout") == 1
    assert value(s, "twinproxy_errors_total", code="", reason="idle_timeout") == 1
    assert value(s, "twinproxy_requests_total", code="504", upstream="") == 1
    assert value(s, "twinproxy_requests_total", code="408", upstream="") == 1


def test_queue_wait_counts_the_requests_that_waited(upstream, proxy):
    """upstream_max_connections: 1 and two concurrent slow requests: the second waits for
    the slot, so the queue histogram has exactly one observation, of at least 0.1 s."""
    up = upstream(["u1"])
    p = proxy(up, limits={"upstream_max_connections": 1}, admin=admin_config())
    admin = Admin.of(p)
    with p.connect() as a, p.connect() as b:
        a.send(b"GET /delay/300 HTTP/1.1\r\nHost: x\r\n\r\n")
        # a's request holds the only upstream connection (the /stats one is the other)
        assert wait_until(lambda: up.stats()["connections_active"] >= 2, 5)
        b.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert a.read_response().status == 200
        assert b.read_response().status == 200
    p.wait_access_log(2)
    _, s = scrape(admin)
    assert value(s, "twinproxy_queue_wait_seconds_count") == 1
    assert value(s, "twinproxy_queue_wait_seconds_bucket", le="0.1") == 0
    assert value(s, "twinproxy_queue_wait_seconds_sum") >= 0.1


def test_health_transitions_and_reloads(upstream, proxy):
    """Passive health marks a dead upstream down (upstream_down event): its upstream_up is 0
    and its transitions{to="down"} 1. A good reload counts a success and raises the
    generation; a bad config file counts a failure."""
    up = upstream(["u1"])
    p = proxy(
        [*up.entries(), dead_upstream()],
        retries=1,
        health={"max_fails": 1, "fail_timeout": "30s"},
        admin=admin_config(),
    )
    admin = Admin.of(p)
    for _ in range(4):
        assert p.request("/").status == 200
    p.wait_event("upstream_down")
    _, s = scrape(admin)
    assert value(s, "twinproxy_upstream_up", upstream="dead") == 0
    assert (
        value(s, "twinproxy_health_transitions_total", upstream="dead", to="down") == 1
    )
    assert value(s, "twinproxy_health_transitions_total", upstream="dead", to="up") == 0
    p.reload(p.config)
    p.write_config("listen: [this is not a config\n")
    p.signal(signal.SIGHUP)
    p.wait_event("reload_failed")
    _, s = scrape(admin)
    assert value(s, "twinproxy_config_reloads_total", result="success") == 1
    assert value(s, "twinproxy_config_reloads_total", result="failure") == 1
    assert value(s, "twinproxy_config_generation") == 2


def test_grafana_dashboard_uses_only_contract_series():
    """docs/grafana-dashboard.json is valid JSON, and every metric name its queries use is
    a series of contract 9 (histograms by their _bucket/_sum/_count samples); it shows
    requests by code, p50/p95/p99, upstream up, retries and limited."""
    import json
    from pathlib import Path

    dash = json.loads(
        (Path(__file__).parents[1] / "docs/grafana-dashboard.json").read_text()
    )
    allowed = set(SERIES_9)
    for h in ("twinproxy_request_duration_seconds", "twinproxy_queue_wait_seconds"):
        allowed |= {h + "_bucket", h + "_sum", h + "_count"}
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    used = {n for e in exprs for n in re.findall(r"\btwinproxy_[a-z_]+", e)}
    assert used and used <= allowed, used - allowed
    text = " ".join(exprs)
    assert "sum by (code) (rate(twinproxy_requests_total" in text
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, " in text
    for name in (
        "twinproxy_upstream_up",
        "twinproxy_retries_total",
        'decision="limited"',
    ):
        assert name in text


def test_idle_connection_closed_by_shutdown_logs_its_reason(upstream, proxy):
    """SIGTERM closes an idle keep-alive connection: one connection_closed event (debug)
    with reason shutting_down (the event behind twinproxy_errors_total{code=""})."""
    up = upstream(["u1"])
    p = proxy(up, log={"level": "debug"})
    with p.connect() as c:
        assert c.request("/").status == 200
        p.signal(signal.SIGTERM)
        c.assert_closed()
    evs = p.wait_event("connection_closed")
    assert [e["reason"] for e in evs] == ["shutting_down"], evs
