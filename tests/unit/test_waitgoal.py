"""`gafferctl wait`'s judge (pure) and its shell on an in-memory client: events move the view."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaffer.cli import waiting
from gaffer.cli.waitgoal import Goal, Verdict, View, judge, needs_read, observe, progress, view_of
from gaffer.common.errors import TemplateNotFound

TEMPLATE = {"name": "web", "numprocesses": 3, "paused": False}


def row(ordinal: int | str, state: str, node: str | None = "n1") -> dict[str, Any]:
    return {"id": f"web.{ordinal}", "ordinal": ordinal, "node": node, "state": state}


def proc(kind: str, ordinal: int | str, node: str | None = "n1") -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {"template": "web", "id": f"web.{ordinal}", "ordinal": ordinal}
    if node is not None:
        data["node"] = node
    return f"proc.web.{kind}", data


def fold(view: View, *events: tuple[str, dict[str, Any]]) -> View:
    for topic, data in events:
        view = observe(view, topic, data)
    return view


class TestJudge:
    def test_running_n_counts_instances_running_on_any_node(self):
        """Exactly N ids running; one-off runs and pending rows do not count."""
        view = view_of(TEMPLATE, [row(1, "running"), row(2, "starting"), row("run-1", "running"),
                                  row(3, "pending", None)])
        assert judge(view, Goal(running=1)) is Verdict.REACHED
        assert judge(view, Goal(running=2)) is Verdict.WAITING
        view = fold(view, proc("running", 2), proc("spawn", 3, "n2"), proc("running", 3, "n2"))
        assert judge(view, Goal(running=3)) is Verdict.REACHED and judge(view, Goal(ready=True)) is Verdict.REACHED

    def test_an_instance_moving_between_nodes_counts_once(self):
        """web.1 running on the node it leaves and the one it goes to is one instance."""
        view = fold(view_of(TEMPLATE, [row(1, "running")]), proc("spawn", 1, "n2"), proc("running", 1, "n2"))
        assert judge(view, Goal(running=1)) is Verdict.REACHED
        view = fold(view, proc("stop", 1, "n1"))
        assert judge(view, Goal(running=1)) is Verdict.REACHED

    def test_scale_down_is_reached_once_the_extra_ones_stopped(self):
        """--running 1 after a scale from 3: reached only when 2 and 3 have stopped."""
        view = view_of(TEMPLATE, [row(i, "running") for i in (1, 2, 3)])
        view = observe(view, "template.web.scaled", {"name": "web", "numprocesses": 1, "version": 2, "previous": 3})
        assert judge(view, Goal(running=1)) is Verdict.WAITING and judge(view, Goal(ready=True)) is Verdict.REACHED
        view = fold(view, proc("stop", 2), proc("stop", 3))
        assert judge(view, Goal(running=1)) is Verdict.REACHED

    def test_ready_of_a_checked_template_waits_for_the_ready_events(self):
        """With a check, running is not ready: ready needs each row's flag or proc.<t>.ready,
        and unhealthy takes it back; --running counts ready and unhealthy ones as up."""
        checked = {**TEMPLATE, "spec": {"health": {"type": "tcp"}}}
        rows = [{**row(1, "ready"), "ready": True}, {**row(2, "running"), "ready": False}]
        view = fold(view_of(checked, rows), proc("spawn", 3), proc("running", 3))
        assert judge(view, Goal(ready=True)) is Verdict.WAITING and judge(view, Goal(running=3)) is Verdict.REACHED
        assert progress(view, Goal(ready=True)) == "1 of 3 wanted ready (not ready: web.2, web.3)"
        view = fold(view, proc("ready", 2), proc("ready", 3))
        assert judge(view, Goal(ready=True)) is Verdict.REACHED
        view = fold(view, proc("unhealthy", 3))
        assert judge(view, Goal(ready=True)) is Verdict.WAITING and judge(view, Goal(running=3)) is Verdict.REACHED

    def test_current_wants_ready_on_the_version_get_names(self):
        """apply --wait: old ready instances do not count; one spawned since the read is
        unknown until read anew, and only then once every wanted one is ready."""
        current = Goal(ready=True, current=True)
        rows = [{**row(o, "running"), "ready": True, "spec": "old"} for o in (1, 2, 3)]
        view = view_of({**TEMPLATE, "launch": "new"}, rows)
        assert judge(view, Goal(ready=True)) is Verdict.REACHED and judge(view, current) is Verdict.WAITING
        view = fold(view, proc("stop", 1), proc("spawn", 1), proc("running", 1))
        assert judge(view, current) is Verdict.WAITING and needs_read(view, current)
        fresh = view_of({**TEMPLATE, "launch": "new"}, [{**r, "spec": "new"} for r in rows])
        assert judge(fresh, current) is Verdict.REACHED and not needs_read(fresh, current)
        with pytest.raises(ValueError):
            Goal(running=1, current=True)

    def test_an_update_reads_the_state_anew(self):
        """template.<t>.updated may change the check (and so what running means): read again."""
        assert fold(view_of(TEMPLATE, []), ("template.web.updated", {"numprocesses": 3})).refresh

    def test_ready_wants_every_ordinal_and_nothing_while_stopped(self):
        """ready: 1..numprocesses all running; a stopped template wants none."""
        view = view_of(TEMPLATE, [row(1, "running"), row(2, "running"), row(3, "backoff")])
        assert judge(view, Goal(ready=True)) is Verdict.WAITING
        assert progress(view, Goal(ready=True)) == "2 of 3 wanted ready (not ready: web.3)"
        view = observe(view, "template.web.stopped", {"name": "web", "numprocesses": 3, "version": 1})
        assert judge(view, Goal(ready=True)) is Verdict.REACHED

    def test_failures_downs_and_deletion(self):
        """A cluster-wide failure, a node down (unknown), a node back (read again), deleted (gone)."""
        view = view_of(TEMPLATE, [row(1, "running"), row(2, "running", "n2")])
        view = fold(view, proc("failed", 1, None))
        assert judge(view, Goal(running=1)) is Verdict.REACHED
        view = observe(view, "node.n2.down", {"node": "n2", "previous": "suspect"})
        assert judge(view, Goal(running=0)) is Verdict.REACHED and not view.refresh
        assert observe(view, "node.n2.up", {"node": "n2", "resync": True}).refresh
        assert not observe(view, "node.n9.up", {"node": "n9", "resync": False}).refresh
        view = observe(view, "template.web.deleted", {"name": "web"})
        assert judge(view, Goal(running=0)) is Verdict.GONE

    def test_a_goal_is_one_of_the_two(self):
        """Neither or both is refused."""
        with pytest.raises(ValueError):
            Goal()
        with pytest.raises(ValueError):
            Goal(running=2, ready=True)

    @given(st.lists(st.tuples(st.sampled_from(["spawn", "running", "exit", "stop", "failed", "flap"]),
                              st.integers(1, 4), st.sampled_from(["n1", "n2"])), max_size=40))
    def test_folding_events_gives_what_ps_would_show(self, events):
        """Whatever the events, the view holds each (node, id)'s last state, as ps would."""
        view = fold(view_of(TEMPLATE, []), *(proc(kind, o, n) for kind, o, n in events))
        last: dict[tuple[str, str], str] = {}
        states = {"spawn": "starting", "running": "running", "exit": "exited", "stop": "stopped",
                  "failed": "failed"}
        for kind, ordinal, node in events:
            if kind in states:
                last[(node, f"web.{ordinal}")] = states[kind]
        assert dict(view.states) == last


# ---------------------------------------------------------------- the shell, on a fake client


@dataclass
class Received:
    topic: str
    data: dict[str, Any]


class FakeClient:
    """``call``, ``listing`` and ``events`` of an AsyncClient, served from memory."""

    def __init__(self, template: dict[str, Any] | None, rows: list[dict[str, Any]]) -> None:
        self.template = template
        self.rows = rows
        self.stream: asyncio.Queue[Any] = asyncio.Queue()
        self.reads = 0
        self.subscribed: tuple[str, ...] = ()
        self.read_done = asyncio.Event()

    async def call(self, op: str, **args: Any) -> Any:
        if op == "status":
            return {"events": "ipc:///nowhere"}
        assert op == "get" and args == {"name": "web"}
        if self.template is None:
            raise TemplateNotFound("web")
        return self.template

    async def listing(self, op: str, **args: Any) -> list[dict[str, Any]]:
        assert op == "ps"
        self.reads += 1
        self.read_done.set()
        return list(self.rows)

    async def events(self, prefixes, since=None):
        self.subscribed = tuple(prefixes)
        self.since = since
        while True:
            yield await self.stream.get()


async def run_wait(client: FakeClient, goal: Goal, timeout: float = 10.0) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(waiting.wait_for(client, "web", goal, timeout))
    await asyncio.wait_for(client.read_done.wait(), 5)
    return task


async def test_wait_follows_the_stream_until_reached():
    """State once, then events: reached on the event that completes the goal."""
    client = FakeClient(TEMPLATE, [row(1, "running")])
    task = await run_wait(client, Goal(running=2))
    assert client.subscribed == ("proc.web.", "template.web.", "node.")
    await client.stream.put(Received(*proc("running", 2)))
    assert await asyncio.wait_for(task, 5) == (0, "web: 2 running (wanted 2)")
    assert client.reads == 1


async def test_wait_exits_2_when_the_template_is_deleted_meanwhile():
    """template.<name>.deleted while waiting: exit 2, saying so."""
    client = FakeClient(TEMPLATE, [])
    task = await run_wait(client, Goal(ready=True))
    await client.stream.put(Received("template.web.deleted", {"name": "web"}))
    assert await asyncio.wait_for(task, 5) == (2, "web: the template was deleted")


async def test_a_lost_events_marker_makes_the_state_be_read_again():
    """Anything the stream yields that is not an event (EventsLost, Snapshot) -> ps again."""
    client = FakeClient(TEMPLATE, [])
    task = await run_wait(client, Goal(running=1))
    client.rows = [row(1, "running")]
    await client.stream.put(object())
    assert (await asyncio.wait_for(task, 5))[0] == 0 and client.reads == 2


async def test_wait_times_out_with_its_progress():
    """Nothing comes: exit 1 at the bound, with where the template stands."""
    client = FakeClient(TEMPLATE, [row(1, "running")])
    status, message = await waiting.wait_for(client, "web", Goal(running=3), 0.05)
    assert (status, message) == (1, "web: not 3 running within 0.05s: 1 running (wanted 3)")


async def test_wait_for_a_missing_template_exits_2():
    """No such template: exit 2 before any event."""
    client = FakeClient(None, [])
    assert await waiting.wait_for(client, "web", Goal(ready=True), 5) == (2, "no template named 'web'")
