"""The store's per-slot tables: ``placement`` (which node runs ``<template>.<ordinal>``),
``failures`` (the nodes a slot failed on) and ``restarts`` (a template's restart generation).

All three belong to a template and go with it (``ON DELETE CASCADE``). Like ``template_rows``:
the functions that take a connection run inside the Store's transaction, the checks before it.
"""

from __future__ import annotations

import sqlite3
from typing import Mapping

from gaffer.common.errors import InvalidRequest, TemplateNotFound
from gaffer.common.limits import MAX_INT
from gaffer.common.model import Slot
from gaffer.controller.node_rows import check_name
from gaffer.controller.template_rows import require_templates, template_exists


def check_slot(slot: object) -> Slot:
    if not isinstance(slot, tuple) or len(slot) != 2:
        raise InvalidRequest(f"a placement slot must be (template, ordinal), got {slot!r}")
    template, ordinal = slot
    check_name("template of a placement slot", template)
    if isinstance(ordinal, bool) or not isinstance(ordinal, int) or not 1 <= ordinal <= MAX_INT:
        raise InvalidRequest(f"ordinal of {template!r} must be an integer >= 1, got {ordinal!r}")
    return template, ordinal


def split_changes(changes: Mapping[Slot, str | None]) -> tuple[list[tuple[str, int, str]], list[Slot]]:
    """Checked slot changes as (places, removes): a node name places, None removes."""
    places: list[tuple[str, int, str]] = []
    removes: list[Slot] = []
    for slot, node in changes.items():
        template, ordinal = check_slot(slot)
        if node is None:
            removes.append((template, ordinal))
        else:
            check_name(f"node of {template}.{ordinal}", node)
            places.append((template, ordinal, node))
    return places, removes


def save(conn: sqlite3.Connection, places: list[tuple[str, int, str]], removes: list[Slot]) -> None:
    require_templates(conn, {template for template, _, _ in places})
    conn.executemany("DELETE FROM placement WHERE template = ? AND ordinal = ?", removes)
    conn.executemany(
        "INSERT INTO placement (template, ordinal, node) VALUES (?, ?, ?) "
        "ON CONFLICT (template, ordinal) DO UPDATE SET node = excluded.node",
        places,
    )


def placement(conn: sqlite3.Connection) -> dict[Slot, str]:
    rows = conn.execute("SELECT template, ordinal, node FROM placement").fetchall()
    return {(template, ordinal): node for template, ordinal, node in rows}


def mark_failed(conn: sqlite3.Connection, template: str, ordinal: int, node: str) -> bool:
    require_templates(conn, {template})
    cursor = conn.execute(
        "INSERT OR IGNORE INTO failures (template, ordinal, node) VALUES (?, ?, ?)",
        (template, ordinal, node),
    )
    return cursor.rowcount == 1


def clear_failed(conn: sqlite3.Connection, template: str, ordinal: int | None) -> int:
    if ordinal is None:
        return conn.execute("DELETE FROM failures WHERE template = ?", (template,)).rowcount
    return conn.execute("DELETE FROM failures WHERE template = ? AND ordinal = ?", (template, ordinal)).rowcount


def failed(conn: sqlite3.Connection) -> dict[Slot, frozenset[str]]:
    found: dict[Slot, set[str]] = {}
    for template, ordinal, node in conn.execute("SELECT template, ordinal, node FROM failures").fetchall():
        found.setdefault((template, ordinal), set()).add(node)
    return {slot: frozenset(nodes) for slot, nodes in found.items()}


def restart(conn: sqlite3.Connection, name: str) -> int:
    """Bump ``name``'s restart generation and forget its failures; the new generation."""
    if not template_exists(conn, name):
        raise TemplateNotFound(name)
    conn.execute(
        "INSERT INTO restarts (template, generation) VALUES (?, 1) "
        "ON CONFLICT (template) DO UPDATE SET generation = generation + 1",
        (name,),
    )
    conn.execute("DELETE FROM failures WHERE template = ?", (name,))
    return conn.execute("SELECT generation FROM restarts WHERE template = ?", (name,)).fetchone()[0]


def restarts(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT template, generation FROM restarts").fetchall())
