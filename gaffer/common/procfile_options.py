"""The Procfile workflow's command-line values, parsed the way honcho takes them.

``-c web=2,worker=3`` is honcho's and foreman's form (``gaffer start`` and ``gaffer export``
both take it). Pure: text in, values out, a ConfigError naming the bad part otherwise.
"""

from __future__ import annotations

from gaffer.common.errors import ConfigError
from gaffer.common.limits import MAX_COUNT, NAME_RE


def parse_concurrency(text: str) -> dict[str, int]:
    """``NAME=COUNT[,NAME=COUNT...]`` as a dict (a later NAME wins, as in honcho).

    COUNT is a decimal 0..MAX_COUNT; NAME follows the template name rule. An empty part
    (``web=2,``) is refused: honcho stops with a traceback on it.
    """
    counts: dict[str, int] = {}
    for part in text.split(","):
        name, sep, number = part.partition("=")
        shown = repr(part) if len(part) <= 80 else f"a part of {len(part)} characters"
        if not sep or not NAME_RE.match(name) or not (number.isascii() and number.isdecimal()):
            raise ConfigError(f"--concurrency: expected NAME=COUNT, got {shown}")
        if len(number) > len(str(MAX_COUNT)) or int(number) > MAX_COUNT:
            raise ConfigError(f"--concurrency: {name}: the count must be at most {MAX_COUNT:,}, got {shown}")
        counts[name] = int(number)
    return counts
