"""The local Manager: keeps each template's instances on this node as they are wanted.

For every template the Manager holds what is *wanted* (``plan.Wanted``: the ordinals that run
here, active or paused, the spec and restart generation, the rolling allowance) and what *is*
(one ``Instance`` per ordinal, one-off ``Runs``). Operations only replace what is wanted and
ask for a converge, so calling them twice changes nothing. Deciding is pure (``plan``,
``lifecycle``, ``flapping``); acting is the ``Executor``'s::

    operation ──► Entry.wanted ──► Executor.converge_soon ──► plan(...) -> Actions ──► act
    exit ──────────────────────────────────────────────────► on_exit(...) -> Outcome ──► act

Collaborators come in through the constructor, each with a real default: the ``Clock`` (every
time read and every callback scheduled goes through it), the ``ProcessFactory`` (spawn and
adopt), the ``Lease`` (may this node spawn now?), the ``ProcessHooks`` told of every spawn,
adoption and exit (the spawn journal, the fd keeper) and the stats ``Sampler``. Unit tests
pass ``gaffer.testing`` fakes for the clock and the processes, and nothing else changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from gaffer.agent.changes import Changes
from gaffer.agent.checks import Checks
from gaffer.agent.entry import Entry
from gaffer.agent.executor import SHOWN_AS_EVENT, Executor
from gaffer.agent.instance import Instance
from gaffer.agent.lease import Lease
from gaffer.agent.lifecycle import Event, Policy, State
from gaffer.agent.output import Line
from gaffer.agent.ownership import ProcInfo
from gaffer.agent.plan import Ordinal, Wanted, sort_key
from gaffer.agent.processes import Found, ProcessFactory, ProcessHooks, Processes
from gaffer.agent.stats import Sampler, StatsSampler, summarize
from gaffer.agent.tracking import Tracker
from gaffer.common import topics
from gaffer.common.bus import EventBus
from gaffer.common.clock import Clock, LoopClock
from gaffer.common.dependson import stop_waves
from gaffer.common.errors import (
    InstanceNotFound, InvalidRequest, SpawnError, StdinNotEnabled, TemplateExists, TemplateNotFound,
)
from gaffer.common.signals import parse_signal
from gaffer.common.template import Template

__all__ = ["Manager", "SHOWN_AS_EVENT"]

log = logging.getLogger("gaffer.manager")

KILL_MARGIN = 5.0
"""After its graceful_timeout a stopping process is sent KILL: time for the kernel to end it
and for its exit to be seen, before an agent that is going away stops waiting for it."""


class Manager:
    """Runs templates' instances on this node. Use inside a running event loop (or with a
    fake clock and fake processes)."""

    def __init__(
        self,
        node: str | None = None,
        bus: EventBus | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        environ: dict[str, str] | None = None,
        agent_env: dict[str, str] | None = None,
        tracker: Tracker | None = None,
        lease: Lease | None = None,
        clock: Clock | None = None,
        processes: ProcessFactory | None = None,
        hooks: Sequence[ProcessHooks] = (),
        stats: Sampler | None = None,
        notify_dir: Path | None = None,
        checks: Checks | None = None,
    ) -> None:
        """``agent_env`` (agent mode) is added to every process's environment, with
        GAFFER_SPEC, so a restarted agent can recognise the processes it ran; ``tracker``
        tracks and stops every descendant of every instance (without one, only each
        instance's process group); ``lease`` says when nothing may be spawned (by default
        never); ``notify_dir``: where the sd_notify socket of ``notify`` templates goes (an
        agent's state dir; by default a 0700 directory of its own under the runtime dir);
        ``checks`` runs the readiness checks (tests pass one with fake probes)."""
        self.node = node or socket.gethostname()
        self.tracker = tracker
        self.bus = bus if bus is not None else EventBus()
        self._clock = clock if clock is not None else LoopClock(loop)
        self._stats = stats if stats is not None else StatsSampler()
        self._entries: dict[str, Entry] = {}
        self._changes = Changes()
        self._act = Executor(
            node=self.node,
            bus=self.bus,
            clock=self._clock,
            processes=processes if processes is not None else Processes(loop, tracker),
            hooks=hooks,
            lease=lease if lease is not None else Lease(),
            changes=self._changes,
            entries=self._entries,
            environ=dict(os.environ) if environ is None else environ,
            agent_env=agent_env,
            notify_dir=notify_dir,
            checks=checks,
        )

    @property
    def spawned(self) -> int:
        """Processes spawned so far (one-off runs included, adoptions not)."""
        return self._act.spawned

    # ----------------------------------------------------------------- what is wanted

    def add(
        self,
        template: Template,
        ordinals: Iterable[Ordinal] | None = None,
        *,
        max_unavailable: int | None = None,
        restart_gen: int = 0,
    ) -> None:
        """Start managing a new template (raises TemplateExists if the name is taken)."""
        if template.name in self._entries:
            raise TemplateExists(template.name)
        wanted = _wanted(template, ordinals, max_unavailable, restart_gen)
        entry = self._entries[template.name] = Entry(template, wanted, Policy.of(template))
        self.bus.publish(topics.template(template.name, "created"), entry.payload(self.node))
        self._act.converge_soon(entry)

    def apply(
        self,
        template: Template,
        ordinals: Iterable[Ordinal] | None = None,
        *,
        max_unavailable: int | None = None,
        restart_gen: int | None = None,
        active: bool | None = None,
    ) -> str:
        """Create or update; returns "created", "updated", "scaled" or "unchanged".

        ``ordinals``: the ordinals that run here (default 1..numprocesses);
        ``max_unavailable``: the rolling allowance here (default the template's
        ``update.max_unavailable``); ``restart_gen``: instances started with another
        generation are rolled (default: keep the current one); ``active``: pause (False) or
        resume (True) it in the same step, announced as ``stopped``/``started`` rather than
        as a scale (default: keep)."""
        entry = self._entries.get(template.name)
        if entry is None or entry.deleting:
            self.add(template, ordinals, max_unavailable=max_unavailable, restart_gen=restart_gen or 0)
            if active is False:
                self.stop(template.name)
            return "created"
        old, before = entry.template, entry.wanted
        generation = before.restart_gen if restart_gen is None else restart_gen
        now_active = before.active if active is None else active
        wanted = replace(_wanted(template, ordinals, max_unavailable, generation), active=now_active)
        restart = wanted.spec != before.spec or generation != before.restart_gen
        updated = restart or old.with_count(template.numprocesses) != template
        scaled = wanted.ordinals != before.ordinals or old.numprocesses != template.numprocesses
        entry.template, entry.wanted, entry.policy = template, wanted, Policy.of(template)
        if (old.health, old.restart_on_unhealthy) != (template.health, template.restart_on_unhealthy):
            self._act.readiness.rewatch(entry)
        if updated:
            payload = {**entry.payload(self.node), "restart": restart}
            self.bus.publish(topics.template(template.name, "updated"), payload)
        if now_active != before.active:
            if not now_active:
                entry.reset_flapping()
            self.bus.publish(topics.template(template.name, "started" if now_active else "stopped"),
                             entry.payload(self.node))
        elif scaled:
            payload = {**entry.payload(self.node), "previous": old.numprocesses}
            self.bus.publish(topics.template(template.name, "scaled"), payload)
        self._act.converge_soon(entry)
        return "updated" if updated else "scaled" if scaled else "unchanged"

    def scale(self, name: str, count: int) -> int:
        """Run ``count`` instances (ordinals 1..count); scale-down stops the highest ordinals."""
        if count < 0:
            raise InvalidRequest(f"count must be >= 0, got {count}")
        self.apply(self._entry(name).template.with_count(count))
        return count

    def assign(self, name: str, ordinals: Iterable[Ordinal]) -> None:
        """Run exactly these ordinals of ``name`` here (the cluster's per-node assignment)."""
        self.apply(self._entry(name).template, ordinals)

    async def remove(self, name: str) -> None:
        """Stop every instance of ``name`` and forget it; returns once all have exited."""
        entry = self._entry(name)
        instances = entry.instances.values()
        if instances and all(inst.state is State.FAILED for inst in instances):
            entry.gone_as = "failed"
        entry.wanted = replace(entry.wanted, deleting=True)
        for run in entry.runs:
            self._act.stop(entry, run)
        self._act.converge_soon(entry)
        await self.wait_until(lambda: self._entries.get(name) is not entry)

    def start(self, name: str) -> None:
        """Run the template again: resumes a stopped one, retries a failed or exited one."""
        entry = self._entry(name)
        if not entry.wanted.active:
            self.bus.publish(topics.template(name, "started"), entry.payload(self.node))
        entry.wanted = replace(entry.wanted, active=True)
        entry.reset_flapping()
        for inst in entry.instances.values():
            if inst.state in (State.EXITED, State.FAILED):
                inst.failures = 0
                inst.repeats = None
            elif inst.state is not State.BACKOFF:
                continue
            inst.cancel_timers()
            inst.take(Event.RESET)
        self._act.converge_soon(entry)

    def stop(self, name: str) -> None:
        """Pause: stop every instance but keep the template (cancels pending flap retries)."""
        entry = self._entry(name)
        if entry.wanted.active:
            self.bus.publish(topics.template(name, "stopped"), entry.payload(self.node))
        entry.wanted = replace(entry.wanted, active=False)
        entry.reset_flapping()
        self._act.converge_soon(entry)

    def restart(self, name: str) -> None:
        """Rolling restart of every instance, ``max_unavailable`` at a time."""
        entry = self._entry(name)
        entry.wanted = replace(entry.wanted, restart_gen=entry.wanted.restart_gen + 1)
        if not entry.wanted.active:
            self.start(name)
        self._act.converge_soon(entry)

    # ----------------------------------------------------------------- what is

    def templates(self) -> list[Template]:
        return [e.template for e in self._entries.values() if not e.deleting]

    def get(self, name: str) -> Template:
        return self._entry(name).template

    def has_runs(self, name: str) -> bool:
        """Whether a one-off run of ``name`` is still going (the template must stay)."""
        entry = self._entries.get(name)
        return entry is not None and entry.runs.alive()

    def template_status(self, name: str) -> dict[str, Any]:
        entry = self._entry(name)
        counts: dict[str, int] = {}
        for inst in entry.instances.values():
            counts[inst.state.value] = counts.get(inst.state.value, 0) + 1
        return {
            "name": name,
            "status": entry.status(self._clock.time()),
            "numprocesses": entry.template.numprocesses,
            "ordinals": sorted(entry.wanted.ordinals, key=str),
            "states": counts,
            "flap_retries": max((inst.flap.retries for inst in entry.instances.values()), default=0),
        }

    def instances(self, name: str | None = None) -> list[dict[str, Any]]:
        entries = [self._entry(name)] if name is not None else list(self._entries.values())
        now = self._clock.wall()
        out = []
        for entry in entries:
            for ordinal in sorted(entry.instances, key=sort_key):
                out.append(entry.instances[ordinal].info(self.node, now))
            out.extend(run.info(self.node, now) for run in entry.runs)
        return out

    def instance(self, instance_id: str) -> dict[str, Any]:
        """One row of ``instances()`` (InstanceNotFound if there is no such instance)."""
        return self.find(instance_id).info(self.node, self._clock.wall())

    def find(self, instance_id: str) -> Instance:
        try:
            name, ordinal = topics.split_instance_id(instance_id)
        except ValueError:
            raise InstanceNotFound(instance_id) from None
        entry = self._entries.get(name)
        if entry is not None:
            key: Ordinal = int(ordinal) if ordinal.isascii() and ordinal.isdecimal() else ordinal
            inst = entry.instances.get(key) or entry.runs.get(ordinal)
            if inst is not None:
                return inst
        raise InstanceNotFound(instance_id)

    def kill(self, target: str, sig: int | str = "TERM", group: bool = False) -> list[int]:
        """Signal one instance (``web.2``) or every instance of a template (``web``).

        Returns the pids signalled. An instance killed this way exits unexpectedly and is
        restarted by its policy, like any crash.
        """
        signum = parse_signal(sig)
        entry = self._entries.get(target)
        if entry is not None and not entry.deleting:
            victims = [*entry.instances.values(), *entry.runs]
        else:
            victims = [self.find(target)]
        pids = []
        for inst in victims:
            if inst.process is not None and inst.process.alive and inst.process.pid is not None:
                inst.process.signal(signum, group=group)
                pids.append(inst.process.pid)
        return pids

    def write(self, instance_id: str, data: bytes, eof: bool = False) -> None:
        """Write ``data`` to the stdin of a running instance whose template allows it; with
        ``eof``, close its stdin after that (the process reads end of file)."""
        inst = self.find(instance_id)
        if not self._entries[inst.template].template.redirect_input:
            raise StdinNotEnabled(instance_id)
        if inst.process is None or not inst.process.alive:
            raise InvalidRequest(f"{instance_id} is not running ({inst.state.value})")
        if data:
            inst.process.write(data)
        if eof:
            inst.process.close_stdin()

    def output(self, instance_id: str, count: int | None = 100, stream: str | None = None) -> list[Line]:
        return self.find(instance_id).output.tail(count, stream)

    async def stats(self, name: str | None = None) -> dict[str, Any]:
        """Per-instance psutil stats and their sum per template."""
        entries = [self._entry(name)] if name is not None else self._live_entries()
        rows = _pid_rows(entries)
        sampled = await self._stats.sample(pid for _, _, pid in rows)
        return summarize((entry.name for entry in entries), rows, sampled)

    def running(self) -> list[tuple[str, int]]:
        """(instance id, pid) of every instance with a process, one-off runs included: what
        the stats push samples (``statpush.py``)."""
        return [(ident, pid) for _, ident, pid in _pid_rows(self._live_entries())]

    def _live_entries(self) -> list[Entry]:
        return [e for e in self._entries.values() if not e.deleting]

    def _entry(self, name: str) -> Entry:
        entry = self._entries.get(name)
        if entry is None or entry.deleting:
            raise TemplateNotFound(name)
        return entry

    # ----------------------------------------------------------------- runs, adoption

    def run(
        self,
        name: str,
        args: Iterable[str] | None = None,
        *,
        lease: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Instance:
        """Spawn one process from ``name`` that is never restarted; await ``inst.done``.

        ``args`` replace the template's, ``env`` is added to its ``env``. With ``lease``
        (seconds), the run belongs to a client that must renew it (``lease_run``): it is
        stopped if the lease lapses (``attended``)."""
        entry = self._entry(name)
        template = entry.template if args is None else replace(entry.template, args=tuple(args))
        if env:
            template = replace(template, env={**template.env, **env})
        inst = entry.runs.new(template.name)
        inst.done = asyncio.get_running_loop().create_future()
        try:
            self._act.spawn(entry, inst, template)
        except SpawnError:
            entry.runs.discard(inst)
            raise
        if lease is not None:
            entry.runs.lease(str(inst.ordinal), self._clock.time(), lease)
            self._act.check_runs()
        return inst

    def lease_run(self, instance_id: str, seconds: float, sig: int | str | None = None) -> bool:
        """Renew the lease of one-off run ``instance_id`` for ``seconds``; 0 releases it: a
        run still going is stopped (with ``sig``, else its stop signal, the whole group, KILL
        after graceful_timeout) and forgotten once ended. False if the run is unknown (it
        ended and was forgotten)."""
        inst = self.find(instance_id)
        entry = self._entries[inst.template]
        if not inst.oneoff:
            raise InvalidRequest(f"{instance_id} is not a one-off run")
        if not entry.runs.lease(str(inst.ordinal), self._clock.time(), seconds):
            return False
        if seconds <= 0 and sig is not None:
            self._act.stop(entry, inst, parse_signal(sig))
        self._act.check_runs()
        return True

    def adopt(
        self,
        found: Found,
        fds: dict[str, int],
        buffered: dict[str, bytes] | None = None,
        dropped: dict[str, int] | None = None,
        leader: ProcInfo | None = None,
        members: tuple[ProcInfo, ...] = (),
    ) -> bool:
        """Watch a process an earlier agent spawned as the instance it is.

        Returns False (and takes nothing) when this Manager does not want that instance here
        or already runs it: the caller must then stop the process. Output the keeper buffered
        while no agent was there is replayed first, with a note of what was lost. ``leader``
        and ``members`` (``ownership.plan_adoption``) let the tracker stop the daemons the
        instance left around it too.
        """
        entry = self._entries.get(found.template)
        if entry is None or entry.deleting or found.ordinal not in entry.wanted.ordinals:
            return False
        inst = entry.instance(found.ordinal)
        if inst.process is not None or not (inst.state is State.STOPPED or inst.waiting):
            return False
        self._act.adopt(entry, inst, found, fds, buffered or {}, dropped or {}, leader, members)
        return True

    def abandon(self) -> None:
        """Let go of every process without stopping it (the agent is going away; the next
        one adopts them): no exit watch, no pipes, no timers, nothing spawned again."""
        self._act.abandon()

    # ----------------------------------------------------------------- waiting

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Return once ``predicate()`` holds; it is re-checked after every state change.

        The first check comes after the loop has run what is already scheduled, so an
        operation called just before (``add``, ``kill``) has converged by then.
        """
        await self._changes.wait_until(predicate, timeout)

    async def shutdown(self) -> None:
        """Stop everything gracefully (each template's stop signal, then KILL on timeout), in
        reverse start order: each wave of ``stop_waves`` (a template before what it depends
        on) is stopped and waited for before the next. Without ``depends_on``, one wave."""
        graph = {name: entry.template.depends_on for name, entry in self._entries.items()}
        for wave in stop_waves(graph, list(self._entries)):
            entries = [self._entries[name] for name in wave if name in self._entries]
            for entry in entries:
                entry.wanted = replace(entry.wanted, active=False)
                for run in entry.runs:
                    self._act.stop(entry, run)
                self._act.converge_soon(entry)
            await self.wait_until(lambda: _quiet(entries))
        await self.wait_until(self._all_quiet)

    async def finish_stops(self, margin: float = KILL_MARGIN) -> int:
        """Wait for the stops in progress to end: each gets the rest of its graceful_timeout,
        then the KILL its timer sends (so at most the longest graceful_timeout + ``margin``).

        An agent that stops while leaving its processes running must not abandon a process it
        was stopping: it would run on until the next agent settles it (issue 9, item 5).
        Returns how many stops were in progress."""
        stopping = [
            (entry, inst)
            for entry in self._entries.values()
            for inst in [*entry.instances.values(), *entry.runs]
            if inst.state is State.STOPPING and inst.pid is not None
        ]
        if not stopping:
            return 0
        bound = max(entry.template.graceful_timeout for entry, _ in stopping) + margin

        def ended() -> bool:
            return all(inst.state is not State.STOPPING or inst.pid is None for _, inst in stopping)

        log.info("finishing %d stops in progress (at most %gs)", len(stopping), bound)
        try:
            await self.wait_until(ended, bound)
        except TimeoutError:
            left = [inst.id for _, inst in stopping if inst.pid is not None]
            log.warning("stops not finished after %gs, left running: %s", bound, ", ".join(left))
        return len(stopping)

    async def aclose(self) -> None:
        """End the readiness checks and close the notify socket (after ``shutdown`` or
        ``abandon``: the processes are no longer this Manager's)."""
        await self._act.readiness.aclose()

    def _all_quiet(self) -> bool:
        return _quiet(self._entries.values())


def _quiet(entries: Iterable[Entry]) -> bool:
    """Whether no process of ``entries`` is alive."""
    return not any(
        inst.process is not None and inst.process.alive
        for entry in entries
        for inst in [*entry.instances.values(), *entry.runs]
    )


def _wanted(
    template: Template, ordinals: Iterable[Ordinal] | None, max_unavailable: int | None, restart_gen: int
) -> Wanted:
    here = range(1, template.numprocesses + 1) if ordinals is None else ordinals
    allowance = template.update.max_unavailable if max_unavailable is None else max_unavailable
    return Wanted(frozenset(here), True, False, template.spec_hash(), restart_gen, allowance)


def _pid_rows(entries: list[Entry]) -> list[tuple[str, str, int]]:
    """(template, instance id, pid) of the instances of ``entries`` that have a process."""
    return [
        (entry.name, inst.id, inst.pid)
        for entry in entries for inst in [*entry.instances.values(), *entry.runs]
        if inst.pid is not None
    ]
