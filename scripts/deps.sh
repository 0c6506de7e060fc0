#!/usr/bin/env bash
# Install everything twinproxy needs on a fresh Debian machine; idempotent and quick
# when already done (dpkg and a requirements stamp are checked before any download).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
apt_pkgs=(build-essential pkg-config libev-dev libyaml-dev libjansson-dev libcmocka-dev
          libsqlite3-dev sqlite3 zlib1g-dev wrk nginx-light haproxy valgrind strace
          linux-perf
          clang-format procps util-linux curl python3-venv
          clang llvm libclang-rt-dev clang-tidy cppcheck
          chromium)  # chromium: the report's browser check (headless)
# Installed without their recommends, their services left disabled: wanted for a tool only.
# prometheus: /usr/bin/promtool (`promtool check metrics` in conformance/test_metrics.py).
tool_pkgs=(prometheus)
tool_units=(prometheus.service)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
missing_tools=()
for p in "${tool_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing_tools+=("$p")
done
if [ $((${#missing[@]} + ${#missing_tools[@]})) -gt 0 ]; then
  echo "deps: installing Debian packages: ${missing[*]} ${missing_tools[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  # nginx and haproxy are contenders the lab starts itself with private configs and pid
  # files (prometheus is there for promtool only): ask Debian's maintainer scripts not to start the packaged services they would
  # install (policy-rc.d, exit 101 = "action forbidden"), only for this install and only
  # if no policy is in place already. Nothing the user already runs is stopped or changed.
  policy=/usr/sbin/policy-rc.d
  own_policy=""
  if [ ! -e "$policy" ]; then
    # removed again however this script ends (an interrupted run must not leave it behind)
    trap '$sudo rm -f "$policy"' EXIT
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && own_policy=1
  fi
  rc=0
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null || rc=$?
  fi
  if [ "$rc" -eq 0 ] && [ ${#missing_tools[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${missing_tools[@]}" >/dev/null || rc=$?
    # the packaging enables the unit it just installed: undo that for these (only they,
    # only now that this script installed them); nothing was started (policy-rc.d above)
    if [ "$rc" -eq 0 ] && command -v deb-systemd-helper >/dev/null; then
      for u in "${tool_units[@]}"; do $sudo deb-systemd-helper disable "$u" >/dev/null 2>&1 || true; done
    fi
  fi
  [ -n "$own_policy" ] && $sudo rm -f "$policy"
  trap - EXIT
  [ "$rc" -eq 0 ] || exit "$rc"
fi
if [ ! -x .venv/bin/python ]; then
  echo "deps: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt py-proxy/pyproject.toml testkit/pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "deps: installing Python requirements into .venv"
  .venv/bin/pip install -q -r requirements.txt
  if [ -f py-proxy/pyproject.toml ]; then .venv/bin/pip install -q --no-deps -e py-proxy; fi
  .venv/bin/pip install -q --no-deps -e testkit  # the tests' and the lab's shared helpers
  echo "$want" > "$stamp"
fi
bash scripts/fetch-llhttp.sh >/dev/null
