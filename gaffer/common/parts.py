"""Assignments bigger than one message: split by the controller, reassembled by the agent.

An assignment is a node's whole desired state, and the agent must apply it whole (applying
half would stop what the other half keeps). When its encoding would exceed ``budget`` bytes
(thousands of templates, or a million ordinals), the controller sends it as ``count`` parts
of the same generation, each marked ``part: [index, count]`` and each a valid assignment body
on its own: some templates with their ordinals and controls (a template with more ordinals
than fit is repeated in several parts, with the same spec and controls, its ordinals split
between them: ``controls.count`` is the node's whole share, whatever part holds it). The agent keeps the parts of the
newest generation it has seen, drops older ones, and applies the assignment once every part
is there. A resend repeats every part; receiving a part twice is harmless.

Pure: no sockets, no clock.
"""

from __future__ import annotations

from typing import Any

import msgpack

MAX_PARTS = 1_024
INT_BYTES = 9
"""The most bytes msgpack spends on one ordinal (a uint64), for sizing chunks of ordinals."""


def split_assignment(body: dict[str, Any], budget: int) -> list[dict[str, Any]]:
    """``body`` ({generation, templates, ordinals, controls}) as one body if it fits
    ``budget``, else as parts that each do. A single template spec must fit with room for some
    ordinals."""
    if len(msgpack.packb(body, use_bin_type=True)) <= budget:
        return [body]
    units: list[tuple[int, str, list[int]]] = []
    for name, spec in body["templates"].items():
        spec_size = len(msgpack.packb(spec, use_bin_type=True)) + 2 * len(name) + 64
        ordinals = list(body["ordinals"].get(name, ()))
        room = budget - spec_size - 64
        if room < INT_BYTES:
            raise ValueError(f"template {name!r} alone ({spec_size} bytes) does not fit in {budget} bytes")
        per_chunk = max(1, room // INT_BYTES)
        chunks = [ordinals[i:i + per_chunk] for i in range(0, len(ordinals), per_chunk)] or [[]]
        for chunk in chunks:
            units.append((spec_size + INT_BYTES * len(chunk), name, chunk))
    groups: list[list[tuple[str, list[int]]]] = [[]]
    used = 0
    for size, name, chunk in units:
        if groups[-1] and used + size > budget - 64:
            groups.append([])
            used = 0
        groups[-1].append((name, chunk))
        used += size
    if len(groups) > MAX_PARTS:
        raise ValueError(f"the assignment needs {len(groups)} parts, more than {MAX_PARTS}")
    parts = []
    for index, group in enumerate(groups):
        templates: dict[str, Any] = {}
        ordinals: dict[str, list[int]] = {}
        controls: dict[str, Any] = {}
        for name, chunk in group:
            templates[name] = body["templates"][name]
            controls[name] = body["controls"][name]
            ordinals.setdefault(name, []).extend(chunk)
        parts.append({
            "generation": body["generation"], "templates": templates, "ordinals": ordinals,
            "controls": controls, "part": [index, len(groups)],
        })
    return parts


class PartsAssembler:
    """Collects the parts of the newest generation; hands out a whole assignment once."""

    def __init__(self) -> None:
        self.generation: int | None = None
        self._count = 0
        self._parts: dict[int, dict[str, Any]] = {}

    def feed(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The whole assignment when ``body`` completes one (a body without ``part`` is
        whole by itself), else None."""
        part = body.get("part")
        generation = body["generation"]
        if part is None:
            self._reset(generation, 0)
            return body
        index, count = part
        if self.generation is not None and generation < self.generation:
            return None
        if generation != self.generation or count != self._count:
            self._reset(generation, count)
        self._parts[index] = body
        if len(self._parts) < self._count:
            return None
        whole = merge_parts([self._parts[i] for i in range(self._count)])
        self._parts = {}
        return whole

    def _reset(self, generation: int, count: int) -> None:
        self.generation = generation
        self._count = count
        self._parts = {}


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The assignment the parts were split from (ordinals sorted, each once)."""
    templates: dict[str, Any] = {}
    ordinals: dict[str, set[int]] = {}
    controls: dict[str, Any] = {}
    for part in parts:
        templates.update(part["templates"])
        controls.update(part["controls"])
        for name, chunk in part["ordinals"].items():
            ordinals.setdefault(name, set()).update(chunk)
    return {
        "generation": parts[0]["generation"],
        "templates": templates,
        "ordinals": {name: sorted(values) for name, values in ordinals.items()},
        "controls": controls,
    }
