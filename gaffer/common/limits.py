"""Every bound gaffer puts on the numbers and names that come in, in one place.

Why bounds at all: one unbounded number is enough to take a daemon down. A count of 2**63 made
the controller allocate until ``MemoryError`` (and again after every restart, since it was
stored); a NaN wait made a loop spin (``NaN < deadline`` is never true, so it never ended).
Every count, size and duration that crosses a boundary (a file, the wire, the command line) is
checked against a limit here, and NaN and infinities are refused everywhere.

Two kinds of limit:

- **format limits** (``MAX_*``): what gaffer accepts at all, the same on every host. A value
  past one is an error wherever it appears.
- **operator limits** (``DEFAULT_MAX_*``): defaults of settings a controller may change
  (``--max-per-template``, ``--max-instances``), checked where the desired state changes.
"""

from __future__ import annotations

import math
import re

MAX_COUNT = 1_000_000
"""Instances of one template, the format limit (``numprocesses``, ``scale``, ``-c NAME=N``)."""
DEFAULT_MAX_PER_TEMPLATE = 100_000
"""A controller's default cap on one template's count (``--max-per-template``)."""
DEFAULT_MAX_INSTANCES = 1_000_000
"""A controller's default cap on the sum of every template's count (``--max-instances``)."""
MAX_TOTAL = 10_000_000
"""The largest ``--max-instances`` a controller may be given."""

MAX_DURATION = 30 * 86_400.0
"""Seconds, for template durations (``graceful_timeout``, ``startsecs``, flapping windows)."""
MAX_WAIT = 86_400.0
"""Seconds, for what a request or a command line waits (``--timeout``, ``wait``, ``drain``)."""
MAX_HEARTBEAT = 3_600.0
MIN_HEARTBEAT = 0.01
MIN_STATS_INTERVAL = 0.5
MAX_STATS_INTERVAL = 3_600.0
"""Bounds of an agent's ``--stats-interval``: sampling a big host costs tens of milliseconds,
so not more than twice a second."""
MAX_MISSES = 1_000
"""Heartbeats missed before suspect / down."""

MAX_NAME = 64
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
"""Templates and nodes: letters, digits, ``-`` and ``_``, no dots (ids and topics use them)."""
NAME_RULE = "letters, digits, '-' and '_' (no dots), starting with a letter or digit, at most 64 characters"
LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_./-]{0,62}[A-Za-z0-9])?\Z")
"""Label keys of a node and of a template's placement selector."""

MAX_LINES = 100_000
"""Lines of output one request may ask for."""
MAX_ARGS = 4_096
"""Arguments of one ``run``."""
MAX_BACKUPS = 10_000
"""Store backups a controller keeps (``--backup-keep``)."""
DEFAULT_EVENT_BUFFER = 100_000
"""Events a controller holds for replay by default (``--event-buffer``)."""
MAX_EVENT_BUFFER = 10_000_000
"""The largest ``--event-buffer``."""
DEFAULT_METRICS_TEMPLATES = 1_000
"""Templates given per-template series on /metrics by default (``--metrics-max-templates``)."""
DEFAULT_METRICS_INSTANCES = 1_000
"""Instances given per-instance series on /metrics by default (``--metrics-max-instances``)."""
MAX_METRICS_SERIES = 1_000_000
"""The largest of those two settings."""
MAX_LOG_BYTES = 1 << 40
MAX_LOG_BACKUPS = 1_000
MAX_ID = 2**32 - 2
"""uid / gid numbers (``(uid_t) -1`` means "unchanged" to the kernel)."""
MAX_INT = 2**63 - 1
"""The largest integer SQLite and msgpack store: the ceiling of any integer field without its own."""


def finite(value: object) -> bool:
    """An int or float (never a bool) that is neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False

RUN_LEASE = 10.0
"""Seconds an attached one-off run (``gafferctl run``) outlives a vanished client, counted from
its last renewal: the default of ``--lease``. Here, not in ``cli/attach``, so gafferctl reads
it without importing asyncio."""
