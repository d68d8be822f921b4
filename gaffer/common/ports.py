"""The ``PORT`` each instance gets: the rule honcho and foreman use, so a Procfile app moves over.

A Procfile's process types are numbered in file order from 0; type ``i`` owns the block of 100
ports from ``base + 100 * i``, and its instance with ordinal ``n`` (1, 2, ...) gets the ``n - 1``-th
port of the block. The base is 5000 unless ``gaffer start -p`` says otherwise. A template that
asks for a port with a base of its own gets ``base + n - 1``. Ordinals are stable (the controller
places ordinals 1..count), so an instance keeps its port across restarts and rescheduling.

Where the base comes from (``choose_base``), first found wins: ``-p/--port``, ``PORT`` in the
Procfile's ``.env``, ``PORT`` in gaffer's own environment, 5000. That is foreman's order and
honcho's documented one (honcho 2.0.0 lets ``.env`` beat ``-p``; gaffer does not).

Pure: no file, no environment read here; callers pass what they read.
"""

from __future__ import annotations

from typing import Iterable

from gaffer.common.errors import ConfigError

DEFAULT_BASE = 5000
BLOCK = 100
"""Ports reserved per Procfile process type, so ``web=2`` and ``worker=3`` never overlap."""
MIN_PORT = 1
MAX_PORT = 65535
AUTO = "auto"
"""``port = "auto"`` in a template file: the Procfile rule, by the template's position there."""


def procfile_base(base: int, type_position: int) -> int:
    """The first port of the ``type_position``-th process type (0-based, in Procfile order)."""
    return base + BLOCK * type_position


def instance_port(base: int, ordinal: int) -> int:
    """The port of the instance with ``ordinal`` (1-based) of a template whose ports start at ``base``."""
    return base + ordinal - 1


def range_problem(base: int, count: int) -> str | None:
    """Why ``count`` instances from ``base`` do not fit in 1..65535, or None if they do."""
    if not MIN_PORT <= base <= MAX_PORT:
        return f"must be a port {MIN_PORT}..{MAX_PORT}, got {base}"
    last = instance_port(base, count)
    if count > 0 and last > MAX_PORT:
        return f"{base} with {count} instances reaches port {last}, past {MAX_PORT}"
    return None


def parse_base(text: str, where: str) -> int:
    """A base port written as text (``-p``, ``PORT=``), or ConfigError naming ``where``."""
    value = text.strip()
    if not (value.isascii() and value.isdecimal()) or len(value) > 5 or not MIN_PORT <= int(value) <= MAX_PORT:
        shown = repr(text) if len(text) <= 40 else f"a value of {len(text)} characters"
        raise ConfigError(f"{where}: expected a port {MIN_PORT}..{MAX_PORT}, got {shown}")
    return int(value)


def choose_base(cli: int | None, dotenv_port: str | None, os_port: str | None) -> int:
    """The base port of the Procfile rule: ``-p``, then ``.env``'s PORT, the environment's, 5000."""
    if cli is not None:
        return cli
    if dotenv_port is not None:
        return parse_base(dotenv_port, "PORT in .env")
    if os_port is not None and os_port != "":
        return parse_base(os_port, "PORT in the environment (the base port; -p overrides it)")
    return DEFAULT_BASE


def overlaps(ranges: Iterable[tuple[str, int, int]]) -> list[tuple[str, str]]:
    """Ranges (name, base, count) that share a port with another: each such range is paired
    with one earlier range (by first port) that it overlaps, ``(earlier name, later name)``
    ordered as the input gives them.

    On one host two such templates would fight for a port (the second one crash-loops on
    "Address already in use"), so ``gaffer start`` refuses them.
    """
    spans = sorted(
        (base, instance_port(base, count), index, name)
        for index, (name, base, count) in enumerate(ranges)
        if count > 0
    )
    found: list[tuple[int, int, str, str]] = []
    reach: tuple[int, int, str] | None = None
    for first, last, index, name in spans:
        if reach is not None and first <= reach[0]:
            a, b = sorted(((reach[1], reach[2]), (index, name)))
            found.append((a[0], b[0], a[1], b[1]))
        if reach is None or last > reach[0]:
            reach = (last, index, name)
    return [(a, b) for _, _, a, b in sorted(found)]
