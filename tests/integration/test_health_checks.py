"""Readiness on real processes: http, tcp and exec checks, sd_notify, restart when unhealthy,
and bad settings refused by ``gaffer check``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from gaffer.agent.manager import Manager
from gaffer.testing import free_port, next_event, pid_dead, poll_until, template

HTTP_SERVER = r"""
import http.server, os, sys, time
stop = sys.argv[1]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if os.path.exists(stop):
            time.sleep(30)  # stops answering
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"serving")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

START_PERIOD = 3
"""Seconds the hung-server test's failures do not count: the server answers within a second
even on a loaded machine, and a failure counts only once this has passed since the spawn."""

SLOW_STARTER = r"""
import os, socket, sys, time
time.sleep(2)
server = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(repr(time.time()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    server.accept()[0].close()
"""

NOTIFIER = r"""
import os, signal, subprocess, sys, time
SEND = "import os, socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); " \
       "s.sendto(b'STATUS=warming up\\nREADY=1', os.environ['NOTIFY_SOCKET']); sys.stdin.read()"
children = []
def ready(signum, frame):
    # from a child, as systemd-notify does; the child lives on (until this process ends) so the
    # agent can map its pid to the instance however late it reads (README: a sender that exits
    # first cannot be matched)
    children.append(subprocess.Popen([sys.executable, "-c", SEND], stdin=subprocess.PIPE))
signal.signal(signal.SIGUSR1, ready)
open(sys.argv[1], "w").close()  # the handler is in place
while True:
    time.sleep(60)
"""


@pytest.fixture
async def manager(tmp_path):
    mgr = Manager(node="n1", notify_dir=tmp_path)
    try:
        yield mgr
    finally:
        await mgr.shutdown()
        await mgr.aclose()


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def row(mgr: Manager, instance_id: str) -> dict:
    return mgr.instance(instance_id)


async def test_an_http_server_that_stops_answering_is_unhealthy_and_restarted(manager, tmp_path):
    """Ready while it answers; hung past failure_threshold checks: unhealthy, its group
    stopped, a new process spawned, ready again, the restart counted."""
    stop = tmp_path / "stop"
    sub = manager.bus.subscribe("proc.web.")
    manager.add(template(
        "web", cmd=sys.executable, args=[script(tmp_path, "server.py", HTTP_SERVER), str(stop)],
        port=free_port(), health={"type": "http", "url": "http://127.0.0.1:$PORT/health", "interval": 0.2,
                                  "timeout": 0.2, "start_period": START_PERIOD, "failure_threshold": 2},
    ))
    ready = await next_event(sub, "proc.web.ready")
    first = ready.data["pid"]
    assert ready.data["output"].startswith("HTTP 200") and row(manager, "web.1")["ready"] is True
    stop.touch()
    unhealthy = await next_event(sub, "proc.web.unhealthy", timeout=20)
    assert unhealthy.data["pid"] == first and unhealthy.data["failures"] == 2
    assert "timed out" in unhealthy.data["output"]
    stop.unlink()
    await next_event(sub, "proc.web.stop", lambda e: e.data["pid"] == first)
    again = await next_event(sub, "proc.web.ready", timeout=20)
    assert again.data["pid"] != first and pid_dead(first)
    assert row(manager, "web.1")["restarts"] == 1
    assert (row(manager, "web.1")["state"], row(manager, "web.1")["ready"]) == ("ready", True)


async def test_a_slow_starter_is_not_ready_before_it_listens(manager, tmp_path):
    """A tcp check on a process that listens only after 2 s: running and not ready until then,
    ready after it listens, and the events in order spawn, running, ready."""
    bound = tmp_path / "bound"
    sub = manager.bus.subscribe("proc.slow.")
    manager.add(template(
        "slow", cmd=sys.executable, args=[script(tmp_path, "slow.py", SLOW_STARTER), str(bound)],
        port=free_port(), health={"type": "tcp", "port": "$PORT", "interval": 0.1, "timeout": 0.1,
                                  "start_period": 30},
    ))
    await next_event(sub, "proc.slow.running")
    assert (row(manager, "slow.1")["state"], row(manager, "slow.1")["ready"]) == ("running", False)
    kinds = []
    while True:
        event = await next_event(sub, "proc.slow.", timeout=20)
        kinds.append(event.topic.rpartition(".")[2])
        if kinds[-1] == "ready":
            break
    assert kinds == ["ready"], "something happened between running and ready"
    listened_at = float(bound.read_text())
    assert event.data["ts"] >= listened_at
    assert event.data["output"].startswith("connected to 127.0.0.1:")
    assert row(manager, "slow.1")["ready"] is True


async def test_a_notify_process_is_ready_exactly_when_it_says_so(manager, tmp_path):
    """notify = true: NOTIFY_SOCKET is set; junk on the socket changes nothing; the instance
    stays running, not ready, until a child of it sends READY=1, then it is ready."""
    sub = manager.bus.subscribe("proc.nd.")
    listening = tmp_path / "listening"
    manager.add(template("nd", cmd=sys.executable, args=[script(tmp_path, "n.py", NOTIFIER), str(listening)],
                         notify=True))
    await next_event(sub, "proc.nd.running")
    await poll_until(listening.exists, what="the notifier's signal handler")
    pid = row(manager, "nd.1")["pid"]
    env = psutil.Process(pid).environ()
    assert env["NOTIFY_SOCKET"] == str(tmp_path / "notify.sock")
    assert os.stat(tmp_path / "notify.sock").st_mode & 0o077 == 0
    readiness = manager._act.readiness
    sent = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as junk:
        for data in (b"READY=1", b"\xff\xfe garbage", b"READY=1\n" + b"x" * 20_000, b"", b"=\n=="):
            junk.sendto(data, env["NOTIFY_SOCKET"])  # from a process that is no instance
            sent += 1
    await poll_until(lambda: readiness.datagrams >= sent, what="the junk read")
    assert (row(manager, "nd.1")["state"], row(manager, "nd.1")["ready"]) == ("running", False)
    assert sub.get_nowait() is None
    os.kill(pid, 10)  # SIGUSR1: the process asks a child to send READY=1
    ready = await next_event(sub, "proc.nd.ready")
    assert ready.data["pid"] == pid and "READY=1" in ready.data["output"]
    assert (row(manager, "nd.1")["state"], row(manager, "nd.1")["ready"]) == ("ready", True)


async def test_an_exec_check_runs_in_the_instances_env_and_cwd(manager, tmp_path):
    """exec: `test -e $FLAG` in the instance's cwd and env; ready once the file exists,
    unhealthy (not restarted) once it is gone."""
    sub = manager.bus.subscribe("proc.ex.")
    manager.add(template(
        "ex", cwd=str(tmp_path), env={"FLAG": "ok.flag"}, restart_on_unhealthy=False,
        health={"type": "exec", "command": "sh -c 'test -e $FLAG && echo found $FLAG'", "interval": 0.1,
                "timeout": 0.1, "failure_threshold": 1, "start_period": 30},
    ))
    await next_event(sub, "proc.ex.running")
    (tmp_path / "ok.flag").touch()
    ready = await next_event(sub, "proc.ex.ready")
    assert ready.data["output"] == "found ok.flag\n(exit 0)"
    manager.apply(template(
        "ex", cwd=str(tmp_path), env={"FLAG": "ok.flag"}, restart_on_unhealthy=False,
        health={"type": "exec", "command": "sh -c 'test -e $FLAG && echo found $FLAG'", "interval": 0.1,
                "timeout": 0.1, "failure_threshold": 1},
    ))
    (tmp_path / "ok.flag").unlink()
    unhealthy = await next_event(sub, "proc.ex.unhealthy")
    assert unhealthy.data["output"] == "(exit 1)" and unhealthy.data["failures"] == 1
    assert row(manager, "ex.1")["state"] == "unhealthy" and row(manager, "ex.1")["restarts"] == 0


async def test_an_exec_check_past_its_timeout_is_killed_with_its_group(manager, tmp_path):
    """A check that hangs fails with "timed out", and the processes it started are killed."""
    sub = manager.bus.subscribe("proc.hang.")
    manager.add(template(
        "hang", restart_on_unhealthy=False,
        health={"type": "exec", "command": "sh -c 'sleep 31.5 & sleep 31.5'", "interval": 0.5,
                "timeout": 0.2, "failure_threshold": 1},
    ))
    unhealthy = await next_event(sub, "proc.hang.unhealthy")
    assert unhealthy.data["output"] == "timed out after 0.2s"

    def sleepers() -> list[int]:
        return [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "31.5"]]

    manager.stop("hang")
    await poll_until(lambda: not sleepers(), what="the check's processes killed")


async def test_a_tcp_check_on_a_closed_port_is_unhealthy(manager, tmp_path):
    """tcp: a refused connect fails the check, with the reason as its output."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]  # bound, never listening: connects are refused
        sub = manager.bus.subscribe("proc.closed.")
        manager.add(template("closed", restart_on_unhealthy=False, health={
            "type": "tcp", "port": port, "interval": 0.1, "timeout": 0.1, "failure_threshold": 1}))
        unhealthy = await next_event(sub, "proc.closed.unhealthy")
    assert "refused" in unhealthy.data["output"].lower() or "connect" in unhealthy.data["output"].lower()


def test_bad_check_settings_are_refused_with_every_problem_named(tmp_path):
    """`gaffer check` on a file with a bad [health]: exit 1, one line per problem, no traceback."""
    path = tmp_path / "bad.toml"
    path.write_text(
        '[web]\ncmd = "serve"\nnotify = "yes"\n'
        '[web.health]\ntype = "http"\nurl = "ftp://x"\ninterval = 0\nfailure_threshold = 0\ncolour = 1\n'
    )
    gaffer = Path(sys.executable).with_name("gaffer")
    done = subprocess.run([str(gaffer), "check", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    for field in ("web.health.colour", "web.health.url", "web.health.interval",
                  "web.health.failure_threshold", "web.notify"):
        assert field in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
