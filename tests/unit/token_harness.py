"""A TokenRows in memory, for the token tests (the Store's SQLite one is tested beside it)."""

from __future__ import annotations

from gaffer.common.errors import Conflict, StorageError
from gaffer.controller.token_rows import StoredToken


class MemoryRows:
    """TokenRows in a dict, counting writes; ``fail`` makes every write a StorageError."""

    def __init__(self) -> None:
        self.rows: dict[str, StoredToken] = {}
        self.touches = 0
        self.fail = False

    def _write(self) -> None:
        if self.fail:
            raise StorageError("disk full", "disk_full")

    async def put_token(self, name: str, role: str, digest: bytes, now: float) -> StoredToken:
        self._write()
        if name in self.rows:
            raise Conflict(f"a token named {name!r} exists")
        self.rows[name] = StoredToken(name, role, digest, now, None)
        return self.rows[name]

    async def delete_token(self, name: str) -> bool:
        self._write()
        return self.rows.pop(name, None) is not None

    async def touch_token(self, name: str, ts: float) -> None:
        self._write()
        self.touches += 1
        row = self.rows[name]
        self.rows[name] = StoredToken(row.name, row.role, row.digest, row.created, ts)

    async def tokens(self) -> list[StoredToken]:
        return sorted(self.rows.values(), key=lambda row: row.name)
