"""The controller's Prometheus metrics: ``exposition(controller)`` is the body of ``GET /metrics``.

One ``CollectorRegistry`` per controller (never prometheus_client's global one, so two
controllers in one process never mix), made at the first scrape (this module is imported only
then: see ``meters.py``), with one collector that reads everything at each scrape::

    observed as they happen (meters.py)             read from the parts when scraped (StateCollector)
      Cluster pass ──on_reconciled──► Durations     NodeTable      nodes by state, instance rows,
      Store write  ──on_write───────► Durations                    restarts per template
                                                    Cluster        wanted, failed everywhere
                                                    AgentMessages  flaps, refused events
                                                    PeerServer     messages by kind, bad ones
                                                    EventHub       published, dropped, cut off
                                                    samples        CPU and memory (StatCache)

The parts keep plain counts (a dict increment where a message or an event passes); the
collector keeps no second copy of them and reads nothing between scrapes. prometheus_client
writes the text format.

Cardinality is bounded (docs/METRICS.md has the table): nodes by state and the message and
drop families have one series per member of a fixed set (states, protocol kinds, drop
reasons); per-template families cover the first ``max_templates`` templates by name,
per-instance families the first ``max_instances`` sampled instance ids in string order. What a
cap leaves out is counted (``gaffer_metrics_omitted_*``), and the per-template CPU and memory
sums cover every sampled instance of the templates shown.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gaffer import __version__
from gaffer.common import protocol
from gaffer.common.model import UP_STATES, InstanceState, instance_id, parse_instance_id, template_of
from gaffer.controller.admission import DROP_REASONS
from gaffer.controller.cluster import Cluster
from gaffer.controller.liveness import NodeState
from gaffer.controller.meters import Durations, Meters, Sample, Sources
from gaffer.controller.registry import Node
from gaffer.controller.scheduler import FAILED_EVERYWHERE

UP = frozenset(UP_STATES)
FAILED = InstanceState.FAILED.value
RECEIVED_KINDS = protocol.AGENT_TO_CONTROLLER | protocol.CLIENT_TO_CONTROLLER
SENT_KINDS = protocol.CONTROLLER_TO_AGENT | protocol.CONTROLLER_TO_CLIENT


def exposition(controller: Any) -> tuple[bytes, str]:
    """The body and Content-Type of ``GET /metrics``: the text format, from ``controller``'s
    own registry (made on the first call, kept in ``controller.meters``)."""
    meters: Meters = controller.meters
    if meters.registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StateCollector(meters))
        meters.registry = registry
    assert isinstance(meters.registry, CollectorRegistry)
    return generate_latest(meters.registry), CONTENT_TYPE_PLAIN_0_0_4


# ----------------------------------------------------------------------------- pure figures


@dataclass
class TemplateFigures:
    """One template's figures at a scrape."""

    wanted: int = 0
    running: int = 0
    ready: int = 0
    failed: set[str] = field(default_factory=set)
    cpu: float = 0.0
    memory: int = 0
    sampled: int = 0
    """Instances with a stats sample (none: CPU and memory are unknown, not 0)."""


def template_figures(
    wanted: Mapping[str, int],
    nodes: Iterable[Node],
    failed_everywhere: Iterable[str],
    samples: Iterable[tuple[str, Sample]],
) -> dict[str, TemplateFigures]:
    """Per template in ``wanted``: its wanted count, the instances nodes that are not down
    report up (running, ready or unhealthy), of those the ready ones (serving), and failed
    (one-off runs aside), the ids in ``failed_everywhere`` (failed
    on every eligible node, reported by none), and the CPU (a ratio of one core) and resident
    memory summed over its sampled instances. One pass over the rows."""
    figures = {name: TemplateFigures(wanted=count) for name, count in wanted.items()}
    for node in nodes:
        if node.state is NodeState.DOWN:
            continue
        for row in node.instances.values():
            state = row["state"]
            up = state in UP
            if not up and state != FAILED:
                continue
            one = figures.get(row["template"])
            if one is None or type(row["ordinal"]) is not int:
                continue
            if up:
                one.running += 1
                one.ready += bool(row.get("ready", False))
            else:
                one.failed.add(row["id"])
    for ident in failed_everywhere:
        one = figures.get(template_of(ident))
        if one is not None:
            one.failed.add(ident)
    for ident, sample in samples:
        one = figures.get(template_of(ident))
        if one is not None:
            one.cpu += sample.cpu / 100.0
            one.memory += sample.mem
            one.sampled += 1
    return figures


def first_instances(samples: Iterable[tuple[str, Sample]], cap: int) -> tuple[list[tuple[str, Sample]], int]:
    """The ``cap`` samples with the smallest ids (string order), sorted, and how many others."""
    every = list(samples)
    if len(every) <= cap:
        return sorted(every, key=_ident), 0
    return heapq.nsmallest(cap, every, key=_ident), len(every) - cap


def _ident(item: tuple[str, Sample]) -> str:
    return item[0]


def prune(counts: dict[str, int], keep: Mapping[str, object]) -> None:
    """Forget the counts of templates that no longer exist (so deleted names cannot pile up)."""
    for name in [name for name in counts if name not in keep]:
        del counts[name]


# ----------------------------------------------------------------------------- the collector


class StateCollector(Collector):
    """Reads the controller's state at each scrape (see the module docstring)."""

    def __init__(self, meters: Meters) -> None:
        self._meters = meters

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: a scrape is the only time the state is read."""
        return ()

    def collect(self) -> Iterator[Metric]:
        meters = self._meters
        yield _histogram(
            "gaffer_reconcile_duration_seconds",
            "Wall time of one reconcile pass, from gathering its inputs to its sends.", meters.reconciles,
        )
        yield _histogram(
            "gaffer_store_write_duration_seconds",
            "Time of one committed store write transaction, BEGIN to COMMIT (fsync included).", meters.store_writes,
        )
        src = meters.sources
        if src is None:
            return
        info = GaugeMetricFamily("gaffer_build_info", "The gaffer version this controller runs.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        nodes = GaugeMetricFamily("gaffer_nodes", "Nodes known to the controller, by liveness state.", labels=["state"])
        for state, count in src.nodes.counts().items():
            nodes.add_metric([state], count)
        yield nodes
        yield from self._templates(src)
        yield from self._events(src)
        yield from self._link(src)

    def _templates(self, src: Sources) -> Iterator[Metric]:
        cap = self._meters.caps.max_templates
        cluster = src.cluster
        templates = cluster.templates
        restarts, flaps = src.nodes.restarts, src.agents.flaps
        prune(restarts, templates)
        prune(flaps, templates)
        shown = heapq.nsmallest(cap, templates) if len(templates) > cap else sorted(templates)
        wanted = {name: 0 if templates[name].paused else templates[name].template.numprocesses for name in shown}
        samples = list(src.samples.items())
        figures = template_figures(wanted, src.nodes.nodes.values(), failed_everywhere(cluster), samples)
        families = {
            key: GaugeMetricFamily(f"gaffer_template_{key}", text, labels=["template"])
            for key, text in (
                ("instances_wanted", "Instances the template wants (0 while it is stopped)."),
                ("instances_running", "The template's instances that nodes that are not down report up (ready or not)."),
                ("instances_ready", "The template's instances that nodes that are not down report ready (serving)."),
                ("instances_failed", "The template's instances that gave up (on their node, or on every node)."),
                ("cpu_usage_ratio", "CPU of the template's sampled instances, summed (1.0 is one core busy)."),
                ("resident_memory_bytes", "Resident memory of the template's sampled instances, summed."),
            )
        }
        restart_total = CounterMetricFamily(
            "gaffer_template_restarts", "Restarts of the template's instances seen since the controller started.",
            labels=["template"],
        )
        flap_total = CounterMetricFamily(
            "gaffer_template_flaps", "Flapping suspensions nodes announced for the template since the controller started.",
            labels=["template"],
        )
        for name in shown:
            one = figures[name]
            families["instances_wanted"].add_metric([name], one.wanted)
            families["instances_running"].add_metric([name], one.running)
            families["instances_ready"].add_metric([name], one.ready)
            families["instances_failed"].add_metric([name], len(one.failed))
            if one.sampled:
                families["cpu_usage_ratio"].add_metric([name], one.cpu)
                families["resident_memory_bytes"].add_metric([name], one.memory)
            restart_total.add_metric([name], restarts.get(name, 0))
            flap_total.add_metric([name], flaps.get(name, 0))
        yield from families.values()
        yield restart_total
        yield flap_total
        yield from self._instances(src, samples, len(templates) - len(shown))

    def _instances(self, src: Sources, samples: list[tuple[str, Sample]], templates_omitted: int) -> Iterator[Metric]:
        placement = src.cluster.placement
        kept, omitted = first_instances(samples, self._meters.caps.max_instances)
        labels = ["id", "template", "node"]
        cpu = GaugeMetricFamily(
            "gaffer_instance_cpu_usage_ratio", "CPU of the instance and its children, as last sampled (1.0 is one core busy).",
            labels=labels,
        )
        memory = GaugeMetricFamily(
            "gaffer_instance_resident_memory_bytes", "Resident memory of the instance and its children, as last sampled.",
            labels=labels,
        )
        for ident, sample in kept:
            parsed = parse_instance_id(ident)
            slot = parsed.slot if parsed is not None else None
            values = [ident, template_of(ident), placement.get(slot, "") if slot is not None else ""]
            cpu.add_metric(values, sample.cpu / 100.0)
            memory.add_metric(values, sample.mem)
        yield cpu
        yield memory
        yield GaugeMetricFamily(
            "gaffer_metrics_omitted_templates", "Templates left out of the per-template series (--metrics-max-templates).",
            value=templates_omitted,
        )
        yield GaugeMetricFamily(
            "gaffer_metrics_omitted_instances", "Sampled instances left out of the per-instance series (--metrics-max-instances).",
            value=omitted,
        )

    def _events(self, src: Sources) -> Iterator[Metric]:
        hub, agents = src.hub, src.agents
        yield CounterMetricFamily("gaffer_events_published", "Events the controller numbered and published.", value=hub.published)
        yield CounterMetricFamily(
            "gaffer_events_dropped", "Events the events socket dropped for a subscriber over its high-water mark.",
            value=hub.dropped,
        )
        yield CounterMetricFamily(
            "gaffer_event_subscribers_cut_off", "Local event subscribers cut off for falling behind.",
            value=hub.bus.cut_off,
        )
        refused = CounterMetricFamily(
            "gaffer_agent_events_refused", "Agent events the controller refused to republish, by reason.", labels=["reason"],
        )
        yield _by_label(refused, DROP_REASONS, agents.drops.snapshot()["reasons"])

    def _link(self, src: Sources) -> Iterator[Metric]:
        server = src.server
        for name, text, known, counts in (
            ("gaffer_link_messages_received", "Messages from agents and clients handled, by kind.",
             RECEIVED_KINDS, server.received_kinds),
            ("gaffer_link_messages_sent", "Messages sent to agents and clients, by kind.", SENT_KINDS, server.sent_kinds),
        ):
            yield _by_label(CounterMetricFamily(name, text, labels=["kind"]), known, counts)
        bad = CounterMetricFamily(
            "gaffer_link_bad_messages", "Messages from agents and clients dropped unread, by reason.", labels=["reason"],
        )
        yield _by_label(bad, protocol.REASONS, server.bad.snapshot()["reasons"])


def _histogram(name: str, text: str, durations: Durations) -> HistogramMetricFamily:
    buckets = [(floatToGoString(bound), count) for bound, count in durations.cumulative()]
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=durations.sum)


def _by_label(family: CounterMetricFamily, known: Iterable[str], counts: Mapping[str, int]) -> CounterMetricFamily:
    """One series per known label value (0 until it happens, so ``rate()`` sees the first
    one) and per value seen besides."""
    for label in sorted({*known, *counts}):
        family.add_metric([label], counts.get(label, 0))
    return family


def failed_everywhere(cluster: Cluster) -> list[str]:
    """Ids of the wanted slots that failed on every eligible node (placed nowhere now), as
    ``ps`` shows them."""
    pending = cluster.pending()
    out = []
    for template, ordinal in cluster.failed:
        waiting = pending.get(template)
        if waiting is None or waiting["reason"] != FAILED_EVERYWHERE:
            continue
        if (template, ordinal) in cluster.placement or ordinal > cluster.wanted(template):
            continue
        out.append(instance_id(template, ordinal))
    return out
