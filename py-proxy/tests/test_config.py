"""Unit tests of pyproxy.config. Twin: c-proxy/tests/test_config.c (same cases,
same expected messages).

The files in c-proxy/tests/config_cases/ are shared with the twin: each NN-*.yaml
starts with "# expect: LINE: message" and must fail with exactly
"PATH:LINE: message"; each ok-*.yaml must load.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pyproxy.config import (
    Config,
    ConfigAddr,
    ConfigBalancer,
    ConfigError,
    ConfigKeyKind,
    ConfigLogFormat,
    ConfigLogLevel,
    config_load,
    config_load_string,
    parse_addr,
    parse_duration,
    parse_size,
)

CASES = Path(__file__).parents[2] / "c-proxy/tests/config_cases"
EXAMPLE = Path(__file__).parents[2] / "twinproxy.yaml"
MIN_UP = "upstreams:\n  - address: 127.0.0.1:9001\n"


# ---- helpers ---------------------------------------------------------------------


def load(text: str) -> Config:
    return config_load_string("t.yaml", text)


def expect_error(text: str, want: str) -> None:
    """Loads text, which must fail with exactly want."""
    with pytest.raises(ConfigError) as e:
        load(text)
    assert str(e.value) == want


def assert_addr(a: ConfigAddr, family: socket.AddressFamily, host: str, port: int) -> None:
    assert a.family == family
    assert a.sockaddr[0] == host
    assert a.sockaddr[1] == port
    assert a.port == port


# ---- defaults and every key ---------------------------------------------------------


def test_defaults() -> None:
    cfg = load(MIN_UP)
    assert cfg.path == "t.yaml"
    assert cfg.listen.text == "127.0.0.1:8080"
    assert_addr(cfg.listen, socket.AF_INET, "127.0.0.1", 8080)
    assert cfg.listen.host == "127.0.0.1"
    assert cfg.listen.line == 0
    assert cfg.workers == 1
    assert cfg.admin_enabled is False
    assert cfg.admin_listen is None
    assert cfg.admin_token == ""
    assert len(cfg.upstreams) == 1
    assert cfg.upstreams[0].name == "127.0.0.1:9001"
    assert cfg.upstreams[0].addr.text == "127.0.0.1:9001"
    assert cfg.upstreams[0].address == "127.0.0.1:9001"
    assert (cfg.upstreams[0].host, cfg.upstreams[0].port) == ("127.0.0.1", 9001)
    assert_addr(cfg.upstreams[0].addr, socket.AF_INET, "127.0.0.1", 9001)
    assert cfg.upstreams[0].addr.line == 2
    assert cfg.upstreams[0].weight == 1
    assert cfg.balancer is ConfigBalancer.ROUND_ROBIN
    assert cfg.hash_key is ConfigKeyKind.CLIENT_IP
    assert cfg.hash_header is None
    assert cfg.limits.max_client_connections == 10000
    assert cfg.limits.max_header_bytes == 16384
    assert cfg.limits.max_body_bytes == 0
    assert cfg.limits.upstream_max_connections == 256
    assert cfg.limits.upstream_idle_connections == 64
    assert cfg.timeouts.connect_ms == 1000
    assert cfg.timeouts.header_ms == 10000
    assert cfg.timeouts.idle_ms == 60000
    assert cfg.timeouts.read_ms == 30000
    assert cfg.timeouts.write_ms == 30000
    assert cfg.timeouts.total_ms == 60000
    assert cfg.timeouts.queue_ms == 1000
    assert cfg.timeouts.shutdown_ms == 30000
    assert cfg.timeouts.min_rate == 0
    assert cfg.timeouts.min_rate_window_ms == 10000
    assert cfg.health.max_fails == 3
    assert cfg.health.fail_timeout_ms == 10000
    assert cfg.health.check.enabled is False
    assert cfg.health.check.path == "/healthz"
    assert cfg.health.check.interval_ms == 2000
    assert cfg.health.check.timeout_ms == 1000
    assert cfg.health.check.rise == 2
    assert cfg.health.check.fall == 2
    assert cfg.retries == 2
    assert cfg.retry_budget.percent == 20
    assert cfg.retry_budget.min_concurrent == 3
    assert cfg.rate_limit.enabled is False
    assert cfg.rate_limit.key is ConfigKeyKind.CLIENT_IP
    assert cfg.rate_limit.key_header is None
    assert cfg.rate_limit.default_capacity == 100.0
    assert cfg.rate_limit.default_rate_per_sec == 50.0
    assert cfg.rate_limit.store == "twinproxy.db"
    assert cfg.rate_limit.ipv6_prefix == 64
    assert cfg.rate_limit.max_clients == 100000
    assert cfg.log.level is ConfigLogLevel.INFO
    assert cfg.log.access == "stdout"
    assert cfg.log.format is ConfigLogFormat.JSON


def test_empty_sections() -> None:
    """Sections present but empty keep their defaults, and enable what they enable.
    An empty rate_limit: enables rate limiting with every default; an empty admin: without
    a listen leaves the admin API off."""
    cfg = load(
        MIN_UP + "limits: {}\ntimeouts: {}\nhealth: {check: {}}\nretry_budget: {}\nlog: {}\n"
    )
    assert cfg.limits.max_header_bytes == 16384
    assert cfg.timeouts.read_ms == 30000
    assert cfg.health.check.enabled is True
    assert cfg.health.check.path == "/healthz"
    assert cfg.retry_budget.percent == 20
    assert cfg.retry_budget.min_concurrent == 3
    assert cfg.rate_limit.enabled is False
    assert cfg.rate_limit.default_capacity == 100.0
    assert cfg.admin_enabled is False
    cfg = load(MIN_UP + "log: {}\nrate_limit: {}\nadmin: {}\n")
    assert cfg.rate_limit.enabled is True
    assert cfg.rate_limit.store == "twinproxy.db"
    assert cfg.rate_limit.store_line == 4  # no store key: the line of rate_limit
    assert cfg.admin_enabled is False


def test_every_key() -> None:
    path = str(CASES / "ok-full.yaml")
    cfg = config_load(path)
    assert cfg.path == path
    assert_addr(cfg.listen, socket.AF_INET, "0.0.0.0", 18080)
    assert cfg.listen.line == 2
    assert cfg.workers == 4
    assert cfg.admin_enabled is False  # admin: is refused until it ships (62-)
    assert cfg.admin_listen is None
    assert cfg.admin_token == ""
    assert len(cfg.upstreams) == 3
    assert cfg.upstreams[0].name == "u1"
    assert cfg.upstreams[0].weight == 5
    assert cfg.upstreams[1].name == "[::1]:9002"
    assert_addr(cfg.upstreams[1].addr, socket.AF_INET6, "::1", 9002)
    assert cfg.upstreams[1].host == "::1"
    assert cfg.upstreams[1].weight == 1
    assert cfg.upstreams[2].name == "u3"
    assert_addr(cfg.upstreams[2].addr, socket.AF_INET, "10.0.0.3", 80)
    assert cfg.upstreams[2].weight == 1000
    assert cfg.balancer is ConfigBalancer.HASH
    assert cfg.hash_key is ConfigKeyKind.HEADER
    assert cfg.hash_header == "X-User"
    assert cfg.limits.max_client_connections == 500
    assert cfg.limits.max_header_bytes == 8192
    assert cfg.limits.max_body_bytes == 10 * 1024 * 1024
    assert cfg.limits.upstream_max_connections == 32
    assert cfg.limits.upstream_idle_connections == 0
    assert cfg.timeouts.connect_ms == 250
    assert cfg.timeouts.header_ms == 2000
    assert cfg.timeouts.idle_ms == 60000
    assert cfg.timeouts.read_ms == 3600000
    assert cfg.timeouts.write_ms == 1500
    assert cfg.timeouts.total_ms == 90000
    assert cfg.timeouts.queue_ms == 100
    assert cfg.timeouts.shutdown_ms == 0
    assert cfg.timeouts.min_rate == 2048
    assert cfg.timeouts.min_rate_window_ms == 3000
    assert cfg.health.max_fails == 0
    assert cfg.health.fail_timeout_ms == 5000
    assert cfg.health.check.enabled is True
    assert cfg.health.check.path == "/ping?full=1"
    assert cfg.health.check.interval_ms == 500
    assert cfg.health.check.timeout_ms == 200
    assert cfg.health.check.rise == 3
    assert cfg.health.check.fall == 4
    assert cfg.retries == 0
    assert cfg.retry_budget.percent == 50
    assert cfg.retry_budget.min_concurrent == 10
    assert cfg.rate_limit.enabled is False  # rate_limit: is refused until it ships (61-)
    assert cfg.rate_limit.key is ConfigKeyKind.CLIENT_IP
    assert cfg.rate_limit.key_header is None
    assert cfg.rate_limit.default_capacity == 100.0
    assert cfg.rate_limit.default_rate_per_sec == 50.0
    assert cfg.rate_limit.store == "twinproxy.db"
    assert cfg.rate_limit.ipv6_prefix == 64
    assert cfg.rate_limit.max_clients == 100000
    assert cfg.log.level is ConfigLogLevel.DEBUG
    assert cfg.log.access == "/var/log/twinproxy/access.log"
    assert cfg.log.format is ConfigLogFormat.TEXT


def test_enums_and_key_forms() -> None:
    for balancer in ConfigBalancer:
        assert load(MIN_UP + f"balancer: {balancer.value}\n").balancer is balancer
    for level in ConfigLogLevel:
        cfg = load(MIN_UP + f"log: {{level: {level.value}, format: json}}\n")
        assert cfg.log.level is level
        assert cfg.log.format is ConfigLogFormat.JSON
    cfg = load(MIN_UP + "hash_key: path\n")
    assert cfg.hash_key is ConfigKeyKind.PATH
    assert cfg.hash_header is None
    expect_error(
        MIN_UP + "hash_key: path\nrate_limit: {key: path}\n",
        't.yaml:4: rate_limit.key: unknown value "path" (expected client_ip | header:NAME)',
    )
    cfg = load(MIN_UP + "rate_limit:\n  key: header:X-API-Key\n  store: /tmp/x.db\n")
    assert cfg.rate_limit.key is ConfigKeyKind.HEADER
    assert cfg.rate_limit.key_header == "X-API-Key"
    assert cfg.rate_limit.store_line == 5
    cfg = load(MIN_UP + 'hash_key: client_ip\nlog: {access: "off"}\n')
    assert cfg.hash_key is ConfigKeyKind.CLIENT_IP
    assert cfg.log.access == "off"


def test_flow_anchors_quotes() -> None:
    """Quoting never changes what a scalar means; anchors and flow style are plain YAML."""
    cfg = load(
        'upstreams: [{address: "127.0.0.1:9001", weight: "3"}, {address: 127.0.0.1:9002, '
        "name: 'b'}]\n"
        'timeouts: {read: &t "5s", write: *t, total: 2m}\n'
        "limits: {max_header_bytes: 1M, max_body_bytes: 1G}\n"
        'retries: "1"\n'
        'retry_budget: {percent: &p "7", min_concurrent: *p}\n'
    )
    assert len(cfg.upstreams) == 2
    assert cfg.upstreams[0].weight == 3
    assert cfg.upstreams[1].name == "b"
    assert cfg.timeouts.read_ms == 5000
    assert cfg.timeouts.write_ms == 5000
    assert cfg.timeouts.total_ms == 120000
    assert cfg.limits.max_header_bytes == 1048576
    assert cfg.limits.max_body_bytes == 1073741824
    assert cfg.retries == 1
    assert cfg.retry_budget.percent == 7
    assert cfg.retry_budget.min_concurrent == 7


def test_ipv6_listen() -> None:
    cfg = load('listen: "[::1]:8443"\n' + MIN_UP)
    assert cfg.listen.text == "[::1]:8443"
    assert_addr(cfg.listen, socket.AF_INET6, "::1", 8443)
    assert cfg.listen.host == "::1"
    assert cfg.listen.line == 1
    assert cfg.admin_enabled is False
    cfg = load("listen: \"[::1]:8443\"\nadmin:\n  listen: '[::]:9443'\n  token: t\n" + MIN_UP)
    assert cfg.admin_enabled is True
    assert cfg.admin_listen is not None
    assert_addr(cfg.admin_listen, socket.AF_INET6, "::", 9443)
    assert cfg.admin_listen.line == 3
    assert cfg.admin_token == "t"


def test_example_config() -> None:
    if not EXAMPLE.exists():
        pytest.skip("no twinproxy.yaml")
    cfg = config_load(str(EXAMPLE))
    assert len(cfg.upstreams) == 2
    assert cfg.upstreams[1].name == "u2"


def test_frozen() -> None:
    cfg = load(MIN_UP)
    with pytest.raises(AttributeError):
        cfg.workers = 2  # type: ignore[misc]


# ---- scalar parsers ---------------------------------------------------------------

DURATIONS_GOOD = [
    ("0", 0),
    ("250", 250),
    ("250ms", 250),
    ("2s", 2000),
    ("1m", 60000),
    ("1h", 3600000),
    ("007s", 7000),
    ("596h", 2145600000),
    ("2147483647", 2147483647),
]
DURATIONS_BAD = [
    "",
    "3x",
    "1.5s",
    "-1",
    "1 s",
    " 1s",
    "1S",
    "1d",
    "ms",
    "s",
    "2147483648",
    "597h",
    "0x10",
    "1_000",
    "1sms",
    "99999999999999999999999",
    "\u0661s",  # a non-ASCII digit: int() would take it, the C twin would not
]


@pytest.mark.parametrize(("text", "ms"), DURATIONS_GOOD)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", DURATIONS_BAD)
def test_parse_duration_bad(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


SIZES_GOOD = [
    ("0", 0),
    ("16384", 16384),
    ("16k", 16384),
    ("16K", 16384),
    ("10m", 10485760),
    ("10M", 10485760),
    ("1g", 1073741824),
    ("2G", 2147483648),
    ("9223372036854775807", 9223372036854775807),
    ("8589934591g", 8589934591 * 1073741824),
]
SIZES_BAD = [
    "",
    "16q",
    "16kb",
    "1.5k",
    "-1",
    "k",
    "1t",
    " 16k",
    "16 k",
    "0x10",
    "9223372036854775808",
    "8589934592g",
]


@pytest.mark.parametrize(("text", "size"), SIZES_GOOD)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", SIZES_BAD)
def test_parse_size_bad(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


ADDRS_GOOD = [
    ("127.0.0.1:8080", socket.AF_INET, "127.0.0.1", 8080),
    ("0.0.0.0:1", socket.AF_INET, "0.0.0.0", 1),
    ("localhost:65535", socket.AF_INET, "127.0.0.1", 65535),
    ("10.1.2.3:080", socket.AF_INET, "10.1.2.3", 80),
    ("[::1]:9001", socket.AF_INET6, "::1", 9001),
    ("[::]:80", socket.AF_INET6, "::", 80),
    ("[2001:db8::1]:443", socket.AF_INET6, "2001:db8::1", 443),
    ("[::ffff:127.0.0.1]:80", socket.AF_INET6, "::ffff:127.0.0.1", 80),
]
ADDRS_BAD = [
    ("", "expected host:port or [v6]:port"),
    ("localhost", "expected host:port or [v6]:port"),
    ("[::1]", "expected [v6]:port"),
    ("[::1]8080", "expected [v6]:port"),
    ("[::1:8080", "expected [v6]:port"),
    (":8080", "missing host"),
    ("[]:8080", "missing host"),
    ("::1:8080", "IPv6 address must be in brackets"),
    ("127.0.0.1:", "bad port"),
    ("127.0.0.1:http", "bad port"),
    ("127.0.0.1:-1", "bad port"),
    ("127.0.0.1:123456", "bad port"),
    ("127.0.0.1:0", "port must be 1..65535"),
    ("127.0.0.1:65536", "port must be 1..65535"),
    ("example.com:80", "host must be an IP address or localhost"),
    ("127.1:80", "host must be an IP address or localhost"),
    ("256.0.0.1:80", "host must be an IP address or localhost"),
    ("*:80", "host must be an IP address or localhost"),
    ("[127.0.0.1]:80", "bad IPv6 address"),
    ("[::g]:80", "bad IPv6 address"),
    ("[localhost]:80", "bad IPv6 address"),
    ("1234567890" * 12 + "12345678:1", "too long"),
]


@pytest.mark.parametrize(("text", "family", "host", "port"), ADDRS_GOOD)
def test_parse_addr(text: str, family: socket.AddressFamily, host: str, port: int) -> None:
    a = parse_addr(text)
    assert a.text == text
    assert a.line == 0
    assert_addr(a, family, host, port)


@pytest.mark.parametrize(("text", "why"), ADDRS_BAD)
def test_parse_addr_bad(text: str, why: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_addr(text)
    assert str(e.value) == why


# ---- errors --------------------------------------------------------------------------

ERRORS_FROM_STRING = [
    ("listne: 127.0.0.1:8080\n" + MIN_UP, 't.yaml:1: unknown key "listne"'),
    (MIN_UP + "timeouts:\n  read: 3x\n", 't.yaml:4: timeouts.read: bad duration "3x"'),
    (MIN_UP + "upstreams: []\n", 't.yaml:3: duplicate key "upstreams"'),
    (
        "upstreams:\n  - address: 127.0.0.1:9001\n  - address: 127.0.0.1:9002\n    weight: 1001\n",
        "t.yaml:4: upstreams[1].weight: must be 1..1000",
    ),
    ("workers: 2\n", "t.yaml:1: upstreams: at least one upstream is required"),
    ("", "t.yaml:1: upstreams: at least one upstream is required"),
    ("~\n", "t.yaml:1: upstreams: at least one upstream is required"),
    ("just text\n", 't.yaml:1: expected a mapping at the top level, got "just text"'),
    (MIN_UP + "limits: {max_body_bytes: 1t}\n", 't.yaml:3: limits.max_body_bytes: bad size "1t"'),
    (MIN_UP + "admin:\n  token:\n", "t.yaml:4: admin.token: expected a string, got null"),
    (MIN_UP + "log:\n  access:\n", "t.yaml:4: log.access: expected a string, got null"),
    (MIN_UP + "workers: [1]\n", "t.yaml:3: workers: expected an integer, got a list"),
    (
        MIN_UP + "rate_limit:\n  default: {capacity: many}\n",
        't.yaml:4: rate_limit.default.capacity: expected a number, got "many"',
    ),
    (
        MIN_UP + "rate_limit:\n  default: {capacity: 1000000000.5}\n",
        "t.yaml:4: rate_limit.default.capacity: must be <= 1000000000",
    ),
    (
        MIN_UP + "rate_limit:\n  default: {capacity: 2.5}\n",
        "t.yaml:4: rate_limit.default.capacity: must be an integer",
    ),
    (MIN_UP + 'rate_limit: {key: "header:"}\n', 't.yaml:3: rate_limit.key: bad header name ""'),
    (MIN_UP + 'hash_key: "header:"\n', 't.yaml:3: hash_key: bad header name ""'),
    (
        MIN_UP + "retry_budget:\n  percent: 100.5\n",
        't.yaml:4: retry_budget.percent: expected an integer, got "100.5"',
    ),
    (
        MIN_UP + "health:\n  check:\n    rise: 0\n",
        "t.yaml:5: health.check.rise: must be 1..1000000",
    ),
    (MIN_UP + 'name: "\\x01\\"\\\\\\u00e9"\n', 't.yaml:3: unknown key "name"'),
    (MIN_UP + '"k\\x01\\"\\\\\\u00e9": 1\n', 't.yaml:3: unknown key "k\\x01\\"\\\\\\xc3\\xa9"'),
    (
        MIN_UP + "workers: 1: 2\n",
        "t.yaml:3: invalid YAML: mapping values are not allowed in this context",
    ),
    (
        MIN_UP + "log: [\n",
        "t.yaml:4: invalid YAML: did not find expected node content (while parsing a flow node)",
    ),
    (MIN_UP + "\x01\n", "t.yaml:3: invalid YAML: control characters are not allowed"),
]


@pytest.mark.parametrize(("text", "want"), ERRORS_FROM_STRING)
def test_errors_from_string(text: str, want: str) -> None:
    """One of each class inline (the shared directory has the rest), through
    config_load_string so `name` is what the message shows."""
    expect_error(text, want)


def test_long_values_and_small_buffer() -> None:
    """A long value is cut in the message after 64 bytes; messages are cut as the
    C twin's CONFIG_ERR_MAX buffer cuts them."""
    key = "k" + "1234567890" * 7
    expect_error(MIN_UP + f"{key}: 1\n", f't.yaml:3: unknown key "{key[:64]}..."')
    with pytest.raises(ConfigError) as e:
        config_load_string("f" * 600, "x: 1\n")
    assert str(e.value) == "f" * 511


def test_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        config_load("/nonexistent/twinproxy.yaml")
    assert str(e.value) == "/nonexistent/twinproxy.yaml:0: cannot read: No such file or directory"
    with pytest.raises(ConfigError) as e:
        config_load(str(CASES))
    assert str(e.value) == f"{CASES}:0: cannot read: Is a directory"
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(ConfigError) as e:
        config_load(str(big))
    assert str(e.value) == f"{big}:0: cannot read: larger than 1048576 bytes"


# ---- the shared cases directory ----------------------------------------------------


def _case_files() -> list[Path]:
    return sorted(CASES.glob("*.yaml"))


def test_cases_exist() -> None:
    assert len([p for p in _case_files() if not p.name.startswith("ok-")]) >= 50
    assert len([p for p in _case_files() if p.name.startswith("ok-")]) >= 4


@pytest.mark.parametrize("path", _case_files(), ids=lambda p: p.name)
def test_case(path: Path) -> None:
    if path.name.startswith("ok-"):
        config_load(str(path))
        return
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), f'{path}: first line must be "# expect: LINE: message"'
    want = f"{path}:{first[len('# expect: ') :]}"
    with pytest.raises(ConfigError) as e:
        config_load(str(path))
    assert str(e.value) == want
