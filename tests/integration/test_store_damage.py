"""Damaged and failing storage on real SQLite files: reported in one line, never fatal, never silent.

The Store on a garbled file, on a corruption only a lookup finds, on a full tmpfs and under
I/O errors (``chattr +i`` on its WAL); and the controller's Cluster, over real sockets, whose
memory must stay equal to the store when a write fails.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from gaffer.agent.agent import Agent
from gaffer.agent.link import LinkSettings
from gaffer.client import AsyncClient
from gaffer.common.errors import StorageDamaged, StorageError
from gaffer.controller import cluster as cluster_module
from gaffer.controller.controller import Controller
from gaffer.controller.liveness import Liveness
from gaffer.controller.settings import ControllerSettings
from gaffer.controller.store import DB_NAME, Store
from gaffer.testing import poll_until, template

sys.path.insert(0, str(Path(__file__).parent))
import damage  # noqa: E402
import store_writer  # noqa: E402


def seeded(data_dir: Path) -> Path:
    """A closed store with templates, nodes and generations; its database file."""
    with Store(data_dir) as store:
        store.put_templates([template("cron"), template("db"), template("web", numprocesses=2)])
        store.put_node("n1", {}, "agent-1")
        store.save_placement({("web", 1): "n1"})
        store.next_generations(["n1", "n2"])
    return data_dir / DB_NAME


def errors(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


def batch(count: int, variant: str = "0", start: int = 0) -> list:
    return [template(f"t{i}", args=[variant], env={"PAD": "x" * 2000}) for i in range(start, start + count)]


class TestDamageAtOpen:
    def test_a_garbled_page_is_refused_at_open_in_one_line(self, tmp_path):
        """quick_check finds a garbled b-tree page: one line naming the file and `check`, no traceback."""
        db = seeded(tmp_path)
        damage.garble_table(db, "templates")
        for _ in range(2):  # the failed open released the lock: the second gets the same answer
            with pytest.raises(StorageDamaged) as caught:
                Store(tmp_path)
            message = caught.value.message
            assert "\n" not in message
            assert f"{db} is damaged" in message
            assert f"gaffer-controller check --data-dir {tmp_path}" in message


class TestDamageWhileRunning:
    def test_corruption_only_a_lookup_finds_is_reported_once_and_then_every_call_refused(self, tmp_path, caplog):
        """A broken index passes quick_check; the lookup hitting it is StorageDamaged, logged once; then all refused."""
        db = seeded(tmp_path)
        damage.unlink_index_entry(db, "generations", "n1")
        caplog.set_level(logging.ERROR, logger="gaffer.controller.store")
        with Store(tmp_path) as store:
            store.set_count("web", 3)
            with pytest.raises(StorageDamaged, match="gaffer-controller check"):
                store.next_generations(["n1"])
            for call in (lambda: store.set_count("web", 4), store.templates, lambda: store.next_generations(["n2"])):
                with pytest.raises(StorageDamaged):
                    call()
            assert store.health()["damaged"] is True
        assert len(errors(caplog, "is damaged")) == 1


class TestFullDisk:
    def test_a_full_disk_saves_nothing_of_an_apply_says_so_once_and_recovers(self, tmp_path, caplog):
        """A nearly full tmpfs: 60 templates give 'disk full', logged once, none saved; with space back they go in."""
        caplog.set_level(logging.INFO, logger="gaffer.controller.store")
        with damage.tmpfs(tmp_path / "mnt", "2m") as mnt:
            store = Store(mnt / "data")
            try:
                store.put_templates(batch(5))
                filler = damage.fill(mnt, leave=64 * 1024)
                for _ in range(3):
                    with pytest.raises(StorageError) as caught:
                        store.put_templates(batch(60, variant="1"))
                    assert caught.value.reason == "disk_full"
                    assert "disk full" in caught.value.message and str(mnt / "data") in caught.value.message
                    assert "\n" not in caught.value.message
                assert {s.name: s.template.args for s in store.templates()} == {f"t{i}": ("0",) for i in range(5)}
                assert len(errors(caplog, "disk full")) == 1
                filler.unlink()
                assert len(store.put_templates(batch(60, variant="1"))) == 60
                assert len(store.templates()) == 60
                assert any("takes writes again" in r.getMessage() for r in caplog.records)
            finally:
                store.close()


WRITES = {
    "put_templates": lambda s: s.put_templates([template("new"), template("web", numprocesses=9)]),
    "set_count": lambda s: s.set_count("web", 5),
    "set_paused": lambda s: s.set_paused("web", True),
    "delete_template": lambda s: s.delete_template("db"),
    "put_node": lambda s: s.put_node("n3", {"zone": "a"}, "agent-3"),
    "set_node_flags": lambda s: s.set_node_flags("n1", cordoned=True, draining=True),
    "touch_nodes": lambda s: s.touch_nodes({"n1": 5.0}),
    "save_placement": lambda s: s.save_placement({("web", 2): "n1", ("web", 1): None}),
    "mark_failed": lambda s: s.mark_failed("web", 1, "n1"),
    "clear_failed": lambda s: s.clear_failed("web"),
    "next_generations": lambda s: s.next_generations(["n1"], {"n1": 9}),
}


class TestIOErrors:
    def test_every_write_maps_an_io_error_and_changes_nothing(self, tmp_path, caplog):
        """Under I/O errors every write method raises StorageError(io_error), logged once, changing nothing."""
        seeded(tmp_path)
        caplog.set_level(logging.INFO, logger="gaffer.controller.store")
        with Store(tmp_path) as store:
            store.mark_failed("web", 2, "n1")
            before = store_writer.snapshot(store)
            with damage.immutable(tmp_path / f"{DB_NAME}-wal"):
                for name, write in WRITES.items():
                    with pytest.raises(StorageError) as caught:
                        write(store)
                    assert caught.value.reason == "io_error", name
                    assert not isinstance(caught.value, StorageDamaged), name
                assert store_writer.snapshot(store) == before
            for write in WRITES.values():
                write(store)
        assert len(errors(caplog, "I/O error")) == 1


FAST = Liveness(interval=0.1, suspect_misses=3, down_misses=5, startup_grace=0.0)


@pytest.fixture
async def controller(tmp_path):
    seeded(tmp_path / "data")
    settings = ControllerSettings(
        bind="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*", data_dir=tmp_path / "data",
        liveness=FAST, insecure=True,
    )
    controller = Controller(settings)
    await controller.start()
    client = AsyncClient(controller.endpoint, timeout=5.0)
    agents: list[Agent] = []
    controller.test_agents = agents
    try:
        yield controller, client
    finally:
        for agent in agents:
            await agent.stop(stop_processes=True)
        await client.close()
        await controller.stop()


async def start_agent(controller: Controller, tmp_path: Path, name: str) -> Agent:
    link = LinkSettings(
        controller=controller.endpoint, node=name, labels={}, state_dir=tmp_path / f"agent-{name}",
        heartbeat=0.1, timeout=0.5,
    )
    agent = Agent(link, keeper=False)
    controller.test_agents.append(agent)
    await agent.start()
    await asyncio.wait_for(agent.connected.wait(), 5)
    return agent


@contextmanager
def refused(data_dir: Path, trigger: str) -> Iterator[None]:
    """A real SQLite trigger that aborts one kind of write (SQLITE_CONSTRAINT) while it exists."""
    conn = sqlite3.connect(data_dir / DB_NAME, isolation_level=None, timeout=5)
    try:
        conn.execute(f"CREATE TRIGGER refuse {trigger} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        yield
    finally:
        conn.execute("DROP TRIGGER refuse")
        conn.close()


def memory(controller: Controller) -> dict:
    """What the Cluster holds, in the form the store is compared in."""
    cluster = controller.cluster
    return {
        "templates": {n: (s.template.to_dict(), s.version, s.paused) for n, s in cluster.templates.items()},
        "nodes": {n.name: (n.cordoned, n.draining) for n in controller.nodes.nodes.values()},
        "failed": dict(cluster.failed),
    }


def stored(controller: Controller) -> dict:
    store = controller.store.sqlite
    return {
        "templates": {s.name: (s.template.to_dict(), s.version, s.paused) for s in store.templates()},
        "nodes": {n.name: (n.cordoned, n.draining) for n in store.nodes()},
        "failed": store.failed(),
    }


OPERATIONS = [
    ("apply", {"templates": [{"name": f"t{i}", "cmd": "sleep"} for i in range(60)]}),
    ("apply", {"templates": [{"name": "web", "cmd": "sleep", "args": ["9"], "numprocesses": 2}]}),
    ("scale", {"name": "web", "count": 5}),
    ("stop", {"name": "web"}),
    ("delete", {"name": "db"}),
    ("cordon", {"node": "n1"}),
    ("drain", {"node": "n1", "wait": 0}),
]


class TestClusterFollowsTheStore:
    async def test_a_refused_write_answers_the_client_and_leaves_memory_equal_to_the_store(self, controller, tmp_path):
        """Under I/O errors every writing operation answers storage_error and memory stays equal to the store."""
        controller, client = controller
        before = stored(controller)
        assert memory(controller) == before
        with damage.immutable(tmp_path / "data" / f"{DB_NAME}-wal"):
            for op, args in OPERATIONS:
                with pytest.raises(StorageError) as caught:
                    await client.call(op, **args)
                assert caught.value.code == "storage_error", op
                assert memory(controller) == stored(controller) == before, op
            assert controller.status()["storage"]["failing"] == ["io_error"]
        for op, args in OPERATIONS:
            await client.call(op, **args)
            assert memory(controller) == stored(controller), op
        assert stored(controller) != before
        assert controller.status()["storage"]["ok"] is True

    async def test_drain_is_stored_whole_or_not_at_all(self, controller, tmp_path):
        """Drain stores cordoned and draining together: refused, neither the store nor memory has the node cordoned."""
        controller, client = controller
        with refused(tmp_path / "data", "BEFORE UPDATE OF draining ON nodes WHEN NEW.draining = 1"):
            with pytest.raises(StorageError, match="refused by the test"):
                await client.call("drain", node="n1", wait=0)
            assert memory(controller)["nodes"]["n1"] == stored(controller)["nodes"]["n1"] == (False, False)
        await client.call("drain", node="n1", wait=0)
        assert memory(controller)["nodes"]["n1"] == stored(controller)["nodes"]["n1"] == (True, True)

    async def test_a_reconcile_the_store_refuses_is_tried_again(self, controller, tmp_path, monkeypatch):
        """Placement the store refuses stays out of memory, and is placed and run once the store accepts it, unasked."""
        monkeypatch.setattr(cluster_module, "STORE_RETRY", 0.5)  # the retry comes unasked, sooner than in production
        controller, client = controller
        agent = await start_agent(controller, tmp_path, "n1")
        with refused(tmp_path / "data", "BEFORE INSERT ON placement"):
            await client.call("apply", templates=[{"name": "job", "cmd": "sleep", "args": ["300"], "startsecs": 0}])
            await poll_until(lambda: controller.status()["storage"]["failing"] == ["error"], what="the refusal")
            await controller.cluster.settled()
            assert controller.cluster.placement == controller.store.sqlite.placement()
            assert ("job", 1) not in controller.cluster.placement
        await poll_until(
            lambda: any(r["id"] == "job.1" and r["state"] == "running" for r in agent.manager.instances()),
            timeout=15.0, what="job.1 running after the store accepts its placement",
        )
        assert controller.store.sqlite.placement()[("job", 1)] == "n1"
