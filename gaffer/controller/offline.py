"""``gaffer-controller check | export | import | forget-template``: the store without a controller.

These are the way out when the controller cannot start (a damaged file, a template that no
longer validates), so none of them needs one, and each takes the data dir's lock: while a
controller runs they refuse, naming its pid.

- ``check``: SQLite's ``quick_check`` (``integrity_check`` with ``--full``), the schema version,
  foreign keys, and every stored template re-validated. Every problem is one line.
- ``export``: the desired state (``desired.py``) as JSON, read as far as the file allows: a
  template that no longer validates goes out with its raw spec and says why; a table that
  stops reading halfway is reported.
- ``import``: a JSON export, or a backup (a SQLite file), validated whole before anything is
  written, into a fresh file that replaces ``gaffer.db`` with one rename: all of it or none.
  Only into an empty store unless ``--replace``, which keeps the old file beside it.
- ``forget-template NAME``: delete one template (its placement and failures go with it), even
  one whose stored spec is unreadable.

Files are read through read-only connections: checking or exporting a damaged store writes
nothing into it.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from gaffer.common.errors import ConfigError, StorageError
from gaffer.common.template import Template
from gaffer.controller.dbfile import (
    DB_NAME, acquire_lock, create_private, fsync_dir, quick_check, storage_error,
)
from gaffer.controller.desired import (
    DesiredState, NodeRecord, check_importable, parse_export, template_record,
)
from gaffer.controller.migrations import SCHEMA_VERSION, migrate
from gaffer.controller.store import Store
from gaffer.controller.template_rows import encode_spec

LOCK_HINT = "Stop the controller first: the offline commands need the data dir to themselves."
SQLITE_HEADER = b"SQLite format 3\x00"
RESTORE_HINT = (
    "restore a backup, or export what is readable, move gaffer.db away and import the export "
    "(README, 'Backups and damaged storage')"
)


@dataclass(frozen=True)
class Report:
    """What ``check`` found: one line per problem, then a summary line."""

    problems: list[str]
    summary: str

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Imported:
    templates: int
    nodes: int
    kept: Path | None
    """Where the replaced store was kept (``--replace`` of an existing store)."""


# ----------------------------------------------------------------------------- commands


def check(data_dir: Path, full: bool = False) -> Report:
    """Every problem of the store in ``data_dir``; none means the controller can start on it."""
    path = data_dir / DB_NAME
    pragma = "integrity_check" if full else "quick_check"
    with _locked(data_dir), _read_only(path) as conn:
        problems = [f"{pragma}: {line}" for line in _checked(quick_check, conn, full, path=path)]
        version, schema_problem = _schema(conn)
        if schema_problem:
            problems.append(schema_problem)
            return Report(problems, _summary(path, problems, damaged=True))
        problems += _foreign_keys(conn)
        state, unreadable = read_state(conn)
        problems += unreadable
    damaged = bool(problems)
    for record in state.invalid:
        problems.append(
            f"template {record.name!r} no longer validates: {record.invalid} (export keeps its "
            f"spec; `gaffer-controller forget-template {record.name}` deletes it)"
        )
    if problems:
        return Report(problems, _summary(path, problems, damaged))
    return Report([], (
        f"{path}: ok ({pragma}, schema version {version}, {len(state.templates)} templates, "
        f"{len(state.nodes)} nodes)"
    ))


def export(data_dir: Path) -> tuple[DesiredState, list[str]]:
    """The desired state in ``data_dir`` as far as it reads, and what could not be read."""
    path = data_dir / DB_NAME
    with _locked(data_dir), _read_only(path) as conn:
        _, schema_problem = _schema(conn)
        if schema_problem and "newer" in schema_problem:
            raise ConfigError(schema_problem)
        problems = [schema_problem] if schema_problem else []
        state, unreadable = read_state(conn)
    return state, problems + unreadable


def import_state(data_dir: Path, source: str, replace: bool = False, now: float | None = None) -> Imported:
    """Make ``source`` (an export, ``-`` for stdin, or a backup file) the store of ``data_dir``.

    Everything is validated before the data dir is touched. The new store is written whole to
    a fresh file and renamed over ``gaffer.db``; generations never go down (the larger of the
    old store's and the source's), since agents ignore assignments older than their own, and
    neither do event positions (the old store's reservation is kept; subscribers are told
    what they had may be gone, as after a crash).
    """
    state = _read_source(source)
    templates = check_importable(state, source)
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create the data dir {data_dir}: {exc.strerror}") from exc
    with _locked(data_dir, must_exist=False):
        db = data_dir / DB_NAME
        old = _current(db, replace)
        reserved = _reserved_positions(db) if old is not None else 0
        generations = dict(old.generations if old else {})
        for node, generation in state.generations.items():
            generations[node] = max(generations.get(node, 0), generation)
        fresh = data_dir / f"{DB_NAME}.import-{os.getpid()}"
        try:
            _write_fresh(fresh, state, templates, generations, time.time() if now is None else now, reserved)
            kept = _install(db, fresh, keep_old=replace and old is not None)
        except OSError as exc:
            raise ConfigError(f"cannot install the imported store in {data_dir}: {exc}") from exc
        finally:
            fresh.unlink(missing_ok=True)
    return Imported(len(templates), len(state.nodes), kept)


def forget_template(data_dir: Path, name: str) -> None:
    """Delete template ``name`` from a stopped controller's store, readable or not."""
    _require_store(data_dir)
    with Store(data_dir, lock_hint=LOCK_HINT) as store:
        store.delete_template(name)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a 0600 temp file renamed into place: never readable
    by others, never half written under the final name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = create_private(tmp)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc


# ------------------------------------------------------------------------- reading


def read_state(conn: sqlite3.Connection) -> tuple[DesiredState, list[str]]:
    """The desired state as far as each table reads, and a line per table that stopped."""
    problems: list[str] = []
    templates = []
    for row in _scan(conn, "SELECT name, spec, version, paused FROM templates", "templates", problems):
        name, spec, version, paused = row
        if not isinstance(spec, str):
            spec = spec.decode("utf-8", "replace") if isinstance(spec, bytes) else repr(spec)
        templates.append(template_record(str(name), spec, _int(version, 1), bool(paused)))
    nodes = [
        NodeRecord(str(name), bool(cordoned), bool(draining))
        for name, cordoned, draining in _scan(
            conn, "SELECT name, cordoned, draining FROM nodes", "nodes", problems
        )
    ]
    generations = {
        str(node): _int(generation, 0)
        for node, generation in _scan(conn, "SELECT node, generation FROM generations", "generations", problems)
    }
    state = DesiredState(sorted(templates, key=lambda t: t.name), sorted(nodes, key=lambda n: n.name), generations)
    return state, problems


def _scan(conn: sqlite3.Connection, sql: str, table: str, problems: list[str]) -> list[tuple]:
    """Rows of a full-table scan (no index, so a damaged index cannot hide rows), up to the
    first one SQLite cannot read."""
    rows: list[tuple] = []
    try:
        cursor = conn.execute(sql)
        while (row := cursor.fetchone()) is not None:
            rows.append(row)
    except sqlite3.Error as exc:
        problems.append(f"{table}: reading stopped after {len(rows)} rows: {exc}")
    return rows


def _read_source(source: str) -> DesiredState:
    if source == "-":
        return parse_export(sys.stdin.read(), "stdin")
    path = Path(source)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
            if head == SQLITE_HEADER:
                return _read_backup(path)
            text = (head + handle.read()).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from None
    return parse_export(text, source)


def _read_backup(path: Path) -> DesiredState:
    """The desired state of a backup file (a SQLite store), refused if it is damaged."""
    with _read_only(path) as conn:
        problems = _checked(quick_check, conn, path=path)
        _, schema_problem = _schema(conn)
        if schema_problem:
            problems.append(schema_problem)
        state, unreadable = read_state(conn)
    problems += unreadable
    if problems:
        raise ConfigError(f"{path}: this backup is damaged ({problems[0]}); try an older one")
    return state


def _current(db: Path, replace: bool) -> DesiredState | None:
    """What the store being replaced holds (None: no file); refused unless empty or ``replace``."""
    if not db.exists():
        return None
    with _read_only(db) as conn:
        state, problems = read_state(conn)
    if replace:
        return state
    if problems:
        raise ConfigError(
            f"{db} cannot be read whole ({problems[0]}); pass --replace to replace it (the old "
            "file is kept beside it)"
        )
    if _holds_anything(state):
        raise ConfigError(
            f"{db} already holds {len(state.templates)} templates and {len(state.nodes)} nodes; "
            "pass --replace to replace them (the old file is kept beside it)"
        )
    return state


def _holds_anything(state: DesiredState) -> bool:
    return bool(state.templates or state.nodes)


def _schema(conn: sqlite3.Connection) -> tuple[int | None, str | None]:
    """The schema version, or a problem saying why it is not one this gaffer reads."""
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            return None, "not a gaffer store: it has no meta table"
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as exc:
        return None, f"the schema cannot be read: {exc}"
    if row is None or not str(row[0]).isdecimal():
        return None, "the meta table holds no valid schema version"
    version = int(row[0])
    if version > SCHEMA_VERSION:
        return version, (
            f"schema version {version} is newer than this gaffer understands ({SCHEMA_VERSION}): "
            "use the gaffer that wrote it"
        )
    return version, None


def _foreign_keys(conn: sqlite3.Connection) -> list[str]:
    try:
        rows = conn.execute("PRAGMA foreign_key_check").fetchall()
    except sqlite3.Error as exc:
        return [f"foreign_key_check stopped: {exc}"]
    return [f"{table} row {rowid} refers to a missing row of {parent}" for table, rowid, parent, _ in rows]


# ------------------------------------------------------------------------- writing


def _reserved_positions(db: Path) -> int:
    """The highest event position the store at ``db`` reserved (0: none, or unreadable)."""
    try:
        with _read_only(db) as conn:
            row = conn.execute("SELECT reserved FROM event_positions WHERE id = 1").fetchone()
    except (sqlite3.Error, StorageError):
        return 0
    return int(row[0]) if row is not None and isinstance(row[0], int) and row[0] > 0 else 0


def _write_fresh(
    path: Path, state: DesiredState, templates: list[Template], generations: dict[str, int], now: float,
    reserved: int = 0,
) -> None:
    """A complete store in a new private file: schema, then every row in one transaction."""
    try:
        os.close(create_private(path))
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from exc
    records = {record.name: record for record in state.templates}
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, path)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO templates (name, spec, version, paused, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (t.name, encode_spec(t), records[t.name].version, int(records[t.name].paused), now, now)
                for t in templates
            ],
        )
        conn.executemany(
            "INSERT INTO nodes (name, cordoned, draining) VALUES (?, ?, ?)",
            [(n.name, int(n.cordoned), int(n.draining)) for n in state.nodes],
        )
        conn.executemany("INSERT INTO generations (node, generation) VALUES (?, ?)", generations.items())
        if reserved:
            conn.execute("INSERT INTO event_positions (id, reserved) VALUES (1, ?)", (reserved,))
        conn.execute("COMMIT")
        problems = quick_check(conn)
        if problems:
            raise StorageError(f"the imported store {path} did not check out: {problems[0]}")
    except sqlite3.Error as exc:
        raise storage_error(exc, path) from exc
    finally:
        conn.close()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(db: Path, fresh: Path, keep_old: bool) -> Path | None:
    """Rename ``fresh`` over ``db``. The old store's WAL is folded in (or moved away) first: a
    WAL left beside the new file would be replayed onto it."""
    kept: Path | None = None
    wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
    if db.exists():
        _checkpoint(db)
        if keep_old:
            kept = _keep(db)
        if wal.exists():
            if kept is not None:
                os.replace(wal, Path(f"{kept}-wal"))
            else:
                wal.unlink()
    os.replace(fresh, db)
    shm.unlink(missing_ok=True)
    fsync_dir(db.parent)
    return kept


def _keep(db: Path) -> Path:
    """A second name for the store being replaced: ``gaffer.db.before-import-<time>[-n]``."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        kept = db.with_name(f"{DB_NAME}.before-import-{stamp}{f'-{n}' if n else ''}")
        try:
            os.link(db, kept)
            return kept
        except FileExistsError:
            continue
    raise ConfigError(f"cannot keep {db} beside the new store: too many before-import copies")


def _checkpoint(db: Path) -> None:
    """Fold ``db``'s WAL into it; a damaged file may refuse, and then its WAL is moved instead."""
    try:
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except sqlite3.Error:
        pass


# ------------------------------------------------------------------------- helpers


@contextmanager
def _locked(data_dir: Path, must_exist: bool = True) -> Iterator[None]:
    """Hold the data dir's lock (refused, naming the pid, while a controller runs)."""
    if must_exist:
        _require_store(data_dir)
    fd = acquire_lock(data_dir, LOCK_HINT)
    try:
        yield
    finally:
        os.close(fd)


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise storage_error(exc, path) from exc
    try:
        yield conn
    finally:
        conn.close()


def _require_store(data_dir: Path) -> None:
    if not (data_dir / DB_NAME).is_file():
        raise ConfigError(f"no controller store in {data_dir}: {data_dir / DB_NAME} does not exist")


def _checked(run, conn: sqlite3.Connection, *args: object, path: Path) -> list[str]:
    """``run(conn, *args)``, with failures that are not damage (I/O, busy) as StorageError."""
    try:
        return run(conn, *args)
    except sqlite3.Error as exc:
        raise storage_error(exc, path) from exc


def _summary(path: Path, problems: list[str], damaged: bool) -> str:
    found = f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return f"{found}; {RESTORE_HINT}" if damaged else found


def _int(value: object, low: int) -> int:
    return value if isinstance(value, int) and value >= low else low
