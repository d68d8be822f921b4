"""What ``templates`` and ``get`` show of a template: its spec as stored and how it runs.

Pure: counted from the placement (per node, as sent) and what the nodes report.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from gaffer.common.model import UP_STATES, instance_id
from gaffer.controller.counts import Limited
from gaffer.controller.orders import Version
from gaffer.controller.registry import Node
from gaffer.controller.template_rows import Change, StoredTemplate


def launch_of(stored: StoredTemplate, restart: int) -> str:
    """The spec digest instances of the template's current version report (``ps`` rows'
    ``spec``): what ``apply --wait`` waits to see ready."""
    return Version.of(stored.template, restart).launch_hash


def template_views(
    names: Sequence[str],
    templates: Mapping[str, StoredTemplate],
    by_node: Mapping[str, Mapping[str, Sequence[int]]],
    nodes: Mapping[str, Node],
    pending: Mapping[str, dict[str, Any]],
    limited: Mapping[str, Limited],
    rolling: Mapping[str, object],
) -> list[dict[str, Any]]:
    """Views of ``names`` (each in ``templates``), counted in one pass over the placement.

    ``running``: instances up (ready or not); ``ready``: those whose row says ``ready``
    (serving); ``rollout_stuck``: a rolling update made no progress for its deadline."""
    wanted = set(names)
    placed: dict[str, int] = dict.fromkeys(wanted, 0)
    running: dict[str, int] = dict.fromkeys(wanted, 0)
    ready: dict[str, int] = dict.fromkeys(wanted, 0)
    for node_name, held in by_node.items():
        node = nodes.get(node_name)
        for name, ordinals in held.items():
            if name not in wanted:
                continue
            placed[name] += len(ordinals)
            if node is None:
                continue
            rows = node.instances
            for ordinal in ordinals:
                row = rows.get(instance_id(name, ordinal))
                if row is not None and row["state"] in UP_STATES:
                    running[name] += 1
                    if row.get("ready", False):
                        ready[name] += 1
    views = []
    for name in names:
        stored = templates[name]
        views.append({
            "name": name,
            "version": stored.version,
            "paused": stored.paused,
            "numprocesses": stored.template.numprocesses,
            "limited": limited[name].view() if name in limited else None,
            "placed": placed[name],
            "running": running[name],
            "ready": ready[name],
            "pending": pending.get(name),
            "rolling": name in rolling,
            "rollout_stuck": bool(getattr(rolling.get(name), "stuck", False)),
            "spec": stored.template.to_dict(),
            "created_at": stored.created_at,
            "updated_at": stored.updated_at,
        })
    return views


def apply_results(changes: Sequence[Change]) -> list[dict[str, Any]]:
    """What an apply answers: each template's name, change and version."""
    return [{"name": c.name, "change": c.kind, "version": c.version} for c in changes]
