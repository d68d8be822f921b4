"""The SQLite file under a controller's data dir: the lock, opening it, checking it, and
turning SQLite's failures into gaffer's errors.

The Store and the offline commands (``gaffer-controller check|export|import|forget-template``)
share these, so a file is always opened with the same durability settings, checked the same way,
and every failure reads the same: one line naming the file, what happened and the way out.

- ``acquire_lock``: one process per data dir (flock on ``controller.lock``, holder's pid inside).
- ``connect``: WAL, ``synchronous=FULL``, foreign keys; the file created 0600.
- ``quick_check``: SQLite's ``quick_check`` / ``integrity_check`` as a list of problems.
- ``storage_error``: SQLITE_FULL, IOERR, READONLY, BUSY, CORRUPT... -> StorageError /
  StorageDamaged with a stable ``reason``. Matched on SQLite's primary result code, never on
  message text.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Sequence

from gaffer.common import pidlock
from gaffer.common.errors import ConfigError, StorageDamaged, StorageError

DB_NAME = "gaffer.db"
LOCK_NAME = "controller.lock"
BUSY_TIMEOUT_MS = 5000
LOCK_HINT = "Stop it first, or give this controller its own --data-dir."


def acquire_lock(data_dir: Path, hint: str = LOCK_HINT) -> int:
    """An fd holding an exclusive flock on the data dir's lock file (our pid written in), or
    ConfigError naming the pid of the holder."""
    path = data_dir / LOCK_NAME
    try:
        return pidlock.hold(path)
    except pidlock.LockHeld as held:
        raise ConfigError(
            f"the data dir {data_dir} is in use: {held.holder} holds {path} (a running "
            f"gaffer-controller?). {hint}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot lock {path}: {exc.strerror}") from exc


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating it private to this user) the database with the durability settings."""
    try:
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            fsync_dir(path.parent)
        conn = sqlite3.connect(path, isolation_level=None)
    except OSError as exc:
        raise ConfigError(f"cannot open the controller database {path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise storage_error(exc, path, at_open=True) from exc
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(f"{path}: SQLite refused WAL mode (got {mode!r}); use a local filesystem")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise storage_error(exc, path, at_open=True) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def quick_check(conn: sqlite3.Connection, full: bool = False) -> list[str]:
    """SQLite's ``quick_check`` (``integrity_check`` when ``full``): each problem it found, one
    line each; empty when the file is sound. A check that damage stops is one problem; other
    failures (I/O, busy) are raised, since they say nothing about the file's content."""
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}").fetchall()
    except sqlite3.Error as exc:
        if not is_damage(exc):
            raise
        return [f"{pragma} stopped: {exc}"]
    problems = [
        line.strip()
        for (text,) in rows
        for line in str(text).splitlines()
        if line.strip() and not line.startswith("*** in database")
    ]
    return [] if problems == ["ok"] else problems


def damaged_at_open(path: Path, problems: Sequence[str]) -> str:
    """The one line a controller refusing a damaged store prints."""
    more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
    return (
        f"the controller's store {path} is damaged ({_short(problems[0])}{more}); not using "
        f"it. Run `gaffer-controller check --data-dir {path.parent}` to list the problems, "
        "then restore a backup or export and import what is readable (README, 'Backups and "
        "damaged storage')"
    )


_REASONS = {
    sqlite3.SQLITE_FULL: ("disk_full", "the disk holding {dir} is full (disk full)"),
    sqlite3.SQLITE_IOERR: ("io_error", "an I/O error on the disk holding {dir} ({exc})"),
    sqlite3.SQLITE_READONLY: ("read_only", "{dir} is read-only ({exc})"),
    sqlite3.SQLITE_BUSY: ("busy", "another process holds a lock on it ({exc})"),
    sqlite3.SQLITE_LOCKED: ("busy", "another process holds a lock on it ({exc})"),
    sqlite3.SQLITE_CANTOPEN: ("cannot_open", "it cannot be opened ({exc})"),
    sqlite3.SQLITE_PERM: ("read_only", "access to it is denied ({exc})"),
}
_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``exc`` (SQLITE_IOERR for SQLITE_IOERR_WRITE...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_damage(exc: sqlite3.Error) -> bool:
    return primary_code(exc) in _DAMAGED


def storage_error(exc: sqlite3.Error, path: Path, at_open: bool = False) -> StorageError:
    """The StorageError (one line, a stable ``reason``) for an error SQLite raised on ``path``;
    ``at_open``: while opening it, where damage means refusing to start."""
    primary = primary_code(exc)
    if primary in _DAMAGED and at_open:
        return StorageDamaged(damaged_at_open(path, [str(exc)]))
    if primary in _DAMAGED:
        return StorageDamaged(
            f"the controller's store {path} is damaged ({exc}): changes are refused until it is "
            f"repaired. Stop the controller and run `gaffer-controller check --full --data-dir "
            f"{path.parent}`, then restore a backup or export and import what is readable "
            "(README, 'Backups and damaged storage')"
        )
    reason, detail = _REASONS.get(primary, ("error", "{exc}"))
    return StorageError(
        f"cannot save to the controller's store {path}: "
        + detail.format(dir=path.parent, exc=exc)
        + "; nothing of this change was saved, and the controller keeps running",
        reason,
    )


def fsync_dir(path: Path) -> None:
    """Make a newly created (or renamed) file's directory entry durable too."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: Path) -> int:
    """A new file readable by its owner only from the first moment (never chmod after the
    fact): O_EXCL, so an existing file or a planted symlink is refused, not followed."""
    return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def rollback(conn: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already (it does after some I/O errors);
    a rollback that fails itself leaves nothing more to undo on this connection."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
