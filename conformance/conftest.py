"""Fixtures: `impl` (parametrized over TWINPROXY_IMPLS), `upstream` and `proxy` factories.

    def test_x(upstream, proxy):
        up = upstream(["u1"])                       # upstreams/build/upstream, u1 on a free port
        p = proxy(up, timeouts={"read": "300ms"})   # the twin under test, config = defaults + overrides
        r = p.request("/bytes/10")

Everything started is stopped at teardown; a proxy must exit 0 on SIGTERM, and an
ASan/UBSan report on its stderr fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ProxyFactory, UpstreamFactory, impl_argv, selected_impls

IMPLS = selected_impls()


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    # Twin-against-twin comparisons need both; with one twin they are not collected
    # (deselected, not skipped: nothing is silently left unasserted in a full run).
    if len(IMPLS) < 2:
        keep = [i for i in items if i.get_closest_marker("both_impls") is None]
        dropped = [i for i in items if i.get_closest_marker("both_impls") is not None]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep


@pytest.fixture(params=IMPLS, scope="module")
def impl(request: pytest.FixtureRequest) -> str:
    impl_argv(request.param)  # a missing binary is an ERROR of every test of that twin
    return request.param


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamFactory]:
    f = UpstreamFactory(tmp_path)
    yield f
    f.close()


@pytest.fixture
def proxy(impl: str, tmp_path: Path) -> Iterator[ProxyFactory]:
    f = ProxyFactory(impl, tmp_path)
    yield f
    problems = f.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# Module-scoped variants, for areas with many small cases against one proxy
# (test_smuggling.py): each test still checks the proxy is alive afterwards.
@pytest.fixture(scope="module")
def module_upstream(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[UpstreamFactory]:
    f = UpstreamFactory(tmp_path_factory.mktemp("up"))
    yield f
    f.close()


@pytest.fixture(scope="module")
def module_proxy(
    impl: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyFactory]:
    f = ProxyFactory(impl, tmp_path_factory.mktemp(f"proxy-{impl}"))
    yield f
    problems = f.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
