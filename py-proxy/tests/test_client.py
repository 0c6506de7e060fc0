"""client: the connection state machine on a fake loop and fake transports (no sockets, no
sleeping; timers fire when the fake clock is advanced). Twin: c-proxy/tests/test_client.c."""

from __future__ import annotations

import re

from fakes import FakeTransport, Harness, make_config

from pyproxy.client import (
    F_CW_PAUSED,
    F_QUEUED,
    F_UW_PAUSED,
    LINGER_SECONDS,
    ClientState,
    ClientTimeout,
)
from pyproxy.exchange import X_REQ_DONE, X_RESP_DONE
from pyproxy.metrics import C_RL_ALLOWED, C_RL_LIMITED
from pyproxy.ratelimit import Limit, table_new
from pyproxy.upstream import UpstreamSet
from pyproxy.worker import WorkerRateLimit

GET = b"GET /x HTTP/1.1\r\nHost: example\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def closes(h: Harness, t: FakeTransport) -> bool:
    """The client connection ends: write side shut at once (lingering close), closed at the
    latest when the linger time is over."""
    if t.closing:
        return True
    if not t.eof_sent:
        return False
    h.loop.advance(LINGER_SECONDS + 0.01)
    return t.closing


def upstream_head(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"


def test_get_is_forwarded_and_answered() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    up, ut = h.connect()
    sent = ut.take()
    rid = re.search(rb"X-Request-ID: ([0-9a-f]{32})\r\n", sent)
    assert rid is not None
    assert sent == (
        b"GET /x HTTP/1.1\r\nHost: example\r\nX-Forwarded-For: 127.0.0.1\r\n"
        b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: example\r\n"
        b"X-Request-ID: " + rid.group(1) + b"\r\nVia: 1.1 twinproxy\r\n\r\n"
    )
    up.data_received(OK)
    assert t.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert c.state == ClientState.IDLE
    line = h.log.lines[-1]
    assert line["status"] == 200 and line["upstream"] == "u1" and line["attempts"] == 1
    assert line["bytes_in"] == len(GET) and line["bytes_out"] == len(OK)
    assert line["method"] == "GET" and line["path"] == "/x"


def test_keepalive_reuses_the_upstream_connection() -> None:
    h = Harness(make_config(upstreams="upstreams:\n  - address: 127.0.0.1:9001\n"))
    c, _t = h.client()
    c.data_received(GET)
    up, ut = h.connect()
    up.data_received(OK)
    c.data_received(GET)
    assert not h.loop.connects  # no new connect: the pooled one was reused
    assert ut.take().count(b"GET /x") == 2


def test_pipelined_requests_are_answered_in_order() -> None:
    h = Harness(make_config(upstreams="upstreams:\n  - address: 127.0.0.1:9001\n"))
    c, t = h.client()
    c.data_received(GET + b"GET /y HTTP/1.1\r\nHost: e\r\n\r\n")
    assert not t.reading  # the second request waits unparsed, reading paused
    up, ut = h.connect()
    assert ut.take().count(b"GET ") == 1
    up.data_received(OK)
    assert b"GET /y" in ut.take()
    up.data_received(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    out = t.take()
    assert out.index(b"200 OK") < out.index(b"201 Created")
    assert t.reading


def test_header_timeout_sends_408_and_closes() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n")
    h.loop.advance(9.9)
    assert t.written == b""
    h.loop.advance(0.2)
    out = t.take()
    assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Connection: close\r\n" in out
    assert closes(h, t)


def test_idle_keepalive_connection_closes_silently() -> None:
    h = Harness(make_config("timeouts:\n  idle: 5s\n"))
    c, t = h.client()
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(OK)
    t.take()
    h.loop.advance(4.9)
    assert not t.closing
    h.loop.advance(0.2)
    assert t.closing and t.written == b""


def test_connect_failure_moves_to_next_upstream_then_502() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    h.loop.connects.pop().fail()
    assert len(h.loop.connects) == 1  # second upstream tried
    h.loop.connects.pop().fail()
    out = t.take()
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Connection: close" not in out  # request fully read: keep-alive
    assert h.log.lines[-1]["attempts"] == 2
    # one retry event: the second failure leaves no attempt to announce; the 502 is a
    # request_error (debug) with the failure's reason
    assert h.log.events == [
        ("retry", {"upstream": "u1", "reason": "connect_refused", "phase": "connect", "attempt": 2})
    ]
    assert [(e, f["status"], f["reason"]) for e, f in h.log.debug_events] == [
        ("request_error", 502, "connect_refused")
    ]


def test_connect_timeout_counts_as_failed_connect() -> None:
    h = Harness(make_config("timeouts:\n  connect: 100ms\n"))
    c, t = h.client()
    c.data_received(GET)
    h.loop.advance(0.1)
    h.loop.advance(0.1)
    assert t.take().startswith(b"HTTP/1.1 502 ")


def test_read_timeout_before_response_is_504() -> None:
    # a GET is retried on the next upstream (head phase); no upstream left: 504
    h = Harness(make_config("timeouts:\n  read: 2s\n"))
    c, t = h.client()
    c.data_received(GET)
    h.connect()
    h.loop.advance(1.9)
    assert t.written == b""
    h.loop.advance(0.2)
    assert t.written == b"" and len(h.loop.connects) == 1
    assert h.log.events[-1] == (
        "retry",
        {"upstream": "u1", "reason": "read_timeout", "phase": "head", "attempt": 2},
    )
    h.connect()
    h.loop.advance(2.1)
    assert t.take().startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert h.log.lines[-1]["attempts"] == 2 and h.log.lines[-1]["upstream"] == "u2"
    # a POST is not retried after it was sent: 504 at once
    c.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    h.connect()
    h.loop.advance(2.1)
    assert t.take().startswith(b"HTTP/1.1 504 ") and not h.loop.connects


def test_read_timeout_after_response_head_closes() -> None:
    h = Harness(make_config("timeouts:\n  read: 2s\n"))
    c, t = h.client()
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    t.take()
    h.loop.advance(1.5)
    up.data_received(b"def")  # a byte within `read` pushes the deadline
    h.loop.advance(1.5)
    assert not t.closing and not t.eof_sent
    h.loop.advance(1.0)
    assert t.take() == b"def"  # no error appended to a truncated response
    assert c.state == ClientState.DRAIN and t.eof_sent  # a lingering close
    assert closes(h, t)


def test_queue_timeout_is_503() -> None:
    cfg = make_config(
        "limits:\n  upstream_max_connections: 1\ntimeouts:\n  queue: 1s\n  connect: 5s\n",
        upstreams="upstreams:\n  - address: 127.0.0.1:9001\n",
    )
    h = Harness(cfg)
    c1, _t1 = h.client()
    c1.data_received(GET)
    c2, t2 = h.client(40001)
    c2.data_received(GET)
    assert len(h.loop.connects) == 1  # second request queued, not connecting
    h.loop.advance(1.1)
    assert t2.take().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


def test_queued_request_gets_the_released_connection() -> None:
    cfg = make_config(
        "limits:\n  upstream_max_connections: 1\n",
        upstreams="upstreams:\n  - address: 127.0.0.1:9001\n",
    )
    h = Harness(cfg)
    c1, _t1 = h.client()
    c1.data_received(GET)
    c2, t2 = h.client(40001)
    c2.data_received(b"GET /second HTTP/1.1\r\nHost: e\r\n\r\n")
    up, ut = h.connect()
    ut.take()
    up.data_received(OK)
    h.loop.run_soon()  # the freed slot is handed over from the loop
    assert b"GET /second" in ut.take()
    up.data_received(OK)
    assert t2.take().endswith(b"ok")


def test_chunked_request_is_reframed() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    _up, ut = h.connect()
    c.data_received(b"3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\nContent-Length: 9\r\n\r\n")
    sent = ut.take()
    assert b"Transfer-Encoding: chunked\r\n" in sent
    # llhttp rejects Content-Length in trailers: the request is refused
    assert t.take().startswith(b"HTTP/1.1 400 ")


def test_chunked_request_with_trailer() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    up, ut = h.connect()
    for b in b"3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nX-T: 1\r\n\r\n":
        c.data_received(bytes([b]))
    body = upstream_body(ut.take())
    assert dechunk(body) == b"abcd"
    assert body.endswith(b"0\r\nX-T: 1\r\n\r\n")
    up.data_received(OK)
    assert t.take().endswith(b"ok")


def upstream_body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


def dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        line, body = body.split(b"\r\n", 1)
        n = int(line, 16)
        if n == 0:
            return out
        out += body[:n]
        body = body[n + 2 :]


def test_body_over_max_is_413() -> None:
    h = Harness(make_config("limits:\n  max_body_bytes: 10\n"))
    c, t = h.client()
    c.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
    out = t.take()
    assert out.startswith(b"HTTP/1.1 413 Payload Too Large\r\n") and closes(h, t)
    assert not h.loop.connects


def test_chunked_body_over_max_is_413() -> None:
    h = Harness(make_config("limits:\n  max_body_bytes: 4\n"))
    c, t = h.client()
    c.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    h.connect()
    c.data_received(b"5\r\nabcde\r\n")
    assert t.take().startswith(b"HTTP/1.1 413 ")


def test_head_over_max_is_431() -> None:
    h = Harness(make_config("limits:\n  max_header_bytes: 100\n"))
    c, t = h.client()
    c.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 100)
    assert t.take().startswith(b"HTTP/1.1 431 ")


def test_smuggling_forms_get_400_and_nothing_goes_upstream() -> None:
    bad = [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    ]
    for raw in bad:
        h = Harness()
        c, t = h.client()
        c.data_received(raw)
        out = t.take()
        assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), raw
        assert closes(h, t) and not h.loop.connects, raw


def test_bad_chunk_sizes_get_400() -> None:
    for chunk in (b"0x3\r\nabc\r\n", b"-3\r\nabc\r\n", b"1_0\r\n", b"fffffffffffffffff\r\n"):
        h = Harness()
        c, t = h.client()
        c.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        h.connect()
        c.data_received(chunk)
        assert t.take().startswith(b"HTTP/1.1 400 "), chunk


def test_unsupported_version_is_505() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n")
    assert t.take().startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")


def test_http10_client_gets_dechunked_close_delimited_body() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"GET / HTTP/1.0\r\n\r\n")
    up, _ut = h.connect()
    up.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert t.take() == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc"
    assert closes(h, t)


def test_http10_keepalive() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    up, _ = h.connect()
    up.data_received(OK)
    assert t.take() == (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
    assert not t.closing


def test_close_delimited_response_is_chunked_for_http11() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    up, ut = h.connect()
    up.data_received(b"HTTP/1.1 200 OK\r\n\r\nabc")
    ut.peer_close()
    assert t.take() == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert not t.closing


def test_invalid_upstream_response_is_502() -> None:
    for resp in (
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        b"HTTP/1.1 99x OK\r\n\r\n",
    ):
        h = Harness()
        c, t = h.client()
        c.data_received(GET)
        up, ut = h.connect()
        up.data_received(resp)
        assert t.take().startswith(b"HTTP/1.1 502 "), resp
        assert ut.closing


def test_truncated_response_closes_without_error() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    up, ut = h.connect()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    ut.peer_close()
    assert t.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    # what was queued goes out, then a lingering close: closing at once with unread
    # pipelined input would reset the connection under those bytes (found by the soak)
    assert c.state == ClientState.DRAIN and t.eof_sent and not t.closing
    c.data_received(GET)  # a pipelined request behind it is discarded
    assert t.written == b"" and not h.loop.connects  # and not forwarded
    assert closes(h, t)


def test_upstream_connection_not_pooled_after_connection_close() -> None:
    h = Harness(make_config(upstreams="upstreams:\n  - address: 127.0.0.1:9001\n"))
    c, _t = h.client()
    c.data_received(GET)
    up, ut = h.connect()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert ut.closing
    c.data_received(GET)
    assert len(h.loop.connects) == 1


def test_backpressure_pauses_the_other_side() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
    up, ut = h.connect()
    up.pause_writing()
    assert not t.reading
    up.resume_writing()
    assert t.reading
    c.data_received(b"a" * 100)
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    c.pause_writing()
    assert not ut.reading
    c.resume_writing()
    assert ut.reading


def test_write_stall_closes_both() -> None:
    h = Harness(make_config("timeouts:\n  write: 1s\n"))
    c, t = h.client()
    c.data_received(GET)
    up, ut = h.connect()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    c.pause_writing()
    h.loop.advance(1.1)
    assert t.closing and ut.closing


def test_expect_100_continue_answered_once_connected() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    )
    assert t.written == b""
    _up, ut = h.connect()
    assert t.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert b"Expect" not in ut.take()


def test_upgrade_tunnels_after_101() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhi"
    )
    up, ut = h.connect()
    head = ut.take()
    assert head.endswith(b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n")
    up.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nyo")
    assert t.take() == (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nyo"
    )
    assert ut.take() == b"hi"
    c.data_received(b"more")
    assert ut.take() == b"more"
    ut.peer_close()
    h.loop.run_soon()
    assert t.closing


def test_hop_by_hop_removed_from_response() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: t=5\r\n"
        b"X-Kept: 1\r\nContent-Length: 0\r\n\r\n"
    )
    assert t.take() == b"HTTP/1.1 200 OK\r\nX-Kept: 1\r\nContent-Length: 0\r\n\r\n"


def test_shutdown_closes_idle_and_finishes_busy() -> None:
    h = Harness()
    c1, t1 = h.client()
    c2, t2 = h.client(40001)
    c2.data_received(GET)
    up2, _ = h.connect()
    up2.data_received(OK)
    assert b"Connection: close" not in t2.take()  # keep-alive, idle now
    c1.data_received(GET)
    up, _ = h.connect()
    h.w.begin_drain()
    assert t2.closing and not t1.closing
    up.data_received(OK)
    assert b"Connection: close\r\n" in t1.take()
    assert closes(h, t1)


def test_shutdown_answers_a_new_connection_its_first_request() -> None:
    # Not idle: its client has not been answered anything yet (it could not retry).
    h = Harness()
    c, t = h.client()
    h.w.begin_drain()
    assert not t.closing
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(OK)
    out = t.take()
    assert out.startswith(b"HTTP/1.1 200") and b"Connection: close\r\n" in out
    assert closes(h, t)


def test_reused_connection_closed_by_upstream_is_retried() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    up, ut = h.connect()
    up.data_received(OK)
    t.take()
    c.data_received(GET)  # u2: new connect
    up2, ut2 = h.connect()
    up2.data_received(OK)
    t.take()
    c.data_received(GET)  # u1 again: the pooled connection
    assert not h.loop.connects
    ut.take()
    ut2.take()
    ut.peer_close()  # it was closed by the upstream before any response byte
    # retried on u2, on a new connection: its pooled one is as old as the one that died
    assert not ut2.take() and len(h.w.uset.ups[1].idle) == 1
    up3, ut3 = h.connect()
    assert b"GET /x" in ut3.take()
    up3.data_received(OK)
    assert t.take().endswith(b"ok")
    assert h.log.lines[-1]["attempts"] == 2
    c.data_received(GET)  # and the next request uses the pool again
    assert not h.loop.connects


def test_error_closes_with_a_lingering_close() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"BAD\r\n\r\n")
    assert t.take().startswith(b"HTTP/1.1 400 ")
    assert c.state == ClientState.DRAIN and t.eof_sent and not t.closing
    c.data_received(b"more garbage is discarded")
    assert t.written == b""
    c.eof_received()  # the client closes: done at once
    assert not c.eof_received()


def test_linger_ends_after_its_time() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"BAD\r\n\r\n")
    h.loop.advance(LINGER_SECONDS - 0.1)
    assert not t.closing
    h.loop.advance(0.2)
    assert t.closing


def test_invalid_body_behind_its_head_reaches_no_upstream() -> None:
    # the same read: the body is checked before an upstream is chosen
    h = Harness()
    c, t = h.client()
    c.data_received(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;=x\r\nhello\r\n0\r\n\r\n"
    )
    assert t.take().startswith(b"HTTP/1.1 400 ")
    assert not h.loop.connects


def test_small_body_is_read_before_the_connect_and_502_keeps_alive() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    h.loop.connects.pop().fail()
    h.loop.connects.pop().fail()
    out = t.take()
    assert out.startswith(b"HTTP/1.1 502 ") and b"Connection: close" not in out
    assert c.state == ClientState.IDLE


def test_reset_after_a_post_was_sent_is_502_unless_it_has_an_idempotency_key() -> None:
    # contract 6: a POST whose bytes were written is not replayed (send/head phase)...
    h = Harness()
    c, t = h.client()
    c.data_received(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    _up1, ut1 = h.connect()
    assert ut1.take().endswith(b"\r\n\r\nabc")
    ut1.peer_close()
    assert t.take().startswith(b"HTTP/1.1 502 ") and not h.loop.connects
    assert h.log.lines[-1]["attempts"] == 1 and not h.log.events
    # ...unless it carries an Idempotency-Key: then it is replayed whole on the next upstream
    c.data_received(
        b"POST /p HTTP/1.1\r\nHost: a\r\nIdempotency-Key: k\r\nContent-Length: 3\r\n\r\nabc"
    )
    _up2, ut2 = h.connect()
    ut2.take()
    ut2.peer_close()
    up3, ut3 = h.connect()
    replayed = ut3.take()
    assert b"Idempotency-Key: k\r\n" in replayed and replayed.endswith(b"\r\n\r\nabc")
    assert h.log.events[-1] == (
        "retry",
        {"upstream": "u2", "reason": "upstream_closed", "phase": "head", "attempt": 2},
    )
    up3.data_received(OK)
    assert t.take().endswith(b"ok") and h.log.lines[-1]["attempts"] == 2


def test_bad_chunk_with_the_head_replaces_the_head_with_502() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert t.take().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


def test_bad_chunk_after_the_head_went_out_closes() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    up.data_received(b"zz\r\n")
    assert t.take() == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert c.state == ClientState.DRAIN and t.eof_sent  # a lingering close
    assert closes(h, t)


def test_interim_responses() -> None:
    for version, forwarded in ((b"1.1", True), (b"1.0", False)):
        h = Harness()
        c, t = h.client()
        c.data_received(b"GET / HTTP/" + version + b"\r\nHost: a\r\n\r\n")
        up, _ = h.connect()
        up.data_received(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK)
        out = t.take()
        assert out.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n") == forwarded
        assert b"200 OK" in out


def test_101_without_upgrade_request_is_502() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
    assert t.take().startswith(b"HTTP/1.1 502 ")


def test_timer_is_rearmed_lazily() -> None:
    h = Harness(make_config("timeouts:\n  idle: 5s\n  header: 1s\n"))
    c, t = h.client()
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(OK)
    # the header timer (1 s) is still armed; it fires early and re-arms for the idle rest
    armed = [x for x in h.loop.timers if not x[2].cancelled]
    assert len(armed) == 2  # this client's, and the pooled connection's idle expiry
    h.loop.advance(1.0)
    assert not t.closing and c.state == ClientState.IDLE
    h.loop.advance(4.1)
    assert t.closing


def test_pipelined_request_in_a_later_read_waits_its_turn() -> None:
    h = Harness(make_config(upstreams="upstreams:\n  - address: 127.0.0.1:9001\n"))
    c, t = h.client()
    c.data_received(GET)
    up, ut = h.connect()
    c.data_received(b"GET /y HTTP/1.1\r\nHost: e\r\n\r\n")  # while /x is in flight
    assert not t.reading and ut.take().count(b"GET ") == 1
    up.data_received(OK)
    assert b"GET /y" in ut.take() and t.reading
    up.data_received(OK)
    assert t.take().count(b"200 OK") == 2


def test_body_split_over_reads_before_and_after_the_connect() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    c.data_received(b"defg")  # still connecting: kept in uout
    up, ut = h.connect()
    c.data_received(b"hij")
    assert ut.take().endswith(b"\r\n\r\nabcdefghij")
    up.data_received(OK)
    assert t.take().endswith(b"ok") and c.state == ClientState.IDLE


# deadline(): the one place that picks the timeout from the state (client_deadline in C)

T = make_config(
    "timeouts:\n  idle: 60s\n  header: 10s\n  queue: 1s\n  connect: 2s\n  read: 30s\n"
    "  write: 20s\n  total: 40s\n"
)


def test_deadline_idle_and_head() -> None:
    h = Harness(T)
    c, _ = h.client()
    assert c.deadline() == (h.loop.now + 10.0, ClientTimeout.HEADER)
    c.state, c.idle_since = ClientState.IDLE, 500.0
    assert c.deadline() == (560.0, ClientTimeout.IDLE)


def test_deadline_upstream_queue_connect_total() -> None:
    h = Harness(T)
    c, _ = h.client()
    c.state, c.x.req_start, c.up_start = ClientState.UPSTREAM, 100.0, 139.5
    assert c.deadline() == (140.0, ClientTimeout.TOTAL)  # neither queued nor connecting
    c.flags |= F_QUEUED
    assert c.deadline() == (140.0, ClientTimeout.TOTAL)  # total is earlier than the queue
    c.up_start = 120.0
    assert c.deadline() == (121.0, ClientTimeout.QUEUE)
    c.flags &= ~F_QUEUED
    c.conn = object()  # type: ignore[assignment]
    assert c.deadline() == (122.0, ClientTimeout.CONNECT)
    c.conn = None


def test_deadline_forward_read_write_total() -> None:
    h = Harness(T)
    c, _ = h.client()
    c.state, c.x.req_start = ClientState.FORWARD, 100.0
    c.conn = object()  # type: ignore[assignment]
    c.up_last, c.out_last = 101.0, 105.0
    assert c.deadline() == (135.0, ClientTimeout.READ)  # client progress counts too
    c.flags |= F_CW_PAUSED
    c.out_last = 102.0
    assert c.deadline() == (122.0, ClientTimeout.WRITE)
    c.x.flags |= X_RESP_DONE
    c.flags &= ~F_CW_PAUSED
    assert c.deadline() == (140.0, ClientTimeout.TOTAL)
    c.conn = None


def test_deadline_tunnel_drain_closed() -> None:
    h = Harness(T)
    c, _ = h.client()
    c.state, c.idle_since = ClientState.TUNNEL, 200.0
    assert c.deadline() == (260.0, ClientTimeout.IDLE)
    c.flags |= F_UW_PAUSED
    c.uout_last = 210.0
    assert c.deadline() == (230.0, ClientTimeout.WRITE)
    c.flags = 0
    c.state, c.linger_until = ClientState.DRAIN, 300.0
    assert c.deadline() == (300.0, ClientTimeout.LINGER)
    c.state = ClientState.CLOSED
    assert c.deadline() == (0.0, ClientTimeout.NONE)


R = make_config(
    "timeouts:\n  idle: 60s\n  header: 10s\n  queue: 1s\n  connect: 2s\n  read: 30s\n"
    "  write: 20s\n  total: 60s\n  min_rate: 100\n  min_rate_window: 2s\n"
)


def test_deadline_min_rate() -> None:
    h = Harness(R)
    c, _ = h.client()
    c.state, c.x.req_start = ClientState.FORWARD, 0.0
    c.conn = object()  # type: ignore[assignment]
    c.up_last = c.out_last = 10.0
    c.rin_start = 5.0
    # the request body is awaited: its window ends first
    assert c.deadline() == (7.0, ClientTimeout.RATE_IN)
    # held up by the upstream: no body window
    c.flags |= F_UW_PAUSED
    c.uout_last = 6.0
    assert c.deadline() == (26.0, ClientTimeout.WRITE)
    c.flags &= ~F_UW_PAUSED
    c.x.flags |= X_REQ_DONE
    assert c.deadline() == (40.0, ClientTimeout.READ)
    # the client does not take the response as fast as it comes
    c.flags |= F_CW_PAUSED
    c.out_last, c.rout_start = 12.0, 12.5
    assert c.deadline() == (14.5, ClientTimeout.RATE_OUT)
    c.state = ClientState.DRAIN
    assert c.deadline() == (14.5, ClientTimeout.RATE_OUT)
    c.rout_start = 40.0
    assert c.deadline() == (32.0, ClientTimeout.WRITE)
    c.conn = None


def test_deadline_without_min_rate() -> None:
    h = Harness(T)
    c, _ = h.client()
    c.state, c.x.req_start = ClientState.FORWARD, 0.0
    c.conn = object()  # type: ignore[assignment]
    c.up_last = c.out_last = 10.0
    c.rin_start = c.rout_start = 5.0
    c.flags |= F_CW_PAUSED
    assert c.deadline() == (30.0, ClientTimeout.WRITE)
    c.state = ClientState.DRAIN
    assert c.deadline() == (30.0, ClientTimeout.WRITE)
    c.conn = None


def test_min_rate_window_check() -> None:
    h = Harness(R)
    c, t = h.client()
    # 100 bytes/s over 2 s: 200 bytes per window
    c.rin_mark, c.x.bytes_in = 1000, 1199
    assert c.rate_short(ClientTimeout.RATE_IN)
    c.x.bytes_in = 1200
    assert not c.rate_short(ClientTimeout.RATE_IN)
    c.out_given, t.buffered = 600, 100  # 500 left for the socket
    c.rout_mark = 300
    assert not c.rate_short(ClientTimeout.RATE_OUT)
    c.rout_mark = 301
    assert c.rate_short(ClientTimeout.RATE_OUT)


def test_connection_close_trailer_does_not_poison_the_next_request() -> None:
    h = Harness(make_config(upstreams="upstreams:\n  - address: 127.0.0.1:9001\n"))
    c, t = h.client()
    c.data_received(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nConnection: close\r\n\r\n" + GET
    )
    up, ut = h.connect()
    assert ut.take().endswith(b"0\r\n\r\n")  # the trailer is dropped
    up.data_received(OK)
    assert b"GET /x" in ut.take()
    up.data_received(OK)
    assert t.take().count(b"200 OK") == 2


def test_worker_counts_requests_and_retries_in_flight() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    assert (h.w.requests_in_flight, h.w.retries_in_flight) == (1, 0)
    h.loop.connects.pop().fail()  # retried: the second attempt is a retry in flight
    assert (h.w.requests_in_flight, h.w.retries_in_flight) == (1, 1)
    up, _ = h.connect()
    up.data_received(OK)
    assert t.take().endswith(b"ok")
    assert (h.w.requests_in_flight, h.w.retries_in_flight) == (0, 0)
    # a client that goes away mid-request leaves nothing counted
    c2, t2 = h.client(40001)
    c2.data_received(GET)
    assert h.w.requests_in_flight == 1
    t2.peer_close()
    assert (h.w.requests_in_flight, h.w.retries_in_flight) == (0, 0)
    assert [u.fails for u in h.w.uset.ups] == [1, 0]


def test_stale_pooled_connection_is_not_an_attempt() -> None:
    h = Harness(make_config(upstreams="upstreams:\n  - address: 127.0.0.1:9001\n"))
    c, t = h.client()
    c.data_received(GET)
    up, ut = h.connect()
    up.data_received(OK)
    ut.closing = True  # the upstream closed it; the loop has not reported it yet
    c.data_received(GET)
    _up2, ut2 = h.connect()  # a new connection, not a retry
    assert b"GET /x" in ut2.take()
    _up2.data_received(OK)
    assert t.take().count(b"200 OK") == 2
    assert h.log.lines[-1]["attempts"] == 1 and not h.log.events


def test_pipelined_self_answered_requests_are_all_answered() -> None:
    # no upstream eligible: every request is answered by the proxy itself (503, keep-alive)
    # inside the read that brought it; the driver loops instead of recursing
    h = Harness()
    h.w.uset.balancer.pick = lambda *args: -1  # type: ignore[method-assign]
    c, t = h.client()
    c.data_received(GET * 2000)
    assert t.take().count(b"HTTP/1.1 503 Service Unavailable\r\n") == 2000
    assert t.reading and c.state == ClientState.IDLE and len(h.log.lines) == 2000
    assert h.w.requests_in_flight == 0


def test_passive_health_takes_a_refusing_upstream_out_then_all_down_is_503() -> None:
    h = Harness(make_config("health:\n  max_fails: 2\n  fail_timeout: 10s\nretries: 0\n"))
    c, t = h.client()
    c.data_received(GET)  # round robin: u1 refuses
    h.loop.connects.pop().fail()
    assert t.take().startswith(b"HTTP/1.1 502 ")
    c.data_received(GET)  # u2 answers; its connection is pooled
    up2, _ = h.connect()
    up2.data_received(OK)
    assert t.take().endswith(b"ok")
    c.data_received(GET)  # u1 refuses again: max_fails within fail_timeout, down
    h.loop.connects.pop().fail()
    assert t.take().startswith(b"HTTP/1.1 502 ")
    assert ("upstream_down", {"upstream": "u1", "reason": "connect_refused"}) in h.log.events
    info = {u["name"]: u for u in h.w.uset.info()}
    assert info["u1"]["healthy"] is False and info["u1"]["fails"] == 2
    assert info["u1"]["last_error"] == "connect_refused" and info["u1"]["state"] == "active"
    assert info["u2"]["healthy"] is True and info["u2"]["idle"] == 1
    assert info["u2"]["requests"] == 1 and info["u2"]["active"] == 0
    assert info["u1"]["address"] == "127.0.0.1:9001" and info["u1"]["weight"] == 1
    for _ in range(3):  # u1 is skipped while down: u2's pooled connection every time
        c.data_received(GET)
        assert not h.loop.connects and h.w.uset.info()[1]["active"] == 1
        up2.data_received(OK)
        assert t.take().endswith(b"ok")
    assert [line["upstream"] for line in h.log.lines[-3:]] == ["u2"] * 3
    # u1 down, u2 drained: nobody eligible, 503 (the connection stays)
    assert h.w.uset.set_drain("u2", True) and not h.w.uset.set_drain("nope", True)
    assert h.w.uset.info()[1]["state"] == "drain"
    c.data_received(GET)
    out = t.take()
    assert out.startswith(b"HTTP/1.1 503 ") and b"Connection: close" not in out
    assert h.log.lines[-1]["attempts"] == 0 and h.log.lines[-1]["upstream"] == ""


def test_reused_connection_closing_is_not_a_health_failure() -> None:
    h = Harness(make_config("health:\n  max_fails: 1\n"))
    c, _t = h.client()
    c.data_received(GET)
    up, ut = h.connect()
    up.data_received(OK)
    c.data_received(GET)
    up2, _ = h.connect()
    up2.data_received(OK)
    c.data_received(GET)  # u1's pooled connection, closed by the upstream before it answers
    ut.peer_close()
    assert not any(e == "upstream_down" for e, _ in h.log.events)
    assert h.log.events[-1][0] == "retry" and h.w.uset.info()[0]["fails"] == 0


def test_active_checks_follow_the_current_set() -> None:
    h = Harness(
        make_config("health:\n  check:\n    path: /hz\n    interval: 1s\n    timeout: 500ms\n")
    )
    first = h.w.uset
    first.start_checks()
    h.loop.advance(0)
    assert sorted(pc.port for pc in h.loop.connects) == [9001, 9002]
    for pc in list(h.loop.connects):
        pc.fail()
    h.loop.connects.clear()
    h.loop.advance(1.0)  # fall: 2 (default) -> both down
    for pc in list(h.loop.connects):
        pc.fail()
    h.loop.connects.clear()
    assert [e for e, _ in h.log.events].count("upstream_down") == 2
    c, t = h.client()
    c.data_received(GET)
    assert t.take().startswith(b"HTTP/1.1 503 ")  # all down
    # a reload: the new set checks, the retired one stops (one probe per upstream)
    second = UpstreamSet(h.loop, h.cfg)  # type: ignore[arg-type]
    second.start_checks()
    h.w.install_set(second)
    assert first.checker is None and second.checker is not None
    h.loop.advance(0)
    assert sorted(pc.port for pc in h.loop.connects) == [9001, 9002]
    h.loop.connects.clear()
    second.retire()  # draining
    h.loop.advance(5.0)
    assert not h.loop.connects


def test_retry_budget_zero_skips_the_retry() -> None:
    h = Harness(make_config("retry_budget:\n  percent: 0\n  min_concurrent: 0\n"))
    c, t = h.client()
    c.data_received(GET)
    h.loop.connects.pop().fail()
    assert t.take().startswith(b"HTTP/1.1 502 ") and not h.loop.connects
    assert h.log.events == [
        ("retry_skipped", {"upstream": "u1", "reason": "budget_exhausted", "phase": "connect"})
    ]
    assert h.log.lines[-1]["attempts"] == 1 and h.w.retries_in_flight == 0


def test_retry_after_backpressure_resumes_reading_the_body() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(b"PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n" + b"a" * 10)
    up1, ut1 = h.connect()
    up1.pause_writing()  # the upstream does not drain: the client is not read
    assert not t.reading
    ut1.peer_close()  # and dies while the body is being sent: send phase, PUT is idempotent
    assert h.log.events[-1][1]["phase"] == "send"
    _up2, ut2 = h.connect()
    assert t.reading  # the new connection takes the body: reading resumes
    c.data_received(b"b" * 10)
    assert ut2.take().endswith(b"\r\n\r\n" + b"a" * 10 + b"b" * 10)


def test_hash_key_header_picks_the_same_upstream() -> None:
    h = Harness(make_config("balancer: hash\nhash_key: header:X-User\n"))
    seen: dict[bytes, set[str]] = {}
    for i in range(12):
        user = b"user-%d" % (i % 4)
        c, t = h.client(40000 + i)  # a new connection (and client port) every time
        c.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-User: " + user + b"\r\n\r\n")
        assert c.x.key == user and c.up is not None
        seen.setdefault(user, set()).add(c.up.name)
        if h.loop.connects:
            h.connect()
        assert c.conn is not None
        c.conn.data_received(OK)
        assert t.take().endswith(b"ok")
    assert all(len(names) == 1 for names in seen.values()), seen


# ---- rate limiting (contract 7) ------------------------------------------------------------


def rl_harness(
    capacity: int, rate: float, header: bytes | None = None, upstreams: str | None = None
) -> Harness:
    """A worker whose listener is rate-limited: one private table, default limit."""
    h = Harness(make_config(upstreams=upstreams))
    h.w.rl = WorkerRateLimit(table_new(64, Limit(capacity, rate)), header, 64)
    return h


def error_429(rid: bytes, limit: int, remaining: int, extra: bytes = b"") -> bytes:
    body = b'{"code":429,"message":"Too Many Requests"}'
    return (
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nX-Request-ID: %s\r\n%sRateLimit-Limit: %d\r\n"
        b"RateLimit-Remaining: %d\r\n\r\n%s" % (len(body), rid, extra, limit, remaining, body)
    )


def test_ratelimit_429_before_routing() -> None:
    h = rl_harness(2, 0)
    c, t = h.client()
    for left in (1, 0):
        c.data_received(GET)
        up, ut = h.connect()
        assert b"RateLimit" not in ut.take()  # the upstream never sees the headers
        up.data_received(OK)
        assert t.take() == (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nRateLimit-Limit: 2\r\n"
            b"RateLimit-Remaining: %d\r\n\r\nok" % left
        )
    # empty: answered by the proxy, no upstream picked, no connect, keep-alive kept
    c.data_received(b"GET /x HTTP/1.1\r\nHost: example\r\nX-Request-ID: r1\r\n\r\n")
    assert t.take() == error_429(b"r1", 2, 0)  # rate 0: no Retry-After, no Reset
    assert not h.loop.connects and not t.closing and not t.eof_sent
    assert c.state == ClientState.IDLE
    line = h.log.lines[-1]
    assert (line["status"], line["upstream"], line["attempts"]) == (429, "", 0)
    assert h.w.requests_in_flight == 0
    # pipelined limited requests are answered in order on the same connection
    c.data_received(GET + GET)
    assert t.take().count(b"HTTP/1.1 429 ") == 2 and not h.loop.connects
    counters = h.w.counters
    assert (counters.total(C_RL_ALLOWED), counters.total(C_RL_LIMITED)) == (2, 3)


def test_ratelimit_429_retry_after_and_reset() -> None:
    h = rl_harness(1, 1e-9)  # one token per ~31 years: stable values for the test
    c, t = h.client()
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(OK)
    assert b"RateLimit-Reset: 1000000000\r\n\r\nok" in t.take()
    c.data_received(b"GET /x HTTP/1.1\r\nHost: example\r\nX-Request-ID: r2\r\n\r\n")
    out = t.take()
    assert out.startswith(b"HTTP/1.1 429 ")
    assert b"X-Request-ID: r2\r\nRetry-After: 1000000000\r\nRateLimit-Limit: 1\r\n" in out
    assert b"RateLimit-Remaining: 0\r\nRateLimit-Reset: 1000000000\r\n\r\n" in out


def test_ratelimit_headers_on_every_response() -> None:
    h = rl_harness(5, 0)
    c, t = h.client()
    # an upstream's own RateLimit-* are replaced by the proxy's
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(
        b"HTTP/1.1 404 Not Found\r\nRateLimit-Limit: 99\r\nConnection: close\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    out = t.take()
    assert out.count(b"RateLimit-Limit") == 1
    assert b"RateLimit-Limit: 5\r\nRateLimit-Remaining: 4\r\n\r\n" in out
    # a 502 the proxy answers (every connect failed) after the take
    c.data_received(GET)
    h.loop.connects.pop().fail()
    h.loop.connects.pop().fail()
    out = t.take()
    assert out.startswith(b"HTTP/1.1 502 ")
    assert b"RateLimit-Limit: 5\r\nRateLimit-Remaining: 3\r\n\r\n" in out
    # a 400 refused before any take: the bucket as it stands, nothing taken
    c2, t2 = h.client()
    c2.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    out = t2.take()
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b"RateLimit-Limit: 5\r\nRateLimit-Remaining: 3\r\nConnection: close\r\n" in out
    assert h.w.counters.total(C_RL_ALLOWED) == 2


def test_ratelimit_header_key_falls_back_to_client_ip() -> None:
    h = rl_harness(1, 0, b"x-api-key", "upstreams:\n  - address: 127.0.0.1:9001\n")
    c, t = h.client()
    c.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-API-Key: alice\r\n\r\n")
    up, _ = h.connect()  # pooled after each answer: every forwarded request uses it
    up.data_received(OK)
    assert t.take().startswith(b"HTTP/1.1 200 ")
    c.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-API-Key: bob\r\n\r\n")
    up.data_received(OK)
    assert t.take().startswith(b"HTTP/1.1 200 ")  # one bucket per key value
    c.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-API-Key: alice\r\n\r\n")
    assert t.take().startswith(b"HTTP/1.1 429 ")
    c.data_received(GET)  # no header: the client address's bucket
    up.data_received(OK)
    assert t.take().startswith(b"HTTP/1.1 200 ")
    c.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-API-Key:\r\n\r\n")  # empty: the address
    assert t.take().startswith(b"HTTP/1.1 429 ")
    assert h.w.rl is not None and h.w.rl.table.count() == 3


def test_no_ratelimit_headers_without_rate_limit() -> None:
    h = Harness()
    c, t = h.client()
    c.data_received(GET)
    up, _ = h.connect()
    up.data_received(b"HTTP/1.1 200 OK\r\nRateLimit-Limit: 9\r\nContent-Length: 0\r\n\r\n")
    assert b"RateLimit-Limit: 9\r\n" in t.take()  # passed through untouched
