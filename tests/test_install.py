"""`make install` (docs/operations.md "Installing"): install into a temporary prefix, then run
what was installed: both twins' --version/--help/--check, a real start and graceful stop of
each, the upstream's --help, and the man pages through groff with warnings on."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
MANPAGES = ["c-proxy.1", "py-proxy.1", "twinproxy-upstream.1"]


def make_install(*args: str) -> None:
    proc = subprocess.run(
        ["make", "-s", "-C", str(REPO), "install", f"PYTHON={PYTHON}", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("prefix")
    make_install(f"PREFIX={p}")
    return p


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=20, check=False, cwd="/", **kw
    )  # type: ignore[call-overload]


def test_layout(prefix: Path) -> None:
    for rel in [
        "bin/c-proxy",
        "bin/py-proxy",
        "bin/twinproxy-upstream",
        "lib/twinproxy/pyproxy/main.py",
        "lib/twinproxy/requirements.txt",
        "share/doc/twinproxy/README.md",
        "share/doc/twinproxy/behaviour.md",
        "share/doc/twinproxy/operations.md",
        "etc/twinproxy/twinproxy.yaml",
        *(f"share/man/man1/{m}" for m in MANPAGES),
    ]:
        assert (prefix / rel).is_file(), rel
    for b in ("c-proxy", "py-proxy", "twinproxy-upstream"):
        assert os.access(prefix / "bin" / b, os.X_OK), b


@pytest.mark.parametrize("prog", ["c-proxy", "py-proxy"])
def test_installed_twin_runs(prefix: Path, prog: str) -> None:
    exe = str(prefix / "bin" / prog)
    v = run([exe, "--version"])
    assert v.returncode == 0 and v.stdout.startswith(prog + " "), v
    h = run([exe, "--help"])
    assert h.returncode == 0 and h.stdout.startswith(f"usage: {prog} --config FILE"), h
    example = prefix / "etc" / "twinproxy" / "twinproxy.yaml"
    c = run([exe, "--check", "--config", str(example)])
    assert (c.returncode, c.stderr) == (0, ""), c
    bad = prefix / f"bad-{prog}.yaml"
    bad.write_text("listen: 127.0.0.1:1\nupstreams: []\nbogus: 1\n")
    b = run([exe, "--check", "--config", str(bad)])
    assert b.returncode == 2 and b.stderr.startswith(f"config error: {bad}:"), b


@pytest.mark.parametrize("prog", ["c-proxy", "py-proxy"])
def test_installed_twin_starts_and_stops(
    prefix: Path, prog: str, tmp_path: Path
) -> None:
    sys.path.insert(0, str(REPO / "conformance"))
    from harness import free_port, wait_until

    cfg = tmp_path / "tp.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{free_port()}\n"
        "upstreams:\n  - address: 127.0.0.1:9\n"
        f"log:\n  access: {tmp_path / 'access.log'}\n"
    )
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [str(prefix / "bin" / prog), "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=f,
            stdin=subprocess.DEVNULL,
        )

    def events() -> list[str]:
        out = []
        for line in err.read_text().splitlines():
            try:
                out.append(json.loads(line)["event"])
            except ValueError:
                pass
        return out

    try:
        assert wait_until(lambda: "start" in events() or proc.poll() is not None, 15)
        assert "start" in events(), err.read_text()
        proc.send_signal(
            signal.SIGTERM
        )  # the wrapper exec'd: the signal reaches the twin
        assert proc.wait(15) == 0
        assert events()[-1] == "stop", err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_installed_py_proxy_runs_the_installed_package(
    prefix: Path, tmp_path: Path
) -> None:
    # a stand-in interpreter shows what the wrapper hands over: the prefix's lib first
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "PYTHONPATH=$PYTHONPATH"\necho "ARGS=$*"\n')
    fake.chmod(0o755)
    r = run(
        [str(prefix / "bin" / "py-proxy"), "--check", "--config", "x y"],
        env={**os.environ, "TWINPROXY_PYTHON": str(fake), "PYTHONPATH": ""},
    )
    assert r.returncode == 0, r
    assert f"PYTHONPATH={prefix}/lib/twinproxy\n" in r.stdout, r.stdout
    assert r.stdout.rstrip().endswith("--check --config x y"), r.stdout


def test_installed_upstream_help(prefix: Path) -> None:
    r = run([str(prefix / "bin" / "twinproxy-upstream"), "--help"])
    assert r.returncode == 0 and r.stdout.startswith("usage: twinproxy-upstream "), r


@pytest.mark.parametrize("page", MANPAGES)
def test_man_pages_render_without_warnings(prefix: Path, page: str) -> None:
    path = prefix / "share" / "man" / "man1" / page
    r = run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(path)],
        env={**os.environ, "LC_ALL": "C"},
    )
    assert (r.returncode, r.stderr) == (0, ""), r
    out = re.sub(
        ".\b", "", run(["groff", "-man", "-Tascii", str(path)]).stdout
    )  # overstrike
    name = page.removesuffix(".1")
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"):
        assert f"\n{section}\n" in out, (page, section)
    assert name in out


def test_destdir_stages_under_prefix(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    make_install(f"DESTDIR={stage}", "PREFIX=/opt/twinproxy")
    root = stage / "opt" / "twinproxy"
    assert (root / "bin" / "c-proxy").is_file()
    wrapper = (root / "bin" / "py-proxy").read_text()
    # the wrapper names where the files end up, never the staging directory
    assert 'PYTHONPATH="/opt/twinproxy/lib/twinproxy' in wrapper
    assert str(stage) not in wrapper


def test_existing_config_is_kept(tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "twinproxy"
    etc.mkdir(parents=True)
    (etc / "twinproxy.yaml").write_text("# mine\n")
    make_install(f"PREFIX={tmp_path}")
    assert (etc / "twinproxy.yaml").read_text() == "# mine\n"
