"""A small asyncio HTTP/1.1 client for the scenarios that need per-response detail.

S8 (which upstream answered: the X-Upstream header, per second), S9 (latency and
status of each timed-out request) and S11 (status per request of clients bound to
their own source addresses). It is not a capacity tool: rates stay in the
hundreds to low thousands per second, well inside what one Python loop sustains.
Responses are read by testkit.wire, the same reader the conformance suite uses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from testkit.wire import Cut, ProtocolError, read_response_async


@dataclass
class Result:
    t_start: float  # monotonic seconds
    latency_s: float
    status: int  # 0 = connection error / timeout
    upstream: str  # X-Upstream value, "" if none


class Conn:
    def __init__(
        self, host: str, port: int, timeout: float, local_host: str | None = None
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.local_host = local_host  # source address to bind (e.g. 127.0.0.2)
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.w is not None:
            self.w.close()
            try:
                await self.w.wait_closed()
            except (OSError, asyncio.CancelledError):
                pass
        self.r = self.w = None

    async def get(self, path: str, host_header: str = "bench") -> tuple[int, str]:
        """One GET over this (kept-alive) connection; reconnects if needed."""
        if self.w is None:
            local = (self.local_host, 0) if self.local_host else None
            self.r, self.w = await asyncio.open_connection(
                self.host, self.port, local_addr=local
            )
        assert self.r is not None and self.w is not None
        self.w.write(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode())
        r = await read_response_async(self.r, "GET")
        if r.framing == "close" or (r.get("Connection") or "").lower() == "close":
            await self.close()
        return r.status, r.get("X-Upstream") or ""


async def _one(conn: Conn, path: str, timeout: float) -> Result:
    t0 = time.monotonic()
    try:
        status, up = await asyncio.wait_for(conn.get(path), timeout)
    except (TimeoutError, OSError, EOFError, Cut, ProtocolError):
        await conn.close()
        status, up = 0, ""
    return Result(t0, time.monotonic() - t0, status, up)


async def paced(
    host: str,
    port: int,
    path: str,
    rate: float,
    duration_s: float,
    connections: int,
    timeout: float = 5.0,
    on_tick: Callable[[float], None] | None = None,
    local_host: str | None = None,
) -> list[Result]:
    """About ``rate`` GETs per second for duration_s over ``connections`` keep-alive
    connections (each sends its next request at its own schedule slot or when free),
    from ``local_host`` when given."""
    results: list[Result] = []
    start = time.monotonic()
    end = start + duration_s
    per_conn = rate / max(1, connections)

    async def worker(i: int) -> None:
        conn = Conn(host, port, timeout, local_host)
        n = 0
        try:
            while True:
                slot = start + (n + i / max(1, connections)) / per_conn
                if slot >= end:
                    break
                delay = slot - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                results.append(await _one(conn, path, timeout))
                n += 1
        finally:
            await conn.close()

    async def ticker() -> None:
        while on_tick is not None:
            await asyncio.sleep(0.05)
            on_tick(time.monotonic() - start)

    t = asyncio.ensure_future(ticker())
    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker(i) for i in range(connections))),
            duration_s + timeout + 5,
        )
    finally:
        t.cancel()
    return results


async def burst(
    host: str, port: int, path: str, requests: int, concurrency: int, timeout: float
) -> list[Result]:
    """``requests`` GETs, ``concurrency`` at a time, each on a fresh connection."""
    sem = asyncio.Semaphore(concurrency)

    async def one() -> Result:
        async with sem:
            conn = Conn(host, port, timeout)
            try:
                return await _one(conn, path, timeout)
            finally:
                await conn.close()

    return list(await asyncio.gather(*(one() for _ in range(requests))))
