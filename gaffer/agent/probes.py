"""Running one check of one instance: ``exec``, ``http`` or ``tcp``, bounded in time and output.

``Probes.run(check, target)`` returns a ``Result`` (healthy or not, and the check's output cut
to ``MAX_OUTPUT`` bytes); it never raises for a failing check, only when cancelled. What the
results mean is ``health.py``'s; when to run them is ``checks.py``'s.

- ``exec``: the command runs in the instance's environment, working directory and user, in a
  session of its own, its stdout and stderr captured together (the first ``MAX_OUTPUT`` bytes
  kept, the rest read and dropped so it never blocks). Its exit is watched through a pidfd,
  as an instance's is; at the timeout, or when the check is cancelled, its whole group is
  killed. Exit 0 is healthy.
- ``http``: one GET on a new connection (``httpprobe.py``: a bare asyncio protocol, no
  keep-alive: a check proves the server accepts a connection, and 1,000 instances would
  otherwise hold 1,000 idle sockets). 2xx and 3xx are healthy (redirects are not followed).
  Connections are bounded by the checks that run at once (``checks.MAX_RUNNING``).
- ``tcp``: a connect to host:port, closed at once.

``$PORT`` and every ``$VAR`` of the instance's environment are expanded in the command, the URL
and the host and port, as in ``cmd`` (``launch.expand``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import NamedTuple

from gaffer.agent import httpprobe, reaper, spawning
from gaffer.agent.launch import expand
from gaffer.agent.process import LaunchSpec, devnull
from gaffer.common.healthspec import MAX_OUTPUT, HealthCheck

class Result(NamedTuple):
    ok: bool
    output: str


@dataclass(frozen=True)
class Target:
    """Where an instance's checks run: its environment, directory and user (from its
    ``LaunchSpec``)."""

    env: dict[str, str]
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None

    @classmethod
    def of(cls, spec: LaunchSpec) -> "Target":
        return cls(spec.env, spec.cwd, spec.uid, spec.gid, spec.groups)


def clip(text: str | bytes) -> str:
    """At most MAX_OUTPUT bytes of output, as text (bad bytes replaced)."""
    if isinstance(text, str):
        text = text.encode("utf-8", "replace")
    return text[:MAX_OUTPUT].decode("utf-8", "replace").strip()


class Probes:
    """Runs checks (the real ones; ``gaffer.testing.probes.FakeProbes`` in unit tests)."""

    async def run(self, check: HealthCheck, target: Target) -> Result:
        try:
            async with asyncio.timeout(check.timeout):
                if check.type == "exec":
                    return await _exec(check, target)
                if check.type == "http":
                    return await _http(check, target)
                return await _tcp(check, target)
        except TimeoutError:
            return Result(False, f"timed out after {check.timeout:g}s")
        except OSError as exc:
            return Result(False, clip(exc.strerror or str(exc)))

async def _http(check: HealthCheck, target: Target) -> Result:
    url = expand(check.url or "", target.env)
    try:
        answer = await httpprobe.get(url)
    except (ValueError, httpprobe.BadResponse) as exc:
        return Result(False, clip(str(exc)))
    ok = 200 <= answer.status < 400
    text = answer.body.decode("utf-8", "replace")
    return Result(ok, clip(f"HTTP {answer.status} {answer.reason}\n{text}"))


async def _tcp(check: HealthCheck, target: Target) -> Result:
    host = expand(check.host, target.env)
    port_text = expand(check.port or "", target.env)
    if not port_text.isdecimal() or not 1 <= int(port_text) <= 65_535:
        return Result(False, f"port {port_text!r} is not a port 1..65535")
    _, writer = await asyncio.open_connection(host, int(port_text))
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return Result(True, f"connected to {host}:{port_text}")


async def _exec(check: HealthCheck, target: Target) -> Result:
    argv = tuple(expand(word, target.env) for word in check.command)
    run = _ExecRun()
    try:
        run.start(argv, target)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return Result(False, clip(f"cannot run {argv[0]}: {exc}"))
    try:
        code = await run.exited
    finally:
        run.close()
    status = "exit 0" if code == 0 else f"exit {code}" if code >= 0 else f"killed by signal {-code}"
    output = run.output()
    return Result(code == 0, clip(f"{output}\n({status})" if output else f"({status})"))


class _ExecRun:
    """One exec check's process: its exit through a pidfd, its output through a pipe. A run
    closed before the exit (timeout, cancel) kills the group and still reaps it later."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = self._loop.create_future()
        self._chunks: list[bytes] = []
        self._size = 0
        self._pipe: int | None = None
        self._pidfd: int | None = None
        self._popen: subprocess.Popen | None = None
        self.pid: int | None = None

    def start(self, argv: tuple[str, ...], target: Target) -> None:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            self.pid, self._popen = spawning.spawn(
                argv, target.env, (devnull(), write_end, write_end),
                cwd=target.cwd, uid=target.uid, gid=target.gid, groups=target.groups,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        reaper.own(self.pid)
        self._pipe = read_end
        os.set_blocking(read_end, False)
        self._loop.add_reader(read_end, self._on_output)
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._on_exit)

    def _on_output(self) -> None:
        assert self._pipe is not None
        try:
            data = os.read(self._pipe, 65_536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_pipe()
        elif self._size < MAX_OUTPUT:
            self._chunks.append(data[: MAX_OUTPUT - self._size])
            self._size += len(self._chunks[-1])

    def _on_exit(self) -> None:
        assert self._pidfd is not None and self.pid is not None
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        _killpg(self.pid)
        try:
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = -1
        reaper.disown(self.pid)
        if self._popen is not None:
            self._popen.returncode = code  # so Popen never waits for it again
        if self._pipe is not None:
            self._on_output()
        if not self.exited.done():
            self.exited.set_result(code)

    def output(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace").strip()

    def close(self) -> None:
        """Kill the group if it still runs (the exit watch stays, and reaps it)."""
        if self._pidfd is not None and self.pid is not None:
            _killpg(self.pid)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            self._loop.remove_reader(self._pipe)
            os.close(self._pipe)
            self._pipe = None


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
