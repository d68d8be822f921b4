"""/metrics: the figures (pure), and the exposition of a real Controller over memory channels.

The controller runs on ``MemoryRouter`` with simulated agents and a fake clock (no socket, no
process); the exposition is parsed back with prometheus_client's own parser, so the tests
read what Prometheus would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gaffer.common.model import InstanceRow
from gaffer.controller.controller import Controller
from gaffer.controller.liveness import NodeState
from gaffer.controller.meters import NO_SAMPLES, Caps, Durations
from gaffer.controller.metrics import exposition, first_instances, template_figures
from gaffer.controller.registry import Node
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import template
from tests.unit.test_controller_on_channel import Lab, lab  # noqa: F401 (fixture)


@dataclass(frozen=True)
class FakeSample:
    """A stats sample as ``statcache.Sample`` has it."""

    cpu: float
    mem: int
    children: int = 0
    sampled_at: float = 0.0


class FakeStatCache:
    """The stats cache's interface (``items()``), over a dict."""

    def __init__(self, samples: dict[str, FakeSample]) -> None:
        self.samples = samples

    def items(self):
        return self.samples.items()


def row(ident: str, state: str = "running", restarts: int = 0) -> InstanceRow:
    template, _, ordinal = ident.rpartition(".")
    return InstanceRow(
        id=ident, template=template, ordinal=int(ordinal) if ordinal.isdigit() else ordinal,
        pid=100 if state == "running" else None, state=state, restarts=restarts, started_at=None, spec=None,
    )


def node(name: str, rows: list[InstanceRow], state: NodeState = NodeState.UP) -> Node:
    return Node(name=name, state=state, instances={r["id"]: r for r in rows})


def scrape(controller: Controller) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by (name, sorted labels)."""
    body, content_type = exposition(controller)
    assert content_type.startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class TestTemplateFigures:
    def test_running_and_failed_come_from_nodes_that_are_not_down(self):
        """Running and failed count the rows of live nodes; a down node's rows and one-off runs do not count."""
        nodes = [
            node("a", [row("web.1"), row("web.2", "failed"), row("web.run-1"), row("db.1", "backoff")]),
            node("b", [row("web.3"), row("web.4", "starting")], NodeState.SUSPECT),
            node("c", [row("web.5")], NodeState.DOWN),
        ]
        figures = template_figures({"web": 5, "db": 1}, nodes, [], [])
        assert (figures["web"].wanted, figures["web"].running, sorted(figures["web"].failed)) == (5, 2, ["web.2"])
        assert (figures["db"].running, figures["db"].failed) == (0, set())

    def test_failed_everywhere_adds_to_failed_once(self):
        """A slot failed on every node counts as failed, once, even if a node still reports it failed."""
        nodes = [node("a", [row("web.1", "failed")])]
        figures = template_figures({"web": 3}, nodes, ["web.1", "web.3"], [])
        assert sorted(figures["web"].failed) == ["web.1", "web.3"]

    def test_samples_sum_per_template_as_a_ratio_of_one_core(self):
        """CPU percent becomes a ratio of one core; memory is summed in bytes; unknown templates are skipped."""
        samples = [("web.1", FakeSample(50.0, 1000)), ("web.2", FakeSample(150.0, 24)), ("gone.1", FakeSample(10.0, 1))]
        figures = template_figures({"web": 2}, [], [], samples)
        assert (figures["web"].cpu, figures["web"].memory) == (2.0, 1024)
        assert "gone" not in figures

    def test_templates_not_wanted_are_left_out(self):
        """Rows of a template that is not shown (deleted, or past the cap) add nothing."""
        figures = template_figures({"web": 1}, [node("a", [row("other.1")])], ["other.2"], [])
        assert set(figures) == {"web"}


class TestDurations:
    def test_each_duration_counts_in_the_first_bucket_it_fits_and_every_later_one(self):
        """Buckets are cumulative: a duration equal to a bound counts in that bound's bucket."""
        durations = Durations((0.1, 1.0))
        for seconds in (0.05, 0.1, 0.5, 3.0):
            durations.observe(seconds)
        assert durations.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
        assert (durations.count, durations.sum) == (4, 3.65)

    def test_bounds_must_ascend(self):
        """Unsorted, repeated or no bounds are refused at once."""
        for bounds in ((1.0, 0.1), (0.1, 0.1), ()):
            with pytest.raises(ValueError, match="ascending"):
                Durations(bounds)


class TestFirstInstances:
    def test_the_cap_keeps_the_smallest_ids_and_counts_the_rest(self):
        """Over the cap, the first ids in string order are kept, sorted, and the rest counted."""
        samples = [(f"web.{i}", FakeSample(1.0, 1)) for i in (5, 1, 3, 2, 4)]
        kept, omitted = first_instances(samples, 2)
        assert [ident for ident, _ in kept] == ["web.1", "web.2"]
        assert omitted == 3

    def test_under_the_cap_everything_is_kept_in_order(self):
        """Under the cap nothing is omitted."""
        kept, omitted = first_instances([("b.1", FakeSample(0, 0)), ("a.1", FakeSample(0, 0))], 10)
        assert ([ident for ident, _ in kept], omitted) == (["a.1", "b.1"], 0)


class TestExposition:
    async def test_nodes_by_state_list_every_state(self, lab: Lab):
        """gaffer_nodes has a series for every liveness state, zeros included."""
        samples = scrape(lab.controller)
        assert {state.value: value(samples, "gaffer_nodes", state=state.value) for state in NodeState} == {
            "up": 3, "suspect": 0, "down": 0,
        }

    async def test_instances_wanted_running_and_failed_per_template(self, lab: Lab):
        """Per template: wanted from the desired state, running from what agents report, and
        failed counting an instance that gave up on every node."""
        cluster = lab.controller.cluster
        assert cluster is not None
        await cluster.apply([template("web", numprocesses=6), template("idle", numprocesses=0)])
        await lab.settle()
        for _ in range(len(lab.agents)):  # web.1 fails on each node in turn
            holder = next(a for a in lab.agents if "web.1" in a.rows)
            holder.rows["web.1"]["state"], holder.rows["web.1"]["pid"] = "failed", None
            holder.report()
            await lab.settle()
        assert not any("web.1" in a.rows for a in lab.agents)
        samples = scrape(lab.controller)
        assert value(samples, "gaffer_template_instances_wanted", template="web") == 6
        assert value(samples, "gaffer_template_instances_running", template="web") == 5
        assert value(samples, "gaffer_template_instances_failed", template="web") == 1
        assert value(samples, "gaffer_template_instances_wanted", template="idle") == 0

    async def test_ready_and_unhealthy_instances_count_as_running_and_only_ready_as_ready(self, lab: Lab):
        """An instance whose check passes (``ready``) or fails (``unhealthy``) is still up:
        running counts both; ready counts only the serving ones, in /metrics and in status (issue 12)."""
        cluster = lab.controller.cluster
        assert cluster is not None
        await cluster.apply([template("web", numprocesses=3)])
        await lab.settle()
        states = iter([("ready", True), ("unhealthy", False), ("running", False)])
        for agent in lab.agents:
            for ident in sorted(agent.rows):
                agent.rows[ident]["state"], agent.rows[ident]["ready"] = next(states)
            agent.report()
        await lab.settle()
        samples = scrape(lab.controller)
        assert value(samples, "gaffer_template_instances_running", template="web") == 3
        assert value(samples, "gaffer_template_instances_ready", template="web") == 1
        assert {k: lab.controller.status()["instances"][k] for k in ("running", "ready")} == {"running": 3, "ready": 1}

    async def test_restarts_count_what_rows_grew_by_and_never_go_down(self, lab: Lab):
        """Restarts add what each reported row grew by; a row reset to 0 (a new agent) takes nothing away."""
        cluster = lab.controller.cluster
        assert cluster is not None
        await cluster.apply([template("web", numprocesses=3)])
        await lab.settle()
        agent = next(a for a in lab.agents if a.rows)
        ident = sorted(agent.rows)[0]
        for restarts in (2, 5, 0):
            agent.rows[ident]["restarts"] = restarts
            agent.report()
            await lab.settle()
        assert value(scrape(lab.controller), "gaffer_template_restarts_total", template="web") == 5

    async def test_flaps_count_the_suspensions_agents_announce(self, lab: Lab):
        """Each admitted proc.<t>.flap event counts one flap of its template."""
        cluster = lab.controller.cluster
        assert cluster is not None
        await cluster.apply([template("web", numprocesses=3)])
        await lab.settle()
        agent = next(a for a in lab.agents if a.rows)
        row = next(iter(agent.rows.values()))
        flap = {"node": agent.name, "template": "web", "id": row["id"], "ordinal": row["ordinal"],
                "pid": None, "ts": 1.0, "retry_in": 5.0, "retries": 1, "max_retry": 3}
        agent.send("events", {"events": [
            {"seq": 1, "topic": "proc.web.flap", "ts": 1.0, "data": flap},
            {"seq": 2, "topic": "proc.web.flap", "ts": 2.0, "data": {**flap, "retries": 2}},
            {"seq": 2, "topic": "proc.web.flap", "ts": 2.0, "data": {**flap, "retries": 2}},
        ]})
        await lab.settle()
        samples = scrape(lab.controller)
        assert value(samples, "gaffer_template_flaps_total", template="web") == 2
        assert value(samples, "gaffer_events_published_total") >= 2

    async def test_deleted_templates_leave_no_series_behind(self, lab: Lab):
        """A deleted template's series, restarts and flaps included, are gone at the next scrape."""
        cluster = lab.controller.cluster
        assert cluster is not None
        await cluster.apply([template("web", numprocesses=1)])
        await lab.settle()
        agent = next(a for a in lab.agents if a.rows)
        agent.rows["web.1"]["restarts"] = 1
        agent.report()
        await lab.settle()
        await cluster.delete("web")
        await lab.settle()
        names = {name for name, labels in scrape(lab.controller) if ("template", "web") in labels}
        assert names == set()
        assert lab.controller.nodes.restarts == {}

    async def test_link_messages_by_kind_and_bad_ones_by_reason(self, lab: Lab):
        """Messages are counted by kind both ways; a malformed one is counted by its reason."""
        lab.agents[0].transmit(b"\xc1 not msgpack")
        await lab.settle()
        samples = scrape(lab.controller)
        assert value(samples, "gaffer_link_messages_received_total", kind="hello") == 3
        assert value(samples, "gaffer_link_messages_sent_total", kind="welcome") == 3
        assert value(samples, "gaffer_link_bad_messages_total", reason="not_msgpack") == 1

    async def test_known_kinds_and_reasons_have_series_before_they_happen(self, lab: Lab):
        """Every protocol kind and drop reason has a series from the start, at 0 until it happens."""
        samples = scrape(lab.controller)
        assert value(samples, "gaffer_link_messages_received_total", kind="request") == 0
        assert value(samples, "gaffer_link_messages_sent_total", kind="reply") == 0
        assert value(samples, "gaffer_link_bad_messages_total", reason="too_large") == 0
        assert value(samples, "gaffer_agent_events_refused_total", reason="not_assigned") == 0

    async def test_reconcile_and_store_writes_are_timed(self, lab: Lab):
        """A reconcile pass and the store writes it makes land in their histograms."""
        before = scrape(lab.controller)
        cluster = lab.controller.cluster
        assert cluster is not None
        await cluster.apply([template("web", numprocesses=2)])
        await lab.settle()
        after = scrape(lab.controller)
        for name in ("gaffer_reconcile_duration_seconds_count", "gaffer_store_write_duration_seconds_count"):
            assert value(after, name) > value(before, name)
        assert value(after, "gaffer_reconcile_duration_seconds_bucket", le="+Inf") == value(
            after, "gaffer_reconcile_duration_seconds_count",
        )

    async def test_two_controllers_keep_their_own_registries(self, lab: Lab, tmp_path: Path):
        """A second controller in the process starts from zero: no global registry is shared."""
        first = scrape(lab.controller)
        other = Controller(ControllerSettings(data_dir=tmp_path / "other"))
        alone = scrape(other)
        assert other.meters.registry is not lab.controller.meters.registry
        assert value(alone, "gaffer_reconcile_duration_seconds_count") == 0
        assert value(first, "gaffer_link_messages_received_total", kind="hello") == 3


class TestPerInstance:
    async def test_samples_become_series_per_instance_with_the_node_placed_on(self, lab: Lab):
        """Each sampled instance gets CPU and memory series labelled with its id, template and node."""
        cluster = lab.controller.cluster
        assert cluster is not None
        await cluster.apply([template("web", numprocesses=2)])
        await lab.settle()
        stats = FakeStatCache({"web.1": FakeSample(25.0, 4096), "web.2": FakeSample(75.0, 1024)})
        watch_with(lab, stats, Caps(max_instances=10))
        samples = scrape(lab.controller)
        where = cluster.placement[("web", 1)]
        assert value(samples, "gaffer_instance_cpu_usage_ratio", id="web.1", template="web", node=where) == 0.25
        assert value(samples, "gaffer_instance_resident_memory_bytes", id="web.1", template="web", node=where) == 4096
        assert value(samples, "gaffer_template_cpu_usage_ratio", template="web") == 1.0
        assert value(samples, "gaffer_template_resident_memory_bytes", template="web") == 5120
        assert value(samples, "gaffer_metrics_omitted_instances") == 0

    async def test_without_samples_cpu_and_memory_are_absent_not_zero(self, lab: Lab):
        """A template with no sampled instance has no CPU or memory series (unknown is not 0)."""
        cluster = lab.controller.cluster
        assert cluster is not None
        await cluster.apply([template("web", numprocesses=2)])
        await lab.settle()
        names = {name for name, _ in scrape(lab.controller)}
        assert "gaffer_template_instances_running" in names
        assert not names & {"gaffer_template_cpu_usage_ratio", "gaffer_instance_cpu_usage_ratio",
                            "gaffer_template_resident_memory_bytes"}

    async def test_instances_past_the_cap_are_omitted_and_counted(self, lab: Lab):
        """Past the cap, per-instance series stop and the omitted count says how many; template sums keep them all."""
        cluster = lab.controller.cluster
        assert cluster is not None
        await cluster.apply([template("web", numprocesses=3)])
        await lab.settle()
        stats = FakeStatCache({f"web.{i}": FakeSample(10.0, 100) for i in (1, 2, 3)})
        watch_with(lab, stats, Caps(max_instances=1))
        samples = scrape(lab.controller)
        ids = {dict(labels)["id"] for name, labels in samples if name == "gaffer_instance_cpu_usage_ratio"}
        assert ids == {"web.1"}
        assert value(samples, "gaffer_metrics_omitted_instances") == 2
        assert value(samples, "gaffer_template_resident_memory_bytes", template="web") == 300

    async def test_templates_past_the_cap_are_omitted_and_counted(self, lab: Lab):
        """Past the template cap, only the first templates by name get series; the rest are counted."""
        cluster = lab.controller.cluster
        assert cluster is not None
        await cluster.apply([template(name, numprocesses=1) for name in ("c", "a", "b")])
        await lab.settle()
        watch_with(lab, NO_SAMPLES, Caps(max_templates=2))
        samples = scrape(lab.controller)
        shown = {dict(labels)["template"] for name, labels in samples if name == "gaffer_template_instances_wanted"}
        assert shown == {"a", "b"}
        assert value(samples, "gaffer_metrics_omitted_templates") == 1


def watch_with(lab: Lab, samples: object, caps: Caps) -> None:
    """Have the controller's metrics read ``samples`` (a stats cache) under ``caps``."""
    meters = lab.controller.meters
    assert meters.sources is not None
    meters.watch(replace(meters.sources, samples=samples), caps)
