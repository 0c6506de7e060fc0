"""Every scenario's report section, in report order: the one place sections are registered.

Each module holds one scenario's section: `section(ctx) -> list[Block]` (tables, plots,
ratios). Adding a scenario's section = a new module here plus one line in SECTIONS.
"""

from __future__ import annotations

from collections.abc import Callable

from loadtest.report.common import Ctx
from loadtest.report.doc import Block
from loadtest.report.sections import (
    s1_capacity,
    s2_latency,
    s3_added,
    s4_cpu,
    s5_payload,
    s6_churn,
    s7_idle,
    s8_fairness,
    s9_timeouts,
    s10_locust,
    s11_ratelimit,
)

SECTIONS: tuple[Callable[[Ctx], list[Block]], ...] = (
    s1_capacity.section,
    s2_latency.section,
    s3_added.section,
    s4_cpu.section,
    s5_payload.section,
    s6_churn.section,
    s7_idle.section,
    s8_fairness.section,
    s9_timeouts.section,
    s10_locust.section,
    s11_ratelimit.section,
)
