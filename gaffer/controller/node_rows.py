"""The store's ``nodes`` and ``generations`` tables: node records, and the generation of the
last assignment handed to each node.

Like ``template_rows``: the functions that take a connection run inside the Store's transaction.
A node's generation is kept apart from its record, and outlives it (``forget``): an agent that
says hello again under a forgotten name must still get a generation above every one it held.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Iterable, Mapping

from gaffer.common.errors import InvalidRequest

COLUMNS = "name, labels, agent_id, cordoned, draining, first_seen, last_seen"


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


def check_name(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} must be a non-empty string, got {value!r}")


def check_node(name: object, labels: object, agent_id: object) -> None:
    """A registering node's name, labels (string pairs) and agent id, or InvalidRequest."""
    check_name("node", name)
    if not isinstance(labels, Mapping):
        raise InvalidRequest(f"labels of node {name!r} must be a mapping, got {labels!r}")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidRequest(f"labels of node {name!r}: {key!r}={value!r} is not a string pair")
    if not isinstance(agent_id, str):
        raise InvalidRequest(f"agent_id of node {name!r} must be a string, got {agent_id!r}")


def put(conn: sqlite3.Connection, name: str, labels: Mapping[str, str], agent_id: str, now: float) -> StoredNode:
    conn.execute(
        "INSERT INTO nodes (name, labels, agent_id, first_seen, last_seen) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
        "labels = excluded.labels, agent_id = excluded.agent_id, "
        "first_seen = COALESCE(nodes.first_seen, excluded.first_seen), "
        "last_seen = excluded.last_seen",
        (name, json.dumps(dict(labels), sort_keys=True), agent_id, now, now),
    )
    return _stored_node(conn.execute(f"SELECT {COLUMNS} FROM nodes WHERE name = ?", (name,)).fetchone())


def set_flags(conn: sqlite3.Connection, name: str, wanted: Mapping[str, bool]) -> bool:
    """Set the ``cordoned``/``draining`` flags in ``wanted`` that differ; True if one did.
    Only a flag that changes creates a record for a node that never registered."""
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


def touch(conn: sqlite3.Connection, seen: Mapping[str, float]) -> int:
    """Set ``last_seen`` of each registered node in ``seen``; how many rows changed."""
    cursor = conn.executemany(
        "UPDATE nodes SET last_seen = ? WHERE name = ? AND first_seen IS NOT NULL",
        [(ts, name) for name, ts in seen.items()],
    )
    return cursor.rowcount


def all_nodes(conn: sqlite3.Connection) -> list[StoredNode]:
    return [_stored_node(row) for row in conn.execute(f"SELECT {COLUMNS} FROM nodes ORDER BY name").fetchall()]


def forget(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("DELETE FROM nodes WHERE name = ?", (name,)).rowcount == 1


def next_generations(conn: sqlite3.Connection, names: Iterable[str], floors: Mapping[str, int]) -> dict[str, int]:
    """Each node's generation, one above the stored one and above its floor, stored."""
    names = list(names)
    rows = [(name, max(0, int(floors.get(name, 0))) + 1) for name in names]
    conn.executemany(
        "INSERT INTO generations (node, generation) VALUES (?, ?) ON CONFLICT (node) "
        "DO UPDATE SET generation = MAX(generation + 1, excluded.generation)",
        rows,
    )
    return {
        name: conn.execute("SELECT generation FROM generations WHERE node = ?", (name,)).fetchone()[0]
        for name in names
    }


def generations(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT node, generation FROM generations").fetchall())


def _stored_node(row: tuple) -> StoredNode:
    name, labels, agent_id, cordoned, draining, first_seen, last_seen = row
    return StoredNode(
        name, json.loads(labels), agent_id, bool(cordoned), bool(draining), first_seen, last_seen
    )
