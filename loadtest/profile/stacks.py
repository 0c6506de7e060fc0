"""Collapsed stacks for loadtest/profile/profile.sh: collapse perf script, classify, report.

    python -m loadtest.profile.stacks collapse-perf PERF_SCRIPT_TEXT > X.collapsed
    python -m loadtest.profile.stacks report DIR   # DIR/*.collapsed -> *.svg, shares.md/.json

A collapsed file has one line per distinct stack, ``frame;frame;...;leaf COUNT``, root
first. Every frame is written ``name (where)``: for perf, where is the shared object's
path (``[kernel]`` for the kernel, ``inlined`` for an inlined call, which is then
classified with the object it was inlined into); py-spy writes Python frames as
``function (path/file.py)`` and native frames as ``symbol (source file or library)``.

Classification (one category per sample; the rules are docs/performance.md's "Where the
time goes"): walk the stack from the leaf towards the root and take the first frame that
belongs to a category; frames of generic C code (libc, the dynamic loader, unresolved
addresses, perf's inlined frames of an unknown object) are skipped, so a ``memcpy`` counts
for whoever called it. A sample whose leaf is in the kernel is ``kernel`` whatever called
it. py-spy cannot see the kernel: there a leaf that is a libc system-call wrapper (send,
recv, epoll_wait, ...) stands for the time in the kernel.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

CATEGORIES = ("kernel", "llhttp", "event loop", "proxy", "interpreter", "other")
LABELS = {
    "kernel": "kernel",
    "llhttp": "parser (llhttp)",
    "event loop": "event loop",
    "proxy": "proxy's own code",
    "interpreter": "interpreter",
    "other": "other (libc, other Python, unresolved)",
}

_FRAME = re.compile(r"^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")
_OFFSET = re.compile(r"\+0x[0-9a-f]+$")
_WHERE = re.compile(r"^(.*) \(([^()]*)\)$")
_LINE = re.compile(r":\d+$")

SYSCALL_WRAPPERS = frozenset(
    [
        "send",
        "recv",
        "sendto",
        "recvfrom",
        "sendmsg",
        "recvmsg",
        "read",
        "write",
        "readv",
        "writev",
        "epoll_wait",
        "epoll_pwait",
        "epoll_ctl",
        "accept",
        "accept4",
        "connect",
        "close",
        "shutdown",
        "getsockopt",
        "setsockopt",
        "clock_gettime",
        "syscall",
        "splice",
        "__libc_send",
        "__libc_recv",
        "__libc_sendto",
        "__libc_recvfrom",
        "__libc_read",
        "__libc_write",
        "__libc_close",
        "__GI___libc_write",
        "__GI___libc_read",
    ]
)
# CPython's asyncio/select C code lives in libpython (perf) or in these sources (py-spy)
_EVENT_LOOP_NATIVE = re.compile(
    r"^(task_step|task_wakeup|TaskStep|TaskWakeup|_asyncio|future_|FutureObj|FutureIter|"
    r"enter_task|leave_task|select_epoll|pyepoll|ev_|uv_|uv__)"
)
_EVENT_LOOP_WHERE = re.compile(
    r"(^|/)(asyncio/|selectors\.py|uvloop|_asynciomodule\.c|selectmodule\.c|libev\.so|"
    r"libuv|_asyncio\.cpython|select\.cpython|loop\.c$|loop\.cpython)"
)
_LLHTTP_WHERE = re.compile(
    r"(^|/)(llhttp\.c|api\.c|http\.c|parser\.c|url_parser\.c)$|httptools"
)
_GENERIC_WHERE = re.compile(
    r"^(libc\.so|libc-|ld-linux|libm\.so|libpthread|\[vdso\]|\[unknown\]|inlined$)"
)
_INTERP_WHERE = re.compile(r"^(libpython|python\d)|\.(c|h)$|\.cpython-")


def frame_category(frame: str, pyspy: bool) -> str | None:
    """The category of one frame, or None for generic code (libc, unresolved)."""
    m = _WHERE.match(frame)
    name, where = (m.group(1), _LINE.sub("", m.group(2))) if m else (frame, "")
    base = where.rsplit("/", 1)[-1]
    if where == "[kernel]" or where == "[kernel.kallsyms]":
        return "kernel"
    if pyspy and base.startswith("libc") and name in SYSCALL_WRAPPERS:
        return "kernel"  # py-spy's stand-in for the time in the kernel below it
    if name.startswith("llhttp") or _LLHTTP_WHERE.search(where):
        return "llhttp"
    if where.endswith(".py") or where == "py-proxy":
        if "pyproxy/" in where or where == "py-proxy":
            return "proxy"
        if _EVENT_LOOP_WHERE.search(where):
            return "event loop"
        return "other"
    if _EVENT_LOOP_NATIVE.match(name) or _EVENT_LOOP_WHERE.search(where):
        return "event loop"
    if base in ("c-proxy", "nullproxy"):
        return "proxy"
    if name.startswith("0x") or name == "[unknown]" or _GENERIC_WHERE.match(base):
        return None
    if _INTERP_WHERE.search(base) or name.startswith(("Py", "_Py")):
        return "interpreter"
    return None


def classify(frames: list[str], pyspy: bool) -> str:
    """One sample's category: frames are root first."""
    for f in reversed(frames):
        cat = frame_category(f, pyspy)
        if cat is not None:
            return cat
    return "other"


def collapse_perf(lines: Iterable[str]) -> Counter[str]:
    """`perf script` text (default fields) -> Counter of "root;...;leaf" stacks."""
    stacks: Counter[str] = Counter()
    comm: str | None = None
    frames: list[tuple[str, str]] = []

    def flush() -> None:
        if comm is None or not frames:
            return
        out: list[str] = []
        owner = "inlined"
        for name, where in reversed(frames):  # root first
            out.append(f"{name} ({where})")
        # an inlined frame takes the object of the real frame it was inlined into, which
        # perf lists right after it (towards the root)
        for i in range(len(frames) - 1, -1, -1):
            name, where = frames[i]
            if where != "inlined":
                owner = where
            elif owner != "inlined":
                out[len(frames) - 1 - i] = f"{name} ({owner})"
        stacks[";".join([comm] + out)] += 1

    for line in lines:
        if not line.strip():
            flush()
            comm, frames = None, []
            continue
        if not line[0].isspace():
            flush()
            comm, frames = line.split(None, 1)[0], []
            continue
        m = _FRAME.match(line)
        if not m:
            continue
        name, dso = _OFFSET.sub("", m.group(1)), m.group(2)
        if dso.startswith("[kernel"):
            where = "[kernel]"
        elif dso == "inlined":
            where = "inlined"
        else:
            where = dso
        frames.append((name, where))
    flush()
    return stacks


def read_collapsed(path: Path) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def shares(stacks: Counter[str], pyspy: bool) -> dict[str, float]:
    """Percent of samples per category (all categories present, summing to 100)."""
    per: Counter[str] = Counter()
    for stack, n in stacks.items():
        per[classify(stack.split(";"), pyspy)] += n
    total = sum(per.values()) or 1
    return {c: round(100.0 * per[c] / total, 1) for c in CATEGORIES}


_SYSCALL = re.compile(r"^__(?:x64|ia32|se)_sys_(\w+) ")


def kernel_by_syscall(stacks: Counter[str]) -> dict[str, float]:
    """Percent of all samples with a kernel leaf, by the system call they are under (the
    ``__x64_sys_NAME`` frame; "other kernel" for interrupts, faults, the scheduler)."""
    per: Counter[str] = Counter()
    total = sum(stacks.values()) or 1
    for stack, n in stacks.items():
        frames = stack.split(";")
        if not frames[-1].endswith("([kernel])"):
            continue
        name = "other kernel"
        for f in frames:
            m = _SYSCALL.match(f)
            if m:
                name = m.group(1)
                break
        per[name] += n
    return {k: round(100.0 * v / total, 1) for k, v in per.most_common()}


VIEWS = {
    "perf": "perf record -e cpu-clock --call-graph dwarf (C-level view)",
    "pyspy": "py-spy record --native (Python-level view)",
}


def report(folder: Path) -> dict[str, object]:
    """Write an SVG per collapsed file and shares.md/shares.json; return the JSON."""
    from loadtest.profile import flame

    meta: dict[str, object] = {}
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    windows = meta.get("windows") if isinstance(meta.get("windows"), dict) else {}
    assert isinstance(windows, dict)
    rows = []
    for path in sorted(folder.glob("*.collapsed")):
        stem = path.name[: -len(".collapsed")]
        impl, _, tool = stem.rpartition(".")
        pyspy = tool == "pyspy"
        stacks = read_collapsed(path)
        samples = sum(stacks.values())
        title = f"{impl}: {VIEWS.get(tool, tool)}, {samples} samples"
        svg = flame.render(
            stacks, title, functools.partial(frame_category, pyspy=pyspy)
        )
        (folder / f"{stem}.svg").write_text(svg, encoding="utf-8")
        win = windows.get(stem, {}) if isinstance(windows.get(stem), dict) else {}
        rows.append(
            {
                "impl": impl,
                "tool": tool,
                "view": VIEWS.get(tool, tool),
                "samples": samples,
                "svg": f"{stem}.svg",
                "collapsed": path.name,
                "shares_pct": shares(stacks, pyspy),
                "kernel_by_syscall_pct": {} if pyspy else kernel_by_syscall(stacks),
                "window": win,
            }
        )
    doc = {"categories": {c: LABELS[c] for c in CATEGORIES}, "meta": meta, "rows": rows}
    (folder / "shares.json").write_text(
        json.dumps(doc, indent=2) + "\n", encoding="utf-8"
    )
    (folder / "shares.md").write_text(markdown(doc), encoding="utf-8")
    return doc


def markdown(doc: dict[str, object]) -> str:
    rows = doc.get("rows")
    assert isinstance(rows, list)
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    head = ["proxy", "view", "samples"] + [f"{LABELS[c]} %" for c in CATEGORIES]
    head += ["achieved req/s", "proxy CPU µs/req"]
    lines = [
        "# Where the time goes: share of the proxy's CPU samples",
        "",
        (
            f"Load: olgen {meta.get('rate', '?')} req/s offered on /bytes/0, "
            f"{meta.get('connections', '?')} connections, {meta.get('seconds', '?')} s per "
            f"recording, {meta.get('sample_hz', '?')} Hz; load average at the end "
            f"{' '.join(str(x) for x in meta.get('loadavg') or []) or '?'}."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---", "---"] + ["---:"] * (len(head) - 2)) + " |",
    ]
    for r in rows:
        assert isinstance(r, dict)
        sh = r["shares_pct"]
        win = r.get("window") or {}
        cpu = win.get("cpu_us_per_request")
        got = win.get("olgen_achieved_rate")
        cells = [r["impl"], r["view"], str(r["samples"])]
        cells += [f"{sh[c]:.1f}" for c in CATEGORIES]
        cells.append(f"{got:.0f}" if isinstance(got, (int, float)) else "?")
        cells.append(f"{cpu:.1f}" if isinstance(cpu, (int, float)) else "?")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        assert isinstance(r, dict)
        ks = r.get("kernel_by_syscall_pct") or {}
        if ks:
            top = ", ".join(f"{k} {v:.1f}" for k, v in list(ks.items())[:6])
            lines.append(
                f"- {r['impl']} ({r['tool']}): kernel samples by syscall, % of all: {top}"
            )
    lines += [
        "",
        (
            "Achieved req/s: olgen's completions per second in its window (below the "
            "offered rate: the proxy or the load core did not keep up). Proxy CPU µs/req: "
            "the proxy's CPU time (schedstat, every task) over the recording ÷ (achieved "
            "req/s × its length), the profiler's own cost included (py-spy stops the "
            "process for each sample)."
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "collapse-perf":
        with open(argv[2], encoding="utf-8", errors="replace") as f:
            for stack, n in sorted(collapse_perf(f).items()):
                print(f"{stack} {n}")
        return 0
    if len(argv) == 3 and argv[1] == "report":
        doc = report(Path(argv[2]))
        print(markdown(doc))
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
