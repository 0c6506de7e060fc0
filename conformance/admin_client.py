"""Helpers for the rate-limit and admin API tests (contract 7, 8; docs: design of issue 8).

Kept apart from harness.py so that it merges cleanly with other work on the harness:

    admin = Admin.of(p)                       # the admin listener of a started Proxy
    r = admin.post("/clients", {"client_id": "a", "capacity": 5, "rate_per_sec": 0})
    assert_admin_json(r, 201, {"client_id": "a", "capacity": 5, "rate_per_sec": 0, "tokens": 5})
    assert_admin_error(admin.get("/nope"), 404, "not found")

    with BoundConn(p.port, "127.0.0.2") as c:  # a second client address on loopback
        ...
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import (
    IO_TIMEOUT,
    REASONS,
    Conn,
    Proxy,
    Response,
    build_request,
    free_port,
    is_listening,
    wait_until,
)

ADMIN_REASONS = {
    **REASONS,
    200: "OK",
    201: "Created",
    204: "No Content",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
}
TOKEN = "s3cret-t0ken"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# contract 8: the keys of an upstream object, in this order
UPSTREAM_KEYS = [
    "name",
    "address",
    "weight",
    "state",
    "healthy",
    "active",
    "idle",
    "requests",
    "fails",
    "last_error",
]


def compact(obj: Any) -> bytes:
    """The admin API's JSON: compact, keys in the given order (design of issue 8)."""
    return json.dumps(obj, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- config


def rl_config(
    store: Path | str,
    capacity: int = 100,
    rate: float = 0,
    key: str = "client_ip",
    **extra: Any,
) -> dict[str, Any]:
    """A rate_limit section (contract 2) for ProxyFactory overrides."""
    return {
        "key": key,
        "default": {"capacity": capacity, "rate_per_sec": rate},
        "store": str(store),
        **extra,
    }


def admin_config(token: str = TOKEN, port: int | None = None) -> dict[str, Any]:
    return {"listen": f"127.0.0.1:{port or free_port()}", "token": token}


# --------------------------------------------------------------------------- admin client


class Admin:
    """The admin listener of one proxy. Each call is one request on a fresh connection
    (HTTP/1.1, no Connection header: the server keeps it open, we close it)."""

    def __init__(self, port: int, token: str | None = TOKEN) -> None:
        self.port = port
        self.token = token

    @classmethod
    def of(cls, p: Proxy, timeout: float = 10.0) -> Admin:
        """Wait until p's admin.listen port listens (the proxy port already does)."""
        adm = p.config.get("admin") or {}
        port = int(str(adm["listen"]).rsplit(":", 1)[1])
        ok = wait_until(
            lambda: is_listening(port) or p.proc.poll() is not None, timeout
        )
        if not ok or p.proc.poll() is not None:
            pytest.fail(
                f"{p.impl}-proxy: admin port {port} not listening within {timeout}s "
                f"(exit {p.proc.poll()}):\n{p.stderr_text()[-3000:]}",
                pytrace=False,
            )
        return cls(port, adm.get("token") or None)

    def raw(self, data: bytes, method: str = "GET") -> Response:
        with Conn(self.port) as c:
            c.send(data)
            return c.read_response(method)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None | bool = True,
        headers: list[tuple[str, str]] | None = None,
        raw_body: bytes | None = None,
    ) -> Response:
        """token=True: the admin's token (if any); a string: that token; None/False: none."""
        hs = list(headers or [])
        tok = self.token if token is True else (token or None)
        if tok:
            hs.append(("Authorization", f"Bearer {tok}"))
        data = raw_body
        if data is None and body is not None:
            data = compact(body)
            hs.append(("Content-Type", "application/json"))
        return self.raw(
            build_request(method, path, headers=hs, body=data, host="admin.test"),
            method,
        )

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)

    def create(
        self, client_id: str, capacity: int, rate: float, tokens: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_id": client_id,
            "capacity": capacity,
            "rate_per_sec": rate,
        }
        if tokens is not None:
            body["tokens"] = tokens
        r = self.post("/clients", body)
        assert r.status == 201, r
        return r.json()


def admin_head(
    code: int,
    length: int | None,
    content_type: str = "application/json",
    allow: str | None = None,
    close: bool = False,
) -> bytes:
    """The exact response head of the admin API (design of issue 8, "Wire format")."""
    out = f"HTTP/1.1 {code} {ADMIN_REASONS[code]}\r\n"
    if length is not None:
        out += f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
    if allow is not None:
        out += f"Allow: {allow}\r\n"
    if close:
        out += "Connection: close\r\n"
    return (out + "\r\n").encode()


def assert_admin_json(r: Response, code: int, obj: Any, close: bool = False) -> None:
    body = compact(obj)
    assert (r.raw_head, r.body) == (admin_head(code, len(body), close=close), body)


def assert_admin_error(
    r: Response,
    code: int,
    message: str,
    allow: str | None = None,
    close: bool = False,
) -> None:
    """The section 4 body with the admin API's exact message."""
    body = compact({"code": code, "message": message})
    assert (r.raw_head, r.body) == (
        admin_head(code, len(body), allow=allow, close=close),
        body,
    )


def assert_no_content(r: Response) -> None:
    assert (r.raw_head, r.body) == (admin_head(204, None), b"")


# --------------------------------------------------------------------------- rate-limit headers


def rl_headers(r: Response) -> dict[str, int | None]:
    """RateLimit-Limit/-Remaining/-Reset and Retry-After as integers (None: absent).
    Each must appear at most once and be 1*DIGIT."""
    out: dict[str, int | None] = {}
    for name, key in (
        ("RateLimit-Limit", "limit"),
        ("RateLimit-Remaining", "remaining"),
        ("RateLimit-Reset", "reset"),
        ("Retry-After", "retry_after"),
    ):
        vals = r.get_all(name)
        assert len(vals) <= 1, f"{name} {len(vals)} times: {r.raw_head!r}"
        if vals:
            assert re.fullmatch(r"\d+", vals[0]), f"{name}: {vals[0]!r}"
            out[key] = int(vals[0])
        else:
            out[key] = None
    return out


def assert_429(
    r: Response,
    limit: int,
    remaining: int,
    reset: int | None,
    retry_after: int | None,
    request_id: str | None = None,
) -> None:
    """The exact 429 of docs/behaviour.md: the section 4 error, then Retry-After and
    RateLimit-* after X-Request-ID (Reset and Retry-After omitted when rate_per_sec is 0);
    the connection stays open (no Connection: close)."""
    body = b'{"code":429,"message":"Too Many Requests"}'
    rid = r.get("X-Request-ID")
    assert rid is not None, r
    if request_id is not None:
        assert rid == request_id
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
    head = (
        "HTTP/1.1 429 Too Many Requests\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {rid}\r\n"
        + (f"Retry-After: {retry_after}\r\n" if retry_after is not None else "")
        + f"RateLimit-Limit: {limit}\r\n"
        f"RateLimit-Remaining: {remaining}\r\n"
        + (f"RateLimit-Reset: {reset}\r\n" if reset is not None else "")
        + "\r\n"
    ).encode()
    assert (r.raw_head, r.body) == (head, body)


# --------------------------------------------------------------------------- clients


class BoundConn(Conn):
    """A Conn whose socket is bound to a source address first (127.0.0.2 ... are all
    loopback on Linux): a second client as the proxy's client_ip sees it."""

    def __init__(
        self,
        port: int,
        source: str,
        host: str = "127.0.0.1",
        timeout: float = IO_TIMEOUT,
    ) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0)
        )
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.received = 0


# --------------------------------------------------------------------------- wrk


_WRK_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


def wrk_start(url: str, connections: int, seconds: int) -> subprocess.Popen:
    """wrk in the background (closed loop; only its counts are used)."""
    return subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wrk_result(
    proc: subprocess.Popen, timeout: float, stop: bool = False
) -> dict[str, int]:
    """wrk's counts; stop=True ends the run now (wrk reports on SIGINT, exit 0)."""
    if stop and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=timeout)
    m = re.search(r"(\d+) requests in", out)
    assert proc.returncode == 0 and m, f"wrk failed (exit {proc.returncode}):\n{out}"
    res = {"requests": int(m.group(1)), "non2xx": 0, "socket_errors": 0}
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if n:
        res["non2xx"] = int(n.group(1))
    s = _WRK_SOCKET.search(out)
    if s:
        res["socket_errors"] = sum(int(x) for x in s.groups())
    res["text"] = out  # type: ignore[assignment]
    return res
