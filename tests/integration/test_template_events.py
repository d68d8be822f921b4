"""A paused or failed template is announced as what happened, not as deleted (issue 9, item 7)."""

from __future__ import annotations

from gaffer.testing import next_event
from inproc import spec


async def test_stop_and_start_are_announced_as_stopped_and_started(cluster):
    """`stop` publishes template.<t>.stopped and `start` template.<t>.started to subscribers."""
    await cluster.start_controller()
    await cluster.start_agent("n1")
    events = cluster.controller.hub.bus.subscribe("template.ctl.")
    await cluster.call("apply", templates=[spec("ctl", 1)])
    await cluster.wait_running(1, "ctl")
    await cluster.call("stop", name="ctl")
    stopped = await next_event(events, "template.ctl.", where=lambda e: not e.topic.endswith(".created"))
    assert stopped.topic == "template.ctl.stopped" and stopped.data["name"] == "ctl"
    await cluster.call("start", name="ctl")
    started = await next_event(events, "template.ctl.")
    assert started.topic == "template.ctl.started"


async def test_a_template_that_failed_here_is_announced_as_failed_not_deleted(cluster):
    """When every instance on a node gave up and the controller takes the template away, the
    node's apps see template.<t>.failed (they saw template.<t>.deleted)."""
    await cluster.start_controller()
    agent = await cluster.start_agent("n1")
    events = agent.manager.bus.subscribe(("template.crash.deleted", "template.crash.failed"))
    template = {
        **spec("crash", 1), "cmd": "sh", "args": ["-c", "exit 3"],
        "flapping": {"attempts": 2, "window": 30, "retry_in": 0.1, "max_retry": 1},
    }
    await cluster.call("apply", templates=[template])
    gone = await next_event(events, "template.crash.", timeout=15)
    assert gone.topic == "template.crash.failed"
    assert (await cluster.call("get", name="crash"))["name"] == "crash"


async def test_a_paused_template_is_announced_stopped_on_its_node_not_deleted(cluster):
    """The node's apps, webhooks and console see template.<t>.stopped on pause and
    template.<t>.started on resume (they saw template.<t>.deleted), and it runs again."""
    await cluster.start_controller()
    agent = await cluster.start_agent("n1")
    await cluster.call("apply", templates=[spec("ctl", 2)])
    await cluster.wait_running(2, "ctl")
    events = agent.manager.bus.subscribe("template.ctl.")
    await cluster.call("stop", name="ctl")
    stopped = await next_event(events, "template.ctl.", timeout=15)
    assert stopped.topic == "template.ctl.stopped"
    assert [t.name for t in agent.manager.templates()] == ["ctl"]
    await cluster.call("start", name="ctl")
    started = await next_event(events, "template.ctl.", timeout=15)
    assert started.topic == "template.ctl.started"
    await cluster.wait_running(2, "ctl")
