"""store: per-client overrides and saved bucket state in SQLite (contract sections 7 and 8).

Twin: c-proxy/src/store.c (the same schema, statements, error texts and write path; a file
written by either twin is read by the other). docs/store.md shows the schema.

The interface is the six verbs open, load, put_client, delete_client, save_buckets, close,
so another backend (PostgreSQL, Redis for live tokens) can stand behind it later.

Write path: one executor thread (ThreadPoolExecutor(max_workers=1)) owns the connection,
the twin of the C writer thread. Every verb is a job on it. Where the C twin blocks the
caller until the commit (put_client, delete_client), this one returns a
concurrent.futures.Future: the admin handler awaits it (asyncio.wrap_future) before it
replies, so the event loop never waits on SQLite. save_buckets returns at once; its rows
are written in ONE transaction; flush() reports a failed batch.

`python -m pyproxy.store dump FILE` prints a store through this module, the twin of
c-proxy's build/tests/store_dump (the format is in docs/store.md).
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

STORE_SCHEMA_VERSION = 2  # what this build writes; 1 is migrated on open

SQL_CREATE_SCHEMA_VERSION = "CREATE TABLE schema_version (version INTEGER NOT NULL)"
SQL_CREATE_CLIENTS = (
    "CREATE TABLE clients (client_id TEXT PRIMARY KEY, "
    "capacity INTEGER NOT NULL CHECK(capacity > 0), "
    "rate_per_sec REAL NOT NULL CHECK(rate_per_sec >= 0), updated_at REAL NOT NULL)"
)
SQL_CREATE_BUCKETS = (
    "CREATE TABLE buckets (client_id TEXT PRIMARY KEY, "
    "tokens REAL NOT NULL CHECK(tokens >= 0), at REAL NOT NULL)"
)
# version 1 -> 2: clients gains updated_at (0 = before the migration). SQLite cannot add a
# NOT NULL column without a default, so the table is rebuilt.
SQL_MIGRATE_1_2 = (
    "CREATE TABLE clients_v2 (client_id TEXT PRIMARY KEY, "
    "capacity INTEGER NOT NULL CHECK(capacity > 0), "
    "rate_per_sec REAL NOT NULL CHECK(rate_per_sec >= 0), updated_at REAL NOT NULL);"
    "INSERT INTO clients_v2 (client_id, capacity, rate_per_sec, updated_at) "
    "SELECT client_id, capacity, rate_per_sec, 0 FROM clients;"
    "DROP TABLE clients;"
    "ALTER TABLE clients_v2 RENAME TO clients;"
    "UPDATE schema_version SET version = 2"
)
SQL_PUT_CLIENT = (
    "INSERT OR REPLACE INTO clients (client_id, capacity, rate_per_sec, updated_at) "
    "VALUES (?, ?, ?, ?)"
)
SQL_DELETE_CLIENT = "DELETE FROM clients WHERE client_id = ?"
SQL_PUT_BUCKET = "INSERT OR REPLACE INTO buckets (client_id, tokens, at) VALUES (?, ?, ?)"
SQL_LOAD_CLIENTS_V2 = (
    "SELECT client_id, capacity, rate_per_sec, updated_at FROM clients ORDER BY client_id"
)
SQL_LOAD_CLIENTS_V1 = (
    "SELECT client_id, capacity, rate_per_sec, 0.0 FROM clients ORDER BY client_id"
)
SQL_LOAD_BUCKETS = "SELECT client_id, tokens, at FROM buckets ORDER BY client_id"

T = TypeVar("T")


class StoreError(Exception):
    """A store that cannot be used; str() is "store PATH: what is wrong" on open, SQLite's
    message otherwise (the C twin's err strings)."""


@dataclass(frozen=True)
class StoreClient:
    """struct store_client: a per-client override."""

    client_id: str  # the rate-limit key
    capacity: int  # > 0 (CHECK)
    rate_per_sec: float  # >= 0 (CHECK)
    updated_at: float  # wall clock of the last change; 0 = migrated from v1


@dataclass(frozen=True)
class StoreBucket:
    """struct store_bucket: tokens as of `at` (wall clock)."""

    client_id: str
    tokens: float  # >= 0 (CHECK)
    at: float


@dataclass(frozen=True)
class StoreData:
    """struct store_data: everything load returns, each list in client_id order."""

    version: int  # schema version found (0 = empty, read-only open)
    clients: list[StoreClient]
    buckets: list[StoreBucket]


def _exec(db: sqlite3.Connection, sql: str) -> None:
    """Run ;-separated statements one by one (executescript would COMMIT first)."""
    for stmt in sql.split(";"):
        db.execute(stmt)


def _one_int(db: sqlite3.Connection, sql: str) -> int:
    row = db.execute(sql).fetchone()
    return int(row[0])


def _schema_prepare(db: sqlite3.Connection, ro: bool) -> int:
    """Find or create the schema; migrate 1 -> 2. Raises StoreError(reason) without the
    "store PATH: " prefix; sqlite3.Error passes through."""
    db.execute("BEGIN" if ro else "BEGIN IMMEDIATE")
    try:
        has = _one_int(
            db,
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
        )
        if has == 0:
            tables = _one_int(
                db, "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            )
            if tables > 0:
                raise StoreError("not a twinproxy store (no schema_version table)")
            if ro:
                version = 0
            else:
                _exec(
                    db,
                    SQL_CREATE_SCHEMA_VERSION
                    + ";"
                    + SQL_CREATE_CLIENTS
                    + ";"
                    + SQL_CREATE_BUCKETS
                    + ";INSERT INTO schema_version (version) VALUES (2)",
                )
                version = STORE_SCHEMA_VERSION
        else:
            rows = _one_int(db, "SELECT count(*) FROM schema_version")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if rows != 1 or row is None or not isinstance(row[0], int) or row[0] < 1:
                raise StoreError("bad schema_version table")
            version = row[0]
            if version > STORE_SCHEMA_VERSION:
                raise StoreError(
                    "schema version %d is newer than this build's (%d)"
                    % (version, STORE_SCHEMA_VERSION)
                )
            if version == 1 and not ro:
                _exec(db, SQL_MIGRATE_1_2)
                version = 2
        db.execute("COMMIT")
        return version
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _connect(path: str, ro: bool) -> tuple[sqlite3.Connection, int]:
    """store_open's work, on the executor thread. Raises StoreError("store PATH: ...")."""
    try:
        if ro:
            quoted = path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
            db = sqlite3.connect(
                "file:%s?mode=ro" % quoted,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise StoreError("store %s: cannot open: %s" % (path, e)) from None
    try:
        db.execute("PRAGMA busy_timeout=5000")
        # The first read tells a SQLite file from anything else.
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorcode", None) == 26 or str(e) == "file is not a database":
                raise StoreError("store %s: not a SQLite database" % path) from None
            raise StoreError("store %s: cannot open: %s" % (path, e)) from None
        if not ro:
            row = db.execute("PRAGMA journal_mode=WAL").fetchone()
            if row is None or row[0] != "wal":
                raise StoreError("store %s: cannot switch to WAL" % path)
        try:
            version = _schema_prepare(db, ro)
        except StoreError as e:
            raise StoreError("store %s: %s" % (path, e)) from None
        except sqlite3.Error as e:
            raise StoreError("store %s: %s" % (path, e)) from None
    except BaseException:
        db.close()
        raise
    return db, version


class Store:
    """struct store. Open with Store.open(); every method may be called from any thread."""

    def __init__(self, path: str, db: sqlite3.Connection, version: int, ex: ThreadPoolExecutor):
        self.path = path  # for messages
        self.version = version  # schema version on open
        self.commits = 0  # transactions committed (written on the executor thread only)
        self._db = db  # used on the executor thread only
        self._ex = ex  # the writer: one thread
        self._lock = threading.Lock()  # guards _async_err
        self._async_err: str | None = None  # first failure of a save_buckets since flush()

    @classmethod
    def open(cls, path: str, readonly: bool = False) -> Store:
        """store_open: open (creating if needed, unless read-only), switch to WAL, create or
        migrate the schema, start the writer. Raises StoreError("store PATH: ...")."""
        ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        try:
            db, version = ex.submit(_connect, path, readonly).result()
        except BaseException:
            ex.shutdown(wait=True)
            raise
        return cls(path, db, version, ex)

    def _submit(self, fn: Callable[[], T]) -> Future[T]:
        return self._ex.submit(fn)

    def load(self) -> Future[StoreData]:
        """store_load: every client and bucket, in client_id order."""
        return self._submit(self._job_load)

    def put_client(self, c: StoreClient) -> Future[None]:
        """store_put_client: insert or replace; the future fails with StoreError(SQLite's
        message), e.g. "CHECK constraint failed: capacity > 0", and nothing changes."""
        return self._submit(lambda: self._job_put(c))

    def delete_client(self, client_id: str) -> Future[bool]:
        """store_delete_client: True if it existed. Its saved bucket stays."""
        return self._submit(lambda: self._job_delete(client_id))

    def save_buckets(self, rows: Sequence[StoreBucket]) -> None:
        """store_save_buckets: queue rows for ONE transaction and return at once."""
        copy = list(rows)
        self._submit(lambda: self._job_save(copy))

    def flush(self) -> None:
        """store_flush: wait for every job queued before; raise StoreError with the first
        failure of a save_buckets batch since the previous flush."""
        self._submit(lambda: None).result()
        with self._lock:
            err, self._async_err = self._async_err, None
        if err is not None:
            raise StoreError(err)

    def close(self) -> None:
        """store_close: finish the queued jobs, stop the writer, close the file."""
        self._ex.submit(self._db.close)
        self._ex.shutdown(wait=True)

    # ---- jobs, run on the executor thread ---------------------------------------------

    def _job_load(self) -> StoreData:
        if self.version == 0:
            return StoreData(0, [], [])
        try:
            sql = SQL_LOAD_CLIENTS_V1 if self.version == 1 else SQL_LOAD_CLIENTS_V2
            clients = [
                StoreClient(str(r[0]), int(r[1]), float(r[2]), float(r[3]))
                for r in self._db.execute(sql)
            ]
            buckets = [
                StoreBucket(str(r[0]), float(r[1]), float(r[2]))
                for r in self._db.execute(SQL_LOAD_BUCKETS)
            ]
        except sqlite3.Error as e:
            raise StoreError(str(e)) from None
        return StoreData(self.version, clients, buckets)

    def _job_put(self, c: StoreClient) -> None:
        try:
            self._db.execute(
                SQL_PUT_CLIENT, (c.client_id, c.capacity, float(c.rate_per_sec), c.updated_at)
            )
        except sqlite3.Error as e:
            raise StoreError(str(e)) from None
        self.commits += 1

    def _job_delete(self, client_id: str) -> bool:
        try:
            cur = self._db.execute(SQL_DELETE_CLIENT, (client_id,))
        except sqlite3.Error as e:
            raise StoreError(str(e)) from None
        self.commits += 1
        return cur.rowcount > 0

    def _job_save(self, rows: list[StoreBucket]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    SQL_PUT_BUCKET, [(r.client_id, float(r.tokens), float(r.at)) for r in rows]
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            with self._lock:
                if self._async_err is None:
                    self._async_err = str(e)
            return
        self.commits += 1


# ---- python -m pyproxy.store dump FILE ---------------------------------------------------


def _dump_id(s: str) -> str:
    """Bytes outside "!".."~" and "%" as %XX, like store_dump.c."""
    return "".join(
        chr(b) if 0x20 < b <= 0x7E and b != 0x25 else "%%%02X" % b for b in s.encode("utf-8")
    )


def dump(path: str) -> str:
    """The store_dump text of a store, read through this module (read-only)."""
    s = Store.open(path, readonly=True)
    try:
        d = s.load().result()
    finally:
        s.close()
    out = ["schema_version %d\n" % d.version]
    for c in d.clients:
        out.append(
            "client %s %d %.17g %.17g\n"
            % (_dump_id(c.client_id), c.capacity, c.rate_per_sec, c.updated_at)
        )
    for b in d.buckets:
        out.append("bucket %s %.17g %.17g\n" % (_dump_id(b.client_id), b.tokens, b.at))
    return "".join(out)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "dump":
        sys.stderr.write("usage: python -m pyproxy.store dump FILE\n")
        return 2
    try:
        sys.stdout.write(dump(argv[1]))
    except StoreError as e:
        sys.stderr.write("%s\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
