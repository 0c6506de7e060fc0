#!/usr/bin/env bash
# Static analysis of the C code: clang-tidy (checks in /.clang-tidy) and cppcheck over
# c-proxy/src, upstreams/src, loadtest/olgen/src and loadtest/nullproxy/src, with each directory's include flags.
#   scripts/lint-c-deep.sh [cppcheck|tidy|all]      (default all)
# Exit status non-zero on any finding. clang-tidy runs two files at a time.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
what=${1:-all}
llhttp=${LLHTTP:-$top/build/deps/llhttp}
dirs=(c-proxy/src upstreams/src loadtest/olgen/src loadtest/nullproxy/src)
rc=0
if [ "$what" = all ] || [ "$what" = cppcheck ]; then
  cppcheck -q --std=c11 --enable=warning,portability,performance --inline-suppr \
    --error-exitcode=1 -D_GNU_SOURCE -I"$llhttp/include" \
    -Ic-proxy/src -Iupstreams/src -Iloadtest/olgen/src "${dirs[@]}" || rc=1
  [ $rc -eq 0 ] && echo "cppcheck: ${dirs[*]}: clean"
fi
if [ "$what" = all ] || [ "$what" = tidy ]; then
  jansson=$(pkg-config --cflags jansson)
  out=$(mktemp); trap 'rm -f "$out"' EXIT
  for d in "${dirs[@]}"; do
    ls "$d"/*.c
  done | xargs -P 2 -I{} sh -c \
    'd=$(dirname "$1"); clang-tidy --quiet "$1" -- -std=c11 -D_GNU_SOURCE -I"$d" \
       -I"$2/include" $3 2>/dev/null || echo "clang-tidy: $1: findings"' _ {} "$llhttp" "$jansson" \
    > "$out" || true
  if grep -qE 'error:|warning:|findings$' "$out"; then
    grep -E 'error:|warning:|findings$' "$out"
    rc=1
  else
    echo "clang-tidy: ${dirs[*]}: clean"
  fi
fi
exit $rc
