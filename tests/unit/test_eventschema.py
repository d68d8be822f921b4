"""Every event gaffer publishes fits its topic's schema, and every schema refuses a wrong field.

The events are the real ones: a Manager driven on fakes (every ``proc.``, ``template.`` and
``output.`` kind it can publish), the same events as the agent link forwards them and the
controller stamps them, skip markers from the follow budget, and a real Controller with
simulated agents in memory (its ``node.``, ``template.`` and cluster-wide ``proc.`` events).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gaffer.agent.adoption import Found
from gaffer.agent.checks import Checks
from gaffer.agent.follow import Followers, Limit
from gaffer.agent.lease import Lease
from gaffer.agent.manager import Manager
from gaffer.common import eventschema
from gaffer.common.bus import Event, Subscription
from gaffer.common.schema import Invalid
from gaffer.controller.admission import stamped
from gaffer.controller.reconcile import Announce
from gaffer.testing import template
from gaffer.testing.clock import FakeClock
from gaffer.testing.probes import FakeProbes
from gaffer.testing.process import FakeProcesses
from tests.unit.test_controller_on_channel import LIVENESS, Lab, lab  # noqa: F401 (fixture)

FLAPS = {"attempts": 2, "window": 30, "retry_in": 5, "max_retry": 1}


def drain(sub: Subscription) -> list[Event]:
    events = []
    while (event := sub.get_nowait()) is not None:
        events.append(event)
    return events


def as_forwarded(data: dict[str, Any]) -> dict[str, Any]:
    """An agent event as the controller republishes it: the link drops ``node`` (and output's
    ``lines``, the count for local subscribers), admission stamps the sender's."""
    return stamped({k: v for k, v in data.items() if k not in ("node", "lines")}, "n1")


async def manager_events() -> list[Event]:
    """Drive a Manager on fakes through every kind of event it publishes."""
    clock = FakeClock()
    procs = FakeProcesses(clock)
    manager = Manager(node="n1", clock=clock, processes=procs, lease=Lease(), environ={"PATH": "/bin"})
    sub = manager.bus.subscribe("", maxsize=100_000)
    web = template("web", numprocesses=2, startsecs=1)
    manager.add(web)
    clock.run()
    clock.advance(1)
    procs.last("web.1").emit("out", b"hello\nworld\n")
    procs.last("web.1").exit(3)                          # proc.exit (status)
    procs.last("web.2").signal(9)                        # proc.exit (signal)
    manager.apply(template("web", numprocesses=3, startsecs=1))           # scaled
    manager.apply(template("web", numprocesses=3, startsecs=1, env={"A": "1"}))  # updated
    clock.advance(5)
    manager.scale("web", 1)                              # proc.stop
    manager.stop("web")
    manager.start("web")
    clock.run()
    manager.add(template("crash", flapping=FLAPS))
    clock.run()
    for _ in range(4):                                   # proc.flap, then proc.failed
        procs.last("crash.1").exit(1)
        clock.advance(10)
    await clock.drive(manager.remove("crash"))           # template.failed
    procs.fail("/nope")
    manager.add(template("broken", cmd="/nope", restart="never"))          # exit with error
    manager.add(template("job", numprocesses=0))
    inst = manager.run("job", ["x"])
    procs.last("job.run-1").exit(0)                      # proc.exit, oneoff
    await inst.done
    await clock.drive(manager.remove("web"))             # template.deleted
    return drain(sub) + adoption_events() + await health_events()


async def health_events() -> list[Event]:
    """A checked instance passes (``ready``), then fails past its threshold (``unhealthy``)."""
    clock = FakeClock()
    probes = FakeProbes()
    manager = Manager(node="n1", clock=clock, processes=FakeProcesses(clock), environ={"PATH": "/bin"},
                      checks=Checks(clock, probes=probes))
    sub = manager.bus.subscribe("proc.")
    manager.add(template("api", health={"type": "exec", "command": "true", "interval": 1, "timeout": 1,
                                        "failure_threshold": 1}, restart_on_unhealthy=False))
    clock.advance(0)                                     # the first check, due once it is up
    await clock.settle()
    probes.set("api.1", False, "down")
    clock.advance(1)
    await clock.settle()
    await manager.aclose()
    return drain(sub)


def adoption_events() -> list[Event]:
    """An adopted process (spawns held, as while an agent starts): ``spawn`` with ``adopted``."""
    clock = FakeClock()
    manager = Manager(node="n1", clock=clock, processes=FakeProcesses(clock), lease=Lease(held=True),
                      environ={"PATH": "/bin"})
    sub = manager.bus.subscribe("proc.")
    kept = template("kept")
    manager.add(kept)
    clock.run()
    found = Found(pid=4242, instance_id="kept.1", template="kept", ordinal=1, started_at=5.0,
                  spec=kept.spec_hash())
    assert manager.adopt(found, {})
    return drain(sub)


async def test_every_event_a_manager_publishes_fits_the_agent_and_cluster_schemas():
    """Each kind a Manager publishes fits AGENT; proc. and output. also fit CLUSTER once
    forwarded (node dropped by the link, stamped by the controller)."""
    events = await manager_events()
    seen = set()
    for event in events:
        eventschema.check_event(event.topic, event.data, eventschema.AGENT)
        if event.topic.startswith(("proc.", "output.")):
            eventschema.check_event(event.topic, as_forwarded(event.data))
        seen.add(eventschema.topic_key(event.topic))
    assert ("output", "err") not in seen
    assert seen | {("output", "err")} == set(eventschema.AGENT), "a kind was never published"
    assert any(e.data.get("adopted") for e in events) and any(e.data.get("oneoff") for e in events)
    assert any(e.data.get("error") for e in events) and any(e.data.get("signal") for e in events)


def test_skip_markers_of_the_follow_budget_fit_the_output_schema():
    """The link's skipped-lines markers (``skipped``, ``skipped_bytes``) fit once stamped."""
    followers = Followers(stream=Limit(lines=2, bytes=1_000, burst=1.0))
    data = {"node": "n1", "id": "web.1", "template": "web", "stream": "err", "ts": 5.0, "line": 1,
            "text": "\n".join(str(i) for i in range(10))}
    out = followers.offer("output.web.1.err", data, 0.0) + followers.markers(1.0) + followers.markers(2.0)
    kinds = {"text" in d or "skipped" in d for _, d in out}
    assert kinds == {True} and any("skipped" in d for _, d in out)
    for topic, payload in out:
        eventschema.check_event(topic, as_forwarded(payload))


def test_the_controllers_cluster_wide_failure_fits():
    """proc.<t>.failed of an ordinal failed on every node (``scope`` cluster, no node)."""
    payload = Announce(("web", 2), ("n1", "n2")).payload()
    eventschema.check_event("proc.web.failed", payload)


async def test_every_event_the_controller_publishes_fits_the_cluster_schema(lab: Lab):  # noqa: F811
    """Node liveness, drain, and every template change, as a real Controller publishes them."""
    controller = lab.controller
    cluster = controller.cluster
    assert cluster is not None
    sub = controller.hub.bus.subscribe("", maxsize=100_000)
    await lab.run_for(LIVENESS.startup_grace)
    await cluster.apply([template("web", numprocesses=3)])
    await cluster.apply([template("web", numprocesses=3, env={"A": "1"})])
    await cluster.scale("web", 5)
    await cluster.set_paused("web", True)
    await cluster.set_paused("web", False)
    await cluster.restart("web")
    await cluster.drain("n2")
    await lab.settle()
    lab.agents[1].silence()
    await lab.run_for(LIVENESS.down_after)
    lab.agents[1].reconnect()
    await lab.run_for(LIVENESS.interval)
    await cluster.delete("web")
    await lab.settle()
    events = drain(sub)
    for event in events:
        eventschema.check_event(event.topic, event.data)
    seen = {eventschema.topic_key(e.topic) for e in events}
    wanted = {("template", k) for k in ("created", "updated", "scaled", "stopped", "started", "deleted")}
    assert wanted | {("node", "up"), ("node", "suspect"), ("node", "down"), ("node", "drain")} <= seen


# ---------------------------------------------------------------- refusals

GOOD = {
    "proc.web.spawn": {"node": "n1", "template": "web", "id": "web.1", "ordinal": 1, "pid": 10, "ts": 1.0},
    "output.web.1.out": {"node": "n1", "id": "web.1", "template": "web", "stream": "out", "text": "hi",
                         "line": 1, "pid": 10, "ts": 1.0},
    "node.n1.events_lost": {"node": "n1", "count": 3},
}


@pytest.mark.parametrize(
    ("topic", "change", "message"),
    [
        ("proc.web.spawn", {"pid": "10"}, 'proc.web.spawn: .pid: must be an integer in 1..2147483647, got "10"'),
        ("proc.web.spawn", {"pdi": 10}, "proc.web.spawn: .pdi: unknown field (did you mean 'pid'?)"),
        ("proc.web.spawn", {"ordinal": True}, "proc.web.spawn: .ordinal: must be an integer >= 1 or a non-empty string"),
        ("output.web.1.out", {"line": 0}, "output.web.1.out: .line: must be an integer >= 1, got 0"),
        ("output.web.1.out", {"stream": "log"}, 'output.web.1.out: .stream: must be one of "out", "err"'),
        ("node.n1.events_lost", {"count": 0}, "node.n1.events_lost: .count: must be an integer >= 1"),
        ("node.n1.events_lost", {"node": None}, "node.n1.events_lost: .node: must be a name"),
    ],
)
def test_a_wrong_field_is_refused_with_its_name(topic, change, message):
    """The refusal names the topic, the field and what it must be."""
    data = {**GOOD[topic], **change}
    with pytest.raises(Invalid) as caught:
        eventschema.check_event(topic, data)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("key", sorted(set(eventschema.CLUSTER) | set(eventschema.AGENT)))
def test_each_schema_refuses_a_missing_and_an_unknown_field(key):
    """Whatever the topic, a map without its fields or with a stray one does not pass."""
    for table in (eventschema.CLUSTER, eventschema.AGENT):
        check = table.get(key)
        if check is None:
            continue
        topic = f"{key[0]}.x.{key[1]}"
        with pytest.raises(Invalid, match="is required"):
            eventschema.check_event(topic, {}, table)
        with pytest.raises(Invalid, match="must be a map"):
            eventschema.check_event(topic, ["not", "a", "map"], table)


def test_an_unknown_topic_is_refused():
    """A topic whose family and kind have no schema is named as such."""
    assert eventschema.problem("proc.web.explode", {}) == "proc.web.explode: no such topic (family and kind unknown)"
    assert eventschema.problem("node.n1.events_lost", copy.deepcopy(GOOD["node.n1.events_lost"])) is None


async def test_the_controller_drops_an_agent_event_whose_payload_does_not_fit(lab: Lab, caplog):  # noqa: F811
    """A malformed payload about the node's own instance is dropped, counted as bad_payload
    and logged once with the field; a good one beside it is published."""
    controller = lab.controller
    assert controller.cluster is not None and controller.agents is not None
    await controller.cluster.apply([template("web", numprocesses=3)])
    await lab.settle()
    agent = lab.agents[0]
    ident = sorted(agent.rows)[0]
    sub = controller.hub.bus.subscribe("proc.web.")
    good = {"template": "web", "id": ident, "ordinal": int(ident.split(".")[1]), "pid": 77, "ts": 1.0}
    agent.send("events", {"events": [
        {"seq": 1, "topic": "proc.web.spawn", "ts": 1.0, "data": {**good, "pid": "seventy-seven"}},
        {"seq": 2, "topic": "proc.web.running", "ts": 1.0, "data": good},
    ]})
    await lab.settle()
    assert [e.topic for e in drain(sub)] == ["proc.web.running"]
    drops = controller.agents.drops.snapshot()
    assert drops["reasons"] == {"bad_payload": 1}
    said = [r.getMessage() for r in caplog.records if "bad_payload" in r.getMessage()]
    assert len(said) == 1 and "proc.web.spawn: .pid: must be an integer" in said[0]
