"""Request smuggling and malformed requests (contract 3, behaviour.md errors): every
ambiguous or malformed request gets the exact 400, the connection is closed, and
nothing reaches the upstream (its /stats request count does not move).

The cases run against one proxy per twin (module scope) to keep the suite fast; each test
checks the proxy is still alive afterwards, and a dead proxy is replaced for the next case.
"""

from __future__ import annotations

import pytest
from harness import ProxyFactory, assert_proxy_error, build_request, pattern

H = b"Host: x\r\n"
# A second request hidden where a confused parser would find it.
SMUGGLED = b"GET /status/299 HTTP/1.1\r\nHost: x\r\n\r\n"


def post(
    hdrs: bytes, body: bytes = b"", line: bytes = b"POST /echo HTTP/1.1\r\n"
) -> bytes:
    return line + hdrs + b"\r\n" + body


HEAD_CASES = {
    # Content-Length / Transfer-Encoding conflicts
    "cl-and-te": post(
        H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "te-and-cl": post(
        H + b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n",
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "cl-duplicate-same": post(
        H + b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"
    ),
    "cl-duplicate-different": post(
        H + b"Content-Length: 5\r\nContent-Length: 42\r\n", b"hello" + SMUGGLED
    ),
    "cl-list": post(H + b"Content-Length: 5, 5\r\n", b"hello"),
    "cl-plus": post(H + b"Content-Length: +5\r\n", b"hello"),
    "cl-minus": post(H + b"Content-Length: -5\r\n", b"hello"),
    "cl-hex": post(H + b"Content-Length: 0x5\r\n", b"hello"),
    "cl-decimal-point": post(H + b"Content-Length: 5.0\r\n", b"hello"),
    "cl-inner-space": post(H + b"Content-Length: 5 5\r\n", b"hello"),
    "cl-empty": post(H + b"Content-Length: \r\n", b"hello"),
    "cl-alpha": post(H + b"Content-Length: 5a\r\n", b"hello"),
    "cl-overflow": post(H + b"Content-Length: 99999999999999999999999\r\n", b"hello"),
    # Transfer-Encoding that is not exactly one final "chunked" (400, never 501)
    "te-not-final": post(
        H + b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
    "te-chunked-identity": post(
        H + b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
    "te-identity": post(H + b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n"),
    "te-gzip-chunked": post(H + b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
    "te-chunked-chunked": post(
        H + b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"
    ),
    "te-two-headers": post(
        H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"0\r\n\r\n",
    ),
    "te-unknown": post(H + b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
    "te-on-http10": post(
        H + b"Transfer-Encoding: chunked\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.0\r\n",
    ),
    "te-vertical-tab": post(H + b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n"),
    "te-space-before-colon": post(
        H + b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
    # header syntax
    "obs-fold": post(H + b"X-A: a\r\n b\r\n"),
    "obs-fold-tab": post(H + b"X-A: a\r\n\tb\r\n"),
    "obs-fold-te": post(H + b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
    "space-before-colon": post(H + b"X-A : 1\r\n"),
    "tab-before-colon": post(H + b"X-A\t: 1\r\n"),
    "empty-header-name": post(H + b": value\r\n"),
    "space-in-header-name": post(H + b"X A: 1\r\n"),
    # bare CR / bare LF
    "bare-cr-in-header-value": post(H + b"X-A: a\rb\r\n"),
    "bare-cr-in-request-line": b"GET /\r HTTP/1.1\r\n" + H + b"\r\n",
    "bare-cr-ending-request-line": b"GET / HTTP/1.1\rHost: x\r\n\r\n",
    "cr-cr-ending-head": b"GET / HTTP/1.1\r\nHost: x\r\n\r" + SMUGGLED,
    "bare-lf-everywhere": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare-lf-ending-request-line": b"GET / HTTP/1.1\nHost: x\r\n\r\n",
    "bare-lf-between-headers": b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
    "bare-lf-ending-head": b"GET / HTTP/1.1\r\nHost: x\r\n\n",
    # NUL and other control bytes
    "nul-in-header-value": post(H + b"X-A: a\x00b\r\n"),
    "ctl-01-in-header-value": post(H + b"X-A: a\x01b\r\n"),
    "esc-in-header-value": post(H + b"X-A: a\x1bb\r\n"),
    "del-in-header-value": post(H + b"X-A: a\x7fb\r\n"),
    "nul-in-header-name": post(H + b"X-\x00A: 1\r\n"),
    "nul-in-target": b"GET /\x00 HTTP/1.1\r\n" + H + b"\r\n",
    "ctl-in-target": b"GET /\x01 HTTP/1.1\r\n" + H + b"\r\n",
    # Host
    "missing-host-http11": b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "duplicate-host": b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "duplicate-host-same-value": b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
    # versions llhttp does not parse: "an unparsable version 400"
    "version-1.10": b"GET / HTTP/1.10\r\n" + H + b"\r\n",
    "version-no-dot": b"GET / HTTP/11\r\n" + H + b"\r\n",
    "version-lowercase": b"GET / http/1.1\r\n" + H + b"\r\n",
    "version-https": b"GET / HTTPS/1.1\r\n" + H + b"\r\n",
}

CHUNK_CASES = {
    "chunk-size-invalid": b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-minus": b"-5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-plus": b"+5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-0x": b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-underscore": b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
    "chunk-size-overflow": b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    "chunk-size-empty": b"\r\nhello\r\n0\r\n\r\n",
    "chunk-ext-empty-name": b"5;=x\r\nhello\r\n0\r\n\r\n",
    "chunk-ext-ctl-in-name": b"5;a\x01b\r\nhello\r\n0\r\n\r\n",
    "chunk-ext-unterminated-quote": b'5;a="x\r\nhello\r\n0\r\n\r\n',
    "chunk-ext-bare-cr": b"5;a=b\rc\r\nhello\r\n0\r\n\r\n",
    "chunk-ext-bare-lf": b"5;a=b\nhello\r\n0\r\n\r\n",
    "chunk-size-bare-lf": b"5\nhello\r\n0\r\n\r\n",
    "chunk-data-bare-lf": b"5\r\nhello\n0\r\n\r\n",
    "chunk-data-not-crlf": b"5\r\nhelloXX0\r\n\r\n",
    "last-chunk-bare-lf": b"5\r\nhello\r\n0\n\r\n",
    "second-chunk-invalid": b"5\r\nhello\r\n0x1\r\nA\r\n0\r\n\r\n",
}

CASES = dict(HEAD_CASES)
for _name, _body in CHUNK_CASES.items():
    CASES[_name] = post(H + b"Transfer-Encoding: chunked\r\n", _body + SMUGGLED)


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
