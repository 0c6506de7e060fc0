"""log: access and event line formats (behaviour.md "Logs"). Twin: c-proxy/tests/test_log.c."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pyproxy.log import Log
from pyproxy.reason import REASON_N, REASONS, error_reason, reason_from_name
from pyproxy.util import format_ts

TS = 1795314534.123  # 2026-11-22T...


def access_line(tmp_path: Path, fmt: str, **over: object) -> str:
    path = tmp_path / "access.log"
    log = Log("info", str(path), fmt)
    fields: dict[str, object] = dict(
        ts=TS,
        client="127.0.0.1",
        method="GET",
        path="/x",
        status=200,
        upstream="u1",
        attempts=1,
        bytes_in=78,
        bytes_out=123,
        duration_ms=0.4123,
        request_id="abc",
        worker=1,
    )
    fields.update(over)
    log.access(**fields)  # type: ignore[arg-type]
    log.close()
    return path.read_text()


def test_ts_format() -> None:
    assert format_ts(0.0) == "1970-01-01T00:00:00.000Z"
    assert format_ts(1795314534.9999) == "2026-11-22T02:28:54.999Z"


def test_json_line(tmp_path: Path) -> None:
    line = access_line(tmp_path, "json")
    assert line == (
        '{"ts":"%s","client":"127.0.0.1","method":"GET","path":"/x","status":200,'
        '"upstream":"u1","attempts":1,"bytes_in":78,"bytes_out":123,"duration_ms":0.412,'
        '"request_id":"abc","worker":1}\n' % format_ts(TS)
    )
    assert list(json.loads(line)) == [
        "ts",
        "client",
        "method",
        "path",
        "status",
        "upstream",
        "attempts",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "request_id",
        "worker",
    ]


def test_json_escaping(tmp_path: Path) -> None:
    line = access_line(tmp_path, "json", path='/a"b\\é')
    assert '"path":"/a\\"b\\\\é"' in line


def test_text_line_and_quoting(tmp_path: Path) -> None:
    line = access_line(tmp_path, "text", path="/a b", upstream="")
    assert line == (
        'ts=%s client=127.0.0.1 method=GET path="/a b" status=200 upstream= attempts=1 '
        "bytes_in=78 bytes_out=123 duration_ms=0.412 request_id=abc worker=1\n" % format_ts(TS)
    )


def test_access_off_writes_nothing() -> None:
    log = Log("info", "off", "json")
    log.access(TS, "c", "GET", "/", 200, "", 0, 0, 0, 0.0, "r")
    assert not log.access_enabled and not log.buf


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_event_line(fmt: str, capfd: pytest.CaptureFixture[str]) -> None:
    log = Log("info", "off", fmt)
    log.event("debug", "hidden")
    log.event("warn", "retry", upstream="u1", reason="connect refused", attempt=1)
    err = capfd.readouterr().err
    assert "hidden" not in err
    if fmt == "json":
        obj = json.loads(err)
        assert list(obj) == ["ts", "level", "event", "upstream", "reason", "attempt"]
        assert obj["level"] == "warn" and obj["attempt"] == 1
    else:
        _ts, rest = err.split(" ", 1)
        assert rest == 'warn retry upstream=u1 reason="connect refused" attempt=1\n'


def test_access_buffer_flushes_once_per_loop_pass(tmp_path: Path) -> None:
    from fakes import FakeLoop

    loop = FakeLoop()
    path = tmp_path / "a.log"
    log = Log("info", str(path), "json", loop=loop)  # type: ignore[arg-type]
    for _ in range(3):
        log.access(TS, "c", "GET", "/", 200, "", 0, 0, 0, 0.0, "r")
    assert os.path.getsize(path) == 0 and len(loop.soon) == 1
    loop.run_soon()
    assert path.read_text().count("\n") == 3


def _access_paths(path: Path) -> list[str]:
    return [json.loads(line)["path"] for line in path.read_text().splitlines()]


def test_reopen_after_rename(tmp_path: Path) -> None:
    path, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    log = Log("info", str(path), "json")
    fields: dict[str, object] = dict(
        ts=TS,
        client="127.0.0.1",
        method="GET",
        status=200,
        upstream="u1",
        attempts=1,
        bytes_in=78,
        bytes_out=123,
        duration_ms=0.4123,
        request_id="abc",
    )
    log.access(path="/before", **fields)  # type: ignore[arg-type]
    log.flush()
    path.rename(rotated)
    log.reopen()
    log.access(path="/after", **fields)  # type: ignore[arg-type]
    log.flush()
    assert _access_paths(rotated) == ["/before"]
    assert _access_paths(path) == ["/after"]
    # the directory is gone: the reopen fails, the old file stays in use
    path.unlink()
    rotated.unlink()
    tmp_path.rmdir()
    with pytest.raises(OSError):
        log.reopen()
    assert log.access_enabled
    log.close()


def test_reopen_stdout_is_noop() -> None:
    log = Log("info", "off", "json")
    log.reopen()
    assert not log.access_enabled
    log.close()


REGISTRY = Path(__file__).parents[2] / "c-proxy/tests/registry_cases"


def _words(path: Path) -> list[list[str]]:
    out = []
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            out.append(words)
    return out


def test_reasons_match_shared_list() -> None:
    """The shared vocabulary (reasons.txt) is REASONS, name for name, in order."""
    names = [w[0] for w in _words(REGISTRY / "reasons.txt")]
    assert list(REASONS) == names
    assert len(names) == REASON_N
    assert all(reason_from_name(n, REASON_N) == i for i, n in enumerate(names))
    assert reason_from_name("no such reason", 0) == 0
    assert reason_from_name(None, 19) == 19
    assert REASONS[error_reason(505, "nonsense")] == "bad_version"
    assert REASONS[error_reason(502, "connect_refused")] == "connect_refused"


def test_event_registry_has_contract_events() -> None:
    """The event registry (events.txt) lists every event of contract 10."""
    names = {w[0] for w in _words(REGISTRY / "events.txt")}
    want = {
        "start", "stop", "shutdown", "reload", "reload_failed", "upstream_down",
        "upstream_up", "upstream_drain", "retry", "retry_skipped", "store_error",
        "request_error", "connection_closed",
    }  # fmt: skip
    assert want <= names
