#!/usr/bin/env bash
# CPU cost per keep-alive GET of one proxy process: user-space instructions (callgrind Ir)
# and syscalls (strace -c -f), each as (total(N requests) - total(0 requests)) / N so that
# start-up, the readiness probe and shutdown cancel; and context switches (ctxsw: the
# voluntary + involuntary switches of every task of the process, from
# /proc/PID/task/*/status, read before and after the N requests of one run, the proxy
# pinned alone on CPU 1 and the client on CPU 0 as in the lab). docs/performance.md.
#
#   loadtest/perf/per_request.sh [-n N] [-c CONNS] [-t callgrind,strace,ctxsw] [-r REPS] [-o DIR] [-j FILE] IMPL...
#
# IMPL is one of
#   c-proxy[=BINARY]   c-proxy (default BINARY: $C_PROXY, else c-proxy/build/c-proxy here)
#   py-proxy[=BINARY]  py-proxy, asyncio loop (default: $PY_PROXY, else .venv/bin/py-proxy);
#                      slow under valgrind, use a small -n (e.g. 2000)
#   nginx | haproxy    the installed ones, configured as docs/performance.md shows
#   nullproxy          loadtest/nullproxy/build/nullproxy: a splice(2) TCP relay, the floor
#   direct             no proxy: the client talks to the upstream, whose own cost is then
#                      what is measured (for scale: the cheapest HTTP server in the lab)
# so the same script measures a baseline build and the current one, e.g.
#   loadtest/perf/per_request.sh c-proxy=/work/baseline/c-proxy/build/c-proxy c-proxy
#
# $TWINPROXY_EXTRA_YAML (optional): YAML appended to the c-proxy/py-proxy config, e.g.
#   TWINPROXY_EXTRA_YAML=$'rate_limit:\n  default: {capacity: 1000000000, rate_per_sec: 1000000}\n  store: rl.db'
# to measure with rate limiting on (a relative store is made in the run's own directory).
# Defaults: N=20000 requests, 16 connections, callgrind and strace, 1 repetition. -j FILE
# appends one JSON object per result line to FILE (loadtest/perf/per_request_all.sh). The upstream is
# $UPSTREAM (default upstreams/build/upstream of this checkout); it is not measured.
# Everything listens on 127.0.0.1 on free ports; everything started is stopped on exit.
# Output: one line per (impl, tool, repetition) with both raw totals and the per-request
# figure, plus, for strace, the per-request count of each syscall. -o DIR keeps the raw
# callgrind/strace files (open a profile with callgrind_annotate DIR/<file>).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/loadtest/perf"
n=20000 conns=16 tools=callgrind,strace reps=1 keep="" jsonl=""

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts "n:c:t:r:o:j:h" opt; do
  case $opt in
    n) n=$OPTARG ;;
    c) conns=$OPTARG ;;
    t) tools=$OPTARG ;;
    r) reps=$OPTARG ;;
    o) keep=$OPTARG ;;
    j) jsonl=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
[[ $n =~ ^[1-9][0-9]*$ && $conns =~ ^[1-9][0-9]*$ && $reps =~ ^[1-9][0-9]*$ ]] || usage
for spec in "$@"; do
  case ${spec%%=*} in c-proxy | py-proxy | nginx | haproxy | nullproxy | direct) ;; *) echo "per_request: unknown IMPL $spec" >&2; exit 2 ;; esac
done
for t in ${tools//,/ }; do
  case $t in callgrind | strace | ctxsw) ;; *) echo "per_request: unknown tool $t" >&2; exit 2 ;; esac
  [ "$t" = ctxsw ] && continue
  command -v "${t/callgrind/valgrind}" >/dev/null || { echo "per_request: $t not installed (make deps)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/twinproxy-perf.XXXXXX)
out=${keep:-$work/out}
mkdir -p "$out"
upstream_pid="" tool_pid="" client_pid="" total=""

# shellcheck source=loadtest/perf/common.sh
. "$here/common.sh"
cleanup() {
  # shellcheck disable=SC2086 # unset pids vanish
  perf_stop $client_pid $tool_pid $upstream_pid
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# one TCP connect + close: the readiness probe (made in both runs, so it cancels)
probe() {
  python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$1" 2>/dev/null
}

# ---- the upstream (one listener, answers GET / with 200 "ok\n")
up_port=$(perf_free_port)
perf_start_upstream "u1:$up_port"

# ---- contender configs: one worker/thread, no access log, keep-alive on both sides
write_twinproxy_yaml() { # $1 file, $2 port
  cat >"$1" <<EOF
listen: 127.0.0.1:$2
workers: 1
upstreams:
  - address: 127.0.0.1:$up_port
    name: u1
timeouts:
  shutdown: 2s
log:
  level: info
  access: "off"
  format: json
EOF
  if [ -n "${TWINPROXY_EXTRA_YAML:-}" ]; then printf '%s\n' "$TWINPROXY_EXTRA_YAML" >>"$1"; fi
}

write_nginx_conf() { # $1 dir, $2 port
  mkdir -p "$1/tmp"
  cat >"$1/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log error;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $1/tmp;
    proxy_temp_path $1/tmp;
    fastcgi_temp_path $1/tmp;
    uwsgi_temp_path $1/tmp;
    scgi_temp_path $1/tmp;
    upstream u { server 127.0.0.1:$up_port; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://u;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

write_haproxy_cfg() { # $1 file, $2 port
  cat >"$1" <<EOF
global
    nbthread 1
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:$2
    default_backend b
backend b
    server u1 127.0.0.1:$up_port
EOF
}

# proxy_cmd IMPL PORT DIR -> prints the command (one word per line)
proxy_cmd() {
  local spec=$1 port=$2 dir=$3 kind bin
  kind=${spec%%=*}
  bin=""; [[ $spec == *=* ]] && bin=${spec#*=}
  mkdir -p "$dir"
  case $kind in
    c-proxy)
      bin=${bin:-${C_PROXY:-$root/c-proxy/build/c-proxy}}
      write_twinproxy_yaml "$dir/twinproxy.yaml" "$port"
      printf '%s\n' "$bin" --config "$dir/twinproxy.yaml" ;;
    py-proxy)
      bin=${bin:-${PY_PROXY:-$root/.venv/bin/py-proxy}}
      write_twinproxy_yaml "$dir/twinproxy.yaml" "$port"
      printf '%s\n' "$bin" --config "$dir/twinproxy.yaml" --loop asyncio ;;
    nginx)
      write_nginx_conf "$dir" "$port"
      printf '%s\n' nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" ;;
    haproxy)
      write_haproxy_cfg "$dir/haproxy.cfg" "$port"
      printf '%s\n' haproxy -db -f "$dir/haproxy.cfg" ;;
    nullproxy)
      printf '%s\n' "${bin:-${NULLPROXY:-$root/loadtest/nullproxy/build/nullproxy}}" \
        "127.0.0.1:$port" "127.0.0.1:$up_port" ;;
    direct) # a second upstream process on the port: what is measured is the upstream itself
      printf '%s\n' "${UPSTREAM:-$root/upstreams/build/upstream}" --listen "127.0.0.1:$port" \
        --name u1 --quiet ;;
    *) echo "per_request: unknown IMPL $spec" >&2; return 2 ;;
  esac
}

# measure TOOL IMPL NREQ TAG -> sets total to the tool's total (Ir or syscall count)
# (runs in this shell, not in a $(...) subshell, so the EXIT trap knows tool_pid)
measure() {
  local tool=$1 spec=$2 nreq=$3 tag=$4 port dir file target i
  local -a cmd
  port=$(perf_free_port)
  dir="$work/run.$tag"
  mapfile -t cmd < <(proxy_cmd "$spec" "$port" "$dir")
  [ "${#cmd[@]}" -gt 0 ] || return 2
  [ -x "${cmd[0]}" ] || command -v "${cmd[0]}" >/dev/null || { echo "per_request: not found: ${cmd[0]}" >&2; return 2; }
  file="$out/$tag.$tool"
  rm -f "$file"
  case $tool in
    callgrind) (cd "$dir" && exec valgrind --tool=callgrind --callgrind-out-file="$file" "${cmd[@]}") >"$file.log" 2>&1 & ;;
    strace) (cd "$dir" && exec strace -c -f -o "$file" "${cmd[@]}") >"$file.log" 2>&1 & ;;
    ctxsw) (cd "$dir" && exec taskset -c "$proxy_cpu" "${cmd[@]}") >"$file.log" 2>&1 & ;;
  esac
  tool_pid=$!
  for i in $(seq 300); do
    probe "$port" && break
    kill -0 "$tool_pid" 2>/dev/null || break
    sleep 0.2
  done
  if ! kill -0 "$tool_pid" 2>/dev/null; then
    echo "per_request: $spec under $tool exited at start-up:" >&2; tail -5 "$file.log" >&2; return 1
  fi
  local sw0=0
  [ "$tool" = ctxsw ] && sw0=$(ctx_switches "$tool_pid")
  if [ "$nreq" -gt 0 ]; then
    # in the background + wait, so that a signal to this script is handled at once
    taskset -c "$load_cpu" python3 "$here/client.py" 127.0.0.1 "$port" "$nreq" "$conns" >"$file.client" 2>&1 &
    client_pid=$!
    if ! wait "$client_pid"; then
      echo "per_request: client failed against $spec: $(cat "$file.client")" >&2
      kill -TERM "$tool_pid" 2>/dev/null; wait "$tool_pid" 2>/dev/null || true; tool_pid=""
      return 1
    fi
    client_pid=""
  fi
  if [ "$tool" = ctxsw ]; then
    total=$(($(ctx_switches "$tool_pid") - sw0))
    kill -TERM "$tool_pid"
    wait "$tool_pid" || true
    tool_pid=""
    return 0
  fi
  sleep 0.3
  # valgrind runs the proxy in its own process; strace's tracee is its child
  target=$tool_pid
  if [ "$tool" = strace ]; then target=$(pgrep -P "$tool_pid" | head -1); target=${target:-$tool_pid}; fi
  kill -TERM "$target"
  wait "$tool_pid" || true
  tool_pid=""
  case $tool in
    callgrind) total=$(awk '/^(summary|totals):/ {print $2; exit}' "$file") ;;
    strace) total=$(awk '/ total$/ {print $4}' "$file") ;;
  esac
  [[ $total =~ ^[0-9]+$ ]] || { echo "per_request: no total in $file" >&2; return 1; }
}

# voluntary + involuntary context switches of every task of PID and of its children's tasks
ctx_switches() {
  local p kids
  kids=$(pgrep -P "$1" | tr '\n' ' ')
  for p in "$1" $kids; do cat /proc/"$p"/task/*/status 2>/dev/null; done |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {s += $2} END {printf "%d", s}'
}
if [ "$(nproc)" -ge 2 ]; then proxy_cpu=1 load_cpu=0; else proxy_cpu=0 load_cpu=0; fi

# per-syscall difference per request, largest first: "recvfrom 2.00 sendto 2.00 ..."
syscall_breakdown() { # $1 file(0) $2 file(N) $3 N
  awk -v n="$3" '
    function row() { return ($1 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total") }
    FNR == NR { if (row()) base[$NF] = $4; next }
    row() { d = ($4 - base[$NF]) / n; if (d >= 0.005 || d <= -0.005) printf "%s %.2f\n", $NF, d }
  ' "$1" "$2" | sort -k2,2nr | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2} END {print ""}'
}

# emit_json LABEL TOOL REP TOTAL0 TOTALN PER BREAKDOWN -> one line into $jsonl (if -j)
emit_json() {
  [ -n "$jsonl" ] || return 0
  local label=${1//[\"\\]/_}
  printf '{"impl": "%s", "kind": "%s", "tool": "%s", "rep": %s, "n": %s, "connections": %s, "total0": %s, "totalN": %s, "per_request": %s, "breakdown": "%s"}\n' \
    "$label" "${label%%=*}" "$2" "$3" "$n" "$conns" "${4:-null}" "$5" "$6" "$7" >>"$jsonl"
}

printf '%-48s %-9s %3s %14s %14s %12s\n' impl tool rep "total(0)" "total($n)" "per request"
rc=0
for spec in "$@"; do
  label=$spec
  case ${spec%%=*} in
    c-proxy) [[ $spec == *=* ]] || label="c-proxy=${C_PROXY:-$root/c-proxy/build/c-proxy}" ;;
  esac
  slug=$(printf '%s' "$label" | tr -c 'A-Za-z0-9._-' '_' | tail -c 60)
  for r in $(seq "$reps"); do
    for tool in ${tools//,/ }; do
      total=""
      if [ "$tool" = ctxsw ]; then
        # one run: the counters are read around the N requests, nothing else to cancel
        measure "$tool" "$spec" "$n" "$slug.r$r.$n" || { rc=1; continue; }
        per=$(awk -v t="$total" -v n="$n" 'BEGIN {printf "%.3f", t / n}')
        printf '%-48s %-9s %3s %14s %14s %12s\n' "$label" "$tool" "$r" "-" "$total" "$per"
        emit_json "$label" "$tool" "$r" "" "$total" "$per" ""
        continue
      fi
      measure "$tool" "$spec" 0 "$slug.r$r.0" || { rc=1; continue; }
      t0=$total
      measure "$tool" "$spec" "$n" "$slug.r$r.$n" || { rc=1; continue; }
      tn=$total
      if [ "$tool" = callgrind ]; then
        per=$(awk -v a="$t0" -v b="$tn" -v n="$n" 'BEGIN {printf "%.0f", (b - a) / n}')
      else
        per=$(awk -v a="$t0" -v b="$tn" -v n="$n" 'BEGIN {printf "%.2f", (b - a) / n}')
      fi
      printf '%-48s %-9s %3s %14s %14s %12s\n' "$label" "$tool" "$r" "$t0" "$tn" "$per"
      bd=""
      if [ "$tool" = strace ]; then
        bd=$(syscall_breakdown "$out/$slug.r$r.0.strace" "$out/$slug.r$r.$n.strace" "$n")
        echo "    per request: $bd"
      fi
      emit_json "$label" "$tool" "$r" "$t0" "$tn" "$per" "$bd"
    done
  done
done
[ -n "$keep" ] && echo "raw files: $keep" >&2
exit $rc
