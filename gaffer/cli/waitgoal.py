"""``gafferctl wait``: whether a template has reached a goal, judged from state and events.

Pure: the command (``waiting``) reads the template and its instances once (``get``, ``ps``)
into a ``View``, then folds each event of the stream into it (``observe``) and asks ``judge``
again; nothing here reads a clock or a socket. Events are state changes ("web.2 on n1 is now
running"), so a view kept up to date by them is the view ``ps`` would give.

Vocabulary::

    Goal     ``running=N``: exactly N instances of the template running (one-off runs aside);
             ``ready``: every wanted instance (ordinals 1..numprocesses, none while the
             template is stopped) running. Health checks are a later issue: until then
             ready means running.
    View     the template's count, whether it is paused or deleted, and the state of each
             instance per node (``(node, id) -> state``; node None for one not placed)
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
PROC_STATES = {"spawn": "starting", "running": RUNNING, "exit": "exited", "stop": "stopped",
               "failed": "failed"}
"""The instance state each ``proc.<t>.<kind>`` event leaves (``flap`` changes none)."""


class Verdict(enum.Enum):
    REACHED = "reached"
    WAITING = "waiting"
    GONE = "gone"


@dataclass(frozen=True)
class Goal:
    running: int | None = None
    ready: bool = False

    def __post_init__(self) -> None:
        if (self.running is None) == (not self.ready):
            raise ValueError("a goal is either running=N or ready, not both or neither")
        if self.running is not None and self.running < 0:
            raise ValueError(f"running must be >= 0, got {self.running}")

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


def view_of(template: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> View:
    """The view from a ``get`` result and the ``ps`` rows of that template (one-offs left out)."""
    states = {
        (row["node"], row["id"]): row["state"]
        for row in rows if type(row.get("ordinal")) is int
    }
    return View(template["name"], template["numprocesses"], bool(template["paused"]), False, states)


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
        return replace(view, deleted=True, states={})
    count = data.get("numprocesses")
    numprocesses = count if type(count) is int else view.numprocesses
    paused = True if kind == "stopped" else False if kind in ("started", "created") else view.paused
    return replace(view, numprocesses=numprocesses, paused=paused, deleted=False)


def _proc_event(view: View, kind: str, data: Mapping[str, Any]) -> View:
    ident = data.get("id")
    if type(data.get("ordinal")) is not int or not isinstance(ident, str):
        return view  # a one-off run, or a template-wide event
    states = dict(view.states)
    node = data.get("node")
    if node is None:  # failed on every node (``scope`` cluster)
        for key in [k for k in states if k[1] == ident]:
            states[key] = PROC_STATES[kind]
        states[(None, ident)] = PROC_STATES[kind]
    else:
        states.pop((None, ident), None)
        states[(node, ident)] = PROC_STATES[kind]
    return replace(view, states=states)


def _node_event(view: View, node: str, kind: str) -> View:
    held = [key for key in view.states if key[0] == node]
    if kind == "down" and held:
        states = dict(view.states)
        for key in held:
            states[key] = UNKNOWN
        return replace(view, states=states)
    if kind == "up" and any(view.states[key] == UNKNOWN for key in held):
        return replace(view, refresh=True)
    return view


def running_ids(view: View) -> set[str]:
    """Instances with a process running on some node (an instance moving counts once)."""
    return {ident for (_, ident), state in view.states.items() if state == RUNNING}


def wanted_ids(view: View) -> set[str]:
    if view.paused:
        return set()
    return {f"{view.name}.{ordinal}" for ordinal in range(1, view.numprocesses + 1)}


def judge(view: View, goal: Goal) -> Verdict:
    if view.deleted:
        return Verdict.GONE
    running = running_ids(view)
    if goal.ready:
        reached = wanted_ids(view) <= running
    else:
        reached = len(running) == goal.running
    return Verdict.REACHED if reached else Verdict.WAITING


def progress(view: View, goal: Goal) -> str:
    """Where the template stands, for the timeout message: ``2 of 3 wanted running``."""
    running = running_ids(view)
    if goal.ready:
        missing = sorted(wanted_ids(view) - running, key=_ordinal)
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        return f"{len(wanted_ids(view)) - len(missing)} of {len(wanted_ids(view))} wanted running" + (
            f" (not running: {shown})" if missing else "")
    return f"{len(running)} running (wanted {goal.running})"


def _ordinal(ident: str) -> int:
    tail = ident.rpartition(".")[2]
    return int(tail) if tail.isdigit() else 0
