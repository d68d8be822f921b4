"""How many instances the desired state may ask for: a controller's count limits (pure).

Two limits, both settings of the controller: ``per_template`` (``--max-per-template``) caps one
template's ``numprocesses``, ``total`` (``--max-instances``) the sum over every template
(paused ones included: resuming one must not pass the limit). Every count also has the format
limit ``limits.MAX_COUNT``, checked when a template is parsed.

- ``check_counts`` guards a change (apply, scale, ``gaffer start -c``) *before* anything is
  stored: over a limit, the whole change is refused with one line naming the template, the
  count and the limit. A change that does not grow a count is always allowed, so an operator
  can scale down out of a state that is over a limit (after lowering one, say).
- ``effective_counts`` is what a controller places when the stored state is over a limit
  anyway (stored before the limits existed, or a limit lowered since): each template at most
  ``per_template``, and templates in name order until ``total`` is used up. The others get a
  ``Limited`` note that ``gafferctl templates`` and ``get`` show. Nothing is ever changed in the
  store on the operator's behalf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from gaffer.common.errors import LimitExceeded
from gaffer.common.limits import DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PER_TEMPLATE


@dataclass(frozen=True)
class CountLimits:
    per_template: int = DEFAULT_MAX_PER_TEMPLATE
    total: int = DEFAULT_MAX_INSTANCES


@dataclass(frozen=True)
class Limited:
    """A template that wants more than its limits allow: ``placing`` of its ``wanted``."""

    wanted: int
    placing: int
    reason: str

    def view(self) -> dict[str, object]:
        return {"wanted": self.wanted, "placing": self.placing, "reason": self.reason}


def check_counts(limits: CountLimits, changes: Mapping[str, tuple[int, int]], total: int) -> None:
    """Raise LimitExceeded if ``changes`` (template -> (count now, new count), 0 for a new
    template) would grow a count past a limit; ``total`` is the sum of every count now."""
    after = total
    for name in sorted(changes):
        before, count = changes[name]
        after += count - before
        if count > limits.per_template and count > before:
            raise LimitExceeded(
                f"{name}: {count:,} instances is over the limit of {limits.per_template:,} per "
                "template (--max-per-template)"
            )
    if after > limits.total and after > total:
        raise LimitExceeded(
            f"the templates would want {after:,} instances in all, over the limit of "
            f"{limits.total:,} (--max-instances)"
        )


def effective_counts(
    limits: CountLimits, counts: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, Limited]]:
    """What to place of each template's ``counts``, and a note for each one cut down."""
    if sum(counts.values()) <= limits.total and max(counts.values(), default=0) <= limits.per_template:
        return dict(counts), {}
    placing: dict[str, int] = {}
    limited: dict[str, Limited] = {}
    left = limits.total
    for name in sorted(counts):
        wanted = counts[name]
        count = min(wanted, limits.per_template, left)
        left -= count
        placing[name] = count
        if count < wanted:
            if count < min(wanted, limits.per_template):
                reason = f"over the limit of {limits.total:,} instances in all (--max-instances)"
            else:
                reason = f"over the limit of {limits.per_template:,} per template (--max-per-template)"
            limited[name] = Limited(wanted, count, reason)
    return placing, limited
