"""util: small helpers shared by the modules (time formatting, request ids, JSON strings).
Twin: c-proxy/src/util.c (container_of and the shared config refcount have no Python need:
the runtime's references do that job).
"""

from __future__ import annotations

import json
import os
import random
import time

VERSION = "0.1.0"

_ts_sec = -1  # second of the cached prefix
_ts_prefix = ""  # "YYYY-MM-DDTHH:MM:SS" of _ts_sec


def format_ts(wall: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-22T02:28:54.123Z (util_format_ts)."""
    global _ts_sec, _ts_prefix
    sec = int(wall)
    ms = min(999, max(0, int((wall - sec) * 1000.0)))
    if sec != _ts_sec:
        _ts_sec = sec
        _ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return "%s.%03dZ" % (_ts_prefix, ms)


_rng = random.Random()  # ids need to be unique, not secret (the C twin uses xoshiro256**)


def new_request_id() -> bytes:
    """32 lowercase hex characters from 128 random bits (util_request_id)."""
    return b"%032x" % _rng.getrandbits(128)


def reseed() -> None:
    """A forked worker must not repeat its siblings' ids."""
    _rng.seed(os.urandom(32))


def text(b: bytes) -> str:
    """Wire bytes as text for logs: UTF-8 when valid, else every byte as Latin-1 (as the C
    twin widens invalid UTF-8 before handing it to jansson)."""
    try:
        return b.decode()
    except UnicodeDecodeError:
        return b.decode("latin-1")


def json_string(s: str) -> str:
    """A compact JSON string literal, non-ASCII kept as UTF-8 (jansson JSON_COMPACT)."""
    return json.dumps(s, ensure_ascii=False)
