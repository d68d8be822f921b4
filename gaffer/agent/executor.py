"""Carrying out what ``plan`` and ``lifecycle`` decide: spawns, stops, exits, timers, output.

The Manager changes what is wanted and asks for a converge (``converge_soon``); everything that
then touches a process, a timer or the bus happens here::

    converge ─► plan(wanted, instances, holding) -> Actions
                  stop / unwait / forget / delete / wait at once; spawn SPAWN_BATCH per
                  loop turn (each checked again first: ``startable``, ``begin``); roll

    exit ─► on_exit(life, exit, policy, the instance's flapping, now) -> Outcome
            ─► publish proc.<t>.stop|exit, then (``follow``): spawn now, respawn timer,
            converge, suspend the instance (its resume timer, proc.<t>.flap if new), or fail
            it (it gave up); its siblings are untouched

    spawn failed ─► the same, with ``Exit(error=...)``, reported once per run of one error

Every time read and every callback scheduled goes through the ``Clock``; processes come from the
``ProcessFactory``; the ``ProcessHooks`` hear of every spawn, adoption and exit; the ``Lease``
says whether anything may be spawned now. A timer or an exit of an earlier process of an
instance is recognised by its ``incarnation`` and ignored.
"""

from __future__ import annotations

import collections
import functools
import logging
from pathlib import Path
from typing import Sequence

from gaffer.agent import flapping
from gaffer.agent.attended import lapsed
from gaffer.agent.changes import Changes
from gaffer.agent.checks import Checks
from gaffer.agent.entry import Entry
from gaffer.agent.instance import Handle, Instance
from gaffer.agent.launch import build_launch
from gaffer.agent.lease import Lease
from gaffer.agent.lifecycle import (
    UP, Begin, Event, Exit, Outcome, State, Then, begin, on_exit, repeat_error,
)
from gaffer.agent.output import Line
from gaffer.agent.ownership import ProcInfo
from gaffer.agent.plan import Actions, plan, startable
from gaffer.agent.process import ExitStatus
from gaffer.agent.processes import Found, ProcessFactory, ProcessHooks
from gaffer.agent.readiness import Readiness
from gaffer.common import topics
from gaffer.common.bus import EventBus
from gaffer.common.clock import Clock
from gaffer.common.errors import SpawnError
from gaffer.common.signals import parse_signal
from gaffer.common.template import Template

log = logging.getLogger("gaffer.manager")
SHOWN_AS_EVENT = {"gaffer_event": True}
"""``extra`` of a log record that says what an event the Manager publishes says: a console
that prints the events (``gaffer start``) leaves such records out, so nothing shows twice."""
SPAWN_BATCH = 64
GAVE_UP = "flapping: gave up after max_retry retries"
ALREADY_FAILED = "gave up after flapping"


class Executor:
    """Acts on the Manager's ``entries`` (the dict is the Manager's; this only reads it and
    removes deleted templates from it)."""

    def __init__(
        self,
        *,
        node: str,
        bus: EventBus,
        clock: Clock,
        processes: ProcessFactory,
        hooks: Sequence[ProcessHooks],
        lease: Lease,
        changes: Changes,
        entries: dict[str, Entry],
        environ: dict[str, str],
        agent_env: dict[str, str] | None,
        notify_dir: Path | None = None,
        checks: Checks | None = None,
    ) -> None:
        self._node = node
        self._bus = bus
        self._clock = clock
        self._processes = processes
        self._hooks = tuple(hooks)
        self._lease = lease
        self._changes = changes
        self._entries = entries
        self._environ = environ
        self._agent_env = agent_env
        self._abandoned = False
        self._runs_timer: Handle | None = None
        self.spawned = 0
        self.readiness = Readiness(
            node=node, bus=bus, clock=clock, notify=changes.notify, restart=self.restart_unhealthy,
            notify_dir=notify_dir, checks=checks, changed=self._verdict,
        )
        lease.on_free(self.converge_all)

    def _holding_at(self, now: float) -> bool:
        return self._abandoned or self._lease.holding(now)

    # ----------------------------------------------------------------- converging

    def converge_all(self) -> None:
        for entry in self._entries.values():
            self.converge_soon(entry)

    def converge_soon(self, entry: Entry) -> None:
        if not entry.converge_pending:
            entry.converge_pending = True
            self._clock.call_soon(self._converge, entry)

    def _converge(self, entry: Entry) -> None:
        entry.converge_pending = False
        if self._entries.get(entry.name) is not entry:
            return
        now = self._clock.time()
        holding = self._holding_at(now)
        actions = plan(entry.wanted, entry.instances, holding, busy=entry.runs.alive())
        self._carry_out(entry, actions)

    def _carry_out(self, entry: Entry, actions: Actions) -> None:
        instances = entry.instances
        for ordinal in actions.stop:
            self.stop(entry, instances[ordinal])
        for ordinal in actions.unwait:
            inst = instances[ordinal]
            inst.cancel_timers()
            inst.take(Event.UNWAIT)
        for ordinal in actions.forget:
            instances.pop(ordinal).output.close()
        if actions.delete:
            del self._entries[entry.name]
            self._bus.publish(topics.template(entry.name, entry.gone_as), {"name": entry.name})
            self._changes.notify()
            return
        for ordinal in actions.wait:
            inst = entry.instance(ordinal)
            inst.take(Event.WAIT)
        for ordinal in actions.spawn:
            entry.instance(ordinal)
        # before any spawn: one with startsecs 0 is up at once, and while rolling that plans again
        entry.rolling = actions.rolling
        entry.start_queue = collections.deque(actions.spawn)
        self._start_some(entry)
        for ordinal in actions.roll:
            self.stop(entry, instances[ordinal])
        if actions.changes():
            self._changes.notify()

    def _start_some(self, entry: Entry) -> None:
        """Begin the next SPAWN_BATCH queued instances, then yield to the loop for the rest."""
        entry.start_pending = False
        queue = entry.start_queue
        if not queue or self._entries.get(entry.name) is not entry or not entry.wanted.active:
            return
        here = entry.wanted.here
        now = self._clock.time()
        holding = self._holding_at(now)
        budget = SPAWN_BATCH
        while queue and budget:
            ordinal = queue.popleft()
            inst = entry.instances.get(ordinal)
            if inst is None or ordinal not in here or not startable(inst):
                continue
            budget -= 1
            self._begin(entry, inst, holding, now)
        if queue and not entry.start_pending:
            entry.start_pending = True
            self._clock.call_soon(self._start_some, entry)

    # ----------------------------------------------------------------- one instance

    def _begin(self, entry: Entry, inst: Instance, holding: bool, now: float) -> None:
        """Spawn a wanted instance, unless held (it waits in backoff without a timer), still
        suspended, or it gave up (failed)."""
        step = begin(inst.flap, holding, now)
        if step is Begin.SPAWN:
            self.spawn(entry, inst, entry.template)
        elif step is Begin.WAIT:
            inst.take(Event.WAIT)
        else:
            self._fail(entry, inst, ALREADY_FAILED)

    def spawn(self, entry: Entry, inst: Instance, template: Template) -> None:
        inst.cancel_timers()
        digest = entry.wanted.spec if template is entry.template else template.spec_hash()
        extra = None if self._agent_env is None else {**self._agent_env, "GAFFER_SPEC": digest}
        incarnation = inst.incarnation + 1
        try:
            if template.notify:
                extra = {**(extra or {}), **self.readiness.spawn_env(template)}
            spec = build_launch(template, inst.ordinal, self._node, self._environ, extra)
            on_output = None
            if spec.stdout or spec.stderr:
                inst.output.restart(template.log, inst.id)
                on_output = functools.partial(self._on_output, inst)
            on_exit = functools.partial(self._on_exit, entry, inst, incarnation)
            process = self._processes.spawn(spec, inst.id, on_exit, on_output)
        except SpawnError as exc:
            if inst.oneoff:
                raise
            self._spawn_failed(entry, inst, exc.message)
            return
        inst.incarnation = incarnation
        for hook in self._hooks:
            hook.on_spawn(inst.id, process, digest, inst.oneoff)
        self._repeats_ended(inst)
        self.spawned += 1
        inst.process = process
        inst.spec_hash = entry.wanted.spec
        inst.restart_gen = entry.wanted.restart_gen
        inst.started_at = process.started_at
        inst.error = None
        inst.unhealthy_stop = False
        if not inst.oneoff:
            self.readiness.spawned(inst, template)
        inst.take(Event.SPAWNED)
        self._bus.publish(topics.proc(inst.template, "spawn"), inst.event(self._node, self._clock.wall()))
        self._changes.notify()
        if template.startsecs <= 0 or inst.oneoff:
            self._on_up(entry, inst, incarnation)
        else:
            inst.timer = self._clock.call_later(template.startsecs, self._on_up, entry, inst, incarnation)

    def _on_up(self, entry: Entry, inst: Instance, incarnation: int) -> None:
        if inst.incarnation != incarnation or inst.state is not State.STARTING:
            return
        inst.timer = None
        inst.take(Event.UP)
        inst.failures = 0
        self._bus.publish(topics.proc(inst.template, "running"), inst.event(self._node, self._clock.wall()))
        if not inst.oneoff:
            self.readiness.up(entry, inst)
        self._changes.notify()
        if entry.rolling:
            self.converge_soon(entry)

    def _verdict(self, entry: Entry) -> None:
        """An instance turned ready or unhealthy: a roll waiting for it may go on."""
        if entry.rolling:
            self.converge_soon(entry)

    def stop(self, entry: Entry, inst: Instance, sig: int | None = None) -> None:
        """Send the stop signal (or ``sig``) to the group; KILL it after graceful_timeout."""
        if (inst.state is not State.STARTING and inst.state not in UP) or inst.process is None:
            return
        inst.cancel_timers()
        self.readiness.down(inst)
        inst.take(Event.STOP)
        template = entry.template
        inst.process.signal(parse_signal(template.stop_signal) if sig is None else sig)
        inst.kill_timer = self._clock.call_later(
            template.graceful_timeout, self._kill_now, inst, inst.incarnation
        )

    def restart_unhealthy(self, entry: Entry, inst: Instance) -> None:
        """Stop an instance that turned unhealthy; its exit respawns it (``on_exit``)."""
        log.warning("%s: unhealthy, restarting it (restart_on_unhealthy)", inst.id, extra=SHOWN_AS_EVENT)
        inst.unhealthy_stop = True
        self.stop(entry, inst)

    def _kill_now(self, inst: Instance, incarnation: int) -> None:
        if inst.incarnation != incarnation:
            return
        inst.kill_timer = None
        if inst.process is not None and inst.process.alive:
            log.info("%s: still running after graceful_timeout, sending KILL", inst.id)
            inst.process.signal(9)

    def _on_exit(self, entry: Entry, inst: Instance, incarnation: int, status: ExitStatus) -> None:
        """Waiters are woken whatever happens here: a bug must never leave one hanging."""
        try:
            self._handle_exit(entry, inst, incarnation, status)
        finally:
            self._changes.notify()

    def _handle_exit(self, entry: Entry, inst: Instance, incarnation: int, status: ExitStatus) -> None:
        process = inst.process
        if inst.incarnation != incarnation or process is None:
            return
        for hook in self._hooks:
            hook.on_exit(inst.id, process, inst.oneoff)
        inst.cancel_timers()
        self.readiness.down(inst)
        inst.process = None
        inst.last_exit = status
        outcome = self._decide(entry, inst, Exit(status.code, status.signal))
        payload = inst.event(self._node, self._clock.wall(), pid=process.pid, **status.to_dict())
        if inst.oneoff:
            inst.live(outcome.life)
            self._bus.publish(topics.proc(inst.template, "exit"), {**payload, "oneoff": True})
            entry.runs.ended()
            self.check_runs()
            if inst.done is not None and not inst.done.done():
                inst.done.set_result(status)
            if entry.deleting:
                self.converge_soon(entry)
            return
        self._bus.publish(topics.proc(inst.template, outcome.event), payload)
        self._follow(entry, inst, outcome)

    def _decide(self, entry: Entry, inst: Instance, exit: Exit) -> Outcome:
        now = self._clock.time()
        return on_exit(
            inst.life, exit, entry.policy, inst.flap, now,
            wanted=inst.ordinal in entry.wanted.here,
            holding=self._holding_at(now), oneoff=inst.oneoff, unhealthy=inst.unhealthy_stop,
        )

    def _spawn_failed(self, entry: Entry, inst: Instance, error: str) -> None:
        """A spawn that failed: reported once per run of the same error (``Repeats``), then
        what ``on_exit`` says (final under ``restart = "never"``, else backoff)."""
        inst.error = error
        inst.process = None
        previous = inst.repeats
        if previous is not None and previous.error != error:
            self._repeats_ended(inst)
        inst.repeats = repeat_error(previous, error)
        if inst.repeats.first:
            log.warning("%s: %s", inst.id, error, extra=SHOWN_AS_EVENT)
        payload = inst.event(
            self._node, self._clock.wall(), status=None, signal=None, error=error, again=inst.repeats.again
        )
        self._bus.publish(topics.proc(inst.template, "exit"), payload)
        self._follow(entry, inst, self._decide(entry, inst, Exit(error=error)))
        self._changes.notify()

    def _follow(self, entry: Entry, inst: Instance, outcome: Outcome) -> None:
        """Carry out an exit's ``Outcome``."""
        inst.flap = outcome.flap
        inst.live(outcome.life)
        then = outcome.then
        if then is Then.SPAWN:
            self.spawn(entry, inst, entry.template)
        elif then is Then.RETRY:
            inst.timer = self._clock.call_later(outcome.delay, self._respawn, entry, inst)
        elif then is Then.CONVERGE:
            self.converge_soon(entry)
        elif then is Then.FAIL:
            self._fail(entry, inst, ALREADY_FAILED)
        elif then is Then.GIVE_UP:
            log.error("%s: flapping past max_retry, giving up", inst.id, extra=SHOWN_AS_EVENT)
            self._fail(entry, inst, GAVE_UP)
        if outcome.suspend is not None:
            self._suspend(entry, inst, outcome.suspend, outcome.announce)

    def _repeats_ended(self, inst: Instance) -> None:
        """Say how often an error came back, once it stops coming back."""
        repeats, inst.repeats = inst.repeats, None
        if repeats is not None and repeats.again:
            log.warning("%s: %s (again, %d times)", inst.id, repeats.error, repeats.again)

    def _respawn(self, entry: Entry, inst: Instance) -> None:
        inst.timer = None
        if inst.state is State.BACKOFF and self._entries.get(entry.name) is entry:
            now = self._clock.time()
            self._begin(entry, inst, self._holding_at(now), now)

    def _suspend(self, entry: Entry, inst: Instance, resume_at: float, announce: bool) -> None:
        """Hold one instance in backoff until ``resume_at``: its respawn timer is the end of
        the suspension, so a converge neither starts it nor waits it again meanwhile."""
        inst.cancel_timers()
        delay = max(0.0, resume_at - self._clock.time())
        inst.timer = self._clock.call_later(delay, self._resume, entry, inst)
        if not announce:
            return
        template = entry.template
        log.warning(
            "%s is flapping: respawns suspended for %.1fs (retry %d)",
            inst.id, delay, inst.flap.retries, extra=SHOWN_AS_EVENT,
        )
        self._bus.publish(topics.proc(template.name, "flap"), inst.event(
            self._node, self._clock.wall(),
            retry_in=round(delay, 3),
            retries=inst.flap.retries,
            max_retry=template.flapping.max_retry if template.flapping else None,
        ))

    def _resume(self, entry: Entry, inst: Instance) -> None:
        """End an instance's flapping suspension: spawn it (or wait, if held)."""
        inst.flap = flapping.resumed(inst.flap, self._clock.time())
        self._respawn(entry, inst)

    def _fail(self, entry: Entry, inst: Instance, reason: str) -> None:
        self._repeats_ended(inst)
        inst.take(Event.FAIL)
        inst.error = reason
        payload = inst.event(self._node, self._clock.wall(), reason=reason)
        self._bus.publish(topics.proc(inst.template, "failed"), payload)
        self._changes.notify()

    def _on_output(self, inst: Instance, stream: str, data: bytes) -> None:
        """Captured bytes -> one chunk of complete lines: into the ring, the log file, and one
        ``output.`` event carrying all of them (only if someone subscribes), numbered: ``line``
        is the number of its first line in the instance's stream. ``lines`` (how many) is for
        local subscribers only, so none counts them again; the link does not forward it."""
        first = inst.output.lines(stream) + 1
        chunk = inst.output.feed(stream, data, self._clock.wall())
        if chunk is None:
            return
        topic = topics.output(inst.template, inst.ordinal, stream)
        if self._bus.wants(topic):
            data = {
                "node": self._node, "id": inst.id, "template": inst.template, "stream": stream,
                "ts": chunk.ts, "line": first, "lines": chunk.last - first + 1, "text": chunk.text,
            }
            pid = inst.process.pid if inst.process is not None else None
            if pid is not None:
                data["pid"] = pid
            self._bus.publish(topic, data)

    # ----------------------------------------------------------------- adoption

    def adopt(
        self,
        entry: Entry,
        inst: Instance,
        found: Found,
        fds: dict[str, int],
        buffered: dict[str, bytes],
        dropped: dict[str, int],
        leader: ProcInfo | None,
        members: tuple[ProcInfo, ...],
    ) -> None:
        """Watch ``found`` as ``inst`` (stopped or waiting, checked by the Manager)."""
        spec = build_launch(entry.template, found.ordinal, self._node, self._environ, dict(self._agent_env or {}))
        incarnation = inst.incarnation + 1
        process = self._processes.adopt(
            spec, found, fds, inst.id, functools.partial(self._on_exit, entry, inst, incarnation),
            functools.partial(self._on_output, inst), leader, members,
        )
        inst.incarnation = incarnation
        if inst.waiting:
            inst.take(Event.UNWAIT)
        inst.process = process
        inst.spec_hash = found.spec
        inst.restart_gen = entry.wanted.restart_gen
        inst.started_at = found.started_at
        inst.output.restart(None, inst.id)
        inst.take(Event.ADOPTED)
        self.readiness.adopted(entry, inst)
        for stream, data in buffered.items():
            lost = dropped.get(stream, 0)
            if lost:
                note = f"[gaffer: {lost} bytes lost while no agent ran]"
                inst.output.note(Line(self._clock.wall(), stream, note))
            self._on_output(inst, stream, data)
        for hook in self._hooks:
            hook.on_adopt(inst.id, process)
        payload = inst.event(self._node, self._clock.wall(), adopted=True)
        self._bus.publish(topics.proc(inst.template, "spawn"), payload)
        self._changes.notify()

    # ----------------------------------------------------------------- attended runs

    def check_runs(self) -> None:
        """Carry out ``attended.lapsed``: stop the runs whose client is gone, forget the ended
        ones it let go, and look again when the next lease runs out."""
        if self._runs_timer is not None:
            self._runs_timer.cancel()
            self._runs_timer = None
        if self._abandoned:
            return
        now = self._clock.time()
        later: float | None = None
        for entry in list(self._entries.values()):
            verdict = lapsed(entry.runs.views(), now)
            for key in verdict.stop:
                inst = entry.runs.get(key)
                if inst is not None and inst.state in (State.STARTING, State.RUNNING):
                    log.warning("%s: its client is gone (lease lapsed); stopping it", inst.id)
                    self.stop(entry, inst)
            for key in verdict.forget:
                entry.runs.forget(key)
                self._changes.notify()
            if verdict.next_check is not None and (later is None or verdict.next_check < later):
                later = verdict.next_check
        if later is not None:
            self._runs_timer = self._clock.call_later(max(0.0, later - now), self.check_runs)

    def abandon(self) -> None:
        """Let go of every process without stopping it: no exit watch, no pipes, no timers,
        nothing spawned again."""
        self._abandoned = True
        self.readiness.abandon()
        if self._runs_timer is not None:
            self._runs_timer.cancel()
            self._runs_timer = None
        for entry in self._entries.values():
            for inst in [*entry.instances.values(), *entry.runs]:
                inst.cancel_timers()
                if inst.process is not None:
                    inst.process.abandon()
