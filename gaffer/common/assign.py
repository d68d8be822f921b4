"""The ``assign`` message, typed: a node's whole desired state, as the controller sends it.

::

    assign {generation,
            templates: {name: spec},          the user's spec, as stored, without numprocesses
            ordinals:  {name: [ordinal]},     the slots of the template that run on this node
            controls:  {name: {count,         how many ordinals run here (all parts together)
                               allowance,     how many may be down at once while rolling
                               restart,       the template's restart generation
                               paused}}}      present and true: paused cluster-wide

The spec is the user's, untouched: what the controller decides for one node (its share of the
count, its share of a rolling update's ``max_unavailable``, a restart) travels in ``controls``,
never inside the spec, so what ``gafferctl get`` shows is what the user applied.

A paused template (``gafferctl stop``) stays in the assignment of the nodes that had it, with
no ordinals and ``paused``: the node then knows it was paused, not deleted, and says so to its
apps, webhooks and console (``template.<t>.stopped``, then ``started`` on resume).

A restart must change what the processes are started from, so that a node's report tells the
controller which instances run the restarted version: ``launched`` gives the template an agent
runs for a restart generation (its environment gains ``GAFFER_RESTART=<generation>``), and
both sides use it, so the agent's reported spec hash is the one the controller waits for.

Pure: no sockets, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from gaffer.common.template import Template

RESTART_ENV = "GAFFER_RESTART"
"""Set in the environment of instances started after ``gafferctl restart``: the generation."""


@dataclass(frozen=True)
class Control:
    """The controller's decisions about one template on one node."""

    count: int
    allowance: int = 1
    restart: int = 0
    paused: bool = False

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"count": self.count, "allowance": self.allowance, "restart": self.restart}
        if self.paused:
            wire["paused"] = True
        return wire

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "Control":
        return cls(
            count=data["count"], allowance=data["allowance"], restart=data["restart"],
            paused=data.get("paused", False),
        )


@dataclass(frozen=True)
class Entry:
    """One template of an assignment: its spec (plain data), ordinals and controls."""

    spec: Mapping[str, Any]
    ordinals: tuple[int, ...]
    control: Control


@dataclass(frozen=True)
class Assignment:
    generation: int
    entries: Mapping[str, Entry]

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> "Assignment":
        """From a whole body (parts merged) the wire schema accepted; a template without
        ordinals runs none here."""
        ordinals = body["ordinals"]
        controls = body["controls"]
        return cls(body["generation"], {
            name: Entry(spec, tuple(ordinals.get(name, ())), Control.from_wire(controls[name]))
            for name, spec in body["templates"].items()
        })


def wire_spec(template: Template) -> Mapping[str, Any]:
    """A template's spec as ``assign`` carries it: the stored one, without its count
    (read-only: ``Template.shared_spec``)."""
    return template.shared_spec()


def body(
    generation: int,
    specs: Mapping[str, Mapping[str, Any]],
    ordinals: Mapping[str, list[int]],
    controls: Mapping[str, Control],
) -> dict[str, Any]:
    """An ``assign`` body (before any split into parts)."""
    return {
        "generation": generation,
        "templates": dict(specs),
        "ordinals": dict(ordinals),
        "controls": {name: control.to_wire() for name, control in controls.items()},
    }


def launched(template: Template, restart: int) -> Template:
    """The template an agent runs for restart generation ``restart`` (0: never restarted)."""
    if restart <= 0:
        return template
    return replace(template, env={**template.env, RESTART_ENV: str(restart)})


def runnable(template: Template, control: Control) -> Template:
    """The template the agent's Manager is given for one entry: the node's count, the
    allowance as its ``update.max_unavailable``, and the restart generation (``launched``)."""
    out = launched(template, control.restart)
    return replace(out, numprocesses=control.count, update=replace(out.update, max_unavailable=control.allowance))
