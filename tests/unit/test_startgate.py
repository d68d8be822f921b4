"""The controller's start gate (``controller/startgate.py``): which templates wait for their
``depends_on``, counted from placement and reports, and the desired-state checks of an apply
or a delete. Pure: no process, no socket."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common.dependson import Dependency
from gaffer.common.errors import TemplateError
from gaffer.controller.startgate import Progress, gate, graph_check, progress_of, satisfied
from gaffer.controller.template_rows import StoredTemplate
from gaffer.testing import template
from budget import examples


def row(ident: str, state: str, ready: bool = False, exit_code: int | None = None) -> dict:
    name, _, ordinal = ident.rpartition(".")
    found = {"id": ident, "template": name, "ordinal": int(ordinal), "pid": None, "state": state,
             "restarts": 0, "started_at": None, "spec": None, "ready": ready}
    if exit_code is not None:
        found["exit_code"] = exit_code
    return found


class TestSatisfied:
    @pytest.mark.parametrize("condition, progress, expected", [
        ("started", Progress(wanted=2), False),
        ("started", Progress(wanted=2, live=1), False),
        ("started", Progress(wanted=2, live=1, up=1), True),
        ("started", Progress(wanted=1, completed=1), True),
        ("ready", Progress(wanted=3, live=3, up=3), False),
        ("ready", Progress(wanted=3, live=3, up=3, ready=1), True),
        ("completed", Progress(wanted=2, completed=1), False),
        ("completed", Progress(wanted=2, completed=2), True),
        ("ready", Progress(wanted=0, live=1, up=1, ready=1), False),
    ])
    def test_each_condition(self, condition, progress, expected):
        """started: one up; ready: one ready; completed: all it wants exited 0; nothing of a
        dependency that wants no instance (scaled to 0 or paused)."""
        assert satisfied(Dependency("db", condition), progress) is expected


class TestGate:
    def test_a_template_waits_with_every_unsatisfied_dependency_named(self):
        """web waits for db to be ready and migrate to complete; worker (on cache started) may start."""
        depends = {
            "web": (Dependency("db"), Dependency("migrate", "completed")),
            "worker": (Dependency("cache", "started"),),
        }
        progress = {"db": Progress(1, 1, 1), "migrate": Progress(1), "cache": Progress(1, 1, 1)}
        assert gate(depends, progress) == {"web": "waiting for db to be ready, migrate to complete"}

    def test_a_template_with_a_live_instance_is_never_held(self):
        """web already runs: db going down does not hold (and so stop) it."""
        depends = {"web": (Dependency("db"),)}
        assert gate(depends, {"db": Progress(1), "web": Progress(1, live=1, up=1)}) == {}
        assert gate(depends, {"db": Progress(1), "web": Progress(1)}) == {"web": "waiting for db to be ready"}

    def test_a_missing_dependency_holds(self):
        """A dependency that does not exist (a store written by hand) satisfies nothing."""
        assert gate({"web": (Dependency("db", "started"),)}, {}) == {"web": "waiting for db to be started"}


class TestProgress:
    def test_counted_from_placed_ordinals_and_each_nodes_reports(self):
        """Per template: live (or exited), up, ready, and exited with status 0; rows of ordinals not
        placed on that node (stale copies) are not counted."""
        by_node = {"n1": {"db": [1, 2], "migrate": [1]}, "n2": {"db": [3]}}
        rows = {
            "n1": {"db.1": row("db.1", "ready", True), "db.2": row("db.2", "starting"),
                   "migrate.1": row("migrate.1", "exited", exit_code=0), "db.3": row("db.3", "ready", True)},
            "n2": {"db.3": row("db.3", "unhealthy")},
        }
        found = progress_of(["db", "migrate", "web"], {"db": 3, "migrate": 1}, by_node, rows)
        assert found["db"] == Progress(wanted=3, live=3, up=2, ready=1)
        assert found["migrate"] == Progress(wanted=1, live=1, completed=1)
        assert found["web"] == Progress()

    def test_a_job_that_failed_has_not_completed(self):
        """exited with status 1, or with no status (killed by a signal): not completed."""
        by_node = {"n1": {"migrate": [1, 2]}}
        rows = {"n1": {"migrate.1": row("migrate.1", "exited", exit_code=1), "migrate.2": row("migrate.2", "exited")}}
        assert progress_of(["migrate"], {"migrate": 2}, by_node, rows)["migrate"].completed == 0


def stored(*templates) -> dict[str, StoredTemplate]:
    return {t.name: StoredTemplate(t, 1, False, 0.0, 0.0) for t in templates}


class TestGraphCheck:
    def test_an_apply_may_depend_on_what_is_stored_or_applied_with_it(self):
        """web on db (stored) and on cache (in the same apply): accepted."""
        graph_check(stored(template("db")), [template("cache"), template("web", depends_on=["db", "cache"])])

    def test_an_apply_without_depends_on_checks_nothing(self):
        """Stored templates that are already wrong (a hand-written store) do not block an
        unrelated apply."""
        graph_check(stored(template("web", depends_on=["gone"])), [template("other")])

    def test_a_cycle_through_stored_templates_is_refused(self):
        """api (stored, on db) and db applied on api: the cycle is named."""
        with pytest.raises(TemplateError, match="depends_on cycle: api -> db -> api"):
            graph_check(stored(template("db"), template("api", depends_on=["db"])), [template("db", depends_on=["api"])])

    def test_a_delete_may_not_leave_a_dependent_behind(self):
        """Deleting db refused while web depends on it; deleting both is accepted."""
        state = stored(template("db"), template("web", depends_on=["db"]))
        with pytest.raises(TemplateError, match="web.depends_on: depends on 'db': delete web with it"):
            graph_check(state, deleted=["db"])
        graph_check(state, deleted=["db", "web"])

    def test_a_delete_before_an_apply_that_drops_the_dependency_is_accepted(self):
        """gaffer start's reload: db leaves the file and web no longer depends on it; deleting
        db with that web about to be applied is accepted."""
        state = stored(template("db"), template("web", depends_on=["db"]))
        graph_check(state, [template("web")], ["db"])


NAMES = [f"t{i}" for i in range(6)]
dags = st.lists(
    st.tuples(st.sampled_from(list(range(len(NAMES)))), st.sampled_from(list(range(len(NAMES))))), max_size=12,
).map(lambda edges: {
    NAMES[a]: tuple(Dependency(NAMES[b]) for b in sorted({b for x, b in edges if x == a and b > a}))
    for a in range(len(NAMES)) if any(x == a and b > a for x, b in edges)
})
"""Acyclic by construction: a template depends only on templates with a higher index."""


class TestStartOrder:
    @settings(max_examples=examples(200), deadline=None)
    @given(dags, st.sampled_from(["started", "ready"]))
    def test_a_simulated_start_respects_every_edge_and_starts_everything(self, dags_graph, condition):
        """Rounds of: start what the gate lets start, then it becomes up and ready. Every
        template starts, never in a round before one of its dependencies."""
        depends = {name: tuple(Dependency(d.name, condition) for d in deps) for name, deps in dags_graph.items()}
        started_in: dict[str, int] = {}
        for round_ in range(len(NAMES) + 1):
            progress = {
                name: Progress(1, *(1, 1, 1, 0) if name in started_in else (0, 0, 0, 0)) for name in NAMES
            }
            held = gate(depends, progress)
            for name in NAMES:
                if name not in held and name not in started_in:
                    started_in[name] = round_
        assert sorted(started_in) == NAMES
        for name, deps in depends.items():
            for dep in deps:
                assert started_in[dep.name] < started_in[name]
