"""The store's ``templates`` table: its records, and the SQL that reads and writes them.

The functions that take a connection run inside a transaction the Store opened: the Store
decides when one opens, commits and fails; this module only says what one change to the table
is. The others (the checks, comparing specs) touch no database. The spec is ``Template.to_dict()`` as JSON and comes back through
``parse_template``; an apply compares specs as JSON, so storing 100,000 templates decodes none.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

from gaffer.common.errors import ConfigError, InvalidRequest, TemplateError, TemplateNotFound
from gaffer.common.limits import MAX_INT
from gaffer.common.template import RESTART_FIELDS, Template, parse_template

ChangeKind = Literal["created", "updated", "scaled", "unchanged"]

COLUMNS = "name, spec, version, paused, created_at, updated_at"
SQL_BATCH = 500
"""Names per ``IN (...)`` query: well under SQLite's limit on bound parameters."""


@dataclass(frozen=True)
class StoredTemplate:
    template: Template
    version: int
    paused: bool
    created_at: float
    updated_at: float

    @property
    def name(self) -> str:
        return self.template.name


@dataclass(frozen=True)
class Change:
    """What ``put_templates`` or ``set_count`` did to one template.

    ``scaled`` means only ``numprocesses`` changed; ``updated`` means anything else did (perhaps
    the count too). ``version`` is the template's version after the call; ``previous`` is the
    template before it (None when created, or when the stored one no longer validated);
    ``stored`` is the record as committed, so callers need not read it back.
    """

    name: str
    kind: ChangeKind
    version: int
    previous_spec: str | None = None
    stored: StoredTemplate | None = None

    @property
    def changed(self) -> bool:
        return self.kind != "unchanged"

    @property
    def previous(self) -> Template | None:
        """The template before the change, decoded on demand (None when created, or when the
        stored one no longer validated): applying 100,000 templates decodes none of them."""
        if self.previous_spec is None:
            return None
        try:
            return decode_spec(self.name, self.previous_spec)
        except ValueError:
            return None


@dataclass
class Puts:
    """An apply worked out against the stored rows (``prepare_puts``), to commit as one."""

    templates: dict[str, Template] = field(default_factory=dict)
    rows: dict[str, tuple] = field(default_factory=dict)
    plans: dict[str, tuple[ChangeKind, bool]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- specs


def decode_spec(name: str, spec: str) -> Template:
    """A stored spec back into a Template; ValueError saying why it no longer validates."""
    try:
        return parse_template(json.loads(spec), name=name, max_count=MAX_INT)
    except TemplateError as exc:
        raise ValueError(exc.message) from exc
    except ValueError as exc:
        raise ValueError(f"its spec is not JSON ({exc})") from exc


def encode_spec(template: Template) -> str:
    return template.spec_json()


def decode_stored(path: Path, name: str, spec: str) -> Template:
    """``decode_spec`` for a template read from the store at ``path``: ConfigError naming the
    template and the way out (``forget-template``) when it no longer validates."""
    try:
        return decode_spec(name, spec)
    except ValueError as exc:
        raise ConfigError(
            f"template {name!r} stored in {path} no longer validates: {exc}; stop the "
            f"controller and run `gaffer-controller forget-template {name} --data-dir "
            f"{path.parent}` (`gaffer-controller export` first keeps a copy of its spec)"
        ) from exc


def stored_template(path: Path, row: tuple) -> StoredTemplate:
    name, spec, version, paused, created_at, updated_at = row
    return StoredTemplate(decode_stored(path, name, spec), version, bool(paused), created_at, updated_at)


def compare(name: str, old_spec: str, template: Template) -> tuple[ChangeKind, bool]:
    """How ``template`` differs from the stored ``old_spec``, and whether its launch fields
    (``RESTART_FIELDS``: what a running process was started with) changed.

    Compared as plain data, which costs a JSON parse instead of a full validation. A stored
    spec with other fields than this gaffer writes (one from an older version) is decoded
    first, so its defaults count and an upgrade never looks like a change.
    """
    if old_spec == template.spec_json():
        return "unchanged", False
    after = template.to_dict()
    try:
        before = json.loads(old_spec)
    except ValueError:
        return "updated", True
    if not isinstance(before, dict):
        return "updated", True
    if before.keys() != after.keys():
        try:
            before = decode_spec(name, old_spec).to_dict()
        except ValueError:
            return "updated", True
    if before == after:
        return "unchanged", False
    relaunch = any(before.get(key) != after.get(key) for key in RESTART_FIELDS)  # "port" only when set
    count_only = {**before, "numprocesses": 0} == {**after, "numprocesses": 0}
    return ("scaled" if count_only else "updated"), relaunch


# ----------------------------------------------------------------------------- applies


def add_puts(puts: Puts, templates: Sequence[Template]) -> None:
    """Take ``templates`` into ``puts`` (InvalidRequest for a name given twice in one apply),
    making each one's JSON now, outside any transaction."""
    for template in templates:
        if template.name in puts.templates:
            raise InvalidRequest(f"template {template.name!r} appears more than once in one apply")
        puts.templates[template.name] = template
        template.spec_json()


def read_puts(conn: sqlite3.Connection, puts: Puts, names: Sequence[str]) -> None:
    """Read the stored rows of ``names`` into ``puts`` and work out what putting each means."""
    for start in range(0, len(names), SQL_BATCH):
        chunk = names[start:start + SQL_BATCH]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT {COLUMNS} FROM templates WHERE name IN ({marks})", chunk):
            puts.rows[row[0]] = row
    for name in names:
        row = puts.rows.get(name)
        puts.plans[name] = ("created", False) if row is None else compare(name, row[1], puts.templates[name])


def commit_puts(conn: sqlite3.Connection, puts: Puts, now: float) -> list[Change]:
    """Write what ``read_puts`` worked out; a template whose stored version moved since (a
    concurrent scale, say) is worked out again first. A changed launch spec (``relaunch``)
    forgets the template's failures."""
    moved = _moved(conn, puts)
    if moved:
        read_puts(conn, puts, moved)
    inserts, updates, relaunched, changes = [], [], [], []
    for name, template in puts.templates.items():
        kind, relaunch = puts.plans[name]
        row = puts.rows.get(name)
        if row is None:
            inserts.append((name, template.spec_json(), now, now))
            changes.append(Change(name, "created", 1, None, StoredTemplate(template, 1, False, now, now)))
            continue
        _, old_spec, version, paused, created_at, updated_at = row
        if kind == "unchanged":
            stored = StoredTemplate(template, version, bool(paused), created_at, updated_at)
            changes.append(Change(name, kind, version, old_spec, stored))
            continue
        updates.append((template.spec_json(), now, name))
        if relaunch:
            relaunched.append((name,))
        stored = StoredTemplate(template, version + 1, bool(paused), created_at, now)
        changes.append(Change(name, kind, version + 1, old_spec, stored))
    conn.executemany(
        "INSERT INTO templates (name, spec, version, paused, created_at, updated_at) "
        "VALUES (?, ?, 1, 0, ?, ?)", inserts,
    )
    conn.executemany(
        "UPDATE templates SET spec = ?, version = version + 1, updated_at = ? WHERE name = ?", updates,
    )
    conn.executemany("DELETE FROM failures WHERE template = ?", relaunched)
    return changes


def _moved(conn: sqlite3.Connection, puts: Puts) -> list[str]:
    """Names whose stored row is not the one ``read_puts`` read (changed, created or deleted
    since); their rows are dropped from ``puts``."""
    names = list(puts.templates)
    current: dict[str, int] = {}
    for start in range(0, len(names), SQL_BATCH):
        chunk = names[start:start + SQL_BATCH]
        marks = ",".join("?" * len(chunk))
        current.update(conn.execute(f"SELECT name, version FROM templates WHERE name IN ({marks})", chunk))
    moved = []
    for name in names:
        row = puts.rows.get(name)
        if (row[2] if row is not None else None) != current.get(name):
            puts.rows.pop(name, None)
            moved.append(name)
    return moved


# ----------------------------------------------------------------------------- one template


def check_count(name: str, count: object) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_INT:
        raise InvalidRequest(f"numprocesses of {name!r} must be an integer >= 0, got {count!r}")


def set_count(conn: sqlite3.Connection, path: Path, name: str, count: int, now: float) -> Change:
    row = conn.execute(f"SELECT {COLUMNS} FROM templates WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise TemplateNotFound(name)
    _, spec, version, paused, created_at, updated_at = row
    previous = decode_stored(path, name, spec)
    if previous.numprocesses == count:
        stored = StoredTemplate(previous, version, bool(paused), created_at, updated_at)
        return Change(name, "unchanged", version, spec, stored)
    scaled = previous.with_count(count)
    conn.execute(
        "UPDATE templates SET spec = ?, version = version + 1, updated_at = ? WHERE name = ?",
        (encode_spec(scaled), now, name),
    )
    stored = StoredTemplate(scaled, version + 1, bool(paused), created_at, now)
    return Change(name, "scaled", version + 1, spec, stored)


def set_paused(conn: sqlite3.Connection, name: str, paused: bool, now: float) -> bool:
    cursor = conn.execute(
        "UPDATE templates SET paused = ?, updated_at = ? WHERE name = ? AND paused != ?",
        (int(bool(paused)), now, name, int(bool(paused))),
    )
    if cursor.rowcount == 0 and not template_exists(conn, name):
        raise TemplateNotFound(name)
    return cursor.rowcount == 1


def delete(conn: sqlite3.Connection, names: Sequence[str]) -> None:
    for name in names:
        if conn.execute("DELETE FROM templates WHERE name = ?", (name,)).rowcount == 0:
            raise TemplateNotFound(name)


def get_row(conn: sqlite3.Connection, name: str) -> tuple:
    row = conn.execute(f"SELECT {COLUMNS} FROM templates WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise TemplateNotFound(name)
    return row


def all_rows(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute(f"SELECT {COLUMNS} FROM templates ORDER BY name").fetchall()


def template_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM templates WHERE name = ?", (name,)).fetchone() is not None


def require_templates(conn: sqlite3.Connection, names: Iterable[str]) -> None:
    """TemplateNotFound for the first of ``names`` (sorted) that is not stored."""
    for name in sorted(names):
        if not template_exists(conn, name):
            raise TemplateNotFound(name)
