#!/usr/bin/env bash
# c-proxy under valgrind memcheck, for the conformance harness (TWINPROXY_C_PROXY): same
# arguments, same process (exec), so SIGTERM reaches it and its exit code is the one the
# harness asserts. Any memcheck error or leak (definite, indirect, possible) turns a clean
# exit into 97, which fails the test with valgrind's report on stderr.
here=$(cd "$(dirname "$0")/.." && pwd)
exec valgrind -q --tool=memcheck --error-exitcode=97 --leak-check=full \
  --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
  --track-fds=no --num-callers=30 "${VALGRIND_C_PROXY:-$here/build/c-proxy}" "$@"
