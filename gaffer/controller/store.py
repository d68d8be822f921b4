"""The controller's durable desired state: one SQLite file, ``<data_dir>/gaffer.db``.

Why it is built this way:

- **Acknowledged means durable.** Every public method is one short transaction that commits
  before it returns. The database runs in WAL mode with ``synchronous=FULL``, so a commit is
  fsynced: whatever a caller was told survives a SIGKILL at any moment, and a power cut as far
  as the disk honours fsync. Nothing is cached here; the file is the only truth, so a restarted
  controller sees exactly what was acknowledged, no more and no less.
- **One change, one transaction.** ``put_templates`` stores a whole apply at once: a crash or a
  full disk leaves all of it or none of it, never the first 170 of 3,000.
- **One writer.** Two controllers on one data dir would each believe their own desired state.
  ``<data_dir>/controller.lock`` is held with ``flock`` for the Store's lifetime (the kernel drops
  it when the holder dies, even by SIGKILL) and carries the holder's pid for the refusal message.
  The offline commands (``gaffer-controller check|export|import|forget-template``) take it too.
- **Damage is found at the door and reported, never a traceback.** Opening runs SQLite's
  ``quick_check``; a damaged file is refused with one line naming it and the way out. Every
  SQLite failure later (disk full, I/O error, read-only, corruption) becomes a StorageError
  with one clear line, logged once per kind until a write succeeds again. Corruption found while
  running is sticky: from then on the Store refuses every call (StorageDamaged) rather than
  write more into a damaged file; the controller keeps serving what it holds in memory.
- **Schema changes are ordered migrations**, applied all-or-nothing in one transaction. A
  database written by a newer gaffer is refused rather than guessed at; version 0 is an empty
  file.
- **Stored templates are re-validated when read.** The spec is ``Template.to_dict()`` as JSON and
  comes back through ``parse_template``; one that no longer validates is reported by name
  (ConfigError, naming ``gaffer-controller forget-template``), never silently dropped.

Tables (schema version 2): ``meta`` (schema_version), ``templates`` (spec, version, paused),
``nodes`` (labels, agent id, cordoned, draining, first/last seen; a node may be stored before it
ever registers), ``placement``, ``failures`` and ``restarts`` (a template's restart generation,
kept beside its spec; all three deleted with their template), ``generations`` (per node, kept
even when everything else about the node goes).

Not thread-safe: the controller calls it from its one loop thread (backups read the file through
their own connection). Each write fsyncs, so batch where the caller can (``put_templates``,
``save_placement``, ``touch_nodes``, ``next_generations``).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Mapping, Sequence

from gaffer.common.errors import (
    ConfigError, InvalidRequest, StorageDamaged, StorageError, TemplateError, TemplateNotFound,
)
from gaffer.common.model import Slot
from gaffer.common.template import MAX_INT, RESTART_FIELDS, Template, parse_template
from gaffer.controller.dbfile import (
    DB_NAME, LOCK_HINT, acquire_lock, connect, damaged_at_open, quick_check, rollback, storage_error,
)

log = logging.getLogger("gaffer.controller.store")


ChangeKind = Literal["created", "updated", "scaled", "unchanged"]
Migration = Callable[[sqlite3.Connection], None]


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


@dataclass(frozen=True)
class StoredNode:
    """A node record; ``first_seen``/``last_seen`` are None until it registers (``put_node``)."""

    name: str
    labels: Mapping[str, str]
    agent_id: str
    cordoned: bool
    draining: bool
    first_seen: float | None
    last_seen: float | None


# ------------------------------------------------------------------------------- migrations

_V1 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE templates (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1),
        paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL)""",
    """CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        labels TEXT NOT NULL DEFAULT '{}',
        agent_id TEXT NOT NULL DEFAULT '',
        cordoned INTEGER NOT NULL DEFAULT 0 CHECK (cordoned IN (0, 1)),
        draining INTEGER NOT NULL DEFAULT 0 CHECK (draining IN (0, 1)),
        first_seen REAL,
        last_seen REAL)""",
    """CREATE TABLE placement (
        template TEXT NOT NULL REFERENCES templates (name) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL CHECK (ordinal >= 1),
        node TEXT NOT NULL,
        PRIMARY KEY (template, ordinal))""",
    """CREATE TABLE failures (
        template TEXT NOT NULL REFERENCES templates (name) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL CHECK (ordinal >= 1),
        node TEXT NOT NULL,
        PRIMARY KEY (template, ordinal, node))""",
    "CREATE TABLE generations (node TEXT PRIMARY KEY, generation INTEGER NOT NULL)",
)


_TEMPLATE_COLUMNS = "name, spec, version, paused, created_at, updated_at"
_NODE_COLUMNS = "name, labels, agent_id, cordoned, draining, first_seen, last_seen"
_SQL_BATCH = 500
"""Names per ``IN (...)`` query: well under SQLite's limit on bound parameters."""


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


def _create_restarts(conn: sqlite3.Connection) -> None:
    """Version 2: restart generations live beside the spec, never in it."""
    conn.execute(
        """CREATE TABLE restarts (
            template TEXT PRIMARY KEY REFERENCES templates (name) ON DELETE CASCADE,
            generation INTEGER NOT NULL CHECK (generation >= 1))"""
    )


# Step i takes the schema from version i to i + 1. Append only; never edit a shipped step.
# A step runs inside the migration's transaction: no executescript (it commits), and no
# PRAGMA foreign_keys (ignored inside a transaction).
MIGRATIONS: tuple[Migration, ...] = (_create_v1, _create_restarts)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database to ``len(migrations)`` in one transaction; return the version it had.

    A failing step leaves the database exactly as it was (ConfigError); a newer version than
    ``len(migrations)`` is refused before anything is written. ``conn`` must be in autocommit
    mode (``isolation_level=None``): the transaction is opened and closed here.
    """
    target = len(migrations)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _schema_version(conn, path)
        if found > target:
            raise ConfigError(
                f"{path} has schema version {found}, newer than this gaffer understands "
                f"({target}): it was written by a newer gaffer; upgrade gaffer or use another "
                "--data-dir"
            )
        for version in range(found, target):
            try:
                migrations[version](conn)
            except sqlite3.Error as exc:
                raise ConfigError(
                    f"{path}: migrating the schema from version {version} to {version + 1} "
                    f"failed ({exc}); the database was left at version {found}"
                ) from exc
        if found < target:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(target),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        if tables:
            raise ConfigError(
                f"{path} is not a gaffer database (it has tables {', '.join(sorted(tables))} "
                "but no schema version); move it away or use another --data-dir"
            )
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or not str(row[0]).isdecimal():
        raise ConfigError(f"{path} has no valid schema version in its meta table")
    return int(row[0])


# ------------------------------------------------------------------------------------ store


class Store:
    """The desired state under one data dir, locked to this Store until ``close()``.

    Opening runs ``quick_check`` and refuses a damaged file (StorageDamaged); ``lock_hint``
    ends the message refusing a data dir another process holds.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        lock_hint: str = LOCK_HINT,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self._clock = clock
        self._damage: StorageDamaged | None = None
        self._failing: set[str] = set()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create the data dir {self.data_dir}: {exc.strerror}") from exc
        self._lock_fd = acquire_lock(self.data_dir, lock_hint)
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = connect(self.path)
            problems = quick_check(self._conn)
            if problems:
                raise StorageDamaged(damaged_at_open(self.path, problems))
            migrate(self._conn, self.path)
        except sqlite3.Error as exc:
            self.close()
            raise storage_error(exc, self.path, at_open=True) from exc
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the database and release the data dir; calling it twice is harmless."""
        conn, self._conn = self._conn, None
        fd, self._lock_fd = self._lock_fd, -1
        try:
            if conn is not None:
                conn.close()
        finally:
            if fd >= 0:
                os.close(fd)

    def schema_version(self) -> int:
        with self._read() as conn:
            return _schema_version(conn, self.path)

    def health(self) -> dict[str, object]:
        """For ``status``: ``ok``, and what is wrong (damage, or kinds of failing writes)."""
        return {
            "ok": self._damage is None and not self._failing,
            "damaged": self._damage is not None,
            "failing": sorted(self._failing),
            "problem": self._damage.message if self._damage is not None else None,
        }

    # ------------------------------------------------------------------------- templates

    def put_template(self, template: Template) -> Change:
        """Create or replace ``template``; the version goes up only when something changed."""
        return self.put_templates([template])[0]

    def put_templates(self, templates: Sequence[Template]) -> list[Change]:
        """Create or replace every template in one transaction: all are stored, or none.

        A template whose launch spec changed (``spec_hash``) loses its failure history in the
        same transaction: a new spec gets a fresh start on every node.
        """
        return self.commit_puts(self.prepare_puts(templates))

    def prepare_puts(self, templates: Sequence[Template], prepared: Puts | None = None) -> Puts:
        """Work out, without writing, what putting ``templates`` changes (see ``Puts``).

        Call it on slices of a large apply (passing the ``Puts`` so far) so the loop can run
        between them; ``commit_puts`` then writes everything in one short transaction.
        """
        puts = prepared if prepared is not None else Puts()
        names = [t.name for t in templates]
        for template in templates:
            if template.name in puts.templates:
                raise InvalidRequest(f"template {template.name!r} appears more than once in one apply")
            puts.templates[template.name] = template
            template.spec_json()
        with self._read() as conn:
            for start in range(0, len(names), _SQL_BATCH):
                chunk = names[start:start + _SQL_BATCH]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE name IN ({marks})", chunk):
                    puts.rows[row[0]] = row
        for template in templates:
            row = puts.rows.get(template.name)
            if row is None:
                puts.plans[template.name] = ("created", False)
            else:
                puts.plans[template.name] = _compare(template.name, row[1], template)
        return puts

    def commit_puts(self, puts: Puts) -> list[Change]:
        """Write what ``prepare_puts`` worked out, in one transaction. A template whose stored
        version moved since (a concurrent scale, say) is worked out again inside it, so the
        result is always what putting it now means."""
        now = self._clock()
        with self._write() as conn:
            moved = self._moved(conn, puts)
            if moved:
                for row in conn.execute(
                    f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE name IN ({','.join('?' * len(moved))})", moved
                ):
                    puts.rows[row[0]] = row
                for name in moved:
                    row = puts.rows.get(name)
                    template = puts.templates[name]
                    puts.plans[name] = ("created", False) if row is None else _compare(name, row[1], template)
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

    @staticmethod
    def _moved(conn: sqlite3.Connection, puts: Puts) -> list[str]:
        """Names whose stored row is not the one ``prepare_puts`` read (changed, created or
        deleted since)."""
        names = list(puts.templates)
        current: dict[str, int] = {}
        for start in range(0, len(names), _SQL_BATCH):
            chunk = names[start:start + _SQL_BATCH]
            marks = ",".join("?" * len(chunk))
            current.update(conn.execute(f"SELECT name, version FROM templates WHERE name IN ({marks})", chunk))
        moved = []
        for name in names:
            row = puts.rows.get(name)
            if (row[2] if row is not None else None) != current.get(name):
                puts.rows.pop(name, None)
                moved.append(name)
        return moved

    def set_count(self, name: str, count: int) -> Change:
        """Set a template's cluster-wide ``numprocesses`` ("scaled" or "unchanged")."""
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_INT:
            raise InvalidRequest(f"numprocesses of {name!r} must be an integer >= 0, got {count!r}")
        now = self._clock()
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise TemplateNotFound(name)
            _, spec, version, paused, created_at, updated_at = row
            previous = self._decode(name, spec)
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

    def set_paused(self, name: str, paused: bool) -> bool:
        """Pause (instances stopped, template kept) or resume; True when the flag changed."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE templates SET paused = ?, updated_at = ? WHERE name = ? AND paused != ?",
                (int(bool(paused)), self._clock(), name, int(bool(paused))),
            )
            if cursor.rowcount == 0 and not _template_exists(conn, name):
                raise TemplateNotFound(name)
            return cursor.rowcount == 1

    def delete_template(self, name: str) -> None:
        """Forget a template with its placement and failures (works on one that no longer validates)."""
        self.delete_templates([name])

    def delete_templates(self, names: Sequence[str]) -> None:
        """``delete_template`` for several, in one transaction: all go, or none (TemplateNotFound
        for the first unknown name)."""
        with self._write() as conn:
            for name in names:
                if conn.execute("DELETE FROM templates WHERE name = ?", (name,)).rowcount == 0:
                    raise TemplateNotFound(name)

    def get_template(self, name: str) -> StoredTemplate:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise TemplateNotFound(name)
        return self._stored_template(row)

    def templates(self) -> list[StoredTemplate]:
        """Every template, by name; ConfigError naming the first stored one that no longer validates."""
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_TEMPLATE_COLUMNS} FROM templates ORDER BY name").fetchall()
        return [self._stored_template(row) for row in rows]

    # ----------------------------------------------------------------------------- nodes

    def put_node(self, name: str, labels: Mapping[str, str], agent_id: str) -> StoredNode:
        """Record a node registering (its first time sets ``first_seen``); keeps cordon/drain."""
        _check_name("node", name)
        _check_labels(name, labels)
        if not isinstance(agent_id, str):
            raise InvalidRequest(f"agent_id of node {name!r} must be a string, got {agent_id!r}")
        now = self._clock()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO nodes (name, labels, agent_id, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "labels = excluded.labels, agent_id = excluded.agent_id, "
                "first_seen = COALESCE(nodes.first_seen, excluded.first_seen), "
                "last_seen = excluded.last_seen",
                (name, json.dumps(dict(labels), sort_keys=True), agent_id, now, now),
            )
            return _stored_node(_node_row(conn, name))

    def set_cordoned(self, name: str, cordoned: bool) -> bool:
        """Cordon (no new placements) or uncordon; True when the flag changed."""
        return self.set_node_flags(name, cordoned=cordoned)

    def set_draining(self, name: str, draining: bool) -> bool:
        """Mark a node as draining (its instances to move away); True when the flag changed."""
        return self.set_node_flags(name, draining=draining)

    def set_node_flags(self, name: str, *, cordoned: bool | None = None, draining: bool | None = None) -> bool:
        """Set a node's cordoned and/or draining flags (None: leave it) in one transaction;
        True when either changed. A node that never registered gets a record only when a flag
        is set, so clearing one nobody set invents nothing."""
        _check_name("node", name)
        wanted = {k: bool(v) for k, v in (("cordoned", cordoned), ("draining", draining)) if v is not None}
        with self._write() as conn:
            row = conn.execute("SELECT cordoned, draining FROM nodes WHERE name = ?", (name,)).fetchone()
            current = {"cordoned": bool(row[0]), "draining": bool(row[1])} if row else {}
            changes = {k: v for k, v in wanted.items() if current.get(k, False) != v}
            if not changes:
                return False
            columns = ", ".join(changes)
            conn.execute(
                f"INSERT INTO nodes (name, {columns}) VALUES (?{', ?' * len(changes)}) "
                f"ON CONFLICT (name) DO UPDATE SET "
                + ", ".join(f"{column} = excluded.{column}" for column in changes),
                (name, *(int(v) for v in changes.values())),
            )
            return True

    def touch_node(self, name: str, ts: float) -> bool:
        """Set a registered node's ``last_seen`` (wall-clock seconds); False if it never registered."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE nodes SET last_seen = ? WHERE name = ? AND first_seen IS NOT NULL", (ts, name)
            )
            return cursor.rowcount == 1

    def touch_nodes(self, seen: Mapping[str, float]) -> None:
        """``touch_node`` for many nodes in one transaction (one fsync instead of one each)."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE nodes SET last_seen = ? WHERE name = ? AND first_seen IS NOT NULL",
                [(ts, name) for name, ts in seen.items()],
            )

    def nodes(self) -> list[StoredNode]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY name").fetchall()
        return [_stored_node(row) for row in rows]

    def forget_node(self, name: str) -> bool:
        """Delete a node's record (labels, agent, cordon, drain); True if there was one.

        Its generation stays: an agent that later says hello under that name gets a generation
        above every one it was ever sent, so a stale assignment can never look current.
        """
        _check_name("node", name)
        with self._write() as conn:
            return conn.execute("DELETE FROM nodes WHERE name = ?", (name,)).rowcount == 1

    # ------------------------------------------------------------------ placement, failures

    def save_placement(self, changes: Mapping[Slot, str | None]) -> None:
        """Apply a batch of slot changes in one transaction: a node name places, None removes.

        Placing an ordinal of an unknown template raises TemplateNotFound and applies nothing;
        removing a slot that is not there is fine (so is one of a deleted template).
        """
        places: list[tuple[str, int, str]] = []
        removes: list[Slot] = []
        for slot, node in changes.items():
            template, ordinal = _check_slot(slot)
            if node is None:
                removes.append((template, ordinal))
            else:
                _check_name(f"node of {template}.{ordinal}", node)
                places.append((template, ordinal, node))
        if not changes:
            return
        with self._write() as conn:
            _require_templates(conn, {template for template, _, _ in places})
            conn.executemany("DELETE FROM placement WHERE template = ? AND ordinal = ?", removes)
            conn.executemany(
                "INSERT INTO placement (template, ordinal, node) VALUES (?, ?, ?) "
                "ON CONFLICT (template, ordinal) DO UPDATE SET node = excluded.node",
                places,
            )

    def placement(self) -> dict[Slot, str]:
        with self._read() as conn:
            rows = conn.execute("SELECT template, ordinal, node FROM placement").fetchall()
        return {(template, ordinal): node for template, ordinal, node in rows}

    def mark_failed(self, template: str, ordinal: int, node: str) -> bool:
        """Remember that ``template.ordinal`` failed on ``node``; True the first time."""
        template, ordinal = _check_slot((template, ordinal))
        _check_name("node", node)
        with self._write() as conn:
            _require_templates(conn, {template})
            cursor = conn.execute(
                "INSERT OR IGNORE INTO failures (template, ordinal, node) VALUES (?, ?, ?)",
                (template, ordinal, node),
            )
            return cursor.rowcount == 1

    def clear_failed(self, template: str, ordinal: int | None = None) -> int:
        """Forget the failures of one ordinal (or of every ordinal); returns how many went.

        Like removing a slot, forgetting is idempotent: an unknown (or just deleted) template
        has nothing to forget and gives 0.
        """
        if ordinal is not None:
            _check_slot((template, ordinal))
        with self._write() as conn:
            if ordinal is None:
                cursor = conn.execute("DELETE FROM failures WHERE template = ?", (template,))
            else:
                cursor = conn.execute(
                    "DELETE FROM failures WHERE template = ? AND ordinal = ?", (template, ordinal)
                )
            return cursor.rowcount

    def restart(self, name: str) -> int:
        """Bump ``name``'s restart generation (its instances restart, rolling) and forget its
        failures, in one transaction; the new generation. The spec is left as it is."""
        with self._write() as conn:
            if not _template_exists(conn, name):
                raise TemplateNotFound(name)
            conn.execute(
                "INSERT INTO restarts (template, generation) VALUES (?, 1) "
                "ON CONFLICT (template) DO UPDATE SET generation = generation + 1",
                (name,),
            )
            conn.execute("DELETE FROM failures WHERE template = ?", (name,))
            return conn.execute("SELECT generation FROM restarts WHERE template = ?", (name,)).fetchone()[0]

    def restarts(self) -> dict[str, int]:
        """Each restarted template's restart generation (0, absent, for the others)."""
        with self._read() as conn:
            return dict(conn.execute("SELECT template, generation FROM restarts").fetchall())

    def failed(self) -> dict[Slot, frozenset[str]]:
        """For each ordinal that has failed somewhere, the nodes it failed on."""
        with self._read() as conn:
            rows = conn.execute("SELECT template, ordinal, node FROM failures").fetchall()
        found: dict[Slot, set[str]] = {}
        for template, ordinal, node in rows:
            found.setdefault((template, ordinal), set()).add(node)
        return {slot: frozenset(nodes) for slot, nodes in found.items()}

    # ---------------------------------------------------------------------------- generations

    def next_generation(self, node: str) -> int:
        """The next assignment generation for ``node``: strictly increasing, across restarts too."""
        return self.next_generations([node])[node]

    def next_generations(self, nodes: Iterable[str], floors: Mapping[str, int] | None = None) -> dict[str, int]:
        """``next_generation`` for several nodes in one transaction.

        ``floors`` are generations the nodes say they already applied: the next one is above
        both the stored one and the floor. After a restore from an older backup the stored
        generations are behind what agents hold, and an agent ignores an assignment older
        than its own, so without the floor it would never take a new one.
        """
        names = list(dict.fromkeys(nodes))
        floors = floors or {}
        for name in names:
            _check_name("node", name)
        rows = [(name, max(0, int(floors.get(name, 0))) + 1) for name in names]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO generations (node, generation) VALUES (?, ?) ON CONFLICT (node) "
                "DO UPDATE SET generation = MAX(generation + 1, excluded.generation)",
                rows,
            )
            return {
                name: conn.execute("SELECT generation FROM generations WHERE node = ?", (name,)).fetchone()[0]
                for name in names
            }

    def generations(self) -> dict[str, int]:
        """The last generation handed out per node."""
        with self._read() as conn:
            return dict(conn.execute("SELECT node, generation FROM generations").fetchall())

    # -------------------------------------------------------------------------------- inner

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"the store at {self.path} is closed")
        if self._damage is not None:
            raise StorageDamaged(self._damage.message)
        return self._conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read; SQLite's failures become one StorageError (logged once)."""
        conn = self._db()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (and fsynced) before the caller returns, or rolled
        back whole; SQLite's failures become one StorageError (logged once per kind)."""
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        if self._failing:
            log.warning("the store %s takes writes again (%s is over)", self.path, ", ".join(sorted(self._failing)))
            self._failing.clear()

    def _failed(self, exc: sqlite3.Error) -> StorageError:
        error = storage_error(exc, self.path)
        if isinstance(error, StorageDamaged):
            self._damage = error
            log.error("%s", error.message)
        elif error.reason not in self._failing:
            self._failing.add(error.reason)
            log.error("%s", error.message)
        return error

    def _stored_template(self, row: tuple) -> StoredTemplate:
        name, spec, version, paused, created_at, updated_at = row
        return StoredTemplate(self._decode(name, spec), version, bool(paused), created_at, updated_at)

    def _decode(self, name: str, spec: str) -> Template:
        try:
            return decode_spec(name, spec)
        except ValueError as exc:
            raise ConfigError(
                f"template {name!r} stored in {self.path} no longer validates: {exc}; stop the "
                f"controller and run `gaffer-controller forget-template {name} --data-dir "
                f"{self.data_dir}` (`gaffer-controller export` first keeps a copy of its spec)"
            ) from exc


# ------------------------------------------------------------------------------- helpers


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


def _compare(name: str, old_spec: str, template: Template) -> tuple[ChangeKind, bool]:
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
    relaunch = any(before[key] != after[key] for key in RESTART_FIELDS)
    count_only = {**before, "numprocesses": 0} == {**after, "numprocesses": 0}
    return ("scaled" if count_only else "updated"), relaunch


def _template_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM templates WHERE name = ?", (name,)).fetchone() is not None


def _require_templates(conn: sqlite3.Connection, names: Iterable[str]) -> None:
    for name in sorted(names):
        if not _template_exists(conn, name):
            raise TemplateNotFound(name)


def _node_row(conn: sqlite3.Connection, name: str) -> tuple:
    return conn.execute(
        f"SELECT {_NODE_COLUMNS} FROM nodes WHERE name = ?",
        (name,),
    ).fetchone()


def _stored_node(row: tuple) -> StoredNode:
    name, labels, agent_id, cordoned, draining, first_seen, last_seen = row
    return StoredNode(
        name, json.loads(labels), agent_id, bool(cordoned), bool(draining), first_seen, last_seen
    )


def _check_name(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} must be a non-empty string, got {value!r}")


def _check_labels(node: str, labels: object) -> None:
    if not isinstance(labels, Mapping):
        raise InvalidRequest(f"labels of node {node!r} must be a mapping, got {labels!r}")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidRequest(f"labels of node {node!r}: {key!r}={value!r} is not a string pair")


def _check_slot(slot: object) -> Slot:
    if not isinstance(slot, tuple) or len(slot) != 2:
        raise InvalidRequest(f"a placement slot must be (template, ordinal), got {slot!r}")
    template, ordinal = slot
    _check_name("template of a placement slot", template)
    if isinstance(ordinal, bool) or not isinstance(ordinal, int) or not 1 <= ordinal <= MAX_INT:
        raise InvalidRequest(f"ordinal of {template!r} must be an integer >= 1, got {ordinal!r}")
    return template, ordinal
