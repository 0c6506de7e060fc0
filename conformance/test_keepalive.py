"""Keep-alive on the client side and the upstream connection pool (contract 2, 3).
Upstream connection counts come from the upstream's own /stats, queried directly."""

from __future__ import annotations

import json
import threading
import time

from harness import build_request, pattern


def test_many_requests_on_one_client_connection(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        for i in range(100):
            r = c.request(f"/bytes/{i}")
            assert r.status == 200 and r.body == pattern(0, i)
            assert not r.has("Connection")
        assert c.is_open()


def test_sequential_requests_reuse_one_upstream_connection(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    with up.counting() as d, p.connect() as c:
        for _ in range(20):
            assert c.request("/").status == 200
    assert d.requests == 20
    assert d.connections == 1, (
        f"{d.connections} upstream connections for 20 sequential requests"
    )


def test_pool_shared_across_client_connections(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    with up.counting() as d:
        for _ in range(20):
            with p.connect() as c:
                assert c.request("/").status == 200
    assert d.requests == 20
    assert d.connections <= 2, (
        f"{d.connections} upstream connections for 20 sequential requests"
    )


def _concurrent(p, n: int, path: str) -> None:
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with p.connect() as c:
                r = c.request(path)
                assert r.status == 200, r
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert not errors, errors


def test_upstream_idle_connections_limit(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, limits={"upstream_idle_connections": 2})
    d = up.counting()
    _concurrent(p, 6, "/delay/800")  # long enough for all six to be in flight together
    d.wait(
        lambda d: d.active <= 2
    )  # at most 2 idle upstream connections kept (limit 2)
    d.update()
    assert d.connections == 6
    # The kept ones are reused by the next burst.
    _concurrent(p, 6, "/delay/300")
    d.update()
    assert d.connections <= 4, (
        f"{d.connections} new connections: idle ones were not reused"
    )


def test_connection_close_response_is_not_pooled(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    with p.connect() as c:
        r = c.request("/close")
        assert r.status == 200 and r.body == b"ok\n"
        assert not r.has("Connection")  # the upstream's close is hop-by-hop
        # Straight away, before the proxy could notice the upstream's FIN: a pooled dead
        # connection would make this fail or need a retry.
        r = c.request("/bytes/3")
        assert r.status == 200 and r.body == pattern(0, 3)
    second = json.loads(p.wait_access_log(2)[1])
    assert second["attempts"] == 1, second


def test_upstream_closing_idle_pooled_connection(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up)
    with p.connect() as c:
        assert c.request("/").status == 200
        up.restart()  # closes every connection, the pooled one included; same port
        time.sleep(0.5)  # the proxy watches its idle connections and drops the dead one
        r = c.request("/bytes/3")
        assert r.status == 200 and r.body == pattern(0, 3)
    assert p.request("/").status == 200


def test_client_connection_close_is_honoured(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(build_request("GET", "/bytes/4", [("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200 and r.body == pattern(0, 4)
        assert r.get("Connection", "").lower() == "close"
        c.assert_closed()


def test_upstream_idle_connections_zero_disables_pooling(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, limits={"upstream_idle_connections": 0})
    with up.counting() as d, p.connect() as c:
        for _ in range(5):
            assert c.request("/").status == 200
    assert d.connections == 5


def test_concurrent_clients_get_their_own_responses(upstream, proxy):
    # Pooled upstream connections are shared by many clients, some of whose exchanges fail:
    # a response must never reach a client other than the one that asked for it.
    up = upstream(["u1", "u2"])
    p = proxy(up, limits={"upstream_idle_connections": 4}, health={"max_fails": 0})
    errors: list[str] = []

    def client(k: int) -> None:
        try:
            with p.connect(timeout=10) as c:
                for i in range(15):
                    tag = f"c{k}-r{i}"
                    kind = (k + i) % 5
                    if kind == 0:
                        r = c.request(
                            "/echo",
                            method="POST",
                            headers=[("X-Request-ID", tag)],
                            body=tag.encode(),
                        )
                        e = r.json()
                        ok = ["X-Request-ID", tag] in e["headers"] and e[
                            "body_length"
                        ] == len(tag)
                    elif kind == 1:
                        n = 100 + k * 15 + i
                        r = c.request(f"/bytes/{n}")
                        ok = r.body == pattern(0, n)
                    elif kind == 2:
                        r = c.request("/invalid/cl-te", headers=[("X-Request-ID", tag)])
                        ok = r.status == 502 and r.get("X-Request-ID") == tag
                    elif kind == 3:
                        r = c.request(f"/delay/{k % 4 * 10}?then=/status/{200 + k}")
                        ok = r.status == 200 + k
                    else:
                        r = c.request(f"/chunked/{k * 100 + i}?chunk=37")
                        ok = r.body == pattern(0, k * 100 + i)
                    if not ok:
                        errors.append(f"{tag}: {r!r}")
                        return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
