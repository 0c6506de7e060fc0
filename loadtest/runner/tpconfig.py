"""The twinproxy YAML config as the lab needs it: read, normalize, write.

The contract (shared/spec/contract.md section 2) is the source of truth; this module only
parses what the nginx/HAProxy templates need (durations in ms, sizes in bytes, defaults
filled in) and builds the per-scenario configs the runner hands to every contender.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from testkit.durations import duration_ms, size_bytes  # the twins' own grammar

DEFAULT_TIMEOUTS_MS = {
    "connect": 1000,
    "header": 10000,
    "idle": 60000,
    "read": 30000,
    "write": 30000,
    "total": 60000,
    "queue": 1000,
    "shutdown": 30000,
}
DEFAULT_LIMITS = {
    "max_client_connections": 10000,
    "max_header_bytes": 16384,
    "max_body_bytes": 0,
    "upstream_max_connections": 256,
    "upstream_idle_connections": 64,
}


def split_hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


@dataclass(frozen=True)
class Upstream:
    address: str  # host:port
    name: str
    weight: int = 1


@dataclass(frozen=True)
class ProxyConfig:
    """What nginx/HAProxy need from a twinproxy YAML (times in ms, sizes in bytes)."""

    listen: str
    workers: int
    upstreams: tuple[Upstream, ...]
    balancer: str = "round_robin"
    hash_key: str = "client_ip"
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    timeouts_ms: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_TIMEOUTS_MS)
    )
    max_fails: int = 3
    fail_timeout_ms: int = 10000
    check: dict[str, Any] | None = None  # active health check, normalized (ms)
    retries: int = 2
    # rate_limit, normalized: {"key": "client_ip" | "header:NAME", "capacity": int,
    # "rate_per_sec": float}; None when the YAML has no rate_limit section
    rate_limit: dict[str, Any] | None = None
    # admin.listen (the twins' /metrics): nginx and HAProxy get their stats page there
    admin_listen: str | None = None


def parse(doc: dict[str, Any]) -> ProxyConfig:
    """A loaded twinproxy YAML document -> ProxyConfig (defaults as in the contract)."""
    ups = []
    for u in doc.get("upstreams") or []:
        ups.append(
            Upstream(
                str(u["address"]),
                str(u.get("name") or u["address"]),
                int(u.get("weight", 1)),
            )
        )
    if not ups:
        raise ValueError("config has no upstreams")
    limits = dict(DEFAULT_LIMITS)
    for k, v in (doc.get("limits") or {}).items():
        limits[k] = size_bytes(v)
    timeouts = dict(DEFAULT_TIMEOUTS_MS)
    for k, v in (doc.get("timeouts") or {}).items():
        timeouts[k] = duration_ms(v)
    health = doc.get("health") or {}
    check = None
    if health.get("check"):
        c = health["check"]
        check = {
            "path": str(c.get("path", "/healthz")),
            "interval_ms": duration_ms(c.get("interval", "2s")),
            "timeout_ms": duration_ms(c.get("timeout", "1s")),
            "rise": int(c.get("rise", 2)),
            "fall": int(c.get("fall", 2)),
        }
    rate_limit = None
    if doc.get("rate_limit"):
        rl = doc["rate_limit"]
        default = rl.get("default") or {}
        rate_limit = {
            "key": str(rl.get("key", "client_ip")),
            "capacity": int(default.get("capacity", 100)),
            "rate_per_sec": float(default.get("rate_per_sec", 50)),
        }
    return ProxyConfig(
        listen=str(doc.get("listen", "127.0.0.1:8080")),
        workers=int(doc.get("workers", 1)),
        upstreams=tuple(ups),
        balancer=str(doc.get("balancer", "round_robin")),
        hash_key=str(doc.get("hash_key", "client_ip")),
        limits=limits,
        timeouts_ms=timeouts,
        max_fails=int(health.get("max_fails", 3)),
        fail_timeout_ms=duration_ms(health.get("fail_timeout", "10s")),
        check=check,
        retries=int(doc.get("retries", 2)),
        rate_limit=rate_limit,
        admin_listen=str((doc.get("admin") or {}).get("listen") or "") or None,
    )


def load(path: str | Path) -> ProxyConfig:
    with open(path, encoding="utf-8") as f:
        return parse(yaml.safe_load(f))


def bench_config(
    listen: str,
    upstreams: list[tuple[str, str]],
    *,
    timeouts: dict[str, str] | None = None,
    retries: int = 0,
    max_fails: int = 3,
    fail_timeout: str = "10s",
    max_client_connections: int = 10000,
    rate_limit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The twinproxy YAML document every contender of one scenario shares.

    One worker, logging off, keep-alive on both sides (the proxies' default), and only
    keys from the contract (both twins reject unknown keys). ``rate_limit``:
    ``{"capacity": C, "rate_per_sec": R}`` (optionally ``"key"``) adds a rate_limit
    section with its store in the contender's working directory.
    """
    t = {
        "connect": "1s",
        "header": "10s",
        "idle": "60s",
        "read": "30s",
        "write": "30s",
        "total": "60s",
        "queue": "1s",
        "shutdown": "1s",
    }
    t.update(timeouts or {})
    doc: dict[str, Any] = {
        "listen": listen,
        "workers": 1,
        "upstreams": [{"address": a, "name": n, "weight": 1} for a, n in upstreams],
        "balancer": "round_robin",
        "limits": {
            "max_client_connections": max_client_connections,
            "max_header_bytes": 16384,
            "max_body_bytes": 0,
            "upstream_max_connections": 256,
            "upstream_idle_connections": 64,
        },
        "timeouts": t,
        "health": {"max_fails": max_fails, "fail_timeout": fail_timeout},
        "retries": retries,
        "log": {"level": "error", "access": "off", "format": "json"},
    }
    if rate_limit is not None:
        doc["rate_limit"] = {
            "key": str(rate_limit.get("key", "client_ip")),
            "default": {
                "capacity": int(rate_limit["capacity"]),
                "rate_per_sec": rate_limit["rate_per_sec"],
            },
            "store": "ratelimit.db",  # relative: the contender runs in its own temp dir
        }
    return doc


def write(doc: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return p
