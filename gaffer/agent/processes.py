"""How the Manager gets its processes, and what it uses of them, as protocols.

The Manager never constructs a ``Process`` itself: it asks a ``ProcessFactory`` to spawn or
adopt one and uses it only through ``Proc``. ``Processes`` is the real factory (``Process`` on
the running loop, tracked by the host's ``Tracker``); tests pass
``gaffer.testing.process.FakeProcesses``. ``ProcessHooks`` are told of every process the
Manager starts, adopts or sees end (the spawn journal, ``keeping.Keeping``).

A burst of spawns goes in three steps: ``prepare`` each (on the loop's thread: pipes, the
program looked up; a missing program fails here), ``launch`` them all (their execs, in the
factory's lanes: ``lanes``), then ``Launch.finish`` each in order, which watches the process
(an exec that failed raises there, for that spawn only). A single spawn is ``spawn``.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Protocol, Sequence

from gaffer.agent.lanes import Lanes
from gaffer.agent.ownership import ProcInfo
from gaffer.agent.process import SPAWN_ERRORS, ExitCallback, LaunchSpec, OutputCallback, Process
from gaffer.agent.spawning import Exec
from gaffer.agent.tracking import Tracker


class Proc(Protocol):
    """What the Manager uses of a process (``Process``; ``gaffer.testing.process.FakeProcess``)."""

    pid: int | None
    started_at: float | None

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


class Launch(Protocol):
    """A spawn prepared: ``finish`` it exactly once, after ``ProcessFactory.launch`` (or
    alone: it then runs its exec itself)."""

    def finish(self) -> Proc:
        """Watch the process; raises SpawnError if it did not start."""
        ...


class ProcessFactory(Protocol):
    """How the Manager gets processes: spawned (raises SpawnError) or adopted (AdoptError,
    ValueError). ``Processes`` makes real ones; tests pass ``FakeProcesses``."""

    def spawn(
        self, spec: LaunchSpec, name: str, on_exit: ExitCallback, on_output: OutputCallback | None
    ) -> Proc: ...

    def prepare(
        self, spec: LaunchSpec, name: str, on_exit: ExitCallback, on_output: OutputCallback | None
    ) -> Launch:
        """Prepare one spawn of a burst; SpawnError if it cannot start at all."""
        ...

    def launch(self, launches: Sequence[Launch]) -> None:
        """Run the execs of ``launches`` (of this factory), in lanes when there are several;
        returns when all have run. What failed is raised by its own ``finish``."""
        ...

    def close(self) -> None:
        """Release what spawning holds (the lanes); processes are not touched."""
        ...

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
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        tracker: Tracker | None = None,
        lanes: Lanes | None = None,
    ) -> None:
        """``lanes``: where a burst's execs run (by default one lane per CPU, at most 4)."""
        self._loop = loop
        self.tracker = tracker
        self.lanes = lanes if lanes is not None else Lanes()

    def spawn(
        self, spec: LaunchSpec, name: str, on_exit: ExitCallback, on_output: OutputCallback | None
    ) -> Process:
        process = Process(spec, on_exit, on_output, self._loop, self.tracker, name)
        process.spawn()
        return process

    def prepare(
        self, spec: LaunchSpec, name: str, on_exit: ExitCallback, on_output: OutputCallback | None
    ) -> Started:
        process = Process(spec, on_exit, on_output, self._loop, self.tracker, name)
        return Started(process, process.prepare())

    def launch(self, launches: Sequence[Launch]) -> None:
        """Only posix_spawns go in lanes; a Popen runs at its ``finish``, on this thread."""
        fast = [launch.run for launch in launches if isinstance(launch, Started) and launch.child.fast]
        self.lanes.run(fast)

    def close(self) -> None:
        self.lanes.close()

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


class Started:
    """The real ``Launch``: a ``Process`` prepared and its ``Exec``, run in a lane or at
    ``finish``."""

    def __init__(self, process: Process, child: Exec) -> None:
        self.process = process
        self.child = child
        self._result: tuple[int, subprocess.Popen | None] | BaseException | None = None

    def run(self) -> None:
        """Run the exec and keep what came of it (any thread; once)."""
        if self._result is None:
            try:
                self._result = self.child.run()
            except SPAWN_ERRORS as exc:
                self._result = exc

    def finish(self) -> Process:
        self.run()
        result = self._result
        if isinstance(result, BaseException):
            raise self.process.failed(result) from result
        assert result is not None
        self.process.started(*result)
        return self.process
