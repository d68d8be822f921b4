"""The data every part of gaffer shares: instance states, slots, instance ids and rows.

An agent reports its instances, the controller places and shows them, gafferctl prints them:
all three speak of the same things, so each has one definition here instead of one per side.

Vocabulary::

    instance id   ``<template>.<ordinal>``: ``web.3``, or ``web.run-2`` for a one-off run
    slot          (template, ordinal): what the controller places, ordinals 1..count
    row           one instance as an agent reports it (``InstanceRow``, the wire's Instance)
    state         where an instance is in its life (``InstanceState``); an agent reports the
                  first nine, the controller adds the views it derives (assigned, pending,
                  unknown) for instances no agent reports

Pure data: no sockets, no clock.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple, NotRequired, TypedDict

from gaffer.common.limits import MAX_COUNT, MAX_NAME

Slot = tuple[str, int]
"""(template, ordinal): the unit the controller places. A plain tuple: the scheduler makes
hundreds of thousands of them per pass."""


class InstanceState(str, enum.Enum):
    """Where an instance is; the agent's lifecycle (``agent/lifecycle.py``) moves between the
    first nine, and the controller adds what it shows for instances no agent reports."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "failed"
    READY = "ready"
    """Running, and its check passes (or it said ``READY=1``): serving."""
    UNHEALTHY = "unhealthy"
    """Running, and its check failed ``failure_threshold`` times in a row."""
    ASSIGNED = "assigned"
    """Placed on a node that has not reported it yet."""
    PENDING = "pending"
    """Wanted, but no node can take it now (the reason says why)."""
    UNKNOWN = "unknown"
    """Placed on, or reported by, a node that is down: nobody can say."""

    def __str__(self) -> str:
        return self.value


AGENT_STATES = (
    "stopped", "starting", "running", "backoff", "stopping", "exited", "failed", "ready", "unhealthy",
)
"""The states an agent reports (the wire's Instance.state)."""
UP_STATES = ("running", "ready", "unhealthy")
"""Up ``startsecs`` or longer: ready or not, the process is there (a template with neither a
check nor ``notify`` stays ``running``)."""
CONTROLLER_STATES = ("assigned", "pending", "unknown")
"""The states only the controller shows (``ps``)."""

_ORDINAL = r"(?:[1-9][0-9]{0,%d}|run-[1-9][0-9]{0,18})" % (len(str(MAX_COUNT)) - 1)
INSTANCE_ID_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]{0,%d})\.(%s)\Z" % (MAX_NAME - 1, _ORDINAL))
INSTANCE_ID_RULE = "an instance id <template>.<ordinal> (web.2, or web.run-1 for a one-off run)"
ONEOFF_PREFIX = "run-"


class InstanceId(NamedTuple):
    """A parsed ``<template>.<ordinal>``; ``ordinal`` is an int, or ``run-<n>`` for a one-off."""

    template: str
    ordinal: int | str

    def __str__(self) -> str:
        return instance_id(self.template, self.ordinal)

    @property
    def oneoff(self) -> bool:
        return isinstance(self.ordinal, str)

    @property
    def slot(self) -> Slot | None:
        """The slot this instance fills, or None for a one-off run."""
        return None if isinstance(self.ordinal, str) else (self.template, self.ordinal)


def instance_id(template: str, ordinal: int | str) -> str:
    return f"{template}.{ordinal}"


def parse_instance_id(value: object) -> InstanceId | None:
    """The id in ``value``, or None when it is not one (the only parser of instance ids).

    Template part: a name (``NAME_RE``); ordinal: 1..MAX_COUNT without leading zeros, or
    ``run-<n>``. ``web.03`` and ``web.0`` are not ids: each instance has one spelling.
    """
    if type(value) is not str or len(value) > MAX_NAME + 1 + 4 + 19:
        return None
    match = INSTANCE_ID_RE.match(value)
    if match is None:
        return None
    template, ordinal = match.groups()
    if ordinal.startswith(ONEOFF_PREFIX):
        return InstanceId(template, ordinal)
    number = int(ordinal)
    if number > MAX_COUNT:
        return None
    return InstanceId(template, number)


def template_of(value: str) -> str:
    """The template part of an id, for ids already known to be well formed (hot paths)."""
    return value.rpartition(".")[0]


class InstanceRow(TypedDict):
    """One instance as an agent reports it: the wire's Instance (``protocol._INSTANCE``).

    A TypedDict, not a class: the controller keeps a row per instance (100,000 of them), and a
    dict of strings, numbers and None is one the garbage collector never tracks, where a
    dataclass or NamedTuple instance is tracked, and makes every full collection slower.
    ``state`` is an ``InstanceState`` value (``row["state"] == InstanceState.RUNNING``);
    ``spec`` is the hash of the launch spec the process was started with, so the controller
    can tell which instances run an updated template.
    """

    id: str
    template: str
    ordinal: int | str
    pid: int | None
    state: str
    restarts: int
    started_at: float | None
    spec: str | None
    ready: bool
    """True when ``state`` is ``ready``, or ``running`` for a template with neither a check
    nor ``notify`` (the agent decides; every consumer reads this, never re-derives it)."""
    exit_code: NotRequired[int]
    """Only on an ``exited`` row with an exit status: 0 is a job that completed."""
