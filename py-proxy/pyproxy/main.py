"""main: command line, workers, signals, reload, shutdown. Twin: c-proxy/src/main.c.

    py-proxy --config FILE [--check] [--version] [--help] [--loop asyncio|uvloop]

Exit 0 after a graceful stop or a valid --check; 2 with one `config error: FILE:LINE: ...`
line for a bad config or a listen address that cannot be bound.

workers: 1 runs everything in this process. workers: N > 1 binds N SO_REUSEPORT sockets here,
forks N worker processes (one event loop each; the C twin uses threads) and supervises them:
signals are forwarded, a worker that dies unexpectedly is restarted, the parent exits 0 once
every worker has stopped. The parent validates a reload once and logs it; workers reload quietly.

Rate limiting and the admin API (contract 7, 8): before anything listens, rate_limit.store is
opened (read-only for --check, where a missing file is valid; read-write and created on
start) and admin.listen is bound; a failure is a config error, exit 2. The rate-limit table is
created here and filled from the store (overrides pinned, then the saved buckets); with
workers > 1 it is a shared-memory block made before the fork, so every worker takes from the
same buckets and sees every override at once. Worker 0 runs the admin server and saves the
token state every SAVE_INTERVAL_S (batched, on a thread: the loop never waits on SQLite);
the last save happens on a graceful stop before exit 0 (with workers > 1, the parent's, once
every worker has stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httptools

from pyproxy import metrics as mx
from pyproxy.admin import Admin, AdminBindError, Clients, admin_bind
from pyproxy.balancer_roundrobin import rr_registry_init
from pyproxy.client import ClientConn
from pyproxy.config import Config, ConfigError, ConfigKeyKind, ConfigRateLimit, config_load
from pyproxy.health import health_label_names, health_registry_init, health_set_log
from pyproxy.listener import BindError, ClientCounter, Listener, listener_bind
from pyproxy.log import Log, log_open, stderr_line
from pyproxy.metrics import Counters, metrics_render
from pyproxy.ratelimit import Bucket, Limit, Table, bucket_full, shared_table_new, table_new
from pyproxy.store import Store, StoreBucket, StoreError
from pyproxy.upgrade import (
    UpgradeError,
    UpgradeOffer,
    program_argv,
    upgrade_channel,
    upgrade_poll,
    upgrade_ready,
    upgrade_receive,
    upgrade_spawn,
)
from pyproxy.upstream import UpstreamSet
from pyproxy.util import VERSION, reseed
from pyproxy.worker import Worker, WorkerRateLimit

EXIT_OK = 0
EXIT_CONFIG = 2
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2}
REOPEN_ACK_S = 2.0  # workers > 1: how long the parent waits for every worker's reopen

USAGE = "py-proxy --config FILE [--check] [--version] [--help] [--loop asyncio|uvloop]"
# The same text as c-proxy --help (docs/operations.md; conformance test_cli.py), apart from
# the program name and --loop.
HELP = (
    "usage: "
    + USAGE
    + """

twinproxy: an HTTP/1.1 reverse proxy (manual: py-proxy(1)).

options:
  --config FILE   run with the YAML config FILE (also --config=FILE)
  --check         validate FILE (a rate_limit.store is opened read-only), exit
                  0 when valid, 2 with "config error: FILE:LINE: ..." when not
  --version       print the version and exit
  -h, --help      print this help and exit
  --loop asyncio|uvloop
                  py-proxy only: the event loop (default asyncio, or $PYPROXY_LOOP)

signals:
  SIGHUP          reload FILE (a bad file is logged, the old config stays)
  SIGUSR1         reopen the access log file (logrotate)
  SIGUSR2         binary upgrade: start this binary again, hand it the listening
                  sockets, then drain and exit
  SIGTERM, SIGINT stop gracefully within timeouts.shutdown

exit status: 0 after a graceful stop or a valid --check, 2 on a bad config."""
)
SAVE_INTERVAL_S = 5.0  # token state saved this often (and on a graceful stop)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="py-proxy", usage=USAGE, add_help=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default=os.environ.get("PYPROXY_LOOP", "asyncio"),
        help="event loop (default asyncio, or $PYPROXY_LOOP)",
    )
    return p.parse_args(argv)


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


RESTART_WARNING = "listen, workers and admin.listen need a restart; kept as they were"


def _needs_restart(old: Config, new: Config) -> bool:
    """listen, workers and admin.listen cannot change without a restart."""
    return (
        old.listen.text != new.listen.text
        or old.workers != new.workers
        or old.admin_enabled != new.admin_enabled
        or (
            new.admin_enabled
            and old.admin_listen is not None
            and new.admin_listen is not None
            and old.admin_listen.text != new.admin_listen.text
        )
    )


RL_RESTART_WARNING = (
    "rate_limit added or removed, rate_limit.store and rate_limit.max_clients need a restart;"
    " kept as they were"
)


def _rl_needs_restart(started: ConfigRateLimit, new: ConfigRateLimit) -> bool:
    """The rate-limit table and its store are made at start: rate_limit appearing or going,
    another store file or another max_clients need a restart (key, default and ipv6_prefix
    apply at once)."""
    if started.enabled != new.enabled:
        return True
    return started.enabled and (
        started.store != new.store or started.max_clients != new.max_clients
    )


def load_for_reload(
    path: str, old: Config, log: Log, quiet: bool, started: Config | None = None
) -> Config | None:
    """Load `path` for a reload; log reload_failed (and the restart warnings) unless quiet.
    `started`: the config the process started with (what the restart-only keys still are)."""
    try:
        new = config_load(path)
    except ConfigError as e:
        if not quiet:
            log.event("error", "reload_failed", error=str(e))
        return None
    if _needs_restart(old, new) and not quiet:
        log.event("warn", "reload", warning=RESTART_WARNING)
    base = started if started is not None else old
    if _rl_needs_restart(base.rate_limit, new.rate_limit) and not quiet:
        log.event("warn", "reload", warning=RL_RESTART_WARNING)
    return new


# ---- rate limiting: the store and the table ---------------------------------------------------


def rl_default(rl: ConfigRateLimit) -> Limit:
    """rate_limit.default as a bucket limit (capacity is whole: config checks it)."""
    return Limit(int(rl.default_capacity), rl.default_rate_per_sec)


def store_open_checked(cfg: Config, readonly: bool) -> Store | None:
    """Open rate_limit.store at config time: read-only for --check (None when the file does
    not exist yet: start creates it), else read-write. Raises ConfigError
    "FILE:LINE: store PATH: ..." at the line of rate_limit.store (else of rate_limit)."""
    rl = cfg.rate_limit
    if readonly and not os.path.lexists(rl.store):
        return None
    try:
        return Store.open(rl.store, readonly)
    except StoreError as e:
        raise ConfigError("%s:%d: %s" % (cfg.path, rl.store_line, e)) from None


def _key(client_id: str) -> bytes:
    """A store client_id as the table's key bytes (admin.py writes them the same way)."""
    return client_id.encode("utf-8", "surrogateescape")


def store_load_into(store: Store, table: Table, now: float) -> int:
    """Fill the table from the store at start: overrides first (pinned slots), then the saved
    buckets (a saved bucket that refilled to full by now is left out: it equals a fresh one).
    Returns how many overrides found no slot (table full). Raises StoreError."""
    data = store.load().result()
    lost = 0
    for c in data.clients:
        if not table.pin(_key(c.client_id), Limit(c.capacity, c.rate_per_sec), None, now):
            lost += 1
    for b in data.buckets:
        key = _key(b.client_id)
        if table.lookup(key, now) is None and bucket_full(
            Bucket(b.tokens, b.at), table.default, now
        ):
            continue
        table.set(key, None, b.tokens, b.at)
    return lost


class BucketWriter:
    """ratelimit_snapshot -> store_save_buckets: the buckets that changed since the last
    good save, in one transaction. Runs on a thread (or in the parent after the workers)."""

    def __init__(self, table: Table, store: Store) -> None:
        self.table = table  # borrowed
        self.store = store  # borrowed
        self.saved: dict[bytes, tuple[float, float]] = {}  # (tokens, at) as last stored

    def save(self) -> str | None:
        """One save: None, or the store's message when it failed (the rows are tried again
        next time)."""
        seen: dict[bytes, tuple[float, float]] = {}
        rows: list[StoreBucket] = []
        saved = self.saved
        for key, tokens, at in self.table.snapshot():
            state = (tokens, at)
            seen[key] = state
            if saved.get(key) != state:
                try:
                    rows.append(StoreBucket(key.decode("utf-8"), tokens, at))
                except UnicodeDecodeError:
                    pass  # a header value that is not UTF-8 cannot be a TEXT client_id
        if rows:
            self.store.save_buckets(rows)
            try:
                self.store.flush()
            except StoreError as e:
                return str(e)
        self.saved = seen
        return None


class BucketSaver:
    """The periodic save (the C twin's save timer): every SAVE_INTERVAL_S a BucketWriter
    save runs on this saver's own thread (a snapshot of a big table is a long pure-Python
    loop, the commit a SQLite call), so the loop only schedules it; one save at a time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        table: Table,
        store: Store,
        on_error: Callable[[str], None],
    ) -> None:
        self.loop = loop
        self.writer = BucketWriter(table, store)
        self.on_error = on_error  # event store_error {reason}
        self.ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saver")
        self.busy = False  # a save runs on the thread
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.timer = self.loop.call_at(self.loop.time() + SAVE_INTERVAL_S, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = self.loop.call_at(self.loop.time() + SAVE_INTERVAL_S, self._on_timer)
        if self.busy:
            return
        self.busy = True
        fut = self.loop.run_in_executor(self.ex, self.writer.save)
        fut.add_done_callback(self._on_saved)

    def _on_saved(self, fut: asyncio.Future[str | None]) -> None:
        self.busy = False
        err = fut.result() if not fut.cancelled() else None
        if err is not None:
            self.on_error(err)

    def stop(self) -> str | None:
        """Graceful stop (the loop no longer runs): the last save, after any that is
        running; the thread ends."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            return self.ex.submit(self.writer.save).result()
        finally:
            self.ex.shutdown(wait=True)


def final_save(table: Table, path: str, log: Log) -> None:
    """workers > 1: the parent's save once every worker stopped (their last takes included)."""
    try:
        store = Store.open(path)
    except StoreError as e:
        log.event("error", "store_error", reason=str(e))
        return
    try:
        err = BucketWriter(table, store).save()
        if err is not None:
            log.event("error", "store_error", reason=err)
    finally:
        store.close()


class ProcessShared:
    """What main makes before the workers exist and every worker borrows (workers > 1:
    inherited through fork)."""

    def __init__(
        self,
        table: Table | None,
        store: Store | None,
        admin_sock: socket.socket | None,
        counters: Counters,
    ) -> None:
        self.table = table  # the rate-limit table, None without rate_limit
        self.store = store  # the open store (workers: 1), None: worker 0 opens its own
        self.admin_sock = admin_sock  # bound admin.listen (worker 0 serves it), or None
        self.counters = counters  # metrics counter rows


class WorkerProcess:
    """One event loop serving one listening socket (worker_run): builds the Worker, its
    Listener (with ClientConn as the protocol factory) and its first upstream set, and is the
    Worker's hooks. In a forked worker (`quiet`), the parent logs start/stop/shutdown/reload
    once for the whole process tree."""

    def __init__(
        self,
        cfg: Config,
        sock: socket.socket,
        loop_kind: str,
        quiet: bool,
        wid: int = 0,
        counter: ClientCounter | None = None,
        shared: ProcessShared | None = None,
    ) -> None:
        self.path = cfg.path
        self.cfg = cfg  # current config (a reload replaces it)
        self.started = cfg  # the config at start: what restart-only keys stay
        self.generation = 1  # twinproxy_config_generation
        self.reloads_failed = 0  # twinproxy_config_reloads_total{result="failure"}
        self.shared = shared if shared is not None else ProcessShared(None, None, None, Counters())
        self.loop = new_loop(loop_kind)
        asyncio.set_event_loop(self.loop)
        self.log = log_open(cfg.log, self.loop)
        health_set_log(self.log)  # upstream_down / upstream_up
        self.log.atomic_lines = cfg.workers > 1
        self.quiet = quiet
        self.w = Worker(self.loop, self.log, wid, self)
        w = self.w
        w.counters = self.shared.counters
        w.crow = Counters.row(wid)
        mx.bind(w.counters, wid)
        self.on_config(w, cfg)
        self.listener = Listener(w, sock, lambda: ClientConn(w), counter)
        self.stopping = False  # draining: SIGTERM/SIGINT seen, or handed over (upgrade)
        self.argv = program_argv()  # SIGUSR2 starts this program again
        self.inherit_chan: socket.socket | None = None  # started by SIGUSR2: tell "ready"
        self.upgrade_proc: subprocess.Popen[bytes] | None = None  # pending upgrade
        self.upgrade_chan: socket.socket | None = None  # its channel
        self.reopen_ack = -1  # forked worker: pipe to tell the parent a SIGUSR1 reopen's outcome
        self.store: Store | None = None  # worker 0: the store it saves to (owned)
        self.saver: BucketSaver | None = None  # worker 0 with rate_limit
        self.admin: Admin | None = None  # worker 0 with admin.listen
        if wid == 0:
            self._start_services()

    def _start_services(self) -> None:
        """Worker 0: the saver and the admin server (started by run())."""
        sh = self.shared
        table = sh.table
        if table is not None:
            self.store = sh.store
            sh.store = None  # owned here now
            if self.store is None:
                try:
                    self.store = Store.open(self.started.rate_limit.store)
                except StoreError as e:
                    self._store_error(str(e))  # limits still apply; state is not saved
            if self.store is not None:
                self.saver = BucketSaver(self.loop, table, self.store, self._store_error)
        if sh.admin_sock is not None:
            clients = None
            if table is not None and self.store is not None:
                clients = Clients(table, self.store)
            self.admin = Admin(
                self.loop, sh.admin_sock, self.cfg.admin_token, self, clients, self.log
            )
            sh.admin_sock = None  # owned by the server now

    def _store_error(self, reason: str) -> None:
        self.log.event("error", "store_error", reason=reason)

    # WorkerHooks --------------------------------------------------------------------------------

    def on_config(self, w: Worker, cfg: Config) -> None:
        uset = UpstreamSet(w.loop, cfg)
        if w.id == 0 and not w.draining:
            uset.start_checks()  # active checks run in one worker only: verdicts are shared
        w.install_set(uset)
        w.rl = self._rl_for(cfg)

    def _rl_for(self, cfg: Config) -> WorkerRateLimit | None:
        """The hot path's view of rate_limit under cfg. Present or not, store and
        max_clients are as at start; key, default and ipv6_prefix follow the reload (a new
        default applies to every bucket without an override from its next take, tokens
        capped, never raised)."""
        table = self.shared.table
        if table is None:
            return None
        rl = cfg.rate_limit if cfg.rate_limit.enabled else self.started.rate_limit
        table.default = rl_default(rl)
        header = None
        if rl.key is ConfigKeyKind.HEADER and rl.key_header:
            header = rl.key_header.lower().encode("latin-1")
        return WorkerRateLimit(table, header, rl.ipv6_prefix)

    # admin.Providers ----------------------------------------------------------------------------

    def upstreams(self) -> list[dict[str, Any]]:
        return self.w.uset.info(self.shared.counters)

    def upstream_set_state(self, name: str, drain: bool) -> dict[str, Any] | None:
        """set_drain on the current set (every worker sees it: the verdict is shared); the
        admin server logs upstream_drain when the state changed."""
        uset = self.w.uset
        if not uset.set_drain(name, drain):
            return None
        return next((u for u in uset.info(self.shared.counters) if u["name"] == name), None)

    def metrics(self) -> str:
        c = self.shared.counters
        ups = []
        for info, p in zip(self.w.uset.info(c), self.w.uset.balancer.peers, strict=True):
            to_up, to_down = p.health.transitions() if p.health is not None else (0, 0)
            ups.append(
                mx.Upstream(
                    str(info["name"]),
                    bool(info["healthy"]),
                    int(str(info["active"])),
                    int(str(info["idle"])),
                    to_up,
                    to_down,
                )
            )
        labels: list[str | None] = [""]
        labels += health_label_names(mx.LABELS - 1)
        view = mx.View(
            "py",
            VERSION,
            self.generation,
            reloads_ok=self.generation - 1,
            reloads_failed=self.reloads_failed,
            ups=ups,
            labels=labels,
        )
        return metrics_render(view, c.sum())

    def on_drain(self, w: Worker) -> None:
        self.listener.stop()
        w.uset.retire()

    def on_conn_gone(self, w: Worker) -> None:
        self.listener.conn_gone()

    # signals ------------------------------------------------------------------------------------

    def run(self) -> int:
        loop = self.loop
        loop.add_signal_handler(signal.SIGTERM, self.on_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.on_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.on_reload)
        loop.add_signal_handler(signal.SIGUSR1, self.on_reopen)
        loop.add_signal_handler(signal.SIGUSR2, self.on_upgrade)
        self.listener.start()
        if self.admin is not None:
            self.admin.start()
        if self.saver is not None:
            self.saver.start()
        loop.call_soon(self._on_running)
        try:
            loop.run_forever()
        finally:
            # a signal from here on must not meet the default action (loop.close() removes
            # the handlers): the process is ending anyway
            signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
            self._upgrade_end()  # a pending new process finds the channel closed
            self._stop_services()
            self.log.flush()
            if not self.quiet:
                self.log.event("info", "stop")
            self.log.close()
            loop.close()
        return EXIT_OK

    def _stop_services(self) -> None:
        """After the loop: admin closed, the token state saved (contract 11), store closed."""
        if self.admin is not None:
            self.admin.stop()
            self.admin = None
        if self.saver is not None:
            err = self.saver.stop()
            if err is not None:
                self._store_error(err)
            self.saver = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def _on_running(self) -> None:
        """The loop runs: its signal handling is live, so the signals run() blocked before
        binding (a SIGHUP right after the port opened must not be lost) are let in now."""
        if not self.quiet:
            self.log.event(
                "info",
                "start",
                listen=self.cfg.listen.text,
                workers=self.cfg.workers,
                pid=os.getpid(),
            )
        if self.inherit_chan is not None:
            upgrade_ready(self.inherit_chan)  # the old process stops accepting and drains
            self.inherit_chan = None
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)

    def on_reload(self) -> None:
        if self.stopping:
            return
        new = load_for_reload(self.path, self.cfg, self.log, self.quiet, self.started)
        if new is None:
            self.reloads_failed += 1
            return
        try:
            log = log_open(new.log, self.loop)
        except OSError as e:
            self.reloads_failed += 1
            if not self.quiet:
                self.log.event(
                    "error",
                    "reload_failed",
                    error="log.access: %s: %s" % (new.log.access, e.strerror),
                )
            return
        log.atomic_lines = new.workers > 1
        self.log.close()
        self.log = log
        self.w.log = log
        health_set_log(log)
        self.cfg = new
        self.w.take_config(new)
        self.generation += 1
        if self.admin is not None:
            self.admin.log = log
            self.admin.token = new.admin_token.encode()
        if not self.quiet:
            log.event("info", "reload", path=self.path, upstreams=len(new.upstreams))

    def on_reopen(self) -> None:
        """SIGUSR1: the access file reopened (Log.reopen). A forked worker reports the outcome
        to the parent, which logs log_reopen once every worker has switched."""
        error = ""
        try:
            self.log.reopen()
        except OSError as e:
            error = "log.access: %s: %s" % (self.log.access_path, e.strerror)
        if self.reopen_ack >= 0:
            # one line per worker, well under PIPE_BUF: never interleaved
            _write_ack(self.reopen_ack, (error.replace("\n", " ") + "\n").encode())
        elif error:
            self.log.event("error", "log_reopen_failed", error=error)
        else:
            self.log.event("info", "log_reopen", path=self.log.access_path)

    def on_stop(self, signame: str) -> None:
        """SIGTERM/SIGINT: drain; one more while draining: stop at once (every connection
        closed, as when timeouts.shutdown passes; the state is still saved, exit 0)."""
        if self.stopping:
            if not self.quiet:
                self.log.event("warn", "shutdown", signal=signame, immediate=True)
            self._on_drain_timeout()
            return
        if not self.quiet:
            self.log.event("info", "shutdown", signal=signame)
        self.begin_stop()

    def begin_stop(self) -> None:
        """Draining starts (SIGTERM/SIGINT, or an upgrade handed over): no accept on any
        listener (the admin API's included), idle connections close, in-flight ones finish
        within timeouts.shutdown."""
        self.stopping = True
        if self.admin is not None:
            self.admin.stop()
            self.admin = None
        self.w.begin_drain()
        grace = self.w.cfg.timeouts.shutdown_ms / 1000.0
        self.loop.call_at(self.loop.time() + grace, self._on_drain_timeout)
        self._check_drained()

    # binary upgrade (upgrade.py) ---------------------------------------------------------------

    def on_upgrade(self) -> None:
        """SIGUSR2: start this program again and offer it our listening sockets (a forked
        worker leaves that to its parent)."""
        if self.quiet:
            return
        if self.stopping or self.upgrade_proc is not None:
            why = "stopping" if self.stopping else "an upgrade is already in progress"
            self.log.event("warn", "upgrade_failed", error=why)
            return
        admin = self.admin
        offer = UpgradeOffer(
            self.started.listen.text,
            [self.listener.fd],
            self.started.admin_listen.text
            if admin is not None and self.started.admin_listen is not None
            else None,
            admin.sock.fileno() if admin is not None else -1,
        )
        try:
            proc, chan = upgrade_spawn(self.argv, offer)
        except UpgradeError as e:
            self.log.event("error", "upgrade_failed", error=str(e))
            return
        self.upgrade_proc, self.upgrade_chan = proc, chan
        self.loop.add_reader(chan.fileno(), self._on_upgrade_channel)

    def _upgrade_end(self) -> subprocess.Popen[bytes] | None:
        proc, chan = self.upgrade_proc, self.upgrade_chan
        if chan is not None:
            self.loop.remove_reader(chan.fileno())
            chan.close()
        self.upgrade_proc = self.upgrade_chan = None
        return proc

    def _on_upgrade_channel(self) -> None:
        """The new process's channel is readable: "ready" hands over, a close means it failed."""
        assert self.upgrade_chan is not None
        r = upgrade_poll(self.upgrade_chan)
        if r == 0:
            return
        proc = self._upgrade_end()
        assert proc is not None
        if r == 1:
            if not self.stopping:
                self.log.event("info", "upgrade", pid=proc.pid)
                self.begin_stop()
            return
        self.log.event("error", "upgrade_failed", error=_exit_reason(proc.wait()))

    def _check_drained(self) -> None:
        if not self.w.conns and not self.listener.pending:
            self.loop.stop()
            return
        self.loop.call_at(self.loop.time() + 0.02, self._check_drained)

    def _on_drain_timeout(self) -> None:
        self.w.abort_all()
        self.loop.call_soon(self.loop.stop)


def _exit_reason(status: int) -> str:
    """A failed new process's end, as the C twin words it (Popen.returncode)."""
    if status >= 0:
        return "the new process exited with %d" % status
    return "the new process was killed by signal %d" % -status


def supervise(
    cfg: Config,
    socks: list[socket.socket],
    loop_kind: str,
    shared: ProcessShared,
    inherit_chan: socket.socket | None = None,
) -> int:
    """workers > 1: fork one process per socket, forward signals, restart crashed workers;
    the last save of the token state once every worker stopped. SIGUSR2 starts the program
    again with our sockets (upgrade.py); once it is ready the workers drain as on SIGTERM."""
    log = Log(cfg.log.level.value, "off", cfg.log.format.value)
    argv = program_argv()
    upgrade: tuple[subprocess.Popen[bytes], socket.socket] | None = None  # pending
    children: dict[int, int] = {}  # pid -> socket index
    counter = ClientCounter(shared=True)  # client connections of every worker
    health_registry_init(shared=True)  # upstream verdicts of every worker: before the fork
    rr_registry_init(shared=True)  # one round-robin rotation for every worker: same
    stopping = False
    # SIGUSR1: every worker reopens its own access file and writes one line here (empty: ok)
    ack_r, ack_w = os.pipe()
    os.set_blocking(ack_r, False)

    def spawn(i: int) -> None:
        pid = os.fork()
        if pid == 0:
            # signals stay blocked until the worker's loop runs (Worker._on_running)
            reseed()
            for j, s in enumerate(socks):
                if j != i:
                    s.close()
            if i != 0 and shared.admin_sock is not None:
                shared.admin_sock.close()  # worker 0 serves the admin API
                shared.admin_sock = None
            code = 1
            os.close(ack_r)
            try:
                wp = WorkerProcess(cfg, socks[i], loop_kind, True, i, counter, shared)
                wp.reopen_ack = ack_w
                code = wp.run()
            finally:
                os._exit(code)
        children[pid] = i

    sigs = {*HANDLED_SIGNALS, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    for i in range(len(socks)):
        spawn(i)
    log.event("info", "start", listen=cfg.listen.text, workers=cfg.workers, pid=os.getpid())
    if inherit_chan is not None:
        upgrade_ready(inherit_chan)  # the old process stops accepting and drains
    current = cfg

    def begin_stop() -> None:
        """Draining starts (SIGTERM/SIGINT, or the new process of an upgrade is ready): our
        copies of the sockets close (no worker is restarted any more), the workers drain."""
        nonlocal stopping
        stopping = True
        for s in socks:
            s.close()
        if shared.admin_sock is not None:
            shared.admin_sock.close()
            shared.admin_sock = None
        for pid in children:
            _kill(pid, signal.SIGTERM)

    while children:
        info = signal.sigtimedwait(sigs, 0.05 if upgrade is not None else 1.0)
        signo = info.si_signo if info is not None else 0
        if upgrade is not None and select.select([upgrade[1]], [], [], 0)[0]:
            r = upgrade_poll(upgrade[1])
            if r != 0:
                proc, chan = upgrade
                upgrade = None
                chan.close()
                if r == 1 and not stopping:
                    log.event("info", "upgrade", pid=proc.pid)
                    begin_stop()
                elif r == -1:
                    log.event("error", "upgrade_failed", error=_exit_reason(proc.wait()))
        if signo in (signal.SIGTERM, signal.SIGINT):
            name = "SIGINT" if signo == signal.SIGINT else "SIGTERM"
            if not stopping:
                log.event("info", "shutdown", signal=name)
                begin_stop()
            else:  # the workers see a second one too: they stop at once
                log.event("warn", "shutdown", signal=name, immediate=True)
                for pid in children:
                    _kill(pid, signal.SIGTERM)
        elif signo == signal.SIGUSR2:
            if stopping or upgrade is not None:
                why = "stopping" if stopping else "an upgrade is already in progress"
                log.event("warn", "upgrade_failed", error=why)
                continue
            admin = shared.admin_sock
            offer = UpgradeOffer(
                cfg.listen.text,
                [s.fileno() for s in socks],
                cfg.admin_listen.text if admin is not None and cfg.admin_listen else None,
                admin.fileno() if admin is not None else -1,
            )
            try:
                upgrade = upgrade_spawn(argv, offer)
            except UpgradeError as e:
                log.event("error", "upgrade_failed", error=str(e))
        elif signo == signal.SIGHUP and not stopping:
            new = load_for_reload(cfg.path, current, log, quiet=False, started=cfg)
            if new is None:
                continue
            current = new
            log = Log(new.log.level.value, "off", new.log.format.value)
            for pid in children:
                _kill(pid, signal.SIGHUP)
            log.event("info", "reload", path=cfg.path, upstreams=len(new.upstreams))
        elif signo == signal.SIGUSR1 and not stopping:
            _drain(ack_r)  # late answers to an earlier round
            for pid in children:
                _kill(pid, signal.SIGUSR1)
            errors = _collect_acks(ack_r, len(children), REOPEN_ACK_S)
            if errors is None:
                log.event("error", "log_reopen_failed", error="a worker did not answer")
            elif errors:
                log.event("error", "log_reopen_failed", error=errors[0])
            else:
                log.event("info", "log_reopen", path=str(current.log.access))
        for pid in list(children):  # ours only: a new process (upgrade) is its Popen's
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done == 0:
                continue
            i = children.pop(pid)
            if not stopping:
                log.event("error", "worker_restart", worker=i)
                time.sleep(0.1)
                spawn(i)
    if upgrade is not None:
        upgrade[1].close()  # the new process finds the channel closed
    if shared.table is not None:
        final_save(shared.table, cfg.rate_limit.store, log)
    os.close(ack_r)
    os.close(ack_w)
    log.event("info", "stop")
    return EXIT_OK


def _write_ack(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError:
        pass  # the parent is gone: nobody to tell


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _collect_acks(fd: int, n: int, timeout: float) -> list[str] | None:
    """n answer lines from the workers' reopen (empty: ok) within timeout: the errors, or
    None when some worker did not answer (it died; its replacement opens the new file)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while buf.count(b"\n") < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            return None
        buf += chunk
    lines = buf.decode(errors="replace").split("\n")[:n]
    return [line for line in lines if line]


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.help:
        print(HELP)
        return EXIT_OK
    if args.version:
        print(
            "py-proxy %s (httptools %s, Python %d.%d.%d)"
            % (VERSION, httptools.__version__, *sys.version_info[:3])
        )
        return EXIT_OK
    if not args.config:
        stderr_line("usage: " + USAGE)
        return EXIT_CONFIG
    # from before the port listens until the loop's handlers exist, a signal must wait
    # (blocked) rather than take its default action: unblocked by _on_running (supervise:
    # never; it takes them with sigtimedwait) whatever mask we were started with
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    # started by SIGUSR2: inherit the sockets (from a supervising parent, SIGCHLD came
    # blocked too)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    chan = None if args.check else upgrade_channel()
    store: Store | None = None
    try:
        cfg = config_load(args.config)
        if cfg.rate_limit.enabled:
            store = store_open_checked(cfg, readonly=args.check)
    except ConfigError as e:
        stderr_line("config error: %s" % e)
        return EXIT_CONFIG
    if args.check:
        if store is not None:
            store.close()
        return EXIT_OK
    # one descriptor per client and per upstream connection: use what we may (main.c)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n = max(1, cfg.workers)
    socks: list[socket.socket] = []
    admin_sock: socket.socket | None = None

    def fail(msg: str) -> int:
        for s in socks:
            s.close()
        if admin_sock is not None:
            admin_sock.close()
        if store is not None:
            store.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        stderr_line("config error: %s" % msg)
        return EXIT_CONFIG

    try:
        if chan is not None:
            try:
                socks, admin_sock = upgrade_receive(chan, cfg)
            except ConfigError:
                chan.close()
                raise
        else:
            for _ in range(n):
                socks.append(listener_bind(cfg.listen, cfg.path, reuseport=n > 1))
            if cfg.admin_enabled and cfg.admin_listen is not None:
                admin_sock = admin_bind(cfg.admin_listen, cfg.path)
    except (BindError, AdminBindError, ConfigError) as e:
        return fail(str(e))
    table: Table | None = None
    if store is not None:
        rl = cfg.rate_limit
        if n == 1:
            table = table_new(rl.max_clients, rl_default(rl))
        else:
            ctx = multiprocessing.get_context("fork")
            table, _handle, shm = shared_table_new(rl.max_clients, rl_default(rl), ctx)
            # the workers inherit the mapping through fork (a restarted one too): the name is
            # not needed, so nothing is left behind whatever way the tree ends
            shm.unlink()
        try:
            lost = store_load_into(store, table, time.time())
        except StoreError as e:
            return fail("%s:%d: store %s: %s" % (cfg.path, rl.store_line, rl.store, e))
        if lost:  # the proxy starts: the store keeps them, a bigger max_clients loads them
            Log(cfg.log.level.value, "off", cfg.log.format.value).event(
                "warn",
                "store_error",
                reason="%d overrides found no room in the rate-limit table"
                " (rate_limit.max_clients)" % lost,
            )
        if n > 1:
            store.close()  # not across a fork (its writer thread): worker 0 reopens it
            store = None
    shared = ProcessShared(table, store, admin_sock, Counters(n, shared=n > 1))
    if n == 1:
        try:
            worker = WorkerProcess(cfg, socks[0], args.loop, quiet=False, shared=shared)
        except OSError as e:
            store = shared.store
            return fail("log.access: %s: %s" % (cfg.log.access, e.strerror))
        worker.inherit_chan = chan
        return worker.run()
    return supervise(cfg, socks, args.loop, shared, chan)


if __name__ == "__main__":
    main()
