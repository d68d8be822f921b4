"""Assignments on a Manager driven by a fake clock and fake processes (no process, no socket)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from gaffer.agent.assignment import Assignments
from gaffer.agent.lease import Lease
from gaffer.agent.manager import Manager
from gaffer.common import assign
from gaffer.common.assign import Control
from gaffer.common.parts import split_assignment
from gaffer.testing.clock import FakeClock
from gaffer.testing.process import FakeProcesses


class Rig:
    def __init__(self, path: Path | None = None) -> None:
        self.clock = FakeClock()
        self.procs = FakeProcesses(self.clock)
        self.lease = Lease(held=True)
        self.manager = Manager(
            node="n1", clock=self.clock, processes=self.procs, lease=self.lease, environ={"PATH": "/bin"}
        )
        self.acks: list[tuple[int, list[str]]] = []
        self.assignments = Assignments(self.manager, lambda gen, errors: self.acks.append((gen, errors)), path)

    def apply(self, body: dict[str, Any]) -> bool:
        """As the agent does: apply, and release the hold once a whole one is applied."""
        applied = self.assignments.apply(body)
        if applied:
            self.lease.release()
        return applied

    def running(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for row in self.manager.instances():
            if row["state"] == "running":
                out.setdefault(row["template"], []).append(row["ordinal"])
        return out


def spec(cmd: str = "sleep", **fields: Any) -> dict[str, Any]:
    return {"cmd": cmd, "args": ["300"], "startsecs": 0, **fields}


def body(generation: int, templates: dict[str, dict[str, Any]], ordinals: dict[str, list[int]]) -> dict[str, Any]:
    """An ``assign`` body whose controls give each template its ordinals' count."""
    controls = {name: Control(count=len(ordinals.get(name, ()))) for name in templates}
    return assign.body(generation, templates, ordinals, controls)


class TestApply:
    async def test_an_assignment_runs_exactly_its_ordinals_and_is_acked(self) -> None:
        """The node runs the ordinals it is given (not 1..n), and acks the generation."""
        r = Rig()
        assert r.apply(body(3, {"web": spec()}, {"web": [2, 5]}))
        await r.clock.settle()
        assert r.running() == {"web": [2, 5]} and r.acks == [(3, [])]
        assert r.manager.get("web").numprocesses == 2

    async def test_an_older_generation_is_ignored(self) -> None:
        """A reordered or replayed older assignment changes nothing and is not acked again."""
        r = Rig()
        r.apply(body(5, {"web": spec()}, {"web": [1]}))
        assert not r.apply(body(4, {}, {}))
        await r.clock.settle()
        assert r.running() == {"web": [1]} and r.acks == [(5, [])]

    async def test_the_same_generation_again_changes_nothing(self) -> None:
        """Applying the same assignment twice spawns nothing more (and acks again)."""
        r = Rig()
        r.apply(body(1, {"web": spec()}, {"web": [1, 2]}))
        await r.clock.settle()
        r.apply(body(1, {"web": spec()}, {"web": [1, 2]}))
        await r.clock.settle()
        assert len(r.procs.spawned) == 2 and r.acks == [(1, []), (1, [])]

    async def test_a_template_this_host_cannot_run_is_reported_and_the_rest_applied(self) -> None:
        """A bad template is named in the ack's errors; the others still run."""
        r = Rig()
        bad = spec(uid="no-such-user-here")
        r.apply(body(1, {"bad": bad, "good": spec()}, {"bad": [1], "good": [1]}))
        await r.clock.settle()
        [(generation, errors)] = r.acks
        assert generation == 1 and [(e["template"], e["code"]) for e in errors] == [("bad", "invalid_template")]
        assert r.running() == {"good": [1]}

    async def test_parts_apply_only_once_all_are_there(self) -> None:
        """An assignment sent in parts is applied whole, at its last part, and acked once."""
        r = Rig()
        whole = body(7, {f"t{i}": spec() for i in range(6)}, {f"t{i}": [1] for i in range(6)})
        parts = split_assignment(whole, 200)
        assert len(parts) > 1
        for part in parts[:-1]:
            assert not r.apply(part)
        await r.clock.settle()
        assert r.procs.spawned == [] and r.acks == []
        assert r.apply(parts[-1])
        await r.clock.settle()
        assert len(r.running()) == 6 and r.acks == [(7, [])]


class TestRemoval:
    async def test_a_template_left_out_is_stopped_and_forgotten(self) -> None:
        """What the next assignment no longer has is stopped, then forgotten."""
        r = Rig()
        r.apply(body(1, {"a": spec(), "b": spec()}, {"a": [1], "b": [1]}))
        await r.clock.settle()
        r.apply(body(2, {"a": spec()}, {"a": [1]}))
        await r.clock.settle()
        assert [t.name for t in r.manager.templates()] == ["a"]
        assert [p.name for p in r.procs.alive()] == ["a.1"]

    async def test_a_template_given_back_during_its_removal_is_created_again(self) -> None:
        """Removed and re-assigned before its processes ended: it comes back once they have."""
        r = Rig()
        r.procs.ignores["b.1"] = {15}
        r.apply(body(1, {"b": spec(graceful_timeout=5)}, {"b": [1]}))
        await r.clock.settle()
        r.apply(body(2, {}, {}))
        await r.clock.settle()
        r.apply(body(3, {"b": spec(graceful_timeout=5)}, {"b": [1]}))
        await r.clock.settle()
        assert len(r.procs.alive()) == 1, "a second process while the first one stops"
        r.clock.advance(5)
        await r.clock.settle()
        assert r.running() == {"b": [1]} and len(r.procs.spawned) == 2

    async def test_a_template_with_a_one_off_run_stays_while_it_runs(self) -> None:
        """Unassigned while a one-off run goes: its instances stop, the run goes on, the
        template stays; the first assignment after the run removes it."""
        r = Rig()
        r.apply(body(1, {"job": spec()}, {"job": [1]}))
        await r.clock.settle()
        r.manager.run("job")
        r.apply(body(2, {}, {}))
        await r.clock.settle()
        assert [t.name for t in r.manager.templates()] == ["job"]
        assert [p.name for p in r.procs.alive()] == ["job.run-1"]
        r.procs.last("job.run-1").exit(0)
        r.apply(body(3, {}, {}))
        await r.clock.settle()
        assert r.manager.templates() == []

    async def test_aclose_ends_removals_still_going(self) -> None:
        """aclose cancels the removal tasks it owns, leaving no task behind."""
        r = Rig()
        r.procs.ignores["slow.1"] = {15}
        r.apply(body(1, {"slow": spec(graceful_timeout=60)}, {"slow": [1]}))
        await r.clock.settle()
        r.apply(body(2, {}, {}))
        await r.clock.settle()
        assert len(asyncio.all_tasks()) == 2, "the removal should still be waiting"
        await r.assignments.aclose()
        assert asyncio.all_tasks() == {asyncio.current_task()}


class TestSaved:
    async def test_applied_assignments_are_saved_and_restored_held(self, tmp_path: Path) -> None:
        """A restarted agent restores the saved assignment without releasing its hold."""
        path = tmp_path / "assignment.json"
        first = Rig(path)
        first.apply(body(4, {"web": spec()}, {"web": [1, 3]}))
        assert json.loads(path.read_text())["generation"] == 4
        second = Rig(path)
        assert second.assignments.restore()
        await second.clock.settle()
        assert second.procs.spawned == [] and second.lease.held
        assert sorted(r["ordinal"] for r in second.manager.instances("web")) == [1, 3]
        second.lease.release()
        await second.clock.settle()
        assert second.running() == {"web": [1, 3]}

    def test_a_damaged_save_is_ignored(self, tmp_path: Path) -> None:
        """A saved file that is not an assignment is ignored, not a crash."""
        path = tmp_path / "assignment.json"
        path.write_text("{not json")
        assert not Rig(path).assignments.restore()
        path.write_text('{"generation": 1}')
        assert not Rig(path).assignments.restore()
        assert not Rig(tmp_path / "missing.json").assignments.restore()
