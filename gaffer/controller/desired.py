"""The desired state as plain records: what ``gaffer-controller export`` writes and ``import`` reads.

Everything here is pure (no files, no SQLite): the export document's shape, parsing it back with
every problem named, and validating it before anything is written. The offline commands
(``offline.py``) move these records between files and the store.

The export holds what an operator decided and what keeps agents fenced, nothing derived::

    {"format": "gaffer-controller-export", "version": 1,
     "templates": [{"name": "web", "version": 3, "paused": false, "spec": {...}},
                   {"name": "old", "version": 1, "paused": false, "spec": "<raw text>",
                    "invalid": "why it no longer validates"}],
     "nodes": [{"name": "n1", "cordoned": true, "draining": false}],
     "generations": {"n1": 42}}

Placement and failure history are left out: the controller recomputes them. Generations are
kept because an agent ignores an assignment older than the one it applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gaffer.common.errors import ConfigError, TemplateError
from gaffer.common.limits import MAX_INT
from gaffer.common.template import NAME_RE, Template, parse_template

FORMAT = "gaffer-controller-export"
FORMAT_VERSION = 1
MAX_NODE_NAME = 253


@dataclass(frozen=True)
class TemplateRecord:
    """One stored template. ``spec`` is the stored spec (a dict when it parses as JSON, else
    the raw text); ``invalid`` says why it no longer validates (None when it does)."""

    name: str
    version: int
    paused: bool
    spec: Any
    invalid: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"name": self.name, "version": self.version, "paused": self.paused, "spec": self.spec}
        if self.invalid is not None:
            data["invalid"] = self.invalid
        return data


@dataclass(frozen=True)
class NodeRecord:
    name: str
    cordoned: bool
    draining: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "cordoned": self.cordoned, "draining": self.draining}


@dataclass(frozen=True)
class DesiredState:
    templates: list[TemplateRecord] = field(default_factory=list)
    nodes: list[NodeRecord] = field(default_factory=list)
    generations: dict[str, int] = field(default_factory=dict)

    @property
    def invalid(self) -> list[TemplateRecord]:
        return [t for t in self.templates if t.invalid is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "templates": [t.to_json() for t in sorted(self.templates, key=lambda t: t.name)],
            "nodes": [n.to_json() for n in sorted(self.nodes, key=lambda n: n.name)],
            "generations": dict(sorted(self.generations.items())),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False, allow_nan=False) + "\n"


def template_record(name: str, spec_text: str, version: int, paused: bool) -> TemplateRecord:
    """A stored row as a record, re-validating its spec (never raising: the problem is kept)."""
    try:
        spec = json.loads(spec_text)
    except (ValueError, RecursionError) as exc:
        return TemplateRecord(name, version, paused, spec_text, f"its spec is not JSON ({exc})")
    try:
        parse_template(spec, name=name, max_count=MAX_INT)
    except TemplateError as exc:
        return TemplateRecord(name, version, paused, spec, exc.message)
    return TemplateRecord(name, version, paused, spec)


def parse_export(text: str, source: str) -> DesiredState:
    """An export document back into records; ConfigError listing every problem (by path).

    Templates are validated as the controller would (``parse_template``), and one the export
    marked ``invalid`` is refused by name: fix its spec in the file, or leave it out.
    """
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be an export") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: not JSON: {exc}") from None
    problems: list[str] = []
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{source}: not a gaffer-controller export (no \"format\": \"{FORMAT}\")")
    if data.get("version") != FORMAT_VERSION:
        raise ConfigError(
            f"{source}: export format version {data.get('version')!r} is not understood here "
            f"(this gaffer reads version {FORMAT_VERSION})"
        )
    unknown = sorted(set(data) - {"format", "version", "templates", "nodes", "generations"})
    problems += [f"{key}: unknown field" for key in unknown]
    templates = _parse_templates(data.get("templates", []), problems)
    nodes = _parse_nodes(data.get("nodes", []), problems)
    generations = _parse_generations(data.get("generations", {}), problems)
    if problems:
        raise ConfigError(_listing(source, problems))
    return DesiredState(templates, nodes, generations)


def check_importable(state: DesiredState, source: str) -> list[Template]:
    """The validated Templates of ``state``; ConfigError naming every template that is not."""
    problems: list[str] = []
    valid: list[Template] = []
    for record in state.templates:
        if record.invalid is not None:
            problems.append(f"templates.{record.name}: no longer validates ({record.invalid}); "
                            "fix its spec or leave it out")
            continue
        try:
            valid.append(parse_template(record.spec, name=record.name))
        except TemplateError as exc:
            problems.extend(f"templates.{p}" for p in exc.problems)
    if problems:
        raise ConfigError(_listing(source, problems))
    return valid


def _parse_templates(items: Any, problems: list[str]) -> list[TemplateRecord]:
    if not isinstance(items, list):
        problems.append("templates: must be a list")
        return []
    records: dict[str, TemplateRecord] = {}
    for index, item in enumerate(items):
        where = f"templates[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            problems.append(f"{where}.name: must be a template name, got {_short(name)}")
            continue
        where = f"templates.{name}"
        if name in records:
            problems.append(f"{where}: appears more than once")
        unknown = sorted(set(item) - {"name", "version", "paused", "spec", "invalid"})
        problems += [f"{where}.{key}: unknown field" for key in unknown]
        version = item.get("version")
        if not _count(version, 1):
            problems.append(f"{where}.version: must be an integer >= 1, got {_short(version)}")
        paused = item.get("paused", False)
        if not isinstance(paused, bool):
            problems.append(f"{where}.paused: must be true or false, got {_short(paused)}")
        invalid = item.get("invalid")
        if invalid is not None and not isinstance(invalid, str):
            problems.append(f"{where}.invalid: must be a string")
        if "spec" not in item:
            problems.append(f"{where}.spec: is required")
        records[name] = TemplateRecord(name, version, paused, item.get("spec"), invalid)
    return list(records.values())


def _parse_nodes(items: Any, problems: list[str]) -> list[NodeRecord]:
    if not isinstance(items, list):
        problems.append("nodes: must be a list")
        return []
    records: dict[str, NodeRecord] = {}
    for index, item in enumerate(items):
        where = f"nodes[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object")
            continue
        name = item.get("name")
        if not _node_name(name):
            problems.append(f"{where}.name: must be a node name, got {_short(name)}")
            continue
        unknown = sorted(set(item) - {"name", "cordoned", "draining"})
        problems += [f"nodes.{name}.{key}: unknown field" for key in unknown]
        flags = {key: item.get(key, False) for key in ("cordoned", "draining")}
        for key, value in flags.items():
            if not isinstance(value, bool):
                problems.append(f"nodes.{name}.{key}: must be true or false, got {_short(value)}")
        if name in records:
            problems.append(f"nodes.{name}: appears more than once")
        records[name] = NodeRecord(name, flags["cordoned"] is True, flags["draining"] is True)
    return list(records.values())


def _parse_generations(value: Any, problems: list[str]) -> dict[str, int]:
    if not isinstance(value, dict):
        problems.append("generations: must be an object of node: generation")
        return {}
    found: dict[str, int] = {}
    for name, generation in value.items():
        if not _node_name(name):
            problems.append(f"generations: {_short(name)} is not a node name")
        elif not _count(generation, 0):
            problems.append(f"generations.{name}: must be an integer >= 0, got {_short(generation)}")
        else:
            found[name] = generation
    return found


def _count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_INT


def _node_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NODE_NAME and value.isprintable()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _listing(source: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)

