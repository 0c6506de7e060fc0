"""A process and all its descendants, read from /proc (Linux)."""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def state(pid: int) -> str | None:
    """The process's state letter (R, S, D, T stopped, Z, ...), or None when it is gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def children_map() -> dict[int, list[int]]:
    """ppid -> pids of every process now."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """pid first, then every descendant."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _status_field(pid: int, name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _tree_sum_status(pid: int, name: str) -> int:
    return sum(_status_field(p, name) or 0 for p in process_tree(pid))


def rss_kb(pid: int) -> int:
    """VmRSS of the tree in KiB."""
    return _tree_sum_status(pid, "VmRSS")


def threads(pid: int) -> int:
    """Threads of the tree (/proc/PID/status Threads:)."""
    return _tree_sum_status(pid, "Threads")


def processes(pid: int) -> int:
    """Processes of the tree that still exist."""
    return len([p for p in process_tree(pid) if os.path.exists(f"/proc/{p}")])


def fd_count(pid: int) -> int:
    """Open file descriptors of the tree."""
    n = 0
    for p in process_tree(pid):
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return n


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of the tree so far (utime + stime, clock ticks)."""
    ticks = 0
    for p in process_tree(pid):
        fields = _stat_fields(p)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK
