#!/usr/bin/env bash
# S1-style closed-loop capacity of one or more c-proxy builds, alternating A B A B ...
#
#   loadtest/perf/capacity.sh [-c CONNS] [-d SECONDS] [-r ROUNDS] [-p PATH] BINARY...
#
# Mirrors the lab's S1 (loadtest/runner/scenarios.py block_S01) outside the runner so that
# any binary can be measured, e.g. a baseline build against the current one:
#   - one upstream process with two listeners (u1, u2), round robin, on CPU 0;
#   - the proxy on the lab's bench config (written by loadtest/runner/tpconfig.py's
#     bench_config with .venv/bin/python or $PYTHON: one worker, logging off, retries 0)
#     pinned alone on CPU 1 (taskset -c 1), as loadtest/runner/pinning.py does;
#   - per round and binary: start the proxy, wait for a 200, warm up with wrk for 1 s,
#     then `wrk -t1 -c CONNS -d SECONDS --timeout 5s http://127.0.0.1:PORT/PATH` on CPU 0,
#     stop the proxy. Rounds alternate the binaries so drift in background load hits all.
# A BINARY named nullproxy (loadtest/nullproxy/build/nullproxy) is the null proxy, started
# as "nullproxy 127.0.0.1:PORT 127.0.0.1:U1" (it relays every connection to u1): the floor.
# Defaults: 64 connections, 10 s, 5 rounds, /bytes/0. Prints every run, then per binary
# the median, min and max of requests/s and of the proxy's CPU time (user + system, from
# /proc/PID/stat, 1/CLK_TCK resolution) per request during the measured run; the latter
# depends much less on what else the machine runs. A run with socket errors or non-2xx
# responses is shown and left out of the summary. Needs 2 CPUs for the lab's pinning
# (on 1 CPU all run on CPU 0). Wall-clock figures: on a shared machine compare medians
# of alternating runs and quote the spread. Everything listens on 127.0.0.1; everything
# started is stopped.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
conns=64 dur=10 rounds=5 path=/bytes/0

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts "c:d:r:p:h" opt; do
  case $opt in
    c) conns=$OPTARG ;;
    d) dur=$OPTARG ;;
    r) rounds=$OPTARG ;;
    p) path=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
[[ $conns =~ ^[1-9][0-9]*$ && $dur =~ ^[1-9][0-9]*$ && $rounds =~ ^[1-9][0-9]*$ ]] || usage
for b in "$@"; do [ -x "$b" ] || { echo "capacity: not executable: $b" >&2; exit 2; }; done
command -v wrk >/dev/null || { echo "capacity: wrk not installed (make deps)" >&2; exit 2; }

if [ "$(nproc)" -ge 2 ]; then proxy_cpu=1 load_cpu=0; else proxy_cpu=0 load_cpu=0; fi
# this shell and everything it starts without taskset (upstream, wrk, probes) on the load CPU
taskset -p -c "$load_cpu" $$ >/dev/null

work=$(mktemp -d /tmp/twinproxy-capacity.XXXXXX)
upstream_pid="" proxy_pid=""
# shellcheck source=loadtest/perf/common.sh
. "$root/loadtest/perf/common.sh"
cleanup() {
  # shellcheck disable=SC2086 # unset pids vanish
  perf_stop $proxy_pid $upstream_pid
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

http_ok() { # one GET through the proxy answered 200?
  python3 - "$1" "$path" <<'EOF' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"GET " + sys.argv[2].encode() + b" HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
sys.exit(0 if s.recv(64).startswith(b"HTTP/1.1 200") else 1)
EOF
}

u1=$(perf_free_port) u2=$(perf_free_port)
perf_start_upstream "u1:$u1" "u2:$u2"

py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || { echo "capacity: $py missing (make deps)" >&2; exit 2; }
write_yaml() { # $1 file, $2 port: the lab's own bench config (tpconfig.bench_config)
  (cd "$root" && "$py" -c 'import sys
from loadtest.runner import tpconfig
tpconfig.write(tpconfig.bench_config(sys.argv[2], [(sys.argv[3], "u1"), (sys.argv[4], "u2")]), sys.argv[1])' \
    "$1" "127.0.0.1:$2" "127.0.0.1:$u1" "127.0.0.1:$u2")
}

hz=$(getconf CLK_TCK)
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, all threads

# one_run BINARY -> prints "RPS CPU_US_PER_REQUEST", or "invalid: ..."; raw wrk text in
# $work/last.wrk. CPU is the proxy's user+system time during the measured wrk run.
one_run() {
  local bin=$1 port i
  port=$(perf_free_port)
  if [ "$(basename "$bin")" = nullproxy ]; then # the splice relay: to u1, no config
    taskset -c "$proxy_cpu" "$bin" "127.0.0.1:$port" "127.0.0.1:$u1" >"$work/proxy.log" 2>&1 &
  else
    write_yaml "$work/twinproxy.yaml" "$port"
    taskset -c "$proxy_cpu" "$bin" --config "$work/twinproxy.yaml" >"$work/proxy.log" 2>&1 &
  fi
  proxy_pid=$!
  for i in $(seq 100); do http_ok "$port" && break; kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
  if ! http_ok "$port"; then
    echo "invalid: proxy not serving ($(tail -c 300 "$work/proxy.log"))"
  else
    wrk -t1 -c64 -d1s --timeout 5s "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true
    ticks0=$(proc_ticks "$proxy_pid")
    wrk -t1 -c"$conns" -d"${dur}s" --timeout 5s "http://127.0.0.1:$port$path" >"$work/last.wrk" 2>&1 || true
    ticks1=$(proc_ticks "$proxy_pid")
    awk -v ticks=$((ticks1 - ticks0)) -v hz="$hz" '
      /Requests\/sec:/ {rps = $2}
      / requests in / {reqs = $1}
      /Socket errors:/ {err = $4 + $6 + $8 + $10}
      /Non-2xx or 3xx responses:/ {non2xx = $NF}
      END {
        if (rps == "" || reqs == 0) print "invalid: no Requests/sec line"
        else if (err + non2xx > 0) printf "invalid: %s (%d socket errors, %d non-2xx)\n", rps, err, non2xx
        else printf "%s %.2f\n", rps, ticks / hz * 1e6 / reqs
      }' "$work/last.wrk"
  fi
  kill -TERM "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
  proxy_pid=""
}

echo "capacity: wrk -t1 -c$conns -d${dur}s $path, proxy on CPU $proxy_cpu, upstream+wrk on CPU $load_cpu, $rounds rounds" >&2
declare -A runs cpus
for r in $(seq "$rounds"); do
  for b in "$@"; do
    res=$(one_run "$b")
    if [[ $res =~ ^([0-9.]+)\ ([0-9.]+)$ ]]; then
      printf 'round %d  %-50s %10s req/s  %7s us CPU/req  (load %s)\n' "$r" "$b" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "$(cut -d' ' -f1 /proc/loadavg)"
      runs[$b]="${runs[$b]:-} ${BASH_REMATCH[1]}"
      cpus[$b]="${cpus[$b]:-} ${BASH_REMATCH[2]}"
    else
      printf 'round %d  %-50s %s  (load %s)\n' "$r" "$b" "$res" "$(cut -d' ' -f1 /proc/loadavg)"
    fi
  done
done
summary() { # $1 label, $2 what, $3 format, values on stdin
  sort -g | awk -v b="$1" -v what="$2" -v f="$3" 'NF {v[++n] = $1}
    END {
      if (n == 0) { printf "  %-50s %s: no valid run\n", b, what; exit }
      med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      printf "  %-50s %s: median " f "  min " f "  max " f "  spread %.1f%%  (n=%d)\n", b, what, med, v[1], v[n], 100 * (v[n] - v[1]) / med, n
    }'
}
echo "summary over valid runs (spread = (max - min) / median):"
for b in "$@"; do
  printf '%s\n' ${runs[$b]:-} | summary "$b" "req/s" "%.0f"
  printf '%s\n' ${cpus[$b]:-} | summary "$b" "us CPU/req" "%.2f"
done
