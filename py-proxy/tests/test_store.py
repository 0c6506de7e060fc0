"""Unit tests of pyproxy.store. Twin: c-proxy/tests/test_store.c (same test names, same
fixture rows, same expected dump).

test_db_from_other_twin writes a file through this store and reads it back through the C
twin (c-proxy/build/tests/store_dump, built here if missing); the C suite does the reverse
with `python -m pyproxy.store dump FILE`.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from pyproxy.store import Store, StoreBucket, StoreClient, StoreError

C_PROXY = Path(__file__).resolve().parents[2] / "c-proxy"
STORE_DUMP = C_PROXY / "build/tests/store_dump"

FIXTURE_CLIENTS = [
    StoreClient("10.0.0.1", 5, 0.1, 1700000000.25),
    StoreClient("2001:db8::/64", 100, 0, 1700000000.5),
    StoreClient("key with space%", 1000000000, 1e-05, 0),
]
FIXTURE_BUCKETS = [
    StoreBucket("anon", 0, 1700000002),
    StoreBucket("10.0.0.1", 2.5, 1700000001.125),
]
FIXTURE_DUMP = (
    "schema_version 2\n"
    "client 10.0.0.1 5 0.10000000000000001 1700000000.25\n"
    "client 2001:db8::/64 100 0 1700000000.5\n"
    "client key%20with%20space%25 1000000000 1.0000000000000001e-05 0\n"
    "bucket 10.0.0.1 2.5 1700000001.125\n"
    "bucket anon 0 1700000002\n"
)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "t.db")


def expect_open_error(path: str, want: str) -> None:
    with pytest.raises(StoreError) as e:
        Store.open(path).close()
    assert str(e.value) == want


def raw(path: str, sql: str) -> None:
    """Raw SQL on a file, outside the store."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(sql)
    db.close()


def write_fixture(path: str) -> None:
    s = Store.open(path)
    for c in FIXTURE_CLIENTS:
        s.put_client(c).result()
    s.save_buckets(FIXTURE_BUCKETS)
    s.flush()
    s.close()


def test_round_trip(path: str) -> None:
    write_fixture(path)
    s = Store.open(path)
    d = s.load().result()
    assert d.version == 2
    assert d.clients == FIXTURE_CLIENTS
    assert d.buckets == sorted(FIXTURE_BUCKETS, key=lambda b: b.client_id)
    assert isinstance(d.clients[1].rate_per_sec, float)

    s.put_client(StoreClient("10.0.0.1", 7, 3.5, 1700000009)).result()
    assert s.delete_client("2001:db8::/64").result() is True
    assert s.delete_client("2001:db8::/64").result() is False
    s.close()

    s = Store.open(path)
    d = s.load().result()
    assert [c.client_id for c in d.clients] == ["10.0.0.1", "key with space%"]
    assert d.clients[0] == StoreClient("10.0.0.1", 7, 3.5, 1700000009)
    assert len(d.buckets) == 2  # a deleted override keeps its bucket
    s.close()


def test_constraint_errors(path: str) -> None:
    s = Store.open(path)
    s.put_client(StoreClient("a", 10, 1, 1)).result()
    with pytest.raises(StoreError) as e:
        s.put_client(StoreClient("a", 0, 1, 2)).result()
    assert str(e.value) == "CHECK constraint failed: capacity > 0"
    with pytest.raises(StoreError) as e:
        s.put_client(StoreClient("b", 10, -0.5, 2)).result()
    assert str(e.value) == "CHECK constraint failed: rate_per_sec >= 0"

    # a batch with one bad row is rolled back whole
    s.save_buckets([StoreBucket("a", 1, 5), StoreBucket("b", -1, 5)])
    with pytest.raises(StoreError) as e:
        s.flush()
    assert str(e.value) == "CHECK constraint failed: tokens >= 0"
    s.flush()  # reported once

    d = s.load().result()
    assert d.clients == [StoreClient("a", 10, 1, 1)]
    assert d.buckets == []
    s.close()


def test_migration_from_v1(path: str) -> None:
    raw(
        path,
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        "INSERT INTO schema_version (version) VALUES (1);"
        "CREATE TABLE clients (client_id TEXT PRIMARY KEY, "
        "capacity INTEGER NOT NULL CHECK(capacity > 0), "
        "rate_per_sec REAL NOT NULL CHECK(rate_per_sec >= 0));"
        "CREATE TABLE buckets (client_id TEXT PRIMARY KEY, "
        "tokens REAL NOT NULL CHECK(tokens >= 0), at REAL NOT NULL);"
        "INSERT INTO clients VALUES ('old', 3, 0.5);"
        "INSERT INTO buckets VALUES ('old', 1.5, 1700000000);",
    )
    for _ in range(2):  # the second open finds version 2
        s = Store.open(path)
        d = s.load().result()
        s.close()
        assert d.version == 2
        assert d.clients == [StoreClient("old", 3, 0.5, 0)]
        assert d.buckets == [StoreBucket("old", 1.5, 1700000000)]
    # the migrated table enforces the version 2 constraints
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO clients VALUES ('x', 1, 1, NULL)")
    db.close()


def test_newer_schema_refused(path: str) -> None:
    write_fixture(path)
    raw(path, "UPDATE schema_version SET version = 3")
    expect_open_error(path, "store %s: schema version 3 is newer than this build's (2)" % path)


def test_not_sqlite_refused(path: str) -> None:
    Path(path).write_text("this is not a database\n" * 200)
    expect_open_error(path, "store %s: not a SQLite database" % path)

    expect_open_error(
        "/nonexistent-twinproxy-dir/t.db",
        "store /nonexistent-twinproxy-dir/t.db: cannot open: unable to open database file",
    )

    Path(path).unlink()
    raw(path, "CREATE TABLE other (x)")
    expect_open_error(path, "store %s: not a twinproxy store (no schema_version table)" % path)


def test_wal_mode(path: str) -> None:
    s = Store.open(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    s.close()


def test_save_buckets_batched(path: str) -> None:
    n = 500
    s = Store.open(path)
    rows = [StoreBucket("c%04d" % i, i * 0.5, 1700000000 + i) for i in range(n)]
    before = s.commits
    s.save_buckets(rows)
    rows.clear()  # the store copied the rows
    s.flush()
    assert s.commits - before == 1
    d = s.load().result()
    assert len(d.buckets) == n
    assert d.buckets[-1] == StoreBucket("c0499", 249.5, 1700000499)
    s.close()


def test_db_from_other_twin(path: str) -> None:
    subprocess.run(
        ["make", "-s", "-C", str(C_PROXY), "build/tests/store_dump"],
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )
    write_fixture(path)
    out = subprocess.run(
        [str(STORE_DUMP), path], check=True, capture_output=True, text=True, timeout=10
    )
    assert out.stdout == FIXTURE_DUMP
