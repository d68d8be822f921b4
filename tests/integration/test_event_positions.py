"""Event positions never go backwards across controller restarts (issue 10, the stream).

A real ``gaffer-controller`` with a data dir is killed with SIGKILL and restarted: its
positions continue upward, and ``replay`` answers ``too_old`` for a position inside the range
the dead incarnation took with it. After a clean stop (SIGTERM) a subscriber that had every
event resumes with no loss. Below them, the store's reservation on a real SQLite file.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from gaffer.client import AsyncClient, EventsLost, ReceivedEvent, Snapshot
from gaffer.controller import offline
from gaffer.controller.position_rows import BLOCK
from gaffer.controller.store import Store
from gaffer.testing import POLL
from test_daemon_reload import CONTROLLER_BIN, wait_log

DEADLINE = 20.0


@pytest.fixture
def root():
    path = Path(tempfile.mkdtemp(prefix="gf-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Daemon:
    """One ``gaffer-controller`` process at a time on the same data dir and socket."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.endpoint = f"ipc://{root}/control.sock"
        self.log = root / "controller.log"
        self.proc: subprocess.Popen | None = None
        self.client: AsyncClient | None = None

    async def start(self) -> None:
        at = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [CONTROLLER_BIN, "--bind", self.endpoint, "--data-dir", str(self.root / "data"),
                 "--event-buffer", "1000"],
                stdout=out, stderr=out,
            )
        await wait_log(self.log, "listening on", self.proc, at)
        self.client = AsyncClient(self.endpoint, timeout=5.0)

    async def call(self, op: str, **args: Any) -> Any:
        assert self.client is not None
        return await self.client.call(op, **args)

    async def events(self, count: int, name: str) -> list[int]:
        """Publish ``count`` template events (apply, then scale) and their positions."""
        await self.call("apply", templates=[{"name": name, "cmd": "true", "numprocesses": 0}])
        for n in range(1, count):
            await self.call("scale", name=name, count=n)
        horizon = (await self.call("status"))["event_log"]["horizon"]
        found = await self.call("replay", since=horizon, prefixes=[f"template.{name}."], limit=10_000)
        assert len(found["events"]) == count, found
        return [event["seq"] for event in found["events"]]

    async def stop(self, sig: int) -> None:
        assert self.proc is not None and self.client is not None
        await self.client.close()
        self.proc.send_signal(sig)
        deadline = time.monotonic() + DEADLINE
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "the controller did not exit"
            await asyncio.sleep(POLL)  # poll
        self.proc = self.client = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)


@pytest.fixture
async def daemon(root):
    d = Daemon(root)
    try:
        yield d
    finally:
        if d.client is not None:
            await d.client.close()
        d.kill()


async def test_positions_continue_upward_after_kill_9_and_the_lost_range_is_too_old(daemon):
    """SIGKILL, restart: new positions lie above every old one; a since inside the dead
    incarnation's range is too_old, the new horizon is answered exactly."""
    await daemon.start()
    before = await daemon.events(3, "web")
    await daemon.stop(signal.SIGKILL)
    await daemon.start()
    after = await daemon.events(2, "db")
    assert min(after) > max(before)
    lost = await daemon.call("replay", since=before[0], prefixes=[""])
    assert lost["too_old"] and lost["events"] == [] and lost["horizon"] >= max(before)
    resumed = await daemon.call("replay", since=lost["horizon"], prefixes=[""])
    assert not resumed["too_old"] and [e["seq"] for e in resumed["events"]] == after
    status = await daemon.call("status")
    assert status["event_log"]["position"] == max(after) and status["event_log"]["buffer"] == 1000


async def test_a_clean_stop_lets_a_caught_up_subscriber_resume_without_loss(daemon):
    """SIGTERM, restart: replay from the last position seen is not too_old and gives exactly
    the new incarnation's events, which lie above the old ones."""
    await daemon.start()
    before = await daemon.events(3, "web")
    await daemon.stop(signal.SIGTERM)
    await daemon.start()
    after = await daemon.events(1, "db")
    assert min(after) > max(before)
    resumed = await daemon.call("replay", since=max(before), prefixes=[""])
    assert not resumed["too_old"] and [e["seq"] for e in resumed["events"]] == after
    behind = await daemon.call("replay", since=max(before) - 1, prefixes=[""])
    assert behind["too_old"] and behind["horizon"] == max(before)


async def test_a_subscriber_across_a_crash_gets_the_lost_range_a_snapshot_then_new_events(daemon):
    """A Client.events subscriber that had every event, across SIGKILL and restart: once it
    reconnects (no new event needed), one EventsLost naming exactly the range the dead
    incarnation took with it, a Snapshot that holds the template, then the new incarnation's
    events, each once."""
    await daemon.start()
    await daemon.call("apply", templates=[{"name": "web", "cmd": "true", "numprocesses": 0}])
    subscriber = AsyncClient(daemon.endpoint, timeout=5.0)
    items: asyncio.Queue[Any] = asyncio.Queue()

    async def read() -> None:
        async for item in subscriber.events(["template.web."], since=0):
            items.put_nowait(item)

    reader = asyncio.get_running_loop().create_task(read())
    try:
        async with asyncio.timeout(DEADLINE):
            created = await items.get()
            assert isinstance(created, ReceivedEvent) and created.topic == "template.web.created"
            await daemon.stop(signal.SIGKILL)
            await daemon.start()
            horizon = (await daemon.call("status"))["event_log"]["horizon"]
            lost, snapshot = await items.get(), await items.get()
            await daemon.call("scale", name="web", count=2)
            scaled = await items.get()
        assert lost == EventsLost(created.seq + 1, horizon)
        assert isinstance(snapshot, Snapshot) and [t["name"] for t in snapshot.templates] == ["web"]
        assert isinstance(scaled, ReceivedEvent) and scaled.topic == "template.web.scaled"
        assert scaled.seq > snapshot.position >= horizon and items.empty()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await subscriber.close()


class TestReservation:
    def test_a_store_never_numbered_starts_at_one_with_nothing_lost(self, tmp_path):
        """A fresh store numbers from 1 and its horizon is 0 (since=0 loses nothing)."""
        with Store(tmp_path) as store:
            numbering = store.start_numbering()
        assert (numbering.first, numbering.reserved, numbering.horizon) == (1, BLOCK, 0)

    def test_after_a_crash_the_next_block_starts_above_all_reserved(self, tmp_path):
        """Without a clean-stop record the horizon is the end of what was reserved."""
        with Store(tmp_path) as store:
            store.start_numbering()
            store.reserve_positions()
        with Store(tmp_path) as store:
            numbering = store.start_numbering()
        assert (numbering.first, numbering.horizon) == (2 * BLOCK + 1, 2 * BLOCK)

    def test_a_clean_stop_record_is_used_once(self, tmp_path):
        """The clean last position is the next horizon, and a later crash is not taken as clean."""
        with Store(tmp_path) as store:
            store.start_numbering()
            store.record_clean_stop(17)
        with Store(tmp_path) as store:
            clean = store.start_numbering()
        with Store(tmp_path) as store:
            crashed = store.start_numbering()
            assert store.event_positions() == (3 * BLOCK, None)
        assert (clean.first, clean.horizon) == (BLOCK + 1, 17)
        assert (crashed.first, crashed.horizon) == (2 * BLOCK + 1, 2 * BLOCK)

    def test_an_import_keeps_the_reservation_so_positions_stay_above(self, tmp_path):
        """gaffer-controller import over a store keeps its reserved positions: the next run
        numbers above every position the old store handed out."""
        data = tmp_path / "data"
        with Store(data) as store:
            store.start_numbering()
            store.reserve_positions()
        state, problems = offline.export(data)
        assert not problems
        source = tmp_path / "export.json"
        source.write_text(state.dumps())
        offline.import_state(data, str(source), replace=True)
        with Store(data) as store:
            numbering = store.start_numbering()
        assert numbering.first == 2 * BLOCK + 1 and numbering.horizon == 2 * BLOCK
