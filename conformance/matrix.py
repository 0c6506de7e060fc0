"""Run the smuggling corpus against c-proxy, py-proxy, nginx and HAProxy and regenerate
docs/conformance.md (the case x proxy matrix).

    .venv/bin/python conformance/matrix.py              # every delivery (whole, byte by byte, every split)
    .venv/bin/python conformance/matrix.py --quick      # whole deliveries only
    .venv/bin/python conformance/matrix.py --proxies c-proxy,nginx --out /tmp/m.md

Every proxy runs in the foreground on a private port with a private config in a temp dir
(nginx and HAProxy rendered by loadtest/runner/render.py from the same twinproxy YAML, as
the lab does); no system service is touched. Each proxy gets its own capturing upstream
(conformance/corpus_lib.py), listed twice under two names as in test_corpus.py.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import corpus_lib as cl
from testkit.ports import free_port

from loadtest.runner import contenders, tpconfig

PROXIES = ("c-proxy", "py-proxy", "nginx", "haproxy")


def start(name: str, up_port: int, work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    addr = f"127.0.0.1:{up_port}"
    doc = {
        "listen": f"127.0.0.1:{port}",
        "workers": 1,
        "upstreams": [
            {"address": addr, "name": "cap1"},
            {"address": addr, "name": "cap2"},
        ],
        "timeouts": {"header": "2s", "read": "2s", "shutdown": "2s"},
        "health": {"max_fails": 0},
        "log": {"access": "off"},
    }
    work.mkdir(parents=True, exist_ok=True)
    yaml_path = tpconfig.write(doc, work / "twinproxy.yaml")
    cmd = contenders.command(
        "py-asyncio" if name == "py-proxy" else name, yaml_path, work
    )
    with open(work / "stderr.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=work, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited: {(work / 'stderr.log').read_text()[-2000:]}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)  # startup poll, bounded
    proc.kill()
    raise RuntimeError(f"{name} did not listen on {port}")


def run_proxy(name: str, full: bool, work: Path) -> dict[str, cl.Result]:
    req, resp = cl.load("request"), cl.load("response")
    up = cl.CaptureUpstream(resp)
    proc, port = start(name, up.port, work / name)
    results: dict[str, cl.Result] = {}
    seq = [0]
    deliveries = 0
    t0 = time.monotonic()
    try:
        for case in req:
            res = None
            for label, pieces in cl.deliveries(case.raw, full):
                deliveries += 1
                r = cl.run_request(port, up, case, pieces, marker_seq=seq)
                if proc.poll() is not None:
                    r = cl.Result(False, "crashed", f"{name} exited on {label}")
                if res is None:
                    res = r
                if not r.ok:
                    res = cl.Result(False, r.observed, f"{label}: {r.detail}")
                    break
            results[case.name] = res
            if proc.poll() is not None:
                proc, port = start(name, up.port, work / f"{name}-restart")
        for i, case in enumerate(resp):
            deliveries += 1
            results[case.name] = cl.run_response(port, up, case, seq=i)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        up.close()
    secs = time.monotonic() - t0
    print(f"{name}: {deliveries} deliveries in {secs:.1f}s", file=sys.stderr)
    results["__meta__"] = cl.Result(True, f"{deliveries} deliveries, {secs:.0f} s")
    return results


def versions() -> dict[str, str]:
    v = contenders.versions()
    return {
        "c-proxy": v.get("c-proxy") or "?",
        "py-proxy": v.get("py-asyncio") or v.get("py-proxy") or "?",
        "nginx": v.get("nginx") or "?",
        "haproxy": v.get("haproxy") or "?",
    }


# docs/conformance.md: everything above this line is generated, everything from it on
# (the fault matrix, the soak, slow clients, ...) is written by hand and kept.
KEEP_MARKER = "<!-- hand-written sections below: conformance/matrix.py keeps them -->"


def cell(r: cl.Result) -> str:
    return ("ok " if r.ok else "**FAIL** ") + r.observed.replace("|", "/")


def render(res: dict[str, dict[str, cl.Result]], full: bool) -> str:
    names = list(res)
    req, resp = cl.load("request"), cl.load("response")
    out = [
        "# Conformance: the smuggling corpus against the twins, nginx and HAProxy",
        "",
        "Generated by `.venv/bin/python conformance/matrix.py"
        + ("" if full else " --quick")
        + "`; do not edit this part by hand (the sections after the marker at the end",
        "are hand-written and kept). The corpus is conformance/corpus/ (format:",
        "conformance/corpus/README.md); the expectations are contract 3/4 and",
        "docs/behaviour.md, each case naming the RFC 9112/9110 section that decides it.",
        "",
        "Deliveries: "
        + (
            "every request case whole, byte by byte, and split at every offset into two sends"
            if full
            else "every request case whole (quick run)"
        )
        + "; each response case once. A case passes for a proxy when every delivery does.",
        "",
        "Versions: " + ", ".join(f"{n} {versions().get(n, '?')}" for n in names),
        "",
        "| proxy | request cases passed | response cases passed | deliveries |",
        "| --- | --- | --- | --- |",
    ]
    for n in names:
        rq = sum(res[n][c.name].ok for c in req)
        rs = sum(res[n][c.name].ok for c in resp)
        out.append(
            f"| {n} | {rq} / {len(req)} | {rs} / {len(resp)} | {res[n]['__meta__'].observed} |"
        )
    out += [
        "",
        "Cells: `ok`/`FAIL` against the expectation, then what was observed: `reject N` (the",
        "proxy answered N itself, closed, forwarded nothing), `accept` (exactly one",
        "well-framed message reached the upstream and the client got its answer), `accept(cut)`",
        "(an early response; the proxy cut the rest of the body off), `accept+pipelined` (the",
        "invalid request was forwarded, so the request the case pipelines behind it was",
        "read and answered as a second request), `smuggled` (another message, or another",
        "exchange's bytes), `fwd` (bytes reached the upstream; `reject 502 ... fwd` means",
        "the proxy forwarded bytes the strict capturing upstream refused), `N cut`",
        "(truncated response then close), `garbage` (a non-HTTP response passed through),",
        "`closed`, `hang`.",
        "",
        "## Disagreements",
        "",
        "Every case where the proxies do not all pass, with the section that decides it.",
        "",
    ]
    dis = [
        c
        for c in req + resp
        if len({res[n][c.name].ok for n in names}) > 1
        or not all(res[n][c.name].ok for n in names)
    ]
    if not dis:
        out.append("None.")
    for c in dis:
        out.append(
            f"- **{c.name}** (expect `{c.expect}`; {c.rfc}).{' ' + c.note if c.note else ''}"
            " Observed: "
            + "; ".join(
                f"{n}: {'ok' if res[n][c.name].ok else 'FAIL'} {res[n][c.name].observed}"
                + (
                    ""
                    if res[n][c.name].ok or not res[n][c.name].detail
                    else f" ({res[n][c.name].detail[:160]})"
                )
                for n in names
            )
            .replace("|", "/")
            .replace("\r", "\\r")
            .replace("\n", "\\n")
        )
    for kind, cases in (("Request", req), ("Response", resp)):
        out += [
            "",
            f"## {kind} cases",
            "",
            "| case | expect | " + " | ".join(names) + " | RFC |",
            "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |",
        ]
        for c in cases:
            out.append(
                f"| {c.group}/{c.name} | {c.expect.replace('|', 'or')} | "
                + " | ".join(cell(res[n][c.name]) for n in names)
                + f" | {c.rfc.replace('|', '/')} |"
            )
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="whole deliveries only")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--out", default=str(ROOT / "docs" / "conformance.md"))
    a = ap.parse_args()
    names = [n.strip() for n in a.proxies.split(",") if n.strip()]
    res = {}
    with tempfile.TemporaryDirectory(prefix="tp-matrix-") as tmp:
        for n in names:
            res[n] = run_proxy(n, not a.quick, Path(tmp))
    out = Path(a.out)
    kept = ""
    if (
        out.exists()
    ):  # the hand-written sections after the marker survive a regeneration
        old = out.read_text(encoding="utf-8")
        if KEEP_MARKER in old:
            kept = old[old.index(KEEP_MARKER) :]
    text = render(res, not a.quick)
    out.write_text(
        text.rstrip("\n") + "\n\n" + (kept or KEEP_MARKER + "\n"), encoding="utf-8"
    )
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
