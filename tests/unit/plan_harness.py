"""Builders, one assertion helper, a literal reference and a simulator for ``plan``'s tests.

Instances are written as a string per ordinal, the way one would say them: ``"running"``,
``"running old"`` (another spec), ``"backoff waiting"`` (no respawn timer), ``"starting"``,
``"running gated"`` (up, its template has a check: not ready yet), ``"ready"``...
``carry_out`` applies a plan's actions to such records as the Manager would, without any new
fact (no exit, no timer), so properties can plan the result again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from gaffer.agent.lifecycle import State
from gaffer.agent.plan import Actions, Ordinal, Wanted, sort_key

SPEC = "new"
UNAVAILABLE = frozenset({State.STOPPED, State.STARTING, State.STOPPING, State.BACKOFF, State.FAILED})


@dataclass(frozen=True)
class View:
    """What ``plan`` reads of an instance."""

    state: State
    waiting: bool = False
    spec_hash: str | None = SPEC
    restart_gen: int = 0
    gated: bool = False
    """Its template has a check or notify: ``running`` is not ready (as ``Instance.gated``)."""

    @property
    def ready(self) -> bool:
        return self.state is State.READY or (self.state is State.RUNNING and not self.gated)


def inst(text: str) -> View:
    """``"<state> [waiting] [old] [gen=N] [gated]"`` -> View."""
    words = text.split()
    gen = next((int(w[4:]) for w in words if w.startswith("gen=")), 0)
    return View(State(words[0]), "waiting" in words, "old" if "old" in words else SPEC, gen, "gated" in words)


def insts(table: Mapping[Ordinal, str]) -> dict[Ordinal, View]:
    return {ordinal: inst(text) for ordinal, text in table.items()}


def want(*ordinals: Ordinal, **fields: object) -> Wanted:
    return Wanted(frozenset(ordinals), spec=SPEC, **fields)  # type: ignore[arg-type]


LISTS = ("stop", "unwait", "forget", "spawn", "wait", "roll")


def assert_actions(actions: Actions, *, delete: bool = False, rolling: bool | None = None,
                   **lists: list[Ordinal]) -> None:
    """Each list not named must be empty; named ones must be exactly as given."""
    unknown = set(lists) - set(LISTS)
    assert not unknown, f"no such action list: {unknown}"
    got = {name: getattr(actions, name) for name in LISTS}
    expected = {name: tuple(lists.get(name, ())) for name in LISTS}
    assert got == expected, f"{got} != {expected}"
    assert actions.delete is delete
    if rolling is not None:
        assert actions.rolling is rolling


def unavailable(wanted: Wanted, instances: Mapping[Ordinal, View]) -> int:
    here = wanted.here
    return sum(1 for o in here if o not in instances or down(instances[o]))


def down(view: View) -> bool:
    """Counted against the allowance: not serving, and not exited for good."""
    return view.state in UNAVAILABLE or (view.state in UP and not view.ready)


UP = frozenset({State.RUNNING, State.READY, State.UNHEALTHY})


def carry_out(actions: Actions, wanted: Wanted, instances: Mapping[Ordinal, View]) -> dict[Ordinal, View]:
    """The instance records once the Manager has carried ``actions`` out (no exit yet)."""
    out = dict(instances)
    for o in (*actions.stop, *actions.roll):
        out[o] = replace(out[o], state=State.STOPPING)
    for o in actions.unwait:
        out[o] = replace(out[o], state=State.STOPPED, waiting=False)
    for o in actions.forget:
        del out[o]
    if actions.delete:
        return {}
    for o in actions.wait:
        out[o] = replace(out.get(o, View(State.STOPPED)), state=State.BACKOFF, waiting=True)
    for o in actions.spawn:
        out[o] = View(State.STARTING, False, wanted.spec, wanted.restart_gen, out[o].gated if o in out else False)
    return out


def reference_plan(
    wanted: Wanted,
    instances: Mapping[Ordinal, View],
    holding: bool,
    busy: bool = False,
) -> Actions:
    """The converge rules in their most literal form: one question per ordinal, and a roll
    that stops one outdated instance at a time while fewer than the allowance are down.

    Far too slow for thousands of instances, and plain enough to trust: ``plan`` must give
    exactly this."""
    here = wanted.ordinals if wanted.active and not wanted.deleting else frozenset()

    def order(ordinals: object) -> tuple[Ordinal, ...]:
        return tuple(sorted(ordinals, key=sort_key))  # type: ignore[call-overload]

    def live(o: Ordinal) -> bool:
        return instances[o].state in (State.STARTING, State.RUNNING, State.READY, State.UNHEALTHY)

    stop = order(o for o in instances if o not in here and live(o))
    unwait = order(o for o in instances if o not in here and instances[o].state is State.BACKOFF)
    state_after = {o: State.STOPPED if o in unwait else v.state for o, v in instances.items()}
    forget = order(
        o for o in instances
        if o not in here and state_after[o] in (State.STOPPED, State.EXITED, State.FAILED)
        and (wanted.deleting or o not in wanted.ordinals)
    )
    if wanted.deleting:
        return Actions(stop, unwait, forget, delete=len(forget) == len(instances) and not busy)
    def to_begin(o: Ordinal) -> bool:
        view = instances.get(o)
        if view is None or view.state is State.STOPPED:
            return True
        return view.state is State.BACKOFF and view.waiting

    begun = order(o for o in here if to_begin(o))
    spawn = wait = ()
    if holding:
        wait = order(o for o in begun if not (o in instances and instances[o].waiting))
    else:
        spawn = begun
    outdated = order(
        o for o in here
        if o in instances and live(o)
        and (instances[o].spec_hash != wanted.spec or instances[o].restart_gen != wanted.restart_gen)
    )
    roll = []
    if not holding:
        views = {o: instances.get(o, View(State.STOPPED)) for o in here}
        for o in outdated:
            unavailable = sum(1 for v in views.values() if down(v))
            if not views[o].ready:
                roll.append(o)
            elif unavailable < wanted.max_unavailable:
                roll.append(o)
                views[o] = replace(views[o], state=State.STOPPING)
    return Actions(stop, unwait, forget, spawn, wait, tuple(roll), rolling=bool(outdated))
