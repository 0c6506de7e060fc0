#!/usr/bin/env bash
# Where the time goes: profile each twin at one fixed open-loop load and write collapsed
# stacks, SVG flame graphs and a CPU share table (kernel / llhttp / event loop / the
# proxy's own code / interpreter / other) into a run folder. Method: docs/performance.md
# "Where the time goes".
#
#   loadtest/profile/profile.sh [-d SECONDS] [-r RATE] [-c CONNS] [-F HZ] [-P HZ] [-o DIR] [-k] [IMPL...]
#
# IMPL: c-proxy (perf), py-proxy (perf, then py-spy --native) and nullproxy (perf; the
# splice(2) relay of loadtest/nullproxy relaying to u1: the floor), default all three.
#   c-proxy   perf record -e cpu-clock --call-graph dwarf on the proxy's pid (software
#             clock: this VM has no hardware counters) -> c-proxy.perf.collapsed
#   py-proxy  the same perf recording (the C-level view: kernel, libpython, httptools'
#             llhttp, _asyncio) -> py-proxy.perf.collapsed, then in a second window of the
#             same length py-spy record --native --format raw (the Python-level view:
#             asyncio vs pyproxy vs CPython internals) -> py-proxy.pyspy.collapsed
# Topology as in the lab (loadtest/runner/pinning.py): the proxy alone on CPU 1, the
# upstream (upstreams/build/upstream, two listeners, round robin, the lab's bench config
# from loadtest/runner/tpconfig.py) and olgen on CPU 0. Load: olgen --rate RATE
# --connections CONNS --warmup 2 on /bytes/0, for the warm-up plus every recording window.
# Defaults: 20 s per recording, 2000 req/s, 16 connections, perf at 999 Hz (-F), py-spy at
# 200 Hz (-P: py-spy stops the process for every sample; at 999 Hz py-proxy could not keep
# up with 1000 req/s on the development VM).
# Output DIR (default $PROFILE_DIR, else results/<UTC time>-<sha>-profile/profile):
#   *.collapsed (one "frame;frame;... count" line per stack, root first), *.svg (flame
#   graphs, loadtest/profile/flame.py), shares.md + shares.json (loadtest/profile/stacks.py),
#   meta.json (load, CPU per request, tool versions, machine load), commands.txt (every
#   command as run, appended). -k keeps perf.data and the perf script text. Needs root or
#   kernel.perf_event_paranoid <= 1 for perf on another pid, and ptrace rights for py-spy.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
dur=20 rate=2000 conns=16 hz=999 pyhz=200 keep="" out=${PROFILE_DIR:-} args="$*"
usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts "d:r:c:F:P:o:kh" opt; do
  case $opt in
    d) dur=$OPTARG ;;
    r) rate=$OPTARG ;;
    c) conns=$OPTARG ;;
    F) hz=$OPTARG ;;
    P) pyhz=$OPTARG ;;
    o) out=$OPTARG ;;
    k) keep=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ $dur =~ ^[1-9][0-9]*$ && $rate =~ ^[1-9][0-9]*$ && $conns =~ ^[1-9][0-9]*$ && $hz =~ ^[1-9][0-9]*$ && $pyhz =~ ^[1-9][0-9]*$ ]] || usage
impls=("$@")
[ ${#impls[@]} -gt 0 ] || impls=(c-proxy py-proxy nullproxy)
for i in "${impls[@]}"; do
  case $i in c-proxy | py-proxy | nullproxy) ;; *) echo "profile: unknown IMPL $i" >&2; exit 2 ;; esac
done

py=${PYTHON:-$root/.venv/bin/python}
olgen=${OLGEN:-$root/loadtest/olgen/build/olgen}
pyspy=${PYSPY:-$root/.venv/bin/py-spy}
c_proxy=${C_PROXY:-$root/c-proxy/build/c-proxy}
py_proxy=${PY_PROXY:-$root/.venv/bin/py-proxy}
nullproxy=${NULLPROXY:-$root/loadtest/nullproxy/build/nullproxy}
for b in "$py" "$olgen"; do [ -x "$b" ] || { echo "profile: missing $b (make build)" >&2; exit 2; }; done
command -v perf >/dev/null || { echo "profile: perf not installed (make deps: linux-perf)" >&2; exit 2; }
if [[ " ${impls[*]} " == *" py-proxy "* ]] && [ ! -x "$pyspy" ]; then
  echo "profile: py-spy missing: $pyspy (make deps)" >&2; exit 2
fi

if [ -z "$out" ]; then
  sha=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  out="$root/results/$(date -u +%Y%m%dT%H%M%SZ)-$sha-profile/profile"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
# a re-run replaces the files of the IMPLs it runs and keeps the others' (meta.json merges)
for i in "${impls[@]}"; do rm -f "$out/$i".*; done
rm -f "$out"/shares.*
printf '## %s: loadtest/profile/profile.sh %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$args" >>"$out/commands.txt"

if [ "$(nproc)" -ge 2 ]; then proxy_cpu=1 load_cpu=0; else proxy_cpu=0 load_cpu=0; fi
taskset -p -c "$load_cpu" $$ >/dev/null # this shell and its unpinned children: the load CPU

work=$(mktemp -d /tmp/twinproxy-profile.XXXXXX)
upstream_pid="" proxy_pid="" olgen_pid="" rec_pid=""
# shellcheck source=loadtest/perf/common.sh
. "$root/loadtest/perf/common.sh"
cleanup() {
  # shellcheck disable=SC2086 # unset pids vanish
  perf_stop $rec_pid $olgen_pid $proxy_pid $upstream_pid
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# log_cmd CMD... : append the command, shell-quoted, to commands.txt
log_cmd() {
  printf '%q ' "$@" >>"$out/commands.txt"
  printf '\n' >>"$out/commands.txt"
}

http_ok() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"GET /bytes/0 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
sys.exit(0 if s.recv(64).startswith(b"HTTP/1.1 200") else 1)
PY
}

# CPU nanoseconds of every task of PID so far (schedstat: not the 10 ms ticks; %.0f, as
# mawk's %d stops at 2^31 - 1: 2.1 s of CPU)
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'; }

u1=$(perf_free_port) u2=$(perf_free_port)
echo "# upstream (CPU $load_cpu)" >>"$out/commands.txt"
printf '%q --listen 127.0.0.1:%s --name u1 --listen 127.0.0.1:%s --name u2 --quiet\n' \
  "${UPSTREAM:-$root/upstreams/build/upstream}" "$u1" "$u2" >>"$out/commands.txt"
perf_start_upstream "u1:$u1" "u2:$u2"

meta_rows=()
# one_window IMPL TOOL : start IMPL pinned, load it, record one window with TOOL, stop it
one_window() {
  local impl=$1 tool=$2 port stem ns0 ns1 i
  local -a cmd
  port=$(perf_free_port)
  stem="$impl.$tool"
  (cd "$root" && "$py" -c 'import sys
from loadtest.runner import tpconfig
tpconfig.write(tpconfig.bench_config(sys.argv[2], [(sys.argv[3], "u1"), (sys.argv[4], "u2")]), sys.argv[1])' \
    "$work/$stem.yaml" "127.0.0.1:$port" "127.0.0.1:$u1" "127.0.0.1:$u2")
  [ "$impl" = nullproxy ] || cp "$work/$stem.yaml" "$out/$stem.twinproxy.yaml"
  case $impl in
    c-proxy) cmd=("$c_proxy" --config "$out/$stem.twinproxy.yaml") ;;
    py-proxy) cmd=("$py_proxy" --config "$out/$stem.twinproxy.yaml" --loop asyncio) ;;
    nullproxy) cmd=("$nullproxy" "127.0.0.1:$port" "127.0.0.1:$u1") ;;
  esac
  echo "# $stem: the proxy (alone on CPU $proxy_cpu), its load (CPU $load_cpu), the recording" >>"$out/commands.txt"
  log_cmd taskset -c "$proxy_cpu" "${cmd[@]}"
  taskset -c "$proxy_cpu" "${cmd[@]}" >"$work/$stem.proxy.log" 2>&1 &
  proxy_pid=$!
  for i in $(seq 100); do http_ok "$port" && break; kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
  if ! http_ok "$port"; then
    echo "profile: $impl not serving: $(tail -c 300 "$work/$stem.proxy.log")" >&2
    perf_stop "$proxy_pid"; proxy_pid=""
    return 1
  fi
  local -a load=("$olgen" --url "http://127.0.0.1:$port/bytes/0" --rate "$rate"
    --duration $((dur + 2)) --warmup 2 --connections "$conns")
  log_cmd "${load[@]}"
  "${load[@]}" >"$out/$stem.olgen.json" 2>"$work/$stem.olgen.err" &
  olgen_pid=$!
  sleep 3 # olgen's warm-up, plus a second of the measured window
  ns0=$(cpu_ns "$proxy_pid")
  local -a rec
  case $tool in
    perf) rec=(perf record -q -e cpu-clock -F "$hz" --call-graph dwarf,16384 -p "$proxy_pid"
      -o "$work/$stem.data" -- sleep "$dur") ;;
    pyspy) rec=("$pyspy" record --native --nolineno --format raw --rate "$pyhz" --duration "$dur"
      --pid "$proxy_pid" --output "$out/$stem.collapsed") ;;
  esac
  log_cmd "${rec[@]}"
  "${rec[@]}" >"$work/$stem.rec.log" 2>&1 &
  rec_pid=$!
  if ! wait "$rec_pid"; then
    echo "profile: $tool failed: $(tail -5 "$work/$stem.rec.log")" >&2
    rec_pid=""
    perf_stop "$olgen_pid" "$proxy_pid"; olgen_pid="" proxy_pid=""
    return 1
  fi
  rec_pid=""
  ns1=$(cpu_ns "$proxy_pid")
  wait "$olgen_pid" || true
  olgen_pid=""
  perf_stop "$proxy_pid"
  proxy_pid=""
  cp "$work/$stem.proxy.log" "$out/$stem.proxy.log"
  if [ "$tool" = perf ]; then
    echo "perf script -i $stem.data | python -m loadtest.profile.stacks collapse-perf > $stem.collapsed" >>"$out/commands.txt"
    perf script -i "$work/$stem.data" 2>/dev/null >"$work/$stem.script"
    "$py" -m loadtest.profile.stacks collapse-perf "$work/$stem.script" >"$out/$stem.collapsed"
    if [ -n "$keep" ]; then mv "$work/$stem.data" "$work/$stem.script" "$out/"; fi
  fi
  # the proxy's CPU over the recording window (per request: meta.json, below)
  meta_rows+=("$stem $ns0 $ns1")
  echo "profile: $stem: $(wc -l <"$out/$stem.collapsed") stacks, proxy CPU $(( (ns1 - ns0) / 1000000 )) ms in ${dur} s" >&2
}

rc=0
for impl in "${impls[@]}"; do
  one_window "$impl" perf || rc=1
  if [ "$impl" = py-proxy ]; then one_window "$impl" pyspy || rc=1; fi
done

echo "python -m loadtest.profile.stacks report $out" >>"$out/commands.txt"
PYSPY=$pyspy "$py" - "$out" "$dur" "$rate" "$conns" "$hz" "$pyhz" "$proxy_cpu" "$load_cpu" "${meta_rows[@]}" <<'PY'
import json, os, platform, subprocess, sys
out, dur, rate, conns, hz, pyhz, pcpu, lcpu = sys.argv[1:9]
def ver(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None
windows = {}
try:  # the windows of IMPLs this run did not re-record
    with open(os.path.join(out, "meta.json")) as f:
        windows = json.load(f).get("windows") or {}
except (OSError, ValueError):
    pass
for row in sys.argv[9:]:
    stem, ns0, ns1 = row.split()
    cpu_s = (int(ns1) - int(ns0)) / 1e9
    og = {}
    try:
        with open(os.path.join(out, stem + ".olgen.json")) as f:
            og = json.load(f)
    except (OSError, ValueError):
        pass
    done = og.get("achieved_rate") or float(rate)
    windows[stem] = {
        "seconds": int(dur), "rate": int(rate), "connections": int(conns),
        "sample_hz": int(pyhz if stem.endswith(".pyspy") else hz),
        "proxy_cpu_s": round(cpu_s, 3),
        "utilisation": round(cpu_s / float(dur), 4),
        "cpu_us_per_request": round(cpu_s * 1e6 / (float(dur) * done), 2),
        "olgen_achieved_rate": og.get("achieved_rate"),
        "olgen_offered_rate_achieved": og.get("offered_rate_achieved"),
    }
meta = {
    "seconds": int(dur), "rate": int(rate), "connections": int(conns), "sample_hz": int(hz),
    "pyspy_hz": int(pyhz),
    "proxy_cpu": int(pcpu), "load_cpu": int(lcpu), "cores": os.cpu_count(),
    "loadavg": open("/proc/loadavg").read().split()[:3],
    "kernel": platform.release(), "perf": ver(["perf", "--version"]),
    "py_spy": ver([os.environ["PYSPY"], "--version"]),
    "windows": windows,
}
with open(os.path.join(out, "meta.json"), "w") as f:
    json.dump(meta, f, indent=2)
PY
"$py" -m loadtest.profile.stacks report "$out"
echo "profile: written to $out" >&2
exit $rc
