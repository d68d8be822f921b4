"""``depends_on`` on a real controller and two real agents: instances start only after what
they depend on is satisfied on some node (checked from the times the processes recorded), a
waiting template shows why in ``ps`` and ``templates``, and a cycle or a dependency on nothing
is refused naming it (issue 12, "Start order")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gaffer.common.errors import TemplateError
from gaffer.testing import free_port, poll_until
from inproc import spec

MARKER = str(Path(__file__).with_name("marker.py"))


def marked(out: Path, name: str) -> float | None:
    """The time ``name`` (``db.1.start``) was recorded, or None if not yet."""
    path = out / name
    return float(path.read_text()) if path.exists() else None


def worker(out: Path, name: str, *args: str, **fields) -> dict:
    return spec(name, fields.pop("numprocesses", 1), cmd=sys.executable, args=[MARKER, str(out), *args], **fields)


async def test_web_starts_after_db_is_ready_and_the_migration_completed_across_two_nodes(cluster, tmp_path):
    """db (on n1, ready once it listens after 1 s), migrate (on n2, a job that needs db ready)
    and web (2 instances, needing db ready and migrate completed), applied at once: web
    waits with its reason shown, and every web process starts after db listened and the
    migration finished, which started after db listened."""
    out = tmp_path / "marks"
    out.mkdir()
    await cluster.start_controller()
    await cluster.start_agent("n1")
    await cluster.start_agent("n2")
    port = free_port()
    db = worker(out, "db", "serve", "1.0", port=port, placement={"nodes": ["n1"]}, health={
        "type": "tcp", "port": "$PORT", "interval": 0.1, "timeout": 0.1, "start_period": 30,
    })
    migrate = worker(out, "migrate", "job", "0.3", restart="never", placement={"nodes": ["n2"]}, depends_on=["db"])
    web = worker(out, "web", "wait", numprocesses=2, depends_on=[
        "db", {"name": "migrate", "condition": "completed"},
    ])
    await cluster.call("apply", templates=[web, migrate, db])

    rows = await cluster.call("ps", name="web")
    assert {r["state"] for r in rows} == {"pending"}
    assert all("waiting for db to be ready" in r["reason"] for r in rows)
    view = (await cluster.call("get", name="web"))
    assert "waiting for" in view["pending"]["reason"]

    running = await cluster.wait_running(2, "web", timeout=30)
    assert set(running) == {"web.1", "web.2"}
    await poll_until(lambda: all(marked(out, f"{i}.start") for i in running), what="web start marks")
    db_listened = marked(out, "db.1.listen")
    migrate_started, migrate_done = marked(out, "migrate.1.start"), marked(out, "migrate.1.done")
    assert db_listened is not None and migrate_started is not None and migrate_done is not None
    assert marked(out, "db.1.start") < db_listened < migrate_started < migrate_done
    for ident in running:
        started = marked(out, f"{ident}.start")
        assert started is not None and started > migrate_done, ident
    assert {r["state"] for r in await cluster.call("ps", name="migrate")} == {"exited"}


async def test_a_running_dependent_is_left_alone_when_its_dependency_stops(cluster, tmp_path):
    """Only starts are ordered: web (depends on db being started) keeps running when db is
    stopped, and its pid does not change."""
    out = tmp_path / "marks"
    out.mkdir()
    await cluster.start_controller()
    await cluster.start_agent("n1")
    await cluster.call("apply", templates=[
        worker(out, "db", "wait"),
        worker(out, "web", "wait", depends_on=[{"name": "db", "condition": "started"}]),
    ])
    await cluster.wait_running(2)
    await poll_until(lambda: marked(out, "db.1.start") and marked(out, "web.1.start"), what="both started")
    pid = (await cluster.call("ps", name="web"))[0]["pid"]
    await cluster.call("stop", name="db")
    await poll_until(lambda: marked(out, "db.1.stop") is not None, what="db stopped")
    await cluster.wait_running(1)
    assert [r["pid"] for r in await cluster.call("ps", name="web")] == [pid]


class TestRefused:
    @pytest.fixture
    async def controller(self, cluster):
        await cluster.start_controller()
        return cluster

    async def test_a_cycle_is_refused_naming_it(self, controller):
        """web -> api -> web in one apply: refused, the message names the cycle, nothing stored."""
        with pytest.raises(TemplateError) as caught:
            await controller.call("apply", templates=[
                spec("web", 1, depends_on=["api"]), spec("api", 1, depends_on=["web"]),
            ])
        assert "depends_on cycle: api -> web -> api" in caught.value.message
        assert await controller.call("templates") == []

    async def test_a_cycle_made_across_applies_is_refused(self, controller):
        """db, then api on db, then db changed to depend on api: the last apply is refused with
        the cycle, and db keeps its stored spec."""
        await controller.call("apply", templates=[spec("db", 1)])
        await controller.call("apply", templates=[spec("api", 1, depends_on=["db"])])
        with pytest.raises(TemplateError) as caught:
            await controller.call("apply", templates=[spec("db", 1, depends_on=["api"])])
        assert "depends_on cycle: api -> db -> api" in caught.value.message
        assert "depends_on" not in (await controller.call("get", name="db"))["spec"]

    async def test_a_dependency_on_a_template_that_does_not_exist_is_refused(self, controller):
        """A dependency on a template neither applied before nor in the same apply is refused."""
        with pytest.raises(TemplateError) as caught:
            await controller.call("apply", templates=[spec("web", 1, depends_on=["db"])])
        assert "web.depends_on: 'db' is not a template" in caught.value.message

    async def test_deleting_a_template_others_depend_on_is_refused(self, controller):
        """db cannot be deleted while web depends on it; both at once can."""
        await controller.call("apply", templates=[spec("db", 1), spec("web", 1, depends_on=["db"])])
        with pytest.raises(TemplateError) as caught:
            await controller.call("delete", name="db")
        assert "web.depends_on: depends on 'db'" in caught.value.message
        await controller.call("delete", name="web")
        await controller.call("delete", name="db")

    async def test_completed_on_a_template_that_always_restarts_is_refused(self, controller):
        """condition completed on a template with restart = always (it never completes) is refused."""
        with pytest.raises(TemplateError) as caught:
            await controller.call("apply", templates=[
                spec("migrate", 1), spec("web", 1, depends_on=[{"name": "migrate", "condition": "completed"}]),
            ])
        assert "'migrate' never completes" in caught.value.message
