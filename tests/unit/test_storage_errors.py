"""SQLite's failures as gaffer's errors: matched on SQLite's result code, one line each."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gaffer.common.errors import StorageDamaged, StorageError, from_wire
from gaffer.controller.dbfile import storage_error

DB = Path("/var/lib/gaffer/controller/gaffer.db")


def sqlite_error(cls: type, code: int, text: str) -> sqlite3.Error:
    exc = cls(text)
    exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize("code, reason, says", [
    (13, "disk_full", "disk holding /var/lib/gaffer/controller is full (disk full)"),
    (10 | (4 << 8), "io_error", "an I/O error"),
    (8, "read_only", "/var/lib/gaffer/controller is read-only"),
    (5, "busy", "another process holds a lock"),
    (14, "cannot_open", "cannot be opened"),
    (1, "error", "some error"),
])
def test_failures_map_to_a_reason_and_one_line(code, reason, says):
    """FULL, IOERR (extended too), READONLY, BUSY, CANTOPEN: a StorageError with its reason, in one line."""
    error = storage_error(sqlite_error(sqlite3.OperationalError, code, "some error"), DB)
    assert type(error) is StorageError and error.reason == reason
    assert says in error.message and str(DB) in error.message and "nothing of this change was saved" in error.message
    assert "\n" not in error.message


@pytest.mark.parametrize("code", [11, 11 | (3 << 8), 26])
def test_corruption_is_damage_with_the_way_out(code):
    """CORRUPT (and its extended codes) and NOTADB are StorageDamaged, pointing to check --full."""
    error = storage_error(sqlite_error(sqlite3.DatabaseError, code, "database disk image is malformed"), DB)
    assert isinstance(error, StorageDamaged) and error.reason == "damaged"
    assert "gaffer-controller check --full --data-dir /var/lib/gaffer/controller" in error.message
    at_open = storage_error(sqlite_error(sqlite3.DatabaseError, code, "file is not a database"), DB, at_open=True)
    assert "not using it" in at_open.message and "\n" not in at_open.message


def test_an_error_without_a_code_is_a_plain_storage_error():
    """A sqlite3 error that carries no result code still becomes a StorageError, not a traceback."""
    assert storage_error(sqlite3.ProgrammingError("closed"), DB).reason == "error"


def test_storage_errors_cross_the_wire_as_their_class():
    """A client gets StorageError / StorageDamaged back by code."""
    damaged = from_wire({"code": "storage_damaged", "message": "m"})
    assert isinstance(damaged, StorageDamaged) and damaged.reason == "damaged"
    assert type(from_wire({"code": "storage_error", "message": "m"})) is StorageError
