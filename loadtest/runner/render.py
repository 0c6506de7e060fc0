"""Render the nginx and HAProxy contender configs from one twinproxy YAML.

Templates live in loadtest/contenders/ and use ``@@name`` placeholders (string.Template
with another delimiter: ``$`` is nginx's variable sigil). Every contender gets the same
upstreams, weights, balancer, timeouts, keep-alive pool, retries and passive health as
far as each product can express them; docs/benchmarking.md lists the differences.
"""

from __future__ import annotations

import resource
import string
from pathlib import Path

from . import tpconfig
from .tpconfig import ProxyConfig

TEMPLATES = Path(__file__).resolve().parent.parent / "contenders"


class _Tmpl(string.Template):
    delimiter = "@@"


def _fill(name: str, values: dict[str, object]) -> str:
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    return _Tmpl(text).substitute({k: str(v) for k, v in values.items()})


def _ms(v: int) -> str:
    return f"{v}ms"


def nginx_conf(
    cfg: ProxyConfig, prefix: str | Path, source: str = "twinproxy.yaml"
) -> str:
    """nginx.conf text; ``prefix`` is the temp dir holding pid, logs and temp paths."""
    lim = cfg.limits
    n_up = len(cfg.upstreams)
    upstream_conns = n_up * lim["upstream_max_connections"]
    worker_connections = lim["max_client_connections"] + upstream_conns + 64
    if cfg.balancer == "round_robin":
        bal = "        # round_robin: nginx's default, smooth weighted round robin"
    elif cfg.balancer == "random":
        bal = "        random;"
    elif cfg.balancer == "least_conn":
        bal = "        least_conn;"
    elif cfg.balancer == "hash":
        key = cfg.hash_key
        if key == "client_ip":
            var = "$remote_addr"
        elif key == "path":
            var = "$uri"
        elif key.startswith("header:"):
            var = "$http_" + key.split(":", 1)[1].strip().lower().replace("-", "_")
        else:
            raise ValueError(f"unsupported hash_key {key!r}")
        bal = f"        hash {var} consistent;"
    else:
        raise ValueError(f"unsupported balancer {cfg.balancer!r}")
    servers = []
    for u in cfg.upstreams:
        servers.append(
            f"        server {u.address} weight={u.weight} max_fails={cfg.max_fails} "
            f"fail_timeout={max(1, -(-cfg.fail_timeout_ms // 1000))}s "
            f"max_conns={lim['upstream_max_connections']};  # {u.name}"
        )
    t = cfg.timeouts_ms
    rl_http, rl_loc = nginx_rate_limit(cfg)
    return _fill(
        "nginx.conf.tmpl",
        {
            "source": source,
            "prefix": str(prefix),
            "rlimit_nofile": min(worker_connections * 2, fd_limit()),
            "worker_connections": worker_connections,
            "idle_ms": _ms(t["idle"]),
            "header_ms": _ms(t["header"]),
            "read_ms": _ms(t["read"]),
            "write_ms": _ms(t["write"]),
            "connect_ms": _ms(t["connect"]),
            "total_ms": _ms(t["total"]),
            "max_body": lim["max_body_bytes"],
            "max_header": max(1024, lim["max_header_bytes"]),
            "balancer_line": bal,
            "servers": "\n".join(servers),
            "keepalive": max(1, lim["upstream_idle_connections"] * n_up),
            "listen": cfg.listen,
            "retries": cfg.retries,
            "next_upstream": "error timeout" if cfg.retries > 0 else "off",
            "tries": cfg.retries + 1,
            "limit_req_zone": rl_http,
            "limit_req": rl_loc,
            "stats": nginx_stats(cfg),
        },
    )


def nginx_stats(cfg: ProxyConfig) -> str:
    """admin.listen -> a server with stub_status (nginx's counterpart of /metrics)."""
    if not cfg.admin_listen:
        return "    # no admin.listen: no stats endpoint"
    return (
        "    # admin.listen: the stats page (loadtest/perf/scrape_cost.py scrapes it)\n"
        "    server {\n"
        f"        listen {cfg.admin_listen};\n"
        "        location = /stub_status { stub_status; }\n"
        "    }"
    )


def haproxy_stats(cfg: ProxyConfig) -> str:
    """admin.listen -> a frontend with the stats page (CSV at /stats;csv) and the
    built-in Prometheus exporter at /metrics."""
    if not cfg.admin_listen:
        return "# no admin.listen: no stats endpoint"
    return (
        "# admin.listen: stats (loadtest/perf/scrape_cost.py scrapes it)\n"
        "frontend stats\n"
        f"    bind {cfg.admin_listen}\n"
        "    http-request use-service prometheus-exporter if { path /metrics }\n"
        "    stats enable\n"
        "    stats uri /stats"
    )


def nginx_rate(rate_per_sec: float) -> str:
    """nginx's rate: an integer per second or per minute (its only units)."""
    if rate_per_sec >= 1 and float(rate_per_sec).is_integer():
        return f"{int(rate_per_sec)}r/s"
    return f"{max(1, round(rate_per_sec * 60))}r/m"


def nginx_rate_limit(cfg: ProxyConfig) -> tuple[str, str]:
    """(http-level lines, location-level lines) for rate_limit; comments when off.

    nginx's limit_req is a leaky bucket: a request is admitted while the bucket's excess
    stays within ``burst``; ``nodelay`` answers at once instead of queueing. The first
    request of a key always passes and burst more may follow at once, so a token bucket of
    capacity C is burst = C - 1. nginx cannot express rate 0 (no refill): the slowest
    rate it has, 1r/m, stands in for it.
    """
    rl = cfg.rate_limit
    if rl is None:
        return ("    # rate_limit: off", "            # rate_limit: off")
    key = rl["key"]
    lines = []
    if key == "client_ip":
        var = "$binary_remote_addr"
    elif key.startswith("header:"):
        # the twins key a request without the header (or with an empty one) by its address
        hdr = "$http_" + key.split(":", 1)[1].strip().lower().replace("-", "_")
        lines += [
            f"    map {hdr} $tp_rl_key {{",
            '        ""      $binary_remote_addr;',
            f"        default {hdr};",
            "    }",
        ]
        var = "$tp_rl_key"
    else:
        raise ValueError(f"unsupported rate_limit key {key!r}")
    lines += [
        (
            f"    # rate_limit: token bucket capacity {rl['capacity']}, {rl['rate_per_sec']}/s "
            "-> leaky bucket, burst = capacity - 1, nodelay"
        ),
        f"    limit_req_zone {var} zone=tp_rl:16m rate={nginx_rate(rl['rate_per_sec'])};",
        "    limit_req_status 429;",
        "    limit_req_log_level info;",
    ]
    loc = (
        f"            limit_req zone=tp_rl burst={max(0, rl['capacity'] - 1)} nodelay;"
    )
    return "\n".join(lines), loc


def haproxy_rate_limit(cfg: ProxyConfig) -> str:
    """Frontend lines for rate_limit (comment when off).

    HAProxy has no token bucket; a stick table counts events over a sliding window
    (``*_rate(period)``). The closest equivalent of capacity C refilled at R/s: count
    ADMITTED requests only (gpc0, incremented after the deny rule) over a window of
    C / R seconds and deny while C were admitted in it -- C at once, R/s sustained.
    (``http_req_rate`` would count the denied requests too, so a client offering twice
    its limit would be denied almost entirely.) Rate 0: a plain counter (gpc0) that
    never decays while the entry lives.
    """
    rl = cfg.rate_limit
    if rl is None:
        return "    # rate_limit: off"
    cap, rate, key = rl["capacity"], float(rl["rate_per_sec"]), rl["key"]
    if key == "client_ip":
        table, track = "type ipv6 size 1m", "    http-request track-sc0 src"
    elif key.startswith("header:"):
        h = key.split(":", 1)[1].strip()
        table = "type string len 88 size 1m"
        track = (
            f"    http-request track-sc0 req.hdr({h}) if {{ req.hdr({h}) -m len gt 0 }}\n"
            f"    http-request track-sc0 src,ipmask(32,64) unless {{ req.hdr({h}) -m len gt 0 }}"
        )
    else:
        raise ValueError(f"unsupported rate_limit key {key!r}")
    if rate > 0:
        period_ms = max(1, round(1000 * cap / rate))
        store, fetch = f"gpc0,gpc0_rate({period_ms}ms)", "sc_gpc0_rate(0)"
        note = f"sliding window of capacity/rate = {period_ms} ms"
    else:
        store, fetch = "gpc0", "sc_get_gpc0(0)"
        note = "rate 0: a counter that never decays"
    return "\n".join(
        [
            (
                f"    # rate_limit: token bucket capacity {cap}, {rate}/s -> admitted requests "
                f"counted over a {note}"
            ),
            f"    stick-table {table} expire 10m store {store}",
            track,
            f"    http-request deny deny_status 429 if {{ {fetch} ge {cap} }}",
            "    http-request sc-inc-gpc0(0)",
        ]
    )


def fd_limit() -> int:
    """The hard RLIMIT_NOFILE the contenders inherit (HAProxy refuses a maxconn beyond it)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return hard if hard != resource.RLIM_INFINITY else 1 << 20


def haproxy_cfg(
    cfg: ProxyConfig, source: str = "twinproxy.yaml", nofile: int | None = None
) -> str:
    """haproxy.cfg text (run with ``haproxy -db -f FILE``).

    HAProxy sizes its fd table from maxconn (about 2 fds per connection) and refuses to
    start when that exceeds the fd limit, so the global maxconn is capped to fit it.
    """
    lim = cfg.limits
    fds = nofile if nofile is not None else fd_limit()
    global_maxconn = min(
        lim["max_client_connections"]
        + len(cfg.upstreams) * lim["upstream_max_connections"],
        max(256, (fds - 200) // 2),
    )
    t = cfg.timeouts_ms
    if cfg.balancer == "round_robin":
        bal = "    balance roundrobin"
    elif cfg.balancer == "random":
        bal = "    balance random"
    elif cfg.balancer == "least_conn":
        bal = "    balance leastconn"
    elif cfg.balancer == "hash":
        key = cfg.hash_key
        if key == "client_ip":
            b = "source"
        elif key == "path":
            b = "uri"
        elif key.startswith("header:"):
            b = f"hdr({key.split(':', 1)[1].strip()})"
        else:
            raise ValueError(f"unsupported hash_key {key!r}")
        bal = f"    balance {b}\n    hash-type consistent"
    else:
        raise ValueError(f"unsupported balancer {cfg.balancer!r}")
    if cfg.check:
        c = cfg.check
        httpchk = f"    option httpchk GET {c['path']}\n    timeout check {_ms(c['timeout_ms'])}"
        chk = f"check inter {_ms(c['interval_ms'])} rise {c['rise']} fall {c['fall']}"
    else:
        # passive health only in twinproxy: HAProxy observes live traffic and marks a server
        # down after max_fails errors; a plain TCP check every fail_timeout re-admits it.
        httpchk = "    # no active check configured: passive (observe) + TCP re-admission check"
        chk = f"check inter {_ms(cfg.fail_timeout_ms)} rise 1 fall {max(1, cfg.max_fails)}"
    chk += f" observe layer4 error-limit {max(1, cfg.max_fails)} on-error mark-down"
    servers = []
    for u in cfg.upstreams:
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in u.name)
        servers.append(
            f"    server {name} {u.address} weight {min(256, u.weight)} "
            f"maxconn {lim['upstream_max_connections']} "
            f"pool-max-conn {lim['upstream_idle_connections']} {chk}"
        )
    if lim["max_body_bytes"] > 0:
        body_limit = (
            "    http-request deny deny_status 413 if "
            f"{{ req.hdr_val(content-length) gt {lim['max_body_bytes']} }}"
        )
    else:
        body_limit = "    # limits.max_body_bytes: 0 = unlimited"
    retry_on = (
        "    retry-on conn-failure empty-response response-timeout"
        if cfg.retries > 0
        else "    # retries off"
    )
    return (
        _fill(
            "haproxy.cfg.tmpl",
            {
                "source": source,
                "workers": max(1, cfg.workers),
                "global_maxconn": global_maxconn,
                "maxconn": min(lim["max_client_connections"], global_maxconn),
                "connect_ms": _ms(t["connect"]),
                "idle_ms": _ms(t["idle"]),
                "read_ms": _ms(t["read"]),
                "header_ms": _ms(t["header"]),
                "queue_ms": _ms(t["queue"]),
                "write_ms": _ms(t["write"]),
                "listen": cfg.listen,
                "body_limit": body_limit,
                "rate_limit": haproxy_rate_limit(cfg),
                "balance": bal,
                "retries": cfg.retries,
                "retry_on": retry_on,
                "httpchk": httpchk,
                "servers": "\n".join(servers),
                "stats": haproxy_stats(cfg),
            },
        )
        + "\n"
    )


def render_files(yaml_path: str | Path, outdir: str | Path) -> dict[str, Path]:
    """Render both configs next to each other in outdir; returns {"nginx": .., "haproxy": ..}."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = tpconfig.load(yaml_path)
    src = Path(yaml_path).name
    nginx_prefix = out / "nginx"
    nginx_prefix.mkdir(exist_ok=True)
    n = nginx_prefix / "nginx.conf"
    n.write_text(nginx_conf(cfg, nginx_prefix.resolve(), src), encoding="utf-8")
    h = out / "haproxy.cfg"
    h.write_text(haproxy_cfg(cfg, src), encoding="utf-8")
    return {"nginx": n, "haproxy": h, "nginx_prefix": nginx_prefix}
