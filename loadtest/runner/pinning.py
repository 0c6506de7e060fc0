"""CPU pinning: the proxy under test alone on one CPU, everything else on another.

On a 2-core machine the load generators and the upstreams share CPU 0; env.json says so.
"""

from __future__ import annotations

import os


def plan(ncpu: int | None = None) -> dict[str, object]:
    n = ncpu if ncpu is not None else (os.cpu_count() or 1)
    if n >= 2:
        proxy_cpu, load_cpu = 1, 0
    else:
        proxy_cpu, load_cpu = 0, 0
    notes = []
    if n == 1:
        notes.append(
            "only 1 CPU: proxy, generators and upstreams share CPU 0; results are not comparable"
        )
    elif n == 2:
        notes.append(
            "only 2 cores: the proxy runs alone on CPU 1, load generators AND upstreams share CPU 0"
        )
    return {
        "proxy_cpu": proxy_cpu,
        "load_cpu": load_cpu,
        "upstream_cpu": load_cpu,
        # tools that must not compete with the generator (S4's strace): a third core when
        # there is one, else the proxy's core (the tracee stops while strace runs anyway)
        "aux_cpu": 2 if n >= 3 else proxy_cpu,
        "cores": n,
        "two_cores": n == 2,
        "tool": "taskset -c (proxy); runner and its other children inherit sched_setaffinity(load_cpu)",
        "notes": notes,
    }


def pin_self(cpu: int) -> None:
    """Pin the runner (and so every child started without taskset) to ``cpu``."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass
