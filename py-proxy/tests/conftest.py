"""py-proxy unit tests: every test gets a timeout even when pytest runs from the repository
root (where py-proxy/pyproject.toml's pytest settings are not read)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DEFAULT_TIMEOUT_S = 20


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents and not item.get_closest_marker(
            "timeout"
        ):
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))


@pytest.fixture(autouse=True)
def _fresh_health_registry() -> None:
    """Health verdicts are process-wide by upstream name: every test starts with none."""
    from pyproxy.health import health_registry_free

    health_registry_free()
