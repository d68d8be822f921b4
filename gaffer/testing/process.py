"""Processes that exist only in the test: they exit when told, and remember every signal.

``FakeProcesses`` is a ``ProcessFactory`` for the Manager: each spawn gives a ``FakeProcess``
with a fresh pid (from 100000, far from real ones the test might meet), and the factory keeps
them all, in order, so a test can pick one (``last("web.2")``) and make it exit, print or
ignore signals. Nothing is forked, no descriptor is opened.

Signals behave as for a plain process: one that kills (TERM, INT, KILL, ... anything but the
ones the process ``ignores``, and never KILL) makes it exit by that signal, delivered on the
clock's next ``run``, as a real exit is seen on a later loop turn. ``exit(code)`` and
``emit(stream, data)`` deliver at once, as the pidfd and the pipe of a real process would.
"""

from __future__ import annotations

import itertools
import signal as _signal
from typing import Iterable

from gaffer.agent.ownership import ProcInfo
from gaffer.agent.process import ExitCallback, ExitStatus, LaunchSpec, OutputCallback
from gaffer.agent.processes import Found
from gaffer.common.clock import Clock
from gaffer.common.errors import AdoptError, SpawnError, StdinClosed

HARMLESS = frozenset({_signal.SIGCHLD, _signal.SIGCONT, _signal.SIGWINCH, _signal.SIGURG})


class FakeProcess:
    """Matches what the Manager uses of ``gaffer.agent.process.Process`` (``Proc``)."""

    def __init__(
        self,
        clock: Clock,
        spec: LaunchSpec,
        name: str,
        pid: int,
        on_exit: ExitCallback,
        on_output: OutputCallback | None,
        ignores: Iterable[int] = (),
        adopted: bool = False,
    ) -> None:
        self.spec = spec
        self.name = name
        self.pid: int | None = pid
        self.started_at: float | None = clock.wall()
        self.status: ExitStatus | None = None
        self.signals: list[int] = []
        self.written = bytearray()
        self.stdin_closed = False
        self.ignores = set(ignores)
        self.adopted = adopted
        self.abandoned = False
        self._clock = clock
        self._on_exit = on_exit
        self._on_output = on_output

    @property
    def alive(self) -> bool:
        return self.status is None and not self.abandoned

    @property
    def env(self) -> dict[str, str]:
        return self.spec.env

    def signal(self, sig: int, group: bool = True) -> None:
        """Record ``sig``; unless ignored or harmless, the process dies of it (next ``run``)."""
        if not self.alive:
            return
        self.signals.append(int(sig))
        if sig in HARMLESS or (sig in self.ignores and sig != _signal.SIGKILL):
            return
        self._clock.call_soon(self._die, int(sig))

    def _die(self, sig: int) -> None:
        if self.alive:
            self.exit(signal=sig)

    def exit(self, code: int | None = 0, signal: int | None = None) -> None:
        """End now with exit ``code``, or killed by ``signal``; the Manager hears at once."""
        if not self.alive:
            raise AssertionError(f"{self.name} (pid {self.pid}) is not running")
        self.status = ExitStatus(None if signal is not None else code, signal)
        self._on_exit(self.status)

    def emit(self, stream: str, data: bytes) -> None:
        """Output on ``out`` or ``err``, as one read of the pipe would give it."""
        if self._on_output is None:
            raise AssertionError(f"{self.name}: {stream} is not captured")
        self._on_output(stream, data)

    def write(self, data: bytes) -> None:
        if not self.spec.stdin or not self.alive:
            raise StdinClosed(f"stdin of pid {self.pid} is closed")
        self.written += data

    def close_stdin(self) -> None:
        """Record the end of input (``stdin_closed``)."""
        if not self.spec.stdin or not self.alive:
            raise StdinClosed(f"stdin of pid {self.pid} is closed")
        self.stdin_closed = True

    def stream_fds(self) -> dict[str, int]:
        """Made-up descriptor numbers (negative: nothing real may ever use them)."""
        fds = {}
        if self.spec.stdout:
            fds["out"] = -1
        if self.spec.stderr:
            fds["err"] = -2
        if self.spec.stdin:
            fds["in"] = -3
        return fds

    def abandon(self) -> None:
        self.abandoned = True


class FakeProcesses:
    """A ProcessFactory of FakeProcess; ``fail`` makes spawns of a program raise SpawnError."""

    def __init__(self, clock: Clock, first_pid: int = 100_000) -> None:
        self._clock = clock
        self._pids = itertools.count(first_pid)
        self.spawned: list[FakeProcess] = []
        self.failing: dict[str, str] = {}
        self.ignores: dict[str, set[int]] = {}
        """Instance id -> signals its processes ignore (a stubborn one: ``{SIGTERM}``)."""

    def fail(self, program: str, reason: str = "command not found") -> None:
        """Spawns of ``program`` (argv[0]) fail with ``reason`` until ``heal``."""
        self.failing[program] = reason

    def heal(self, program: str) -> None:
        self.failing.pop(program, None)

    def spawn(
        self, spec: LaunchSpec, name: str, on_exit: ExitCallback, on_output: OutputCallback | None
    ) -> FakeProcess:
        program = spec.argv[0] if spec.argv else ""
        if program in self.failing:
            raise SpawnError(f"{self.failing[program]}: {program!r}")
        process = FakeProcess(
            self._clock, spec, name, next(self._pids), on_exit, on_output, self.ignores.get(name, ())
        )
        self.spawned.append(process)
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
    ) -> FakeProcess:
        if any(p.pid == found.pid and p.alive for p in self.spawned):
            raise AdoptError(f"cannot adopt pid {found.pid}: it is already watched")
        process = FakeProcess(self._clock, spec, name, found.pid, on_exit, on_output, adopted=True)
        process.started_at = found.started_at
        self.spawned.append(process)
        return process

    # ----------------------------------------------------------------- looking

    def of(self, name: str) -> list[FakeProcess]:
        """Every process instance ``name`` had, oldest first."""
        return [p for p in self.spawned if p.name == name]

    def last(self, name: str) -> FakeProcess:
        """The newest process of instance ``name``."""
        found = self.of(name)
        if not found:
            raise AssertionError(f"{name} was never spawned")
        return found[-1]

    def alive(self, prefix: str = "") -> list[FakeProcess]:
        """Live processes whose instance id starts with ``prefix``."""
        return [p for p in self.spawned if p.alive and p.name.startswith(prefix)]
