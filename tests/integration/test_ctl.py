"""gafferctl through click's CliRunner against a real in-process controller and agents.

The controller and agents run on the test's loop (inproc.py, real unix sockets, real
processes); each gafferctl command runs in a worker thread, as gafferctl's blocking client
has a loop of its own. What needs no controller is in tests/unit/test_cli.py; gafferctl as a
separate process against `gaffer start` is in tests/e2e/test_gafferctl.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, Callable

import pytest
from click.testing import CliRunner, Result

from gaffer.cli import ctl
from gaffer.testing import POLL, pid_dead

DEADLINE = 15.0
TEMPLATES = """
[web]
cmd = "sleep"
args = ["300"]
numprocesses = 2
startsecs = 0

[cat]
cmd = "sh"
args = ["-c", "exec cat"]
redirect_input = true
startsecs = 0

[job]
cmd = "sh"
args = ["-c", "echo job says $0; echo job warns >&2; exit 3", "hi"]
numprocesses = 0
"""


class Gafferctl:
    """gafferctl pointed at the in-process controller."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    async def __call__(self, *args: str, code: int = 0, stdin: str | None = None) -> Result:
        argv = ["--controller", self.endpoint, *args]
        result = await asyncio.to_thread(CliRunner().invoke, ctl.main, argv, input=stdin)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"gafferctl {' '.join(args)}: {result.exception!r}") from result.exception
        assert "Traceback" not in result.output
        assert result.exit_code == code, f"gafferctl {' '.join(args)}: {result.output}"
        return result

    async def json(self, *args: str) -> Any:
        return json.loads((await self(*args, "--json")).stdout)

    async def until(self, predicate: Callable[[Any], bool], *args: str, what: str = "") -> Any:
        """Repeat a --json command until ``predicate(its result)`` holds (bounded in time)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            result = await self.json(*args)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or args}: last {result}")
            await asyncio.sleep(POLL)  # poll


@pytest.fixture
async def gafferctl(cluster, tmp_path) -> Gafferctl:
    """A controller, agent n1, and the templates of TEMPLATES applied through gafferctl."""
    await cluster.start_controller()
    await cluster.start_agent("n1")
    command = Gafferctl(cluster.controller.endpoint)
    path = tmp_path / "gaffer.toml"
    path.write_text(TEMPLATES)
    applied = await command("apply", str(path))
    assert applied.stdout.splitlines() == [
        "web: created (version 1)", "cat: created (version 1)", "job: created (version 1)",
    ]
    await cluster.wait_running(3)
    return command


def _running(rows: list[dict[str, Any]]) -> int:
    return sum(row["state"] == "running" for row in rows if not row["stale"])


class TestReading:
    async def test_nodes_status_templates_get_ps_stats(self, gafferctl):
        """The listing commands, as tables and as JSON, show what the controller holds."""
        nodes = (await gafferctl("nodes")).stdout.splitlines()
        assert nodes[0].split()[:2] == ["NAME", "STATE"] and nodes[1].split()[:2] == ["n1", "up"]
        assert [n["name"] for n in await gafferctl.json("nodes")] == ["n1"]
        status = (await gafferctl("status")).stdout
        assert status.startswith("controller  ") and "nodes       1 up" in status
        assert (await gafferctl.json("status"))["templates"] == 3
        templates = [line.split()[:4] for line in (await gafferctl("templates")).stdout.splitlines()]
        assert ["web", "active", "1", "2"] in templates and ["job", "active", "1", "0"] in templates
        assert "command     sleep 300" in (await gafferctl("get", "web")).stdout
        rows = await gafferctl.json("ps", "web")
        assert [r["id"] for r in rows] == ["web.1", "web.2"] and _running(rows) == 2
        ps = (await gafferctl("ps", "web")).stdout.splitlines()
        assert [line.split()[:3] for line in ps[1:]] == [["web.1", "n1", "running"], ["web.2", "n1", "running"]]
        stats = (await gafferctl("stats", "web")).stdout.splitlines()
        assert stats[0].split()[:3] == ["TEMPLATE", "/", "INSTANCE"] and stats[1].split()[0] == "web"
        assert set((await gafferctl.json("stats"))) == {"web", "cat"}

    async def test_ps_fresh_asks_the_agents_and_json_carries_the_age(self, gafferctl):
        """ps --fresh shows cpu and memory the agent sampled just now (age 0, a SAMPLED column);
        ps --json has each row's age (null before any push)."""
        rows = await gafferctl.until(
            lambda rows: all(r["age"] == 0.0 and r["mem"] for r in rows), "ps", "web", "--fresh",
            what="live samples",
        )
        assert len(rows) == 2
        table = (await gafferctl("ps", "web", "--fresh")).stdout.splitlines()
        assert table[0].split()[-1] == "SAMPLED" and table[1].split()[-2:] == ["0.0s", "ago"]
        assert all("age" in r for r in await gafferctl.json("ps", "web"))

    async def test_controller_errors_are_one_line(self, gafferctl):
        """What the controller refuses is one line on stderr and exit status 1."""
        cases = [
            (("get", "ghost"), "Error: no template named 'ghost'"),
            (("scale", "web=lots"), "bad count 'lots'"),
            (("kill", "web.1", "NOSUCHSIGNAL"), "NOSUCHSIGNAL"),
            (("cordon", "ghost"), "ghost"),
            (("node", "forget", "n1"), "n1"),
        ]
        for args, says in cases:
            result = await gafferctl(*args, code=1)
            assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, args
            assert says in result.stderr, (args, result.stderr)


class TestChanging:
    async def test_scale_stop_start_restart_delete(self, gafferctl):
        """Each change is said in one line and the instances follow it."""
        assert (await gafferctl("scale", "web=+1", "cat=0")).stdout.splitlines() == ["web: 2 -> 3", "cat: 1 -> 0"]
        await gafferctl.until(lambda rows: _running(rows) == 3, "ps", "web", what="3 web running")
        assert (await gafferctl("stop", "web")).stdout == "stopped web\n"
        await gafferctl.until(lambda rows: _running(rows) == 0, "ps", "web", what="web stopped")
        assert (await gafferctl("start", "web")).stdout == "started web\n"
        before = await gafferctl.until(lambda rows: _running(rows) == 3, "ps", "web", what="web started")
        assert (await gafferctl("restart", "web")).stdout == "restarting web\n"
        old = {row["pid"] for row in before}
        await gafferctl.until(
            lambda rows: _running(rows) == 3 and not old & {row["pid"] for row in rows}, "ps", "web",
            what="every web pid replaced",
        )
        assert (await gafferctl("delete", "web")).stdout == "deleted web\n"
        assert "web" not in {t["name"] for t in await gafferctl.json("templates")}


    async def test_apply_prints_each_skipped_procfile_line_on_stderr(self, gafferctl, tmp_path):
        """apply of a Procfile creates its processes and warns, one line each, about the lines honcho skips (issue 9)."""
        procfile = tmp_path / "Procfile"
        procfile.write_text("pf: sleep 60\nweb.admin: sleep 60\n  indented: sleep 60\n")
        result = await gafferctl("apply", str(procfile))
        assert result.stdout == "pf: created (version 1)\n"
        assert result.stderr.splitlines() == [
            f"warning: {procfile}:2: skipped 'web.admin: sleep 60': the name 'web.admin' has a character "
            "other than letters, digits, '_' and '-'",
            f"warning: {procfile}:3: skipped '  indented: sleep 60': indented (a process line starts with its name)",
        ]


class TestProcesses:
    async def test_write_logs_and_kill(self, gafferctl):
        """write feeds stdin (from an argument or from stdin with -), logs shows it, kill signals the process."""
        assert (await gafferctl("write", "cat.1", "ping!\n")).stdout == "wrote 6 bytes to cat.1 on n1\n"
        assert (await gafferctl("write", "cat.1", "-", stdin="pong\n")).stdout == "wrote 5 bytes to cat.1 on n1\n"
        await gafferctl.until(lambda lines: [line["line"] for line in lines] == ["ping!", "pong"], "logs", "cat.1")
        assert (await gafferctl("logs", "cat.1", "-n", "1")).stdout == "pong\n"
        assert (await gafferctl("logs", "cat")).stdout == "cat.1 | ping!\ncat.1 | pong\n"
        pid = (await gafferctl.json("ps", "web"))[0]["pid"]
        assert (await gafferctl("kill", "web.1", "KILL")).stdout == f"n1: {pid}\n"
        await gafferctl.until(lambda rows: rows[0]["restarts"] == 1 and rows[0]["pid"] != pid, "ps", "web")
        assert pid_dead(pid)

    async def test_run_prints_the_output_and_exits_with_the_status(self, gafferctl):
        """run starts a one-off, prints its out and err lines where they belong, and exits with its status."""
        result = await gafferctl("run", "job", code=3)
        assert result.stdout == "job says hi\n" and result.stderr == "job warns\n"
        shown = json.loads((await gafferctl("run", "job", "--json", "-c", "exit 0", code=0)).stdout)
        assert shown["exit"]["status"] == 0 and shown["output"] == []


class TestNodes:
    async def test_cordon_uncordon_drain_forget(self, cluster, gafferctl):
        """cordon and uncordon mark the node; drain moves its instances away; forget drops a down node."""
        await cluster.start_agent("n2")
        assert (await gafferctl("cordon", "n1")).stdout == "cordoned n1\n"
        assert {n["name"]: n["cordoned"] for n in await gafferctl.json("nodes")} == {"n1": True, "n2": False}
        assert "up,cordoned" in (await gafferctl("nodes")).stdout
        assert (await gafferctl("uncordon", "n1")).stdout == "uncordoned n1\n"
        assert (await gafferctl("drain", "n1", "--wait", str(DEADLINE))).stdout == "drained n1\n"
        rows = await gafferctl.until(lambda rows: _running(rows) == 3, "ps", what="3 running after the drain")
        assert {row["node"] for row in rows if not row["stale"]} == {"n2"}
        await cluster.lose_agent("n1")
        await cluster.wait_node("n1", "down")
        assert (await gafferctl("node", "forget", "n1")).stdout.startswith("forgot n1 (")
        assert [n["name"] for n in await gafferctl.json("nodes")] == ["n2"]

    async def test_a_drain_that_cannot_finish_says_what_remains(self, gafferctl):
        """With nowhere to move to, drain reports what is left after --wait and exits 1."""
        result = await gafferctl("drain", "n1", "--wait", "0.2", code=1)
        left = re.match(r"n1: (\d+) instances still there after 0\.2s\n", result.stdout)
        assert left is not None and int(left[1]) == 3, result.stdout  # web.1, web.2, cat.1: each once
        reasons = result.stdout[left.end():].splitlines()
        assert reasons == [
            f"  {name}: no other node is up, uncordoned and not draining" for name in ("cat", "web")
        ], result.stdout

