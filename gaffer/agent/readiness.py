"""Readiness: what the Executor does for templates with a check or ``notify``.

The Executor tells it of each instance's life (``spawned``, ``up``, ``adopted``, ``down``); it
runs the checks (``Checks``), listens on the notify socket (``NotifySocket``), and carries out
their verdicts on the instance::

    up (startsecs passed) ─► Checks.watch (a check), or a watch that only READY=1 moves
    verdict ─► running/unhealthy -> ready:   proc.<t>.ready {output}
               running/ready -> unhealthy:   proc.<t>.unhealthy {output, failures}
                                             restart_on_unhealthy: ``restart(entry, inst)``
                                             (the Executor stops the group; the exit then
                                             respawns it and counts for flapping)
    READY=1 from pid ─► owner_of(pid) ─► that instance's watch: ready (if it is up; said
                        while starting, it is ready the moment it is up)
    down (stop, exit, abandon) ─► unwatch: its timer and check cancelled

A verdict about an earlier process of an instance (its ``incarnation``) is ignored.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Callable

from gaffer.agent.checks import Checks
from gaffer.agent.entry import Entry
from gaffer.agent.health import Verdict
from gaffer.agent.instance import Instance
from gaffer.agent.lifecycle import UP, Event, State
from gaffer.agent.notify import NotifySocket, owner_of
from gaffer.agent.probes import Target
from gaffer.common import topics
from gaffer.common.bus import EventBus
from gaffer.common.clock import Clock
from gaffer.common.endpoints import private_dir, runtime_dir
from gaffer.common.errors import GafferError, SpawnError
from gaffer.common.template import Template

log = logging.getLogger("gaffer.readiness")

Restart = Callable[[Entry, Instance], None]


def gated(template: Template) -> bool:
    """Whether the template's instances must become ready (else ``running`` is ready)."""
    return template.health is not None or template.notify


class Readiness:
    def __init__(
        self,
        *,
        node: str,
        bus: EventBus,
        clock: Clock,
        notify: Callable[[], None],
        restart: Restart,
        notify_dir: Path | None = None,
        checks: Checks | None = None,
        changed: Callable[[Entry], None] | None = None,
    ) -> None:
        """``notify`` wakes the Manager's waiters; ``restart`` stops an unhealthy instance
        (the Executor's); ``changed`` hears of every verdict that moved an instance (a roll
        waits for its replacements to be ready); ``notify_dir``: where the notify socket goes (0700; by default a
        directory of this process under the runtime dir, made on first use)."""
        self._node = node
        self._bus = bus
        self._clock = clock
        self._wake = notify
        self._restart = restart
        self._changed_hook = changed
        self._notify_dir = notify_dir
        self._made_dir: Path | None = None
        self.checks = checks if checks is not None else Checks(clock)
        self._socket: NotifySocket | None = None
        self._by_pid: dict[int, Instance] = {}
        self._pid_of: dict[Instance, int] = {}
        self._early: set[Instance] = set()

    # ----------------------------------------------------------------- the instance's life

    def spawn_env(self, template: Template) -> dict[str, str]:
        """What a process of ``template`` gets in its environment: NOTIFY_SOCKET for notify."""
        if not template.notify:
            return {}
        return {"NOTIFY_SOCKET": self._socket_path()}

    def spawned(self, inst: Instance, template: Template) -> None:
        """A new process: a notify one may say READY=1 from now on (even before it is up)."""
        self.down(inst)
        inst.gated = gated(template)
        if template.notify:
            self._listen(inst)

    def _listen(self, inst: Instance) -> None:
        if inst.pid is not None:
            self._by_pid[inst.pid] = inst
            self._pid_of[inst] = inst.pid

    def up(self, entry: Entry, inst: Instance) -> None:
        """``inst`` is up (startsecs passed, or adopted): start watching it."""
        template = entry.template
        inst.gated = gated(template)
        if not inst.gated:
            return
        check = template.health
        target = Target.of(inst.process.spec) if check is not None and inst.process is not None else None
        on_change = functools.partial(self._changed, entry, inst, inst.incarnation)
        status = inst.state if inst.state in UP else State.RUNNING
        self.checks.watch(inst, on_change, target and check, target,
                          restart=template.restart_on_unhealthy, status=status)
        if inst in self._early:
            self._early.discard(inst)
            self.checks.notified(inst, "READY=1")

    def adopted(self, entry: Entry, inst: Instance) -> None:
        """An earlier agent's process: checked again from now; one of a notify-only template
        is taken as ready (it said so to the agent before, and will not again)."""
        if entry.template.notify:
            self._listen(inst)
        self.up(entry, inst)
        if entry.template.notify and entry.template.health is None:
            self.checks.notified(inst, "adopted")

    def down(self, inst: Instance) -> None:
        """``inst``'s process stops, ended, or is let go: its checks end."""
        self.checks.unwatch(inst)
        self._early.discard(inst)
        pid = self._pid_of.pop(inst, None)
        if pid is not None and self._by_pid.get(pid) is inst:
            del self._by_pid[pid]

    def rewatch(self, entry: Entry) -> None:
        """The template's check changed: its up instances are checked by the new one from
        now, from the status they have."""
        for inst in entry.instances.values():
            if inst.state in UP and inst.process is not None:
                self.checks.unwatch(inst)
                self.up(entry, inst)

    # ----------------------------------------------------------------- verdicts

    def _changed(self, entry: Entry, inst: Instance, incarnation: int, verdict: Verdict, output: str) -> None:
        if inst.incarnation != incarnation or inst.state not in UP or verdict.became is None:
            return
        became = verdict.became
        inst.take(Event.READY if became is State.READY else Event.UNHEALTHY)
        extra: dict[str, Any] = {"output": output}
        if became is State.UNHEALTHY:
            extra["failures"] = verdict.watch.failures
            log.warning("%s: unhealthy after %d failed checks: %s", inst.id, verdict.watch.failures,
                        output.splitlines()[0] if output else "")
        self._bus.publish(topics.proc(inst.template, became.value), inst.event(self._node, self._clock.wall(), **extra))
        self._wake()
        if verdict.restart:
            self._restart(entry, inst)
        elif self._changed_hook is not None:
            self._changed_hook(entry)

    def _on_ready(self, pid: int, text: str) -> None:
        owner = owner_of(pid, self._by_pid.get)
        if not isinstance(owner, Instance):
            log.debug("notify: READY=1 from pid %d, which belongs to no notify instance", pid)
            return
        if not self.checks.notified(owner, text) and owner.state is State.STARTING:
            self._early.add(owner)

    def _socket_path(self) -> str:
        if self._socket is None:
            directory = self._notify_dir
            try:
                if directory is None:
                    directory = self._made_dir = private_dir(runtime_dir() / f"notify-{os.getpid()}")
                socket = NotifySocket(directory, self._on_ready)
                path = socket.open()
            except (OSError, GafferError) as exc:
                message = getattr(exc, "message", None) or getattr(exc, "strerror", None) or str(exc)
                raise SpawnError(f"notify: cannot open the notify socket in {directory}: {message}") from None
            self._socket = socket
            return path
        return str(self._socket.path)

    @property
    def datagrams(self) -> int:
        """Datagrams the notify socket has read (junk and dropped ones too)."""
        return self._socket.received if self._socket is not None else 0

    def abandon(self) -> None:
        """Stop every check now (the agent lets go of its processes)."""
        self.checks.unwatch_all()
        self._by_pid.clear()
        self._pid_of.clear()
        self._early.clear()

    async def aclose(self) -> None:
        await self.checks.aclose()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._made_dir is not None:
            try:
                self._made_dir.rmdir()
            except OSError:
                pass
