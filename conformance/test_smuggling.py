"""Request smuggling and malformed requests (contract 3, behaviour.md errors): every
ambiguous or malformed request gets the exact 400, the connection is closed, and
nothing reaches the upstream (its /stats request count does not move).

The cases run against one proxy per twin (module scope) to keep the suite fast; each test
checks the proxy is still alive afterwards, and a dead proxy is replaced for the next case.
"""

from __future__ import annotations

import corpus_lib
import pytest
from harness import ProxyFactory, assert_proxy_error, build_request, pattern

H = b"Host: x\r\n"
# A second request hidden where a confused parser would find it.
SMUGGLED = b"GET /status/299 HTTP/1.1\r\nHost: x\r\n\r\n"


def post(
    hdrs: bytes, body: bytes = b"", line: bytes = b"POST /echo HTTP/1.1\r\n"
) -> bytes:
    return line + hdrs + b"\r\n" + body


# The request cases live in conformance/corpus/ (test_corpus.py delivers them whole, byte
# by byte and split at every offset to a capturing upstream); here every case that must
# get exactly 400 is checked whole against the scripted upstream's /stats counter.
CASES = {c.name: c.raw for c in corpus_lib.load("request") if c.expect == "reject 400"}
HEAD_CASES = CASES


@pytest.fixture(scope="module")
def _shared(module_upstream, module_proxy):
    up = module_upstream(["u1"])
    return {"up": up, "p": module_proxy(up), "factory": module_proxy}


@pytest.fixture
def env(_shared):
    if _shared["p"].proc.poll() is not None:
        # The previous case killed it (and failed for that); start a fresh one.
        _shared["p"] = _shared["factory"](_shared["up"])
    return _shared["up"], _shared["p"]


def _assert_rejected(up, p, raw: bytes, codes=(400,)) -> int:
    with up.counting() as d, p.connect() as c:
        c.send(raw)
        r = c.read_response()
        assert r.status in codes, r
        assert_proxy_error(r, r.status, close=True)
        c.assert_closed()
    assert d.requests == 0, f"{d.requests} request(s) reached the upstream"
    assert p.proc.poll() is None, f"proxy exited ({p.proc.returncode})"
    return r.status


@pytest.mark.parametrize("raw", list(CASES.values()), ids=list(CASES.keys()))
def test_rejected_with_400(env, raw):
    _assert_rejected(*env, raw)


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/0.9"])
def test_parsed_unsupported_version_gets_505(env, version):
    _assert_rejected(*env, f"GET / {version}\r\nHost: x\r\n\r\n".encode(), codes=(505,))


@pytest.mark.parametrize("version", ["HTTP/1.2", "HTTP/3.0", "HTTP/9.9"])
def test_other_unsupported_version_gets_400_or_505(env, version):
    # behaviour.md: 505 when llhttp parses the version, else 400; llhttp 9.4.3 rejects
    # these, and the twins must agree (test_versions_same_in_both_twins).
    _assert_rejected(
        *env, f"GET / {version}\r\nHost: x\r\n\r\n".encode(), codes=(400, 505)
    )


def test_valid_request_after_rejections_still_works(env):
    _up, p = env
    r = p.request("/bytes/10")
    assert r.status == 200 and r.body == pattern(0, 10)


@pytest.mark.both_impls
def test_versions_same_in_both_twins(upstream, tmp_path):
    up = upstream(["u1"])
    answers = {}
    factories = [ProxyFactory(i, tmp_path) for i in ("c", "py")]
    try:
        for f in factories:
            p = f(up)
            got = []
            for v in ["HTTP/1.2", "HTTP/3.0", "HTTP/0.9", "HTTP/2.0"]:
                with p.connect() as c:
                    c.send(f"GET / {v}\r\nHost: x\r\n\r\n".encode())
                    got.append((v, c.read_response().status))
            answers[f.impl] = got
    finally:
        problems = [x for f in factories for x in f.close()]
    assert answers["c"] == answers["py"]
    assert not problems, problems


@pytest.mark.parametrize("kind", ["cl-te", "dup-cl", "bad-cl", "bad-chunk", "garbage"])
def test_invalid_upstream_response_never_reaches_another_client(upstream, proxy, kind):
    up = upstream(["u1"])
    p = proxy(up)
    with p.connect() as a, p.connect() as b:
        a.send(build_request("GET", f"/invalid/{kind}"))
        ra = a.read_response()
        assert ra.status == 502
        rb = b.request("/bytes/17")
        assert rb.status == 200 and rb.body == pattern(0, 17)
        ra2 = a.request("/bytes/4")
        assert ra2.status == 200 and ra2.body == pattern(0, 4)


TRAILER_FIELDS = {
    "content-length": ("Content-Length: 42", "content-length", 0),
    "transfer-encoding": ("Transfer-Encoding: chunked", "transfer-encoding", 1),
    "trailer": ("Trailer: X-Ok", "trailer", 0),
    "host": ("Host: evil.example", "host", 1),
    "connection": ("Connection: close", "connection", 0),
}


@pytest.mark.parametrize("field", list(TRAILER_FIELDS))
def test_framing_fields_in_trailers_never_smuggle(env, field):
    # Contract: framing fields found in trailers are dropped. Rejecting the request (400) is
    # also safe (llhttp 9.4.3 rejects some of them); passing them on, or letting them change
    # how the next pipelined request is read, is not.
    up, p = env
    line, name, allowed = TRAILER_FIELDS[field]
    raw = post(
        H + b"Transfer-Encoding: chunked\r\n",
        b"5\r\nhello\r\n0\r\n" + line.encode() + b"\r\nX-Ok: 1\r\n\r\n",
    )
    with up.counting() as d, p.connect() as c:
        c.send(raw + build_request("GET", "/bytes/3"))
        r = c.read_response()
        if r.status == 400:
            assert_proxy_error(r, 400, close=True)
            c.assert_closed()
        else:
            assert r.status == 200, r
            echo = r.json()
            assert echo["body_length"] == 5
            names = [n.lower() for n, _ in echo["headers"]]
            assert names.count(name) == allowed, echo["headers"]
            assert ["X-Ok", "1"] in echo["headers"]
            r2 = c.read_response()
            assert r2.status == 200 and r2.body == pattern(0, 3)
    assert d.requests <= 2
    assert p.proc.poll() is None


def test_bad_request_after_a_good_pipelined_one(env):
    up, p = env
    with up.counting() as d, p.connect() as c:
        c.send(build_request("GET", "/bytes/3") + HEAD_CASES["cl-and-te"])
        r = c.read_response()
        assert r.status == 200 and r.body == pattern(0, 3)
        assert_proxy_error(c.read_response(), 400, close=True)
        c.assert_closed()
    assert d.requests == 1
