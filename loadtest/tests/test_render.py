"""nginx and HAProxy configs rendered from one twinproxy YAML: content, and both products
accept the files (nginx -t, haproxy -c)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from loadtest.runner import render, tpconfig

pytestmark = pytest.mark.timeout(30)

FIX = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


def _doc(**over: object) -> dict:
    doc = yaml.safe_load((FIX / "twinproxy.yaml").read_text())
    doc.update(over)
    return doc


def _render(tmp_path: Path, doc: dict) -> dict[str, Path]:
    src = tpconfig.write(doc, tmp_path / "twinproxy.yaml")
    return render.render_files(src, tmp_path / "out")


def nginx_ok(files: dict[str, Path]) -> subprocess.CompletedProcess:
    prefix = files["nginx_prefix"].resolve()
    return subprocess.run(
        [
            "nginx",
            "-t",
            "-p",
            str(prefix),
            "-c",
            str(files["nginx"].resolve()),
            "-e",
            str(prefix / "error.log"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )


def haproxy_ok(files: dict[str, Path]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["haproxy", "-c", "-f", str(files["haproxy"])],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_durations_and_sizes() -> None:
    assert tpconfig.duration_ms("250ms") == 250
    assert tpconfig.duration_ms("2s") == 2000
    assert tpconfig.duration_ms("1m") == 60000
    assert tpconfig.duration_ms(1500) == 1500
    assert tpconfig.size_bytes("16k") == 16384
    assert tpconfig.size_bytes("10m") == 10 * 1024 * 1024
    assert tpconfig.size_bytes(7) == 7
    with pytest.raises(ValueError):
        tpconfig.duration_ms("soon")


def test_parse_fills_contract_defaults() -> None:
    cfg = tpconfig.parse({"upstreams": [{"address": "127.0.0.1:1"}]})
    assert cfg.listen == "127.0.0.1:8080"
    assert cfg.upstreams[0].name == "127.0.0.1:1"
    assert cfg.timeouts_ms["read"] == 30000
    assert cfg.limits["upstream_idle_connections"] == 64
    assert cfg.retries == 2


def test_nginx_content(tmp_path: Path) -> None:
    files = _render(tmp_path, _doc())
    text = files["nginx"].read_text()
    prefix = str(files["nginx_prefix"].resolve())
    assert "daemon off;" in text and "master_process off;" in text
    assert f"pid {prefix}/nginx.pid;" in text
    assert "access_log off;" in text
    assert "/etc/" not in text
    # the same upstreams and weights, keep-alive pool both sides
    assert "server 127.0.0.1:19001 weight=1" in text
    assert "server 127.0.0.1:19002 weight=3" in text
    assert (
        "keepalive 64;" in text
    )  # 32 idle per upstream x 2 upstreams (nginx counts per group)
    assert "proxy_http_version 1.1;" in text
    assert 'proxy_set_header Connection "";' in text
    assert "proxy_connect_timeout 500ms;" in text
    assert "proxy_read_timeout 2000ms;" in text
    assert "max_fails=3 fail_timeout=10s" in text
    assert "proxy_next_upstream error timeout;" in text
    assert "proxy_next_upstream_tries 3;" in text
    assert "listen 127.0.0.1:18080;" in text


def test_haproxy_content(tmp_path: Path) -> None:
    files = _render(tmp_path, _doc())
    text = files["haproxy"].read_text()
    assert "http-reuse always" in text
    assert "balance roundrobin" in text
    assert "timeout connect 500ms" in text
    assert "timeout server 2000ms" in text
    assert "timeout client 60000ms" in text
    assert "server u1 127.0.0.1:19001 weight 1 maxconn 128 pool-max-conn 32" in text
    assert "server u2 127.0.0.1:19002 weight 3" in text
    assert "retries 2" in text and "option redispatch 1" in text
    assert "retry-on conn-failure" in text
    assert "bind 127.0.0.1:18080" in text
    assert " log " not in text


def test_admin_listen_renders_stats_endpoints(tmp_path: Path) -> None:
    files = _render(tmp_path, _doc(admin={"listen": "127.0.0.1:18081"}))
    nginx = files["nginx"].read_text()
    assert "listen 127.0.0.1:18081;" in nginx
    assert "location = /stub_status { stub_status; }" in nginx
    haproxy = files["haproxy"].read_text()
    assert "bind 127.0.0.1:18081" in haproxy
    assert "stats uri /stats" in haproxy
    assert "use-service prometheus-exporter if { path /metrics }" in haproxy
    (tmp_path / "noadmin").mkdir()
    plain = _render(tmp_path / "noadmin", _doc())
    assert "stub_status" not in plain["nginx"].read_text()
    assert "frontend stats" not in plain["haproxy"].read_text()


def test_retries_off_renders_off_both(tmp_path: Path) -> None:
    files = _render(tmp_path, _doc(retries=0))
    assert "proxy_next_upstream off;" in files["nginx"].read_text()
    assert "proxy_next_upstream_tries 1;" in files["nginx"].read_text()
    h = files["haproxy"].read_text()
    assert "retries 0" in h and "retry-on" not in h


@pytest.mark.parametrize(
    "balancer,hash_key,nginx_line,haproxy_line",
    [
        ("random", None, "random;", "balance random"),
        ("least_conn", None, "least_conn;", "balance leastconn"),
        ("hash", "client_ip", "hash $remote_addr consistent;", "balance source"),
        (
            "hash",
            "header:X-API-Key",
            "hash $http_x_api_key consistent;",
            "balance hdr(X-API-Key)",
        ),
        ("hash", "path", "hash $uri consistent;", "balance uri"),
    ],
)
def test_balancers(
    tmp_path: Path,
    balancer: str,
    hash_key: str | None,
    nginx_line: str,
    haproxy_line: str,
) -> None:
    doc = _doc(balancer=balancer)
    if hash_key:
        doc["hash_key"] = hash_key
    files = _render(tmp_path, doc)
    assert nginx_line in files["nginx"].read_text()
    assert haproxy_line in files["haproxy"].read_text()


def test_haproxy_maxconn_capped_to_fd_limit() -> None:
    cfg = tpconfig.parse(_doc())
    text = render.haproxy_cfg(cfg, nofile=1200)
    assert "maxconn 500" in text  # (1200 - 200) // 2


needs_nginx = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx not installed (make deps)"
)
needs_haproxy = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy not installed (make deps)"
)


@needs_nginx
@pytest.mark.parametrize(
    "variant",
    [
        "fixture",
        "repo",
        "retries0",
        "hash",
        "check",
        "rl-ip",
        "rl-header",
        "rl-slow",
        "rl-zero",
        "admin",
    ],
)
def test_nginx_accepts_rendered(tmp_path: Path, variant: str) -> None:
    files = _render(tmp_path, _variant(variant))
    p = nginx_ok(files)
    assert p.returncode == 0, p.stderr


@needs_haproxy
@pytest.mark.parametrize(
    "variant",
    [
        "fixture",
        "repo",
        "retries0",
        "hash",
        "check",
        "rl-ip",
        "rl-header",
        "rl-slow",
        "rl-zero",
        "admin",
    ],
)
def test_haproxy_accepts_rendered(tmp_path: Path, variant: str) -> None:
    files = _render(tmp_path, _variant(variant))
    p = haproxy_ok(files)
    assert p.returncode == 0, p.stdout + p.stderr


def _variant(name: str) -> dict:
    if name == "repo":
        return yaml.safe_load((ROOT / "twinproxy.yaml").read_text())
    if name == "retries0":
        return _doc(retries=0)
    if name == "admin":
        return _doc(admin={"listen": "127.0.0.1:18081"})
    if name == "hash":
        return _doc(balancer="hash", hash_key="header:X-API-Key")
    if name.startswith("rl-"):
        key, cap, rate = {
            "rl-ip": ("client_ip", 20, 100),
            "rl-header": ("header:X-API-Key", 5, 2),
            "rl-slow": ("client_ip", 3, 0.25),
            "rl-zero": ("client_ip", 10, 0),
        }[name]
        return _doc(
            rate_limit={
                "key": key,
                "default": {"capacity": cap, "rate_per_sec": rate},
                "store": "rl.db",
            }
        )
    if name == "check":
        return _doc(
            health={
                "max_fails": 2,
                "fail_timeout": "5s",
                "check": {
                    "path": "/health",
                    "interval": "1s",
                    "timeout": "500ms",
                    "rise": 2,
                    "fall": 2,
                },
            }
        )
    return _doc()


def test_bench_config_is_contract_only() -> None:
    """The runner's per-scenario YAML uses only contract keys (the twins reject unknown ones)."""
    doc = tpconfig.bench_config(
        "127.0.0.1:1", [("127.0.0.1:2", "u1")], timeouts={"read": "200ms"}, retries=0
    )
    assert set(doc) <= {
        "listen",
        "workers",
        "admin",
        "upstreams",
        "balancer",
        "hash_key",
        "limits",
        "timeouts",
        "health",
        "retries",
        "rate_limit",
        "log",
    }
    assert doc["workers"] == 1 and doc["log"]["access"] == "off"
    assert doc["timeouts"]["read"] == "200ms"
    cfg = tpconfig.parse(yaml.safe_load(yaml.safe_dump(doc)))
    assert cfg.timeouts_ms["read"] == 200 and cfg.retries == 0


def test_rate_limit_rendered_closest_equivalents(tmp_path: Path) -> None:
    """nginx: leaky bucket with burst = capacity - 1, nodelay, 429; HAProxy: admitted
    requests (gpc0) over a window of capacity / rate, 429 (docs/benchmarking.md)."""
    doc = tpconfig.bench_config(
        "127.0.0.1:1",
        [("127.0.0.1:2", "u1")],
        rate_limit={"capacity": 20, "rate_per_sec": 100},
    )
    assert doc["rate_limit"] == {
        "key": "client_ip",
        "default": {"capacity": 20, "rate_per_sec": 100},
        "store": "ratelimit.db",
    }
    files = _render(tmp_path, doc)
    n = files["nginx"].read_text()
    assert "limit_req_zone $binary_remote_addr zone=tp_rl:16m rate=100r/s;" in n
    assert "limit_req zone=tp_rl burst=19 nodelay;" in n
    assert "limit_req_status 429;" in n
    h = files["haproxy"].read_text()
    assert "store gpc0,gpc0_rate(200ms)" in h
    assert "http-request track-sc0 src" in h
    assert "http-request deny deny_status 429 if { sc_gpc0_rate(0) ge 20 }" in h
    # the counter is bumped only for admitted requests: after the deny rule
    assert h.index("deny_status 429") < h.index("sc-inc-gpc0(0)")
    assert render.nginx_rate(0.25) == "15r/m" and render.nginx_rate(7) == "7r/s"
    # without rate_limit: comments only
    (tmp_path / "plain").mkdir()
    plain = _render(tmp_path / "plain", _doc())
    assert "limit_req" not in plain["nginx"].read_text().replace(
        "# rate_limit: off", ""
    )
    assert "stick-table" not in plain["haproxy"].read_text()
