"""metrics: the Prometheus text of GET /metrics (contract 9). Twin: c-proxy/src/metrics.c.

So far the series that exist: twinproxy_upstream_up, twinproxy_ratelimit_decisions_total,
twinproxy_ratelimit_rejected_total, twinproxy_config_generation, twinproxy_build_info, in
the order of contract section 9, each with its HELP and TYPE lines (`promtool check
metrics` clean). The exact text for a fixed input is in c-proxy/tests/metrics_cases/ and
docs/admin-api.md; both twins render it byte for byte.

Counters are global to the process tree (contract 9): with workers > 1 every worker process
owns one row of a shared-memory array created by the parent before the fork and writes only
its own row (no lock: one writer per cell); rendering sums the rows. The C twin's threads
use one atomic per counter instead.
"""

from __future__ import annotations

import ctypes
from collections.abc import MutableSequence, Sequence
from multiprocessing.sharedctypes import RawArray

# counter cells of one worker's row
C_RL_ALLOWED = 0  # rate limit: a token was taken (the request goes on)
C_RL_LIMITED = 1  # rate limit: 429
C_N = 2  # cells per row


class Counters:
    """Per-worker counter rows (struct metrics_counters). `row(wid)` is the index of the
    worker's first cell; a worker adds to `v[row + C_*]` only."""

    def __init__(self, workers: int = 1, shared: bool = False) -> None:
        self.workers = workers  # rows
        n = workers * C_N
        # shared: one block mapped by every forked worker; else a plain list (one process)
        self.v: MutableSequence[int] = (
            RawArray(ctypes.c_uint64, n) if shared else [0] * n  # type: ignore[assignment]
        )

    @staticmethod
    def row(wid: int) -> int:
        return wid * C_N

    def total(self, cell: int) -> int:
        """The counter summed over every worker."""
        v = self.v
        return sum(int(v[w * C_N + cell]) for w in range(self.workers))


def _label(value: str) -> str:
    """A label value as the text format escapes it: \\ " and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_render(
    impl: str,
    version: str,
    generation: int,
    upstreams: Sequence[tuple[str, bool]],
    rl_allowed: int,
    rl_limited: int,
) -> str:
    """metrics_render: the /metrics body. `upstreams` are (name, healthy) in config order."""
    out = [
        "# HELP twinproxy_upstream_up 1 if the upstream is healthy (health verdict), else 0.\n",
        "# TYPE twinproxy_upstream_up gauge\n",
    ]
    for name, healthy in upstreams:
        out.append('twinproxy_upstream_up{upstream="%s"} %d\n' % (_label(name), int(healthy)))
    out += [
        "# HELP twinproxy_ratelimit_decisions_total Rate-limit decisions (allowed | limited).\n",
        "# TYPE twinproxy_ratelimit_decisions_total counter\n",
        'twinproxy_ratelimit_decisions_total{decision="allowed"} %d\n' % rl_allowed,
        'twinproxy_ratelimit_decisions_total{decision="limited"} %d\n' % rl_limited,
        "# HELP twinproxy_ratelimit_rejected_total Requests answered 429 by the rate limiter.\n",
        "# TYPE twinproxy_ratelimit_rejected_total counter\n",
        "twinproxy_ratelimit_rejected_total %d\n" % rl_limited,
        "# HELP twinproxy_config_generation Config generation: 1 at start, +1 per applied "
        "reload.\n",
        "# TYPE twinproxy_config_generation gauge\n",
        "twinproxy_config_generation %d\n" % generation,
        "# HELP twinproxy_build_info The running build (impl c | py, version as --version "
        "prints it).\n",
        "# TYPE twinproxy_build_info gauge\n",
        'twinproxy_build_info{impl="%s",version="%s"} 1\n' % (_label(impl), _label(version)),
    ]
    return "".join(out)
