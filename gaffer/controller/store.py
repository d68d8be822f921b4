"""The controller's durable desired state: one SQLite file, ``<data_dir>/gaffer.db``.

Why it is built this way:

- **Acknowledged means durable.** Every public method is one short transaction that commits
  before it returns. The database runs in WAL mode with ``synchronous=FULL``, so a commit is
  fsynced: whatever a caller was told survives a SIGKILL at any moment, and a power cut as far
  as the disk honours fsync. Nothing is cached here; the file is the only truth, so a restarted
  controller sees exactly what was acknowledged, no more and no less.
- **One writer.** Two controllers on one data dir would each believe their own desired state.
  ``<data_dir>/controller.lock`` is held with ``flock`` for the Store's lifetime (the kernel drops
  it when the holder dies, even by SIGKILL) and carries the holder's pid for the refusal message.
- **Schema changes are ordered migrations**, applied all-or-nothing in one transaction. A
  database written by a newer gaffer is refused rather than guessed at; version 0 is an empty
  file.
- **Stored templates are re-validated when read.** The spec is ``Template.to_dict()`` as JSON and
  comes back through ``parse_template``; one that no longer validates is reported by name
  (ConfigError), never silently dropped.

Tables (schema version 1): ``meta`` (schema_version), ``templates`` (spec, version, paused),
``nodes`` (labels, agent id, cordoned, draining, first/last seen; a node may be stored before it
ever registers), ``placement`` and ``failures`` (both deleted with their template),
``generations`` (per node, kept even when everything else about the node goes).

Not thread-safe: the controller calls it from its one loop thread. Each write fsyncs, so batch
where the caller can (``save_placement``, ``touch_nodes``, ``next_generations``).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Mapping, Sequence

from gaffer.common.errors import ConfigError, InvalidRequest, TemplateError, TemplateNotFound
from gaffer.common.template import MAX_INT, Template, parse_template

DB_NAME = "gaffer.db"
LOCK_NAME = "controller.lock"
BUSY_TIMEOUT_MS = 5000

ChangeKind = Literal["created", "updated", "scaled", "unchanged"]
Migration = Callable[[sqlite3.Connection], None]
Slot = tuple[str, int]


@dataclass(frozen=True)
class Change:
    """What ``put_template`` or ``set_count`` did.

    ``scaled`` means only ``numprocesses`` changed; ``updated`` means anything else did (perhaps
    the count too). ``version`` is the template's version after the call; ``previous`` is the
    template before it (None when created, or when the stored one no longer validated).
    """

    name: str
    kind: ChangeKind
    version: int
    previous: Template | None = None

    @property
    def changed(self) -> bool:
        return self.kind != "unchanged"


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


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


# Step i takes the schema from version i to i + 1. Append only; never edit a shipped step.
# A step runs inside the migration's transaction: no executescript (it commits), and no
# PRAGMA foreign_keys (ignored inside a transaction).
MIGRATIONS: tuple[Migration, ...] = (_create_v1,)
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
    """The desired state under one data dir, locked to this Store until ``close()``."""

    def __init__(self, data_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self._clock = clock
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create the data dir {self.data_dir}: {exc.strerror}") from exc
        self._lock_fd = _acquire_lock(self.data_dir / LOCK_NAME)
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = _connect(self.path)
            migrate(self._conn, self.path)
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
        return _schema_version(self._db(), self.path)

    # ------------------------------------------------------------------------- templates

    def put_template(self, template: Template) -> Change:
        """Create or replace ``template``; the version goes up only when something changed."""
        spec = _encode(template)
        now = self._clock()
        with self._write() as conn:
            row = conn.execute(
                "SELECT spec, version FROM templates WHERE name = ?", (template.name,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO templates (name, spec, version, paused, created_at, updated_at) "
                    "VALUES (?, ?, 1, 0, ?, ?)",
                    (template.name, spec, now, now),
                )
                return Change(template.name, "created", 1)
            previous = self._decode_or_none(template.name, row[0])
            kind = _compare(previous, template)
            if kind == "unchanged":
                return Change(template.name, kind, row[1], previous)
            conn.execute(
                "UPDATE templates SET spec = ?, version = version + 1, updated_at = ? WHERE name = ?",
                (spec, now, template.name),
            )
            return Change(template.name, kind, row[1] + 1, previous)

    def set_count(self, name: str, count: int) -> Change:
        """Set a template's cluster-wide ``numprocesses`` ("scaled" or "unchanged")."""
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_INT:
            raise InvalidRequest(f"numprocesses of {name!r} must be an integer >= 0, got {count!r}")
        with self._write() as conn:
            row = conn.execute("SELECT spec, version FROM templates WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise TemplateNotFound(name)
            previous = self._decode(name, row[0])
            if previous.numprocesses == count:
                return Change(name, "unchanged", row[1], previous)
            conn.execute(
                "UPDATE templates SET spec = ?, version = version + 1, updated_at = ? WHERE name = ?",
                (_encode(previous.with_count(count)), self._clock(), name),
            )
            return Change(name, "scaled", row[1] + 1, previous)

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
        with self._write() as conn:
            if conn.execute("DELETE FROM templates WHERE name = ?", (name,)).rowcount == 0:
                raise TemplateNotFound(name)

    def get_template(self, name: str) -> StoredTemplate:
        row = self._db().execute(
            f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise TemplateNotFound(name)
        return self._stored_template(row)

    def templates(self) -> list[StoredTemplate]:
        """Every template, by name; ConfigError naming the first stored one that no longer validates."""
        rows = self._db().execute(
            f"SELECT {_TEMPLATE_COLUMNS} FROM templates ORDER BY name"
        ).fetchall()
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
        return self._set_node_flag(name, "cordoned", cordoned)

    def set_draining(self, name: str, draining: bool) -> bool:
        """Mark a node as draining (its instances to move away); True when the flag changed."""
        return self._set_node_flag(name, "draining", draining)

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
        rows = self._db().execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY name"
        ).fetchall()
        return [_stored_node(row) for row in rows]

    def _set_node_flag(self, name: str, column: str, value: bool) -> bool:
        _check_name("node", name)
        with self._write() as conn:
            row = conn.execute(f"SELECT {column} FROM nodes WHERE name = ?", (name,)).fetchone()
            current = bool(row[0]) if row is not None else False
            if current == bool(value):
                return False
            conn.execute(
                f"INSERT INTO nodes (name, {column}) VALUES (?, ?) "
                f"ON CONFLICT (name) DO UPDATE SET {column} = excluded.{column}",
                (name, int(bool(value))),
            )
            return True

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
        rows = self._db().execute("SELECT template, ordinal, node FROM placement")
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
        with self._write() as conn:
            if ordinal is None:
                cursor = conn.execute("DELETE FROM failures WHERE template = ?", (template,))
            else:
                _check_slot((template, ordinal))
                cursor = conn.execute(
                    "DELETE FROM failures WHERE template = ? AND ordinal = ?", (template, ordinal)
                )
            return cursor.rowcount

    def failed(self) -> dict[Slot, frozenset[str]]:
        """For each ordinal that has failed somewhere, the nodes it failed on."""
        found: dict[Slot, set[str]] = {}
        for template, ordinal, node in self._db().execute("SELECT template, ordinal, node FROM failures"):
            found.setdefault((template, ordinal), set()).add(node)
        return {slot: frozenset(nodes) for slot, nodes in found.items()}

    # ---------------------------------------------------------------------------- generations

    def next_generation(self, node: str) -> int:
        """The next assignment generation for ``node``: strictly increasing, across restarts too."""
        return self.next_generations([node])[node]

    def next_generations(self, nodes: Iterable[str]) -> dict[str, int]:
        """``next_generation`` for several nodes in one transaction."""
        names = list(dict.fromkeys(nodes))
        for name in names:
            _check_name("node", name)
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO generations (node, generation) VALUES (?, 1) "
                "ON CONFLICT (node) DO UPDATE SET generation = generation + 1",
                [(name,) for name in names],
            )
            return {
                name: conn.execute("SELECT generation FROM generations WHERE node = ?", (name,)).fetchone()[0]
                for name in names
            }

    def generations(self) -> dict[str, int]:
        """The last generation handed out per node."""
        return dict(self._db().execute("SELECT node, generation FROM generations").fetchall())

    # -------------------------------------------------------------------------------- inner

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"the store at {self.path} is closed")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (and fsynced) before the caller returns."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _stored_template(self, row: tuple) -> StoredTemplate:
        name, spec, version, paused, created_at, updated_at = row
        return StoredTemplate(self._decode(name, spec), version, bool(paused), created_at, updated_at)

    def _decode(self, name: str, spec: str) -> Template:
        try:
            return parse_template(json.loads(spec), name=name)
        except (ValueError, TemplateError) as exc:
            detail = exc.message if isinstance(exc, TemplateError) else f"its spec is not JSON ({exc})"
            raise ConfigError(
                f"template {name!r} stored in {self.path} no longer validates: {detail}; "
                "apply a corrected version or delete it"
            ) from exc

    def _decode_or_none(self, name: str, spec: str) -> Template | None:
        try:
            return self._decode(name, spec)
        except ConfigError:
            return None


# ------------------------------------------------------------------------------- helpers


def _acquire_lock(path: Path) -> int:
    """An fd holding an exclusive flock on ``path`` (with our pid written in), or ConfigError."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot open the lock file {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f"process {holder}" if holder.isdecimal() else "another process"
        raise ConfigError(
            f"the data dir {path.parent} is in use: {who} holds {path} (another "
            "gaffer-controller?). Stop it first, or give this controller its own --data-dir."
        ) from None
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"cannot lock {path}: {exc.strerror}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    """Open (creating it private to this user) the database with the durability settings."""
    try:
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            _fsync_dir(path.parent)
        conn = sqlite3.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open the controller database {path}: {exc}") from exc
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(f"{path}: SQLite refused WAL mode (got {mode!r}); use a local filesystem")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ConfigError(f"cannot open the controller database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _fsync_dir(path: Path) -> None:
    """Make a newly created file's directory entry durable too."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(template: Template) -> str:
    return json.dumps(template.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _compare(previous: Template | None, template: Template) -> ChangeKind:
    if previous is None:
        return "updated"
    before, after = previous.to_dict(), template.to_dict()
    if before == after:
        return "unchanged"
    before.pop("numprocesses")
    after.pop("numprocesses")
    return "scaled" if before == after else "updated"


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
