"""The in-process cluster fixture (see inproc.py)."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from httpapi import LOOPBACK, Http
from inproc import Cluster


@pytest.fixture
async def cluster(tmp_path) -> AsyncIterator[Cluster]:
    """A controller and agents started by the test on one loop; all stopped at the end."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def http(cluster: Cluster) -> AsyncIterator[Http]:
    """A controller serving its HTTP API on loopback, and a client of it (closed at the end)."""
    client = Http(await cluster.start_controller(http=LOOPBACK))
    try:
        yield client
    finally:
        await client.close()
