"""Crash loops are per instance, on real processes (issue 12).

An outside killer (as an OOM killer might) hitting random instances of a healthy template must
never suspend it, and one instance that exits at once must be suspended and failed alone, its
siblings running and restarting as usual.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal

import pytest

from gaffer.agent.manager import Manager
from gaffer.testing import next_event, template

KILLS = 30
KILL_EVERY = 0.2
"""The scenario's pace (one SIGKILL every 0.2 s), not a wait for anything."""


@pytest.fixture
async def manager():
    mgr = Manager(node="test-node")
    try:
        yield mgr
    finally:
        await mgr.shutdown()


def rows(mgr: Manager, name: str) -> dict[str, dict]:
    return {row["id"]: row for row in mgr.instances(name)}


def states(mgr: Manager, name: str) -> dict[str, str]:
    return {ident: row["state"] for ident, row in rows(mgr, name).items()}


def flapping_events(sub) -> list:
    seen = []
    while (event := sub.get_nowait()) is not None:
        if event.topic.endswith((".flap", ".failed")):
            seen.append(event)
    return seen


async def test_random_sigkills_of_10_instances_never_suspend_anything(manager):
    """30 SIGKILLs from outside, one every 0.2 s, each on a random instance of 10 (fewer than
    `attempts` per instance), default flapping policy: no suspension, all 10 end up running."""
    sub = manager.bus.subscribe("proc.oom.")
    manager.add(template("oom", numprocesses=10, startsecs=1))
    await manager.wait_until(lambda: set(states(manager, "oom").values()) == {"running"}, timeout=15)
    attempts = manager.get("oom").flapping.attempts
    killed = dict.fromkeys(rows(manager, "oom"), 0)
    pick = random.Random(12)
    for _ in range(KILLS):
        alive = [ident for ident, row in rows(manager, "oom").items()
                 if row["pid"] and killed[ident] < attempts - 1]
        if alive:
            victim = pick.choice(alive)
            os.kill(rows(manager, "oom")[victim]["pid"], signal.SIGKILL)
            killed[victim] += 1
        await asyncio.sleep(KILL_EVERY)  # poll: the scenario's kill pace, not a wait for anything
    assert sum(killed.values()) >= KILLS // 2, killed
    await manager.wait_until(lambda: set(states(manager, "oom").values()) == {"running"}, timeout=15)
    assert flapping_events(sub) == []
    assert manager.template_status("oom")["status"] == "active"


async def test_an_instance_that_exits_at_once_is_suspended_then_failed_alone(manager):
    """Instance 3 of 5 exits at once: suspended (its flap event names it), then failed; the
    others keep running, and a sibling killed meanwhile is restarted as usual."""
    sub = manager.bus.subscribe("proc.three.")
    script = 'test "$GAFFER_INSTANCE" != 3 && exec sleep 300; exit 1'
    policy = {"attempts": 3, "window": 30, "retry_in": 0.5, "max_retry": 1}
    manager.add(template("three", cmd="sh", args=["-c", script], numprocesses=5, flapping=policy))
    flap = await next_event(sub, "proc.three.flap", timeout=15)
    assert (flap.data["id"], flap.data["ordinal"], flap.data["retries"]) == ("three.3", 3, 1)
    before = {ident: row["pid"] for ident, row in rows(manager, "three").items() if ident != "three.3"}
    os.kill(before["three.5"], signal.SIGKILL)
    failed = await next_event(sub, "proc.three.failed", timeout=15)
    assert failed.data["id"] == "three.3" and "max_retry" in failed.data["reason"]
    expected = {f"three.{n}": "running" for n in (1, 2, 4, 5)} | {"three.3": "failed"}
    await manager.wait_until(lambda: states(manager, "three") == expected, timeout=15)
    after = {ident: row["pid"] for ident, row in rows(manager, "three").items() if ident != "three.3"}
    assert {i: after[i] for i in ("three.1", "three.2", "three.4")} == {
        i: before[i] for i in ("three.1", "three.2", "three.4")}
    assert after["three.5"] != before["three.5"]
    assert {e.data["id"] for e in flapping_events(sub)} <= {"three.3"}
    assert manager.template_status("three")["status"] == "active"
