"""metrics: per-worker slots and the Prometheus text of GET /metrics (contract 9).
Twin: c-proxy/src/metrics.c.

Every series of contract 9, in its order, each with its HELP and TYPE lines, plus
twinproxy_errors_total{code,reason} (docs/behaviour.md "Metrics"). The exact text for a
fixed input is c-proxy/tests/metrics_cases/basic.args -> basic.txt; both twins render it
byte for byte.

Per-worker slots (docs/architecture.md "Metrics"): every worker owns one row of an integer
array and is its only writer (no lock: one writer per cell); rendering sums the rows. With
workers > 1 the array is shared memory created by the parent before the fork (a
multiprocessing RawArray, inherited by every forked worker, as health.py's table and the
rate-limit table are). The C twin's threads own one struct metrics_slot each, with the same
cell layout (the first UCELLS_C cells per label; the Python row adds the GET /upstreams
counters per label, which C keeps in its health registry's atomics).

Bounded label sets: upstream labels are ids per upstream NAME (the health table's slot,
stable across reloads and the same in every worker): label 0 is "" (the proxy answered
itself), label id+1 the upstream in health slot id. {code,upstream} pairs live in a
per-worker open-addressed table of REQ_SLOTS keys (code * 2048 + label + 1; 0: free).
"""

from __future__ import annotations

import ctypes
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import RawArray

from pyproxy.reason import REASON_N, REASONS

BOUNDS_US = (
    500,
    1000,
    2500,
    5000,
    10000,
    25000,
    50000,
    100000,
    250000,
    500000,
    1000000,
    2500000,
    5000000,
    10000000,
)
BOUNDS_LE = (
    "0.0005",
    "0.001",
    "0.0025",
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.1",
    "0.25",
    "0.5",
    "1",
    "2.5",
    "5",
    "10",
)
BOUNDS = len(BOUNDS_US)
BUCKETS = BOUNDS + 1  # + the +Inf bucket
LABELS = 1025  # "" + 1024 upstream names
REQ_SLOTS = 2048
ERR_CODES = (400, 408, 413, 429, 431, 501, 502, 503, 504, 505, 0)  # 0: a close ("")
_PHASES = ("connect", "send", "head")

# enum metrics_cell: whole-process cells of one worker
C_RL_ALLOWED = 0  # rate limit: a token was taken (the request goes on)
C_RL_LIMITED = 1  # rate limit: 429
C_CONN_CLIENT = 2  # gauge: client connections open
C_CONN_UPSTREAM = 3  # gauge: upstream connections open
C_RX_CLIENT = 4  # bytes received from clients
C_RX_UPSTREAM = 5  # bytes received from upstreams
C_TX_CLIENT = 6  # bytes sent to clients
C_TX_UPSTREAM = 7  # bytes sent to upstreams
C_RETRIES_SKIPPED = 8  # retry budget exhausted
C_QUEUE_SUM_US = 9  # queue wait histogram: sum (microseconds)
C_QUEUE_B0 = 10  # ... its BUCKETS bucket counts
C_N = C_QUEUE_B0 + BUCKETS  # cells

# enum metrics_ucell: cells per upstream label
U_DUR_SUM_US = 0  # request duration: sum (microseconds)
U_DUR_B0 = 1  # ... its bucket counts
U_RETRY0 = U_DUR_B0 + BUCKETS  # retries: connect, send, head
UCELLS_C = U_RETRY0 + 3  # the C twin's cells per label
U_REQUESTS = UCELLS_C  # GET /upstreams: attempts started
U_FAILS = UCELLS_C + 1  # ... failed attempts
U_ACTIVE = UCELLS_C + 2  # ... attempts in flight (gauge)
U_IDLE = UCELLS_C + 3  # ... pooled connections (gauge)
UCELLS = UCELLS_C + 4

UP0 = C_N  # first label's cells in a row
REQ_KEY0 = UP0 + LABELS * UCELLS
REQ_N0 = REQ_KEY0 + REQ_SLOTS
ERR0 = REQ_N0 + REQ_SLOTS
ROW = ERR0 + len(ERR_CODES) * REASON_N  # cells per worker row


def ucell(label: int, cell: int) -> int:
    """Offset in a row of cell `cell` of upstream label `label`."""
    return UP0 + label * UCELLS + cell


def label_of(health_id: int | None) -> int:
    """The label of health slot `health_id` (None or beyond: 0, i.e. "")."""
    return health_id + 1 if health_id is not None and 0 <= health_id < LABELS - 1 else 0


class Counters:
    """Per-worker rows (struct metrics_slot each). `row(wid)` is the offset of the worker's
    first cell; a worker adds to `v[row + ...]` only."""

    def __init__(self, workers: int = 1, shared: bool = False) -> None:
        self.workers = workers  # rows
        n = workers * ROW
        # shared: one block mapped by every forked worker; else a plain list (one process)
        self.v: MutableSequence[int] = (
            RawArray(ctypes.c_int64, n) if shared else [0] * n  # type: ignore[assignment]
        )

    @staticmethod
    def row(wid: int) -> int:
        return wid * ROW

    def total(self, cell: int) -> int:
        """Cell `cell` (an offset in a row) summed over every worker."""
        v = self.v
        return sum(int(v[w * ROW + cell]) for w in range(self.workers))

    def sum(self) -> list[int]:
        """metrics_sum: one private row, the sum of every worker's."""
        out = [0] * ROW
        for w in range(self.workers):
            base = w * ROW
            part = list(self.v[base : base + ROW])
            for i in range(REQ_KEY0):
                out[i] += part[i]
            for i in range(ERR0, ROW):
                out[i] += part[i]
            for i in range(REQ_SLOTS):
                key, n = part[REQ_KEY0 + i], part[REQ_N0 + i]
                if key and n:
                    _req_add(out, 0, key, n)
        return out


class Bound:
    """This process's worker row (one worker per process): modules without a Worker at
    hand (upstream.py) add to `bound.v[bound.base + ...]`. bind() at worker start."""

    def __init__(self) -> None:
        self.v: MutableSequence[int] = [0] * ROW
        self.base = 0


bound = Bound()


def bind(counters: Counters, wid: int) -> None:
    bound.v = counters.v
    bound.base = counters.row(wid)


def bucket(us: int) -> int:
    """The bucket of a duration in microseconds (0 .. BOUNDS, the last +Inf)."""
    i = 0
    while i < BOUNDS and us > BOUNDS_US[i]:
        i += 1
    return i


def _req_hash(key: int) -> int:
    return ((key * 2654435761) & 0xFFFFFFFF) >> 21


def _req_add(v: MutableSequence[int], base: int, key: int, n: int) -> None:
    i = _req_hash(key)
    for _ in range(REQ_SLOTS):
        k = v[base + REQ_KEY0 + i]
        if k == 0:
            v[base + REQ_KEY0 + i] = k = key
        if k == key:
            v[base + REQ_N0 + i] += n
            return
        i = (i + 1) & (REQ_SLOTS - 1)


def request(v: MutableSequence[int], base: int, code: int, label: int, us: int) -> None:
    """metrics_request: one request answered with `code` (upstream label `label`, 0: the
    proxy) taking `us` microseconds."""
    if code < 0 or code > 999:
        code = 0
    if label >= LABELS:
        label = 0
    _req_add(v, base, code * 2048 + label + 1, 1)
    u = base + UP0 + label * UCELLS
    v[u + U_DUR_SUM_US] += us
    v[u + U_DUR_B0 + bucket(us)] += 1


def queue_wait(v: MutableSequence[int], base: int, us: int) -> None:
    v[base + C_QUEUE_SUM_US] += us
    v[base + C_QUEUE_B0 + bucket(us)] += 1


def retry(v: MutableSequence[int], base: int, label: int, phase: int) -> None:
    if 0 <= phase < 3:
        v[base + ucell(label if label < LABELS else 0, U_RETRY0 + phase)] += 1


def error(v: MutableSequence[int], base: int, code: int, reason: int) -> None:
    """metrics_error: an error answered with `code` (0: a close) for reason index `reason`."""
    if not 0 <= reason < REASON_N:
        return
    i = ERR_CODES.index(code) if code in ERR_CODES else len(ERR_CODES) - 1
    v[base + ERR0 + i * REASON_N + reason] += 1


@dataclass
class Upstream:
    """struct metrics_upstream: one upstream of the current config."""

    name: str
    healthy: bool
    active: int = 0
    idle: int = 0
    to_up: int = 0
    to_down: int = 0


@dataclass
class View:
    """struct metrics_view: everything that is not in the summed row."""

    impl: str
    version: str
    generation: int
    reloads_ok: int = 0
    reloads_failed: int = 0
    ups: list[Upstream] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=lambda: [""])  # label -> name


def _label(value: str) -> str:
    """A label value as the text format escapes it: \\ " and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _head(out: list[str], name: str, kind: str, help_: str) -> None:
    out.append("# HELP %s %s\n# TYPE %s %s\n" % (name, help_, name, kind))


def _seconds(us: int) -> str:
    return "%d.%06d" % (us // 1000000, us % 1000000)


def _histogram(
    out: list[str], name: str, pre: str | None, buckets: Sequence[int], sum_us: int
) -> None:
    acc = 0
    lab = 'upstream="%s",' % _label(pre) if pre is not None else ""
    for i in range(BUCKETS):
        acc += buckets[i]
        le = BOUNDS_LE[i] if i < BOUNDS else "+Inf"
        out.append('%s_bucket{%sle="%s"} %d\n' % (name, lab, le, acc))
    sel = '{upstream="%s"}' % _label(pre) if pre is not None else ""
    out.append("%s_sum%s %s\n" % (name, sel, _seconds(sum_us)))
    out.append("%s_count%s %d\n" % (name, sel, acc))


def metrics_render(v: View, s: Sequence[int]) -> str:
    """metrics_render: the /metrics body from view v and the summed row s."""
    out: list[str] = []

    def name_of(lab: int) -> str | None:
        if lab == 0:
            return ""
        return v.labels[lab] if lab < len(v.labels) else None

    _head(
        out,
        "twinproxy_requests_total",
        "counter",
        'Requests answered, by status code and upstream ("": the proxy answered itself).',
    )
    pairs = {}
    for i in range(REQ_SLOTS):
        key, n = s[REQ_KEY0 + i], s[REQ_N0 + i]
        if key and n:
            pairs[key] = n
    for key in sorted(pairs, key=lambda k: (k % 2048, k)):
        nm = name_of(key % 2048 - 1)
        if nm is None:
            continue
        out.append(
            'twinproxy_requests_total{code="%d",upstream="%s"} %d\n'
            % (key // 2048, _label(nm), pairs[key])
        )

    _head(
        out,
        "twinproxy_request_duration_seconds",
        "histogram",
        "Request duration from its first byte to its last response byte, by upstream.",
    )
    for lab in range(LABELS):
        nm = name_of(lab)
        b = ucell(lab, U_DUR_B0)
        if nm is not None and any(s[b : b + BUCKETS]):
            _histogram(
                out,
                "twinproxy_request_duration_seconds",
                nm,
                s[b : b + BUCKETS],
                s[ucell(lab, U_DUR_SUM_US)],
            )

    _head(
        out, "twinproxy_connections_active", "gauge", "Open connections (side: client | upstream)."
    )
    out.append('twinproxy_connections_active{side="client"} %d\n' % s[C_CONN_CLIENT])
    out.append('twinproxy_connections_active{side="upstream"} %d\n' % s[C_CONN_UPSTREAM])
    _head(
        out,
        "twinproxy_bytes_received_total",
        "counter",
        "Bytes received (side: client | upstream).",
    )
    out.append('twinproxy_bytes_received_total{side="client"} %d\n' % s[C_RX_CLIENT])
    out.append('twinproxy_bytes_received_total{side="upstream"} %d\n' % s[C_RX_UPSTREAM])
    _head(out, "twinproxy_bytes_sent_total", "counter", "Bytes sent (side: client | upstream).")
    out.append('twinproxy_bytes_sent_total{side="client"} %d\n' % s[C_TX_CLIENT])
    out.append('twinproxy_bytes_sent_total{side="upstream"} %d\n' % s[C_TX_UPSTREAM])

    _head(
        out,
        "twinproxy_upstream_up",
        "gauge",
        "1 if the upstream is healthy (health verdict), else 0.",
    )
    for u in v.ups:
        out.append('twinproxy_upstream_up{upstream="%s"} %d\n' % (_label(u.name), int(u.healthy)))
    _head(
        out, "twinproxy_upstream_active_connections", "gauge", "Attempts in flight on the upstream."
    )
    for u in v.ups:
        out.append(
            'twinproxy_upstream_active_connections{upstream="%s"} %d\n' % (_label(u.name), u.active)
        )
    _head(
        out,
        "twinproxy_upstream_idle_connections",
        "gauge",
        "Pooled keep-alive connections to the upstream.",
    )
    for u in v.ups:
        out.append(
            'twinproxy_upstream_idle_connections{upstream="%s"} %d\n' % (_label(u.name), u.idle)
        )

    _head(
        out,
        "twinproxy_retries_total",
        "counter",
        "Retries after a failed attempt on the upstream, by phase (connect | send | head).",
    )
    for lab in range(LABELS):
        nm = name_of(lab)
        r = ucell(lab, U_RETRY0)
        if nm is None or not any(s[r : r + 3]):
            continue
        for p in range(3):
            out.append(
                'twinproxy_retries_total{upstream="%s",phase="%s"} %d\n'
                % (_label(nm), _PHASES[p], s[r + p])
            )
    _head(
        out,
        "twinproxy_retries_skipped_total",
        "counter",
        "Failures answered instead of retried: the retry budget was exhausted.",
    )
    out.append("twinproxy_retries_skipped_total %d\n" % s[C_RETRIES_SKIPPED])

    _head(
        out,
        "twinproxy_health_transitions_total",
        "counter",
        "Health verdict changes of the upstream (to: up | down).",
    )
    for u in v.ups:
        for to, n in (("up", u.to_up), ("down", u.to_down)):
            out.append(
                'twinproxy_health_transitions_total{upstream="%s",to="%s"} %d\n'
                % (_label(u.name), to, n)
            )

    _head(
        out,
        "twinproxy_queue_wait_seconds",
        "histogram",
        "Time a request waited for an upstream connection slot (requests that waited).",
    )
    _histogram(
        out,
        "twinproxy_queue_wait_seconds",
        None,
        s[C_QUEUE_B0 : C_QUEUE_B0 + BUCKETS],
        s[C_QUEUE_SUM_US],
    )

    _head(
        out,
        "twinproxy_ratelimit_decisions_total",
        "counter",
        "Rate-limit decisions (allowed | limited).",
    )
    out.append('twinproxy_ratelimit_decisions_total{decision="allowed"} %d\n' % s[C_RL_ALLOWED])
    out.append('twinproxy_ratelimit_decisions_total{decision="limited"} %d\n' % s[C_RL_LIMITED])
    _head(
        out,
        "twinproxy_ratelimit_rejected_total",
        "counter",
        "Requests answered 429 by the rate limiter.",
    )
    out.append("twinproxy_ratelimit_rejected_total %d\n" % s[C_RL_LIMITED])

    _head(
        out,
        "twinproxy_config_reloads_total",
        "counter",
        "Config reloads (result: success | failure).",
    )
    out.append('twinproxy_config_reloads_total{result="success"} %d\n' % v.reloads_ok)
    out.append('twinproxy_config_reloads_total{result="failure"} %d\n' % v.reloads_failed)
    _head(
        out,
        "twinproxy_config_generation",
        "gauge",
        "Config generation: 1 at start, +1 per applied reload.",
    )
    out.append("twinproxy_config_generation %d\n" % v.generation)
    _head(
        out,
        "twinproxy_build_info",
        "gauge",
        "The running build (impl c | py, version as --version prints it).",
    )
    out.append(
        'twinproxy_build_info{impl="%s",version="%s"} 1\n' % (_label(v.impl), _label(v.version))
    )

    _head(
        out,
        "twinproxy_errors_total",
        "counter",
        "Errors the proxy answered (code) and connections it closed without an answer "
        '(code ""), by reason.',
    )
    for ci, code in enumerate(ERR_CODES):
        for r in range(REASON_N):
            n = s[ERR0 + ci * REASON_N + r]
            if n:
                out.append(
                    'twinproxy_errors_total{code="%s",reason="%s"} %d\n'
                    % (code or "", REASONS[r], n)
                )
    return "".join(out)
