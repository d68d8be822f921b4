"""`gaffer start` and `gaffer run` driven as real subprocesses, the way an operator uses them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from gaffer.testing import pid_dead, poll_until

GAFFER = [sys.executable, "-m", "gaffer.cli"]
STARTED = re.compile(r"(\S+) started \(pid (\d+)\)")


class Gaffer:
    """A running `gaffer start` whose output is read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.pids: dict[str, int] = {}

    async def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        regex = re.compile(pattern)
        for line in self.lines:
            if match := regex.search(line):
                return match

        async def read() -> re.Match[str]:
            assert self.proc.stdout is not None
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"gaffer ended before {pattern!r}; output:\n" + "".join(self.lines))
                line = raw.decode()
                self.lines.append(line)
                if started := STARTED.search(line):
                    self.pids[started.group(1)] = int(started.group(2))
                if match := regex.search(line):
                    return match

        try:
            return await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} within {timeout}s; output:\n" + "".join(self.lines)) from None

    async def finish(self, timeout: float = 15.0) -> int:
        assert self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), timeout)
        self.lines.extend(rest.decode().splitlines(keepends=True))
        return await asyncio.wait_for(self.proc.wait(), timeout)


def isolated(tmp: Path) -> dict[str, str]:
    """An environment that keeps a test's gaffer to its own runtime dir (its sockets)."""
    return {**os.environ, "GAFFER_RUNTIME_DIR": str(tmp / "run")}


async def start_gaffer(tmp: Path, *args: str, cwd: Path | None = None, color: str = "--no-color") -> Gaffer:
    proc = await asyncio.create_subprocess_exec(
        *GAFFER, "start", color, "--data-dir", str(tmp / "data"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd, env=isolated(tmp),
    )
    return Gaffer(proc)


@pytest.fixture
async def cleanup():
    """Kill whatever a failed test left running: the gaffer process and its children."""
    started: list[Gaffer] = []
    yield started.append
    for gaffer in started:
        if gaffer.proc.returncode is None:
            gaffer.proc.kill()
            await gaffer.proc.wait()
        for pid in gaffer.pids.values():
            if not pid_dead(pid):
                os.kill(pid, signal.SIGKILL)


async def test_sigint_stops_everything_and_leaves_nothing(tmp_path, cleanup):
    """Ctrl-C stops every instance gracefully; gaffer exits 0 and no process survives."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text(
        '[web]\ncmd = "sleep"\nargs = ["300"]\nnumprocesses = 2\n\n'
        '[talker]\ncmd = "sh"\nargs = ["-c", "echo hello from $GAFFER_TEMPLATE.$GAFFER_INSTANCE; sleep 300"]\n'
    )
    gaffer = await start_gaffer(tmp_path, str(spec))
    cleanup(gaffer)
    await gaffer.expect(r"talker\.1\s+\| hello from talker\.1")
    await gaffer.expect(r"web\.2 started")
    await gaffer.expect(r"web\.1 started")
    pids = dict(gaffer.pids)
    assert set(pids) == {"web.1", "web.2", "talker.1"}
    gaffer.proc.send_signal(signal.SIGINT)
    assert await gaffer.finish() == 0
    assert "all processes stopped" in "".join(gaffer.lines)
    await poll_until(lambda: all(pid_dead(p) for p in pids.values()), timeout=5)


async def test_output_is_prefixed_and_coloured_per_template(tmp_path, cleanup):
    """With --color each template's prefix gets its own colour."""
    spec = tmp_path / "Procfile"
    spec.write_text("one: echo first; sleep 300\ntwo: echo second; sleep 300\n")
    gaffer = await start_gaffer(tmp_path, str(spec), color="--color")
    proc = gaffer.proc
    cleanup(gaffer)
    first = await gaffer.expect(r"(\x1b\[[0-9;]+m)\S+ one\.1\s+\|\x1b\[0m first")
    second = await gaffer.expect(r"(\x1b\[[0-9;]+m)\S+ two\.1\s+\|\x1b\[0m second")
    assert first.group(1) != second.group(1)
    proc.send_signal(signal.SIGTERM)
    assert await gaffer.finish() == 0


async def test_bad_file_is_refused_before_anything_starts(tmp_path):
    """Every validation problem is printed, without a traceback, and nothing runs."""
    spec = tmp_path / "bad.toml"
    spec.write_text(
        '[web]\ncmd = "sleep"\nnumprocesses = -1\nstop_signal = "NOPE"\n\n'
        '[worker]\ncmd = 3\nnumproceses = 2\n'
    )
    proc = await asyncio.create_subprocess_exec(
        *GAFFER, "start", str(spec), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    text = err.decode()
    assert proc.returncode != 0 and out == b""
    assert "Traceback" not in text
    for needle in ("web.numprocesses", "web.stop_signal", "worker.cmd", "worker.numproceses", "did you mean 'numprocesses'"):
        assert needle in text


async def test_unknown_user_is_refused(tmp_path):
    """A uid that does not exist on this host is a validation error, not a runtime crash loop."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[web]\ncmd = "sleep"\nargs = ["1"]\nuid = "no-such-user-here"\n')
    proc = await asyncio.create_subprocess_exec(
        *GAFFER, "start", str(spec), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode != 0
    assert "web.uid: unknown user 'no-such-user-here'" in err.decode()


async def test_sighup_reloads_changed_templates_only(tmp_path, cleanup):
    """SIGHUP applies the file again: removed templates stop, changed ones roll, others stay."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text(
        '[keep]\ncmd = "sleep"\nargs = ["300"]\n\n'
        '[drop]\ncmd = "sleep"\nargs = ["300"]\n\n'
        '[change]\ncmd = "sleep"\nargs = ["300"]\n'
    )
    gaffer = await start_gaffer(tmp_path, str(spec))
    cleanup(gaffer)
    for name in ("keep", "drop", "change"):
        await gaffer.expect(rf"{name}\.1 started")
    before = dict(gaffer.pids)
    spec.write_text(
        '[keep]\ncmd = "sleep"\nargs = ["300"]\n\n'
        '[change]\ncmd = "sleep"\nargs = ["301"]\n\n'
        '[added]\ncmd = "sleep"\nargs = ["300"]\n'
    )
    gaffer.proc.send_signal(signal.SIGHUP)
    await gaffer.expect(r"reloaded: .*change updated.*added created")
    await gaffer.expect(r"drop\.1 stopped")
    await gaffer.expect(r"added\.1 started")
    await gaffer.expect(r"change\.1 started \(pid (?!%d\))" % before["change.1"])
    assert gaffer.pids["keep.1"] == before["keep.1"]
    spec.write_text('[keep]\ncmd = "sleep"\nnumprocesses = "many"\n')
    gaffer.proc.send_signal(signal.SIGHUP)
    await gaffer.expect(r"reload refused.*keep.numprocesses")
    gaffer.proc.send_signal(signal.SIGINT)
    assert await gaffer.finish() == 0


async def test_run_exits_with_the_process_status(tmp_path):
    """`gaffer run NAME` runs once, relays output and exits with the process's status."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[task]\ncmd = "sh"\nargs = ["-c", "echo out-line; echo err-line >&2; exit 5"]\n')
    proc = await asyncio.create_subprocess_exec(
        *GAFFER, "run", "-f", str(spec), "task",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 5
    assert out.decode() == "out-line\n" and err.decode() == "err-line\n"


async def test_run_with_args_replaces_template_args(tmp_path):
    """Arguments after NAME replace the template's args."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[say]\ncmd = "echo"\nargs = ["default"]\n')
    proc = await asyncio.create_subprocess_exec(
        *GAFFER, "run", "-f", str(spec), "say", "hello", "--loud",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0 and out.decode() == "hello --loud\n"


async def test_default_file_is_found_in_the_working_directory(tmp_path, cleanup):
    """Without FILE, gaffer start uses ./gaffer.toml, ./Procfile or ./gaffer.json."""
    (tmp_path / "Procfile").write_text("solo: sleep 300\n")
    gaffer = await start_gaffer(tmp_path, cwd=tmp_path)
    cleanup(gaffer)
    await gaffer.expect(r"solo\.1 started")
    gaffer.proc.send_signal(signal.SIGINT)
    assert await gaffer.finish() == 0


async def test_config_apps_receive_events(tmp_path, cleanup):
    """`--config` loads [[apps]]: the webhooks app POSTs gaffer's events to a real server."""
    from aiohttp import web

    received: asyncio.Queue = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        config = tmp_path / "settings.toml"
        config.write_text(
            f'node = "from-config"\n\n[[apps]]\nuse = "webhooks"\n'
            f'hooks = [{{ url = "http://127.0.0.1:{port}/hook", events = ["proc."] }}]\n'
        )
        spec = tmp_path / "gaffer.toml"
        spec.write_text('[svc]\ncmd = "sleep"\nargs = ["300"]\n')
        gaffer = await start_gaffer(tmp_path, "--config", str(config), str(spec))
        cleanup(gaffer)
        await gaffer.expect(r"svc\.1 started")
        while (body := await asyncio.wait_for(received.get(), 10))["topic"] != "proc.svc.spawn":
            pass
        assert body["data"]["node"] == "from-config" and body["data"]["pid"] == gaffer.pids["svc.1"]
        gaffer.proc.send_signal(signal.SIGINT)
        assert await gaffer.finish() == 0
    finally:
        await runner.cleanup()


async def test_bad_config_is_refused_before_anything_starts(tmp_path):
    """An unknown setting or a bad app option in --config is named, and nothing runs."""
    config = tmp_path / "settings.toml"
    config.write_text('nod = "x"\n')
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[svc]\ncmd = "sleep"\nargs = ["300"]\n')
    proc = await asyncio.create_subprocess_exec(
        *GAFFER, "start", "--config", str(config), str(spec),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode != 0 and out == b""
    assert "nod: unknown setting (did you mean 'node'?)" in err.decode()


async def test_starting_does_not_import_package_metadata():
    """`gaffer start` loads importlib.metadata (~10 ms) only to look up an app by its entry
    point, never on its way to the first spawn (issue 9, item 13)."""
    code = "import sys, gaffer.cli.start; print('importlib.metadata' in sys.modules)"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert out.decode().strip() == "False"
