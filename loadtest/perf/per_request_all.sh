#!/usr/bin/env bash
# Per request, for every contender: user-space instructions (callgrind), syscalls
# (strace -c -f) and context switches (/proc/PID/task/*/status), by loadtest/perf/per_request.sh,
# gathered into one table (markdown + JSON) for the report's "Where the time goes".
#
#   loadtest/perf/per_request_all.sh [-n N] [-p PY_N] [-r REPS] [-o DIR] [IMPL...]
#
# IMPL: c-proxy py-proxy nginx haproxy nullproxy direct (default: all six). py-proxy runs
# with PY_N requests (default 2000: CPython under callgrind is slow), the others with N
# (default 20000). direct is the upstream alone (no proxy), nullproxy the splice(2)
# relay in loadtest/nullproxy (the floor of any proxy).
# Output DIR (default $PROFILE_DIR, else results/<UTC time>-<sha>-profile/profile):
# per_request.jsonl (one object per measurement), per_request.json and per_request.md
# (medians over REPS), per_request.commands.txt. Everything else as per_request.sh.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
n=20000 py_n=2000 reps=1 out=${PROFILE_DIR:-}
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts "n:p:r:o:h" opt; do
  case $opt in
    n) n=$OPTARG ;;
    p) py_n=$OPTARG ;;
    r) reps=$OPTARG ;;
    o) out=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ $n =~ ^[1-9][0-9]*$ && $py_n =~ ^[1-9][0-9]*$ && $reps =~ ^[1-9][0-9]*$ ]] || usage
impls=("$@")
[ ${#impls[@]} -gt 0 ] || impls=(c-proxy py-proxy nginx haproxy nullproxy direct)
if [ -z "$out" ]; then
  sha=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  out="$root/results/$(date -u +%Y%m%dT%H%M%SZ)-$sha-profile/profile"
fi
mkdir -p "$out"
rm -f "$out/per_request.jsonl" "$out/per_request.commands.txt"
rc=0
for impl in "${impls[@]}"; do
  nn=$n
  [ "${impl%%=*}" = py-proxy ] && nn=$py_n
  cmd=(bash "$root/loadtest/perf/per_request.sh" -n "$nn" -r "$reps" -t callgrind,strace,ctxsw
    -j "$out/per_request.jsonl" "$impl")
  printf '%q ' "${cmd[@]}" >>"$out/per_request.commands.txt"
  printf '\n' >>"$out/per_request.commands.txt"
  "${cmd[@]}" || rc=1
done
"${PYTHON:-$root/.venv/bin/python}" -m loadtest.profile.perreq "$out"
echo "per_request_all: written to $out" >&2
exit $rc
