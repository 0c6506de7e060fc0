"""SIGUSR1 reopens the access log file (contract 11; behaviour.md "Access log rotation").

logrotate's create mode: the file is renamed, the proxy is told with SIGUSR1, it opens
the path anew. Every line written before the signal stays in the renamed file, every
request after the `log_reopen` event lands in the new one, none is lost or doubled."""

from __future__ import annotations

import json
import signal

import pytest

N = 12  # requests on each side of the rotation (fresh connections: both workers see some)


def _paths(path) -> list[str]:
    return sorted(
        json.loads(line)["path"] for line in path.read_text().splitlines() if line
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_sigusr1_reopens_access_log(upstream, proxy, workers):
    up = upstream(["u1"])
    p = proxy(up, workers=workers)
    assert p.access_path is not None
    before = [f"/bytes/3?before={i}" for i in range(N)]
    after = [f"/bytes/3?after={i}" for i in range(N)]
    for target in before:
        assert p.request(target).status == 200
    p.wait_access_log(N)
    rotated = p.access_path.with_name(p.access_path.name + ".1")
    p.access_path.rename(rotated)
    p.signal(signal.SIGUSR1)
    ev = p.wait_event("log_reopen")[-1]
    assert ev["level"] == "info" and ev["path"] == str(p.access_path), ev
    assert p.access_path.exists(), "the reopen must create the file again"
    for target in after:
        assert p.request(target).status == 200
    p.wait_access_log(N)
    assert p.stop() == 0  # everything buffered is written by now
    assert _paths(rotated) == sorted(before)
    assert _paths(p.access_path) == sorted(after)
    assert not p.events("log_reopen_failed")


@pytest.mark.parametrize("workers", [1, 2])
def test_reopen_failure_keeps_the_old_file(upstream, proxy, tmp_path, workers):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    up = upstream(["u1"])
    p = proxy(up, workers=workers, log={"access": str(logdir / "access.log")})
    assert p.request("/bytes/1?first").status == 200
    p.wait_access_log(1)
    moved = tmp_path / "logs.old"
    logdir.rename(moved)  # the configured path's directory is gone: the open fails
    p.signal(signal.SIGUSR1)
    ev = p.wait_event("log_reopen_failed")[-1]
    assert ev["level"] == "error", ev
    assert ev["error"].startswith(f"log.access: {logdir / 'access.log'}: "), ev
    assert p.request("/bytes/1?second").status == 200
    assert p.stop() == 0
    assert _paths(moved / "access.log") == ["/bytes/1?first", "/bytes/1?second"]
    assert not p.events("log_reopen")


def test_sigusr1_with_access_on_stdout_is_harmless(upstream, proxy):
    up = upstream(["u1"])
    p = proxy(up, log={"access": "stdout"})
    p.signal(signal.SIGUSR1)
    ev = p.wait_event("log_reopen")[-1]
    assert ev["path"] == "stdout", ev
    assert p.request("/bytes/1").status == 200
    p.wait_access_log(1)
