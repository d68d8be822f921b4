"""Rolling updates gated on readiness, on real processes across agents: a restart never
has fewer than count - max_unavailable instances ready (counted from the event stream), and a
new version that never gets ready stops the rollout, says so, and leaves the old ones serving."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import urllib.request
from pathlib import Path

from gaffer.cli import waiting
from gaffer.cli.waitgoal import Goal
from gaffer.common.bus import Subscription
from gaffer.testing import next_event

COUNT, ALLOWANCE = 6, 2

SERVER = r"""
import http.server, os, time
time.sleep(0.3)  # up (startsecs) before it answers: running, not yet ready
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"serving")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def free_range(count: int) -> int:
    """A loopback port whose ``count - 1`` successors are free too (one per instance)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65536:
            continue
        held = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no {count} free consecutive ports on loopback")


def web(tmp: Path, port: int, **fields) -> dict:
    script = tmp / "server.py"
    script.write_text(SERVER)
    return {
        "name": "roll", "cmd": sys.executable, "args": [str(script)], "numprocesses": COUNT,
        "startsecs": 0.1, "port": port, "update": {"max_unavailable": ALLOWANCE},
        "health": {"type": "http", "url": "http://127.0.0.1:$PORT/", "interval": 0.1, "timeout": 0.1,
                   "start_period": 60},
        **fields,
    }


async def start(cluster, tmp: Path, nodes: tuple[str, ...], **fields) -> dict[str, int]:
    """Agents ``nodes``, the template applied and every instance ready: {id: pid}."""
    await cluster.start_controller()
    for name in nodes:
        await cluster.start_agent(name)
    await cluster.call("apply", templates=[web(tmp, free_range(COUNT), **fields)])
    status, message = await waiting.wait_for(cluster.client, "roll", Goal(ready=True), 30)
    assert status == waiting.REACHED, message
    rows = await cluster.call("ps", name="roll")
    assert [r["ready"] for r in rows] == [True] * COUNT
    return {r["id"]: r["pid"] for r in rows}


def fold_ready(ready: set[str], topic: str, data: dict) -> None:
    """An instance is ready from its ``ready`` event until any other event of it (a checked
    template's ``running`` is up, not ready)."""
    if topic.endswith(".ready"):
        ready.add(data["id"])
    else:
        ready.discard(data["id"])


async def test_a_rolling_restart_never_has_fewer_than_count_minus_allowance_ready(cluster, tmp_path):
    """restart of 6 checked instances on two nodes (3 each: a node rolls within its share, and
    the next node's turn waits for the first to be ready), max_unavailable 2: at every event at
    least 4 are ready, and it ends with 6 new processes, all ready."""
    before = await start(cluster, tmp_path, ("n1", "n2"))
    events: Subscription = cluster.controller.hub.bus.subscribe("proc.roll.")
    ready = set(before)
    fewest = COUNT
    replaced: set[str] = set()

    async def follow() -> None:
        nonlocal fewest
        async for event in events:
            fold_ready(ready, event.topic, event.data)
            fewest = min(fewest, len(ready))
            if event.topic.endswith(".ready") and event.data["pid"] != before[event.data["id"]]:
                replaced.add(event.data["id"])
                if replaced == set(before):
                    return

    try:
        await cluster.call("restart", name="roll")
        await asyncio.wait_for(follow(), 60)
    finally:
        events.close()
    assert fewest >= COUNT - ALLOWANCE, fewest
    assert fewest < COUNT  # it did roll
    rows = await cluster.call("ps", name="roll")
    assert all(r["ready"] and r["pid"] != before[r["id"]] for r in rows), rows


async def test_a_version_that_never_gets_ready_stops_the_rollout_and_the_old_ones_serve(cluster, tmp_path):
    """A new version that never answers: rollout_stuck after update.progress_deadline, the
    templates view says so, and count - max_unavailable old instances stay, ready and serving."""
    before = await start(cluster, tmp_path, ("n1", "n2", "n3"), update={"max_unavailable": ALLOWANCE, "progress_deadline": 1})
    events: Subscription = cluster.controller.hub.bus.subscribe("template.roll.")
    try:
        broken = web(tmp_path, 0, args=["-c", "import time; time.sleep(300)"],
                     update={"max_unavailable": ALLOWANCE, "progress_deadline": 1})
        template = (await cluster.call("get", name="roll"))["spec"]
        await cluster.call("apply", templates=[{**broken, "port": template["port"]}])
        stuck = await next_event(events, "template.roll.rollout_stuck", timeout=30)
    finally:
        events.close()
    assert stuck.data["ready"] == 0 and stuck.data["deadline"] == 1.0
    view = (await cluster.call("templates"))[0]
    assert view["rollout_stuck"] and view["ready"] == COUNT - ALLOWANCE
    rows = await cluster.call("ps", name="roll")
    old = [r for r in rows if r["pid"] == before[r["id"]]]
    assert len(old) == COUNT - ALLOWANCE and all(r["ready"] for r in old), rows
    for row in old:
        url = f"http://127.0.0.1:{row['port']}/"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert body == b"serving"


async def gafferctl(endpoint: str, *args: str) -> tuple[int, str]:
    """gafferctl in a worker thread (its blocking client has a loop of its own)."""
    from click.testing import CliRunner

    from gaffer.cli import ctl

    result = await asyncio.to_thread(CliRunner().invoke, ctl.main, ["--controller", endpoint, *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


async def test_apply_wait_returns_once_the_new_version_is_ready(cluster, tmp_path):
    """apply --wait: exit 0 only once every instance runs the applied version and is ready
    (old ready instances do not count); a version that never gets ready times out (exit 1)."""
    await cluster.start_controller()
    await cluster.start_agent("n1")
    path = tmp_path / "roll.json"
    port = free_range(COUNT)
    path.write_text(json.dumps(web(tmp_path, port)))
    code, output = await gafferctl(cluster.controller.endpoint, "apply", str(path), "--wait", "--timeout", "30")
    assert code == 0, output
    rows = await cluster.call("ps", name="roll")
    assert all(r["ready"] for r in rows) and len(rows) == COUNT
    path.write_text(json.dumps(web(tmp_path, port, env={"VERSION": "2"})))
    code, output = await gafferctl(cluster.controller.endpoint, "apply", str(path), "--wait", "--timeout", "30")
    assert code == 0, output
    launch = (await cluster.call("get", name="roll"))["launch"]
    rows = await cluster.call("ps", name="roll")
    assert all(r["ready"] and r["spec"] == launch for r in rows), rows
    path.write_text(json.dumps(web(tmp_path, port, args=["-c", "import time; time.sleep(300)"])))
    code, output = await gafferctl(cluster.controller.endpoint, "apply", str(path), "--wait", "--timeout", "2")
    assert code == 1 and "not ready within 2s: 0 of 6 wanted ready" in output, output
