"""Scheduled backups of a running controller's store, restores from them, and their failures.

A real Controller (real sockets, a real SQLite file) with backups every fraction of a second,
and a real Agent for the restore: after a restore the agent must take the restored state even
though it applied newer generations than the backup holds.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from gaffer.agent.agent import Agent
from gaffer.agent.link import LinkSettings
from gaffer.client import AsyncClient
from gaffer.common.errors import StorageDamaged
from gaffer.controller import offline
from gaffer.controller.backup import NAME_RE, take_backup
from gaffer.controller.controller import Controller
from gaffer.controller.liveness import Liveness
from gaffer.controller.settings import ControllerSettings
from gaffer.controller.store import DB_NAME, Store
from gaffer.testing import free_port, poll_until, template

sys.path.insert(0, str(Path(__file__).parent))
import damage  # noqa: E402

FAST = Liveness(interval=0.1, suspect_misses=3, down_misses=5, startup_grace=0.0)


def settings(data_dir: Path, **overrides) -> ControllerSettings:
    values = {"bind": "tcp://127.0.0.1:*", "pub": "tcp://127.0.0.1:*", **overrides}
    return ControllerSettings(data_dir=data_dir, liveness=FAST, node_grace=0.2, insecure=True, **values)


def backups(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if NAME_RE.match(p.name))


def templates_in(db: Path) -> dict[str, tuple]:
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return {name: (version, paused) for name, version, paused in conn.execute(
            "SELECT name, version, paused FROM templates"
        )}
    finally:
        conn.close()


class Running:
    """A controller and, on demand, one agent; everything stopped by ``close``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.controller: Controller | None = None
        self.client: AsyncClient | None = None
        self.agent: Agent | None = None

    async def start(self, **overrides) -> Controller:
        endpoints = {"bind": f"tcp://127.0.0.1:{self.port}", "pub": f"tcp://127.0.0.1:{self.port + 1}"}
        self.controller = Controller(settings(self.tmp / "data", **endpoints, **overrides))
        await self.controller.start()
        self.client = AsyncClient(self.controller.endpoint, timeout=5.0)
        return self.controller

    async def stop_controller(self) -> None:
        await self.client.close()
        await self.controller.stop()
        self.controller = self.client = None

    async def start_agent(self) -> Agent:
        link = LinkSettings(
            controller=self.controller.endpoint, node="n1", labels={},
            state_dir=self.tmp / "agent", heartbeat=0.1, timeout=0.5,
        )
        self.agent = Agent(link, keeper=False)
        await self.agent.start()
        return self.agent

    async def close(self) -> None:
        if self.agent is not None:
            await self.agent.stop(stop_processes=True)
        if self.controller is not None:
            await self.stop_controller()


@pytest.fixture
async def running(tmp_path):
    r = Running(tmp_path)
    try:
        yield r
    finally:
        await r.close()


class TestSchedule:
    async def test_backups_are_taken_on_the_timer_pruned_and_private(self, running, tmp_path):
        """Every period a whole, checked, 0600 copy appears in a 0700 dir; only the last `keep` stay."""
        controller = await running.start(backup_every=0.05, backup_keep=3)
        await running.client.call("apply", templates=[{"name": "web", "cmd": "sleep"}])
        directory = tmp_path / "data" / "backups"
        await poll_until(lambda: controller.backups.taken >= 6, what="six backups")
        assert directory.stat().st_mode & 0o777 == 0o700
        kept = backups(directory)
        assert len(kept) == 3
        assert [p.name for p in directory.iterdir() if not NAME_RE.match(p.name)] == []
        for path in kept:
            assert path.stat().st_mode & 0o777 == 0o600
            assert templates_in(path) == {"web": (1, 0)}
        assert controller.status()["storage"]["backups"]["failing"] == []

    async def test_a_restarted_controller_keeps_the_period_of_the_backups_on_disk(self, running, tmp_path):
        """The first backup comes one period after the newest on disk, not at every start."""
        controller = await running.start(backup_every=3600)
        await poll_until(lambda: controller.backups.taken == 1, what="the backup at start")
        await running.stop_controller()
        controller = await running.start(backup_every=3600)
        await running.client.call("ping")
        assert controller.backups.taken == 0
        assert len(backups(tmp_path / "data" / "backups")) == 1


class TestRestore:
    @pytest.mark.parametrize("how", ["import", "copy"])
    async def test_restoring_a_backup_brings_back_its_state_and_the_agent_follows(self, running, tmp_path, how):
        """A restored backup (import or copy) gives its state, and the agent, ahead in generations, runs just that."""
        with Store(tmp_path / "data") as store:
            store.put_templates([template("web", args=["300"], numprocesses=2)])
        controller = await running.start(backup_every=3600)
        await poll_until(lambda: controller.backups.taken == 1, what="the backup at start")
        [backup] = backups(tmp_path / "data" / "backups")
        await running.start_agent()
        await poll_until_running(running, {"web.1": ("300",), "web.2": ("300",)})
        await running.client.call("apply", templates=[
            {"name": "web", "cmd": "sleep", "args": ["301"], "numprocesses": 1, "startsecs": 0},
            {"name": "db", "cmd": "sleep", "args": ["302"], "startsecs": 0},
        ])
        await poll_until_running(running, {"web.1": ("301",), "db.1": ("302",)})
        await running.stop_controller()
        if how == "import":
            done = offline.import_state(tmp_path / "data", str(backup), replace=True)
            assert (done.templates, done.kept is not None) == (1, True)
        else:
            shutil.copyfile(backup, tmp_path / "data" / DB_NAME)
        controller = await running.start(backup_every=3600)
        assert {n: s.template.args for n, s in controller.cluster.templates.items()} == {"web": ("300",)}
        await poll_until_running(running, {"web.1": ("300",), "web.2": ("300",)})


def args_of(pid: int) -> tuple[str, ...]:
    try:
        return tuple(Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[1:-1])
    except OSError:
        return ()


async def poll_until_running(running: Running, wanted: dict) -> None:
    """Until the agent runs exactly ``wanted`` (instance id -> the args its process got)."""
    found: dict = {}

    def matches() -> bool:
        nonlocal found
        found = {
            row["id"]: args_of(row["pid"])
            for row in running.agent.manager.instances()
            if row["state"] == "running" and row["pid"]
        }
        return found == wanted

    await poll_until(matches, timeout=15.0, what=f"the agent running {wanted} (last {found})")


class TestFailures:
    async def test_a_failing_backup_is_logged_once_and_retried(self, running, tmp_path, caplog):
        """A backup dir that cannot be made fails each period, logged once, the controller answering; then it works."""
        caplog.set_level(logging.INFO, logger="gaffer.controller.backup")
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("a file where the backup dir should be")
        controller = await running.start(backup_every=0.05, backup_dir=blocker / "backups")
        await poll_until(lambda: controller.backups.attempts >= 4, what="four failed attempts")
        assert controller.backups.taken == 0
        assert await running.client.call("apply", templates=[{"name": "web", "cmd": "sleep"}])
        failed = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(failed) == 1 and "Not a directory" in failed[0].getMessage()
        assert controller.status()["storage"]["backups"]["failing"] == ["Not a directory"]
        blocker.unlink()
        await poll_until(lambda: controller.backups.taken >= 1, what="a backup once the dir can be made")
        assert any("work again" in r.getMessage() for r in caplog.records)
        assert templates_in(backups(blocker / "backups")[-1]) == {"web": (1, 0)}

    async def test_a_full_backup_disk_leaves_no_partial_file(self, running, tmp_path, caplog):
        """Backups onto a full tmpfs fail (logged once) and leave no temp file behind."""
        caplog.set_level(logging.INFO, logger="gaffer.controller.backup")
        with damage.tmpfs(tmp_path / "mnt", "1m") as mnt:
            damage.fill(mnt)
            controller = await running.start(backup_every=0.05, backup_dir=mnt / "backups")
            await running.client.call("apply", templates=[
                {"name": f"t{i}", "cmd": "sleep", "env": {"PAD": "x" * 4000}} for i in range(40)
            ])
            await poll_until(lambda: controller.backups.attempts >= 3, what="three failed attempts")
            await running.stop_controller()
            assert sorted(p.name for p in (mnt / "backups").iterdir()) == []
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1

    def test_a_damaged_store_gives_no_backup(self, tmp_path):
        """A copy that fails quick_check is refused and removed, so it never prunes a good one."""
        db = tmp_path / "data" / DB_NAME
        with Store(tmp_path / "data") as store:
            store.put_templates([template(f"t{i}") for i in range(50)])
        damage.garble_table(db, "templates")
        with pytest.raises(StorageDamaged, match="does not check out"):
            take_backup(db, tmp_path / "backups", "gaffer-20240101T000000.000Z.db")
        assert list((tmp_path / "backups").iterdir()) == []


async def test_backups_stop_with_the_controller(tmp_path):
    """stop() waits for a copy in progress and leaves no timer or thread behind."""
    controller = Controller(settings(tmp_path / "data", backup_every=0.01))
    await controller.start()
    await poll_until(lambda: controller.backups.taken >= 2, what="two backups")
    await controller.stop()
    assert controller.backups._task is None and controller.backups._pool is None
    assert not [t for t in threading.enumerate() if t.name.startswith("gaffer-backup")]
