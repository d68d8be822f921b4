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
- ``Tally`` keeps the sum of every count and the templates over a limit as counts change, so
  an apply of one template is checked without summing 100,000 of them.
- ``parse_scale`` reads a ``scale`` request's ``N``, ``+N`` or ``-N``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from gaffer.common.errors import InvalidRequest, LimitExceeded
from gaffer.common.limits import DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PER_TEMPLATE, MAX_COUNT


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


class Tally:
    """The sum of every template's count and the templates over a limit, kept up to date as
    counts change; ``limited`` holds what ``effective_counts`` says of a state over a limit."""

    def __init__(self, limits: CountLimits, counts: Mapping[str, int]) -> None:
        self.limits = limits
        self.total = sum(counts.values())
        self._over = {name for name, count in counts.items() if count > limits.per_template}
        self.limited: dict[str, Limited] = {}

    def check(self, changes: Mapping[str, tuple[int, int]]) -> None:
        """``check_counts`` against the current total (LimitExceeded, nothing counted)."""
        check_counts(self.limits, changes, self.total)

    def counted(
        self, changes: Mapping[str, tuple[int, int]], counts: Callable[[], Mapping[str, int]]
    ) -> dict[str, Limited]:
        """Count stored changes ((before, after) per template); the notes that are new or
        changed (``recount``)."""
        for name, (before, after) in changes.items():
            self.total += after - before
            if after > self.limits.per_template:
                self._over.add(name)
            else:
                self._over.discard(name)
        return self.recount(counts)

    def recount(self, counts: Callable[[], Mapping[str, int]]) -> dict[str, Limited]:
        """Judge again which templates are limited (``counts`` gives every count, asked only
        when something is or was over a limit); the notes that are new or changed."""
        if not (self.limited or self._over or self.total > self.limits.total):
            return {}
        _, limited = effective_counts(self.limits, counts())
        fresh = {name: note for name, note in limited.items() if self.limited.get(name) != note}
        self.limited = limited
        return fresh

    def placing(self, name: str, count: int) -> int:
        """How many of ``name``'s ``count`` are placed: all of them, or less when limited."""
        limited = self.limited.get(name)
        return limited.placing if limited is not None else count


def parse_scale(how: str | int, current: int) -> int:
    """``N``, ``+N`` or ``-N`` against ``current``; InvalidRequest for anything else or < 0."""
    if isinstance(how, bool):
        raise InvalidRequest(f"bad count {how!r}")
    if isinstance(how, int):
        count = how
    else:
        text = str(how).strip()
        digits = text[1:] if text[:1] in "+-" else text
        if not digits.isascii() or not digits.isdecimal():
            shown = repr(how) if len(text) <= 40 else f"of {len(text)} characters"
            raise InvalidRequest(f"bad count {shown}: use N, +N or -N")
        if len(digits) > len(str(MAX_COUNT)):
            shown = repr(how) if len(text) <= 40 else f"of {len(digits)} digits"
            raise InvalidRequest(f"bad count {shown}: at most {MAX_COUNT:,} instances")
        value = int(digits)
        count = current + value if text[0] == "+" else current - value if text[0] == "-" else value
    if count < 0:
        raise InvalidRequest(f"count would be {count}: it must stay >= 0")
    if count > MAX_COUNT:
        raise InvalidRequest(f"count would be {count:,}: at most {MAX_COUNT:,} instances")
    return count
