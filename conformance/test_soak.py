"""Randomized soak (issue 11): conformance/soak.py against one twin, then its fds and RSS.

The CI variant runs SOAK_REQUESTS (default 6,000) requests; `make soak` runs 100,000 per
twin. SOAK_SEED (default 1107) picks the requests, SOAK_CLIENTS (default 16) the concurrent
client connections; the seed is printed with the report, so a failure replays with
`SOAK_SEED=<seed> SOAK_REQUESTS=<n> .venv/bin/pytest -s conformance/test_soak.py`.

What must hold (docs/conformance.md "Soak"):
- every answer is the answer to its own request (zero mixed responses), errors are the
  proxy's exact JSON 502s, a `Connection: close` answer is followed by the close;
- the access log has one record per answered request with the allowed attempts (a POST
  without Idempotency-Key that met a fault: exactly 1), the retry events add up to the extra
  attempts, and the upstream listeners counted exactly as many requests as the log's
  attempts (no replay the log does not show);
- file descriptors: once the clients are gone, the proxy's process tree has exactly its
  start-up descriptors plus its pooled upstream connections, counted independently at the
  upstream (`/stats` connections_active); the pool is bounded by the config
  (3 upstreams x upstream_idle_connections 64);
- memory: RSS after the run at most SOAK_RSS_SLACK_KB (default 8 MiB) above RSS after a
  warm-up of the same mix (so allocator and pool growth to the working set is excluded);
  not asserted for an ASan build (its quarantine holds freed memory; LeakSanitizer
  checks for leaks when the proxy exits).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest
import soak
from harness import REPO, impl_binary, process_tree, wait_until

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "6000"))
SEED = int(os.environ.get("SOAK_SEED", "1107"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "16"))
MAX_SECONDS = float(os.environ.get("SOAK_MAX_SECONDS", "600"))
RSS_SLACK_KB = int(os.environ.get("SOAK_RSS_SLACK_KB", str(8 * 1024)))
WARMUP = max(1000, REQUESTS // 10)
POOL_BOUND = len(soak.UPSTREAM_NAMES) * 64  # upstream_idle_connections default


def _sanitized(impl: str) -> bool:
    """An ASan build keeps freed memory in its quarantine, so its RSS grows by design;
    LeakSanitizer checks it for leaks at exit instead (the teardown fails on a report)."""
    try:
        return b"__asan_init" in impl_binary(impl).read_bytes()
    except OSError:
        return False


def _fds(p) -> int:
    return soak.fd_count(process_tree(p.proc.pid))


@pytest.mark.timeout(int(2 * MAX_SECONDS + 120))
def test_soak(impl, upstream, proxy):
    up = upstream(soak.UPSTREAM_NAMES)
    p = proxy(up, **soak.PROXY_OVERRIDES)
    deltas = {n: up.counting(n) for n in soak.UPSTREAM_NAMES}

    def pooled() -> int:
        return sum(d.peek().active for d in deltas.values())

    # The baseline is taken after one request: listener, loop, log file, ... and what an
    # event loop opens once at its first accept (libuv, under uvloop, keeps a spare
    # /dev/null descriptor from then on for its EMFILE handling), minus the pooled
    # upstream connection that request left.
    base = p.request("/", headers=[("X-Request-ID", "soak-baseline")])
    assert base.status == 200
    assert wait_until(lambda: pooled() >= 1, 5)
    fds_start = _fds(p) - pooled()

    def settle(what: str) -> tuple[int, int]:
        """Wait until every proxy fd above the start is a pooled upstream connection."""
        got: dict[str, int] = {}

        def ok() -> bool:
            got["fds"], got["pool"] = _fds(p), pooled()
            return got["fds"] - fds_start == got["pool"]

        assert wait_until(ok, 10, interval=0.1), (
            f"{impl}-proxy fds {what}: {got['fds']} = start {fds_start} + "
            f"{got['fds'] - fds_start}, but only {got['pool']} pooled upstream connections"
        )
        assert got["pool"] <= POOL_BOUND, got
        return got["fds"], got["pool"]

    warm = soak.run(p.port, WARMUP, SEED, CLIENTS, MAX_SECONDS, tag="w")
    fds_warm, pool_warm = settle("after the warm-up")
    rss_warm = p.rss_kb()

    rep = soak.run(p.port, REQUESTS, SEED, CLIENTS, MAX_SECONDS, tag="m")
    fds_end, pool_end = settle("after the run")
    rss_end = p.rss_kb()

    # Everything the proxy logged by now is complete: no client connection is left.
    records = [r for r in p.access_records() if r.get("request_id") != "soak-baseline"]
    retries = p.events("retry")
    connect_retries = sum(1 for e in retries if e.get("phase") == "connect")
    logged = soak.check_access_log(records, [warm, rep], connect_retries)
    # The upstream counts a request when its head has been parsed: an attempt the proxy
    # gave up because its client left (status 0) may never have got that far.
    client_gone = sum(1 for r in records if r.get("status") == 0)
    upstream_requests = sum(d.peek().requests for d in deltas.values()) - 1  # baseline
    retry_events = len(retries)
    by_phase = Counter(f"{e.get('phase')}/{e.get('reason')}" for e in retries)
    skipped = len(p.events("retry_skipped"))
    # Keep the logs of the last run of each twin for a look after a failure.
    keep = REPO / "build" / "soak" / impl
    keep.mkdir(parents=True, exist_ok=True)
    for f in (p.stderr_path, p.access_path, p.config_path):
        if f is not None and f.exists():
            shutil.copy(f, keep / f.name)
    print(
        f"\n--- soak {impl}-proxy (SOAK_SEED={SEED} SOAK_REQUESTS={REQUESTS} "
        f"SOAK_CLIENTS={CLIENTS}) ---\n"
        f"warm-up: {warm.requests} requests, failures {warm.failure_count}\n"
        f"{soak.summary(rep)}\n"
        f"access log: {logged['records']} records, attempts {logged['attempts_total']}, "
        f"upstream requests {upstream_requests}, retry events {retry_events}, "
        f"retry_skipped {skipped}; retries by phase/reason: "
        f"{dict(by_phase)}\n"
        f"records of requests whose client left (status 0): {client_gone}; "
        f"attempts above the expected (connect-phase retries): "
        f"{logged['attempts_over_expected']}\n"
        f"POST without Idempotency-Key that met a fault, by attempts: "
        f"{logged['post_without_key_fault_attempts']}\n"
        f"fds: start {fds_start}, after warm-up {fds_warm} ({pool_warm} pooled), "
        f"after run {fds_end} ({pool_end} pooled)\n"
        f"RSS: after warm-up {rss_warm} KiB, after run {rss_end} KiB "
        f"({rss_end - rss_warm:+d} KiB)\n"
        f"logs kept in {keep}"
    )
    assert warm.failures == [], soak.summary(warm)
    assert rep.failures == [] and rep.mixed == 0, soak.summary(rep)
    assert not rep.stopped_by_time and rep.requests == REQUESTS, soak.summary(rep)
    # The upstreams saw the attempts the log shows, less at most one per request whose
    # client left mid-attempt and per connect-phase retry (nothing sent), and each retry
    # is an event.
    unseen = client_gone + connect_retries
    assert 0 <= logged["attempts_total"] - upstream_requests <= unseen, (
        logged["attempts_total"],
        upstream_requests,
        client_gone,
    )
    assert retry_events == logged["attempts_total"] - logged["records"] + sum(
        1 for r in p.access_records() if r.get("attempts") == 0
    )
    assert skipped == 0
    # POSTs without Idempotency-Key that met a fault after they were sent: 1 attempt
    # (more only as connect-phase retries, counted in check_access_log).
    post = logged["post_without_key_fault_attempts"]
    assert sum(n * (a - 1) for a, n in post.items() if a > 1) <= connect_retries, post
    if not _sanitized(impl):
        assert rss_end - rss_warm <= RSS_SLACK_KB, (rss_warm, rss_end)
