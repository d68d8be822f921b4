"""A template's ``update`` table: how a changed spec rolls out, validated like the rest.

Kept apart from ``template`` so each module stays small; ``Template.update`` holds an ``Update``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gaffer.common.fieldcheck import Checker
from gaffer.common.limits import MAX_COUNT, MAX_DURATION

DEFAULT_PROGRESS_DEADLINE = 600.0


@dataclass(frozen=True)
class Update:
    """How a changed spec rolls: at most ``max_unavailable`` instances not ready at a time; a
    roll whose new instances make no progress (none more ready) for ``progress_deadline``
    seconds is stuck: it stops, and the old instances still running stay."""

    max_unavailable: int = 1
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE


def parse_update(chk: Checker, value: Any) -> Update | None:
    """The ``update`` table, or None when it is not one (the problem is recorded in ``chk``)."""
    table = chk.table("update", value)
    if table is None:
        return None
    chk.unknown_keys(table, ("max_unavailable", "progress_deadline"), prefix="update.")
    count = 1
    if "max_unavailable" in table:
        count = chk.integer("update.max_unavailable", table["max_unavailable"], minimum=1, maximum=MAX_COUNT)
    deadline = DEFAULT_PROGRESS_DEADLINE
    if "progress_deadline" in table:
        deadline = chk.number(
            "update.progress_deadline", table["progress_deadline"], minimum=1.0, maximum=MAX_DURATION
        )
    return Update(max_unavailable=count or 1, progress_deadline=deadline or DEFAULT_PROGRESS_DEADLINE)


def plain_update(update: Update) -> dict[str, Any]:
    """The plain form; ``progress_deadline`` only when set, so templates that do not use it
    keep the stored form they had before the field existed."""
    if update.progress_deadline == DEFAULT_PROGRESS_DEADLINE:
        return {"max_unavailable": update.max_unavailable}
    return {"max_unavailable": update.max_unavailable, "progress_deadline": update.progress_deadline}
