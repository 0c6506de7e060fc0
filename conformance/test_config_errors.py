"""Command line and config validation (contract 1, 2): a bad config exits 2 with one
line `config error: FILE:LINE: what` on stderr, and both twins print the same line."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from harness import free_port, run_impl

GOOD = """\
listen: 127.0.0.1:{port}
workers: 1
upstreams:
  - address: 127.0.0.1:9001
    name: u1
    weight: 2
balancer: round_robin
limits:
  max_header_bytes: 16k
  max_body_bytes: 10m
timeouts:
  connect: 250ms
  read: 2s
  total: 1m
  idle: 60000
log:
  level: info
  access: stderr
  format: json
"""

# name -> (text, line of the error or None when the contract does not pin it down)
BAD = {
    "unknown-top-key": (GOOD + "bogus: 1\n", 20),
    "unknown-nested-key": (GOOD.replace("  read: 2s\n", "  reed: 2s\n"), 13),
    "unknown-upstream-key": (GOOD.replace("    weight: 2\n", "    wieght: 2\n"), 6),
    "wrong-type-workers": (GOOD.replace("workers: 1\n", "workers: many\n"), 2),
    "wrong-type-balancer": (
        GOOD.replace("balancer: round_robin\n", "balancer: [a, b]\n"),
        7,
    ),
    "bad-duration": (GOOD.replace("  read: 2s\n", "  read: 2 parsecs\n"), 13),
    "bad-duration-unit": (GOOD.replace("  connect: 250ms\n", "  connect: 250us\n"), 12),
    "bad-size": (
        GOOD.replace("  max_body_bytes: 10m\n", "  max_body_bytes: 10q\n"),
        10,
    ),
    "bad-balancer": (GOOD.replace("balancer: round_robin\n", "balancer: fastest\n"), 7),
    "weight-zero": (GOOD.replace("    weight: 2\n", "    weight: 0\n"), 6),
    "weight-too-big": (GOOD.replace("    weight: 2\n", "    weight: 1001\n"), 6),
    "bad-listen": (GOOD.replace("listen: 127.0.0.1:{port}\n", "listen: nowhere\n"), 1),
    "bad-upstream-address": (GOOD.replace("127.0.0.1:9001", "127.0.0.1:99999"), 4),
    "bad-log-format": (GOOD.replace("  format: json\n", "  format: xml\n"), 19),
    "empty-upstreams": (
        GOOD.replace(
            "upstreams:\n  - address: 127.0.0.1:9001\n    name: u1\n    weight: 2\n",
            "upstreams: []\n",
        ),
        3,
    ),
    "missing-upstreams": (
        GOOD.replace(
            "upstreams:\n  - address: 127.0.0.1:9001\n    name: u1\n    weight: 2\n", ""
        ),
        None,
    ),
    "yaml-syntax": (GOOD.replace("  read: 2s\n", "  read: [2s\n"), None),
    "rate-limit-bad-key": (GOOD + "rate_limit:\n  key: path\n", 21),
    "rate-limit-fractional-capacity": (
        GOOD + "rate_limit:\n  default: {capacity: 1.5, rate_per_sec: 1}\n",
        21,
    ),
    "admin-bad-listen": (GOOD + "admin:\n  listen: nowhere\n", 21),
    "retry-budget-percent": (GOOD + "retry_budget: {percent: 101}\n", 20),
    "retry-budget-negative": (
        GOOD + "retry_budget:\n  percent: -5\n  min_concurrent: 3\n",
        21,
    ),
    "retry-budget-unknown-key": (
        GOOD + "retry_budget:\n  percent: 20\n  burst: 3\n",
        22,
    ),
}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(text.replace("{port}", str(free_port())))
    return f


def _assert_config_error(proc, path: Path, line: int | None) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"want exactly one line on stderr, got {proc.stderr!r}"
    want = (
        re.escape(f"config error: {path}:") + (str(line) if line else r"\d+") + ": .+"
    )
    assert re.fullmatch(want, lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize("name", list(BAD))
def test_bad_config_exits_2_with_file_line(impl, tmp_path, name):
    text, line = BAD[name]
    path = _write(tmp_path, name, text)
    _assert_config_error(run_impl(impl, ["--config", str(path)]), path, line)


@pytest.mark.parametrize(
    "name",
    [
        "unknown-top-key",
        "bad-duration",
        "missing-upstreams",
        "rate-limit-bad-key",
        "admin-bad-listen",
    ],
)
def test_check_reports_bad_config(impl, tmp_path, name):
    text, line = BAD[name]
    path = _write(tmp_path, name, text)
    _assert_config_error(run_impl(impl, ["--check", "--config", str(path)]), path, line)


def test_rate_limit_and_admin_accepted(impl, tmp_path):
    # contract 2: rate_limit and admin are implemented: accepted by --check (a store file
    # that does not exist yet is valid for --check, and is not created)
    store = tmp_path / "later.db"
    text = (
        GOOD
        + f"admin:\n  listen: 127.0.0.1:{free_port()}\n"
        + f"rate_limit:\n  key: client_ip\n  store: {store}\n"
    )
    path = _write(tmp_path, "rl-admin", text)
    proc = run_impl(impl, ["--check", "--config", str(path)])
    assert proc.returncode == 0, proc.stderr
    assert not store.exists()


def test_check_accepts_good_config(impl, tmp_path):
    path = _write(tmp_path, "good", GOOD)
    proc = run_impl(impl, ["--check", "--config", str(path)])
    assert proc.returncode == 0, proc.stderr


def _every_documented_key(tmp_path: Path) -> str:
    text = (
        GOOD
        + """\
admin:
  listen: 127.0.0.1:{aport}
  token: ""
hash_key: header:X-Key
health:
  max_fails: 3
  fail_timeout: 10s
  check:
    path: /healthz
    interval: 2s
    timeout: 1s
    rise: 2
    fall: 2
retries: 2
retry_budget: {{percent: 20, min_concurrent: 3}}
rate_limit:
  key: client_ip
  default: {{capacity: 100, rate_per_sec: 50}}
  store: {store}
  ipv6_prefix: 64
  max_clients: 100000
""".replace("{aport}", str(free_port()))
        .replace("{store}", str(tmp_path / "t.db"))
        .replace("{{", "{")
        .replace("}}", "}")
    )
    text = text.replace(
        "limits:\n",
        "limits:\n  max_client_connections: 10000\n  upstream_max_connections: 256\n"
        "  upstream_idle_connections: 64\n",
    ).replace(
        "  total: 1m\n",
        "  total: 1m\n  header: 10s\n  write: 30s\n  queue: 1s\n  shutdown: 30s\n",
    )
    return text


def test_check_accepts_every_documented_key(impl, tmp_path):
    path = _write(tmp_path, "full", _every_documented_key(tmp_path))
    proc = run_impl(impl, ["--check", "--config", str(path)])
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("balancer", ["round_robin", "random", "least_conn", "hash"])
def test_every_balancer_accepted(impl, tmp_path, balancer):
    text = GOOD.replace("balancer: round_robin\n", f"balancer: {balancer}\n")
    path = _write(tmp_path, balancer, text)
    proc = run_impl(impl, ["--check", "--config", str(path)])
    assert proc.returncode == 0, proc.stderr


def test_retry_budget_accepted(impl, tmp_path):
    for i, budget in enumerate(
        ("{percent: 20, min_concurrent: 3}", "{percent: 0, min_concurrent: 0}")
    ):
        path = _write(tmp_path, f"budget{i}", GOOD + f"retry_budget: {budget}\n")
        proc = run_impl(impl, ["--check", "--config", str(path)])
        assert proc.returncode == 0, proc.stderr


def test_port_in_use_names_the_listen_line(impl, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        path = tmp_path / "busy.yaml"
        path.write_text(GOOD.replace("{port}", str(port)))
        _assert_config_error(run_impl(impl, ["--config", str(path)]), path, 1)
    finally:
        busy.close()


def test_missing_config_file(impl, tmp_path):
    path = tmp_path / "nope.yaml"
    proc = run_impl(impl, ["--config", str(path)])
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"config error: {path}"), proc.stderr


def test_version_exits_0(impl):
    proc = run_impl(impl, ["--version"])
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\d", proc.stdout), proc.stdout


@pytest.mark.both_impls
def test_both_twins_print_the_same_line(tmp_path):
    for name, (text, _line) in BAD.items():
        path = _write(tmp_path, name, text)
        c = run_impl("c", ["--check", "--config", str(path)])
        py = run_impl("py", ["--check", "--config", str(path)])
        assert (c.returncode, c.stderr) == (py.returncode, py.stderr), name


def test_yaml11_words_are_plain_strings(impl, tmp_path):
    # docs/config.md: yes/no/off are strings, not booleans (libyaml and PyYAML must agree).
    text = GOOD.replace("  access: stderr\n", "  access: off\n").replace(
        "    name: u1\n", "    name: yes\n"
    )
    path = _write(tmp_path, "yaml11", text)
    proc = run_impl(impl, ["--check", "--config", str(path)])
    assert proc.returncode == 0, proc.stderr


def test_admin_listen_in_use_is_config_error(impl, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        path = _write(
            tmp_path, "admin-busy", GOOD + f"admin:\n  listen: 127.0.0.1:{port}\n"
        )
        line = _assert_config_error(run_impl(impl, ["--config", str(path)]), path, 21)
        assert line.endswith(": admin.listen: address in use"), line
    finally:
        busy.close()
