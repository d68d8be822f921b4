"""Real damage to a real store file, for the tests of what gaffer does about it.

Both helpers edit bytes of a page of ``gaffer.db`` in place, so the Store that wrote it must be
closed first (its WAL checkpointed into the file).

- ``garble_table``: overwrite a table's root page; SQLite's ``quick_check`` finds it.
- ``unlink_index_entry``: point one entry of a table's unique index at a rowid that does not
  exist. The b-tree stays well formed, so ``quick_check`` passes; ``integrity_check`` reports
  it, and a lookup of that key fails with SQLITE_CORRUPT while the controller runs.

And real ways for writes to fail: ``tmpfs`` + ``fill`` (a full disk, ENOSPC) and ``immutable``
(``chattr +i`` on the WAL: every write is an I/O error).
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

PAGE_HEADER = 8


def _page(db: Path, name: str) -> tuple[int, int]:
    """(offset, size) of the root page of table or index ``name``."""
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0, "close the Store first"
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        row = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    assert row is not None, f"no table or index {name!r} in {db}"
    return (row[0] - 1) * size, size


def garble_table(db: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with bytes that are no b-tree page."""
    offset, size = _page(db, table)
    with open(db, "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes([0xA5]) * size)


def unlink_index_entry(db: Path, table: str, key: str) -> None:
    """Make the entry for text ``key`` in ``table``'s autoindex point at a missing row."""
    offset, size = _page(db, f"sqlite_autoindex_{table}_1")
    data = bytearray(db.read_bytes())
    page = bytes(data[offset:offset + size])
    encoded = key.encode()
    # an index record: header size 3, the key's serial type, the rowid's serial type, the key
    pattern = re.compile(re.escape(bytes([3, 13 + 2 * len(encoded)])) + b"([\\x01\\x08\\x09])" + re.escape(encoded))
    matches = list(pattern.finditer(page, PAGE_HEADER))
    assert len(matches) == 1, f"expected one index entry for {key!r}, found {len(matches)}"
    at = offset + matches[0].start(1)
    serial = data[at]
    if serial == 1:  # a one-byte rowid follows the key
        data[at + 1 + len(encoded)] = 0x7F
    else:  # rowid 0 or 1 stored in the serial type itself: swap them
        data[at] = 0x09 if serial == 0x08 else 0x08
    db.write_bytes(bytes(data))


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted on ``path`` (root only), unmounted on the way out."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (euid {os.geteuid()}): {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path, leave: int = 0) -> Path:
    """Write a file until the filesystem says ENOSPC, then give back ``leave`` bytes; its path
    (delete it to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    chunk = b"\0" * 65536
    try:
        for _ in range(1_000_000):
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
                    return filler
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    raise AssertionError(f"{directory} never filled up")


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i`` on ``path``: every write to it fails with EPERM, even for root."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make {path} immutable (chattr +i): {done.stderr.strip() or done.returncode}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
