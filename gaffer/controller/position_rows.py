"""Event positions in the store: blocks reserved ahead, and the last one used at a clean stop.

A controller numbers events from a block of positions it reserved (one fsynced write per
``BLOCK`` events), so a restarted controller, which reserves the next block, never reuses a
position a subscriber may have seen, whatever happened to the last one (SIGKILL included).
A clean stop records the last position used: the next incarnation then knows no event exists
between it and its own first one, so a subscriber that had everything loses nothing. The
record is cleared when a new incarnation starts, so a later crash is never taken for a clean
stop.

Functions run on the connection inside the transaction the Store opened.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

BLOCK = 1 << 20
"""Positions reserved per store write."""


@dataclass(frozen=True, slots=True)
class Numbering:
    """Where a starting incarnation numbers from.

    ``first``: its first position; ``reserved``: the last position it may use before it
    reserves more; ``horizon``: the lowest ``since`` it can answer exactly (the predecessor's
    last position after a clean stop, else the end of what the predecessor had reserved; 0
    for a store that never numbered an event).
    """

    first: int
    reserved: int
    horizon: int


def _row(conn: sqlite3.Connection) -> tuple[int, int | None]:
    row = conn.execute("SELECT reserved, clean_last FROM event_positions WHERE id = 1").fetchone()
    return (0, None) if row is None else (int(row[0]), None if row[1] is None else int(row[1]))


def _write(conn: sqlite3.Connection, reserved: int, clean_last: int | None) -> None:
    conn.execute(
        "INSERT INTO event_positions (id, reserved, clean_last) VALUES (1, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET reserved = excluded.reserved, clean_last = excluded.clean_last",
        (reserved, clean_last),
    )


def start(conn: sqlite3.Connection, block: int = BLOCK) -> Numbering:
    """Reserve the block after everything reserved so far and clear the clean-stop record."""
    reserved, clean_last = _row(conn)
    horizon = 0 if reserved == 0 else clean_last if clean_last is not None else reserved
    _write(conn, reserved + block, None)
    return Numbering(first=reserved + 1, reserved=reserved + block, horizon=horizon)


def extend(conn: sqlite3.Connection, block: int = BLOCK) -> int:
    """Reserve one more block; the new last reserved position."""
    reserved, _ = _row(conn)
    _write(conn, reserved + block, None)
    return reserved + block


def record_clean_stop(conn: sqlite3.Connection, last: int) -> None:
    """Remember ``last`` as the final position of an incarnation that stopped cleanly."""
    reserved, _ = _row(conn)
    _write(conn, max(reserved, last), last)


def read(conn: sqlite3.Connection) -> tuple[int, int | None]:
    """``(reserved, clean_last)`` as stored (``(0, None)`` before any event was numbered)."""
    return _row(conn)
