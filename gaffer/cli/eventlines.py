"""What ``gafferctl events`` prints for each item of the stream (pure: values in, lines out).

Events go to stdout, one a line. A loss is said once, where it happened, and only when the
controller no longer held what this subscriber missed (``EventsLost``), followed by the
snapshot the stream goes on from; in text mode both are ``#`` lines on stderr, with ``--json``
they are JSON objects on stdout whose ``kind`` tells them from events.
"""

from __future__ import annotations

import json
from typing import Any

from gaffer.client import EventsLost, ReceivedEvent, Snapshot


def event_line(item: ReceivedEvent | EventsLost | Snapshot, as_json: bool) -> tuple[str, bool]:
    """The line for ``item`` and whether it goes to stderr."""
    if isinstance(item, ReceivedEvent):
        if as_json:
            return _json({"kind": "event", "seq": item.seq, "topic": item.topic, "ts": item.ts, "data": item.data}), False
        return f"{item.seq} {item.topic} {_json(item.data)}", False
    if isinstance(item, EventsLost):
        if as_json:
            return _json({"kind": "lost", "first": item.first, "last": item.last}), False
        span = f"{item.first}" if item.first == item.last else f"{item.first}..{item.last}"
        return f"# events {span} lost: the controller no longer holds them; a snapshot follows", True
    if as_json:
        return _json({"kind": "snapshot", "position": item.position, "nodes": item.nodes,
                      "templates": item.templates, "instances": item.instances}), False
    return (f"# snapshot at {item.position}: {len(item.nodes)} nodes, {len(item.templates)} templates, "
            f"{len(item.instances)} instances; events after it follow"), True


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
