"""The local Manager: keeps each template's instances on this node as they are wanted.

For every template the Manager holds what is *wanted* (the spec, which ordinals run here,
active or paused) and what *is* (one ``Instance`` per ordinal), and ``_converge`` acts on the
difference: spawn what is missing, stop what is no longer wanted, roll outdated instances at
most ``update.max_unavailable`` at a time. Operations only change what is wanted and schedule a
converge, so calling them twice changes nothing. Converging is coalesced (one pass per loop
iteration) and spawns in batches, so a scale to thousands never stalls the loop.

An exit is handled at once, not on the next pass: the restart policy (``lifecycle``) and the
flapping policy (``flapping``), both pure, decide whether to respawn now, later, or never.
Exits the Manager caused never count as failures.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from gaffer.agent import flapping
from gaffer.agent.flapping import FlapState, Verdict
from gaffer.agent.instance import Instance
from gaffer.agent.launch import build_launch
from gaffer.agent.lifecycle import (
    ExitKind,
    State,
    backoff_delay,
    classify_exit,
    classify_spawn_failure,
    repeat_error,
)
from gaffer.agent.output import Chunk, Line, LineSplitter, RotatingLog
from gaffer.agent.ownership import ProcInfo
from gaffer.agent.process import ExitStatus, Process
from gaffer.agent.stats import StatsSampler
from gaffer.agent.tracking import Tracker
from gaffer.common import topics
from gaffer.common.bus import EventBus
from gaffer.common.errors import (
    GafferError,
    InstanceNotFound,
    InvalidRequest,
    SpawnError,
    StdinNotEnabled,
    TemplateExists,
    TemplateNotFound,
)
from gaffer.common.signals import parse_signal
from gaffer.common.template import Template

log = logging.getLogger("gaffer.manager")
SHOWN_AS_EVENT = {"gaffer_event": True}
"""``extra`` of a log record that says what an event the Manager publishes says: a console
that prints the events (``gaffer start``) leaves such records out, so nothing shows twice."""


class FdKeeper(Protocol):
    """Where the agent parks its pipe ends so processes outlive it (``keeper_client``)."""

    def deposit(self, key: str, fds: dict[str, int]) -> Any: ...

    def release(self, key: str, streams: list[str] | None = None) -> Any: ...


class SpawnJournal(Protocol):
    """Where the agent notes each spawn and exit (``journal.Journal``)."""

    def spawned(self, instance_id: str, pid: int, spec: str | None) -> None: ...

    def exited(self, instance_id: str, pid: int) -> None: ...


class Adoptable(Protocol):
    """A live process an earlier agent spawned (``adoption.Found``)."""

    pid: int
    instance_id: str
    template: str
    ordinal: int | str
    started_at: float
    spec: str | None

SPAWN_BATCH = 64
KEEP_ONEOFFS = 10


@dataclass(eq=False)
class _Entry:
    """What is wanted of one template on this node, and its instances."""

    template: Template
    ordinals: set[int | str]
    spec_hash: str
    active: bool = True
    deleting: bool = False
    restart_gen: int = 0
    flap: FlapState = field(default_factory=FlapState)
    flap_timer: asyncio.TimerHandle | None = None
    instances: dict[int | str, Instance] = field(default_factory=dict)
    oneoffs: dict[str, Instance] = field(default_factory=dict)
    oneoff_seq: int = 0
    converge_pending: bool = False
    rolling: bool = False
    start_queue: collections.deque = field(default_factory=collections.deque)
    start_pending: bool = False

    def cancel_flap_timer(self) -> None:
        if self.flap_timer is not None:
            self.flap_timer.cancel()
            self.flap_timer = None

    @property
    def status(self) -> str:
        if self.deleting:
            return "deleting"
        if not self.active:
            return "stopped"
        if self.flap.failed:
            return "failed"
        if self.flap.resume_at is not None and self.flap_timer is not None:
            return "flapping"
        return "active"


class Manager:
    """Runs templates' instances on this node. Use inside a running event loop."""

    def __init__(
        self,
        node: str | None = None,
        bus: EventBus | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        environ: dict[str, str] | None = None,
        agent_env: dict[str, str] | None = None,
        held: bool = False,
        tracker: Tracker | None = None,
    ) -> None:
        """``agent_env`` (agent mode) is added to every process's environment, with
        GAFFER_SPEC, so a restarted agent can recognise the processes it ran; ``held``
        starts the Manager holding (see ``hold``); ``tracker`` tracks and stops every
        descendant of every instance (without one, only each instance's process group)."""
        self.node = node or socket.gethostname()
        self.tracker = tracker
        self._agent_env = agent_env
        self.held = held
        self.settling = False
        """Agent mode: nothing is spawned while the agent settles what it found at start."""
        self.lease_until: float | None = None
        """Agent mode: the loop time until which the controller's word holds. Past it, as while
        held, nothing new is spawned (not even a respawn): the controller may have moved this
        node's instances elsewhere. None: no controller, no lease (``gaffer run``, tests)."""
        self.keeper: FdKeeper | None = None
        self.journal: SpawnJournal | None = None
        self.bus = bus if bus is not None else EventBus()
        self._loop = loop or asyncio.get_running_loop()
        self._environ = dict(os.environ) if environ is None else environ
        self._entries: dict[str, _Entry] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._sampler = StatsSampler()
        self.spawned = 0

    # ----------------------------------------------------------------- templates

    def add(self, template: Template, ordinals: Iterable[int | str] | None = None) -> None:
        """Start managing a new template (raises TemplateExists if the name is taken)."""
        if template.name in self._entries:
            raise TemplateExists(template.name)
        wanted = set(range(1, template.numprocesses + 1)) if ordinals is None else set(ordinals)
        entry = _Entry(template=template, ordinals=wanted, spec_hash=template.spec_hash())
        self._entries[template.name] = entry
        self._publish(topics.template(template.name, "created"), self._template_payload(entry))
        self._schedule_converge(entry)

    def apply(self, template: Template, ordinals: Iterable[int | str] | None = None) -> str:
        """Create or update; returns "created", "updated", "scaled" or "unchanged"."""
        entry = self._entries.get(template.name)
        if entry is None or entry.deleting:
            self.add(template, ordinals)
            return "created"
        old = entry.template
        wanted = set(range(1, template.numprocesses + 1)) if ordinals is None else set(ordinals)
        spec_changed = entry.spec_hash != template.spec_hash()
        updated = old.with_count(template.numprocesses) != template
        count_changed = wanted != entry.ordinals or old.numprocesses != template.numprocesses
        entry.template = template
        if spec_changed:
            entry.spec_hash = template.spec_hash()
            entry.rolling = True
        if updated:
            self._publish(
                topics.template(template.name, "updated"),
                {**self._template_payload(entry), "restart": spec_changed},
            )
        if count_changed:
            entry.ordinals = wanted
            self._publish(
                topics.template(template.name, "scaled"),
                {**self._template_payload(entry), "previous": old.numprocesses},
            )
        self._schedule_converge(entry)
        if updated:
            return "updated"
        return "scaled" if count_changed else "unchanged"

    def scale(self, name: str, count: int) -> int:
        """Run ``count`` instances (ordinals 1..count); scale-down stops the highest ordinals."""
        if count < 0:
            raise InvalidRequest(f"count must be >= 0, got {count}")
        entry = self._entry(name)
        self.apply(entry.template.with_count(count))
        return count

    def assign(self, name: str, ordinals: Iterable[int | str]) -> None:
        """Run exactly these ordinals of ``name`` here (the cluster's per-node assignment)."""
        entry = self._entry(name)
        self.apply(entry.template, ordinals)

    async def remove(self, name: str) -> None:
        """Stop every instance of ``name`` and forget it; returns once all have exited."""
        entry = self._entry(name)
        entry.deleting = True
        entry.cancel_flap_timer()
        for oneoff in entry.oneoffs.values():
            self._stop_instance(entry, oneoff)
        self._schedule_converge(entry)
        await self.wait_until(lambda: self._entries.get(name) is not entry)

    def start(self, name: str) -> None:
        """Run the template again: resumes a stopped one, retries a failed or exited one."""
        entry = self._entry(name)
        entry.active = True
        entry.cancel_flap_timer()
        entry.flap = flapping.reset()
        for inst in entry.instances.values():
            if inst.state in (State.EXITED, State.FAILED):
                inst.move(State.STOPPED)
                inst.failures = 0
                inst.repeats = None
            elif inst.state is State.BACKOFF:
                inst.cancel_timers()
                inst.move(State.STOPPED)
        self._schedule_converge(entry)

    def stop(self, name: str) -> None:
        """Pause: stop every instance but keep the template (cancels a pending flap retry)."""
        entry = self._entry(name)
        entry.active = False
        entry.cancel_flap_timer()
        entry.flap = flapping.reset()
        self._schedule_converge(entry)

    def restart(self, name: str) -> None:
        """Rolling restart of every instance, ``update.max_unavailable`` at a time."""
        entry = self._entry(name)
        entry.restart_gen += 1
        entry.rolling = True
        if not entry.active:
            self.start(name)
        self._schedule_converge(entry)

    def templates(self) -> list[Template]:
        return [e.template for e in self._entries.values() if not e.deleting]

    def get(self, name: str) -> Template:
        return self._entry(name).template

    def template_status(self, name: str) -> dict[str, Any]:
        entry = self._entry(name)
        counts: dict[str, int] = {}
        for inst in entry.instances.values():
            counts[inst.state.value] = counts.get(inst.state.value, 0) + 1
        return {
            "name": name,
            "status": entry.status,
            "numprocesses": entry.template.numprocesses,
            "ordinals": sorted(entry.ordinals, key=str),
            "states": counts,
            "flap_retries": entry.flap.retries,
        }

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None or entry.deleting:
            raise TemplateNotFound(name)
        return entry

    # ----------------------------------------------------------------- instances

    def instances(self, name: str | None = None) -> list[dict[str, Any]]:
        entries = [self._entry(name)] if name is not None else list(self._entries.values())
        now = time.time()
        out = []
        for entry in entries:
            for inst in sorted(entry.instances.values(), key=_ordinal_key):
                out.append(inst.info(self.node, now))
            for inst in entry.oneoffs.values():
                out.append(inst.info(self.node, now))
        return out

    def find(self, instance_id: str) -> Instance:
        try:
            name, ordinal = topics.split_instance_id(instance_id)
        except ValueError:
            raise InstanceNotFound(instance_id) from None
        entry = self._entries.get(name)
        if entry is not None:
            key: int | str = int(ordinal) if ordinal.isascii() and ordinal.isdecimal() else ordinal
            inst = entry.instances.get(key) or entry.oneoffs.get(ordinal)
            if inst is not None:
                return inst
        raise InstanceNotFound(instance_id)

    def kill(self, target: str, sig: int | str = "TERM", group: bool = False) -> list[int]:
        """Signal one instance (``web.2``) or every instance of a template (``web``).

        Returns the pids signalled. An instance killed this way exits unexpectedly and is
        restarted by its policy, like any crash.
        """
        signum = parse_signal(sig)
        if target in self._entries and not self._entries[target].deleting:
            entry = self._entries[target]
            victims = [*entry.instances.values(), *entry.oneoffs.values()]
        else:
            victims = [self.find(target)]
        pids = []
        for inst in victims:
            if inst.process is not None and inst.process.alive:
                inst.process.signal(signum, group=group)
                pids.append(inst.process.pid)
        return pids

    def write(self, instance_id: str, data: bytes) -> None:
        """Write ``data`` to the stdin of a running instance whose template allows it."""
        inst = self.find(instance_id)
        template = self._entries[inst.template].template
        if not template.redirect_input:
            raise StdinNotEnabled(instance_id)
        if inst.process is None or not inst.process.alive:
            raise InvalidRequest(f"{instance_id} is not running ({inst.state.value})")
        inst.process.write(data)

    def output(self, instance_id: str, count: int | None = 100, stream: str | None = None) -> list[Line]:
        return self.find(instance_id).output.tail(count, stream)

    async def stats(self, name: str | None = None) -> dict[str, Any]:
        """Per-instance psutil stats and their sum per template."""
        entries = [self._entry(name)] if name is not None else [
            e for e in self._entries.values() if not e.deleting
        ]
        alive = [
            inst
            for entry in entries
            for inst in [*entry.instances.values(), *entry.oneoffs.values()]
            if inst.pid is not None
        ]
        sampled = await self._sampler.sample(inst.pid for inst in alive if inst.pid is not None)
        result: dict[str, Any] = {}
        for entry in entries:
            result[entry.template.name] = {"cpu": 0.0, "mem": 0, "instances": []}
        for inst in alive:
            stats = sampled.get(inst.pid) if inst.pid is not None else None
            if stats is None:
                continue
            summary = result[inst.template]
            summary["cpu"] = round(summary["cpu"] + stats.total_cpu, 1)
            summary["mem"] += stats.total_mem
            summary["instances"].append({"id": inst.id, **stats.to_dict()})
        return result

    def run(self, name: str, args: Iterable[str] | None = None) -> Instance:
        """Spawn one process from ``name`` that is never restarted; await ``inst.done``."""
        entry = self._entry(name)
        template = entry.template
        if args is not None:
            template = replace(template, args=tuple(args))
        entry.oneoff_seq += 1
        inst = Instance(template.name, f"run-{entry.oneoff_seq}", oneoff=True)
        inst.done = self._loop.create_future()
        entry.oneoffs[str(inst.ordinal)] = inst
        try:
            self._spawn(entry, inst, template)
        except SpawnError:
            entry.oneoffs.pop(str(inst.ordinal), None)
            raise
        return inst

    def adopt(
        self,
        found: Adoptable,
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
        if entry is None or entry.deleting or found.ordinal not in entry.ordinals:
            return False
        inst = entry.instances.get(found.ordinal)
        if inst is None:
            inst = entry.instances[found.ordinal] = Instance(entry.template.name, found.ordinal)
        waiting = inst.state is State.BACKOFF and inst.timer is None
        if inst.process is not None or not (inst.state is State.STOPPED or waiting):
            return False
        if waiting:
            inst.move(State.STOPPED)
        extra = dict(self._agent_env or {})
        spec = build_launch(entry.template, found.ordinal, self.node, self._environ, extra)
        process = Process.adopt(
            spec, found.pid, found.started_at, fds,
            on_exit=lambda status: None,
            on_output=functools.partial(self._on_output, entry, inst),
            loop=self._loop, tracker=self.tracker, name=inst.id, found=leader, members=members,
        )
        process._on_exit = functools.partial(self._on_exit, entry, inst, process)
        inst.process = process
        inst.spec_hash = found.spec
        inst.restart_gen = entry.restart_gen
        inst.started_at = found.started_at
        inst.splitters = {}
        inst.move(State.RUNNING)
        if inst.spec_hash != entry.spec_hash:
            entry.rolling = True
        for stream, data in (buffered or {}).items():
            lost = (dropped or {}).get(stream, 0)
            if lost:
                inst.output.append(Line(time.time(), stream, f"[gaffer: {lost} bytes lost while no agent ran]"))
            self._on_output(entry, inst, stream, data)
        if self.keeper is not None and process.stream_fds():
            self.keeper.deposit(inst.id, process.stream_fds())
        self._publish(topics.proc(inst.template, "spawn"), self._proc_payload(inst, adopted=True))
        self._changed()
        return True

    def live_pipes(self) -> dict[str, dict[str, int]]:
        """Pipe ends of every live instance (to hand to a new keeper)."""
        out = {}
        for entry in self._entries.values():
            for inst in entry.instances.values():
                if inst.process is not None and inst.process.alive:
                    fds = inst.process.stream_fds()
                    if fds:
                        out[inst.id] = fds
        return out

    def _holding(self) -> bool:
        lease = self.lease_until
        return self.held or self.settling or (lease is not None and self._loop.time() > lease)

    def hold(self) -> None:
        """Spawn nothing new until ``release``; running processes are left alone.

        An agent holds while its lease with the controller has expired: the controller may
        have moved its instances elsewhere, so a crashed one must not come back here before
        the controller has said what this node should run.
        """
        self.held = True

    def release(self) -> None:
        self.held = False
        for entry in self._entries.values():
            self._schedule_converge(entry)

    def abandon(self) -> None:
        """Let go of every process without stopping it (the agent is going away; the next
        one adopts them): no exit watch, no pipes, no timers, nothing spawned again."""
        self.held = True
        for entry in self._entries.values():
            entry.cancel_flap_timer()
            for inst in [*entry.instances.values(), *entry.oneoffs.values()]:
                inst.cancel_timers()
                if inst.process is not None:
                    inst.process.abandon()

    def settle(self, settling: bool) -> None:
        """Spawn nothing while ``settling`` (the agent adopting or stopping what it found)."""
        self.settling = settling
        if not settling:
            for entry in self._entries.values():
                self._schedule_converge(entry)

    # ----------------------------------------------------------------- waiting

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Return once ``predicate()`` holds; it is re-checked after every state change.

        The first check comes after the loop has run what is already scheduled, so an
        operation called just before (``add``, ``kill``) has converged by then.
        """

        async def loop() -> None:
            while not predicate():
                waiter = self._loop.create_future()
                self._waiters.append(waiter)
                await waiter

        async with asyncio.timeout(timeout):
            await asyncio.sleep(0)
            await loop()

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def shutdown(self) -> None:
        """Stop everything gracefully (each template's stop signal, then KILL on timeout)."""
        for entry in self._entries.values():
            entry.active = False
            entry.cancel_flap_timer()
            for oneoff in entry.oneoffs.values():
                self._stop_instance(entry, oneoff)
            self._schedule_converge(entry)
        await self.wait_until(self._all_quiet)

    def _all_quiet(self) -> bool:
        return not any(
            inst.process is not None and inst.process.alive
            for entry in self._entries.values()
            for inst in [*entry.instances.values(), *entry.oneoffs.values()]
        )

    # ----------------------------------------------------------------- converging

    def _schedule_converge(self, entry: _Entry) -> None:
        if not entry.converge_pending:
            entry.converge_pending = True
            self._loop.call_soon(self._converge, entry)

    def _converge(self, entry: _Entry) -> None:
        entry.converge_pending = False
        if self._entries.get(entry.template.name) is not entry:
            return
        wanted = entry.ordinals if entry.active and not entry.deleting else set()
        self._stop_unwanted(entry, wanted)
        if entry.deleting:
            if not entry.instances and not any(i.pid for i in entry.oneoffs.values()):
                del self._entries[entry.template.name]
                self._publish(topics.template(entry.template.name, "deleted"), {"name": entry.template.name})
                self._changed()
            return
        queue = []
        for ordinal in wanted:
            inst = entry.instances.get(ordinal)
            if inst is None:
                inst = entry.instances[ordinal] = Instance(entry.template.name, ordinal)
            if self._startable(entry, inst):
                queue.append(ordinal)
        queue.sort(key=_sort_key)
        entry.start_queue = collections.deque(queue)
        self._start_some(entry)
        if entry.rolling and not self._holding():
            self._roll(entry, wanted)

    def _startable(self, entry: _Entry, inst: Instance) -> bool:
        waiting = inst.state is State.BACKOFF and inst.timer is None
        return inst.state is State.STOPPED or (waiting and not entry.flap.suspended(self._loop.time()))

    def _start_some(self, entry: _Entry) -> None:
        """Start the next SPAWN_BATCH queued instances, then yield to the loop for the rest."""
        entry.start_pending = False
        if self._entries.get(entry.template.name) is not entry or not entry.active or entry.deleting:
            return
        budget = SPAWN_BATCH
        queue = entry.start_queue
        while queue and budget:
            ordinal = queue.popleft()
            inst = entry.instances.get(ordinal)
            if inst is None or ordinal not in entry.ordinals or not self._startable(entry, inst):
                continue
            budget -= 1
            self._begin(entry, inst)
        if queue and not entry.start_pending:
            entry.start_pending = True
            self._loop.call_soon(self._start_some, entry)

    def _stop_unwanted(self, entry: _Entry, wanted: set[int | str]) -> None:
        gone = []
        for ordinal, inst in entry.instances.items():
            if ordinal in wanted:
                continue
            if inst.state in (State.STARTING, State.RUNNING):
                self._stop_instance(entry, inst)
            elif inst.state is State.BACKOFF:
                inst.cancel_timers()
                inst.move(State.STOPPED)
            forget = entry.deleting or ordinal not in entry.ordinals
            if forget and inst.state in (State.STOPPED, State.EXITED, State.FAILED):
                gone.append(ordinal)
        for ordinal in gone:
            inst = entry.instances.pop(ordinal)
            if inst.log is not None:
                inst.log.close()
        if gone:
            self._changed()

    def _roll(self, entry: _Entry, wanted: set[int | str]) -> None:
        """Restart outdated live instances without exceeding ``max_unavailable`` down."""
        outdated = []
        unavailable = 0
        for ordinal in sorted(wanted, key=_sort_key):
            inst = entry.instances.get(ordinal)
            if inst is None:
                continue
            if inst.state in (State.STARTING, State.STOPPING, State.BACKOFF, State.FAILED):
                unavailable += 1
            if inst.state in (State.STARTING, State.RUNNING) and self._outdated(entry, inst):
                outdated.append(inst)
        if not outdated and not any(
            inst.state is State.STOPPING for inst in entry.instances.values()
        ):
            entry.rolling = False
            return
        budget = entry.template.update.max_unavailable - unavailable
        for inst in outdated:
            if inst.state is State.STARTING:
                self._stop_instance(entry, inst)
            elif budget > 0:
                budget -= 1
                self._stop_instance(entry, inst)

    def _outdated(self, entry: _Entry, inst: Instance) -> bool:
        return inst.spec_hash != entry.spec_hash or inst.restart_gen != entry.restart_gen

    # ----------------------------------------------------------------- one instance

    def _begin(self, entry: _Entry, inst: Instance) -> None:
        """Start a wanted instance unless its template is failed or suspended for flapping,
        or the Manager is held (it then waits in backoff without a timer)."""
        if entry.flap.failed:
            self._fail(entry, inst, "template gave up after flapping")
        elif entry.flap.suspended(self._loop.time()) or self._holding():
            inst.move(State.BACKOFF)
        else:
            self._spawn(entry, inst, entry.template)

    def _spawn(self, entry: _Entry, inst: Instance, template: Template) -> None:
        inst.cancel_timers()
        try:
            digest = entry.spec_hash if template is entry.template else template.spec_hash()
            extra = None
            if self._agent_env is not None:
                extra = {**self._agent_env, "GAFFER_SPEC": digest}
            spec = build_launch(template, inst.ordinal, self.node, self._environ, extra)
            process = Process(
                spec, on_exit=lambda status: None, loop=self._loop, tracker=self.tracker, name=inst.id
            )
            process._on_exit = functools.partial(self._on_exit, entry, inst, process)
            if spec.stdout or spec.stderr:
                process._on_output = functools.partial(self._on_output, entry, inst)
                if template.log is not None and inst.log is None:
                    inst.log = _open_log(template, inst)
            process.spawn()
            if self.journal is not None:
                self.journal.spawned(inst.id, process.pid, digest)
            if self.keeper is not None and not inst.oneoff:
                fds = process.stream_fds()
                if fds:
                    self._deposit(inst, fds)
        except SpawnError as exc:
            if inst.oneoff:
                raise
            self._spawn_failed(entry, inst, exc.message)
            return
        self._repeats_ended(inst)
        self.spawned += 1
        inst.process = process
        inst.spec_hash = entry.spec_hash
        inst.restart_gen = entry.restart_gen
        inst.started_at = process.started_at
        inst.error = None
        inst.splitters = {}
        inst.move(State.STARTING)
        self._publish(topics.proc(inst.template, "spawn"), self._proc_payload(inst))
        self._changed()
        if inst.oneoff:
            return
        if template.startsecs <= 0:
            self._on_up(entry, inst, process)
        else:
            inst.timer = self._loop.call_later(
                template.startsecs, self._on_up, entry, inst, process
            )

    def _on_up(self, entry: _Entry, inst: Instance, process: Process) -> None:
        inst.timer = None
        if inst.process is not process or inst.state is not State.STARTING:
            return
        inst.move(State.RUNNING)
        inst.failures = 0
        self._publish(topics.proc(inst.template, "running"), self._proc_payload(inst))
        self._changed()
        if entry.rolling:
            self._schedule_converge(entry)

    def _stop_instance(self, entry: _Entry, inst: Instance) -> None:
        """Send the stop signal to the group; KILL it after graceful_timeout."""
        if inst.state not in (State.STARTING, State.RUNNING) or inst.process is None:
            return
        inst.cancel_timers()
        inst.move(State.STOPPING)
        template = entry.template
        inst.process.signal(parse_signal(template.stop_signal))
        inst.kill_timer = self._loop.call_later(
            template.graceful_timeout, self._kill_now, inst, inst.process
        )

    def _kill_now(self, inst: Instance, process: Process) -> None:
        inst.kill_timer = None
        if inst.process is process and process.alive:
            log.info("%s: still running after graceful_timeout, sending KILL", inst.id)
            process.signal(9)

    def _on_exit(self, entry: _Entry, inst: Instance, process: Process, status: ExitStatus) -> None:
        """Waiters are woken whatever happens here: a bug must never leave one hanging."""
        try:
            self._handle_exit(entry, inst, process, status)
        finally:
            self._changed()

    def _deposit(self, inst: Instance, fds: dict[str, int]) -> None:
        assert self.keeper is not None
        try:
            self.keeper.deposit(inst.id, fds)
        except (GafferError, ValueError) as exc:
            log.warning("%s: keeper refused its pipes (it will not survive an agent restart): %s", inst.id, exc)

    def _handle_exit(self, entry: _Entry, inst: Instance, process: Process, status: ExitStatus) -> None:
        if inst.process is not process:
            return
        if self.journal is not None and process.pid is not None:
            self.journal.exited(inst.id, process.pid)
        if self.keeper is not None and not inst.oneoff:
            try:
                self.keeper.release(inst.id)
            except GafferError as exc:
                log.debug("%s: keeper release failed: %s", inst.id, exc)
        inst.cancel_timers()
        inst.process = None
        inst.last_exit = status
        was = inst.state
        template = entry.template
        kind = classify_exit(
            template.restart, template.exitcodes, status.code, status.signal, was is State.STOPPING
        )
        payload = self._proc_payload(inst, pid=process.pid, **status.to_dict())
        if inst.oneoff:
            inst.move(State.EXITED if kind is not ExitKind.REQUESTED else State.STOPPED)
            self._publish(topics.proc(inst.template, "exit"), {**payload, "oneoff": True})
            _forget_old_oneoffs(entry)
            if inst.done is not None and not inst.done.done():
                inst.done.set_result(status)
            self._changed()
            if entry.deleting:
                self._schedule_converge(entry)
            return
        if kind is ExitKind.REQUESTED:
            inst.move(State.STOPPED)
            self._publish(topics.proc(inst.template, "stop"), payload)
            self._schedule_converge(entry)
            self._changed()
            return
        self._publish(topics.proc(inst.template, "exit"), payload)
        if kind is ExitKind.DONE:
            inst.move(State.EXITED)
            self._changed()
            return
        self._after_failure(entry, inst, starting=was is State.STARTING)

    def _spawn_failed(self, entry: _Entry, inst: Instance, error: str) -> None:
        """A spawn that failed: reported once per run of the same error (``Repeats``), then
        final under ``restart = "never"``, retried with backoff otherwise."""
        inst.error = error
        inst.process = None
        previous = inst.repeats
        if previous is not None and previous.error != error:
            self._repeats_ended(inst)
        inst.repeats = repeat_error(previous, error)
        if inst.repeats.first:
            log.warning("%s: %s", inst.id, error, extra=SHOWN_AS_EVENT)
        self._publish(
            topics.proc(inst.template, "exit"),
            self._proc_payload(inst, status=None, signal=None, error=error, again=inst.repeats.again),
        )
        if classify_spawn_failure(entry.template.restart) is ExitKind.DONE:
            inst.move(State.EXITED)
            self._changed()
            return
        self._after_failure(entry, inst, starting=True)

    def _repeats_ended(self, inst: Instance) -> None:
        """Say how often an error came back, once it stops coming back."""
        repeats, inst.repeats = inst.repeats, None
        if repeats is not None and repeats.again:
            log.warning("%s: %s (again, %d times)", inst.id, repeats.error, repeats.again)

    def _after_failure(self, entry: _Entry, inst: Instance, starting: bool) -> None:
        """An unexpected exit (or failed spawn): consult flapping, then respawn or wait."""
        inst.failures = inst.failures + 1 if starting else 1
        wanted = entry.active and not entry.deleting and inst.ordinal in entry.ordinals
        if not wanted:
            if inst.state is not State.STOPPED:
                inst.move(State.STOPPED)
            self._schedule_converge(entry)
            self._changed()
            return
        now = self._loop.time()
        was_suspended = entry.flap.resume_at
        decision = flapping.record_exit(entry.template.flapping, entry.flap, now)
        entry.flap = decision.state
        if decision.verdict is Verdict.GIVE_UP:
            inst.move(State.BACKOFF)
            self._give_up(entry)
        elif decision.verdict is Verdict.SUSPEND:
            inst.move(State.BACKOFF)
            if decision.resume_at != was_suspended or entry.flap_timer is None:
                self._suspend(entry, decision.resume_at or now, announce=decision.resume_at != was_suspended)
        else:
            inst.restarts += 1
            delay = backoff_delay(inst.failures)
            if delay <= 0:
                self._begin(entry, inst)
            else:
                inst.move(State.BACKOFF)
                inst.timer = self._loop.call_later(delay, self._respawn, entry, inst)
        self._changed()

    def _respawn(self, entry: _Entry, inst: Instance) -> None:
        inst.timer = None
        if inst.state is State.BACKOFF and self._entries.get(entry.template.name) is entry:
            self._begin(entry, inst)

    def _suspend(self, entry: _Entry, resume_at: float, announce: bool = True) -> None:
        entry.cancel_flap_timer()
        delay = max(0.0, resume_at - self._loop.time())
        entry.flap_timer = self._loop.call_later(delay, self._resume, entry)
        if not announce:
            return
        log.warning(
            "%s is flapping: respawns suspended for %.1fs (retry %d)",
            entry.template.name, delay, entry.flap.retries, extra=SHOWN_AS_EVENT,
        )
        self._publish(
            topics.proc(entry.template.name, "flap"),
            {
                "node": self.node,
                "template": entry.template.name,
                "retry_in": round(delay, 3),
                "retries": entry.flap.retries,
                "max_retry": entry.template.flapping.max_retry if entry.template.flapping else None,
            },
        )

    def _resume(self, entry: _Entry) -> None:
        """End a flapping suspension (timers may fire a hair early: the clock says so too)."""
        entry.flap_timer = None
        now = self._loop.time()
        if entry.flap.resume_at is not None and entry.flap.resume_at > now:
            entry.flap = replace(entry.flap, resume_at=now)
        self._schedule_converge(entry)

    def _give_up(self, entry: _Entry) -> None:
        entry.cancel_flap_timer()
        log.error("%s: flapping past max_retry, giving up", entry.template.name)
        for inst in entry.instances.values():
            if inst.state in (State.BACKOFF, State.STOPPED) and inst.ordinal in entry.ordinals:
                inst.cancel_timers()
                self._fail(entry, inst, "flapping: gave up after max_retry retries")

    def _fail(self, entry: _Entry, inst: Instance, reason: str) -> None:
        self._repeats_ended(inst)
        inst.move(State.FAILED)
        inst.error = reason
        self._publish(topics.proc(inst.template, "failed"), self._proc_payload(inst, reason=reason))
        self._changed()

    def _on_output(self, entry: _Entry, inst: Instance, stream: str, data: bytes) -> None:
        """Captured bytes -> one chunk of complete lines: into the ring, the log file, and one
        ``output.`` event carrying all of them (only if someone subscribes)."""
        splitter = inst.splitters.get(stream)
        if splitter is None:
            splitter = inst.splitters[stream] = LineSplitter()
        text = splitter.feed(data)
        if text is None:
            return
        chunk = Chunk(time.time(), stream, text)
        inst.output.add(chunk)
        if inst.log is not None:
            inst.log.write_chunk(chunk)
        topic = topics.output(inst.template, inst.ordinal, stream)
        if self.bus.wants(topic):
            self.bus.publish(
                topic,
                {"node": self.node, "id": inst.id, "template": inst.template,
                 "stream": stream, "ts": chunk.ts, "text": text},
            )

    # ----------------------------------------------------------------- events

    def _publish(self, topic: str, data: dict[str, Any]) -> None:
        self.bus.publish(topic, data)

    def _proc_payload(self, inst: Instance, **extra: Any) -> dict[str, Any]:
        data = {
            "node": self.node,
            "template": inst.template,
            "id": inst.id,
            "ordinal": inst.ordinal,
            "pid": inst.pid,
            "ts": time.time(),
        }
        data.update(extra)
        return data

    def _template_payload(self, entry: _Entry) -> dict[str, Any]:
        return {
            "node": self.node,
            "name": entry.template.name,
            "numprocesses": entry.template.numprocesses,
            "spec": entry.spec_hash,
        }


def _forget_old_oneoffs(entry: _Entry) -> None:
    """Finished one-off runs stay listed (with their output) until KEEP_ONEOFFS newer ones end."""
    finished = [key for key, inst in entry.oneoffs.items() if inst.process is None]
    for key in finished[: max(0, len(finished) - KEEP_ONEOFFS)]:
        del entry.oneoffs[key]


def _open_log(template: Template, inst: Instance) -> RotatingLog | None:
    assert template.log is not None
    path = Path(template.log.dir) / f"{inst.id}.log"
    try:
        return RotatingLog(path, template.log.max_bytes, template.log.backups)
    except OSError as exc:
        log.error("%s: cannot open log file %s: %s", inst.id, path, exc)
        return None


def _sort_key(ordinal: int | str) -> tuple[int, int | str]:
    return (0, ordinal) if isinstance(ordinal, int) else (1, ordinal)


def _ordinal_key(inst: Instance) -> tuple[int, int | str]:
    return _sort_key(inst.ordinal)
