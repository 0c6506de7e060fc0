"""config: the YAML file of contract section 2 -> one immutable Config.

Twin: c-proxy/src/config.c. Both twins walk the libyaml node tree the same way
(document order, one table of fields per mapping), so the first error found and
its "FILE:LINE: message" text are identical; the shared cases in
c-proxy/tests/config_cases/ hold them to that. docs/config.md lists every key,
its default and its range.

A scalar's text is what counts: quoting never changes its meaning, except that a
plain empty, "~" or "null" value is null, which no key accepts. Numbers are
parsed from the text here, never by YAML 1.1 rules (PyYAML's resolved tags are
ignored), so "0x10", "1_000" or "yes" mean the same thing to both twins: nothing.
Nodes come from yaml.compose() with the CSafeLoader: the same libyaml, the same
marks and the same syntax errors as the C twin's yaml_parser_load().
"""

from __future__ import annotations

import enum
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

CONFIG_ERR_MAX = 512  # the C twin's message buffer: messages are cut alike
CONFIG_FILE_MAX = 1024 * 1024  # a config file is tiny; refuse /dev/zero
DURATION_MAX_MS = 2147483647  # INT32_MAX ms, ~24.8 days: what poll/epoll can wait
SIZE_MAX_BYTES = 9223372036854775807  # INT64_MAX: safe in the C twin's signed arithmetic
MIN_RATE_MAX = 1073741824  # timeouts.min_rate: 1g bytes per second
NUMBER_MAX = 1000000000.0  # capacity and rate_per_sec ceiling
QUOTE_MAX = 64  # bytes of a value quoted in a message

_DIGITS = re.compile(r"([0-9]+)(.*)", re.DOTALL)
_UINT = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_TOKEN = re.compile(r"[0-9A-Za-z!#$%&'*+\-.^_`|~]+")
_NULLS = ("", "~", "null", "Null", "NULL")


class ConfigError(Exception):
    """A config that does not load; str() is "FILE:LINE: what is wrong"."""


class ConfigBalancer(enum.Enum):
    """enum config_balancer; values are the config spellings."""

    ROUND_ROBIN = "round_robin"  # smooth weighted round robin (nginx)
    RANDOM = "random"  # weighted random
    LEAST_CONN = "least_conn"  # fewest active per weight, ties round robin
    HASH = "hash"  # consistent hash ring on hash_key


class ConfigKeyKind(enum.Enum):
    """enum config_key_kind."""

    CLIENT_IP = "client_ip"  # the client's address (IPv6: per ipv6_prefix for rate limits)
    HEADER = "header"  # header:NAME, the value of that request header
    PATH = "path"  # path (hash_key only)


class ConfigLogLevel(enum.Enum):
    """enum config_log_level."""

    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class ConfigLogFormat(enum.Enum):
    """enum config_log_format."""

    JSON = "json"
    TEXT = "text"


@dataclass(frozen=True)
class ConfigAddr:
    """struct config_addr: a host:port or [v6]:port, resolved numerically."""

    text: str  # as written in the file, e.g. "127.0.0.1:8080"
    host: str  # numeric host ("localhost" -> "127.0.0.1"), no brackets
    port: int  # 1..65535
    family: socket.AddressFamily  # AF_INET or AF_INET6
    sockaddr: tuple[Any, ...]  # ready for bind()/connect() (the C twin's addr/addrlen)
    line: int = 0  # line of the key in the file, for bind errors


def _default_listen() -> ConfigAddr:
    return parse_addr("127.0.0.1:8080")


@dataclass(frozen=True)
class ConfigUpstream:
    """struct config_upstream."""

    name: str  # name: key, default the address text
    addr: ConfigAddr  # address: key
    weight: int = 1  # 1..1000

    @property
    def address(self) -> str:
        return self.addr.text

    @property
    def host(self) -> str:
        return self.addr.host

    @property
    def port(self) -> int:
        return self.addr.port


@dataclass(frozen=True)
class ConfigLimits:
    max_client_connections: int = 10000
    max_header_bytes: int = 16384
    max_body_bytes: int = 0  # 0 = unlimited
    upstream_max_connections: int = 256  # per upstream
    upstream_idle_connections: int = 64  # per upstream


@dataclass(frozen=True)
class ConfigTimeouts:
    connect_ms: int = 1000
    header_ms: int = 10000
    idle_ms: int = 60000
    read_ms: int = 30000
    write_ms: int = 30000
    total_ms: int = 60000
    queue_ms: int = 1000
    shutdown_ms: int = 30000
    min_rate: int = 0  # bytes/s a client must move while the proxy waits on it; 0 = off
    min_rate_window_ms: int = 10000  # the window min_rate is averaged over


@dataclass(frozen=True)
class ConfigHealthCheck:
    """struct config_health_check."""

    enabled: bool = False  # health.check present
    path: str = "/healthz"
    interval_ms: int = 2000
    timeout_ms: int = 1000
    rise: int = 2  # consecutive successes to come back
    fall: int = 2  # consecutive failures to go down


@dataclass(frozen=True)
class ConfigHealth:
    max_fails: int = 3
    fail_timeout_ms: int = 10000
    check: ConfigHealthCheck = field(default_factory=ConfigHealthCheck)


@dataclass(frozen=True)
class ConfigRetryBudget:
    """retry_budget: retries in flight may add percent% on top of the requests in flight,
    but min_concurrent retries are always allowed."""

    percent: int = 20  # 0..100
    min_concurrent: int = 3  # 0..1000000


@dataclass(frozen=True)
class ConfigRateLimit:
    """struct config_rate_limit."""

    enabled: bool = False  # rate_limit present
    key: ConfigKeyKind = ConfigKeyKind.CLIENT_IP  # client_ip | header
    key_header: str | None = None  # NAME of header:NAME, else None
    default_capacity: float = 100.0  # default.capacity, > 0
    default_rate_per_sec: float = 50.0  # default.rate_per_sec, >= 0
    store: str = "twinproxy.db"  # SQLite file path
    store_line: int = 0  # line of rate_limit.store, else of rate_limit: store errors
    ipv6_prefix: int = 64  # 0..128
    max_clients: int = 100000  # in-memory buckets


@dataclass(frozen=True)
class ConfigLog:
    level: ConfigLogLevel = ConfigLogLevel.INFO
    access: str = "stdout"  # "stdout" | "stderr" | "off" | a path
    format: ConfigLogFormat = ConfigLogFormat.JSON


@dataclass(frozen=True)
class Config:
    """struct config: the whole file, immutable once loaded."""

    path: str = ""  # the file this came from (for reload and messages)
    listen: ConfigAddr = field(default_factory=_default_listen)
    workers: int = 1  # >= 1
    admin_enabled: bool = False  # admin: present with a listen:
    admin_listen: ConfigAddr | None = None  # admin.listen, None when disabled
    admin_token: str = ""  # admin.token, "" when unset
    upstreams: tuple[ConfigUpstream, ...] = ()  # at least one
    balancer: ConfigBalancer = ConfigBalancer.ROUND_ROBIN
    hash_key: ConfigKeyKind = ConfigKeyKind.CLIENT_IP
    hash_header: str | None = None  # NAME of header:NAME, else None
    limits: ConfigLimits = field(default_factory=ConfigLimits)
    timeouts: ConfigTimeouts = field(default_factory=ConfigTimeouts)
    health: ConfigHealth = field(default_factory=ConfigHealth)
    retries: int = 2
    retry_budget: ConfigRetryBudget = field(default_factory=ConfigRetryBudget)
    rate_limit: ConfigRateLimit = field(default_factory=ConfigRateLimit)
    log: ConfigLog = field(default_factory=ConfigLog)


# ---- scalar parsers (the C twin's config_parse_*) ----------------------------


def _parse_digits(text: str, limit: int) -> tuple[int, str] | None:
    """1*DIGIT (ASCII only) and the rest; None when absent or over limit."""
    m = _DIGITS.fullmatch(text)
    if m is None or int(m.group(1)) > limit:
        return None
    return int(m.group(1)), m.group(2)


_DURATION_UNITS = {"": 1, "ms": 1, "s": 1000, "m": 60000, "h": 3600000}
_SIZE_UNITS = {"": 1, "k": 1024, "K": 1024, "m": 1024**2, "M": 1024**2, "g": 1024**3, "G": 1024**3}


def parse_duration(text: str) -> int:
    """Parse "250ms", "2s", "1m", "1h" or an integer of milliseconds into milliseconds.
    Raises ValueError when malformed or over DURATION_MAX_MS."""
    parsed = _parse_digits(text, DURATION_MAX_MS)
    if parsed is None or parsed[1] not in _DURATION_UNITS:
        raise ValueError(f"bad duration {text!r}")
    ms = parsed[0] * _DURATION_UNITS[parsed[1]]
    if ms > DURATION_MAX_MS:
        raise ValueError(f"bad duration {text!r}")
    return ms


def parse_size(text: str) -> int:
    """Parse 16384, "16k", "10m", "1g" (k = 1024) into bytes. Raises ValueError when
    malformed or over SIZE_MAX_BYTES."""
    parsed = _parse_digits(text, SIZE_MAX_BYTES)
    if parsed is None or parsed[1] not in _SIZE_UNITS:
        raise ValueError(f"bad size {text!r}")
    size = parsed[0] * _SIZE_UNITS[parsed[1]]
    if size > SIZE_MAX_BYTES:
        raise ValueError(f"bad size {text!r}")
    return size


def parse_addr(text: str) -> ConfigAddr:
    """Parse "host:port" / "[v6]:port" (numeric hosts and "localhost" only) into a ConfigAddr
    with line 0. Raises ValueError whose str() is the short reason the C twin's
    config_parse_addr() gives in *why."""
    if len(text.encode()) >= 128:
        raise ValueError("too long")
    bracketed = text.startswith("[")
    if bracketed:
        close = text.find("]")
        if close == -1 or text[close + 1 : close + 2] != ":":
            raise ValueError("expected [v6]:port")
        host, port_text = text[1:close], text[close + 2 :]
    else:
        colon = text.rfind(":")
        if colon == -1:
            raise ValueError("expected host:port or [v6]:port")
        host, port_text = text[:colon], text[colon + 1 :]
    if host == "":
        raise ValueError("missing host")
    if not bracketed and ":" in host:
        raise ValueError("IPv6 address must be in brackets")
    if len(port_text) > 5 or _UINT.fullmatch(port_text) is None:
        raise ValueError("bad port")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("port must be 1..65535")
    if bracketed:
        try:
            infos = socket.getaddrinfo(
                host.encode(),  # bytes: no IDNA step the C twin does not have
                port,
                socket.AF_INET6,
                socket.SOCK_STREAM,
                0,
                socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
        except (OSError, UnicodeError, ValueError):
            raise ValueError("bad IPv6 address") from None
        if not infos:
            raise ValueError("bad IPv6 address")
        return ConfigAddr(text, host, port, socket.AF_INET6, tuple(infos[0][4]))
    numeric = "127.0.0.1" if host == "localhost" else host
    try:
        # inet_pton, not getaddrinfo: it refuses inet_aton forms like "127.1".
        socket.inet_pton(socket.AF_INET, numeric)
    except (OSError, UnicodeError, ValueError):
        raise ValueError("host must be an IP address or localhost") from None
    return ConfigAddr(text, numeric, port, socket.AF_INET, (numeric, port))


# ---- messages -----------------------------------------------------------------


def _quote(text: str) -> str:
    """A value as it is shown in messages, byte for byte as the C twin's quote():
    double-quoted, printable ASCII kept, '"' and '\\' backslashed, every other
    UTF-8 byte \\xNN, cut after QUOTE_MAX bytes with "..."."""
    raw = text.encode("utf-8", "surrogateescape")
    out = ['"']
    for c in raw[:QUOTE_MAX]:
        if c in (0x22, 0x5C):
            out.append("\\" + chr(c))
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        else:
            out.append(f"\\x{c:02x}")
    if len(raw) > QUOTE_MAX:
        out.append("...")
    out.append('"')
    return "".join(out)


class _Loader:
    """One parse in progress (the C twin's struct loader)."""

    def __init__(self, name: str) -> None:
        self.name = name  # FILE in messages

    def fail(self, line: int, path: str, msg: str) -> ConfigError:
        """The error to raise: "NAME:LINE: PATH: msg" (no "PATH: " when empty),
        cut like the C twin's CONFIG_ERR_MAX buffer."""
        text = f"{self.name}:{line}: {path}: {msg}" if path else f"{self.name}:{line}: {msg}"
        raw = text.encode("utf-8", "surrogateescape")
        if len(raw) >= CONFIG_ERR_MAX:
            text = raw[: CONFIG_ERR_MAX - 1].decode("utf-8", "replace")
        return ConfigError(text)


Node = yaml.Node
Values = dict[str, Any]  # attribute -> value of one struct being built


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _is_null(node: Node) -> bool:
    """A plain empty, ~, null, Null or NULL scalar: YAML's null, accepted by no key."""
    return isinstance(node, yaml.ScalarNode) and not node.style and node.value in _NULLS


def _fail_type(ld: _Loader, node: Node, path: str, what: str) -> ConfigError:
    """The error "expected WHAT, got ..." for a node of the wrong type."""
    if isinstance(node, yaml.MappingNode):
        got = "a mapping"
    elif isinstance(node, yaml.SequenceNode):
        got = "a list"
    elif _is_null(node):
        got = "null"
    else:
        got = _quote(node.value)
    return ld.fail(_line(node), path, f"expected {what}, got {got}")


def _scalar(ld: _Loader, node: Node, path: str, what: str) -> str:
    """The text of a non-null scalar; a NUL byte (a "\\0" escape) is refused, as
    it would cut the C twin's strings."""
    if not isinstance(node, yaml.ScalarNode) or _is_null(node):
        raise _fail_type(ld, node, path, what)
    value: str = node.value
    if "\0" in value:
        raise ld.fail(_line(node), path, "must not contain a NUL byte")
    return value


# ---- fields ---------------------------------------------------------------------

FieldParse = Callable[[_Loader, Node, Node, str, Values], None]


class _Kind(enum.Enum):
    """enum field_kind."""

    ADDR = 0  # ConfigAddr, host:port
    STRING = 1  # str; non-empty unless lo == 0
    INT = 2  # int in lo..hi (the C twin's FIELD_UINT and FIELD_U64)
    SIZE = 3  # bytes, a size in lo..hi
    DURATION = 4  # ms, a duration; 0 allowed only when lo == 0
    NUMBER = 5  # float in 0..NUMBER_MAX; 0 excluded when lo == 1
    MAP = 6  # a nested mapping described by sub
    CUSTOM = 7  # parsed by parse()


@dataclass(frozen=True)
class _Field:
    """One key of a mapping (the C twin's struct field)."""

    key: str  # the YAML key
    kind: _Kind  # how its value is parsed
    attr: str = ""  # destination attribute in the struct being built
    lo: int = 0  # range, see _Kind
    hi: int = 0
    sub: tuple[_Field, ...] = ()  # MAP: the nested keys
    cls: type | None = None  # MAP: the dataclass built at attr, None: keys land in the parent
    flag: bool = False  # MAP: set cls's `enabled` when the map is present
    parse: FieldParse | None = None  # CUSTOM
    unsupported: bool = False  # refused at the key: "KEY is not supported yet"


def _parse_addr_node(ld: _Loader, key: Node, value: Node, path: str) -> ConfigAddr:
    s = _scalar(ld, value, path, "an address")
    try:
        addr = parse_addr(s)
    except ValueError as e:
        raise ld.fail(_line(value), path, f"bad address {_quote(s)} ({e})") from None
    return ConfigAddr(addr.text, addr.host, addr.port, addr.family, addr.sockaddr, _line(key))


def _parse_int_node(ld: _Loader, value: Node, path: str, lo: int, hi: int) -> int:
    """An integer: optional '-', 1*DIGIT. Anything out of lo..hi gets the range message."""
    s = _scalar(ld, value, path, "an integer")
    if _INTEGER.fullmatch(s) is None:
        raise ld.fail(_line(value), path, f"expected an integer, got {_quote(s)}")
    v = int(s)
    if not lo <= v <= hi:
        raise ld.fail(_line(value), path, f"must be {lo}..{hi}")
    return v


def _parse_number_node(ld: _Loader, value: Node, path: str, positive: bool) -> float:
    """A number: optional '-', 1*DIGIT, optional '.' 1*DIGIT; float() rounds as strtod."""
    s = _scalar(ld, value, path, "a number")
    if _NUMBER.fullmatch(s) is None:
        raise ld.fail(_line(value), path, f"expected a number, got {_quote(s)}")
    v = float(s)
    if positive and not v > 0:
        raise ld.fail(_line(value), path, "must be > 0")
    if not v >= 0:
        raise ld.fail(_line(value), path, "must be >= 0")
    if not v <= NUMBER_MAX:
        raise ld.fail(_line(value), path, f"must be <= {NUMBER_MAX:.0f}")
    return v


def _parse_field(ld: _Loader, f: _Field, key: Node, value: Node, path: str, out: Values) -> None:
    if f.kind is _Kind.ADDR:
        out[f.attr] = _parse_addr_node(ld, key, value, path)
    elif f.kind is _Kind.STRING:
        s = _scalar(ld, value, path, "a string")
        if f.lo > 0 and s == "":
            raise ld.fail(_line(value), path, "must not be empty")
        out[f.attr] = s
    elif f.kind is _Kind.INT:
        out[f.attr] = _parse_int_node(ld, value, path, f.lo, f.hi)
    elif f.kind is _Kind.SIZE:
        s = _scalar(ld, value, path, "a size")
        try:
            size = parse_size(s)
        except ValueError:
            raise ld.fail(_line(value), path, f"bad size {_quote(s)}") from None
        if not f.lo <= size <= f.hi:
            raise ld.fail(_line(value), path, f"must be {f.lo}..{f.hi}")
        out[f.attr] = size
    elif f.kind is _Kind.DURATION:
        s = _scalar(ld, value, path, "a duration")
        try:
            ms = parse_duration(s)
        except ValueError:
            raise ld.fail(_line(value), path, f"bad duration {_quote(s)}") from None
        if ms == 0 and f.lo > 0:
            raise ld.fail(_line(value), path, "must be > 0")
        out[f.attr] = ms
    elif f.kind is _Kind.NUMBER:
        out[f.attr] = _parse_number_node(ld, value, path, f.lo > 0)
    elif f.kind is _Kind.MAP:
        if f.cls is None:
            _walk_mapping(ld, value, path, f.sub, out)
        else:
            sub: Values = {"enabled": True} if f.flag else {}
            _walk_mapping(ld, value, path, f.sub, sub)
            out[f.attr] = f.cls(**sub)
    else:
        assert f.parse is not None
        f.parse(ld, key, value, path, out)


def _key_is(node: Node, name: str) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value == name


def _walk_mapping(
    ld: _Loader, node: Node, path: str, fields: tuple[_Field, ...], out: Values
) -> None:
    """Walks a mapping in document order: every key must be a string, known to
    fields and not seen before in this mapping; each value is parsed as its field
    says. The first error (in document order) wins."""
    if not isinstance(node, yaml.MappingNode):
        raise _fail_type(ld, node, path, "a mapping")
    prefix = f"{path}: " if path else ""
    pairs: list[tuple[Node, Node]] = node.value
    for i, (key, value) in enumerate(pairs):
        if not isinstance(key, yaml.ScalarNode):
            raise ld.fail(_line(key), path, "keys must be strings")
        f = next((f for f in fields if f.key == key.value), None)
        if f is None:
            raise ld.fail(_line(key), "", f"{prefix}unknown key {_quote(key.value)}")
        if any(_key_is(k, f.key) for k, _ in pairs[:i]):
            raise ld.fail(_line(key), "", f"{prefix}duplicate key {_quote(key.value)}")
        full = f"{path}.{f.key}" if path else f.key
        if f.unsupported:
            raise ld.fail(_line(key), "", f"{full} is not supported yet")
        _parse_field(ld, f, key, value, full, out)


def _find_pair(node: yaml.MappingNode, name: str) -> tuple[Node, Node] | None:
    pairs: list[tuple[Node, Node]] = node.value
    return next(((k, v) for k, v in pairs if _key_is(k, name)), None)


def _parse_enum(ld: _Loader, value: Node, path: str, names: tuple[str, ...]) -> str:
    s = _scalar(ld, value, path, "a string")
    if s not in names:
        raise ld.fail(
            _line(value), path, f"unknown value {_quote(s)} (expected {' | '.join(names)})"
        )
    return s


def _parse_balancer(ld: _Loader, key: Node, value: Node, path: str, out: Values) -> None:
    names = tuple(b.value for b in ConfigBalancer)
    out["balancer"] = ConfigBalancer(_parse_enum(ld, value, path, names))


def _parse_log_level(ld: _Loader, key: Node, value: Node, path: str, out: Values) -> None:
    names = tuple(v.value for v in ConfigLogLevel)
    out["level"] = ConfigLogLevel(_parse_enum(ld, value, path, names))


def _parse_log_format(ld: _Loader, key: Node, value: Node, path: str, out: Values) -> None:
    names = tuple(v.value for v in ConfigLogFormat)
    out["format"] = ConfigLogFormat(_parse_enum(ld, value, path, names))


def _parse_key_form(
    ld: _Loader, value: Node, path: str, allow_path: bool
) -> tuple[ConfigKeyKind, str | None]:
    """client_ip | header:NAME | path (path only when allow_path)."""
    s = _scalar(ld, value, path, "a string")
    if s == "client_ip":
        return ConfigKeyKind.CLIENT_IP, None
    if allow_path and s == "path":
        return ConfigKeyKind.PATH, None
    if s.startswith("header:"):
        name = s[len("header:") :]
        if _TOKEN.fullmatch(name) is None:
            raise ld.fail(_line(value), path, f"bad header name {_quote(name)}")
        return ConfigKeyKind.HEADER, name
    forms = "client_ip | header:NAME | path" if allow_path else "client_ip | header:NAME"
    raise ld.fail(_line(value), path, f"unknown value {_quote(s)} (expected {forms})")


def _parse_hash_key(ld: _Loader, key: Node, value: Node, path: str, out: Values) -> None:
    out["hash_key"], out["hash_header"] = _parse_key_form(ld, value, path, True)


def _parse_rate_limit_key(ld: _Loader, key: Node, value: Node, path: str, out: Values) -> None:
    out["key"], out["key_header"] = _parse_key_form(ld, value, path, False)


def _parse_admin_listen(ld: _Loader, key: Node, value: Node, path: str, out: Values) -> None:
    out["admin_listen"] = _parse_addr_node(ld, key, value, path)
    out["admin_enabled"] = True


def _parse_check_path(ld: _Loader, key: Node, value: Node, path: str, out: Values) -> None:
    """The path of an active check goes into a request line: origin-form, visible ASCII."""
    s = _scalar(ld, value, path, "a string")
    if not s.startswith("/") or any(not 0x20 < ord(c) < 0x7F for c in s):
        raise ld.fail(
            _line(value),
            path,
            f"bad path {_quote(s)} (must start with / and contain only visible ASCII)",
        )
    out["path"] = s


_UPSTREAM_FIELDS = (
    _Field("address", _Kind.ADDR, "addr"),
    _Field("name", _Kind.STRING, "name", lo=1),
    _Field("weight", _Kind.INT, "weight", lo=1, hi=1000),
)


def _parse_upstreams(ld: _Loader, key: Node, value: Node, path: str, out: Values) -> None:
    if not isinstance(value, yaml.SequenceNode):
        raise _fail_type(ld, value, path, "a list")
    items: list[Node] = value.value
    if not items:
        raise ld.fail(_line(value), path, "at least one upstream is required")
    upstreams: list[ConfigUpstream] = []
    for i, item in enumerate(items):
        ipath = f"{path}[{i}]"
        u: Values = {}
        _walk_mapping(ld, item, ipath, _UPSTREAM_FIELDS, u)
        assert isinstance(item, yaml.MappingNode)
        if "addr" not in u:
            raise ld.fail(_line(item), ipath, "address is required")
        name_pair = _find_pair(item, "name")
        if name_pair is not None:
            name_line = _line(name_pair[0])
        else:
            name_line = u["addr"].line
            u["name"] = u["addr"].text
        if any(prev.name == u["name"] for prev in upstreams):
            raise ld.fail(name_line, ipath, f"duplicate upstream name {_quote(u['name'])}")
        upstreams.append(ConfigUpstream(**u))
    out["upstreams"] = tuple(upstreams)


_ADMIN_FIELDS = (
    _Field("listen", _Kind.CUSTOM, parse=_parse_admin_listen),
    _Field("token", _Kind.STRING, "admin_token", lo=0),
)

_LIMITS_FIELDS = (
    _Field("max_client_connections", _Kind.INT, "max_client_connections", lo=1, hi=10000000),
    _Field("max_header_bytes", _Kind.SIZE, "max_header_bytes", lo=1, hi=1048576),
    _Field("max_body_bytes", _Kind.SIZE, "max_body_bytes", lo=0, hi=SIZE_MAX_BYTES),
    _Field("upstream_max_connections", _Kind.INT, "upstream_max_connections", lo=1, hi=1000000),
    _Field("upstream_idle_connections", _Kind.INT, "upstream_idle_connections", lo=0, hi=1000000),
)

_TIMEOUTS_FIELDS = (
    _Field("connect", _Kind.DURATION, "connect_ms", lo=1),
    _Field("header", _Kind.DURATION, "header_ms", lo=1),
    _Field("idle", _Kind.DURATION, "idle_ms", lo=1),
    _Field("read", _Kind.DURATION, "read_ms", lo=1),
    _Field("write", _Kind.DURATION, "write_ms", lo=1),
    _Field("total", _Kind.DURATION, "total_ms", lo=1),
    _Field("queue", _Kind.DURATION, "queue_ms", lo=1),
    _Field("shutdown", _Kind.DURATION, "shutdown_ms", lo=0),
    _Field("min_rate", _Kind.SIZE, "min_rate", lo=0, hi=MIN_RATE_MAX),
    _Field("min_rate_window", _Kind.DURATION, "min_rate_window_ms", lo=1),
)

_CHECK_FIELDS = (
    _Field("path", _Kind.CUSTOM, parse=_parse_check_path),
    _Field("interval", _Kind.DURATION, "interval_ms", lo=1),
    _Field("timeout", _Kind.DURATION, "timeout_ms", lo=1),
    _Field("rise", _Kind.INT, "rise", lo=1, hi=1000000),
    _Field("fall", _Kind.INT, "fall", lo=1, hi=1000000),
)

_HEALTH_FIELDS = (
    _Field("max_fails", _Kind.INT, "max_fails", lo=0, hi=1000000),
    _Field("fail_timeout", _Kind.DURATION, "fail_timeout_ms", lo=1),
    _Field("check", _Kind.MAP, "check", sub=_CHECK_FIELDS, cls=ConfigHealthCheck, flag=True),
)

_RETRY_BUDGET_FIELDS = (
    _Field("percent", _Kind.INT, "percent", lo=0, hi=100),
    _Field("min_concurrent", _Kind.INT, "min_concurrent", lo=0, hi=1000000),
)


def _parse_capacity(ld: _Loader, key: Node, value: Node, path: str, out: Values) -> None:
    """A bucket's capacity: a number > 0 (the messages of any number) that is whole."""
    v = _parse_number_node(ld, value, path, True)
    if v != int(v):
        raise ld.fail(_line(value), path, "must be an integer")
    out["default_capacity"] = v


_BUCKET_FIELDS = (
    _Field("capacity", _Kind.CUSTOM, parse=_parse_capacity),
    _Field("rate_per_sec", _Kind.NUMBER, "default_rate_per_sec", lo=0),
)

_RATE_LIMIT_FIELDS = (
    _Field("key", _Kind.CUSTOM, parse=_parse_rate_limit_key),
    _Field("default", _Kind.MAP, sub=_BUCKET_FIELDS),
    _Field("store", _Kind.STRING, "store", lo=1),
    _Field("ipv6_prefix", _Kind.INT, "ipv6_prefix", lo=0, hi=128),
    _Field("max_clients", _Kind.INT, "max_clients", lo=1, hi=100000000),
)


def _parse_rate_limit(ld: _Loader, key: Node, value: Node, path: str, out: Values) -> None:
    """rate_limit: its mapping, plus the line store errors are reported at: the store key's,
    else rate_limit's own (the store is opened by main, not here)."""
    sub: Values = {"enabled": True, "store_line": _line(key)}
    _walk_mapping(ld, value, path, _RATE_LIMIT_FIELDS, sub)
    assert isinstance(value, yaml.MappingNode)
    store = _find_pair(value, "store")
    if store is not None:
        sub["store_line"] = _line(store[0])
    out["rate_limit"] = ConfigRateLimit(**sub)


_LOG_FIELDS = (
    _Field("level", _Kind.CUSTOM, parse=_parse_log_level),
    _Field("access", _Kind.STRING, "access", lo=1),
    _Field("format", _Kind.CUSTOM, parse=_parse_log_format),
)

_ROOT_FIELDS = (
    _Field("listen", _Kind.ADDR, "listen"),
    _Field("workers", _Kind.INT, "workers", lo=1, hi=1024),
    _Field("admin", _Kind.MAP, sub=_ADMIN_FIELDS),
    _Field("upstreams", _Kind.CUSTOM, parse=_parse_upstreams),
    _Field("balancer", _Kind.CUSTOM, parse=_parse_balancer),
    _Field("hash_key", _Kind.CUSTOM, parse=_parse_hash_key),
    _Field("limits", _Kind.MAP, "limits", sub=_LIMITS_FIELDS, cls=ConfigLimits),
    _Field("timeouts", _Kind.MAP, "timeouts", sub=_TIMEOUTS_FIELDS, cls=ConfigTimeouts),
    _Field("health", _Kind.MAP, "health", sub=_HEALTH_FIELDS, cls=ConfigHealth),
    _Field("retries", _Kind.INT, "retries", lo=0, hi=100),
    _Field(
        "retry_budget",
        _Kind.MAP,
        "retry_budget",
        sub=_RETRY_BUDGET_FIELDS,
        cls=ConfigRetryBudget,
    ),
    _Field("rate_limit", _Kind.CUSTOM, parse=_parse_rate_limit),
    _Field("log", _Kind.MAP, "log", sub=_LOG_FIELDS, cls=ConfigLog),
)


# ---- load -------------------------------------------------------------------------


def _compose(ld: _Loader, data: bytes) -> Node | None:
    """The single document's root node (None when empty), or the libyaml
    complaint as "invalid YAML: problem (context)"."""
    try:
        return yaml.compose(data, Loader=yaml.CSafeLoader)
    except yaml.MarkedYAMLError as e:
        if e.problem == "but found another document" and e.problem_mark is not None:
            raise ld.fail(
                e.problem_mark.line + 1, "", "only one YAML document is allowed"
            ) from None
        line = e.problem_mark.line + 1 if e.problem_mark is not None else 1
        msg = f"invalid YAML: {e.problem or 'unknown error'}"
        if e.context is not None:
            msg += f" ({e.context})"
        raise ld.fail(line, "", msg) from None
    except yaml.reader.ReaderError as e:
        # No mark on a reader error (bad UTF-8, control characters): a byte offset.
        line = data[: e.position].count(b"\n") + 1
        raise ld.fail(line, "", f"invalid YAML: {e.reason}") from None


def config_load_bytes(name: str, data: bytes) -> Config:
    """config_load_string() on raw bytes: libyaml sees exactly what the C twin's
    does (encoding detection, byte offsets). Raises ConfigError."""
    ld = _Loader(name)
    root = _compose(ld, data)
    out: Values = {"path": name}
    if root is not None and not _is_null(root):
        if not isinstance(root, yaml.MappingNode):
            raise _fail_type(ld, root, "", "a mapping at the top level")
        _walk_mapping(ld, root, "", _ROOT_FIELDS, out)
    if "upstreams" not in out:
        line = _line(root) if root is not None else 1
        raise ld.fail(line, "upstreams", "at least one upstream is required")
    return Config(**out)


def config_load_string(name: str, text: str) -> Config:
    """Parse and validate a document held in memory; `name` stands for FILE in
    messages. Returns a new Config; raises ConfigError("FILE:LINE: message")."""
    return config_load_bytes(name, text.encode("utf-8", "surrogateescape"))


def config_load(path: str) -> Config:
    """Parse and validate FILE. Returns a new Config; raises ConfigError whose
    str() is "FILE:LINE: what is wrong" (no "config error: " prefix)."""
    try:
        with open(path, "rb") as f:
            data = f.read(CONFIG_FILE_MAX + 1)
    except OSError as e:
        raise _Loader(path).fail(0, "", f"cannot read: {e.strerror}") from None
    if len(data) > CONFIG_FILE_MAX:
        raise _Loader(path).fail(0, "", f"cannot read: larger than {CONFIG_FILE_MAX} bytes")
    return config_load_bytes(path, data)
