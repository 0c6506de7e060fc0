"""The smuggling corpus (conformance/corpus/, format in corpus/README.md) against each twin.

Request cases: every case is delivered whole, byte by byte, and split at every offset into
two sends, each on a fresh client connection, through the twin to a capturing upstream
(corpus_lib.CaptureUpstream) that records every byte it receives and parses it strictly.
A rejected case must get the exact proxy error, a close, and forward zero bytes (or, for an
error inside a streamed body, a cut-off prefix on a connection the proxy closes). An
accepted case must reach the upstream as exactly one well-framed message, the client must
get that message's response, and the next request on the connection must get its own
answer (nothing from another exchange).

Response cases: the capturing upstream answers `/r/NAME` with the case's raw bytes.

One proxy and one capturing upstream per twin (module scope). The upstream is listed
twice under two names (retries on, passive health off), so a pooled connection that died
with the previous case's close is retried instead of turning the next case into a 502:
each case is judged on its own bytes (the pooled-connection reuse itself is pinned by
test_connection_closed_with_its_response_is_not_reused).
"""

from __future__ import annotations

import json

import corpus_lib as cl
import pytest
from harness import GENERATED_ID, REASONS

REQUESTS = cl.load("request")
RESPONSES = cl.load("response")

# (twin, case) -> why the twin fails today. Kept with the contract's expectation; strict
# xfail, so a fix shows up as XPASS and the entry must go.
# Cases a twin fails today (strict xfail: the day it passes, the entry must go).
KNOWN_FAILURES: dict[tuple[str, str], str] = {}
# Failures that depend on what ran before (not strict).
KNOWN_FLAKY: dict[tuple[str, str], str] = {}

STATS = {"deliveries": 0}


def exact_error(closing: bool | None):
    """behaviour.md's exact error bytes; closing None: with or without Connection: close."""

    def check(r: dict) -> str | None:
        code = r["status"]
        if code not in REASONS:
            return f"status {code} is not a proxy error"
        body = json.dumps(
            {"code": code, "message": REASONS[code]}, separators=(",", ":")
        ).encode()
        rid = dict(r["headers"]).get(b"x-request-id", b"").decode("latin-1")
        if not GENERATED_ID.match(rid):
            return f"X-Request-ID {rid!r}"
        head = (
            f"HTTP/1.1 {code} {REASONS[code]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {rid}\r\n"
        ).encode()
        heads = [head + b"Connection: close\r\n\r\n", head + b"\r\n"]
        if closing is True:
            heads = heads[:1]
        elif closing is False:
            heads = heads[1:]
        if r["head"] not in heads or r["body"] != body:
            return f"not the exact error bytes: {r['head']!r} {r['body']!r}"
        return None

    return check


@pytest.fixture(scope="module")
def env(impl, module_proxy):
    up = cl.CaptureUpstream(RESPONSES)
    addr = f"127.0.0.1:{up.port}"
    p = module_proxy(
        [{"address": addr, "name": "cap1"}, {"address": addr, "name": "cap2"}],
        timeouts={"header": "2s", "read": "2s"},
        health={"max_fails": 0},
    )
    state = {"up": up, "p": p, "factory": module_proxy, "seq": [0]}
    yield state
    up.close()


@pytest.fixture
def live(env):
    if (
        env["p"].proc.poll() is not None
    ):  # a previous case killed it (and failed for it)
        env["p"] = env["factory"](
            env["p"].config["upstreams"],
            **{k: v for k, v in env["p"].config.items() if k in ("timeouts", "health")},
        )
    return env


def _known(request, impl: str, name: str) -> None:
    why = KNOWN_FAILURES.get((impl, name))
    if why:
        request.node.add_marker(pytest.mark.xfail(reason=why, strict=True))
    why = KNOWN_FLAKY.get((impl, name))
    if why:
        request.node.add_marker(pytest.mark.xfail(reason=why, strict=False))


@pytest.mark.parametrize("case", REQUESTS, ids=[c.name for c in REQUESTS])
def test_request_case(request, impl, live, case):
    _known(request, impl, case.name)
    up, p = live["up"], live["p"]
    failures = []
    for label, pieces in cl.deliveries(case.raw):
        STATS["deliveries"] += 1
        res = cl.run_request(
            p.port, up, case, pieces, exact_error(True), marker_seq=live["seq"]
        )
        if not res.ok:
            failures.append(f"{label}: {res.observed}: {res.detail}")
            if label == "whole" or len(failures) >= 3:
                break  # the case fails; do not spend a timeout per offset
    assert p.proc.poll() is None, f"proxy exited ({p.proc.returncode})"
    assert not failures, f"{case.name} ({case.expect}; {case.rfc}):\n" + "\n".join(
        failures
    )


@pytest.mark.parametrize("case", RESPONSES, ids=[c.name for c in RESPONSES])
def test_response_case(request, impl, live, case):
    _known(request, impl, case.name)
    up, p = live["up"], live["p"]
    live["seq"][0] += 1
    STATS["deliveries"] += 1
    res = cl.run_response(p.port, up, case, exact_error(None), seq=live["seq"][0])
    assert p.proc.poll() is None, f"proxy exited ({p.proc.returncode})"
    assert res.ok, (
        f"{case.name} ({case.expect}; {case.rfc}): {res.observed}: {res.detail}"
    )


def test_corpus_size():
    assert len(REQUESTS) >= 120 and len(RESPONSES) >= 30
    for c in REQUESTS + RESPONSES:
        assert c.rfc.startswith("RFC") or "contract" in c.rfc, c.name


def test_nothing_malformed_reached_the_upstream(request, impl, live):
    """After every case: the capturing upstream never parsed a malformed message."""
    up, p = live["up"], live["p"]
    r = cl.run_request(
        p.port, up, REQUESTS[-1], [REQUESTS[-1].raw], marker_seq=live["seq"]
    )
    assert r.ok, r.detail
    assert up.cap.malformed == [], up.cap.malformed[:5]
    print(f"\n{p.impl}: {STATS['deliveries']} deliveries so far in this session")
