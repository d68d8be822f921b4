"""The in-process cluster fixture (see inproc.py)."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from inproc import Cluster


@pytest.fixture
async def cluster(tmp_path) -> AsyncIterator[Cluster]:
    """A controller and agents started by the test on one loop; all stopped at the end."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        await c.close()
