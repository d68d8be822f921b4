"""The store's ``tokens`` table: API tokens by name, each with its role and a digest.

Like ``node_rows``: the functions run on the connection inside the Store's transaction. The
secret itself is never stored, only its SHA-256 (``tokens.py`` says why that is enough), so a
copy of the database (a backup, an export) grants nothing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gaffer.common.errors import Conflict

COLUMNS = "name, role, digest, created, last_used"


@dataclass(frozen=True)
class StoredToken:
    """One token as stored; ``role`` is its wire spelling, ``created``/``last_used`` are
    wall-clock seconds (``last_used`` None until it is first used)."""

    name: str
    role: str
    digest: bytes
    created: float
    last_used: float | None


def put(conn: sqlite3.Connection, name: str, role: str, digest: bytes, now: float) -> StoredToken:
    """Store a new token; Conflict when ``name`` is taken (a token is replaced only by
    revoking it first, so a typo never silently cuts off whoever holds the old one)."""
    if conn.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone() is not None:
        raise Conflict(f"a token named {name!r} exists: revoke it first (gafferctl token revoke {name})")
    conn.execute(
        "INSERT INTO tokens (name, role, digest, created, last_used) VALUES (?, ?, ?, ?, NULL)",
        (name, role, digest, now),
    )
    return StoredToken(name, role, digest, now, None)


def delete(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount == 1


def touch(conn: sqlite3.Connection, name: str, ts: float) -> None:
    conn.execute("UPDATE tokens SET last_used = ? WHERE name = ?", (ts, name))


def all_tokens(conn: sqlite3.Connection) -> list[StoredToken]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM tokens ORDER BY name").fetchall()
    return [StoredToken(name, role, bytes(digest), created, last_used) for name, role, digest, created, last_used in rows]
