"""What the controller keeps durably, as one interface: ``StateStore``.

The controller holds its desired state in memory and keeps the durable copy in a store:
templates with their counts and paused flags, node records with their cordon and drain flags,
the placement, failure history, restart generations, per-node assignment generations, event
positions and API token digests. Two stores serve it behind this one Protocol:

- ``SqliteStateStore`` (``sqlitestore.py``): one SQLite file in the data dir, the default, and
  all ``gaffer start`` or a single ``gaffer-controller`` ever needs;
- an etcd store (issue 13's next step): the same state in etcd, behind leader election.

Why the methods are async: a network store answers over the network, so the controller awaits
every read and write. The SQLite store's methods never suspend (SQLite answers at once, from
the loop's thread), so awaiting them costs no extra turn of the loop.

What every implementation promises:

- **One operation, one transaction.** Each write method applies whole or not at all, and
  returns only once it is durable. Methods that do two things (``pause``: resume and forget
  failures; ``restart_template``: new generation, forget failures, resume) do them in one
  transaction, so the controller never has to write twice for one operation.
- **Failing cleanly.** A write that does not apply raises a ``StorageError``: StorageDamaged (a
  corrupt file), StoreUnavailable (the store cannot be reached, or this controller may no
  longer write: leadership lost), or a StorageError with a ``reason`` (disk full, I/O). Nothing
  of the operation was saved then, and the caller, which writes before it changes its memory,
  leaves its memory as it was.
- **Health without waiting.** ``health`` is synchronous: ``status`` must answer when the store
  does not, so it reports what the store last saw (damage, failing kinds of writes).

Reads (``templates``, ``placement``, ``nodes`` ...) are used once, when the controller starts;
from then on the controller's memory is what it serves, and the store is written through.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Protocol, Sequence

from gaffer.common.model import Slot
from gaffer.common.template import Template
from gaffer.controller.node_rows import StoredNode
from gaffer.controller.position_rows import BLOCK, Numbering
from gaffer.controller.template_rows import Change, Puts, StoredTemplate
from gaffer.controller.token_rows import StoredToken

__all__ = ["StateStore"]


class StateStore(Protocol):
    """The controller's durable state (see the module docstring for what each call promises)."""

    # ------------------------------------------------------------------------- templates

    async def templates(self) -> list[StoredTemplate]:
        """Every template, by name (ConfigError naming one that no longer validates)."""
        ...

    async def prepare_puts(self, templates: Sequence[Template], prepared: Puts | None = None) -> Puts:
        """Work out, without writing, what putting ``templates`` changes (in slices of a large
        apply, passing the ``Puts`` so far)."""
        ...

    async def commit_puts(self, puts: Puts) -> list[Change]:
        """Write what ``prepare_puts`` worked out, in one transaction: all, or none."""
        ...

    async def put_templates(self, templates: Sequence[Template]) -> list[Change]:
        """``prepare_puts`` and ``commit_puts`` at once."""
        ...

    async def set_count(self, name: str, count: int) -> Change:
        """Set a template's cluster-wide count."""
        ...

    async def pause(self, name: str, paused: bool) -> tuple[bool, StoredTemplate]:
        """Pause or resume (resuming forgets the template's failures too); whether the flag
        changed, and the template as stored after."""
        ...

    async def restart_template(self, name: str) -> tuple[int, StoredTemplate]:
        """A new restart generation, its failures forgotten, resumed if paused; the generation
        and the template as stored after."""
        ...

    async def delete_templates(self, names: Sequence[str]) -> None:
        """Forget templates with their placement and failures: all, or none."""
        ...

    async def restarts(self) -> dict[str, int]:
        """Each restarted template's restart generation."""
        ...

    # ----------------------------------------------------------------------------- nodes

    async def nodes(self) -> list[StoredNode]:
        ...

    async def put_node(self, name: str, labels: Mapping[str, str], agent_id: str) -> StoredNode:
        """Record a node's labels and agent (keeps its cordon and drain flags)."""
        ...

    async def set_node_flags(self, name: str, *, cordoned: bool | None = None, draining: bool | None = None) -> bool:
        """Set a node's cordoned and/or draining flags (None: leave it); True when one changed."""
        ...

    async def forget_node(self, name: str) -> bool:
        """Delete a node's record (its generation stays); True if there was one."""
        ...

    # ------------------------------------------------------------------ placement, failures

    async def placement(self) -> dict[Slot, str]:
        ...

    async def save_placement(self, changes: Mapping[Slot, str | None]) -> None:
        """Apply a batch of slot changes (a node places, None removes) in one transaction."""
        ...

    async def failed(self) -> dict[Slot, frozenset[str]]:
        ...

    async def mark_failed(self, template: str, ordinal: int, node: str) -> bool:
        """Remember that ``template.ordinal`` failed on ``node``; True the first time."""
        ...

    # ---------------------------------------------------------------------------- generations

    async def next_generations(self, nodes: Iterable[str], floors: Mapping[str, int] | None = None) -> dict[str, int]:
        """The next assignment generation of each node (above its floor), in one transaction."""
        ...

    # ------------------------------------------------------------------------ event positions

    async def start_numbering(self, block: int = BLOCK) -> Numbering:
        """Reserve this incarnation's first block of event positions."""
        ...

    async def reserve_positions(self, block: int = BLOCK) -> int:
        """Reserve the next block; the new last reserved position."""
        ...

    async def record_clean_stop(self, last: int) -> None:
        """Record ``last`` as this incarnation's final event position."""
        ...

    # ---------------------------------------------------------------------------------- tokens

    async def tokens(self) -> list[StoredToken]:
        ...

    async def put_token(self, name: str, role: str, digest: bytes, now: float) -> StoredToken:
        """Store a new token's digest (Conflict when the name is taken)."""
        ...

    async def delete_token(self, name: str) -> bool:
        ...

    async def touch_token(self, name: str, ts: float) -> None:
        ...

    # -------------------------------------------------------------------------------- status

    def health(self) -> dict[str, object]:
        """For ``status``, without waiting: ``ok``, and what is wrong."""
        ...

    async def close(self) -> None:
        """Release the store; calling it twice is harmless."""
        ...
