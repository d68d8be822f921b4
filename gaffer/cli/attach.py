"""``gafferctl run``: a one-off run attached to this terminal, as if it ran here.

::

    subscribe output.<t>.run-, proc.<t>.exit, then ~run.<token> (the sync marker, last)
    run {name, args, env, lease, sync}   (the controller waits for the marker: no line missed)
      ├─ events ──► its output lines, as they come; its exit event ends the run
      ├─ wait every RENEW seconds ──► renews the lease; a backstop for a lost exit event
      ├─ stdin ──► write {id, node, data}, then {eof} (only if the template allows input)
      └─ Ctrl-C / SIGTERM ──► release {signal}: the signal to the run's whole group, KILL after
                              its graceful_timeout; exit 130 / 143 once it has ended
    release ──► the agent forgets the run (``ps`` no longer lists it)

If this command vanishes (killed, its host gone, the controller gone), nothing renews the
lease, and the run's agent stops the run within ``lease`` seconds of the last renewal
(``gaffer.agent.attended``). The decisions (``parse_env``, ``exit_code``) are pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import threading
from typing import Any, TextIO

from gaffer.cli.logfollow import LogFollow, render
from gaffer.client import AsyncClient, ReceivedEvent
from gaffer.common.errors import GafferError, InvalidRequest, StdinClosed, StdinFull
from gaffer.common.limits import RUN_LEASE
from gaffer.common.signals import parse_signal, signal_name

LEASE = RUN_LEASE
"""Seconds a run outlives a vanished client, counted from its last renewal."""
RENEW = 5.0
"""Seconds of each ``wait``: how often the lease is renewed."""
SYNC_WAIT = 5.0
"""The controller's own wait for the sync marker (``runops.SYNC_WAIT``), added to the timeout."""
EXIT_GRACE = 2.0
"""After ``wait`` says the run ended, how long the rest of its output may take to arrive."""
STDIN_CHUNK = 32 * 1024
STDIN_RETRY = 0.05
MAX_EARLY = 10_000
"""Events kept while the run's id is not known yet (other runs of the template included)."""


def parse_env(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``-e KEY=VALUE`` values, later ones winning; ValueError naming the bad one (the
    template's rule for ``env``: a name is not empty and has no NUL)."""
    env: dict[str, str] = {}
    for value in values:
        shown = repr(value) if len(value) <= 80 else f"a value of {len(value)} characters"
        key, sep, item = value.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {shown}")
        if not key:
            raise ValueError(f"the variable name is empty in {shown}")
        if "\0" in value:
            raise ValueError(f"{key!r}: must not contain a NUL byte")
        env[key] = item
    return env


def exit_code(exit: dict[str, Any] | None, interrupted: int | None) -> int:
    """What ``gafferctl run`` exits with: 128 + the signal that interrupted it (130 for
    Ctrl-C), else the run's status, or 128 + the signal that ended it (1 if unknown)."""
    if interrupted is not None:
        return 128 + interrupted
    if exit is None:
        return 1
    if exit.get("signal"):
        return 128 + int(parse_signal(exit["signal"]))
    status = exit.get("status")
    return status if isinstance(status, int) else 1


class Attached:
    """One ``gafferctl run``, from start to release; ``await attached()`` -> exit code."""

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        args: list[str] | None,
        env: dict[str, str],
        *,
        lease: float = LEASE,
        stdin: int | None = 0,
        out: TextIO | None = None,
        err: TextIO | None = None,
        as_json: bool = False,
    ) -> None:
        self._client = client
        self._name = name
        self._args = args
        self._env = env
        self._lease = lease
        self._renew = min(RENEW, lease / 2)
        self._stdin = stdin
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._json = as_json
        self._numbers = LogFollow()
        self._ident: str | None = None
        self._node: str | None = None
        self._early: list[ReceivedEvent] = []
        self._exit: dict[str, Any] | None = None
        self._interrupted: int | None = None
        self._done: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __call__(self) -> int:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        handled = _handle_signals(loop, self._on_signal)
        marker = f"~run.{secrets.token_hex(8)}"
        prefixes = [f"output.{self._name}.run-", f"proc.{self._name}.exit", marker]
        try:
            self._spawn(self._listen(prefixes))
            started = await self._client.call(
                "run", timeout=self._client.timeout + SYNC_WAIT, name=self._name, args=self._args,
                env=self._env or None, lease=self._lease, sync=marker,
            )
            self._ident, self._node = started["id"], started["node"]
            for event in self._early:
                self._on_event(event)
            self._early.clear()
            if self._interrupted is not None:
                self._spawn(self._release(self._interrupted))
            self._spawn(self._keep())
            if started.get("stdin") and self._stdin is not None:
                self._spawn(self._pump_stdin(self._stdin))
            await self._done
            return await self._finish()
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(BaseException):
                    await task

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task) -> None:
        """A helper task that failed ends the run's attachment with its error."""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        assert self._done is not None
        if not self._done.done():
            self._done.set_exception(task.exception())  # type: ignore[arg-type]

    def _end(self) -> None:
        assert self._done is not None
        if not self._done.done():
            self._done.set_result(None)

    async def _finish(self) -> int:
        assert self._ident is not None and self._node is not None
        if self._json:
            lines = await self._client.call("logs", target=self._ident, node=self._node, lines=10_000)
            result = {"id": self._ident, "node": self._node, "exit": self._exit, "output": lines}
            self._out.write(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
            self._out.flush()
        with contextlib.suppress(GafferError):
            await self._client.call("release", id=self._ident, node=self._node)
        return exit_code(self._exit, self._interrupted)

    # ----------------------------------------------------------------- signals

    def _on_signal(self, signum: int) -> None:
        """The first Ctrl-C (or SIGTERM) stops the run and waits for its end; a second one
        leaves at once (the agent KILLs the run after its graceful_timeout)."""
        if self._interrupted is not None:
            self._end()
            return
        self._interrupted = signum
        if self._ident is not None:
            self._spawn(self._release(signum))

    async def _release(self, signum: int) -> None:
        await self._client.call("release", id=self._ident, node=self._node, signal=signal_name(signum))

    # ----------------------------------------------------------------- output and end

    async def _listen(self, prefixes: list[str]) -> None:
        async for event in self._client.events(prefixes):
            if not isinstance(event, ReceivedEvent):
                continue
            if self._ident is None:
                if len(self._early) < MAX_EARLY:
                    self._early.append(event)
                continue
            self._on_event(event)

    def _on_event(self, event: ReceivedEvent) -> None:
        data = event.data
        if data.get("id") != self._ident or data.get("node") != self._node:
            return
        if event.topic.startswith("proc."):
            self._exit = {"status": data.get("status"), "signal": data.get("signal")}
            self._end()
        elif self._json:
            return
        else:
            # lines, and ``[N lines skipped]`` where the numbers say some went missing
            for text, err in render(self._numbers.event(event.ts, data), with_id=False, as_json=False):
                stream = self._err if err else self._out
                stream.write(text)
                stream.flush()

    async def _keep(self) -> None:
        """Wait on the run in RENEW-second steps (each renews its lease). When the controller
        says it ended, the exit event (behind the last output) has EXIT_GRACE to arrive."""
        assert self._done is not None
        while True:
            ended = await self._client.call(
                "wait", timeout=self._renew + self._client.timeout, id=self._ident, node=self._node,
                seconds=self._renew,
            )
            if ended["done"]:
                break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._done), EXIT_GRACE)
        if self._exit is None:
            self._exit = ended["exit"]
        self._end()

    # ----------------------------------------------------------------- stdin

    async def _pump_stdin(self, fd: int) -> None:
        """This command's stdin to the run's, chunk by chunk, then its end of file. Pumping
        stops quietly when the run closed its stdin or ended (``head -1`` does that)."""
        try:
            while True:
                try:
                    chunk = await read_chunk(fd)
                except OSError:
                    chunk = b""
                if chunk:
                    await self._write(chunk)
                else:
                    await self._client.call("write", id=self._ident, node=self._node, data=b"", eof=True)
                    return
        except (StdinClosed, InvalidRequest):
            return

    async def _write(self, chunk: bytes) -> None:
        while True:
            try:
                await self._client.call("write", id=self._ident, node=self._node, data=chunk)
                return
            except StdinFull:
                await asyncio.sleep(STDIN_RETRY)  # the run reads slowly: let its pipe drain


def _handle_signals(loop: asyncio.AbstractEventLoop, handler: Any) -> tuple[int, ...]:
    """SIGINT and SIGTERM to ``handler``; none off the main thread, where Python cannot take
    signals (a test driving the command in a worker thread)."""
    if threading.current_thread() is not threading.main_thread():
        return ()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, handler, signum)
    return (signal.SIGINT, signal.SIGTERM)


async def read_chunk(fd: int) -> bytes:
    """One chunk of ``fd`` (b"" at its end) without blocking the loop: a pipe or terminal is
    read once the loop says it is readable; a file (which epoll refuses, and which never
    blocks) at once. The descriptor is left blocking: it is shared with the shell."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    try:
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    except (PermissionError, OSError):
        return os.read(fd, STDIN_CHUNK)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return os.read(fd, STDIN_CHUNK)
