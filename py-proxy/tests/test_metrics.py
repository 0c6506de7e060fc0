"""Unit tests of pyproxy.metrics. Twin: c-proxy/tests/test_metrics.c (same names, and the
same shared case: c-proxy/tests/metrics_cases/basic.args -> basic.txt, byte for byte)."""

from __future__ import annotations

import os
from pathlib import Path

from pyproxy.metrics import C_RL_ALLOWED, C_RL_LIMITED, Counters, metrics_render

CASES = Path(__file__).parents[2] / "c-proxy/tests/metrics_cases"


def _args(path: Path) -> tuple[str, str, int, list[tuple[str, bool]], int, int]:
    impl, version, generation, allowed, limited = "", "", 0, 0, 0
    ups: list[tuple[str, bool]] = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        if key == "impl":
            impl = rest
        elif key == "version":
            version = rest
        elif key == "generation":
            generation = int(rest)
        elif key == "upstream":
            healthy, _, name = rest.partition(" ")
            ups.append((name, healthy == "1"))
        elif key == "allowed":
            allowed = int(rest)
        elif key == "limited":
            limited = int(rest)
    return impl, version, generation, ups, allowed, limited


def test_metrics_render_shared_case() -> None:
    want = (CASES / "basic.txt").read_text()
    assert metrics_render(*_args(CASES / "basic.args")) == want


def test_metrics_render_every_line_is_help_type_or_sample() -> None:
    text = metrics_render("py", "1.2.3", 1, [], 0, 0)
    assert text.endswith("\n")
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif not line.startswith("# HELP "):
            assert line.split("{")[0].split(" ")[0] in names, line
    assert "twinproxy_upstream_up" in names  # its HELP/TYPE even with no upstream


def test_counters_local_rows_summed() -> None:
    c = Counters(workers=1)
    c.v[c.row(0) + C_RL_ALLOWED] += 2
    c.v[c.row(0) + C_RL_LIMITED] += 1
    assert (c.total(C_RL_ALLOWED), c.total(C_RL_LIMITED)) == (2, 1)


def test_counters_shared_rows_summed_across_processes() -> None:
    c = Counters(workers=2, shared=True)
    pid = os.fork()
    if pid == 0:  # worker 1 writes its own row only
        c.v[c.row(1) + C_RL_LIMITED] += 5
        os._exit(0)
    c.v[c.row(0) + C_RL_LIMITED] += 1
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert c.total(C_RL_LIMITED) == 6
    assert c.total(C_RL_ALLOWED) == 0
