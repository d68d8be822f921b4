"""The ``PORT`` each instance gets: the rule honcho and foreman use, so a Procfile app moves over.

A Procfile's process types are numbered in file order from 0; type ``i`` owns the block of 100
ports from ``base + 100 * i``, and its instance with ordinal ``n`` (1, 2, ...) gets the ``n - 1``-th
port of the block. The base is 5000 unless ``gaffer start -p`` says otherwise. A template that
asks for a port with a base of its own gets ``base + n - 1``. Ordinals are stable (the controller
places ordinals 1..count), so an instance keeps its port across restarts and rescheduling.
"""

from __future__ import annotations

DEFAULT_BASE = 5000
BLOCK = 100
"""Ports reserved per Procfile process type, so ``web=2`` and ``worker=3`` never overlap."""
MAX_PORT = 65535


def procfile_base(base: int, type_position: int) -> int:
    """The first port of the ``type_position``-th process type (0-based, in Procfile order)."""
    return base + BLOCK * type_position


def instance_port(base: int, ordinal: int) -> int:
    """The port of the instance with ``ordinal`` (1-based) of a template whose ports start at ``base``."""
    return base + ordinal - 1
