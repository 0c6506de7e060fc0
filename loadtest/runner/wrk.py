"""wrk driver: closed-loop capacity only (its latency figures are never reported)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}
_BUNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse(text: str) -> dict[str, float | int]:
    """wrk's text output -> rps, transfer_bytes_per_s, requests, errors, non2xx, socket errors."""
    out: dict[str, float | int] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise ValueError("wrk output has no Requests/sec line")
    out["rps"] = float(m.group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)\s*([KMGT]?B)", text)
    out["transfer_bytes_per_s"] = float(m.group(1)) * _BUNITS[m.group(2)] if m else 0.0
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if m:
        out["requests"] = int(m.group(1))
        out["duration_s"] = (
            float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m.group(3)]
        )
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if m:
        c, r, w, t = (int(x) for x in m.groups())
    else:
        c = r = w = t = 0
    out.update(
        {"socket_connect": c, "socket_read": r, "socket_write": w, "socket_timeout": t}
    )
    out["errors"] = c + r + w + t
    return out


def command(
    url: str,
    connections: int,
    duration_s: int,
    headers: Sequence[str] = (),
    threads: int = 1,
    timeout_s: int = 5,
) -> list[str]:
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(max(connections, threads)),
        "-d",
        f"{duration_s}s",
        "--timeout",
        f"{timeout_s}s",
    ]
    for h in headers:
        cmd += ["-H", h]
    return cmd + [url]


def run(
    url: str,
    connections: int,
    duration_s: int,
    headers: Sequence[str] = (),
    threads: int = 1,
) -> tuple[dict[str, float | int], str]:
    """Run wrk to completion (bounded: duration + 15 s); returns (parsed, raw text)."""
    cmd = command(url, connections, duration_s, headers, threads)
    p = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=duration_s + 15
    )
    text = p.stdout + p.stderr
    if p.returncode != 0 and "Requests/sec" not in text:
        raise RuntimeError(f"wrk exited {p.returncode}: {text.strip()[-300:]}")
    return parse(text), text
