"""The keeper's wire is protocol 1's, byte for byte: a keeper from before an upgrade serves a new agent.

keeper_wire.py holds the script and how the recording in tests/fixtures was made.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from gaffer.agent.keeper.client import KeeperClient
from keeper_wire import TIMEOUT, client_side, keeper_side, start_keeper

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "keeper_wire_v1.json").read_text())


@pytest.fixture
def directory():
    """A short private directory (a unix socket path must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="kw")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class TestProtocol1:
    async def test_the_keeper_answers_as_protocol_1s_keeper_did(self, directory):
        """Started by protocol 1's command line, the keeper sends protocol 1's answers, frame for frame."""
        path = os.path.join(directory, "keeper.sock")
        proc = start_keeper(path)
        try:
            answers = await asyncio.to_thread(keeper_side, path)
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, TIMEOUT)
        assert [label for label, _, _ in answers] == [label for label, _, _ in GOLDEN["keeper"]]
        for got, recorded in zip(answers, GOLDEN["keeper"]):
            assert got == recorded, got[0]

    async def test_the_client_sends_protocol_1s_requests_and_reads_its_answers(self, directory):
        """KeeperClient sends the bytes protocol 1's client sent, and makes of its answers what it made."""
        got = json.loads(json.dumps(await client_side(KeeperClient, directory)))
        assert got["requests"] == GOLDEN["client"]["requests"]
        assert got["results"] == GOLDEN["client"]["results"]
