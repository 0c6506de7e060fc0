"""exchange: request classification, response framing, reuse, which errors close, retries.
Pure functions of the exchange and their arguments: no loop, no sockets.
Twin: c-proxy/tests/test_exchange.c (same names, same cases)."""

from __future__ import annotations

import pytest
from fakes import make_config

from pyproxy.exchange import (
    IN_CHUNKED,
    IN_LENGTH,
    IN_NONE,
    OUT_CHUNKED,
    OUT_IDENTITY,
    OUT_NONE,
    X_CLOSE_AFTER,
    X_EXPECT,
    X_HEAD_METHOD,
    X_HTTP10,
    X_IDEMPOTENT,
    X_KEEPALIVE,
    X_REPLAYABLE,
    X_REQ_DONE,
    X_RESP_SENT,
    X_RESP_STARTED,
    X_UP_DIRTY,
    X_UP_EOF,
    X_UPGRADE,
    Exchange,
)
from pyproxy.http1 import HttpError, RequestParser, Response, ResponseParser
from pyproxy.retry import RetryBudget, RetryPhase, RetryVerdict

CFG = make_config("limits:\n  max_body_bytes: 100\n")
ROOMY = RetryBudget(percent=20, min_concurrent=3, requests_in_flight=1, retries_in_flight=0)


def classify(raw: bytes, draining: bool = False) -> tuple[Exchange, int]:
    p = RequestParser()
    p.feed_head(raw)
    req = p.finish_head()
    x = Exchange()
    return x, x.classify_request(req, CFG, draining, p.upgraded)


def response(raw: bytes, head_request: bool = False) -> Response:
    p = ResponseParser()
    p.feed_head(raw)
    return p.finish_head(head_request)


def framed(x: Exchange, raw: bytes, head_request: bool = False) -> tuple[bytes, bytes, bool]:
    return x.response_framing(response(raw, head_request), False, False)


# classify_request ---------------------------------------------------------------------------


def test_classify_hash_key() -> None:
    def key(raw: bytes, extra: str) -> bytes:
        p = RequestParser()
        p.feed_head(raw)
        x = Exchange()
        assert x.classify_request(p.finish_head(), make_config(extra), False, p.upgraded) == 0
        return x.key

    assert key(b"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n", "balancer: hash\nhash_key: path\n") == (
        b"/a/b"
    )
    hdr = "balancer: hash\nhash_key: header:X-User\n"
    # the first one, trimmed
    assert key(b"GET / HTTP/1.1\r\nHost: x\r\nx-user:  alice \r\nX-User: bob\r\n\r\n", hdr) == (
        b"alice"
    )
    # absent or empty: no key (the client ip is hashed)
    assert key(b"GET / HTTP/1.1\r\nHost: x\r\nX-User:\r\n\r\n", hdr) == b""
    assert key(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n", "balancer: hash\n") == b""


def test_classify_get_keepalive() -> None:
    x, code = classify(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert code == 0
    assert x.flags & X_KEEPALIVE and x.flags & X_REQ_DONE
    assert not x.flags & (X_HTTP10 | X_HEAD_METHOD | X_CLOSE_AFTER | X_UPGRADE | X_EXPECT)
    assert x.in_mode == IN_NONE and x.method == b"GET" and x.path == b"/a"
    assert x.flags & X_REPLAYABLE and x.flags & X_IDEMPOTENT


def test_classify_http10_close() -> None:
    x, code = classify(b"GET / HTTP/1.0\r\n\r\n")
    assert code == 0 and x.flags & X_HTTP10 and not x.flags & X_KEEPALIVE
    x, code = classify(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert code == 0 and x.flags & X_HTTP10 and x.flags & X_KEEPALIVE
    x, code = classify(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert code == 0 and not x.flags & X_KEEPALIVE


def test_classify_head_method() -> None:
    x, code = classify(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert code == 0 and x.flags & X_HEAD_METHOD


def test_classify_body_over_limit_413() -> None:
    x, code = classify(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n")
    assert code == 413
    assert x.flags & X_KEEPALIVE  # known before the refusal: error_closes() reads it
    x, code = classify(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n")
    assert code == 0 and x.in_mode == IN_LENGTH and x.in_remaining == 100
    assert not x.flags & X_REQ_DONE and not x.flags & X_IDEMPOTENT
    x, code = classify(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert code == 0 and x.in_mode == IN_CHUNKED  # checked while the body streams


def test_classify_upgrade() -> None:
    x, code = classify(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert code == 0 and x.flags & X_UPGRADE and x.flags & X_REQ_DONE
    x, code = classify(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
    assert code == 0 and not x.flags & X_UPGRADE  # Upgrade without Connection: upgrade


def test_classify_expect_continue() -> None:
    x, _ = classify(
        b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    assert x.flags & X_EXPECT
    x, _ = classify(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n")
    assert not x.flags & X_EXPECT  # no body: nothing to wait for
    x, _ = classify(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert not x.flags & X_EXPECT  # HTTP/1.0 clients do not know 100
    assert not x.forward_interim()  # nor any 1xx


def test_classify_draining_closes() -> None:
    x, code = classify(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", draining=True)
    assert code == 0 and x.flags & X_CLOSE_AFTER
    assert x.closes_after(False, False)


# response_framing ---------------------------------------------------------------------------

GET11 = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_framing_content_length() -> None:
    x, _ = classify(GET11)
    framing, connection, keep_cl = framed(x, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert (framing, connection, keep_cl) == (b"", b"", True)
    assert x.out_mode == OUT_IDENTITY and x.out_remaining == 5
    assert not x.flags & (X_CLOSE_AFTER | X_UP_DIRTY)


def test_framing_chunked_http11() -> None:
    x, _ = classify(GET11)
    framing, connection, keep_cl = framed(
        x, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert framing == b"Transfer-Encoding: chunked\r\n" and connection == b"" and not keep_cl
    assert x.out_mode == OUT_CHUNKED
    # close-delimited upstream body: chunk-framed for an HTTP/1.1 client, conn not reusable
    x, _ = classify(GET11)
    framing, _, _ = framed(x, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    assert framing == b"Transfer-Encoding: chunked\r\n" and x.flags & X_UP_DIRTY


def test_framing_http10_close_delimited() -> None:
    x, _ = classify(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    framing, connection, _ = framed(x, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert framing == b"" and connection == b"Connection: close\r\n"
    assert x.out_mode == OUT_IDENTITY and x.flags & X_CLOSE_AFTER
    x, _ = classify(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    _, connection, _ = framed(x, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n")
    assert connection == b"Connection: keep-alive\r\n" and not x.flags & X_CLOSE_AFTER


def test_framing_no_body_head_204_304() -> None:
    x, _ = classify(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    _, _, keep_cl = framed(x, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", True)
    assert x.out_mode == OUT_NONE and keep_cl  # the length describes the GET body
    for status in (b"204 No Content", b"304 Not Modified"):
        x, _ = classify(GET11)
        framing, _, _ = framed(x, b"HTTP/1.1 " + status + b"\r\n\r\n")
        assert x.out_mode == OUT_NONE and framing == b""


def test_framing_101_upgrade() -> None:
    ws = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    x, _ = classify(ws)
    framing, connection, _ = framed(
        x, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert framing == b"" and connection == b"Connection: upgrade\r\nUpgrade: websocket\r\n"
    x, _ = classify(GET11)
    with pytest.raises(HttpError) as e:
        framed(x, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    assert e.value.code == 502


# upstream_reusable --------------------------------------------------------------------------


def test_reusable_clean_exchange() -> None:
    x, _ = classify(GET11)
    framed(x, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert x.upstream_reusable(False)


def test_not_reusable_dirty_eof_or_leftover() -> None:
    x, _ = classify(GET11)
    framed(x, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert not x.upstream_reusable(False)  # the upstream said close
    x, _ = classify(GET11)
    x.flags |= X_UP_EOF
    assert not x.upstream_reusable(False)
    x, _ = classify(GET11)
    x.flags |= X_UP_DIRTY  # bytes after a complete response
    assert not x.upstream_reusable(False)
    x, _ = classify(GET11)
    assert not x.upstream_reusable(True)  # request bytes never written
    x, _ = classify(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")
    assert not x.upstream_reusable(False)  # answered before the whole body was read


# error_closes -------------------------------------------------------------------------------


def test_error_closes_4xx() -> None:
    x, _ = classify(GET11)
    for code in (400, 408, 413, 431, 505):
        assert x.error_closes(code, False, False)


def test_error_502_keeps_keepalive() -> None:
    x, _ = classify(GET11)
    for code in (502, 503, 504):
        assert not x.error_closes(code, False, False)
        assert x.error_closes(code, True, False)  # draining
        assert x.error_closes(code, False, True)  # the client shut its side
    x, _ = classify(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert x.error_closes(502, False, False)


def test_error_closes_when_request_incomplete() -> None:
    x, _ = classify(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")
    assert x.error_closes(502, False, False)  # the rest of the body would be read as a request
    x.flags |= X_REQ_DONE
    assert not x.error_closes(502, False, False)


# attempt_failed -----------------------------------------------------------------------------

POST = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"


def attempted(raw: bytes, attempts: int = 1) -> Exchange:
    x, code = classify(raw)
    assert code == 0
    x.attempts = attempts
    return x


def test_attempt_failed_connect_retries_post() -> None:
    x = attempted(POST)
    assert x.attempt_failed(RetryPhase.CONNECT, ROOMY, 2) == RetryVerdict.GO
    assert x.phase == RetryPhase.CONNECT


def test_attempt_failed_head_post_not_retried() -> None:
    for phase in (RetryPhase.SEND, RetryPhase.HEAD):
        x = attempted(POST)
        assert x.attempt_failed(phase, ROOMY, 2) == RetryVerdict.NO_UNSAFE
        x = attempted(GET11)
        assert x.attempt_failed(phase, ROOMY, 2) == RetryVerdict.GO
        x.flags &= ~X_REPLAYABLE  # the body outgrew the replay buffer
        assert x.attempt_failed(phase, ROOMY, 2) == RetryVerdict.NO_REPLAY


def test_attempt_failed_head_post_with_key_retried() -> None:
    x = attempted(b"POST / HTTP/1.1\r\nHost: h\r\nIdempotency-Key: k1\r\nContent-Length: 0\r\n\r\n")
    assert x.flags & X_IDEMPOTENT
    assert x.attempt_failed(RetryPhase.HEAD, ROOMY, 2) == RetryVerdict.GO


def test_attempt_failed_after_response_bytes() -> None:
    for flag in (X_RESP_STARTED, X_RESP_SENT):
        x = attempted(GET11)
        x.flags |= flag
        assert x.attempt_failed(RetryPhase.HEAD, ROOMY, 2) == RetryVerdict.NO_RESPONSE
    x = attempted(GET11, attempts=3)
    assert x.attempt_failed(RetryPhase.CONNECT, ROOMY, 2) == RetryVerdict.NO_ATTEMPTS


def test_attempt_failed_budget_exhausted() -> None:
    busy = RetryBudget(percent=20, min_concurrent=3, requests_in_flight=10, retries_in_flight=3)
    x = attempted(GET11)
    assert x.attempt_failed(RetryPhase.CONNECT, busy, 2) == RetryVerdict.NO_BUDGET
    more = RetryBudget(percent=20, min_concurrent=3, requests_in_flight=20, retries_in_flight=3)
    assert x.attempt_failed(RetryPhase.CONNECT, more, 2) == RetryVerdict.GO  # 20% of 20 = 4


def test_init_resets_request_state() -> None:
    x, _ = classify(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n")
    framed(x, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    x.attempts, x.tried, x.phase, x.status = 2, 0b11, RetryPhase.HEAD, 200
    x.bytes_in, x.bytes_out, x.request_id = 10, 20, b"abc"
    x.init()
    fresh = Exchange()
    for name in Exchange.__slots__:
        assert getattr(x, name) == getattr(fresh, name), name
    assert x.flags == 0 and x.attempts == 0 and x.tried == 0
