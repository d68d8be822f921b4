"""The converge as a pure plan: scenario tables, then properties against a literal reference."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.lifecycle import LIFECYCLE, State
from gaffer.agent.plan import Actions, Wanted, plan
from plan_harness import (
    SPEC, View, assert_actions, carry_out, insts, reference_plan, unavailable, want,
)
from budget import examples

# (name, wanted, instances, holding, expected actions)
SCENARIOS: list[tuple[str, Wanted, dict[Any, str], bool, dict[str, Any]]] = [
    ("a new template spawns every ordinal in order",
     want(3, 1, 2), {}, False, {"spawn": [1, 2, 3]}),
    ("what runs as wanted is left alone",
     want(1, 2), {1: "running", 2: "starting"}, False, {}),
    ("scale down stops the unwanted, forgets the ended",
     want(1), {1: "running", 2: "running", 3: "exited", 4: "failed"}, False,
     {"stop": [2], "forget": [3, 4]}),
    ("an unwanted one waiting in backoff is unwaited and forgotten",
     want(1), {1: "running", 2: "backoff"}, False, {"unwait": [2], "forget": [2]}),
    ("paused: everything stops, nothing is forgotten",
     want(1, 2, active=False), {1: "running", 2: "backoff waiting"}, False,
     {"stop": [1], "unwait": [2]}),
    ("deleting: stop what lives, forget the rest, not deleted yet",
     want(1, 2, deleting=True), {1: "running", 2: "stopped"}, False,
     {"stop": [1], "forget": [2]}),
    ("deleting: nothing left, the template goes",
     want(1, deleting=True), {1: "stopped"}, False, {"forget": [1], "delete": True}),
    ("held: what should start waits, nothing spawns",
     want(1, 2, 3), {1: "running", 2: "stopped"}, True, {"wait": [2, 3]}),
    ("held: one already waiting is not moved again",
     want(1, 2), {1: "backoff waiting", 2: "stopped"}, True, {"wait": [2]}),
    ("a backoff with its timer (a respawn, or a flapping suspension) is left to the timer",
     want(1), {1: "backoff"}, False, {}),
    ("a suspended instance stays suspended while its siblings spawn",
     want(1, 2, 3), {1: "backoff", 2: "stopped", 3: "running"}, False, {"spawn": [2]}),
    ("one that gave up stays failed while its siblings spawn",
     want(1, 2), {1: "failed", 2: "backoff waiting"}, False, {"spawn": [2]}),
    ("released: waiting ones spawn",
     want(1, 2), {1: "backoff waiting", 2: "running"}, False, {"spawn": [1]}),
    ("exited stays exited until started by hand",
     want(1), {1: "exited"}, False, {}),
    ("a roll stops the lowest outdated within the allowance",
     want(1, 2, 3, 4, max_unavailable=2), {o: "running old" for o in (1, 2, 3, 4)}, False,
     {"roll": [1, 2], "rolling": True}),
    ("a roll counts what is down already",
     want(1, 2, 3, max_unavailable=2), {1: "stopping", 2: "running old", 3: "running old"}, False,
     {"roll": [2], "rolling": True}),
    ("an outdated starting one is stopped whatever the allowance",
     want(1, 2, 3), {1: "starting old", 2: "starting", 3: "running old"}, False,
     {"roll": [1], "rolling": True}),
    ("a roll waits for spawns to come up first",
     want(1, 2), {1: "running old"}, False, {"spawn": [2], "rolling": True}),
    ("a new restart generation is outdated too",
     want(1, restart_gen=2), {1: "running gen=1"}, False, {"roll": [1], "rolling": True}),
    ("a replacement up but not ready yet still counts against the allowance",
     want(1, 2, 3, max_unavailable=1), {1: "running gated", 2: "ready old gated", 3: "ready old gated"},
     False, {"rolling": True}),
    ("an unhealthy replacement holds the roll too",
     want(1, 2, max_unavailable=1), {1: "unhealthy gated", 2: "ready old gated"}, False,
     {"rolling": True}),
    ("once the replacement is ready the next one goes",
     want(1, 2, 3, max_unavailable=1), {1: "ready gated", 2: "ready old gated", 3: "ready old gated"},
     False, {"roll": [2], "rolling": True}),
    ("an outdated one that is not ready goes at once",
     want(1, 2, max_unavailable=1), {1: "running old gated", 2: "ready old gated"}, False,
     {"roll": [1], "rolling": True}),
    ("held: no roll",
     want(1, 2), {1: "running old", 2: "running old"}, True, {"rolling": True}),
    ("named ordinals sort after numbers",
     Wanted(frozenset({"b", 2, "a", 1}), spec=SPEC), {}, False, {"spawn": [1, 2, "a", "b"]}),
]


class TestScenarios:
    @pytest.mark.parametrize(
        ("name", "wanted", "table", "holding", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
    )
    def test_scenario(self, name: str, wanted: Wanted, table: dict[Any, str],
                      holding: bool, expected: dict[str, Any]) -> None:
        """Each row's plan is exactly the actions it names (and no others)."""
        instances = insts(table)
        actions = plan(wanted, instances, holding)
        assert_actions(actions, **expected)
        assert actions == reference_plan(wanted, instances, holding)

    def test_a_busy_template_is_not_deleted(self) -> None:
        """A deleted template with a one-off run still going stays until the run ends."""
        actions = plan(want(deleting=True), {}, False, busy=True)
        assert_actions(actions, delete=False)

    def test_log_fields_count_each_list(self) -> None:
        """log_fields gives one count per list, for one structured log line."""
        fields = plan(want(1, 2), insts({3: "running"}), False).log_fields()
        assert fields == {"stop": 1, "unwait": 0, "forget": 0, "spawn": 2, "wait": 0, "roll": 0,
                          "delete": False, "rolling": False}


ORDINALS = st.integers(min_value=1, max_value=10)
STATES = st.sampled_from(LIFECYCLE)


@st.composite
def views(draw: st.DrawFn) -> View:
    state = draw(STATES)
    return View(
        state,
        waiting=state is State.BACKOFF and draw(st.booleans()),
        spec_hash=draw(st.sampled_from([SPEC, "old"])),
        restart_gen=draw(st.integers(0, 1)),
        gated=draw(st.booleans()),
    )


@st.composite
def situations(draw: st.DrawFn) -> tuple[Wanted, dict[int, View], bool, bool]:
    wanted = Wanted(
        frozenset(draw(st.sets(ORDINALS, max_size=8))),
        active=draw(st.booleans()),
        deleting=draw(st.integers(0, 5)) == 0,
        spec=SPEC,
        restart_gen=draw(st.integers(0, 1)),
        max_unavailable=draw(st.integers(1, 4)),
    )
    instances = draw(st.dictionaries(ORDINALS, views(), max_size=8))
    return wanted, instances, draw(st.booleans()), draw(st.booleans())


class TestProperties:
    @settings(max_examples=examples(400), deadline=None)
    @given(situations())
    def test_plan_matches_the_reference(self, case: tuple[Wanted, dict[int, View], bool, bool]) -> None:
        """The plan is exactly what the literal reference decides."""
        wanted, instances, holding, busy = case
        assert plan(wanted, instances, holding, busy=busy) == reference_plan(
            wanted, instances, holding, busy
        )

    @settings(max_examples=examples(400), deadline=None)
    @given(situations())
    def test_planning_the_outcome_again_changes_nothing(
        self, case: tuple[Wanted, dict[int, View], bool, bool]
    ) -> None:
        """Carry a plan out, plan again with no new fact: nothing more to do."""
        wanted, instances, holding, busy = case
        first = plan(wanted, instances, holding, busy=busy)
        if first.delete:
            return
        after = carry_out(first, wanted, instances)
        again = plan(wanted, after, holding, busy=busy)
        assert not again.changes(), again

    @settings(max_examples=examples(400), deadline=None)
    @given(situations())
    def test_never_more_than_max_unavailable_down(
        self, case: tuple[Wanted, dict[int, View], bool, bool]
    ) -> None:
        """A plan takes down no more wanted instances than the allowance (beyond those down)."""
        wanted, instances, holding, busy = case
        actions = plan(wanted, instances, holding, busy=busy)
        before = unavailable(wanted, instances)
        after = unavailable(wanted, carry_out(actions, wanted, instances))
        assert after <= max(before, wanted.max_unavailable)

    @settings(max_examples=examples(400), deadline=None)
    @given(situations())
    def test_held_nothing_spawns(
        self, case: tuple[Wanted, dict[int, View], bool, bool]
    ) -> None:
        """While held no spawn and no roll; a suspended (backoff with its timer) or failed
        instance is never spawned."""
        wanted, instances, holding, busy = case
        actions = plan(wanted, instances, holding, busy=busy)
        if holding:
            assert actions.spawn == () and actions.roll == ()
        for ordinal in actions.spawn:
            view = instances.get(ordinal)
            assert view is None or view.state is State.STOPPED or view.waiting

    @settings(max_examples=examples(400), deadline=None)
    @given(situations())
    def test_actions_respect_what_is_wanted(
        self, case: tuple[Wanted, dict[int, View], bool, bool]
    ) -> None:
        """Only wanted ordinals start or roll; only unwanted ones stop or are forgotten; each
        ordinal gets at most one of stop, spawn, wait, roll."""
        wanted, instances, holding, busy = case
        actions = plan(wanted, instances, holding, busy=busy)
        here = wanted.here
        assert set(actions.spawn + actions.wait + actions.roll) <= here
        assert not set(actions.stop + actions.unwait + actions.forget) & here
        exclusive = actions.stop + actions.spawn + actions.wait + actions.roll
        assert len(exclusive) == len(set(exclusive))
        assert not wanted.deleting or not (actions.spawn or actions.wait or actions.roll)

    @settings(max_examples=examples(200), deadline=None)
    @given(situations())
    def test_every_wanted_ordinal_ends_up_with_a_record(
        self, case: tuple[Wanted, dict[int, View], bool, bool]
    ) -> None:
        """Once carried out, every ordinal that should run here has an instance record."""
        wanted, instances, holding, busy = case
        actions = plan(wanted, instances, holding, busy=busy)
        assert wanted.here <= set(carry_out(actions, wanted, instances)) or actions.delete


def test_plan_returns_frozen_values() -> None:
    """Actions are values: equal inputs give equal, immutable results."""
    a = plan(want(1, 2), {}, False)
    assert a == plan(want(1, 2), {}, False) and isinstance(a, Actions)
    with pytest.raises(AttributeError):
        a.spawn = ()  # type: ignore[misc]
