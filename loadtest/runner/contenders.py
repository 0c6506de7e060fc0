"""The contenders: how each is found, versioned, configured, started and stopped.

Every contender reads (or is rendered from) the same twinproxy YAML, runs as one
foreground worker pinned alone on the proxy CPU, with logging off. ``direct`` is the
ceiling: the generator talks to the first upstream with no proxy in between.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import render, tpconfig
from .processes import Proc, ProcManager, wait_port

ROOT = Path(__file__).resolve().parents[2]
C_PROXY = ROOT / "c-proxy" / "build" / "c-proxy"
PY_PROXY = Path(sys.executable).parent / "py-proxy"

ALL = ("direct", "c-proxy", "py-asyncio", "py-uvloop", "nginx", "haproxy")
PROXIES = ALL[1:]
ALIASES = {
    "py-proxy": ["py-asyncio", "py-uvloop"],
    "asyncio": ["py-asyncio"],
    "uvloop": ["py-uvloop"],
}


def select(spec: str | None) -> list[str]:
    """--contenders c-proxy,nginx -> ordered names (py-proxy expands to both loops)."""
    if not spec:
        return list(ALL)
    want: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        names = ALIASES.get(part, [part])
        for n in names:
            if n not in ALL:
                raise ValueError(
                    f"unknown contender {part!r} (known: {', '.join(ALL)})"
                )
            if n not in want:
                want.append(n)
    return [n for n in ALL if n in want]


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def availability(name: str) -> tuple[bool, str | None]:
    """(available, reason if not)."""
    if name == "direct":
        return True, None
    if name == "c-proxy":
        return (
            (True, None)
            if C_PROXY.exists()
            else (False, f"binary missing: {_rel(C_PROXY)}")
        )
    if name in ("py-asyncio", "py-uvloop"):
        if not PY_PROXY.exists():
            return False, f"binary missing: {PY_PROXY}"
        if name == "py-uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                return False, "uvloop not installed"
        return True, None
    exe = shutil.which(name)
    return (True, None) if exe else (False, f"{name} not installed (make deps)")


def _first_line(cmd: list[str]) -> str | None:
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (p.stdout or p.stderr).strip()
    if p.returncode != 0:
        return None  # a broken build has no version (its start is recorded as invalid)
    return text.splitlines()[0].strip() if text else None


def versions() -> dict[str, str | None]:
    from . import olgen  # local: avoid a cycle at import time

    v: dict[str, str | None] = {}
    v["c-proxy"] = (
        _first_line([str(C_PROXY), "--version"]) if C_PROXY.exists() else None
    )
    v["py-proxy"] = (
        _first_line([str(PY_PROXY), "--version"]) if PY_PROXY.exists() else None
    )
    v["nginx"] = _first_line(["nginx", "-v"]) if shutil.which("nginx") else None
    v["haproxy"] = _first_line(["haproxy", "-v"]) if shutil.which("haproxy") else None
    v["wrk"] = None
    if shutil.which("wrk"):
        p = subprocess.run(
            ["wrk", "--version"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        m = re.search(r"wrk\s+(\S+)", p.stdout + p.stderr)
        v["wrk"] = m.group(1) if m else None
    # olgen has no --version: identify the build by its binary's hash
    v["olgen"] = f"sha256:{_sha(olgen.BINARY)[:12]}" if olgen.available() else None
    try:
        import locust

        v["locust"] = locust.__version__
    except ImportError:
        v["locust"] = None
    try:
        import uvloop

        v["uvloop"] = uvloop.__version__
    except ImportError:
        v["uvloop"] = None
    v["llhttp"] = _llhttp_version()
    v["strace"] = _first_line(["strace", "-V"]) if shutil.which("strace") else None
    return v


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _llhttp_version() -> str | None:
    h = ROOT / "build" / "deps" / "llhttp" / "include" / "llhttp.h"
    try:
        text = h.read_text(encoding="utf-8")
    except OSError:
        return None
    parts = [
        re.search(rf"#define LLHTTP_VERSION_{k} (\d+)", text)
        for k in ("MAJOR", "MINOR", "PATCH")
    ]
    return ".".join(m.group(1) for m in parts if m) if all(parts) else None


@dataclass
class Running:
    """A started contender (proc is None for direct)."""

    name: str
    host: str
    port: int
    proc: Proc | None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is None or self.proc.alive()

    def exit_info(self) -> str:
        if self.proc is None:
            return ""
        rc = self.proc.popen.poll()
        return f"exit code {rc}; {self.proc.log_tail(300)}"


class StartError(RuntimeError):
    pass


def command(name: str, yaml_path: Path, workdir: Path) -> list[str]:
    """The command line that runs contender ``name`` on the config at yaml_path."""
    if name == "c-proxy":
        return [str(C_PROXY), "--config", str(yaml_path)]
    if name == "py-asyncio":
        return [str(PY_PROXY), "--config", str(yaml_path), "--loop", "asyncio"]
    if name == "py-uvloop":
        return [str(PY_PROXY), "--config", str(yaml_path), "--loop", "uvloop"]
    files = render.render_files(yaml_path, workdir)
    if name == "nginx":
        prefix = files["nginx_prefix"].resolve()
        return [
            "nginx",
            "-p",
            str(prefix),
            "-c",
            str(files["nginx"].resolve()),
            "-e",
            str(prefix / "error.log"),
        ]
    if name == "haproxy":
        return ["haproxy", "-db", "-f", str(files["haproxy"].resolve())]
    raise ValueError(name)


def _http_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(
                b"GET /bytes/0 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
    except OSError:
        return False


def start(
    pm: ProcManager,
    name: str,
    doc: dict[str, Any],
    workdir: Path,
    proxy_cpu: int,
    *,
    direct_target: str | None = None,
    ready_timeout: float = 10.0,
    need_ok: bool = True,
) -> Running:
    """Write the scenario's YAML into workdir, start contender ``name`` on it, wait until a
    request through it succeeds (``need_ok``) or at least its port accepts."""
    if name == "direct":
        target = direct_target or doc["upstreams"][0]["address"]
        h, p = tpconfig.split_hostport(target)
        return Running(name, h, p, None)
    workdir.mkdir(parents=True, exist_ok=True)
    yaml_path = tpconfig.write(doc, workdir / "twinproxy.yaml")
    host, port = tpconfig.split_hostport(doc["listen"])
    cmd = command(name, yaml_path, workdir)
    proc = pm.start(f"{name}-{workdir.name}", cmd, cpu=proxy_cpu, cwd=workdir)
    run = Running(name, host, port, proc)
    if not wait_port(host, port, ready_timeout, proc.popen):
        info = run.exit_info()
        pm.stop(proc, grace=1)
        raise StartError(
            f"{name} did not listen on {doc['listen']} within {ready_timeout:.0f}s ({info})"
        )
    if need_ok:
        deadline = time.monotonic() + ready_timeout
        while not _http_ok(host, port):
            if time.monotonic() > deadline or not proc.alive():
                info = run.exit_info()
                pm.stop(proc, grace=1)
                raise StartError(
                    f"{name} listens but GET /bytes/0 through it never got 200 ({info})"
                )
            time.sleep(0.05)
    return run


def stop(pm: ProcManager, run: Running) -> None:
    if run.proc is not None:
        pm.stop(run.proc, grace=3)
