"""How the link packs its events into ``events`` messages: in the order they happened, in
batches that fit a message.

State events wait in the ``Outbox`` (numbered, until acknowledged) and output events in the
link's own queue (live only), so a flush merges the two back into the order they were queued:
each output event remembers the seq of the last state event before it. A subscriber that sees
``proc.web.spawn`` then the first lines of that process keeps seeing them in that order.
"""

from __future__ import annotations

from typing import Any, Iterable

from gaffer.common.protocol import MAX_EVENTS

BATCH_BYTES = 1024 * 1024
"""Rough size of one ``events`` message: a flush sends several rather than one over the limit."""


def in_order(
    states: list[dict[str, Any]], output: Iterable[tuple[int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """State events (ascending seq) and output events (``(after, event)``, in queue order)
    merged: each output event comes after every state event numbered up to its ``after``."""
    merged: list[dict[str, Any]] = []
    index = 0
    for after, event in output:
        while index < len(states) and states[index]["seq"] <= after:
            merged.append(states[index])
            index += 1
        merged.append(event)
    merged.extend(states[index:])
    return merged


def batches(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``events`` in runs of at most MAX_EVENTS and about BATCH_BYTES each (text counted)."""
    runs: list[list[dict[str, Any]]] = [[]]
    size = 0
    for event in events:
        cost = 256 + len(event["data"].get("text", ""))
        if runs[-1] and (len(runs[-1]) >= MAX_EVENTS or size + cost > BATCH_BYTES):
            runs.append([])
            size = 0
        runs[-1].append(event)
        size += cost
    return runs
