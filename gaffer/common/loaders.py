"""Reading template files: TOML, JSON and Procfile (with an optional ``.env`` beside it).

Every loader returns validated Templates or raises TemplateError naming the file and listing
all problems; a file that cannot be read or parsed raises ConfigError with the reason. ``load``
also returns the warnings: the Procfile and ``.env`` lines skipped (``procfile.py`` has the
honcho rules), for the CLI to print.

The parsers are guarded (``parse_toml``, ``parse_json``, also used for daemon config files):
a document nested deeper than ``MAX_NESTING`` levels, or so deep that the parser itself runs
out of stack (``RecursionError``), or holding an integer too long to convert, is refused with
one line. NaN and infinities parse, and the validators then refuse them naming the field.

Ports (``common/ports.py``): every Procfile process type gets a port base by the Procfile rule
for its position in honcho's list of types, and a TOML or JSON template with ``port = "auto"``
gets the same for its position in its file (0-based, in file order), from the base
``choose_base`` picks. A ``PORT`` in ``.env`` is that base, not a variable every process gets.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from gaffer.common.errors import ConfigError, Problem, TemplateError
from gaffer.common.limits import NAME_RE, NAME_RULE
from gaffer.common.ports import AUTO, DEFAULT_BASE, choose_base, procfile_base
from gaffer.common.procfile import DotEnv, Skipped, parse_dotenv, parse_procfile
from gaffer.common.template import Template, parse_templates

DEFAULT_FILES = ("gaffer.toml", "Procfile", "gaffer.json")
MAX_NESTING = 32
"""Levels of tables and lists a file may nest (a template needs 3; the wire allows 32)."""


PortBase = Callable[[], int]
"""The base port of ``"auto"`` ports, asked for only when a file has one (ConfigError if the
base given is not a port)."""


@dataclass(frozen=True)
class Loaded:
    """What one template file holds: its templates and the lines skipped, a warning each."""

    templates: list[Template]
    warnings: list[Skipped] = field(default_factory=list)


def load_templates(
    path: str | Path, port: int | None = None, environ: Mapping[str, str] | None = None
) -> list[Template]:
    """The templates of one file (``load`` without the warnings)."""
    return load(path, port, environ).templates


def load(path: str | Path, port: int | None = None, environ: Mapping[str, str] | None = None) -> Loaded:
    """Load the templates of one file, choosing the format from its name.

    A file that defines no template at all is an error: it is almost always a mistake, and
    applying it (or reloading to it) would otherwise silently stop everything. ``port`` is
    ``-p``; ``environ`` (default: gaffer's own) may hold the fallback ``PORT``.
    """
    path = Path(path)
    kind = file_kind(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    os_port = (os.environ if environ is None else environ).get("PORT")
    if kind == "toml":
        loaded = Loaded(templates_from_toml(text, source=str(path), port_base=lambda: choose_base(port, None, os_port)))
    elif kind == "json":
        loaded = Loaded(templates_from_json(text, source=str(path), port_base=lambda: choose_base(port, None, os_port)))
    else:
        dotenv = read_dotenv(path.parent / ".env")
        dotenv_port = dotenv.values.get("PORT")
        loaded = load_procfile(
            text, dotenv, source=str(path), port_base=lambda: choose_base(port, dotenv_port, os_port)
        )
    if not loaded.templates:
        raise TemplateError([Problem("", "", "no templates defined")], source=str(path))
    return loaded


def file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return "toml"
    if suffix == ".json":
        return "json"
    return "procfile"


def find_default_file(directory: Path) -> Path | None:
    """The template file ``gaffer start`` uses when none is named."""
    for name in DEFAULT_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def resolve_file(file: str | None, directory: Path) -> Path:
    """``file`` when given, else the default file in ``directory`` (``gaffer start``, ``check``
    and ``export`` look the same way)."""
    if file is not None:
        return Path(file)
    found = find_default_file(directory)
    if found is None:
        raise ConfigError("no template file given and none of gaffer.toml, Procfile, gaffer.json here")
    return found


def _default_base() -> int:
    return DEFAULT_BASE


def number_ports(items: Iterable[tuple[str | None, Any]], port_base: PortBase) -> list[tuple[str | None, Any]]:
    """``items`` with each ``port = "auto"`` replaced by the Procfile rule's base for the
    template's position (``port_base`` asked once, and only if some template has ``"auto"``)."""
    items = list(items)
    base: int | None = None
    numbered: list[tuple[str | None, Any]] = []
    for position, (name, data) in enumerate(items):
        if isinstance(data, Mapping) and data.get("port") == AUTO:
            if base is None:
                base = port_base()
            data = {**data, "port": procfile_base(base, position)}
        numbered.append((name, data))
    return numbered


def templates_from_toml(text: str, source: str | None = None, port_base: PortBase = _default_base) -> list[Template]:
    """A TOML document whose top-level tables are templates keyed by name."""
    data = parse_toml(text, source)
    problems = [
        Problem(str(key), "", f"must be a table [{key}], got a bare value")
        for key, value in data.items()
        if not isinstance(value, dict)
    ]
    if problems:
        raise TemplateError(problems, source=source)
    return parse_templates(number_ports(data.items(), port_base), source=source)


def templates_from_json(text: str, source: str | None = None, port_base: PortBase = _default_base) -> list[Template]:
    """One template object (with ``name``), a list of them, or an object keyed by name."""
    data = parse_json(text, source)
    if isinstance(data, list):
        return parse_templates(number_ports(((None, item) for item in data), port_base), source=source)
    if isinstance(data, dict):
        keyed = bool(data) and all(isinstance(value, dict) for value in data.values())
        if ("cmd" in data or "name" in data) and not keyed:
            return parse_templates(number_ports([(None, data)], port_base), source=source)
        return parse_templates(number_ports(data.items(), port_base), source=source)
    raise TemplateError(
        [Problem("", "", "expected a template object, a list of them, or an object keyed by name")],
        source=source,
    )


def parse_toml(text: str, source: str | None = None) -> dict[str, Any]:
    """A TOML document as plain data, or ConfigError naming ``source`` and the problem."""
    return _guarded(tomllib.loads, text, f"{source or 'TOML'}: invalid TOML")


def parse_json(text: str, source: str | None = None) -> Any:
    """A JSON document as plain data, or ConfigError naming ``source`` and the problem."""
    return _guarded(json.loads, text, f"{source or 'JSON'}: invalid JSON")


def _guarded(parse: Callable[[str], Any], text: str, head: str) -> Any:
    try:
        data = parse(text)
    except RecursionError:
        raise ConfigError(f"{head}: nested too deeply (at most {MAX_NESTING} levels)") from None
    except ValueError as exc:  # TOMLDecodeError, JSONDecodeError, an integer too long
        raise ConfigError(f"{head}: {exc}") from None
    depth = nesting(data)
    if depth > MAX_NESTING:
        raise ConfigError(f"{head}: nested {depth} levels deep (at most {MAX_NESTING})")
    return data


def nesting(data: Any) -> int:
    """How many levels of tables and lists ``data`` nests (0 for a scalar), without recursion:
    a parser may hand back a structure deeper than Python's stack (TOML dotted keys)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_NESTING:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def templates_from_procfile(
    text: str, env: dict[str, str] | None = None, source: str | None = None, port_base: PortBase = _default_base
) -> list[Template]:
    """The templates of a Procfile's text (``load_procfile`` without the warnings)."""
    return load_procfile(text, DotEnv(values=dict(env or {})), source, port_base).templates


def load_procfile(text: str, dotenv: DotEnv, source: str | None = None, port_base: PortBase = _default_base) -> Loaded:
    """``name: command`` lines, each run through ``/bin/sh -c`` like foreman and honcho, with
    the ``.env`` values as every template's env (but ``PORT``: it is set per instance) and a
    port base for its position in honcho's list of types. The problems of both files come back
    together."""
    procfile = parse_procfile(text, source or "Procfile")
    problems = list(dotenv.problems)
    shared = {key: value for key, value in dotenv.values.items() if key != "PORT"}
    base: int | None = None
    items: list[tuple[str | None, Any]] = []
    for entry in procfile.types:
        if NAME_RE.match(entry.name):
            base = port_base() if base is None else base
            port = procfile_base(base, entry.position)
            items.append((entry.name, {"cmd": entry.command, "shell": True, "env": dict(shared), "port": port}))
        else:  # honcho would run it: refuse rather than leave it out
            shown = repr(entry.name) if len(entry.name) <= 80 else f"of {len(entry.name)} characters"
            problems.append(Problem(f"line {entry.line}", "", f"the name {shown} is not valid: use {NAME_RULE}"))
    templates: list[Template] = []
    try:
        templates = parse_templates(items, source=source)
    except TemplateError as exc:
        problems.extend(exc.problems)
    if problems:
        raise TemplateError(problems, source=source)
    return Loaded(templates, [*dotenv.skipped, *procfile.skipped])


def read_dotenv(path: Path) -> DotEnv:
    """The ``.env`` at ``path`` (honcho's rules, ``procfile.parse_dotenv``); missing is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DotEnv()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_dotenv(text, str(path))
