"""Hostile slow clients, with asyncio: slowloris, slow POST and slow read (issue 11).

    slowloris   a request head trickled one byte per interval, never finished
    slowpost    a complete head announcing a large body, the body trickled one byte per interval
    slowread    a request for a huge response, read `read_chunk` bytes per interval with a small
                SO_RCVBUF (the proxy's writes stall again and again, but never for long)

Each attacker connection runs until the proxy ends it (its outcome: the status line it got,
if any, and how the connection ended) or until the attack is stopped. Used by
conformance/test_slow_clients.py and by hand against a running proxy:

    .venv/bin/python conformance/slowclients.py attack --port 8080 --each 333 --seconds 30
    .venv/bin/python conformance/slowclients.py bench            # the docs/conformance.md figures

`attack` prints one JSON object: connections opened and outcomes per kind. `bench` starts the
test upstream and each twin with the config below, measures normal requests with and without
1,000 attackers, and prints the markdown of the "Slow clients" section of docs/conformance.md
(`--write` replaces that section in place).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("slowloris", "slowpost", "slowread")

SLOWLORIS_HEAD = b"GET / HTTP/1.1\r\nHost: attack\r\n"
SLOWLORIS_DRIP = b"X-Slow: a\r\n"  # cycled, one byte at a time: the head never ends
SLOWPOST_HEAD = (
    b"POST /echo HTTP/1.1\r\nHost: attack\r\nContent-Length: 1000000000\r\n\r\n"
)
SLOWREAD_HEAD = b"GET /bytes/1000000000 HTTP/1.1\r\nHost: attack\r\n\r\n"
SLOWREAD_RCVBUF = 4096  # the kernel doubles it; small: the proxy's sends stall often


def raise_nofile(want: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit towards `want` (up to the hard limit);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fd_count(pids: list[int]) -> int:
    """Open descriptors of these processes (/proc/PID/fd)."""
    n = 0
    for p in pids:
        with contextlib.suppress(OSError):
            n += len(os.listdir(f"/proc/{p}/fd"))
    return n


@dataclass
class Outcome:
    kind: str
    status: int | None = None  # status code of the response the proxy sent, if any
    ended: str = (
        "open"  # eof | reset | open (still open when the attack stopped) | refused
    )
    sent: int = 0  # bytes the attacker sent
    received: int = 0  # bytes it received

    def label(self) -> str:
        """'408+eof', '200+reset', 'open', ... : what the attacker saw, for counting."""
        if self.ended in ("open", "refused"):
            return self.ended
        return f"{self.status if self.status is not None else 'none'}+{self.ended}"


@dataclass
class Attack:
    """One attack: `each` connections of every kind in `kinds` against host:port."""

    host: str
    port: int
    each: int
    interval: float = 0.2  # seconds between two trickled bytes / two reads
    read_chunk: int = 64  # slowread: bytes taken per interval
    kinds: tuple[str, ...] = KINDS
    reconnect: bool = False  # bench: an ended attacker connects again (steady pressure)
    outcomes: list[Outcome] = field(default_factory=list)
    opened: Counter[str] = field(default_factory=Counter)
    live: Counter[str] = field(
        default_factory=Counter
    )  # connections open now, per kind
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, ready: asyncio.Event | None = None) -> list[Outcome]:
        """Open every connection (in batches), then wait until each has ended or stop is
        set. `ready` is set once all of them have been opened."""
        tasks = []
        for i in range(self.each):
            for kind in self.kinds:
                tasks.append(asyncio.create_task(self._one(kind)))
            if i % 50 == 49:
                await asyncio.sleep(0.01)  # let the proxy accept a batch
        while sum(self.opened.values()) < len(tasks) and not all(
            t.done() for t in tasks
        ):
            await asyncio.sleep(0.01)
        if ready is not None:
            ready.set()
        await asyncio.gather(*tasks)
        return self.outcomes

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {k: {} for k in self.kinds}
        for o in self.outcomes:
            d = out[o.kind]
            d[o.label()] = d.get(o.label(), 0) + 1
        return out

    async def _one(self, kind: str) -> None:
        while True:
            o = await self._connection(kind)
            self.outcomes.append(o)
            if not self.reconnect or self.stop.is_set() or o.ended == "open":
                return

    async def _connection(self, kind: str) -> Outcome:
        o = Outcome(kind)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if kind == "slowread":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOWREAD_RCVBUF)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        except OSError:
            sock.close()
            o.ended = "refused"
            self.opened[kind] += 1
            return o
        self.opened[kind] += 1
        self.live[kind] += 1
        try:
            if kind == "slowread":
                await self._slowread(o, sock, reader, writer)
            else:
                await self._trickle(o, reader, writer)
        finally:
            self.live[kind] -= 1
            writer.transport.abort()
        return o

    async def _trickle(
        self, o: Outcome, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """slowloris / slowpost: a head, then one byte per interval until the proxy answers
        or closes."""
        if o.kind == "slowloris":
            writer.write(SLOWLORIS_HEAD)
            o.sent += len(SLOWLORIS_HEAD)
            drip = itertools.cycle(SLOWLORIS_DRIP)
        else:
            writer.write(SLOWPOST_HEAD)
            o.sent += len(SLOWPOST_HEAD)
            drip = itertools.cycle(b"a")
        got = bytearray()
        read = asyncio.ensure_future(reader.read(65536))
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {read, stopped},
                    timeout=self.interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if read in done:
                    break
                if stopped in done:
                    return  # still open: the proxy did not end it
                try:
                    writer.write(bytes([next(drip)]))
                    o.sent += 1
                except (ConnectionError, RuntimeError):
                    pass  # the proxy closed: the read sees it
            await self._finish(o, got, read, reader)
        finally:
            stopped.cancel()
            if not read.done():
                read.cancel()

    async def _finish(
        self,
        o: Outcome,
        got: bytearray,
        read: asyncio.Future[bytes],
        reader: asyncio.StreamReader,
    ) -> None:
        """Read what the proxy sends until it closes (a response, then EOF or a reset)."""
        while True:
            try:
                data = await read
            except ConnectionError:
                o.ended = "reset"
                break
            if not data:
                o.ended = "eof"
                break
            got += data
            o.received += len(data)
            if len(got) > 65536:
                del got[4096:]  # only the status line matters
            read = asyncio.ensure_future(reader.read(65536))
        o.status = status_of(bytes(got))

    async def _slowread(
        self,
        o: Outcome,
        sock: socket.socket,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """A request for a huge response, taken `read_chunk` bytes per interval. At this
        pace the bytes queued before a close take long to read: the TCP state says at once
        that the proxy ended the connection (a FIN or a reset arrived)."""
        writer.write(SLOWREAD_HEAD)
        o.sent += len(SLOWREAD_HEAD)
        head = bytearray()
        while not self.stop.is_set():
            state = tcp_state(sock)
            if state in (TCP_CLOSE, TCP_CLOSE_WAIT):
                o.ended = "reset" if state == TCP_CLOSE else "eof"
                break
            try:
                data = await reader.read(self.read_chunk)
            except ConnectionError:
                o.ended = "reset"
                break
            if not data:
                o.ended = "eof"
                break
            o.received += len(data)
            if len(head) < 64:
                head += data
            try:
                await asyncio.wait_for(self.stop.wait(), self.interval)
            except TimeoutError:
                pass
        o.status = status_of(bytes(head))


TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8  # tcp_info.tcpi_state (linux/tcp_states.h)


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of sock (TCP_INFO); TCP_CLOSE once it is closed here."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return TCP_CLOSE


def status_of(data: bytes) -> int | None:
    """The status code of the first status line in data, if there is one."""
    if data.startswith(b"HTTP/1.") and len(data) >= 12 and data[9:12].isdigit():
        return int(data[9:12])
    return None


def run_attack(attack: Attack, seconds: float) -> dict[str, Any]:
    """Run an attack for at most `seconds` (then stop it); the counts per kind."""

    async def main() -> None:
        attack.stop = asyncio.Event()
        task = asyncio.create_task(attack.run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), seconds)
        attack.stop.set()
        await task

    asyncio.run(main())
    return {"opened": dict(attack.opened), "outcomes": attack.counts()}


# --------------------------------------------------------------------------- bench

# The config of the bench and of conformance/test_slow_clients.py (their differences noted
# there): short timeouts keep the attack bounded in time.
SLOW_TIMEOUTS = {
    # connect and queue: generous, as a loop busy with 333 slow readers filling their
    # socket buffers at the start may run a timer late (a connect that succeeded meanwhile
    # would count as timed out); this bench is about the client-side timeouts
    "connect": "10s",
    "queue": "10s",
    "header": "5s",
    "idle": "5s",
    "read": "30s",
    "write": "30s",
    "total": "60s",
    "min_rate": "1k",
    "min_rate_window": "1s",
}
SLOW_LIMITS = {
    # every slow POST and slow read holds an upstream connection until it is ended
    "upstream_max_connections": 4096,
    "upstream_idle_connections": 4,
}


def _percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100.0 * (len(s) - 1)))]


def normal_requests(port: int, n: int, until: Any = None) -> tuple[list[float], int]:
    """GET /bytes/1024, each on a fresh connection: n of them, or (until given) as long as
    until() is false; (latencies in ms, errors)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness import pattern

    lat: list[float] = []
    errors = 0
    req = b"GET /bytes/1024 HTTP/1.1\r\nHost: normal\r\nConnection: close\r\n\r\n"
    want = pattern(0, 1024)
    while (len(lat) < n) if until is None else not until():
        t0 = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(req)
                buf = bytearray()
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    buf += d
            ok = buf.startswith(b"HTTP/1.1 200 ") and buf.endswith(want)
        except OSError:
            ok = False
        lat.append((time.perf_counter() - t0) * 1000.0)
        errors += not ok
    return lat, errors


def _attack_process(port: int, each: int, seconds: float) -> Any:
    import subprocess

    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "attack",
            "--port",
            str(port),
            "--each",
            str(each),
            "--seconds",
            str(seconds),
        ],
        stdout=subprocess.PIPE,
    )


def _note(impl: str, what: str) -> None:
    print(f"slowclients bench {impl}: {what}", file=sys.stderr, flush=True)


def bench_one(impl: str, workdir: Path, each: int, n: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness import (
        ProxyFactory,
        UpstreamFactory,
        process_tree,
        rss_kb_of,
        wait_until,
    )

    ups = UpstreamFactory(workdir)
    proxies = ProxyFactory(impl, workdir)
    try:
        up = ups(["u1"])
        p = proxies(
            up,
            timeouts=SLOW_TIMEOUTS,
            limits=SLOW_LIMITS,
            log={"access": "off", "level": "warn"},
        )
        tree = process_tree(p.proc.pid)
        normal_requests(p.port, 200)  # warm-up
        fds0, rss0 = fd_count(tree), rss_kb_of(p.proc.pid)
        _note(impl, f"baseline: {fds0} fds, {rss0} kB; {n} requests")
        base_lat, base_err = normal_requests(p.port, n)
        atk = _attack_process(p.port, each, 60)
        _note(impl, "attack started")
        peak = [fds0, rss0]

        def over() -> bool:
            peak[0] = max(peak[0], fd_count(tree))
            peak[1] = max(peak[1], rss_kb_of(p.proc.pid))
            return atk.poll() is not None

        # normal requests from the attack's start until its last connection was ended
        att_lat, att_err = normal_requests(p.port, 0, until=over)
        fds_peak, rss_peak = peak
        out, _ = atk.communicate(timeout=60)
        counts = json.loads(out)
        _note(impl, f"attack over: {len(att_lat)} normal requests meanwhile")
        wait_until(lambda: fd_count(tree) <= fds0 + 4, 60)
        time.sleep(1.0)
        fds1, rss1 = fd_count(tree), rss_kb_of(p.proc.pid)
    finally:
        proxies.close()
        ups.close()
    return {
        "impl": impl,
        "base": (_percentile(base_lat, 50), _percentile(base_lat, 99), base_err),
        "attack": (_percentile(att_lat, 50), _percentile(att_lat, 99), att_err),
        "fds": (fds0, fds_peak, fds1),
        "rss": (rss0, rss_peak, rss1),
        "counts": counts,
        "n": n,
        "n_attack": len(att_lat),
    }


BEGIN = "## Slow clients"


def render_bench(results: list[dict[str, Any]], each: int, cmd: str) -> str:
    t = SLOW_TIMEOUTS
    header = (
        "| twin | normal p50 / p99 without attackers | with attackers | normal errors "
        "| slowloris | slow POST | slow read | fds before / peak / after "
        "| RSS MB before / peak / after |"
    )
    lines = [
        BEGIN,
        "",
        f"Generated by `{cmd}` (conformance/slowclients.py); figures from this machine,",
        "one run, both twins with `workers: 1`.",
        "",
        f"Attackers: {each} slowloris (head trickled one byte per 200 ms), {each} slow POST",
        "(Content-Length 1 GB, body trickled one byte per 200 ms) and",
        f"{each} slow read (a 1 GB response read 64 bytes per 200 ms, SO_RCVBUF",
        f"{SLOWREAD_RCVBUF}); all opened at once, each until the proxy ends it (at most 60 s).",
        "Config: timeouts " + ", ".join(f"{k} {v}" for k, v in t.items()) + ";",
        "limits.upstream_max_connections 4096 (a slow POST or slow read holds an upstream",
        "connection until it is ended). Normal traffic: one client, GET /bytes/1024 on a",
        "fresh connection each, one after the other: a fixed number without attackers, and",
        "from the attack's start until its last connection was ended (the p99 with",
        "attackers covers the whole attack, its first burst included).",
        "",
        header,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        b, a = r["base"], r["attack"]
        oc = r["counts"]["outcomes"]

        def fmt(kind: str, oc: dict[str, Any] = oc) -> str:
            return ", ".join(f"{v}x {k}" for k, v in sorted(oc.get(kind, {}).items()))

        f0, f1, f2 = r["fds"]
        m0, m1, m2 = (x / 1024.0 for x in r["rss"])
        lines.append(
            f"| {r['impl']}-proxy | {b[0]:.2f} / {b[1]:.2f} ms | {a[0]:.2f} / {a[1]:.2f} ms "
            f"| {b[2]} of {r['n']} / {a[2]} of {r['n_attack']} | {fmt('slowloris')} "
            f"| {fmt('slowpost')} "
            f"| {fmt('slowread')} | {f0} / {f1} / {f2} | {m0:.1f} / {m1:.1f} / {m2:.1f} |"
        )
    lines += [
        "",
        "Outcomes are what the attackers saw (status line + how the connection ended; `open`:",
        "still open after 60 s, i.e. not ended by the proxy). Without",
        "`min_rate`, a slow POST is only ended by `total` (504) and a slow read by `total`",
        '(C twin) or `write` (py twin; see docs/behaviour.md "Slow clients").',
        "",
    ]
    return "\n".join(lines)


def write_section(md: Path, text: str) -> None:
    """Replace the section (up to the next "## " heading; other sections after it stay),
    or append it."""
    old = md.read_text(encoding="utf-8")
    i = old.find("\n" + BEGIN + "\n")
    if i < 0:
        md.write_text(
            old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n", encoding="utf-8"
        )
        return
    j = old.find("\n## ", i + 1)
    tail = "" if j < 0 else "\n" + old[j + 1 :]
    md.write_text(
        old[: i + 1].rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n" + tail,
        encoding="utf-8",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser(
        "attack", help="attack a running proxy, print the outcomes (JSON)"
    )
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--each", type=int, default=333, help="connections of each kind")
    a.add_argument(
        "--seconds", type=float, default=30.0, help="stop after (or on SIGTERM)"
    )
    a.add_argument("--interval", type=float, default=0.2)
    a.add_argument("--kinds", default=",".join(KINDS))
    a.add_argument(
        "--reconnect", action="store_true", help="an ended attacker connects again"
    )
    b = sub.add_parser(
        "bench", help="normal-request p99 with and without attackers, both twins"
    )
    b.add_argument("--each", type=int, default=333)
    b.add_argument("--requests", type=int, default=2000)
    b.add_argument("--impls", default="c,py")
    b.add_argument("--write", action="store_true", help="update docs/conformance.md")
    args = ap.parse_args(argv)
    raise_nofile(65536)
    if args.cmd == "attack":
        atk = Attack(
            args.host,
            args.port,
            args.each,
            interval=args.interval,
            kinds=tuple(args.kinds.split(",")),
            reconnect=args.reconnect,
        )

        async def go() -> None:
            atk.stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, atk.stop.set)
            loop.call_later(args.seconds, atk.stop.set)
            await atk.run()

        asyncio.run(go())
        print(json.dumps({"opened": dict(atk.opened), "outcomes": atk.counts()}))
        return 0
    import tempfile

    results = []
    for impl in args.impls.split(","):
        with tempfile.TemporaryDirectory(prefix="slowclients-") as d:
            results.append(bench_one(impl, Path(d), args.each, args.requests))
    text = render_bench(results, args.each, "make slow-clients")
    print(text)
    if args.write:
        write_section(
            Path(__file__).resolve().parents[1] / "docs" / "conformance.md", text
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
