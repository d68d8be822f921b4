"""Stopping a real ``gaffer-agent`` finishes the stops it was in the middle of (issue 9, item 5).

The agent leaves its processes running when it stops (the next agent adopts them), but a
process it was stopping must not be left behind: it gets the rest of its graceful_timeout,
then KILL, before the agent exits.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from gaffer.testing import POLL, pid_dead, poll_until
from test_agent_faults import Lab, spec

STUBBORN = "trap '' TERM; exec sleep 300"


@pytest.fixture
async def lab():
    root = Path(tempfile.mkdtemp(prefix="gf-", dir="/tmp"))
    lab = Lab(root)
    try:
        yield lab
    finally:
        await lab.close()
        shutil.rmtree(root, ignore_errors=True)


async def test_an_agent_stopping_finishes_a_stop_in_progress(lab):
    """SIGTERM to the agent mid-stop: the TERM-proof process is KILLed before the agent exits;
    an instance nobody was stopping keeps running."""
    await lab.start_controller()
    agent = await lab.start_agent()
    await lab.call("apply", templates=[
        spec("stubborn", 1, "sh", "-c", STUBBORN, graceful_timeout=2),
        spec("calm", 1, "sleep", "300"),
    ])
    running = await lab.wait_running(lambda found: {"stubborn.1", "calm.1"} <= set(found))
    await lab.call("stop", name="stubborn")
    deadline = time.monotonic() + 20
    while not any(r["id"] == "stubborn.1" and r["state"] == "stopping" for r in await lab.call("ps")):
        assert time.monotonic() < deadline, "stubborn.1 never reported stopping"
        await asyncio.sleep(POLL)  # poll
    assert not pid_dead(running["stubborn.1"])
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the agent did not exit\n{lab.log_tail()}") from None
    assert pid_dead(running["stubborn.1"]), f"the stop was abandoned\n{lab.log_tail()}"
    assert psutil.pid_exists(running["calm.1"]) and not pid_dead(running["calm.1"])
    assert "finishing 1 stops in progress" in lab.log_tail()


async def test_an_agent_stopping_finishes_the_stop_of_a_leftover(lab):
    """A leftover of a dead agent that a new agent is stopping (TERM ignored) is KILLed before
    that agent exits, not left to the next one."""
    await lab.start_controller()
    first = await lab.start_agent()
    await lab.call("apply", templates=[spec("stubborn", 1, "sh", "-c", STUBBORN, graceful_timeout=2)])
    running = await lab.wait_running(lambda found: "stubborn.1" in found)
    keeper = lab.note_keeper()
    first.kill()
    first.wait(10)
    if keeper is not None:
        os.kill(keeper, signal.SIGKILL)
        await poll_until(lambda: pid_dead(keeper), what="the keeper to die")
    shutil.rmtree(lab.state)
    await lab.call("delete", name="stubborn")
    second = await lab.start_agent()
    await poll_until(lambda: "stopping stubborn.1 (pid" in lab.log_tail(), timeout=20, what="the leftover's stop")
    assert not pid_dead(running["stubborn.1"])
    second.send_signal(signal.SIGTERM)
    try:
        second.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the agent did not exit\n{lab.log_tail()}") from None
    assert pid_dead(running["stubborn.1"]), f"the leftover's stop was abandoned\n{lab.log_tail()}"
