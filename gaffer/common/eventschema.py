"""One schema per event topic: what the ``data`` of each event gaffer publishes holds.

A topic is ``<family>.<subject...>.<kind>`` (``proc.web.spawn``, ``output.web.2.err``,
``node.n1.events_lost``); its schema is picked by its **family** (first segment) and **kind**
(last segment). Names carry no dots, so the middle is always the template, node or instance.

Two tables, because two streams exist:

- ``CLUSTER``: the controller's stream (``gafferctl events``, ``Client.events``, the HTTP event
  stream). The controller publishes ``node.`` and ``template.`` events itself and republishes
  agents' ``proc.`` and ``output.`` events, stamped with the sender's node. Admission
  (``controller/admission.py``) checks every agent event against this table before it is
  published, so a subscriber can rely on these shapes.
- ``AGENT``: an agent's own bus (its webhooks, ``gaffer start``'s console). Its ``proc.`` and
  ``output.`` events are those of ``CLUSTER``; its ``template.`` events are the agent's view of
  a template (the node's share, the spec digest), not the controller's.

docs/EVENTS.md documents every field, with an example each; a unit test validates those
examples against these tables, so the two cannot drift apart. Unknown fields are refused
(``schema.struct``): a new field is added here and in the document, never slipped in.

Output events: ``line`` and ``pid`` are optional here so that agents older than the line
numbering (issue 10) still pass; a marker of skipped lines has ``skipped`` instead of ``text``.
"""

from __future__ import annotations

from typing import Any, Mapping

from gaffer.common import schema as s
from gaffer.common.healthspec import MAX_OUTPUT as MAX_CHECK_OUTPUT
from gaffer.common.limits import MAX_INT, NAME_RE

Key = tuple[str, str]
"""(family, kind): ``("proc", "spawn")``."""

MAX_TEXT = 4 * 1024 * 1024
"""Characters of one output event's text: at most what one wire message holds."""

NODE_STATES = ("up", "suspect", "down")

_NAME = s.string(64, 1, NAME_RE, expect="a name (letters, digits, '-', '_', starting with a "
                 "letter or digit, at most 64 characters)")
_ID = s.string(129, 3, expect="an instance id (<template>.<ordinal>)")
_ORDINAL = s.either(s.integer(1, MAX_INT), s.string(64, 1))
_PID = s.integer(1, 2**31 - 1)
_TIME = s.number(0.0)
_COUNT = s.integer(0, MAX_INT)
_BOOL = s.boolean()
_REASON = s.string(4_096, 1)
_DIGEST = s.string(64, 1)

# ---------------------------------------------------------------- node.<name>.<kind>

_NODE_CHANGE = s.struct({"node": _NAME, "previous": s.one_of(NODE_STATES)})
_NODE_UP = s.struct({"node": _NAME}, optional={
    "previous": s.one_of(NODE_STATES),   # liveness came back (suspect -> up)
    "resync": _BOOL,                     # a hello: false = first since this controller started
})
_NODE = {
    ("node", "up"): _NODE_UP,
    ("node", "suspect"): _NODE_CHANGE,
    ("node", "down"): _NODE_CHANGE,
    ("node", "drain"): s.struct({"node": _NAME, "draining": _BOOL}),
    ("node", "events_lost"): s.struct({"node": _NAME, "count": s.integer(1, MAX_INT)}),
}

# ---------------------------------------------------------------- template.<name>.<kind>

_CLUSTER_TEMPLATE_BASE = {"name": _NAME, "numprocesses": _COUNT, "version": s.integer(1, MAX_INT)}
_CLUSTER_TEMPLATE = {
    ("template", "created"): s.struct(_CLUSTER_TEMPLATE_BASE),
    ("template", "updated"): s.struct(_CLUSTER_TEMPLATE_BASE, optional={"restart": _COUNT}),
    ("template", "scaled"): s.struct({**_CLUSTER_TEMPLATE_BASE, "previous": _COUNT}),
    ("template", "stopped"): s.struct(_CLUSTER_TEMPLATE_BASE),
    ("template", "started"): s.struct(_CLUSTER_TEMPLATE_BASE),
    ("template", "deleted"): s.struct({"name": _NAME}),
    ("template", "rollout_stuck"): s.struct(
        {**_CLUSTER_TEMPLATE_BASE, "ready": _COUNT, "deadline": s.number(1.0)}
    ),
}

_AGENT_TEMPLATE_BASE = {"node": _NAME, "name": _NAME, "numprocesses": _COUNT, "spec": _DIGEST}
_AGENT_TEMPLATE = {
    ("template", "created"): s.struct(_AGENT_TEMPLATE_BASE),
    ("template", "updated"): s.struct({**_AGENT_TEMPLATE_BASE, "restart": _BOOL}),
    ("template", "scaled"): s.struct({**_AGENT_TEMPLATE_BASE, "previous": _COUNT}),
    ("template", "stopped"): s.struct(_AGENT_TEMPLATE_BASE),
    ("template", "started"): s.struct(_AGENT_TEMPLATE_BASE),
    ("template", "deleted"): s.struct({"name": _NAME}),
    ("template", "failed"): s.struct({"name": _NAME}),
}

# ---------------------------------------------------------------- proc.<template>.<kind>

_INSTANCE = {"node": _NAME, "template": _NAME, "id": _ID, "ordinal": _ORDINAL, "ts": _TIME}
_UP = s.struct({**_INSTANCE, "pid": _PID}, optional={"adopted": _BOOL})
_EXIT = s.struct(
    {**_INSTANCE, "pid": s.nullable(_PID), "status": s.nullable(s.integer(-MAX_INT, MAX_INT)),
     "signal": s.nullable(s.string(32, 1))},
    optional={"oneoff": _BOOL, "error": _REASON, "again": _COUNT},
)
_OUTPUT_TEXT = s.string(MAX_CHECK_OUTPUT)
_READY = s.struct({**_INSTANCE, "pid": _PID, "output": _OUTPUT_TEXT})
_UNHEALTHY = s.struct({**_INSTANCE, "pid": _PID, "output": _OUTPUT_TEXT, "failures": s.integer(1, MAX_INT)})
_NODE_FAILED = s.struct({**_INSTANCE, "pid": s.nullable(_PID), "reason": _REASON})
_CLUSTER_FAILED = s.struct({
    "template": _NAME, "id": _ID, "ordinal": _ORDINAL, "scope": s.one_of(("cluster",)),
    "nodes": s.list_of(_NAME, 100_000), "reason": _REASON,
})


def _when_present(field: str, present: s.Check, absent: s.Check) -> s.Check:
    """``present`` for a map holding ``field``, else ``absent`` (two shapes of one topic)."""

    def check(value: Any) -> None:
        if type(value) is dict and field in value:
            present(value)
        else:
            absent(value)

    check.expect = "a map"  # type: ignore[attr-defined]
    return check


_PROC = {
    ("proc", "spawn"): _UP,
    ("proc", "running"): s.struct({**_INSTANCE, "pid": _PID}),
    ("proc", "ready"): _READY,
    ("proc", "unhealthy"): _UNHEALTHY,
    ("proc", "exit"): _EXIT,
    ("proc", "stop"): _EXIT,
    ("proc", "flap"): s.struct({
        **_INSTANCE, "pid": s.nullable(_PID), "retry_in": s.number(0.0), "retries": _COUNT,
        "max_retry": s.nullable(_COUNT),
    }),
    ("proc", "failed"): _when_present("scope", _CLUSTER_FAILED, _NODE_FAILED),
}

# ---------------------------------------------------------------- output.<template>.<ordinal>.<stream>

_OUTPUT_BASE = {"node": _NAME, "id": _ID, "template": _NAME, "stream": s.one_of(("out", "err"))}
_OUTPUT_EXTRA = {"ts": _TIME, "pid": _PID}
_LINE = {"line": s.integer(1, MAX_INT)}
"""The number of the first line (or first skipped line) in its instance's stream: how a reader
knows lines are missing. Every agent that speaks this protocol sends it."""
_LINES = s.struct({**_OUTPUT_BASE, **_LINE, "text": s.string(MAX_TEXT)}, optional=_OUTPUT_EXTRA)
_SKIPPED = s.struct(
    {**_OUTPUT_BASE, **_LINE, "skipped": s.integer(1, MAX_INT), "skipped_bytes": _COUNT},
    optional=_OUTPUT_EXTRA,
)
_OUTPUT_CHECK = _when_present("skipped", _SKIPPED, _LINES)
_OUTPUT = {("output", "out"): _OUTPUT_CHECK, ("output", "err"): _OUTPUT_CHECK}
_BUS_LINES = s.struct(
    {**_OUTPUT_BASE, "text": s.string(MAX_TEXT)},
    optional={**_OUTPUT_EXTRA, **_LINE, "lines": s.integer(1, MAX_INT)},
)
_BUS_SKIPPED = s.struct(
    {**_OUTPUT_BASE, "skipped": s.integer(1, MAX_INT), "skipped_bytes": _COUNT},
    optional={**_OUTPUT_EXTRA, **_LINE},
)
_BUS_OUTPUT_CHECK = _when_present("skipped", _BUS_SKIPPED, _BUS_LINES)
_BUS_OUTPUT = {("output", "out"): _BUS_OUTPUT_CHECK, ("output", "err"): _BUS_OUTPUT_CHECK}
"""On an agent's bus, lines also say how many they are (``lines``): the capture counted them,
so no local subscriber counts again. The link does not forward it."""

CLUSTER: Mapping[Key, s.Check] = {**_NODE, **_CLUSTER_TEMPLATE, **_PROC, **_OUTPUT}
"""The controller's stream: every topic a subscriber to the controller can receive."""
AGENT: Mapping[Key, s.Check] = {**_AGENT_TEMPLATE, **_PROC, **_BUS_OUTPUT}
"""An agent's own bus (webhooks, ``gaffer start``'s console)."""


def topic_key(topic: str) -> Key:
    """``proc.web.spawn`` -> ("proc", "spawn"); the family and kind of any topic."""
    family, _, rest = topic.partition(".")
    return family, rest.rpartition(".")[2]


def check_event(topic: str, data: Any, table: Mapping[Key, s.Check] = CLUSTER) -> None:
    """Raise ``schema.Invalid`` unless ``data`` fits the schema of ``topic`` in ``table``.

    The message names the topic, the field and the problem:
    ``proc.web.spawn: .pid: must be an integer in 1..2147483647, got "x"``.
    """
    check = table.get(topic_key(topic))
    if check is None:
        raise s.Invalid(f"{topic}: no such topic (family and kind unknown)")
    try:
        check(data)
    except s.Invalid as exc:
        raise s.Invalid(f"{topic}: {exc}") from None


def problem(topic: str, data: Any, table: Mapping[Key, s.Check] = CLUSTER) -> str | None:
    """None when ``data`` fits ``topic``'s schema, else the one-line reason (``check_event``)."""
    try:
        check_event(topic, data, table)
    except s.Invalid as exc:
        return exc.message
    return None


__all__ = ["AGENT", "CLUSTER", "Key", "check_event", "problem", "topic_key"]
