"""The sync ``Client`` against a real controller, as a script uses it (issue 9, item 9)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from gaffer.controller.controller import Controller
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import POLL

DEADLINE = 20.0
LEAVE_EVENTS_EARLY = """
import sys
from gaffer.client import Client

client = Client(sys.argv[1], timeout=5)
events = client.events(("test.",))
for event in events:
    break
client.close()
"""


async def test_closing_a_client_after_breaking_out_of_events_is_silent(tmp_path):
    """break out of client.events(), then close(): exit 0 and nothing on stderr."""
    controller = Controller(ControllerSettings(
        bind="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*", data_dir=tmp_path / "data", insecure=True,
    ))
    await controller.start()
    script = subprocess.Popen(
        [sys.executable, "-c", LEAVE_EVENTS_EARLY, controller.endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while script.poll() is None:
            assert time.monotonic() < deadline, "the script never received an event"
            controller.hub.publish("test.ping", {})  # until its subscription is connected
            await asyncio.sleep(POLL)  # poll
        _, stderr = script.communicate(timeout=DEADLINE)
        assert (script.returncode, stderr) == (0, "")
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
        await controller.stop()
