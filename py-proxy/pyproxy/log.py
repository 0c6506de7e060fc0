"""log: access log (one line per request) and event log (stderr). Twin: c-proxy/src/log.c.

Formats are fixed by behaviour.md "Logs": JSON objects with keys in a fixed order, or the same
fields as `key=value` text. Access lines are buffered and written once per event-loop pass
(or when 64 KiB are pending); events are written at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from pyproxy.util import format_ts, json_string

LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}
FLUSH_BYTES = 32 * 1024  # write the access buffer once this much is pending (LOG_BUF_FLUSH)
PIPE_BUF = 4096  # writes up to this size are atomic on a pipe


def _text_value(v: Any) -> str:
    if isinstance(v, str):
        if v == "" or " " in v or '"' in v:
            return json_string(v) if v else ""
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "%.3f" % v
    return str(v)


def _json_value(v: Any) -> str:
    if isinstance(v, float):
        return "%.3f" % v
    if isinstance(v, str):
        return json_string(v)
    return json.dumps(v, separators=(",", ":"))


def format_fields(fmt: str, fields: list[tuple[str, Any]]) -> str:
    """One record without newline: JSON object (keys in order) or `key=value` text."""
    if fmt == "text":
        return " ".join("%s=%s" % (k, _text_value(v)) for k, v in fields)
    return "{" + ",".join('"%s":%s' % (k, _json_value(v)) for k, v in fields) + "}"


def _dest_name(v: object) -> str:
    # config enums or plain strings: "json", "info", ...
    name = getattr(v, "name", None)
    return (name if isinstance(name, str) else str(v)).lower()


class Log:
    """Owner of the access destination fd (unless stdout/stderr) and of the access buffer."""

    def __init__(
        self,
        level: str = "info",
        access: str = "stdout",
        fmt: str = "json",
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.level = LEVELS.get(_dest_name(level), 1)  # minimum event level written
        self.fmt = "text" if _dest_name(fmt) == "text" else "json"  # json | text
        self.access_path = access  # stdout | stderr | off | a path
        self.loop = loop  # for the once-per-pass flush; None: write at once
        self.buf: list[str] = []  # access lines not yet written
        self.buf_bytes = 0  # their total length
        self.flush_scheduled = False  # a loop.call_soon(flush) is pending
        self.fd = -1  # access destination, -1 when off
        self.own_fd = False  # fd was opened here (a file path)
        self.err_fd = 2  # event log
        self.atomic_lines = False  # several processes share the sink: write whole lines only
        self._open_access()

    def _open_access(self) -> None:
        a = self.access_path
        if a == "off":
            self.fd = -1
        elif a == "stdout":
            self.fd = 1
        elif a == "stderr":
            self.fd = 2
        else:
            self.fd = os.open(a, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.own_fd = True

    @property
    def access_enabled(self) -> bool:
        return self.fd >= 0

    def access(
        self,
        ts: float,
        client: str,
        method: str,
        path: str,
        status: int,
        upstream: str,
        attempts: int,
        bytes_in: int,
        bytes_out: int,
        duration_ms: float,
        request_id: str,
        worker: int = 0,
    ) -> None:
        """Queue one access line (behaviour.md field order); worker: the worker that served
        it (0 .. workers-1)."""
        if self.fd < 0:
            return
        if self.fmt == "json":
            line = (
                '{"ts":"%s","client":%s,"method":%s,"path":%s,"status":%d,"upstream":%s,'
                '"attempts":%d,"bytes_in":%d,"bytes_out":%d,"duration_ms":%.3f,"request_id":%s,'
                '"worker":%d}\n'
                % (
                    format_ts(ts),
                    json_string(client),
                    json_string(method),
                    json_string(path),
                    status,
                    json_string(upstream),
                    attempts,
                    bytes_in,
                    bytes_out,
                    duration_ms,
                    json_string(request_id),
                    worker,
                )
            )
        else:
            line = (
                format_fields(
                    "text",
                    [
                        ("ts", format_ts(ts)),
                        ("client", client),
                        ("method", method),
                        ("path", path),
                        ("status", status),
                        ("upstream", upstream),
                        ("attempts", attempts),
                        ("bytes_in", bytes_in),
                        ("bytes_out", bytes_out),
                        ("duration_ms", float(duration_ms)),
                        ("request_id", request_id),
                        ("worker", worker),
                    ],
                )
                + "\n"
            )
        self.buf.append(line)
        self.buf_bytes += len(line)
        if self.buf_bytes >= FLUSH_BYTES or self.loop is None:
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every queued access line (blocking on a full pipe, as the C twin)."""
        self.flush_scheduled = False
        if not self.buf:
            return
        data = "".join(self.buf).encode("utf-8", "surrogateescape")
        self.buf.clear()
        self.buf_bytes = 0
        if self.fd < 0:
            return
        if self.atomic_lines and len(data) > PIPE_BUF:
            # a pipe write above PIPE_BUF may interleave with another worker's
            start = 0
            while start < len(data):
                end = data.rfind(b"\n", start, start + PIPE_BUF) + 1
                if end <= start:
                    end = data.find(b"\n", start) + 1 or len(data)
                _write_all(self.fd, data[start:end])
                start = end
        else:
            _write_all(self.fd, data)

    def enabled(self, level: str) -> bool:
        """Would an event at `level` be written? (log_enabled)"""
        return LEVELS[level] >= self.level

    def event(self, level: str, event: str, **fields: Any) -> None:
        """One event line on stderr: ts, level, event, then `fields` in order."""
        if LEVELS[level] < self.level:
            return
        ts = format_ts(time.time())
        if self.fmt == "text":
            rest = format_fields("text", list(fields.items()))
            line = "%s %s %s%s\n" % (ts, level, event, " " + rest if rest else "")
        else:
            items: list[tuple[str, Any]] = [("ts", ts), ("level", level), ("event", event)]
            items.extend(fields.items())
            line = format_fields("json", items) + "\n"
        _write_all(self.err_fd, line.encode("utf-8", "surrogateescape"))

    def reopen(self) -> None:
        """SIGUSR1 (logrotate): open the access path anew (O_APPEND|O_CREAT) and write every
        later line there; what is queued goes to the old file first. No-op for stdout, stderr
        and off. OSError: the old file stays in use."""
        if not self.own_fd:
            return
        fd = os.open(self.access_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.flush()
        old, self.fd = self.fd, fd
        os.close(old)

    def close(self) -> None:
        self.flush()
        if self.own_fd and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
        self.own_fd = False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        except OSError:
            return  # a closed stdout must not take the proxy down
        view = view[n:]


def log_open(log_cfg: Any, loop: asyncio.AbstractEventLoop | None = None) -> Log:
    """A Log for the config's `log:` section (level, access, format)."""
    return Log(
        _dest_name(log_cfg.level), str(log_cfg.access), _dest_name(log_cfg.format), loop=loop
    )


def stderr_line(text: str) -> None:
    """A plain line on stderr (CLI errors before any Log exists)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
