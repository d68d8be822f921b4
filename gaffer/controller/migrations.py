"""The store's schema: its tables and the ordered migrations that build them.

Schema changes are ordered migrations, applied all-or-nothing in one transaction. A database
written by a newer gaffer is refused rather than guessed at; version 0 is an empty file.

Tables (schema version 4): ``meta`` (schema_version), ``templates`` (spec, version, paused),
``nodes`` (labels, agent id, cordoned, draining, first/last seen; a node may be stored before it
ever registers), ``placement``, ``failures`` and ``restarts`` (a template's restart generation,
kept beside its spec; all three deleted with their template), ``generations`` (per node, kept
even when everything else about the node goes), ``event_positions`` (one row: the highest event
position reserved, and the last one used by a controller that stopped cleanly), ``tokens``
(API tokens: name, role, the SHA-256 of the secret, never the secret; ``token_rows``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable, Sequence

from gaffer.common.errors import ConfigError

Migration = Callable[[sqlite3.Connection], None]

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


def _create_event_positions(conn: sqlite3.Connection) -> None:
    """Version 3: event positions never go backwards across restarts (``position_rows``)."""
    conn.execute(
        """CREATE TABLE event_positions (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            reserved INTEGER NOT NULL CHECK (reserved >= 0),
            clean_last INTEGER CHECK (clean_last >= 0 AND clean_last <= reserved))"""
    )


def _create_tokens(conn: sqlite3.Connection) -> None:
    """Version 4: API tokens, by name; only a digest of each secret is kept."""
    conn.execute(
        """CREATE TABLE tokens (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
            digest BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
            created REAL NOT NULL,
            last_used REAL)"""
    )


# Step i takes the schema from version i to i + 1. Append only; never edit a shipped step.
# A step runs inside the migration's transaction: no executescript (it commits), and no
# PRAGMA foreign_keys (ignored inside a transaction).
MIGRATIONS: tuple[Migration, ...] = (_create_v1, _create_restarts, _create_event_positions, _create_tokens)
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
        found = schema_version(conn, path)
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


def schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The version in ``meta`` (0 for an empty file); ConfigError for a file that is not ours."""
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
