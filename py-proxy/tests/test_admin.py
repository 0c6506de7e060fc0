"""Unit tests of pyproxy.admin. Twin: c-proxy/tests/test_admin.c (same test names, same
fixture, same case files).

Each server runs on a real loopback socket, on an asyncio loop in a background thread, with
fake providers, a real rate-limit table and a temp SQLite store, and a fixed clock (1000.0),
so every response is exact. Most tests run a case file of c-proxy/tests/admin_cases/ (raw
requests and the raw responses expected byte for byte; the format is described in
test_admin.c). The C twin runs the same files: the twins answer with identical bytes.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from pyproxy.admin import Admin, AdminBindError, Clients, admin_bind, format_number
from pyproxy.config import ConfigAddr
from pyproxy.main import new_loop
from pyproxy.ratelimit import Limit, Table, table_new
from pyproxy.store import Store

NOW = 1000.0
CASES = Path(__file__).resolve().parents[2] / "c-proxy" / "tests" / "admin_cases"
METRICS = "# TYPE twinproxy_config_generation gauge\ntwinproxy_config_generation 1\n"


class FakeProviders:
    """The C test's fake providers: two upstreams, a fixed metrics text."""

    def __init__(self) -> None:
        self.ups: list[dict[str, Any]] = [
            {"name": "u1", "address": "127.0.0.1:9001", "weight": 1, "state": "active",
             "healthy": True, "active": 0, "idle": 2, "requests": 10, "fails": 0,
             "last_error": ""},
            {"name": "u 2", "address": "127.0.0.1:9002", "weight": 3, "state": "drain",
             "healthy": False, "active": 1, "idle": 0, "requests": 7, "fails": 4,
             "last_error": "connect: refused"},
        ]  # fmt: skip

    def upstreams(self) -> list[dict[str, Any]]:
        return [dict(u) for u in self.ups]

    def upstream_set_state(self, name: str, drain: bool) -> dict[str, Any] | None:
        for u in self.ups:
            if u["name"] == name:
                u["state"] = "drain" if drain else "active"
                return dict(u)
        return None

    def metrics(self) -> str:
        return METRICS


def addr(port: int, line: int) -> ConfigAddr:
    return ConfigAddr(
        "127.0.0.1:%d" % port, "127.0.0.1", port, socket.AF_INET, ("127.0.0.1", port), line
    )


class Fix:
    """The fixture: a server on its own loop thread."""

    def __init__(
        self, tmp: Path, token: str = "", max_clients: int = 64, clients: bool = True,
        idle: float = 0.0, loop: str = "asyncio",
    ) -> None:  # fmt: skip
        self.db = str(tmp / "admin.db")
        self.table: Table = table_new(max_clients, Limit(10, 1))
        self.store = Store.open(self.db)
        sock = admin_bind(addr(0, 7), "t.yaml")
        self.port: int = sock.getsockname()[1]
        self.loop = new_loop(loop)
        cl = Clients(self.table, self.store, lambda: NOW) if clients else None
        self.admin = Admin(self.loop, sock, token, FakeProviders(), cl, idle_timeout=idle)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        started = threading.Event()
        self.loop.call_soon(lambda: (self.admin.start(), started.set()))
        self.thread.start()
        assert started.wait(5)

    def stop(self) -> None:
        done = threading.Event()
        self.loop.call_soon_threadsafe(lambda: (self.admin.stop(), done.set()))
        assert done.wait(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        self.store.close()
        self.table.close()


def dial(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def recv_n(s: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        try:
            k = s.recv(n - len(got))
        except (TimeoutError, ConnectionResetError):
            break
        if not k:
            break
        got += k
    return bytes(got)


def closes_within(s: socket.socket, seconds: float) -> bool:
    """Whether the server closes (EOF, or a reset after the lingering close)."""
    s.settimeout(seconds)
    try:
        while True:
            if not s.recv(4096):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def unescape(s: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out += c.encode("latin-1")
            i += 1
            continue
        e = s[i + 1]
        if e == "r":
            out += b"\r"
        elif e == "n":
            out += b"\n"
        elif e == "t":
            out += b"\t"
        elif e == "\\":
            out += b"\\"
        elif e == "x":
            out.append(int(s[i + 2 : i + 4], 16))
            i += 2
        elif e == "*":
            colon = s.index(":", i)
            out += s[colon + 1].encode() * int(s[i + 2 : colon])
            i = colon
        else:
            raise AssertionError("bad escape \\" + e)
        i += 2
    return bytes(out)


def run_cases(name: str, tmp: Path) -> None:
    """Run one case file (the C twin's run_cases)."""
    lines = (CASES / name).read_text(encoding="latin-1").splitlines()
    token, max_clients, clients, idle = "", 64, True, 0.0
    fix: Fix | None = None
    conn: socket.socket | None = None
    want = bytearray()
    try:
        for lineno, line in enumerate(lines, 1):
            if line.startswith("!"):
                parts = line.split(" ", 2)
                v = parts[2] if len(parts) > 2 else ""
                if parts[1] == "token":
                    token = v
                elif parts[1] == "max_clients":
                    max_clients = int(v)
                elif parts[1] == "clients":
                    clients = False
                elif parts[1] == "idle":
                    idle = float(v)
                continue
            if not line or line.startswith("#"):
                continue
            if fix is None:
                fix = Fix(tmp, token, max_clients, clients, idle)
            if not line.startswith("<") and want:
                assert conn is not None
                got = recv_n(conn, len(want))
                assert got == bytes(want), "%s: response before line %d differs" % (name, lineno)
                want.clear()
            if line[0] in ">+":
                if line[0] == ">" or conn is None:
                    if conn is not None:
                        conn.close()
                    conn = dial(fix.port)
                try:
                    conn.sendall(unescape(line[2:]))
                except OSError:
                    pass  # the server may close early (413): what it sent is still read
            elif line[0] == "<":
                want += unescape(line[2:])
            elif line == "= close":
                assert conn is not None
                assert closes_within(conn, 5), "%s:%d: the server did not close" % (name, lineno)
        if want:
            assert conn is not None
            assert recv_n(conn, len(want)) == bytes(want), "%s: last response differs" % name
    finally:
        if conn is not None:
            conn.close()
        if fix is not None:
            fix.stop()


def test_healthz_metrics_upstreams(tmp_path: Path) -> None:
    run_cases("upstreams.txt", tmp_path)


def test_serves_under_uvloop(tmp_path: Path) -> None:
    # uvloop's transports are not asyncio.Transport subclasses: nothing may assume they are
    fix = Fix(tmp_path, loop="uvloop")
    try:
        with dial(fix.port) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 "), data
    finally:
        fix.stop()


def test_token_required(tmp_path: Path) -> None:
    run_cases("auth.txt", tmp_path)


def test_not_found_and_method_not_allowed(tmp_path: Path) -> None:
    run_cases("routes.txt", tmp_path)


def test_clients_crud(tmp_path: Path) -> None:
    run_cases("clients.txt", tmp_path)


def test_clients_400_messages(tmp_path: Path) -> None:
    run_cases("errors.txt", tmp_path)


def test_clients_paging(tmp_path: Path) -> None:
    run_cases("paging.txt", tmp_path)


def test_clients_url_decoding(tmp_path: Path) -> None:
    run_cases("decoding.txt", tmp_path)


def test_clients_table_full_503(tmp_path: Path) -> None:
    run_cases("table_full.txt", tmp_path)


def test_clients_404_without_rate_limit(tmp_path: Path) -> None:
    run_cases("no_rate_limit.txt", tmp_path)


def test_keepalive_and_pipelining(tmp_path: Path) -> None:
    run_cases("keepalive.txt", tmp_path)


def test_limits_413_431_400(tmp_path: Path) -> None:
    run_cases("limits.txt", tmp_path)


def test_pipelined_backpressure(tmp_path: Path) -> None:
    """500 pipelined requests sent before any response is read: the server stops parsing
    while its output backs up, and still answers all of them in order."""
    fix = Fix(tmp_path)
    try:
        req = b"GET /upstreams HTTP/1.1\r\nHost: a\r\n\r\n"
        s = dial(fix.port)
        s.sendall(req)
        one = recv_n(s, 72 + 305)  # head ("...Content-Length: 305\r\n\r\n") + body
        assert len(one) == 72 + 305
        s.close()
        s = dial(fix.port)
        s.sendall(req * 500)
        assert recv_n(s, len(one) * 500) == one * 500
        s.close()
    finally:
        fix.stop()


def test_idle_timeout_closes(tmp_path: Path) -> None:
    fix = Fix(tmp_path, idle=0.2)
    try:
        s = dial(fix.port)
        # a connection that never sends is closed by the server: wait for its EOF
        assert closes_within(s, 5)
        s.close()
    finally:
        fix.stop()


def test_committed_before_reply(tmp_path: Path) -> None:
    fix = Fix(tmp_path)
    try:
        s = dial(fix.port)
        s.sendall(
            b"POST /clients HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n"
            b'{"client_id":"c1","capacity":5,"rate_per_sec":0.5}'
        )
        assert recv_n(s, 12) == b"HTTP/1.1 201"
        # the reply is out: the row must already be in the file (another connection)
        db = sqlite3.connect("file:%s?mode=ro" % fix.db, uri=True)
        row = db.execute(
            "SELECT capacity, rate_per_sec, updated_at FROM clients WHERE client_id = 'c1'"
        ).fetchone()
        db.close()
        assert row == (5, 0.5, NOW)
        # and every worker sees the override at once: it is pinned in the table
        r = fix.table.take(b"c1", None, NOW)
        assert (r.limit, r.remaining) == (5, 4)
        s.close()
    finally:
        fix.stop()


def test_bind_error_message(tmp_path: Path) -> None:
    fix = Fix(tmp_path)
    try:
        with pytest.raises(AdminBindError) as e:
            admin_bind(addr(fix.port, 12), "t.yaml")
        assert str(e.value) == "t.yaml:12: admin.listen: address in use"
    finally:
        fix.stop()


def test_format_number() -> None:
    cases = [
        (10.0, "10"), (0.5, "0.5"), (0.1, "0.1"), (1e-05, "1e-05"), (-0.0, "0"),
        (1e20, "1e+20"), (2.5e15, "2500000000000000"), (1.0 / 3, "0.333333333333333"),
        (1234567.125, "1234567.125"), (9007199254740992.0, "9.00719925474099e+15"),
    ]  # fmt: skip
    for x, want in cases:
        assert format_number(x) == want
