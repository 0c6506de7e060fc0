"""Every scenario's report section, in report order, found in one place: here.

Each module `s<N>_<name>.py` in this package holds one scenario's section, a function
`section(ctx) -> list[Block]` (its tables, plots and ratios). SECTIONS lists them in the
order of N (S0/S1 first, S11 last), so adding a scenario's section is adding one file.
Sections that belong to no scenario are numbered after the scenarios (s12 the stats
scrape cost, s13 where the time goes) and found the same way.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable

from loadtest.report.common import Ctx
from loadtest.report.doc import Block

Section = Callable[[Ctx], list[Block]]
_NAME = re.compile(r"s(\d+)_\w+$")


def _discover() -> tuple[Section, ...]:
    found: list[tuple[int, str]] = []
    for info in pkgutil.iter_modules(__path__):
        m = _NAME.match(info.name)
        if m:
            found.append((int(m.group(1)), info.name))
    names = [name for _, name in sorted(found)]
    return tuple(
        importlib.import_module(f"{__name__}.{name}").section for name in names
    )


SECTIONS: tuple[Section, ...] = _discover()
