"""What the controller measures for /metrics while it runs, without prometheus_client.

``Meters`` is what the controller carries: two ``Durations`` (reconcile passes, store writes),
observed as they happen, and the ``Sources`` (the parts) and ``Caps`` that ``metrics.py``
reads at each scrape. prometheus_client (about 45 ms and a dozen modules to import: http.server,
urllib, tempfile...) is imported by ``metrics.py`` only, on the first scrape, so a controller,
``gaffer start`` and a controller without ``--http`` never pay for it.

``Durations`` is a histogram's bookkeeping (counts per bucket, sum); ``metrics.py`` turns it
into a Prometheus histogram with prometheus_client, which writes the format.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

from gaffer.common.limits import DEFAULT_METRICS_INSTANCES, DEFAULT_METRICS_TEMPLATES

if TYPE_CHECKING:
    from gaffer.controller.agents import AgentMessages
    from gaffer.controller.cluster import Cluster
    from gaffer.controller.hub import EventHub
    from gaffer.controller.registry import NodeTable
    from gaffer.controller.server import PeerServer

RECONCILE_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: a pass over a few templates takes about a millisecond, 100,000 slots seconds."""
STORE_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: a write is one fsynced SQLite transaction, a millisecond or so on a quiet disk."""


class Durations:
    """Durations counted into buckets: how many were at most each bound, and their sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"bounds must be distinct and ascending, got {bounds}")
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        """Per bucket, not cumulative; the last one is above every bound."""
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(bound, durations at most that long) for each bound, then (inf, every one)."""
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts):
            running += count
            out.append((bound, running))
        return out


class Sample(Protocol):
    """What the metrics read of one stats sample (``statcache.Sample``)."""

    @property
    def cpu(self) -> float: ...  # percent of one core

    @property
    def mem(self) -> int: ...  # resident bytes


class Samples(Protocol):
    """The stats the agents push, by instance id (``statcache.StatCache``)."""

    def items(self) -> Iterable[tuple[str, Sample]]: ...


class NoSamples:
    """No stats cache: no per-instance series."""

    def items(self) -> Iterable[tuple[str, Sample]]:
        return ()


NO_SAMPLES = NoSamples()


@dataclass(frozen=True)
class Caps:
    """How many templates and instances get series of their own (``--metrics-max-*``)."""

    max_templates: int = DEFAULT_METRICS_TEMPLATES
    max_instances: int = DEFAULT_METRICS_INSTANCES


@dataclass(frozen=True)
class Sources:
    """The controller's parts the metrics read at each scrape."""

    nodes: NodeTable
    cluster: Cluster
    agents: AgentMessages
    server: PeerServer
    hub: EventHub
    samples: Samples = NO_SAMPLES


class Meters:
    """The durations the controller observes, and what its metrics read at a scrape."""

    def __init__(self) -> None:
        self.reconciles = Durations(RECONCILE_BOUNDS)
        self.store_writes = Durations(STORE_BOUNDS)
        self.sources: Sources | None = None
        """The parts (None until the controller is wired: then only the durations show)."""
        self.caps = Caps()
        self.registry: object | None = None
        """The controller's own prometheus_client registry, made by the first scrape
        (``metrics.exposition``)."""

    def watch(self, sources: Sources, caps: Caps) -> None:
        """Read ``sources`` under ``caps`` at every scrape from now on."""
        self.sources = sources
        self.caps = caps
