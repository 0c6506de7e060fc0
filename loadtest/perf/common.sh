# Shared by per_request.sh and capacity.sh (sourced): free ports, the upstream, stopping.
# Callers set $root (the checkout) and $work (their temp dir) and use `set -euo pipefail`.

# a free TCP port on 127.0.0.1
perf_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# perf_start_upstream NAME:PORT... : one upstream process ($UPSTREAM, default this
# checkout's upstreams/build/upstream) with one 127.0.0.1 listener per argument; waits for
# its "ready" line and sets upstream_pid. Exits 1 (2 if the binary is missing) on failure.
perf_start_upstream() {
  local bin=${UPSTREAM:-$root/upstreams/build/upstream} l
  local -a args=()
  [ -x "$bin" ] || { echo "$(basename "$0"): upstream missing: $bin (make build)" >&2; exit 2; }
  for l in "$@"; do args+=(--listen "127.0.0.1:${l#*:}" --name "${l%%:*}"); done
  "$bin" "${args[@]}" --quiet >"$work/upstream.out" 2>&1 &
  upstream_pid=$!
  for _ in $(seq 100); do grep -q ready "$work/upstream.out" && return 0; sleep 0.1; done
  echo "$(basename "$0"): upstream not ready: $(cat "$work/upstream.out")" >&2
  exit 1
}

# perf_stop PID... : SIGTERM each live process (and its direct children) and reap it
perf_stop() {
  local p
  for p in "$@"; do
    if kill -0 "$p" 2>/dev/null; then
      pkill -TERM -P "$p" 2>/dev/null || true
      kill -TERM "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
}
