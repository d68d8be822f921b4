"""How the Manager gets its processes, and what it uses of them, as protocols.

The Manager never constructs a ``Process`` itself: it asks a ``ProcessFactory`` to spawn or
adopt one and uses it only through ``Proc``. ``Processes`` is the real factory (``Process`` on
the running loop, tracked by the host's ``Tracker``); tests pass
``gaffer.testing.process.FakeProcesses``. ``ProcessHooks`` are told of every process the
Manager starts, adopts or sees end (the spawn journal, ``keeping.Keeping``).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from gaffer.agent.ownership import ProcInfo
from gaffer.agent.process import ExitCallback, LaunchSpec, OutputCallback, Process
from gaffer.agent.tracking import Tracker


class Proc(Protocol):
    """What the Manager uses of a process (``Process``; ``gaffer.testing.process.FakeProcess``)."""

    pid: int | None
    started_at: float | None
    spec: LaunchSpec
    """What it was started with (its checks run in the same environment, directory and user)."""

    @property
    def alive(self) -> bool: ...

    def signal(self, sig: int, group: bool = True) -> None: ...

    def write(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def stream_fds(self) -> dict[str, int]: ...

    def abandon(self) -> None: ...


class ProcessHooks(Protocol):
    """Who else hears of every process the Manager starts, adopts or sees end (the spawn
    journal, the fd keeper): passed to the Manager's constructor, called after each event."""

    def on_spawn(self, instance_id: str, process: Proc, spec: str | None, oneoff: bool) -> None: ...

    def on_adopt(self, instance_id: str, process: Proc) -> None: ...

    def on_exit(self, instance_id: str, process: Proc, oneoff: bool) -> None: ...


class Found(Protocol):
    """A live process an earlier agent spawned (``adoption.Found``)."""

    pid: int
    instance_id: str
    template: str
    ordinal: int | str
    started_at: float
    spec: str | None


class ProcessFactory(Protocol):
    """How the Manager gets processes: spawned (raises SpawnError) or adopted (AdoptError,
    ValueError). ``Processes`` makes real ones; tests pass ``FakeProcesses``."""

    def spawn(
        self, spec: LaunchSpec, name: str, on_exit: ExitCallback, on_output: OutputCallback | None
    ) -> Proc: ...

    def adopt(
        self,
        spec: LaunchSpec,
        found: Found,
        fds: dict[str, int],
        name: str,
        on_exit: ExitCallback,
        on_output: OutputCallback | None,
        leader: ProcInfo | None = None,
        members: tuple[ProcInfo, ...] = (),
    ) -> Proc: ...


class Processes:
    """The real ProcessFactory: ``Process`` on the running loop, tracked by ``tracker``."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, tracker: Tracker | None = None
    ) -> None:
        self._loop = loop
        self.tracker = tracker

    def spawn(
        self, spec: LaunchSpec, name: str, on_exit: ExitCallback, on_output: OutputCallback | None
    ) -> Process:
        process = Process(spec, on_exit, on_output, self._loop, self.tracker, name)
        process.spawn()
        return process

    def adopt(
        self,
        spec: LaunchSpec,
        found: Found,
        fds: dict[str, int],
        name: str,
        on_exit: ExitCallback,
        on_output: OutputCallback | None,
        leader: ProcInfo | None = None,
        members: tuple[ProcInfo, ...] = (),
    ) -> Process:
        return Process.adopt(
            spec, found.pid, found.started_at, fds, on_exit, on_output, self._loop,
            self.tracker, name, found=leader, members=members,
        )
