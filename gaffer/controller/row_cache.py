"""``ps`` from memory without rebuilding 10,000 rows per listing.

What a row says changes far less often than rows are listed: the placement changes when a
reconcile adopts a plan, a node's reports when its agent says something moved, the samples when
an agent pushes (every few seconds). ``RowCache`` keeps the placed and stale rows (``placed_rows``,
sorted) and the samples read for them, and rebuilds each only when what it is made of changed:

- the rows: when the placement object changed (``Cluster`` replaces it whole when it adopts a
  plan, never edits it in place), or any node's ``reports`` count or state, or the set of
  nodes;
- the samples: when the rows were rebuilt, or ``StatCache.version`` moved.

Each listing then costs one dict per row (the kept row with port, cpu, memory, ``age`` and
uptime, which move with the clock), and the pending rows, made fresh (they hang on the
template counts, the limits and the failures, and are few). The answer is the one
``instance_rows`` + ``fill_cached`` give (``tests/unit/test_row_cache.py`` checks it after any
sequence of changes).
"""

from __future__ import annotations

from typing import Any, Mapping

from gaffer.common.ports import instance_port
from gaffer.common.schema import PlainRows
from gaffer.controller.instance_rows import Keyed, NodeSource, Placed, add_pending, first, placed_rows
from gaffer.controller.statcache import StatCache

Reading = tuple[float, int, float] | None


class RowCache:
    """The rows ``ps`` answers from memory (see the module's docstring)."""

    def __init__(self, cluster: Placed, agents: NodeSource, stats: StatCache) -> None:
        self._cluster = cluster
        self._agents = agents
        self._stats = stats
        self._stamp: tuple[Any, ...] | None = None
        self._held: tuple[Any, ...] = ()
        """The placement and nodes the stamp names by id, held so no id is reused meanwhile."""
        self._keyed: Keyed = {}
        self._sorted: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self._readings: list[Reading] = []
        self._readings_of = -1
        self.rebuilds = 0

    def rows(self, name: str | None, wall_now: float, loop_now: float) -> list[dict[str, Any]]:
        """What ``instance_rows`` + ``fill_cached`` give: rows of template ``name`` (or all)
        in ``instance_key`` order, each a new dict the caller may keep, as ``PlainRows`` (the
        reply's encoding need not walk them again)."""
        self._stats.look()
        entries = self._current()
        readings = self._current_readings()
        templates = self._cluster.templates
        rules: dict[str, Any] = {}
        ages: dict[float, float] = {}
        out = PlainRows()
        keys = []
        last, rule = None, None
        for (key, row), sample in zip(entries, readings):
            template = row["template"]
            if template != last:  # rows come by template: one rule lookup per run of them
                if name is not None and template != name:
                    continue
                last, rule = template, port_rule(rules, templates, template)
            out.append(_finish(row, sample, rule, ages, wall_now, loop_now))
            keys.append(key)
        pending: Keyed = {}
        add_pending(pending, self._cluster, name, self._keyed)
        if not pending:
            return out
        merged = list(zip(keys, out))
        merged += [(key, _finish(row, None, port_rule(rules, templates, row["template"]), ages, wall_now, loop_now))
                   for key, row in pending.values()]
        merged.sort(key=first)
        return PlainRows(row for _, row in merged)

    def placed(self) -> tuple[list[tuple[tuple[Any, ...], dict[str, Any]]], list[Reading]]:
        """The kept placed and stale rows in ``instance_key`` order, each with its key, and the
        samples read for them (both current; a new list whenever either was made again, never
        one edited in place: ``row_bytes.py`` tells them apart by identity). Not the caller's
        to change."""
        return self._current(), self._current_readings()

    def pending(
        self, name: str | None, wall_now: float, loop_now: float,
    ) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """The rows of wanted ordinals that are not placed (of template ``name``, or all),
        made fresh and complete, each with its key, in key order (after ``placed``)."""
        found: Keyed = {}
        add_pending(found, self._cluster, name, self._keyed)
        rules: dict[str, Any] = {}
        templates = self._cluster.templates
        rows = [(key, _finish(row, None, port_rule(rules, templates, row["template"]), {}, wall_now, loop_now))
                for key, row in found.values()]
        rows.sort(key=first)
        return rows

    def _current(self) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        placement = self._cluster.placement
        nodes = list(self._agents.all())
        stamp = (id(placement), tuple((id(node), node.reports, node.state) for node in nodes))
        if stamp != self._stamp:
            self._keyed = placed_rows(self._cluster, self._agents, None)
            self._sorted = sorted(self._keyed.values(), key=first)
            self._stamp, self._held = stamp, (placement, nodes)
            self._readings_of = -1
            self.rebuilds += 1
        return self._sorted

    def _current_readings(self) -> list[Reading]:
        version = self._stats.version
        if version != self._readings_of:
            reading = self._stats.reading
            self._readings = [reading(row["id"], row["node"], row["pid"]) if row["pid"] else None
                              for _, row in self._sorted]
            self._readings_of = version
        return self._readings


def port_rule(rules: dict[str, Any], templates: Mapping[str, Any], template: str) -> Any:
    """The template's PORT rule, looked up once per template of a listing."""
    if template not in rules:
        stored = templates.get(template)
        rules[template] = stored.template.port if stored is not None else None
    return rules[template]


def _finish(
    row: dict[str, Any], sample: Reading, rule: Any, ages: dict[float, float], wall_now: float, loop_now: float,
) -> dict[str, Any]:
    """``row`` completed as ``fill_cached`` completes it, as a new dict."""
    ordinal = row["ordinal"]
    port = instance_port(rule, ordinal) if rule is not None and type(ordinal) is int else None
    if sample is None:
        cpu = mem = age = None
    else:
        cpu, mem, pushed = sample
        age = ages.get(pushed)
        if age is None:  # one per node: a node's rows share their push time
            age = ages[pushed] = round(max(0.0, loop_now - pushed), 3)
    started = row["started_at"]
    uptime = round(wall_now - started, 3) if row["pid"] and started else None
    return {**row, "port": port, "cpu": cpu, "mem": mem, "age": age, "uptime": uptime}
