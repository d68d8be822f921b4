"""A whole rolling update through ``plan``, step by step, with replacements that are up before
they are ready: the allowance is counted in instances that do not serve."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.lifecycle import State
from gaffer.agent.plan import Wanted, plan
from plan_harness import SPEC, View, carry_out
from budget import examples


def _ready(instances: dict[int, View]) -> int:
    return sum(1 for v in instances.values() if v.ready)


def _facts(instances: dict[int, View], broken: bool) -> list[tuple[int, State]]:
    """What may happen next to each instance: a stop ends, a spawn comes up, an up one turns
    ready (never for a broken version). Ready ones stay ready."""
    facts = []
    for ordinal, view in sorted(instances.items()):
        if view.state is State.STOPPING:
            facts.append((ordinal, State.STOPPED))
        elif view.state is State.STARTING:
            facts.append((ordinal, State.RUNNING))
        elif view.state is State.RUNNING and not view.ready and not broken:
            facts.append((ordinal, State.READY))
    return facts


def _roll(data: st.DataObject, count: int, allowance: int, broken: bool) -> dict[int, View]:
    """Roll ``count`` ready instances to a new spec; assert the floor after every step."""
    wanted = Wanted(frozenset(range(count)), spec=SPEC, max_unavailable=allowance)
    instances = {o: View(State.READY, spec_hash="old", gated=True) for o in range(count)}
    for _ in range(20 * count + 20):
        actions = plan(wanted, instances, False)
        instances = carry_out(actions, wanted, instances)
        instances = {o: replace(v, gated=True) for o, v in instances.items()}
        assert _ready(instances) >= count - allowance, instances
        facts = _facts(instances, broken)
        if not facts:
            break
        ordinal, state = data.draw(st.sampled_from(facts))
        instances[ordinal] = replace(instances[ordinal], state=state)
        assert _ready(instances) >= count - allowance, instances
    return instances


@settings(max_examples=examples(300), deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.data())
def test_a_roll_never_leaves_fewer_than_count_minus_allowance_ready(
    count: int, allowance: int, data: st.DataObject
) -> None:
    """At every step of a roll at least count - max_unavailable instances are ready, and it ends
    with every instance on the new spec and ready."""
    allowance = min(allowance, count)
    instances = _roll(data, count, allowance, broken=False)
    assert all(v.spec_hash == SPEC and v.state is State.READY for v in instances.values()), instances


@settings(max_examples=examples(200), deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.data())
def test_a_version_that_never_gets_ready_stops_the_roll(
    count: int, allowance: int, data: st.DataObject
) -> None:
    """When replacements never become ready, the roll stops once the allowance is used: the
    other old instances keep running, ready."""
    allowance = min(allowance, count)
    instances = _roll(data, count, allowance, broken=True)
    old = [v for v in instances.values() if v.spec_hash == "old"]
    assert len(old) == count - allowance and all(v.state is State.READY for v in old)
