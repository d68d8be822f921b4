"""``gafferctl wait``: whether a template has reached a goal, judged from state and events.

Pure: the command (``waiting``) reads the template and its instances once (``get``, ``ps``)
into a ``View``, then folds each event of the stream into it (``observe``) and asks ``judge``
again; nothing here reads a clock or a socket. Events are state changes ("web.2 on n1 is now
running"), so a view kept up to date by them is the view ``ps`` would give.

Vocabulary::

    Goal     ``running=N``: exactly N instances of the template up (running, ready or
             unhealthy; one-off runs aside); ``ready``: every wanted instance (ordinals
             1..numprocesses, none while the template is stopped) ready: its row's ``ready``
             flag, then ``proc.<t>.ready`` (and, for a template with neither a check nor
             ``notify``, ``proc.<t>.running``, which is its ready); ``ready`` with
             ``current`` (``apply --wait``): ready on the current version, whose spec digest
             ``get`` gives as ``launch`` (a process spawned since the last read has a spec
             not known here: once all else is reached, the state is read anew)
    View     the template's count, whether it is paused or deleted, whether it is gated (a
             check or ``notify``), the state of each instance per node (``(node, id) ->
             state``; node None for one not placed), and which of those are ready
    observe  the view after one event; ``refresh`` set when only a new read can say
             (a node came back after it was down: its instances' states are unknown here)
    judge    REACHED, WAITING or GONE (the template does not exist)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

RUNNING = "running"
UNKNOWN = "unknown"
UP = frozenset({RUNNING, "ready", "unhealthy"})
PROC_STATES = {"spawn": "starting", "running": RUNNING, "exit": "exited", "stop": "stopped",
               "failed": "failed", "ready": "ready", "unhealthy": "unhealthy"}
"""The instance state each ``proc.<t>.<kind>`` event leaves (``flap`` changes none)."""


class Verdict(enum.Enum):
    REACHED = "reached"
    WAITING = "waiting"
    GONE = "gone"


@dataclass(frozen=True)
class Goal:
    running: int | None = None
    ready: bool = False
    current: bool = False

    def __post_init__(self) -> None:
        if (self.running is None) == (not self.ready):
            raise ValueError("a goal is either running=N or ready, not both or neither")
        if self.running is not None and self.running < 0:
            raise ValueError(f"running must be >= 0, got {self.running}")
        if self.current and not self.ready:
            raise ValueError("current goes with ready")

    def describe(self) -> str:
        return "ready" if self.ready else f"{self.running} running"


Key = tuple[str | None, str]
"""(node, instance id)."""


@dataclass(frozen=True)
class View:
    name: str
    numprocesses: int = 0
    paused: bool = False
    deleted: bool = False
    states: Mapping[Key, str] = field(default_factory=dict)
    refresh: bool = False
    gated: bool = False
    """The template has a check or ``notify``: ``running`` is not ready yet."""
    ready: frozenset[Key] = frozenset()
    launch: str | None = None
    """The spec digest instances of the current version report (``get``'s ``launch``)."""
    specs: Mapping[Key, str | None] = field(default_factory=dict)
    """Each instance's spec digest; None for a process spawned since the last read."""


def view_of(template: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> View:
    """The view from a ``get`` result and the ``ps`` rows of that template (one-offs left out).
    A row without ``ready`` (a controller from before readiness) is ready when running."""
    states: dict[Key, str] = {}
    ready: set[Key] = set()
    specs: dict[Key, str | None] = {}
    for row in rows:
        if type(row.get("ordinal")) is not int:
            continue
        key = (row["node"], row["id"])
        states[key] = row["state"]
        specs[key] = row.get("spec")
        if row.get("ready", row["state"] == RUNNING):
            ready.add(key)
    spec = template.get("spec") or {}
    gated = bool(spec.get("health") or spec.get("notify"))
    return View(template["name"], template["numprocesses"], bool(template["paused"]), False, states,
                gated=gated, ready=frozenset(ready), launch=template.get("launch"), specs=specs)


def observe(view: View, topic: str, data: Mapping[str, Any]) -> View:
    """The view after event ``topic`` (other templates' events leave it as it is)."""
    family, _, rest = topic.partition(".")
    subject, _, kind = rest.rpartition(".")
    if family == "template" and subject == view.name:
        return _template_event(view, kind, data)
    if family == "proc" and subject == view.name and kind in PROC_STATES:
        return _proc_event(view, kind, data)
    if family == "node":
        return _node_event(view, subject, kind)
    return view


def _template_event(view: View, kind: str, data: Mapping[str, Any]) -> View:
    if kind == "deleted":
        return replace(view, deleted=True, states={}, ready=frozenset())
    if kind == "updated":
        return replace(view, refresh=True)  # its check may have changed: read it anew
    count = data.get("numprocesses")
    numprocesses = count if type(count) is int else view.numprocesses
    paused = True if kind == "stopped" else False if kind in ("started", "created") else view.paused
    return replace(view, numprocesses=numprocesses, paused=paused, deleted=False)


def _proc_event(view: View, kind: str, data: Mapping[str, Any]) -> View:
    ident = data.get("id")
    if type(data.get("ordinal")) is not int or not isinstance(ident, str):
        return view  # a one-off run, or a template-wide event
    states = dict(view.states)
    ready = set(view.ready)
    node = data.get("node")
    is_ready = kind == "ready" or (kind == "running" and not view.gated)
    if node is None:  # failed on every node (``scope`` cluster)
        for key in [k for k in states if k[1] == ident]:
            states[key] = PROC_STATES[kind]
            ready.discard(key)
        states[(None, ident)] = PROC_STATES[kind]
    else:
        states.pop((None, ident), None)
        ready.discard((None, ident))
        states[(node, ident)] = PROC_STATES[kind]
        if is_ready:
            ready.add((node, ident))
        else:
            ready.discard((node, ident))
        if kind == "spawn":
            return replace(view, states=states, ready=frozenset(ready), specs={**view.specs, (node, ident): None})
    return replace(view, states=states, ready=frozenset(ready))


def _node_event(view: View, node: str, kind: str) -> View:
    held = [key for key in view.states if key[0] == node]
    if kind == "down" and held:
        states = dict(view.states)
        for key in held:
            states[key] = UNKNOWN
        return replace(view, states=states, ready=view.ready - set(held))
    if kind == "up" and any(view.states[key] == UNKNOWN for key in held):
        return replace(view, refresh=True)
    return view


def running_ids(view: View) -> set[str]:
    """Instances with a process up on some node, ready or not (an instance moving counts once)."""
    return {ident for (_, ident), state in view.states.items() if state in UP}


def ready_ids(view: View, current: bool = False) -> set[str]:
    """Instances ready on some node (``current``: on the current version)."""
    if not current or view.launch is None:
        return {ident for _, ident in view.ready}
    specs, launch = view.specs, view.launch
    return {key[1] for key in view.ready if specs.get(key) == launch}


def needs_read(view: View, goal: Goal) -> bool:
    """Whether only a new read can tell: every wanted instance is ready, but some ready one
    was spawned since the last read (its version is not known here)."""
    if not goal.current or view.launch is None or judge(view, goal) is not Verdict.WAITING:
        return False
    return wanted_ids(view) <= ready_ids(view) and any(view.specs.get(key, "") is None for key in view.ready)


def wanted_ids(view: View) -> set[str]:
    if view.paused:
        return set()
    return {f"{view.name}.{ordinal}" for ordinal in range(1, view.numprocesses + 1)}


def judge(view: View, goal: Goal) -> Verdict:
    if view.deleted:
        return Verdict.GONE
    if goal.ready:
        reached = wanted_ids(view) <= ready_ids(view, goal.current)
    else:
        reached = len(running_ids(view)) == goal.running
    return Verdict.REACHED if reached else Verdict.WAITING


def progress(view: View, goal: Goal) -> str:
    """Where the template stands, for the timeout message: ``2 of 3 wanted ready``."""
    if goal.ready:
        wanted = wanted_ids(view)
        missing = sorted(wanted - ready_ids(view, goal.current), key=_ordinal)
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        return f"{len(wanted) - len(missing)} of {len(wanted)} wanted ready" + (
            f" (not ready: {shown})" if missing else "")
    return f"{len(running_ids(view))} running (wanted {goal.running})"


def _ordinal(ident: str) -> int:
    tail = ident.rpartition(".")[2]
    return int(tail) if tail.isdigit() else 0
