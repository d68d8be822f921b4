"""Cluster tests: several hosts in network namespaces (see netlab.py for the topology).

Every test here is marked ``cluster`` and needs root and iproute2; elsewhere it is skipped with
the reason, once per session. ``wait_for`` is re-exported for tests that poll with a deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from clusterlab import ClusterLab, SharedCluster
from netlab import NetLab, netns_unavailable_reason, wait_for

__all__ = ["wait_for"]

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/cluster ``cluster``, including files added later."""
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def netns_support() -> None:
    """Skip, with the reason, where network namespaces cannot be made (not root, no ip, kernel)."""
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _require_netns(netns_support: None) -> None:
    """Every cluster test needs namespaces, even one that builds its own NetLab."""


@pytest.fixture
def netlab(tmp_path: Path) -> Iterator[NetLab]:
    """An empty lab (add hosts to it); torn down after the test, its logs kept in tmp_path."""
    with NetLab(log_dir=tmp_path / "netlab") as lab:
        yield lab


@pytest.fixture(scope="module")
def shared(
    netns_support: None, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedCluster]:
    """One cluster per test module, with the agents (and labels) its ``AGENTS`` names."""
    pool = SharedCluster(tmp_path_factory.mktemp(request.module.__name__), request.module.AGENTS)
    yield pool
    pool.close()


@pytest.fixture
def cluster(shared: SharedCluster, tmp_path: Path) -> Iterator[ClusterLab]:
    """The module's cluster, reset for this test, with this test's slice of the daemon logs."""
    with shared.for_test(tmp_path) as lab:
        yield lab
