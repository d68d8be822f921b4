"""The controller's durable desired state: one SQLite file, ``<data_dir>/gaffer.db``.

Why it is built this way:

- **Acknowledged means durable.** Every public method is one short transaction that commits
  before it returns. The database runs in WAL mode with ``synchronous=FULL``, so a commit is
  fsynced: whatever a caller was told survives a SIGKILL at any moment, and a power cut as far
  as the disk honours fsync. Nothing is cached here; the file is the only truth, so a restarted
  controller sees exactly what was acknowledged, no more and no less.
- **One change, one transaction.** ``put_templates`` stores a whole apply at once: a crash or a
  full disk leaves all of it or none of it, never the first 170 of 3,000.
- **One writer.** Two controllers on one data dir would each believe their own desired state.
  ``<data_dir>/controller.lock`` is held with ``flock`` for the Store's lifetime (the kernel drops
  it when the holder dies, even by SIGKILL) and carries the holder's pid for the refusal message.
  The offline commands (``gaffer-controller check|export|import|forget-template``) take it too.
- **Damage is found at the door and reported, never a traceback.** Opening runs SQLite's
  ``quick_check``; a damaged file is refused with one line naming it and the way out. Every
  SQLite failure later (disk full, I/O error, read-only, corruption) becomes a StorageError
  with one clear line, logged once per kind until a write succeeds again. Corruption found while
  running is sticky: from then on the Store refuses every call (StorageDamaged) rather than
  write more into a damaged file; the controller keeps serving what it holds in memory.
- **Schema changes are ordered migrations** (``migrations.py``), applied all-or-nothing in one
  transaction. A database written by a newer gaffer is refused rather than guessed at.
- **Stored templates are re-validated when read.** The spec is ``Template.to_dict()`` as JSON and
  comes back through ``parse_template``; one that no longer validates is reported by name
  (ConfigError, naming ``gaffer-controller forget-template``), never silently dropped.

The Store is the shell: it owns the file, the lock, the transactions and the failure
accounting. What each call does to the tables is in ``template_rows`` (templates),
``node_rows`` (nodes, generations), ``placement_rows`` (placement, failures, restarts),
``position_rows`` (event positions) and ``token_rows`` (API token digests),
functions that run on the connection inside the transaction the Store opened.

The controller does not call it directly: it awaits a ``StateStore`` (``statestore.py``), which
on SQLite is ``SqliteStateStore`` (``sqlitestore.py``), a thin async face of this class.

Not thread-safe: the controller calls it from its one loop thread (backups read the file through
their own connection). Each write fsyncs, so batch where the caller can (``put_templates``,
``save_placement``, ``touch_nodes``, ``next_generations``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from gaffer.common.errors import ConfigError, StorageDamaged, StorageError
from gaffer.common.model import Slot
from gaffer.common.template import Template
from gaffer.controller import node_rows, placement_rows, position_rows, template_rows, token_rows
from gaffer.controller.dbfile import (
    DB_NAME, LOCK_HINT, acquire_lock, connect, damaged_at_open, quick_check, rollback, storage_error,
)
from gaffer.controller.migrations import migrate, schema_version
from gaffer.controller.node_rows import StoredNode, check_name
from gaffer.controller.placement_rows import check_slot
from gaffer.controller.template_rows import Change, Puts, StoredTemplate

__all__ = ["DB_NAME", "Change", "Puts", "Store", "StoredNode", "StoredTemplate"]

log = logging.getLogger("gaffer.controller.store")


class Store:
    """The desired state under one data dir, locked to this Store until ``close()``.

    Opening runs ``quick_check`` and refuses a damaged file (StorageDamaged); ``lock_hint``
    ends the message refusing a data dir another process holds.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        lock_hint: str = LOCK_HINT,
        on_write: Callable[[float], None] | None = None,
    ) -> None:
        """``on_write``: told how long each committed write transaction took, in seconds
        (BEGIN to COMMIT, the fsync included: the metrics' histogram)."""
        self.data_dir = Path(data_dir)
        self._on_write = on_write
        self.path = self.data_dir / DB_NAME
        self._clock = clock
        self._damage: StorageDamaged | None = None
        self._failing: set[str] = set()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create the data dir {self.data_dir}: {exc.strerror}") from exc
        self._lock_fd = acquire_lock(self.data_dir, lock_hint)
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = connect(self.path)
            problems = quick_check(self._conn)
            if problems:
                raise StorageDamaged(damaged_at_open(self.path, problems))
            migrate(self._conn, self.path)
        except sqlite3.Error as exc:
            self.close()
            raise storage_error(exc, self.path, at_open=True) from exc
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the database and release the data dir; calling it twice is harmless."""
        conn, self._conn = self._conn, None
        fd, self._lock_fd = self._lock_fd, -1
        try:
            if conn is not None:
                conn.close()
        finally:
            if fd >= 0:
                os.close(fd)

    def schema_version(self) -> int:
        with self._read() as conn:
            return schema_version(conn, self.path)

    def health(self) -> dict[str, object]:
        """For ``status``: ``ok``, and what is wrong (damage, or kinds of failing writes)."""
        return {
            "ok": self._damage is None and not self._failing,
            "damaged": self._damage is not None,
            "failing": sorted(self._failing),
            "problem": self._damage.message if self._damage is not None else None,
        }

    # ------------------------------------------------------------------------- templates

    def put_template(self, template: Template) -> Change:
        """Create or replace ``template``; the version goes up only when something changed."""
        return self.put_templates([template])[0]

    def put_templates(self, templates: Sequence[Template]) -> list[Change]:
        """Create or replace every template in one transaction: all are stored, or none.

        A template whose launch spec changed (``spec_hash``) loses its failure history in the
        same transaction: a new spec gets a fresh start on every node.
        """
        return self.commit_puts(self.prepare_puts(templates))

    def prepare_puts(self, templates: Sequence[Template], prepared: Puts | None = None) -> Puts:
        """Work out, without writing, what putting ``templates`` changes (see ``Puts``).

        Call it on slices of a large apply (passing the ``Puts`` so far) so the loop can run
        between them; ``commit_puts`` then writes everything in one short transaction.
        """
        puts = prepared if prepared is not None else Puts()
        template_rows.add_puts(puts, templates)
        with self._read() as conn:
            template_rows.read_puts(conn, puts, [t.name for t in templates])
        return puts

    def commit_puts(self, puts: Puts) -> list[Change]:
        """Write what ``prepare_puts`` worked out, in one transaction. A template whose stored
        version moved since (a concurrent scale, say) is worked out again inside it, so the
        result is always what putting it now means."""
        now = self._clock()
        with self._write() as conn:
            return template_rows.commit_puts(conn, puts, now)

    def set_count(self, name: str, count: int) -> Change:
        """Set a template's cluster-wide ``numprocesses`` ("scaled" or "unchanged")."""
        template_rows.check_count(name, count)
        now = self._clock()
        with self._write() as conn:
            return template_rows.set_count(conn, self.path, name, count, now)

    def set_paused(self, name: str, paused: bool) -> bool:
        """Pause (instances stopped, template kept) or resume; True when the flag changed."""
        with self._write() as conn:
            return template_rows.set_paused(conn, name, paused, self._clock())

    def pause(self, name: str, paused: bool) -> tuple[bool, StoredTemplate]:
        """``set_paused`` and, when resuming, ``clear_failed`` (a resumed template gets a fresh
        start on every node), in one transaction; whether the flag changed, and the template
        as stored after."""
        with self._write() as conn:
            if not paused:
                placement_rows.clear_failed(conn, name, None)
            changed = template_rows.set_paused(conn, name, paused, self._clock())
            row = template_rows.get_row(conn, name)
        return changed, template_rows.stored_template(self.path, row)

    def restart_template(self, name: str) -> tuple[int, StoredTemplate]:
        """``restart`` and, for a paused template, resume it, in one transaction; the new
        restart generation and the template as stored after."""
        with self._write() as conn:
            generation = placement_rows.restart(conn, name)
            template_rows.set_paused(conn, name, False, self._clock())
            row = template_rows.get_row(conn, name)
        return generation, template_rows.stored_template(self.path, row)

    def delete_template(self, name: str) -> None:
        """Forget a template with its placement and failures (works on one that no longer validates)."""
        self.delete_templates([name])

    def delete_templates(self, names: Sequence[str]) -> None:
        """``delete_template`` for several, in one transaction: all go, or none (TemplateNotFound
        for the first unknown name)."""
        with self._write() as conn:
            template_rows.delete(conn, names)

    def get_template(self, name: str) -> StoredTemplate:
        with self._read() as conn:
            row = template_rows.get_row(conn, name)
        return template_rows.stored_template(self.path, row)

    def templates(self) -> list[StoredTemplate]:
        """Every template, by name; ConfigError naming the first stored one that no longer validates."""
        with self._read() as conn:
            rows = template_rows.all_rows(conn)
        return [template_rows.stored_template(self.path, row) for row in rows]

    # ----------------------------------------------------------------------------- nodes

    def put_node(self, name: str, labels: Mapping[str, str], agent_id: str) -> StoredNode:
        """Record a node registering (its first time sets ``first_seen``); keeps cordon/drain."""
        node_rows.check_node(name, labels, agent_id)
        now = self._clock()
        with self._write() as conn:
            return node_rows.put(conn, name, labels, agent_id, now)

    def set_cordoned(self, name: str, cordoned: bool) -> bool:
        """Cordon (no new placements) or uncordon; True when the flag changed."""
        return self.set_node_flags(name, cordoned=cordoned)

    def set_draining(self, name: str, draining: bool) -> bool:
        """Mark a node as draining (its instances to move away); True when the flag changed."""
        return self.set_node_flags(name, draining=draining)

    def set_node_flags(self, name: str, *, cordoned: bool | None = None, draining: bool | None = None) -> bool:
        """Set a node's cordoned and/or draining flags (None: leave it) in one transaction;
        True when either changed. A node that never registered gets a record only when a flag
        is set, so clearing one nobody set invents nothing."""
        check_name("node", name)
        wanted = {k: bool(v) for k, v in (("cordoned", cordoned), ("draining", draining)) if v is not None}
        with self._write() as conn:
            return node_rows.set_flags(conn, name, wanted)

    def touch_node(self, name: str, ts: float) -> bool:
        """Set a registered node's ``last_seen`` (wall-clock seconds); False if it never registered."""
        with self._write() as conn:
            return node_rows.touch(conn, {name: ts}) == 1

    def touch_nodes(self, seen: Mapping[str, float]) -> None:
        """``touch_node`` for many nodes in one transaction (one fsync instead of one each)."""
        with self._write() as conn:
            node_rows.touch(conn, seen)

    def nodes(self) -> list[StoredNode]:
        with self._read() as conn:
            return node_rows.all_nodes(conn)

    def forget_node(self, name: str) -> bool:
        """Delete a node's record (labels, agent, cordon, drain); True if there was one.

        Its generation stays: an agent that later says hello under that name gets a generation
        above every one it was ever sent, so a stale assignment can never look current.
        """
        check_name("node", name)
        with self._write() as conn:
            return node_rows.forget(conn, name)

    # ------------------------------------------------------------------ placement, failures

    def save_placement(self, changes: Mapping[Slot, str | None]) -> None:
        """Apply a batch of slot changes in one transaction: a node name places, None removes.

        Placing an ordinal of an unknown template raises TemplateNotFound and applies nothing;
        removing a slot that is not there is fine (so is one of a deleted template).
        """
        places, removes = placement_rows.split_changes(changes)
        if not changes:
            return
        with self._write() as conn:
            placement_rows.save(conn, places, removes)

    def placement(self) -> dict[Slot, str]:
        with self._read() as conn:
            return placement_rows.placement(conn)

    def mark_failed(self, template: str, ordinal: int, node: str) -> bool:
        """Remember that ``template.ordinal`` failed on ``node``; True the first time."""
        template, ordinal = check_slot((template, ordinal))
        check_name("node", node)
        with self._write() as conn:
            return placement_rows.mark_failed(conn, template, ordinal, node)

    def clear_failed(self, template: str, ordinal: int | None = None) -> int:
        """Forget the failures of one ordinal (or of every ordinal); returns how many went.

        Like removing a slot, forgetting is idempotent: an unknown (or just deleted) template
        has nothing to forget and gives 0.
        """
        if ordinal is not None:
            check_slot((template, ordinal))
        with self._write() as conn:
            return placement_rows.clear_failed(conn, template, ordinal)

    def restart(self, name: str) -> int:
        """Bump ``name``'s restart generation (its instances restart, rolling) and forget its
        failures, in one transaction; the new generation. The spec is left as it is."""
        with self._write() as conn:
            return placement_rows.restart(conn, name)

    def restarts(self) -> dict[str, int]:
        """Each restarted template's restart generation (0, absent, for the others)."""
        with self._read() as conn:
            return placement_rows.restarts(conn)

    def failed(self) -> dict[Slot, frozenset[str]]:
        """For each ordinal that has failed somewhere, the nodes it failed on."""
        with self._read() as conn:
            return placement_rows.failed(conn)

    # ---------------------------------------------------------------------------- generations

    def next_generation(self, node: str) -> int:
        """The next assignment generation for ``node``: strictly increasing, across restarts too."""
        return self.next_generations([node])[node]

    def next_generations(self, nodes: Iterable[str], floors: Mapping[str, int] | None = None) -> dict[str, int]:
        """``next_generation`` for several nodes in one transaction.

        ``floors`` are generations the nodes say they already applied: the next one is above
        both the stored one and the floor. After a restore from an older backup the stored
        generations are behind what agents hold, and an agent ignores an assignment older
        than its own, so without the floor it would never take a new one.
        """
        names = list(dict.fromkeys(nodes))
        for name in names:
            check_name("node", name)
        with self._write() as conn:
            return node_rows.next_generations(conn, names, floors or {})

    def generations(self) -> dict[str, int]:
        """The last generation handed out per node."""
        with self._read() as conn:
            return node_rows.generations(conn)

    # ------------------------------------------------------------------------ event positions

    def start_numbering(self, block: int = position_rows.BLOCK) -> position_rows.Numbering:
        """Reserve this incarnation's first block of event positions (see ``position_rows``)."""
        with self._write() as conn:
            return position_rows.start(conn, block)

    def reserve_positions(self, block: int = position_rows.BLOCK) -> int:
        """Reserve the next block of event positions; the new last reserved position."""
        with self._write() as conn:
            return position_rows.extend(conn, block)

    def record_clean_stop(self, last: int) -> None:
        """Record ``last`` as the final event position of this incarnation, stopping cleanly."""
        with self._write() as conn:
            position_rows.record_clean_stop(conn, last)

    def event_positions(self) -> tuple[int, int | None]:
        """``(reserved, clean_last)``: the highest reserved position and the clean-stop record."""
        with self._read() as conn:
            return position_rows.read(conn)

    # ---------------------------------------------------------------------------------- tokens

    def put_token(self, name: str, role: str, digest: bytes, now: float) -> token_rows.StoredToken:
        """Store a new API token (its digest, never its secret), created at ``now`` (wall-clock
        seconds); Conflict when the name is taken."""
        with self._write() as conn:
            return token_rows.put(conn, name, role, digest, now)

    def delete_token(self, name: str) -> bool:
        """Forget a token; True if there was one."""
        with self._write() as conn:
            return token_rows.delete(conn, name)

    def touch_token(self, name: str, ts: float) -> None:
        """Record when a token was last used (wall-clock seconds)."""
        with self._write() as conn:
            token_rows.touch(conn, name, ts)

    def tokens(self) -> list[token_rows.StoredToken]:
        with self._read() as conn:
            return token_rows.all_tokens(conn)

    # -------------------------------------------------------------------------------- inner

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"the store at {self.path} is closed")
        if self._damage is not None:
            raise StorageDamaged(self._damage.message)
        return self._conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read; SQLite's failures become one StorageError (logged once)."""
        conn = self._db()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (and fsynced) before the caller returns, or rolled
        back whole; SQLite's failures become one StorageError (logged once per kind)."""
        conn = self._db()
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        if self._on_write is not None:
            self._on_write(time.perf_counter() - started)
        if self._failing:
            log.warning("the store %s takes writes again (%s is over)", self.path, ", ".join(sorted(self._failing)))
            self._failing.clear()

    def _failed(self, exc: sqlite3.Error) -> StorageError:
        error = storage_error(exc, self.path)
        if isinstance(error, StorageDamaged):
            self._damage = error
            log.error("%s", error.message)
        elif error.reason not in self._failing:
            self._failing.add(error.reason)
            log.error("%s", error.message)
        return error
