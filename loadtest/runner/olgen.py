"""olgen driver: open-loop load with coordinated-omission-free latency (loadtest/olgen)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "loadtest" / "olgen" / "build" / "olgen"


def available() -> bool:
    return BINARY.exists()


def command(
    url: str,
    rate: float,
    duration_s: float,
    *,
    warmup_s: float = 0,
    connections: int = 16,
    headers: Sequence[str] = (),
    close: bool = False,
    timeout_ms: int | None = None,
    samples: str | Path | None = None,
) -> list[str]:
    cmd = [
        str(BINARY),
        "--url",
        url,
        "--rate",
        str(int(rate)),
        "--duration",
        _num(duration_s),
        "--connections",
        str(connections),
    ]
    if warmup_s:
        cmd += ["--warmup", _num(warmup_s)]
    for h in headers:
        cmd += ["--header", h]
    if close:
        cmd.append("--close")
    if timeout_ms is not None:
        cmd += ["--timeout", str(timeout_ms)]
    if samples is not None:
        cmd += ["--samples", str(samples)]
    return cmd


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def parse(text: str) -> dict[str, Any]:
    """olgen prints one JSON object on stdout (pretty-printed or on one line)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        start = text.find("{")
        if start < 0:
            raise ValueError(f"olgen printed no JSON: {text[:200]!r}") from None
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
        return obj


def run(url: str, rate: float, duration_s: float, **kw: Any) -> dict[str, Any]:
    cmd = command(url, rate, duration_s, **kw)
    bound = duration_s + float(kw.get("warmup_s") or 0) + 20
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=bound)
    if p.returncode != 0:
        raise RuntimeError(
            f"olgen exited {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
        )
    return parse(p.stdout)


def gate(res: dict[str, Any], rate: float, min_fraction: float = 0.95) -> str | None:
    """Why an olgen measurement is invalid, or None."""
    reasons = []
    if res.get("offered_rate_achieved") is False:
        reasons.append("generator saturated (olgen offered_rate_achieved=false)")
    achieved = float(res.get("achieved_rate") or 0)
    if rate > 0 and achieved < min_fraction * rate:
        reasons.append(f"offered rate not achieved ({achieved:.0f}/s of {rate:.0f}/s)")
    for r in res.get("invalid_reasons") or []:
        reasons.append(f"olgen: {r}")
    errs = int(res.get("errors") or 0) + int(res.get("timeouts") or 0)
    if errs:
        reasons.append(f"{errs} errors/timeouts")
    st = res.get("status") or {}
    bad = sum(int(v) for k, v in st.items() if not str(k).startswith("2"))
    if bad:
        reasons.append(f"{bad} non-2xx responses")
    return "; ".join(reasons) or None
