"""What the conformance suite, the upstream's tests, the lab and the unit tests share.

- `testkit.ports`: loopback ports for servers under test (`free_port`, `is_listening`).
- `testkit.proc`: a process and its descendants read from /proc (`process_tree`, `rss_kb`,
  `fd_count`, `threads`, `processes`, `cpu_s`): py-proxy's workers are processes and
  c-proxy's are threads, so every figure is taken over the whole tree.
- `testkit.durations`: the config's durations and sizes, parsed by py-proxy's own config
  module (one grammar, not a copy of it).

Installed into .venv (editable) by scripts/deps.sh; it imports nothing outside the standard
library but `pyproxy.config`.
"""
