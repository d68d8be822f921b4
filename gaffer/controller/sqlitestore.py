"""The default ``StateStore``: the SQLite file of ``store.Store``, behind async methods.

``Store`` does the work (the file, its lock, one transaction per call, failure accounting;
see ``store.py``); this adapter only gives it the interface the controller awaits. Its methods
call ``Store`` directly and never suspend: SQLite answers from the loop's thread, so an
``await`` on them runs to completion without giving the loop a turn, and a controller on SQLite
runs exactly as it did when it called ``Store`` synchronously. The file format is ``Store``'s.

The offline commands (``gaffer-controller check|export|import|forget-template``) and backups
work on the file itself and keep using ``Store`` (or the file) directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from gaffer.common.model import Slot
from gaffer.common.template import Template
from gaffer.controller.node_rows import StoredNode
from gaffer.controller.position_rows import BLOCK, Numbering
from gaffer.controller.store import Store
from gaffer.controller.template_rows import Change, Puts, StoredTemplate
from gaffer.controller.token_rows import StoredToken

__all__ = ["SqliteStateStore"]


class SqliteStateStore:
    """A ``StateStore`` on ``<data_dir>/gaffer.db`` (opened, and locked, at construction)."""

    def __init__(
        self, data_dir: str | os.PathLike[str], *, on_write: Callable[[float], None] | None = None,
    ) -> None:
        self.sqlite = Store(data_dir, on_write=on_write)
        """The synchronous store underneath (for backups and tests that read the file)."""

    @property
    def path(self) -> Path:
        """The database file (what backups copy)."""
        return self.sqlite.path

    # ------------------------------------------------------------------------- templates

    async def templates(self) -> list[StoredTemplate]:
        return self.sqlite.templates()

    async def prepare_puts(self, templates: Sequence[Template], prepared: Puts | None = None) -> Puts:
        return self.sqlite.prepare_puts(templates, prepared)

    async def commit_puts(self, puts: Puts) -> list[Change]:
        return self.sqlite.commit_puts(puts)

    async def put_templates(self, templates: Sequence[Template]) -> list[Change]:
        return self.sqlite.put_templates(templates)

    async def set_count(self, name: str, count: int) -> Change:
        return self.sqlite.set_count(name, count)

    async def pause(self, name: str, paused: bool) -> tuple[bool, StoredTemplate]:
        return self.sqlite.pause(name, paused)

    async def restart_template(self, name: str) -> tuple[int, StoredTemplate]:
        return self.sqlite.restart_template(name)

    async def delete_templates(self, names: Sequence[str]) -> None:
        self.sqlite.delete_templates(names)

    async def restarts(self) -> dict[str, int]:
        return self.sqlite.restarts()

    # ----------------------------------------------------------------------------- nodes

    async def nodes(self) -> list[StoredNode]:
        return self.sqlite.nodes()

    async def put_node(self, name: str, labels: Mapping[str, str], agent_id: str) -> StoredNode:
        return self.sqlite.put_node(name, labels, agent_id)

    async def set_node_flags(self, name: str, *, cordoned: bool | None = None, draining: bool | None = None) -> bool:
        return self.sqlite.set_node_flags(name, cordoned=cordoned, draining=draining)

    async def forget_node(self, name: str) -> bool:
        return self.sqlite.forget_node(name)

    # ------------------------------------------------------------------ placement, failures

    async def placement(self) -> dict[Slot, str]:
        return self.sqlite.placement()

    async def save_placement(self, changes: Mapping[Slot, str | None]) -> None:
        self.sqlite.save_placement(changes)

    async def failed(self) -> dict[Slot, frozenset[str]]:
        return self.sqlite.failed()

    async def mark_failed(self, template: str, ordinal: int, node: str) -> bool:
        return self.sqlite.mark_failed(template, ordinal, node)

    # ---------------------------------------------------------------------------- generations

    async def next_generations(self, nodes: Iterable[str], floors: Mapping[str, int] | None = None) -> dict[str, int]:
        return self.sqlite.next_generations(nodes, floors)

    # ------------------------------------------------------------------------ event positions

    async def start_numbering(self, block: int = BLOCK) -> Numbering:
        return self.sqlite.start_numbering(block)

    async def reserve_positions(self, block: int = BLOCK) -> int:
        return self.sqlite.reserve_positions(block)

    async def record_clean_stop(self, last: int) -> None:
        self.sqlite.record_clean_stop(last)

    # ---------------------------------------------------------------------------------- tokens

    async def tokens(self) -> list[StoredToken]:
        return self.sqlite.tokens()

    async def put_token(self, name: str, role: str, digest: bytes, now: float) -> StoredToken:
        return self.sqlite.put_token(name, role, digest, now)

    async def delete_token(self, name: str) -> bool:
        return self.sqlite.delete_token(name)

    async def touch_token(self, name: str, ts: float) -> None:
        self.sqlite.touch_token(name, ts)

    # -------------------------------------------------------------------------------- status

    def health(self) -> dict[str, object]:
        return self.sqlite.health()

    async def close(self) -> None:
        self.sqlite.close()
