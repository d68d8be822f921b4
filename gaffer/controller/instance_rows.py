"""The rows ``ps`` lists, built from what the controller holds, cheaply.

``instance_rows`` joins the placement, the templates still pending and every node's last
report into one row per instance (and one per stale copy a node still runs), in
``instance_key`` order. ``fill_cached`` completes them from memory: the PORT, the uptime, and
the cpu and memory the agents pushed (``statcache.py``) with the sample's ``age``; ``fill_rows``
does the same from stats asked of the agents just now (``ps`` with ``fresh``), age 0.
``ps`` answers from ``row_cache.py``, which keeps ``placed_rows`` between changes and must
answer exactly as ``instance_rows`` + ``fill_cached`` (the definition it is tested against).

A listing of 10,000 instances must answer in a few tens of milliseconds, on the controller's
one loop, so these are written for it: one dict literal per row, node and port lookups once
per node and template (not per row), rows sorted by a precomputed key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

from gaffer.common.model import InstanceRow, InstanceState
from gaffer.common.ports import instance_port
from gaffer.controller.liveness import NodeState
from gaffer.controller.registry import Node
from gaffer.controller.scheduler import FAILED_EVERYWHERE
from gaffer.controller.statcache import StatCache

if TYPE_CHECKING:
    from gaffer.common.model import Slot
    from gaffer.controller.store import StoredTemplate

_ASSIGNED = InstanceState.ASSIGNED.value
_PENDING = InstanceState.PENDING.value
_FAILED = InstanceState.FAILED.value
_UNKNOWN = InstanceState.UNKNOWN.value


class Placed(Protocol):
    """What the rows are built from (``Cluster``)."""

    templates: Mapping[str, StoredTemplate]
    placement: Mapping[Slot, str]
    """Replaced whole when it changes, never edited in place (``row_cache.py`` relies on it)."""
    failed: Mapping[Slot, frozenset[str]]

    def pending(self) -> dict[str, dict[str, Any]]: ...
    def wanted(self, name: str) -> int: ...


class NodeSource(Protocol):
    def node(self, name: str) -> Node | None: ...
    def all(self) -> Iterable[Node]: ...


def instance_rows(cluster: Placed, agents: NodeSource, name: str | None) -> list[dict[str, Any]]:
    """The rows ``ps`` lists (of template ``name``, or all), in ``instance_key`` order,
    before ``fill_cached``/``fill_rows`` add port, uptime, cpu, memory and age."""
    keyed = placed_rows(cluster, agents, name)
    add_pending(keyed, cluster, name, keyed)
    return [row for _, row in sorted(keyed.values(), key=first)]


Keyed = dict[str, tuple[tuple[Any, ...], dict[str, Any]]]
"""Rows by instance id (``id@node`` for a stale copy), each with its ``instance_key``."""


def placed_rows(cluster: Placed, agents: NodeSource, name: str | None) -> Keyed:
    """The rows of every placed instance and of every stale copy a node still runs: what the
    placement and the nodes' reports make (``row_cache.py`` keeps them between changes)."""
    keyed: Keyed = {}
    nodes: dict[str, tuple[Node | None, bool]] = {}
    for (template, ordinal), node_name in cluster.placement.items():
        if name is not None and template != name:
            continue
        seen = nodes.get(node_name)
        if seen is None:
            node = agents.node(node_name)
            seen = nodes[node_name] = (node, node is None or node.state is NodeState.DOWN)
        node, down = seen
        ident = f"{template}.{ordinal}"
        report = node.instances.get(ident) if node is not None else None
        row = _row(ident, template, ordinal, node_name, report, _ASSIGNED)
        if down:
            row["state"] = _UNKNOWN
            row["ready"] = False
        keyed[ident] = ((template, _ordinal_key(ordinal), node_name), row)
    for node in agents.all():
        down = node.state is NodeState.DOWN
        for ident, report in node.instances.items():
            if report["pid"] is None or (name is not None and report["template"] != name):
                continue
            assigned = keyed.get(ident)
            if assigned is not None and assigned[1]["node"] == node.name:
                continue
            row = _row(ident, report["template"], report["ordinal"], node.name, report, report["state"])
            row["stale"] = True
            if down:
                row["state"] = _UNKNOWN
                row["ready"] = False
            keyed[f"{ident}@{node.name}"] = ((report["template"], _ordinal_key(report["ordinal"]), node.name), row)
    return keyed


def add_pending(into: Keyed, cluster: Placed, name: str | None, placed: Mapping[str, Any]) -> None:
    """Add a row for each wanted ordinal of a pending template that is not in ``placed``."""
    for template, pending in cluster.pending().items():
        if name is not None and template != name:
            continue
        for ordinal in range(1, cluster.wanted(template) + 1):
            ident = f"{template}.{ordinal}"
            if ident not in placed:
                failed = (template, ordinal) in cluster.failed and pending["reason"] == FAILED_EVERYWHERE
                row = _row(ident, template, ordinal, None, None, _FAILED if failed else _PENDING)
                row["reason"] = pending["reason"]
                into[ident] = ((template, (0, ordinal), ""), row)


def fill_cached(
    rows: Sequence[dict[str, Any]], templates: Mapping[str, StoredTemplate], cache: StatCache,
    wall_now: float, loop_now: float,
) -> None:
    """Complete ``ps`` rows from memory: PORT, uptime, and each running row's last pushed cpu
    and memory with ``age``, seconds since its node last pushed (None where there is no
    sample of that very process)."""
    ports = Ports(templates)
    reading = cache.reading
    ages: dict[float, float] = {}
    for row in rows:
        row["port"] = ports.of(row["template"], row["ordinal"])
        pid = row["pid"]
        sample = reading(row["id"], row["node"], pid) if pid else None
        if sample is None:
            row["cpu"] = row["mem"] = row["age"] = None
        else:
            row["cpu"], row["mem"], pushed = sample
            age = ages.get(pushed)
            if age is None:  # one per node: a node's rows share their push time
                age = ages[pushed] = round(max(0.0, loop_now - pushed), 3)
            row["age"] = age
        started = row["started_at"]
        row["uptime"] = round(wall_now - started, 3) if pid and started else None


def fill_rows(
    rows: Sequence[dict[str, Any]], templates: Mapping[str, StoredTemplate], stats: Mapping[str, dict[str, Any]],
    now: float,
) -> None:
    """Complete ``ps`` rows from ``stats`` (the agents' samples by instance id, asked just now:
    age 0; None where there is none), with the PORT and the uptime."""
    ports = Ports(templates)
    for row in rows:
        row["port"] = ports.of(row["template"], row["ordinal"])
        sample = stats.get(row["id"]) if row["pid"] else None
        row["cpu"] = sample["cpu"] if sample else None
        row["mem"] = sample["mem"] if sample else None
        row["age"] = 0.0 if sample else None
        row["uptime"] = round(now - row["started_at"], 3) if row["pid"] and row["started_at"] else None


class Ports:
    """Each template's PORT rule, looked up once per template of a listing."""

    def __init__(self, templates: Mapping[str, StoredTemplate]) -> None:
        self._templates = templates
        self._rules: dict[str, Any] = {}

    def of(self, template: str, ordinal: int | str) -> int | None:
        """The PORT the template gives this ordinal (None: no port, or a one-off run)."""
        rules = self._rules
        if template not in rules:
            stored = self._templates.get(template)
            rules[template] = stored.template.port if stored is not None else None
        rule = rules[template]
        if rule is None or type(ordinal) is not int:
            return None
        return instance_port(rule, ordinal)


def _row(
    ident: str, template: str, ordinal: int | str, node: str | None, report: InstanceRow | None, state: str,
) -> dict[str, Any]:
    if report is None:
        return {"id": ident, "template": template, "ordinal": ordinal, "node": node, "pid": None,
                "state": state, "restarts": 0, "started_at": None, "spec": None, "stale": False,
                "ready": False}
    return {"id": ident, "template": template, "ordinal": ordinal, "node": node, "pid": report["pid"],
            "state": report["state"], "restarts": report["restarts"], "started_at": report["started_at"],
            "spec": report["spec"], "stale": False, "ready": report.get("ready", False)}


def first(item: tuple[tuple[Any, ...], dict[str, Any]]) -> tuple[Any, ...]:
    return item[0]


def _ordinal_key(ordinal: Any) -> tuple[int, Any]:
    return (0, ordinal) if type(ordinal) is int else (1, str(ordinal))


def instance_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Instances in ``ps`` order: template, ordinal (numbers first), node."""
    return (row["template"], _ordinal_key(row["ordinal"]), row["node"] or "")
