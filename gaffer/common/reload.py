"""What a reload (SIGHUP) of a daemon's config file changes, and what it cannot (pure).

A daemon re-reads its config file whole, with the same command-line options (they still win
over the file), and validates it before anything is applied: a file that no longer validates
is refused with its reason and the running configuration is kept. Then ``config_changes``
compares the running values with the new ones, setting by setting::

    running values ──┐
                     ├─► config_changes(old, new, reloadable) -> Changes
    new values ──────┘        applied:       changed and reloadable: the daemon applies them
                              needs_restart: changed but fixed while the daemon runs
                                             (endpoints, keys, data dirs): named, not applied

Each daemon says which of its settings are reloadable (``RELOADABLE`` in its ``daemon.py``)
and gives its values as a flat mapping keyed by the config file's names, so the log names a
setting the way the operator wrote it. A setting that needs a restart stays as it runs, and is
named again at every reload until the daemon is restarted or the file is put back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Collection, Mapping

MAX_SHOWN = 60
"""A value longer than this (a list of apps, say) is cut in log lines."""


@dataclass(frozen=True)
class Change:
    """One setting whose value differs between the running config and the file."""

    key: str
    old: object
    new: object

    def __str__(self) -> str:
        return f"{self.key} {_show(self.old)} -> {_show(self.new)}"


@dataclass(frozen=True)
class Changes:
    applied: tuple[Change, ...] = ()
    """Changed settings the daemon applies while it runs."""
    needs_restart: tuple[Change, ...] = ()
    """Changed settings that only a restart can apply: kept as they run."""

    @property
    def nothing(self) -> bool:
        return not self.applied and not self.needs_restart

    def lines(self, source: str) -> list[tuple[int, str]]:
        """What the daemon logs, with the logging level of each line: one line for what was
        applied, a warning for what needs a restart, or one line saying nothing changed."""
        if self.nothing:
            return [(logging.INFO, f"reloaded {source}: nothing changed")]
        out = []
        if self.applied:
            out.append((logging.INFO, f"reloaded {source}: applied " + ", ".join(map(str, self.applied))))
        if self.needs_restart:
            names = ", ".join(map(str, self.needs_restart))
            out.append((logging.WARNING, f"reloaded {source}: not applied, needs a restart: {names}"))
        return out


def config_changes(
    old: Mapping[str, object], new: Mapping[str, object], reloadable: Collection[str]
) -> Changes:
    """Every setting whose value differs, as ``applied`` if it is in ``reloadable``, else
    ``needs_restart``; in the order of ``old``, then the keys only ``new`` has."""
    keys = [*old, *(key for key in new if key not in old)]
    applied: list[Change] = []
    restart: list[Change] = []
    for key in keys:
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        (applied if key in reloadable else restart).append(Change(key, before, after))
    return Changes(tuple(applied), tuple(restart))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."
