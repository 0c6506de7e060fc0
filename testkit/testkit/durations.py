"""The config's durations and sizes, parsed by py-proxy's own config module: a test that
computes a deadline from a config value reads it exactly as both twins do (the C twin's
parser is held to the same grammar by the shared config case files)."""

from __future__ import annotations

from typing import Any

from pyproxy.config import parse_duration, parse_size


def duration_ms(value: Any) -> int:
    """'250ms', '2s', '1m', '1h' or an integer of milliseconds -> milliseconds."""
    if isinstance(value, bool):
        raise TypeError(f"bad duration {value!r}")
    return value if isinstance(value, int) else parse_duration(str(value))


def size_bytes(value: Any) -> int:
    """16384, '16k', '10m', '1g' -> bytes."""
    if isinstance(value, bool):
        raise TypeError(f"bad size {value!r}")
    return value if isinstance(value, int) else parse_size(str(value))
