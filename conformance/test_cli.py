"""Command line (contract 1, docs/operations.md "Command line"): --help / -h print the same
usage text in both twins (apart from the program name and py-proxy's --loop) and exit 0;
an unknown option exits 2 with the usage line on stderr."""

from __future__ import annotations

import re

import pytest
from harness import run_impl

PROG = {"c": "c-proxy", "py": "py-proxy", "pyuv": "py-proxy"}
COMMON = {"--config", "--check", "--version", "--help", "-h"}
PY_ONLY = {"--loop"}  # the event loop choice (asyncio | uvloop) has no C counterpart


def options(text: str) -> set[str]:
    """Options named at the start of an `options:` line (`  -h, --help   ...`)."""
    section = text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    out: set[str] = set()
    for line in section.splitlines():
        m = re.match(r"^  (-[-\w]+)(?:, (--[-\w]+))?", line)
        if m:
            out.update(o for o in m.groups() if o)
    return out


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_0_with_usage(impl, flag):
    proc = run_impl(impl, [flag])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"usage: {PROG[impl]} --config FILE"), proc.stdout
    want = COMMON | (PY_ONLY if impl != "c" else set())
    assert options(proc.stdout) == want, proc.stdout
    for sig in ("SIGHUP", "SIGUSR1", "SIGTERM"):
        assert sig in proc.stdout


def test_unknown_option_exits_2_with_usage(impl):
    proc = run_impl(impl, ["--no-such-option"])
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"usage: {PROG[impl]} --config FILE" in proc.stderr, proc.stderr


@pytest.mark.both_impls
def test_both_twins_print_the_same_help():
    c = run_impl("c", ["--help"]).stdout
    py = run_impl("py", ["--help"]).stdout
    py_lines = py.replace("py-proxy", "PROG").splitlines()
    # drop py-proxy's own option (its line and continuation) and usage-line mention
    kept, skip = [], False
    for line in py_lines:
        if line.startswith("  --loop"):
            skip = True
            continue
        if skip and line.startswith("                  "):
            continue
        skip = False
        kept.append(line.replace(" [--loop asyncio|uvloop]", ""))
    assert c.replace("c-proxy", "PROG").splitlines() == kept
