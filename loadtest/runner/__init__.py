"""The bench runner: preflight, contenders, scenarios, pinning, processes, generator drivers.

Entry point: ``python -m loadtest.bench`` (loadtest/bench.py). What it writes is fixed by
loadtest/SCHEMA.md; docs/benchmarking.md explains how to run it.
"""
