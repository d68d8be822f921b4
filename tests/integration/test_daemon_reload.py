"""SIGHUP re-reads a real daemon's config file; the daemon stays up (issue 9, item 3).

Under the shipped systemd units a daemon killed by SIGHUP is a clean exit nobody restarts;
now SIGHUP applies what can change while running and names what needs a restart.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gaffer.client import AsyncClient
from gaffer.testing import POLL, free_port
from test_agent_faults import AGENT_BIN, Lab

CONTROLLER_BIN = str(Path(sys.executable).parent / "gaffer-controller")
DEADLINE = 20.0


async def wait_log(log: Path, text: str, proc: subprocess.Popen, after: int = 0) -> int:
    """Poll ``log`` (beyond offset ``after``) until it holds ``text``; the offset past it."""
    deadline = time.monotonic() + DEADLINE
    while True:
        content = log.read_text()
        found = content.find(text, after)
        if found >= 0:
            return found + len(text)
        assert proc.poll() is None, f"the daemon exited ({proc.returncode}):\n{content[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{content[-3000:]}"
        await asyncio.sleep(POLL)  # poll


@pytest.fixture
def root():
    path = Path(tempfile.mkdtemp(prefix="gf-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_controller_reloads_its_config_on_sighup(root):
    """SIGHUP: limits applied, a new bind named as needing a restart, a broken file refused,
    an unchanged one said so; the controller still answers after each."""
    port = free_port()
    config = root / "controller.toml"
    base = f'bind = "tcp://127.0.0.1:{port}"\ninsecure = true\ndata_dir = "{root}/data"\n'
    config.write_text(base + "node_grace = 2\n")
    log = root / "controller.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([CONTROLLER_BIN, "--config", str(config)], stdout=out, stderr=out)
    client = AsyncClient(f"tcp://127.0.0.1:{port}", timeout=5.0)
    try:
        at = await wait_log(log, "listening on", proc)
        config.write_text(base.replace(str(port), "7") + 'node_grace = 5\nmax_instances = 500\nlog_level = "debug"\n')
        proc.send_signal(signal.SIGHUP)
        at = await wait_log(
            log, f"applied node_grace 2.0 -> 5.0, max_instances 1000000 -> 500, log_level 'info' -> 'debug'", proc, at,
        )
        at = await wait_log(log, f"needs a restart: bind 'tcp://127.0.0.1:{port}' -> 'tcp://127.0.0.1:7'", proc, at)
        assert (await client.call("status"))["endpoint"] == f"tcp://127.0.0.1:{port}"
        config.write_text(base + 'node_grace = "soon"\n')
        proc.send_signal(signal.SIGHUP)
        at = await wait_log(log, "refused, keeping the running configuration", proc, at)
        at = await wait_log(log, "node_grace: must be int or float, got str", proc, at)
        config.write_text(base + 'node_grace = 5\nmax_instances = 500\nlog_level = "debug"\n')
        proc.send_signal(signal.SIGHUP)
        await wait_log(log, "nothing changed", proc, at)
        assert proc.poll() is None
        await client.call("status")
    finally:
        await client.close()
        proc.terminate()
        proc.wait(20)


async def test_agent_reloads_its_config_on_sighup(root):
    """SIGHUP to gaffer-agent: log level applied, new labels named as needing a restart; the
    node stays up."""
    lab = Lab(root)
    try:
        await lab.start_controller()
        config = root / "agent.toml"
        base = (
            f'controller = "{lab.controller.endpoint}"\nname = "{lab.node}"\n'
            f'state_dir = "{lab.state}"\ninsecure = true\n'
        )
        config.write_text(base)
        log = root / "agent.log"
        with open(log, "ab") as out:
            agent = subprocess.Popen([AGENT_BIN, "--config", str(config)], stdout=out, stderr=out, start_new_session=True)
        lab.agents.append(agent)
        await lab.wait_node(lambda n: n["state"] == "up")
        config.write_text(base + 'log_level = "debug"\nlabels = {zone = "b"}\n')
        agent.send_signal(signal.SIGHUP)
        at = await wait_log(log, "applied log_level 'info' -> 'debug'", agent)
        await wait_log(log, "needs a restart: labels {} -> {'zone': 'b'}", agent, at)
        assert agent.poll() is None
        await lab.wait_node(lambda n: n["state"] == "up")
    finally:
        await lab.close()
