"""A tiny TCP delay proxy: S8's "slow upstream".

    python -m loadtest.runner.delayproxy --listen 127.0.0.1:P --to 127.0.0.1:Q --delay-ms 20

Bytes from the client are forwarded to the real upstream after ``delay-ms`` (so every
request on a kept-alive connection is answered that much later); responses flow back at
once. Prints ``ready`` once listening; SIGTERM exits.
"""

from __future__ import annotations

import argparse
import asyncio
import signal


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, delay: float) -> None:
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            if delay:
                await asyncio.sleep(delay)
            w.write(data)
            await w.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            w.close()
        except OSError:
            pass


async def main(listen: str, to: str, delay_ms: float) -> None:
    lh, lp = listen.rsplit(":", 1)
    th, tp = to.rsplit(":", 1)
    delay = delay_ms / 1000.0

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(th, int(tp))
        except OSError:
            cw.close()
            return
        await asyncio.gather(_pipe(cr, uw, delay), _pipe(ur, cw, 0))

    server = await asyncio.start_server(handle, lh, int(lp), reuse_address=True)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--delay-ms", type=float, default=20)
    a = ap.parse_args()
    asyncio.run(main(a.listen, a.to, a.delay_ms))
