"""Unit tests of pyproxy.metrics. Twin: c-proxy/tests/test_metrics.c (same names, and the
same shared case: c-proxy/tests/metrics_cases/basic.args -> basic.txt, byte for byte)."""

from __future__ import annotations

import os
from pathlib import Path

from pyproxy import metrics as m
from pyproxy.reason import REASON_N, reason_from_name

CASES = Path(__file__).parents[2] / "c-proxy/tests/metrics_cases"


def _apply(path: Path) -> tuple[m.View, list[int]]:
    """The case file (see its header), applied to one row through the hot-path calls."""
    c = m.Counters(workers=1)
    v, base = c.v, c.row(0)
    view = m.View("", "", 0)
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        a = rest.split(" ")
        if key == "impl":
            view.impl = rest
        elif key == "version":
            view.version = rest
        elif key == "generation":
            view.generation = int(rest)
        elif key == "reloads":
            view.reloads_ok, view.reloads_failed = int(a[0]), int(a[1])
        elif key == "upstream":
            name = rest.split(" ", 5)[5]
            view.ups.append(m.Upstream(name, a[0] == "1", *(int(x) for x in a[1:5])))
        elif key == "label":
            view.labels.append(rest)
        elif key == "request":
            m.request(v, base, int(a[0]), int(a[1]), int(a[2]))
        elif key == "queue":
            m.queue_wait(v, base, int(a[0]))
        elif key == "retry":
            m.retry(v, base, int(a[0]), int(a[1]))
        elif key == "error":
            m.error(v, base, int(a[0]), reason_from_name(a[1], REASON_N))
        elif key == "cell":
            v[base + int(a[0])] += int(a[1])
        else:
            raise AssertionError("bad case line: " + line)
    return view, c.sum()


def test_metrics_render_shared_case() -> None:
    want = (CASES / "basic.txt").read_text()
    assert m.metrics_render(*_apply(CASES / "basic.args")) == want


def test_metrics_render_every_line_is_help_type_or_sample() -> None:
    text = m.metrics_render(m.View("py", "1.2.3", 1), [0] * m.ROW)
    assert text.endswith("\n")
    names = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.append(line.split()[2])
        elif not line.startswith("# HELP "):
            base = line.split("{")[0].split(" ")[0]
            assert any(base.startswith(n) for n in names), line
    assert "twinproxy_upstream_up" in names  # its HELP/TYPE even with no upstream
    assert len(names) == 18  # contract 9's 17 + twinproxy_errors_total


def test_metrics_bucket_bounds_are_inclusive() -> None:
    assert m.bucket(0) == 0
    assert m.bucket(500) == 0  # le="0.0005" holds 0.0005 itself
    assert m.bucket(501) == 1
    assert m.bucket(10000000) == m.BOUNDS - 1
    assert m.bucket(10000001) == m.BOUNDS  # +Inf


def test_counters_local_rows_summed() -> None:
    c = m.Counters(workers=2)
    v = c.v
    v[c.row(0) + m.C_RL_ALLOWED] += 2
    v[c.row(1) + m.C_RL_ALLOWED] += 3
    v[c.row(0) + m.C_CONN_CLIENT] += 2
    v[c.row(0) + m.C_CONN_CLIENT] -= 1
    m.request(v, c.row(0), 200, 1, 10)
    m.request(v, c.row(1), 200, 1, 10)
    m.request(v, c.row(1), 503, 0, 10)
    s = c.sum()
    assert s[m.C_RL_ALLOWED] == 5
    assert s[m.C_CONN_CLIENT] == 1
    pairs = {s[m.REQ_KEY0 + i]: s[m.REQ_N0 + i] for i in range(m.REQ_SLOTS) if s[m.REQ_KEY0 + i]}
    assert pairs == {200 * 2048 + 2: 2, 503 * 2048 + 1: 1}
    assert s[m.ucell(1, m.U_DUR_B0)] == 2


def test_counters_shared_rows_summed_across_processes() -> None:
    c = m.Counters(workers=2, shared=True)
    pid = os.fork()
    if pid == 0:  # worker 1 writes its own row only
        c.v[c.row(1) + m.C_RL_LIMITED] += 5
        m.request(c.v, c.row(1), 404, 0, 1)
        os._exit(0)
    c.v[c.row(0) + m.C_RL_LIMITED] += 1
    m.request(c.v, c.row(0), 404, 0, 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert c.total(m.C_RL_LIMITED) == 6
    assert c.total(m.C_RL_ALLOWED) == 0
    s = c.sum()
    assert sum(s[m.REQ_N0 : m.REQ_N0 + m.REQ_SLOTS]) == 2
