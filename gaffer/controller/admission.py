"""What an agent may tell the controller: events and output about its own instances only.

An agent's key proves which node it is, not that what it says is true of other nodes. Without
this check one agent key could publish ``node.<other>.down``, ``template.web.deleted`` or
output lines for an instance running elsewhere, and every subscriber (``gafferctl events``,
``logs -f``, webhooks) would show them as facts. So the controller republishes an agent's event
only when:

- its topic is one agents produce: ``proc.<template>.<kind>`` or
  ``output.<template>.<ordinal>.<out|err>`` (``node.`` and ``template.`` events are the
  controller's own, and only it publishes them);
- the payload names the same instance as the topic (``id`` = ``<template>.<ordinal>``);
- an output event carries lines (``text``, a string) or a skip marker (``skipped``, a count),
  so a follower never has to guess at its shape;
- that instance is one the controller gave this node: placed on it now, in the last assignment
  it was sent (an exit racing a move is still its own), or a one-off run started there;
- its payload, as republished (``stamped``), fits its topic's schema
  (``common/eventschema.py``, documented in docs/EVENTS.md): ``payload_problem``.

Everything else is dropped and counted per reason (``DropReason``). The node name, and every
field only the controller may set, are overwritten, never taken from the agent.

Pure: the caller passes what the node owns as a container; nothing here reads the clock or
the sockets.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from gaffer.common import eventschema
from gaffer.common.topics import PROC_KINDS

FOREIGN_TOPIC = "foreign_topic"
"""A topic family only the controller publishes (``node.``, ``template.``) or an unknown one."""
BAD_TOPIC = "bad_topic"
"""A ``proc.``/``output.`` topic that does not name a template, an instance and a known kind."""
ID_MISMATCH = "id_mismatch"
"""The payload's ``id``/``template`` disagree with the topic."""
NOT_ASSIGNED = "not_assigned"
"""The instance is not one this node was given."""
BAD_OUTPUT = "bad_output"
"""An ``output.`` payload with neither ``text`` (a string) nor ``skipped`` (a count >= 0)."""
BAD_PAYLOAD = "bad_payload"
"""A payload that does not fit its topic's schema (``eventschema.CLUSTER``)."""
DROP_REASONS = (FOREIGN_TOPIC, BAD_TOPIC, ID_MISMATCH, NOT_ASSIGNED, BAD_OUTPUT, BAD_PAYLOAD)

OUTPUT_STREAMS = ("out", "err")
CONTROLLER_FIELDS = ("node", "scope")
"""Payload fields that only the controller sets: an agent's values are replaced or removed."""


class Holdings(Protocol):
    """What one node was given: instance ids (``in``)."""

    def __contains__(self, ident: object) -> bool: ...


def admit_event(topic: str, data: Mapping[str, Any], owns: Holdings) -> str | None:
    """None when a node that ``owns`` these instances may publish this event, else why not.
    Every ``proc.`` event names its instance (``id``), ``proc.<t>.flap`` too: flapping is
    counted per instance."""
    family, _, rest = topic.partition(".")
    if family == "proc":
        template, _, kind = rest.rpartition(".")
        if not template or kind not in PROC_KINDS:
            return BAD_TOPIC
        if data.get("template", template) != template:
            return ID_MISMATCH
        ident = data.get("id")
        if not isinstance(ident, str) or ident.rpartition(".")[0] != template:
            return ID_MISMATCH
    elif family == "output":
        instance, _, stream = rest.rpartition(".")
        template, _, ordinal = instance.rpartition(".")
        if not template or not ordinal or stream not in OUTPUT_STREAMS:
            return BAD_TOPIC
        ident = data.get("id", instance)
        if ident != instance or data.get("template", template) != template:
            return ID_MISMATCH
        if not _output_payload(data):
            return BAD_OUTPUT
    else:
        return FOREIGN_TOPIC
    if ident not in owns:
        return NOT_ASSIGNED
    return None


def _output_payload(data: Mapping[str, Any]) -> bool:
    if "text" in data:
        return type(data["text"]) is str
    skipped = data.get("skipped")
    return type(skipped) is int and skipped >= 0


def payload_problem(topic: str, data: Mapping[str, Any]) -> str | None:
    """None when ``data`` (as republished: ``stamped``) fits ``topic``'s schema, else why not
    (one line naming the field), for the ``BAD_PAYLOAD`` drop."""
    return eventschema.problem(topic, data)


def stamped(data: Mapping[str, Any], node: str) -> dict[str, Any]:
    """The payload as the controller republishes it: the sender's node, no controller-only fields."""
    clean = {key: value for key, value in data.items() if key not in CONTROLLER_FIELDS}
    clean["node"] = node
    return clean
