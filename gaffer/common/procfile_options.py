"""The options honcho and foreman take for a Procfile, parsed the same way (or refused).

``-c/--concurrency web=2,worker=3`` sets instance counts. honcho splits on commas and ``=``
and lets a bad part end in a traceback, and ignores names the Procfile does not have; gaffer
refuses both with one line naming the part or the names. A name given twice is refused too
(honcho keeps the last, which hides a typo). Pure: text in, values or ConfigError out.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from gaffer.common.errors import ConfigError
from gaffer.common.limits import MAX_COUNT, NAME_RE

MAX_TEXT = 65536
"""Characters of ``-c`` read at all: far more than any real list of process types."""


def parse_concurrency(text: str) -> dict[str, int]:
    """``web=2,worker=3`` -> ``{"web": 2, "worker": 3}``; counts 0..MAX_COUNT (0: none run)."""
    if len(text) > MAX_TEXT:
        raise ConfigError(f"--concurrency: {len(text):,} characters, at most {MAX_TEXT:,}")
    counts: dict[str, int] = {}
    for part in text.split(","):
        name, sep, number = (piece.strip() for piece in part.partition("="))
        shown = repr(part) if len(part) <= 80 else f"a part of {len(part)} characters"
        if not sep or not NAME_RE.match(name):
            raise ConfigError(f"--concurrency: expected NAME=COUNT, got {shown}")
        if not (number.isascii() and number.isdecimal()):
            raise ConfigError(f"--concurrency: {name}: the count must be a whole number 0..{MAX_COUNT:,}, got {shown}")
        if len(number) > len(str(MAX_COUNT)) or int(number) > MAX_COUNT:
            raise ConfigError(f"--concurrency: {name}: the count must be at most {MAX_COUNT:,}, got {shown}")
        if name in counts:
            raise ConfigError(f"--concurrency: {name} is given twice")
        counts[name] = int(number)
    return counts


def parse_concurrency_options(values: Iterable[str]) -> dict[str, int]:
    """Every ``-c`` given (``-c web=2 -c worker=3`` is ``-c web=2,worker=3``)."""
    values = list(values)
    return parse_concurrency(",".join(values)) if values else {}


def check_concurrency_names(counts: Mapping[str, int], names: Iterable[str], source: str) -> None:
    """ConfigError naming every ``-c`` name that ``source`` has no process type for."""
    have = list(names)
    known = set(have)
    unknown = [name for name in counts if name not in known]
    if unknown:
        listed = ", ".join(sorted(have)[:20]) + (" ..." if len(have) > 20 else "")
        raise ConfigError(
            f"--concurrency: {source} has no process type {', '.join(unknown)} (it has: {listed})"
        )
