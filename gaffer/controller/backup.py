"""Scheduled backups of the controller's store, with SQLite's online backup API.

Why it is built this way:

- **A consistent copy while the controller writes.** ``sqlite3.Connection.backup`` copies the
  database page by page under one read transaction; in WAL mode a reader never blocks the
  writer. It runs as one step (all pages): a backup in several steps restarts whenever another
  connection writes between them, and a busy controller could keep it from ever finishing.
- **Never a stall of the loop.** The copy runs in a worker thread owned by ``Backups`` (SQLite
  releases the GIL while it copies), through a connection of its own. ``stop()`` cancels the
  timer and waits for a copy in progress, so the store is never closed under it.
- **Never a half backup, never readable by others.** Each backup is written to a temp file
  created 0600 (``O_EXCL``), checked with ``quick_check``, switched to a rollback journal so it
  is one self-contained file, fsynced, and only then renamed to ``gaffer-<UTC time>.db``: a
  name in the backup dir is always a whole, checked copy that ``gaffer-controller import`` (or
  a plain copy to ``gaffer.db``) restores.
- **Failure is reported, never fatal.** A failed backup is logged once per kind of failure
  (and once more when backups work again) and tried again a period later; the controller
  carries on. A damaged store gives a damaged copy: that is refused as a failure, so the good
  backups before it are not pruned away by bad ones.
- **The schedule survives restarts.** ``next_due`` counts from the newest backup on disk, so a
  controller restarted more often than the period still backs up.

The last ``keep`` backups are kept; older ones are deleted after each new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from gaffer.common.errors import StorageDamaged, StorageError
from gaffer.common.tasks import cancel_and_wait
from gaffer.controller.dbfile import create_private, fsync_dir, quick_check, storage_error

if TYPE_CHECKING:
    from gaffer.controller.settings import ControllerSettings

log = logging.getLogger("gaffer.controller.backup")

NAME_RE = re.compile(r"^gaffer-\d{8}T\d{6}\.\d{3}Z\.db\Z")
TEMP_RE = re.compile(r"^\.gaffer-\d{8}T\d{6}\.\d{3}Z\.db\.tmp(-journal)?\Z")


@dataclass(frozen=True)
class BackupPolicy:
    """``every`` seconds (0: no backups) into ``directory``, keeping the last ``keep``."""

    every: float
    directory: Path
    keep: int

    @property
    def enabled(self) -> bool:
        return self.every > 0

    @classmethod
    def of(cls, settings: ControllerSettings) -> BackupPolicy:
        directory = settings.backup_dir or settings.data_dir / "backups"
        return cls(settings.backup_every, directory, settings.backup_keep)


# ------------------------------------------------------------------------- pure


def backup_name(now: float) -> str:
    """``gaffer-YYYYmmddTHHMMSS.mmmZ.db`` (UTC): names sort in time order."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"gaffer-{stamp}.{int(now * 1000) % 1000:03d}Z.db"


def to_prune(names: Iterable[str], keep: int) -> list[str]:
    """The backups beyond the newest ``keep`` (other names are never touched)."""
    backups = sorted(name for name in names if NAME_RE.match(name))
    return backups[: max(0, len(backups) - keep)]


def next_due(last: float | None, now: float, every: float) -> float:
    """When the next backup is due: ``every`` after the last one (or attempt), or now when
    there was none. A last time in the future (the clock went back) counts as now."""
    if last is None:
        return now
    return max(now, min(last, now) + every)


# ------------------------------------------------------------------------- the copy


def take_backup(db: Path, directory: Path, name: str) -> Path:
    """Copy ``db`` to ``directory/name`` (blocking: run it in a worker thread).

    StorageError when SQLite fails (StorageDamaged when the copy does not check out), OSError
    when the directory does; the temp file never survives a failure.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for leftover in directory.iterdir():
        if TEMP_RE.match(leftover.name):
            leftover.unlink(missing_ok=True)
    final = directory / name
    tmp = directory / f".{name}.tmp"
    os.close(create_private(tmp))
    try:
        _copy(db, tmp)
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(directory)
    except BaseException:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}-journal").unlink(missing_ok=True)
        raise
    return final


def _copy(db: Path, tmp: Path) -> None:
    try:
        source = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)
                target.execute("PRAGMA journal_mode = DELETE")
                problems = quick_check(target)
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise storage_error(exc, db) from exc
    if problems:
        raise StorageDamaged(f"the backup of {db} does not check out ({problems[0]}): the store is damaged")


def prune(directory: Path, keep: int) -> list[str]:
    """Delete the backups beyond the newest ``keep``; their names."""
    gone = to_prune((p.name for p in directory.iterdir()), keep)
    for name in gone:
        (directory / name).unlink(missing_ok=True)
    return gone


def newest(directory: Path) -> float | None:
    """The modification time of the newest backup in ``directory`` (None: none, or unreadable)."""
    try:
        names = sorted(p.name for p in directory.iterdir() if NAME_RE.match(p.name))
        return (directory / names[-1]).stat().st_mtime if names else None
    except OSError:
        return None


def failure_kind(exc: BaseException) -> str:
    """A stable word for a kind of failure, so each is logged once, not once per period."""
    if isinstance(exc, StorageError):
        return exc.reason
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)
    return type(exc).__name__


# ------------------------------------------------------------------------- the timer


class Backups:
    """The backup timer and its worker thread; owned by the Controller (start/stop)."""

    def __init__(self, db: Path, policy: BackupPolicy, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.policy = policy
        self._clock = clock
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._job: concurrent.futures.Future | None = None
        self._last_attempt: float | None = None
        self._failing: set[str] = set()
        self.last: Path | None = None
        self.taken = 0
        self.attempts = 0

    def start(self) -> None:
        """Start the timer on the running loop (nothing when backups are off)."""
        if not self.policy.enabled or self._task is not None:
            return
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gaffer-backup")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the timer and wait for a copy in progress (the store must outlive it)."""
        await cancel_and_wait(self._task)
        self._task = None
        job, self._job = self._job, None
        if job is not None and not job.done():
            try:
                await asyncio.wrap_future(job)
            except Exception:
                pass
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def status(self) -> dict[str, object]:
        return {
            "every": self.policy.every,
            "dir": str(self.policy.directory),
            "keep": self.policy.keep,
            "last": str(self.last) if self.last else None,
            "taken": self.taken,
            "attempts": self.attempts,
            "failing": sorted(self._failing),
        }

    async def _run(self) -> None:
        while True:
            last = max(filter(None, (newest(self.policy.directory), self._last_attempt)), default=None)
            delay = next_due(last, self._clock(), self.policy.every) - self._clock()
            await asyncio.sleep(max(0.0, delay))
            await self.backup_now()

    async def backup_now(self) -> Path | None:
        """Take one backup in the worker thread and prune; None (logged) if it failed."""
        assert self._pool is not None
        now = self._clock()
        self._last_attempt = now
        self.attempts += 1
        self._job = self._pool.submit(self._backup, backup_name(now))
        try:
            path = await asyncio.wrap_future(self._job)
        except Exception as exc:
            self._report(exc)
            return None
        if self._failing:
            log.warning("backups of %s work again (%s)", self.db, ", ".join(sorted(self._failing)))
            self._failing.clear()
        self.last = path
        self.taken += 1
        log.info("backed up %s to %s", self.db, path)
        return path

    def _backup(self, name: str) -> Path:
        path = take_backup(self.db, self.policy.directory, name)
        prune(self.policy.directory, self.policy.keep)
        return path

    def _report(self, exc: Exception) -> None:
        kind = failure_kind(exc)
        if kind in self._failing:
            return
        self._failing.add(kind)
        detail = exc.message if isinstance(exc, StorageError) else str(exc)
        log.error(
            "backup of %s into %s failed: %s; trying again in %gs (the controller carries on)",
            self.db, self.policy.directory, detail, self.policy.every,
        )
