"""The admin API (contract 8; wire format and messages: design of issue 8): every status
code with its exact body, paging, client_id order, percent-decoded ids, the bearer token,
405 with Allow, 413, unknown paths, /clients without rate_limit, upstream drain, and
admin calls under load. The admin listener is never the proxy port."""

from __future__ import annotations

import threading

import pytest
from admin_client import (
    METRICS_TYPE,
    TOKEN,
    UPSTREAM_KEYS,
    Admin,
    admin_config,
    admin_head,
    assert_admin_error,
    assert_admin_json,
    assert_no_content,
    compact,
    rl_config,
    wrk_result,
    wrk_start,
)
from harness import Conn, build_request, wait_until


@pytest.fixture(scope="module")
def env(module_upstream, module_proxy, tmp_path_factory):
    """One proxy per twin for the stateless cases: rate_limit on, admin with a token,
    two upstreams. Tests use their own client ids."""
    up = module_upstream(["u1", "u2"])
    store = tmp_path_factory.mktemp("admin-store") / "rl.db"
    p = module_proxy(
        up,
        rate_limit=rl_config(store, capacity=100, rate=0),
        admin=admin_config(),
    )
    return p, Admin.of(p), up


def client(cid, capacity, rate, tokens):
    return {
        "client_id": cid,
        "capacity": capacity,
        "rate_per_sec": rate,
        "tokens": tokens,
    }


# --------------------------------------------------------------------------- basics


def test_healthz_and_metrics_need_no_token(env):
    _p, admin, _ = env
    r = admin.get("/healthz", token=None)
    assert_admin_json(r, 200, {"status": "ok"})
    r = admin.get("/metrics", token=None)
    assert r.status == 200
    assert r.raw_head == admin_head(200, len(r.body), content_type=METRICS_TYPE)
    text = r.body.decode()
    assert text.endswith("\n") and "twinproxy_" in text
    for line in text.splitlines():
        assert line == "" or line.startswith(("#", "twinproxy_")), line
    # the same with a token
    assert_admin_json(admin.get("/healthz"), 200, {"status": "ok"})


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/upstreams"),
        ("PATCH", "/upstreams/u1"),
        ("GET", "/clients"),
        ("POST", "/clients"),
        ("GET", "/clients/alice"),
        ("PUT", "/clients/alice"),
        ("PATCH", "/clients/alice"),
        ("DELETE", "/clients/alice"),
        ("GET", "/nope"),  # checked before 404: ids of API keys never leak
        ("POST", "/healthz"),  # only GET /healthz is open
        ("DELETE", "/metrics"),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", TOKEN.upper()])
def test_401_without_the_token(env, method, path, token):
    _, admin, _ = env
    body = {"state": "drain"} if method in ("PATCH", "PUT", "POST") else None
    r = admin.request(method, path, body, token=token)
    assert_admin_error(r, 401, "unauthorized")


def test_401_other_schemes(env):
    _, admin, _ = env
    for value in (f"Basic {TOKEN}", TOKEN, f"Bearer  {TOKEN}x", f"Bearer{TOKEN}"):
        r = admin.get("/clients", token=None, headers=[("Authorization", value)])
        assert_admin_error(r, 401, "unauthorized")
    # nothing changed meanwhile
    assert admin.get("/clients").status == 200


def test_unknown_paths_404(env):
    _, admin, _ = env
    for path in (
        "/",
        "/nope",
        "/clients/",
        "/upstreams/",
        "/clients/a/b",
        "/healthz/",
        "/upstreams/u1/x",
        "/CLIENTS",
    ):
        assert_admin_error(admin.get(path), 404, "not found")


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("POST", "/healthz", "GET"),
        ("PUT", "/metrics", "GET"),
        ("POST", "/upstreams", "GET"),
        ("DELETE", "/upstreams", "GET"),
        ("GET", "/upstreams/u1", "PATCH"),
        ("PUT", "/upstreams/u1", "PATCH"),
        ("DELETE", "/clients", "GET, POST"),
        ("PATCH", "/clients", "GET, POST"),
        ("POST", "/clients/alice", "GET, PUT, PATCH, DELETE"),
    ],
)
def test_405_with_allow(env, method, path, allow):
    _, admin, _ = env
    r = admin.request(method, path)
    assert_admin_error(r, 405, "method not allowed", allow=allow)


# --------------------------------------------------------------------------- clients CRUD


def test_client_crud_status_codes_and_bodies(env):
    _, admin, _ = env
    assert_admin_error(admin.get("/clients/crud1"), 404, "not found")
    r = admin.post(
        "/clients", {"client_id": "crud1", "capacity": 10, "rate_per_sec": 2.5}
    )
    assert_admin_json(r, 201, client("crud1", 10, 2.5, 10))
    r = admin.post("/clients", {"client_id": "crud1", "capacity": 3, "rate_per_sec": 1})
    assert_admin_error(r, 409, "client exists")
    assert_admin_json(admin.get("/clients/crud1"), 200, client("crud1", 10, 2.5, 10))
    # PUT: capacity and rate; tokens clamped to the new capacity, never raised
    r = admin.put("/clients/crud1", {"capacity": 4, "rate_per_sec": 0})
    assert_admin_json(r, 200, client("crud1", 4, 0, 4))
    r = admin.put("/clients/crud1", {"capacity": 8, "rate_per_sec": 0})
    assert_admin_json(r, 200, client("crud1", 8, 0, 4))
    # PATCH: any of capacity, rate_per_sec, tokens
    assert_admin_json(
        admin.patch("/clients/crud1", {"tokens": 7}), 200, client("crud1", 8, 0, 7)
    )
    assert_admin_json(
        admin.patch("/clients/crud1", {"capacity": 5}), 200, client("crud1", 5, 0, 5)
    )
    assert_admin_json(
        admin.patch("/clients/crud1", {"rate_per_sec": 0.25}),
        200,
        client("crud1", 5, 0.25, 5),
    )
    assert_admin_error(
        admin.patch("/clients/crud1", {"tokens": 6}), 400, "invalid value: tokens"
    )
    assert_admin_error(
        admin.put("/clients/nobody", {"capacity": 1, "rate_per_sec": 1}),
        404,
        "not found",
    )
    assert_admin_error(admin.patch("/clients/nobody", {"tokens": 1}), 404, "not found")
    assert_no_content(admin.delete("/clients/crud1"))
    assert_admin_error(admin.delete("/clients/crud1"), 404, "not found")
    assert_admin_error(admin.get("/clients/crud1"), 404, "not found")
    # POST with tokens
    r = admin.post(
        "/clients",
        {"client_id": "crud2", "capacity": 10, "rate_per_sec": 0, "tokens": 0},
    )
    assert_admin_json(r, 201, client("crud2", 10, 0, 0))
    assert_no_content(admin.delete("/clients/crud2"))


BAD_POST = [
    (b"{", "invalid JSON"),
    (b"", "invalid JSON"),
    (b'{"client_id":"b1","capacity":1,"rate_per_sec":1', "invalid JSON"),
    (
        b'{"client_id":"b1","capacity":1,"rate_per_sec":1,"color":1}',
        "unknown field: color",
    ),
    # unknown beats missing, missing beats wrong type, wrong type beats invalid value
    (b'{"client_id":"b1","color":1}', "unknown field: color"),
    (b'{"client_id":"b1","rate_per_sec":1}', "missing field: capacity"),
    (b'{"capacity":1,"rate_per_sec":1}', "missing field: client_id"),
    (b'{"client_id":"b1","capacity":1}', "missing field: rate_per_sec"),
    (b'{"client_id":5,"capacity":1,"rate_per_sec":1}', "wrong type: client_id"),
    (b'{"client_id":"b1","capacity":1.0,"rate_per_sec":1}', "wrong type: capacity"),
    (b'{"client_id":"b1","capacity":"1","rate_per_sec":1}', "wrong type: capacity"),
    (
        b'{"client_id":"b1","capacity":1,"rate_per_sec":true}',
        "wrong type: rate_per_sec",
    ),
    (b'{"client_id":"b1","capacity":1,"rate_per_sec":"1"}', "wrong type: rate_per_sec"),
    (
        b'{"client_id":"b1","capacity":1,"rate_per_sec":1,"tokens":null}',
        "wrong type: tokens",
    ),
    (b'{"client_id":"b1","capacity":0.5,"rate_per_sec":-1}', "wrong type: capacity"),
    (b'{"client_id":"","capacity":1,"rate_per_sec":1}', "invalid value: client_id"),
    (
        b'{"client_id":"' + b"x" * 89 + b'","capacity":1,"rate_per_sec":1}',
        "invalid value: client_id",
    ),
    (b'{"client_id":"b1","capacity":0,"rate_per_sec":1}', "invalid value: capacity"),
    (b'{"client_id":"b1","capacity":-3,"rate_per_sec":1}', "invalid value: capacity"),
    (
        b'{"client_id":"b1","capacity":1000000001,"rate_per_sec":1}',
        "invalid value: capacity",
    ),
    (
        b'{"client_id":"b1","capacity":1,"rate_per_sec":-0.5}',
        "invalid value: rate_per_sec",
    ),
    (
        b'{"client_id":"b1","capacity":2,"rate_per_sec":1,"tokens":3}',
        "invalid value: tokens",
    ),
    (
        b'{"client_id":"b1","capacity":2,"rate_per_sec":1,"tokens":-1}',
        "invalid value: tokens",
    ),
    (b'{"client_id":"","capacity":0,"rate_per_sec":-1}', "invalid value: client_id"),
]


@pytest.mark.parametrize("body,message", BAD_POST, ids=[m for _, m in BAD_POST])
def test_post_400_changes_nothing(env, body, message):
    _, admin, _ = env
    before = admin.get("/clients?limit=1000").json()
    r = admin.post(
        "/clients", raw_body=body, headers=[("Content-Type", "application/json")]
    )
    assert_admin_error(r, 400, message)
    assert admin.get("/clients?limit=1000").json() == before


def test_put_patch_400_change_nothing(env):
    _, admin, _ = env
    admin.create("bad2", 5, 1)
    want = admin.get("/clients/bad2").body
    cases = [
        ("PUT", b'{"capacity":3}', "missing field: rate_per_sec"),
        ("PUT", b'{"rate_per_sec":3}', "missing field: capacity"),
        ("PUT", b'{"capacity":3,"rate_per_sec":1,"x":1}', "unknown field: x"),
        ("PUT", b'{"capacity":0,"rate_per_sec":1}', "invalid value: capacity"),
        ("PATCH", b'{"capacity":2.0}', "wrong type: capacity"),
        ("PATCH", b'{"rate_per_sec":-1}', "invalid value: rate_per_sec"),
        ("PATCH", b'{"tokens":6}', "invalid value: tokens"),
        ("PATCH", b'{"client_id":"x"}', "unknown field: client_id"),
        ("PATCH", b'{"tokens":"1"}', "wrong type: tokens"),
        ("PATCH", b"nope", "invalid JSON"),
    ]
    for method, body, message in cases:
        r = admin.request(
            method,
            "/clients/bad2",
            raw_body=body,
            headers=[("Content-Type", "application/json")],
        )
        assert_admin_error(r, 400, message)
        assert admin.get("/clients/bad2").body == want, (method, body)
    assert_no_content(admin.delete("/clients/bad2"))


def test_percent_encoded_ids(env):
    _, admin, _ = env
    assert_admin_json(
        admin.get("/clients/%3A%3A1"), 404, {"code": 404, "message": "not found"}
    )
    admin.create("::1", 3, 0)
    assert_admin_json(admin.get("/clients/%3A%3A1"), 200, client("::1", 3, 0, 3))
    assert_admin_json(admin.get("/clients/%3a%3a1"), 200, client("::1", 3, 0, 3))
    assert_admin_json(
        admin.patch("/clients/%3A%3A1", {"tokens": 1}), 200, client("::1", 3, 0, 1)
    )
    admin.create("a b/c", 2, 0)
    assert_admin_json(admin.get("/clients/a%20b%2Fc"), 200, client("a b/c", 2, 0, 2))
    assert_no_content(admin.delete("/clients/a%20b%2Fc"))
    assert_no_content(admin.delete("/clients/%3A%3A1"))
    assert_admin_error(admin.get("/clients/%3A%3A1"), 404, "not found")
    for bad in ("%ZZ", "%4", "a%"):  # an invalid escape is an invalid id
        assert_admin_error(
            admin.get(f"/clients/{bad}"), 400, "invalid value: client_id"
        )


def test_413_body_over_64k_then_close(env):
    _, admin, _ = env
    ok = b'{"client_id":"big","capacity":1,"rate_per_sec":1}'
    exact = ok + b" " * (65536 - len(ok))  # 64 KiB exactly: accepted
    r = admin.post(
        "/clients", raw_body=exact, headers=[("Content-Type", "application/json")]
    )
    assert_admin_json(r, 201, client("big", 1, 1, 1))
    assert_no_content(admin.delete("/clients/big"))
    over = ok + b" " * (65537 - len(ok))
    with Conn(admin.port) as c:
        c.send(
            build_request(
                "POST",
                "/clients",
                headers=[("Authorization", f"Bearer {TOKEN}")],
                body=over,
                host="admin.test",
            )
        )
        r = c.read_response("POST")
        assert_admin_error(r, 413, "body too large", close=True)
        c.assert_closed()
    assert_admin_error(admin.get("/clients/big"), 404, "not found")


def test_invalid_query(env):
    _, admin, _ = env
    for q, name in (
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("limit=5&offset=-2", "offset"),
    ):
        assert_admin_error(admin.get(f"/clients?{q}"), 400, f"invalid query: {name}")


def test_paging_order_and_total(upstream, proxy, tmp_path):
    up = upstream(["u1"])
    p = proxy(up, rate_limit=rl_config(tmp_path / "rl.db"), admin=admin_config())
    admin = Admin.of(p)
    assert_admin_json(admin.get("/clients"), 200, {"clients": [], "total": 0})
    ids = ["m", "b", "::1", "a", "z9", "Z", "10.0.0.1", "b0"]
    for i, cid in enumerate(ids):
        admin.create(cid, i + 1, 0)
    order = sorted(ids, key=lambda s: s.encode())  # client_id order (bytes)
    full = [client(cid, ids.index(cid) + 1, 0, ids.index(cid) + 1) for cid in order]
    assert_admin_json(admin.get("/clients"), 200, {"clients": full, "total": 8})
    assert_admin_json(
        admin.get("/clients?limit=3"), 200, {"clients": full[:3], "total": 8}
    )
    assert_admin_json(
        admin.get("/clients?limit=3&offset=3"), 200, {"clients": full[3:6], "total": 8}
    )
    assert_admin_json(
        admin.get("/clients?offset=6&limit=3"), 200, {"clients": full[6:], "total": 8}
    )
    assert_admin_json(admin.get("/clients?offset=8"), 200, {"clients": [], "total": 8})
    assert_admin_json(
        admin.get("/clients?limit=1000&offset=0"), 200, {"clients": full, "total": 8}
    )
    # requests through the proxy create buckets, not clients
    assert p.request("/bytes/1").status == 200
    assert admin.get("/clients").json()["total"] == 8


def test_clients_404_without_rate_limit(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, admin=admin_config())
    admin = Admin.of(p)
    for method, path in (
        ("GET", "/clients"),
        ("POST", "/clients"),
        ("GET", "/clients/a"),
        ("DELETE", "/clients/a"),
    ):
        body = (
            {"client_id": "a", "capacity": 1, "rate_per_sec": 1}
            if method == "POST"
            else None
        )
        assert_admin_error(admin.request(method, path, body), 404, "not found")
    assert_admin_json(admin.get("/healthz"), 200, {"status": "ok"})
    assert admin.get("/upstreams").status == 200
    # no rate limit: no RateLimit-* headers on the proxy port
    r = p.request("/bytes/1")
    assert r.status == 200 and not r.has("RateLimit-Limit")


def test_no_token_configured_means_open(upstream, proxy, tmp_path):
    up = upstream(["u1"])
    p = proxy(
        up,
        rate_limit=rl_config(tmp_path / "rl.db"),
        admin=admin_config(token=""),
    )
    admin = Admin.of(p)
    r = admin.post(
        "/clients", {"client_id": "open", "capacity": 2, "rate_per_sec": 0}, token=None
    )
    assert_admin_json(r, 201, client("open", 2, 0, 2))
    assert admin.get("/upstreams", token=None).status == 200


# --------------------------------------------------------------------------- upstreams


def test_get_upstreams_fields(upstream, proxy):
    up = upstream(["u1", "u2"])
    p = proxy(up.entries({"u1": 3}), admin=admin_config())
    admin = Admin.of(p)
    with p.connect() as c:
        for _ in range(8):  # smooth weighted RR 3:1 -> 6 and 2
            assert c.request("/bytes/1").status == 200
    # the upstream connections go back to the pool as the responses complete
    assert wait_until(
        lambda: all(u["active"] == 0 for u in admin.get("/upstreams").json()), 3
    )
    r = admin.get("/upstreams")
    assert r.raw_head == admin_head(200, len(r.body))
    got = r.json()
    assert [list(u) for u in got] == [UPSTREAM_KEYS, UPSTREAM_KEYS]
    u1, u2 = got
    assert (u1["name"], u1["address"], u1["weight"]) == ("u1", up.address("u1"), 3)
    assert (u2["name"], u2["address"], u2["weight"]) == ("u2", up.address("u2"), 1)
    for u, n in ((u1, 6), (u2, 2)):
        assert u["state"] == "active" and u["healthy"] is True
        assert u["requests"] == n and u["fails"] == 0 and u["last_error"] == ""
        assert u["active"] == 0
        assert isinstance(u["idle"], int) and u["idle"] >= 0
    assert r.body == compact(got)
    assert_admin_error(
        admin.get("/upstreams/u1"), 405, "method not allowed", allow="PATCH"
    )


def test_patch_upstream_drain_and_back(upstream, proxy):
    up = upstream(["u1", "u2"])
    p = proxy(up, admin=admin_config())
    admin = Admin.of(p)
    r = admin.patch("/upstreams/u1", {"state": "drain"})
    assert r.status == 200, r
    body = r.json()
    assert (
        list(body) == UPSTREAM_KEYS
        and body["name"] == "u1"
        and body["state"] == "drain"
    )
    assert r.raw_head == admin_head(200, len(r.body))
    ev = p.wait_event("upstream_drain")
    assert ev[-1].get("upstream") == "u1" and ev[-1].get("state") == "drain", ev
    with up.counting("u1") as d1, up.counting("u2") as d2:
        for _ in range(10):
            assert p.request("/bytes/1").get("X-Upstream") == "u2"
    assert (d1.requests, d2.requests) == (0, 10)
    assert [u["state"] for u in admin.get("/upstreams").json()] == ["drain", "active"]
    r = admin.patch("/upstreams/u1", {"state": "active"})
    assert r.status == 200 and r.json()["state"] == "active"
    p.wait_event("upstream_drain", 2)
    with up.counting("u1") as d1, up.counting("u2") as d2:
        for _ in range(10):
            assert p.request("/bytes/1").status == 200
    assert (d1.requests, d2.requests) == (5, 5)
    # errors
    assert_admin_error(
        admin.patch("/upstreams/nope", {"state": "drain"}), 404, "not found"
    )
    assert_admin_error(
        admin.patch("/upstreams/u1", {"state": "down"}), 400, "invalid value: state"
    )
    assert_admin_error(
        admin.patch("/upstreams/u1", {"state": 1}), 400, "wrong type: state"
    )
    assert_admin_error(
        admin.patch("/upstreams/u1", {"weight": 2}), 400, "unknown field: weight"
    )
    assert_admin_error(
        admin.patch(
            "/upstreams/u1",
            raw_body=b"{",
            headers=[("Content-Type", "application/json")],
        ),
        400,
        "invalid JSON",
    )
    assert [u["state"] for u in admin.get("/upstreams").json()] == ["active", "active"]


# --------------------------------------------------------------------------- separation, load


def test_admin_port_is_never_the_proxy_port(upstream, proxy, tmp_path):
    up = upstream(["u1"])
    p = proxy(up, rate_limit=rl_config(tmp_path / "rl.db"), admin=admin_config())
    admin = Admin.of(p)
    assert admin.port != p.port
    with up.counting() as d:
        r = p.request("/clients", headers=[("Authorization", f"Bearer {TOKEN}")])
        r2 = p.request("/healthz")
    assert r.get("X-Upstream") == "u1" and r2.get("X-Upstream") == "u1", (r, r2)
    assert d.requests == 2
    assert admin.get("/clients").json() == {"clients": [], "total": 0}


def test_admin_calls_under_wrk_load_lose_nothing(upstream, proxy, tmp_path):
    """wrk through the proxy for as long as 200 creates, a listing, 100 patches and 200
    deletes take: every admin reply as expected, wrk sees no error and no non-2xx."""
    up = upstream(["u1"])
    p = proxy(
        up,
        rate_limit=rl_config(tmp_path / "rl.db", capacity=1000000000, rate=1000000),
        admin=admin_config(),
        log={"access": "off"},
    )
    admin = Admin.of(p)
    d = up.counting()
    wrk = wrk_start(f"http://127.0.0.1:{p.port}/bytes/16", 8, 50)
    problems = []
    try:
        d.wait(lambda d: d.requests >= 100)  # the admin calls meet the load
        ids = [f"load-{i:03d}" for i in range(200)]
        for i, cid in enumerate(ids):
            r = admin.post(
                "/clients", {"client_id": cid, "capacity": i + 1, "rate_per_sec": 1}
            )
            if r.status != 201:
                problems.append(("POST", cid, r))
        listing = admin.get("/clients?limit=1000").json()
        if [c["client_id"] for c in listing["clients"]] != ids or listing[
            "total"
        ] != 200:
            problems.append(("list", listing["total"]))
        for cid in ids[::2]:
            r = admin.patch(f"/clients/{cid}", {"tokens": 0})
            if r.status != 200 or r.json()["tokens"] != 0:
                problems.append(("PATCH", cid, r))
        for cid in ids:
            r = admin.delete(f"/clients/{cid}")
            if r.status != 204:
                problems.append(("DELETE", cid, r))
        during = wrk.poll() is None
    finally:
        res = wrk_result(wrk, 20, stop=True)
    assert problems == [], problems[:5]
    assert during, "wrk ended before the admin calls did"
    assert res["requests"] > 0
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    assert admin.get("/clients").json() == {"clients": [], "total": 0}


def test_admin_keepalive_and_pipelining(env):
    _, admin, _ = env
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    h = b"Host: admin.test\r\n"
    with Conn(admin.port) as c:
        c.send(
            b"GET /healthz HTTP/1.1\r\n"
            + h
            + b"\r\n"
            + b"GET /clients/nobody HTTP/1.1\r\n"
            + h
            + auth
            + b"\r\n"
            + b"GET /healthz HTTP/1.1\r\n"
            + h
            + b"Connection: close\r\n\r\n"
        )
        assert_admin_json(c.read_response(), 200, {"status": "ok"})
        assert_admin_error(c.read_response(), 404, "not found")
        assert_admin_json(c.read_response(), 200, {"status": "ok"}, close=True)
        c.assert_closed()
    with Conn(admin.port) as c:  # HTTP/1.0 closes unless keep-alive is asked for
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.get("Connection") == "close"
        c.assert_closed()


def test_concurrent_creates_one_wins(env):
    """Eight simultaneous POSTs of one id: exactly one 201, the rest 409."""
    _, admin, _ = env
    out = []

    def go():
        out.append(
            admin.post(
                "/clients", {"client_id": "race", "capacity": 2, "rate_per_sec": 0}
            ).status
        )

    ts = [threading.Thread(target=go) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert sorted(out) == [201] + [409] * 7, out
    assert_no_content(admin.delete("/clients/race"))


def test_client_table_full_503_changes_nothing(upstream, proxy, tmp_path):
    """Overrides are pinned slots and count toward max_clients: a create that needs a
    slot its stripe cannot give answers 503 "client table full" and changes nothing
    (design of issue 8; docs/ratelimit.md: 32 clients = 2 stripes of 16)."""
    up = upstream(["u1"])
    p = proxy(
        up,
        rate_limit=rl_config(tmp_path / "rl.db", max_clients=32),
        admin=admin_config(),
    )
    admin = Admin.of(p)
    created, full = [], []
    for i in range(100):
        cid = f"full-{i:03d}"
        r = admin.post("/clients", {"client_id": cid, "capacity": 5, "rate_per_sec": 1})
        if r.status == 201:
            created.append(cid)
        else:
            assert_admin_error(r, 503, "client table full")
            full.append(cid)
    assert full and 16 <= len(created) <= 32, (len(created), len(full))
    listing = admin.get("/clients?limit=1000").json()
    assert listing["total"] == len(created)
    assert [c["client_id"] for c in listing["clients"]] == created
    for cid in full[:5]:
        assert_admin_error(admin.get(f"/clients/{cid}"), 404, "not found")
    # a freed slot can be used again
    assert_no_content(admin.delete(f"/clients/{created[0]}"))
    r = admin.post(
        "/clients", {"client_id": created[0], "capacity": 5, "rate_per_sec": 1}
    )
    assert r.status == 201, r
