"""main: command line, workers, signals, reload, shutdown. Twin: c-proxy/src/main.c.

    py-proxy --config FILE [--check] [--version] [--loop asyncio|uvloop]

Exit 0 after a graceful stop or a valid --check; 2 with one `config error: FILE:LINE: ...`
line for a bad config or a listen address that cannot be bound.

workers: 1 runs everything in this process. workers: N > 1 binds N SO_REUSEPORT sockets here,
forks N worker processes (one event loop each; the C twin uses threads) and supervises them:
signals are forwarded, a worker that dies unexpectedly is restarted, the parent exits 0 once
every worker has stopped. The parent validates a reload once and logs it; workers reload quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time

import httptools

from pyproxy.config import Config, ConfigError, config_load
from pyproxy.health import health_registry_init
from pyproxy.listener import BindError, ClientCounter, Listener, Runtime, listener_bind
from pyproxy.log import Log, log_open, stderr_line
from pyproxy.util import VERSION, reseed

EXIT_OK = 0
EXIT_CONFIG = 2
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="py-proxy", description="twinproxy reverse proxy (Python)")
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


def load_for_reload(path: str, old: Config, log: Log, quiet: bool) -> Config | None:
    """Load `path` for a reload; log reload_failed (and the restart warning) unless quiet."""
    try:
        new = config_load(path)
    except ConfigError as e:
        if not quiet:
            log.event("error", "reload_failed", error=str(e))
        return None
    if _needs_restart(old, new) and not quiet:
        log.event("warn", "reload", warning=RESTART_WARNING)
    return new


class Worker:
    """One event loop serving one listening socket (worker_run). In a forked worker
    (`quiet`), the parent logs start/stop/shutdown/reload once for the whole process tree."""

    def __init__(
        self,
        cfg: Config,
        sock: socket.socket,
        loop_kind: str,
        quiet: bool,
        wid: int = 0,
        counter: ClientCounter | None = None,
    ) -> None:
        self.path = cfg.path
        self.cfg = cfg  # current config (a reload replaces it)
        self.loop = new_loop(loop_kind)
        asyncio.set_event_loop(self.loop)
        self.log = log_open(cfg.log, self.loop)
        self.log.atomic_lines = cfg.workers > 1
        self.quiet = quiet
        self.rt = Runtime(self.loop, cfg, self.log, wid, counter)
        self.listener = Listener(self.rt, sock)
        self.rt.listener = self.listener
        self.stopping = False

    def run(self) -> int:
        loop = self.loop
        loop.add_signal_handler(signal.SIGTERM, self.on_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.on_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.on_reload)
        self.listener.start()
        loop.call_soon(self._on_running)
        try:
            loop.run_forever()
        finally:
            self.log.flush()
            if not self.quiet:
                self.log.event("info", "stop")
            self.log.close()
            loop.close()
        return EXIT_OK

    def _on_running(self) -> None:
        """The loop runs: its signal handling is live, so the signals run() blocked before
        binding (a SIGHUP right after the port opened must not be lost) are let in now."""
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        if not self.quiet:
            self.log.event(
                "info",
                "start",
                listen=self.cfg.listen.text,
                workers=self.cfg.workers,
                pid=os.getpid(),
            )

    def on_reload(self) -> None:
        if self.stopping:
            return
        new = load_for_reload(self.path, self.cfg, self.log, self.quiet)
        if new is None:
            return
        try:
            log = log_open(new.log, self.loop)
        except OSError as e:
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
        self.rt.log = log
        self.cfg = new
        self.rt.take_config(new)
        if not self.quiet:
            log.event("info", "reload", path=self.path, upstreams=len(new.upstreams))

    def on_stop(self, signame: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        if not self.quiet:
            self.log.event("info", "shutdown", signal=signame)
        self.rt.begin_drain()
        grace = self.rt.uset.cfg.timeouts.shutdown_ms / 1000.0
        self.loop.call_at(self.loop.time() + grace, self._on_drain_timeout)
        self._check_drained()

    def _check_drained(self) -> None:
        if not self.rt.clients:
            self.loop.stop()
            return
        self.loop.call_at(self.loop.time() + 0.02, self._check_drained)

    def _on_drain_timeout(self) -> None:
        self.rt.abort_all()
        self.loop.call_soon(self.loop.stop)


def supervise(cfg: Config, socks: list[socket.socket], loop_kind: str) -> int:
    """workers > 1: fork one process per socket, forward signals, restart crashed workers."""
    log = Log(cfg.log.level.value, "off", cfg.log.format.value)
    children: dict[int, int] = {}  # pid -> socket index
    counter = ClientCounter(shared=True)  # client connections of every worker
    health_registry_init(shared=True)  # upstream verdicts of every worker: before the fork
    stopping = False

    def spawn(i: int) -> None:
        pid = os.fork()
        if pid == 0:
            # signals stay blocked until the worker's loop runs (Worker._on_running)
            reseed()
            for j, s in enumerate(socks):
                if j != i:
                    s.close()
            code = 1
            try:
                code = Worker(cfg, socks[i], loop_kind, True, i, counter).run()
            finally:
                os._exit(code)
        children[pid] = i

    sigs = {*HANDLED_SIGNALS, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    for i in range(len(socks)):
        spawn(i)
    log.event("info", "start", listen=cfg.listen.text, workers=cfg.workers, pid=os.getpid())
    current = cfg
    while children:
        info = signal.sigtimedwait(sigs, 1.0)
        signo = info.si_signo if info is not None else 0
        if signo in (signal.SIGTERM, signal.SIGINT):
            if not stopping:
                stopping = True
                name = "SIGINT" if signo == signal.SIGINT else "SIGTERM"
                log.event("info", "shutdown", signal=name)
            for pid in children:
                _kill(pid, signal.SIGTERM)
        elif signo == signal.SIGHUP and not stopping:
            new = load_for_reload(cfg.path, current, log, quiet=False)
            if new is None:
                continue
            current = new
            log = Log(new.log.level.value, "off", new.log.format.value)
            for pid in children:
                _kill(pid, signal.SIGHUP)
            log.event("info", "reload", path=cfg.path, upstreams=len(new.upstreams))
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            i = children.pop(pid, -1)
            if i >= 0 and not stopping:
                log.event("error", "worker_restart", worker=i)
                time.sleep(0.1)
                spawn(i)
    log.event("info", "stop")
    return EXIT_OK


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.version:
        print(
            "py-proxy %s (httptools %s, Python %d.%d.%d)"
            % (VERSION, httptools.__version__, *sys.version_info[:3])
        )
        return EXIT_OK
    if not args.config:
        stderr_line("usage: py-proxy --config FILE [--check] [--version] [--loop asyncio|uvloop]")
        return EXIT_CONFIG
    try:
        cfg = config_load(args.config)
    except ConfigError as e:
        stderr_line("config error: %s" % e)
        return EXIT_CONFIG
    if args.check:
        return EXIT_OK
    # from the moment the port listens, a signal must reach a handler, not a default action
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    n = max(1, cfg.workers)
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(listener_bind(cfg.listen, cfg.path, reuseport=n > 1))
    except BindError as e:
        for s in socks:
            s.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        stderr_line("config error: %s" % e)
        return EXIT_CONFIG
    if n == 1:
        try:
            worker = Worker(cfg, socks[0], args.loop, quiet=False)
        except OSError as e:
            socks[0].close()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            stderr_line("config error: log.access: %s: %s" % (cfg.log.access, e.strerror))
            return EXIT_CONFIG
        return worker.run()
    return supervise(cfg, socks, args.loop)


if __name__ == "__main__":
    main()
