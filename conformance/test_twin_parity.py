"""Twin parity: the same bytes in give the same bytes out. Each case goes to both twins
(same config, same upstream) and the responses, the requests the upstream saw (/echo) and
the access-log records must be identical once generated values are masked (request ids,
timestamps, durations). Catches differences no other test names explicitly."""

from __future__ import annotations

import json
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import (
    Conn,
    ProxyFactory,
    UpstreamFactory,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.both_impls

H = b"Host: parity.test\r\n"


def req(line: bytes, hdrs: bytes = b"", body: bytes = b"") -> bytes:
    return line + b"\r\n" + H + hdrs + b"\r\n" + body


CASES = {
    "simple-echo": req(b"GET /echo HTTP/1.1"),
    "empty-header-value": req(b"GET /echo HTTP/1.1", b"X-Empty:\r\nX-B: 1\r\n"),
    "padded-header-value": req(b"GET /echo HTTP/1.1", b"X-Pad:   v  \t \r\n"),
    "tab-in-header-value": req(b"GET /echo HTTP/1.1", b"X-Tab: a\tb\r\n"),
    "obs-text-header-value": req(b"GET /echo HTTP/1.1", b"X-Obs: caf\xe9 \xff\r\n"),
    "long-target": req(b"GET /echo?" + b"q=" + b"z" * 4000 + b" HTTP/1.1"),
    "percent-target": req(b"GET /echo/%E2%82%AC?a=%20&b=+ HTTP/1.1"),
    "absolute-form": b"GET http://other.example/echo?x=1 HTTP/1.1\r\n" + H + b"\r\n",
    "options-asterisk": req(b"OPTIONS * HTTP/1.1"),
    "custom-method": req(b"PURGE /echo HTTP/1.1"),
    "lowercase-method": req(b"get /echo HTTP/1.1"),
    "http10-no-host": b"GET /echo HTTP/1.0\r\n\r\n",
    "http10-keepalive": b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n"
    + H
    + b"\r\n",
    "connection-close-mixed-case": req(b"GET /echo HTTP/1.1", b"Connection: Close\r\n"),
    "connection-list": req(
        b"GET /echo HTTP/1.1", b"Connection: x-a, close, X-B\r\nX-A: 1\r\nX-B: 2\r\n"
    ),
    "two-connection-headers": req(
        b"GET /echo HTTP/1.1",
        b"Connection: x-a\r\nConnection: x-b\r\nX-A: 1\r\nX-B: 2\r\n",
    ),
    "empty-xff-and-via": req(b"GET /echo HTTP/1.1", b"X-Forwarded-For:\r\nVia:\r\n"),
    "empty-request-id": req(b"GET /echo HTTP/1.1", b"X-Request-ID:\r\n"),
    "expect-mixed-case": req(
        b"POST /echo HTTP/1.1", b"Expect: 100-Continue\r\nContent-Length: 3\r\n", b"abc"
    ),
    "te-trailers": req(b"GET /echo HTTP/1.1", b"TE: trailers\r\n"),
    "chunk-extensions-and-trailers": req(
        b"POST /echo HTTP/1.1",
        b"Transfer-Encoding: chunked\r\n",
        b'3;name=val;q="x y"\r\nabc\r\n0\r\nX-T1: a\r\nX-T2: b\r\n\r\n',
    ),
    "content-length-zeros": req(b"POST /echo HTTP/1.1", b"Content-Length: 000\r\n"),
    "get-with-body": req(b"GET /echo HTTP/1.1", b"Content-Length: 4\r\n", b"body"),
    "host-with-port": b"GET /echo HTTP/1.1\r\nHost: h.example:8080\r\n\r\n",
    "empty-host": b"GET /echo HTTP/1.1\r\nHost:\r\n\r\n",
    "double-space-request-line": req(b"GET  /echo HTTP/1.1"),
    "trailing-space-after-version": req(b"GET /echo HTTP/1.1 "),
    "leading-empty-line": b"\r\n" + req(b"GET /echo HTTP/1.1"),
    "status-unknown-reason": req(b"GET /status/599 HTTP/1.1"),
    "status-299": req(b"GET /status/299 HTTP/1.1"),
    "chunked-to-http10": b"GET /chunked/3000?chunk=1000&trailer=1 HTTP/1.0\r\n\r\n",
    "head-chunked": req(b"HEAD /chunked/100 HTTP/1.1"),
    "head-http10": b"HEAD /bytes/10 HTTP/1.0\r\n\r\n",
    "response-odd-headers": req(
        b"GET /headers?X-E=&X-D=1&X-D=2&Connection=X-Gone%2C%20close&X-Gone=1&x-lower=v HTTP/1.1"
    ),
    "upgrade-426": req(b"GET /upgrade HTTP/1.1"),
    "pipelined-mix": req(b"GET /bytes/1 HTTP/1.1")
    + req(b"POST /echo HTTP/1.1", b"Content-Length: 2\r\n", b"ok")
    + req(b"GET /status/404 HTTP/1.1"),
    "http11-connection-keepalive": req(
        b"GET /bytes/2 HTTP/1.1", b"Connection: keep-alive\r\n"
    ),
}

_HEX32 = re.compile(rb"[0-9a-f]{32}")


def _exchange(port: int, raw: bytes) -> bytes:
    with Conn(port, timeout=5) as c:
        c.send(raw)
        # Everything the proxy sends until it closes or stays quiet.
        out = b""
        while True:
            got = c.read_available(0.2)
            out += got
            if c.eof or not got:
                break
        return out + (b"<closed>" if c.eof else b"<open>")


def _mask_log(line: str) -> dict:
    rec = json.loads(line)
    rec["ts"] = "<ts>"
    rec["duration_ms"] = "<ms>"
    if re.fullmatch(r"[0-9a-f]{32}", str(rec.get("request_id"))):
        rec["request_id"] = "<id>"
    return rec


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    ups = UpstreamFactory(tmp_path_factory.mktemp("parity-up"))
    factories = [
        ProxyFactory(i, tmp_path_factory.mktemp(f"parity-{i}")) for i in ("c", "py")
    ]
    up = ups(["u1"])
    proxies = [f(up) for f in factories]
    yield proxies
    problems = [x for f in factories for x in f.close()]
    ups.close()
    assert not problems, problems


def _one(p, raw: bytes) -> tuple[bytes, list[dict]]:
    if p.proc.poll() is not None:
        pytest.fail(f"{p.impl}-proxy is not running (exit {p.proc.returncode})")
    before = len(p.access_log_lines())
    wire = _HEX32.sub(b"<id>", _exchange(p.port, raw))
    wait_until(lambda: len(p.access_log_lines()) > before, 1.0)
    time.sleep(0.05)  # a pipelined case logs several lines
    return wire, [_mask_log(ln) for ln in p.access_log_lines()[before:]]


@pytest.mark.parametrize("raw", list(CASES.values()), ids=list(CASES))
def test_same_bytes_out(twins, raw):
    with ThreadPoolExecutor(2) as ex:
        c, py = ex.map(lambda p: _one(p, raw), twins)
    assert c[0] != b"<open>", "no response at all"
    assert c[0] == py[0], "responses differ"
    assert c[1] == py[1], "access log records differ"


# --------------------------------------------------------------------------- admin API
# The same raw admin requests, in this order (state builds up: create, read, change,
# delete), to both twins: the same bytes back (design of issue 8, "Wire format").

ADMIN_TOKEN = "parity-token"
AUTH = f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
AH = b"Host: admin.test\r\n"


def areq(
    line: bytes, body: bytes | None = None, auth: bool = True, close: bool = True
) -> bytes:
    hs = AH + (AUTH if auth else b"") + (b"Connection: close\r\n" if close else b"")
    if body is not None:
        hs += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return line + b"\r\n" + hs + b"\r\n" + (body or b"")


ADMIN_CASES = {
    "healthz": areq(b"GET /healthz HTTP/1.1", auth=False),
    "healthz-keepalive": areq(b"GET /healthz HTTP/1.1", auth=False, close=False),
    "healthz-http10": b"GET /healthz HTTP/1.0\r\n\r\n",
    "clients-empty": areq(b"GET /clients HTTP/1.1"),
    "no-token": areq(b"GET /clients HTTP/1.1", auth=False),
    "wrong-token": b"GET /clients HTTP/1.1\r\n"
    + AH
    + b"Authorization: Bearer nope\r\n\r\n",
    "no-token-unknown-path": areq(b"GET /secret HTTP/1.1", auth=False),
    "create": areq(
        b"POST /clients HTTP/1.1",
        b'{"client_id":"alice","capacity":10,"rate_per_sec":2.5}',
    ),
    "create-fractions": areq(
        b"POST /clients HTTP/1.1",
        b'{"client_id":"frac","capacity":7,"rate_per_sec":0.1,"tokens":3}',
    ),
    "create-tiny-rate": areq(
        b"POST /clients HTTP/1.1",
        b'{"client_id":"tiny","capacity":1,"rate_per_sec":1e-05}',
    ),
    "create-odd-rate": areq(
        b"POST /clients HTTP/1.1",
        b'{"client_id":"odd","capacity":5,"rate_per_sec":123456.789}',
    ),
    "create-ipv6": areq(
        b"POST /clients HTTP/1.1", b'{"client_id":"::1","capacity":2,"rate_per_sec":0}'
    ),
    "create-unicode": areq(
        b"POST /clients HTTP/1.1",
        '{"client_id":"caf\u00e9 \\u00e9","capacity":2,"rate_per_sec":0}'.encode(),
    ),
    "create-duplicate": areq(
        b"POST /clients HTTP/1.1",
        b'{"client_id":"alice","capacity":1,"rate_per_sec":1}',
    ),
    "create-invalid-json": areq(b"POST /clients HTTP/1.1", b'{"client_id":'),
    "create-unknown-field": areq(
        b"POST /clients HTTP/1.1",
        b'{"client_id":"x","capacity":1,"rate_per_sec":1,"q":1}',
    ),
    "create-missing-field": areq(b"POST /clients HTTP/1.1", b'{"client_id":"x"}'),
    "create-wrong-type": areq(
        b"POST /clients HTTP/1.1", b'{"client_id":"x","capacity":1.0,"rate_per_sec":1}'
    ),
    "create-invalid-value": areq(
        b"POST /clients HTTP/1.1",
        b'{"client_id":"x","capacity":2,"rate_per_sec":1,"tokens":3}',
    ),
    "create-no-body": areq(b"POST /clients HTTP/1.1", b""),
    "get-one": areq(b"GET /clients/alice HTTP/1.1"),
    "get-ipv6-encoded": areq(b"GET /clients/%3A%3A1 HTTP/1.1"),
    "get-missing": areq(b"GET /clients/bob HTTP/1.1"),
    "get-bad-escape": areq(b"GET /clients/%ZZ HTTP/1.1"),
    "list": areq(b"GET /clients HTTP/1.1"),
    "list-page": areq(b"GET /clients?limit=2&offset=1 HTTP/1.1"),
    "list-bad-limit": areq(b"GET /clients?limit=0 HTTP/1.1"),
    "list-bad-offset": areq(b"GET /clients?offset=-1 HTTP/1.1"),
    "put": areq(b"PUT /clients/alice HTTP/1.1", b'{"capacity":4,"rate_per_sec":0.5}'),
    "put-missing-field": areq(b"PUT /clients/alice HTTP/1.1", b'{"capacity":4}'),
    "put-missing-client": areq(
        b"PUT /clients/bob HTTP/1.1", b'{"capacity":4,"rate_per_sec":1}'
    ),
    "patch-tokens": areq(b"PATCH /clients/alice HTTP/1.1", b'{"tokens":1}'),
    "patch-bad-tokens": areq(b"PATCH /clients/alice HTTP/1.1", b'{"tokens":9}'),
    "patch-rate": areq(b"PATCH /clients/frac HTTP/1.1", b'{"rate_per_sec":0}'),
    "method-not-allowed": areq(b"DELETE /clients HTTP/1.1"),
    "method-not-allowed-id": areq(b"POST /clients/alice HTTP/1.1", b"{}"),
    "method-not-allowed-healthz": areq(b"POST /healthz HTTP/1.1", b"{}"),
    "trailing-slash": areq(b"GET /clients/ HTTP/1.1"),
    "unknown-path": areq(b"GET /nope HTTP/1.1"),
    "upstreams": areq(b"GET /upstreams HTTP/1.1"),
    "upstream-drain": areq(b"PATCH /upstreams/u1 HTTP/1.1", b'{"state":"drain"}'),
    "upstream-bad-state": areq(b"PATCH /upstreams/u1 HTTP/1.1", b'{"state":"off"}'),
    "upstream-missing": areq(b"PATCH /upstreams/u9 HTTP/1.1", b'{"state":"drain"}'),
    "upstream-active": areq(b"PATCH /upstreams/u1 HTTP/1.1", b'{"state":"active"}'),
    "pipelined": areq(b"GET /clients/alice HTTP/1.1", close=False)
    + areq(b"GET /clients/nobody HTTP/1.1", close=False)
    + areq(b"GET /healthz HTTP/1.1"),
    "delete": areq(b"DELETE /clients/alice HTTP/1.1"),
    "delete-again": areq(b"DELETE /clients/alice HTTP/1.1"),
    "delete-ipv6": areq(b"DELETE /clients/%3A%3A1 HTTP/1.1"),
    "list-after": areq(b"GET /clients HTTP/1.1"),
    "body-too-large": areq(
        b"POST /clients HTTP/1.1",
        b'{"client_id":"big","capacity":1,"rate_per_sec":1}' + b" " * 65536,
    ),
}


@pytest.fixture(scope="module")
def admin_twins(tmp_path_factory):
    from admin_client import Admin, admin_config, rl_config

    ups = UpstreamFactory(tmp_path_factory.mktemp("aparity-up"))
    factories = [
        ProxyFactory(i, tmp_path_factory.mktemp(f"aparity-{i}")) for i in ("c", "py")
    ]
    up = ups(["u1", "u2"])
    proxies = [
        f(
            up,
            rate_limit=rl_config(f.workdir / "rl.db", capacity=5, rate=0),
            admin=admin_config(token=ADMIN_TOKEN),
        )
        for f in factories
    ]
    admins = [Admin.of(p) for p in proxies]
    yield proxies, admins
    problems = [x for f in factories for x in f.close()]
    ups.close()
    assert not problems, problems


@pytest.mark.parametrize("raw", list(ADMIN_CASES.values()), ids=list(ADMIN_CASES))
def test_admin_same_bytes_out(admin_twins, raw):
    proxies, admins = admin_twins
    for p in proxies:
        if p.proc.poll() is not None:
            pytest.fail(f"{p.impl}-proxy is not running (exit {p.proc.returncode})")
    with ThreadPoolExecutor(2) as ex:
        c, py = ex.map(lambda a: _exchange(a.port, raw), admins)
    assert c != b"<open>", "no response at all"
    assert c == py, "admin responses differ"


# --------------------------------------------------------------------------- event lines
# The same scenario against both twins at log level debug: every event line either writes
# is a shape of the event registry (c-proxy/tests/registry_cases/events.txt: name, level
# and exactly its fields), and both write the same shapes. ts and values (pids, request
# ids, addresses) are left out: they differ legitimately.


def _event_shapes(p) -> list[tuple[str, str, frozenset[str]]]:
    out = []
    for line in p.stderr_text().splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if "event" not in rec:
            continue
        fields = frozenset(k for k in rec if k not in ("ts", "level", "event"))
        out.append((rec["event"], rec["level"], fields))
    return out


def _event_scenario(p, up, dead_port: int) -> None:
    from admin_client import Admin

    admin = Admin.of(p)
    for _ in range(
        4
    ):  # u_dead is first (weight 100): refused, retried, then marked down
        assert p.request("/").status == 200
    p.wait_event("upstream_down")
    assert (
        p.request(
            "/", headers=[("Content-Length", "1"), ("Content-Length", "2")]
        ).status
        == 400
    )
    with (
        p.connect() as c
    ):  # kept alive, then closed by timeouts.idle: connection_closed
        assert c.request("/").status == 200
        c.assert_closed()
    assert admin.patch("/upstreams/u1", {"state": "drain"}).status == 200
    assert p.request("/").status == 503  # u1 drained, u_dead down: request_error
    assert admin.patch("/upstreams/u1", {"state": "active"}).status == 200
    p.reload(p.config)
    p.write_config("listen: [not a config\n")
    p.signal(signal.SIGHUP)
    p.wait_event("reload_failed")
    assert p.stop() == 0


def test_event_lines_match_registry_and_each_other(tmp_path_factory):
    from admin_client import admin_config
    from registry import shapes

    registry = shapes()
    ups = UpstreamFactory(tmp_path_factory.mktemp("eparity-up"))
    factories = [
        ProxyFactory(i, tmp_path_factory.mktemp(f"eparity-{i}")) for i in ("c", "py")
    ]
    try:
        up = ups(["u1"])
        dead_port = free_port()
        entries = [
            {"address": f"127.0.0.1:{dead_port}", "name": "u_dead", "weight": 100}
        ]
        entries += up.entries()
        seen = {}
        for f in factories:
            p = f(
                entries,
                retries=1,
                health={"max_fails": 1, "fail_timeout": "30s"},
                timeouts={"idle": "300ms"},
                log={"level": "debug"},
                admin=admin_config(),
            )
            _event_scenario(p, up, dead_port)
            got = _event_shapes(p)
            unknown = sorted({s for s in got if s not in registry}, key=str)
            assert not unknown, (
                f"{p.impl}-proxy event lines not in the registry: {unknown}"
            )
            seen[p.impl] = set(got)
        assert seen["c"] == seen["py"], (
            f"only c: {sorted(seen['c'] - seen['py'], key=str)}; "
            f"only py: {sorted(seen['py'] - seen['c'], key=str)}"
        )
        names = {e for e, _, _ in seen["c"]}
        for want in (
            "start",
            "stop",
            "shutdown",
            "reload",
            "reload_failed",
            "retry",
            "upstream_down",
            "upstream_drain",
            "request_error",
            "connection_closed",
        ):
            assert want in names, f"the scenario wrote no {want} event"
    finally:
        problems = [x for f in factories for x in f.close()]
        ups.close()
    assert not problems, problems
