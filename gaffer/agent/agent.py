"""An agent: the Manager of this host, its link to the controller, and what they share.

The daemon, ``gaffer start`` and the tests all build agents through this one class so the
pieces are always wired the same way.

Every descendant of every instance is tracked (``tracking``: a cgroup per instance where the
host allows it, else the agent as a child subreaper plus a scan of /proc), so stopping an
instance, or its main process exiting, leaves nothing of it behind.

Surviving its own restart: the agent parks every pipe end of its processes with the fd keeper
(a small process outside the agent) and saves each assignment it applies in its state dir. If
the keeper dies the agent starts a new one and hands it every live pipe again, with backoff,
for as long as it runs (``keeper`` is then "restarting" in its hello/heartbeat); a stop waits
for a keeper to hold the pipes before letting go of them. A new agent reclaims the pipes,
restores the saved assignment (holding: nothing new starts until the controller speaks) and
settles every process of its node that it finds in /proc (``ownership.plan_adoption``: its
own, and those of agents that are gone, even when the state dir was deleted): those still
assigned are adopted with their daemons, the others stopped with theirs, so at most one
process runs per ``<template>.<ordinal>``. Without a saved assignment it settles at the first
assignment the controller sends, holding the Manager until it has.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from gaffer.agent import adoption, journal, presence
from gaffer.agent.assignment import Assignments
from gaffer.agent.commands import Commands
from gaffer.agent.keeper.client import Reclaimed
from gaffer.agent.keeping import Keeping
from gaffer.agent.lease import Lease
from gaffer.agent.link import ControllerLink, LinkSettings, read_agent_id
from gaffer.agent.manager import Manager
from gaffer.agent.outbox import CAPACITY as OUTBOX_CAPACITY
from gaffer.agent.ownership import Candidate, Identity, ProcInfo, plan_adoption
from gaffer.agent.processes import ProcessHooks
from gaffer.agent.statpush import StatPusher
from gaffer.agent.tracking import Tracker
from gaffer.common.bus import EventBus
from gaffer.common.errors import AdoptError, ConfigError, KeeperError
from gaffer.common.tasks import cancel_and_wait
from gaffer.common.topics import split_instance_id

log = logging.getLogger("gaffer.agent")

STRAY_GRACE = 10.0
STRAY_MARGIN = 1.0
"""A stopping agent waits for the KILLs of leftover processes it is stopping at most
STRAY_GRACE + this."""
BUSY_PATIENCE = 3.0
"""An agent of this state dir killed just now may not have released its name yet: retried
this long before concluding that another agent really is running."""
KEEPER_IDLE = 2.0
"""A keeper holding nothing with no agent connected exits after this long: a later agent
starts a new one in a few milliseconds, so there is no reason to linger."""
SETTLE_STEP = 30.0
"""Bound on each step of settling (reclaiming pipes, reading /proc): the Manager spawns nothing
meanwhile, so it must never wait for ever."""
OFF = "off"


class Agent:
    def __init__(
        self,
        settings: LinkSettings,
        bus: EventBus | None = None,
        keeper: bool = True,
        keeper_idle: float = KEEPER_IDLE,
        tracking: str = "auto",
        outbox_capacity: int = OUTBOX_CAPACITY,
    ) -> None:
        """``keeper=False`` (``gaffer start``): processes end with this agent, so no keeper.
        ``tracking``: "auto" (cgroups where possible), "cgroup" or "subreaper".
        ``outbox_capacity``: state events kept until the controller has them (tests shrink it)."""
        self.settings = settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.state_dir, 0o700)
        self.agent_id = read_agent_id(settings.state_dir)
        self.tracker = Tracker.for_host(settings.node, self.agent_id, tracking)
        self.lease = Lease(held=True)
        self.journal = journal.Journal(settings.state_dir / "spawned.journal")
        self.keeping = Keeping(settings.state_dir, keeper_idle) if keeper else None
        hooks: list[ProcessHooks] = [self.journal]
        if self.keeping is not None:
            hooks.append(self.keeping)
        self.manager = Manager(
            node=settings.node,
            bus=bus,
            agent_env={"GAFFER_AGENT_ID": self.agent_id},
            tracker=self.tracker,
            lease=self.lease,
            hooks=hooks,
            notify_dir=settings.state_dir,
        )
        self.commands = Commands(self.manager)
        self.link = ControllerLink(
            self.manager, settings, self.agent_id, self.lease,
            host=self.host_info, on_assign=self._on_assign,
            commands={**self.commands.table(), "stats_watch": self._stats_watch},
            outbox_capacity=outbox_capacity,
        )
        self.stats_push = StatPusher(self.manager.running, self.link, settings.stats_interval)
        self.assignments = Assignments(
            self.manager, self.link.ack, settings.state_dir / "assignment.json" if keeper else None
        )
        self._presence: presence.Presence | None = None
        self._tasks: set[asyncio.Task] = set()
        self._unsettled = False
        self._journal_entries: dict[int, int] = {}
        self.adopted = 0
        self.strays = 0

    async def _stats_watch(self, op: str, args: dict[str, Any]) -> None:
        """Someone looks at this node's stats at the controller (``statcadence.py``)."""
        await self.stats_push.watch_command(op, args)

    def host_info(self) -> dict[str, str]:
        """How this host keeps its processes, for the controller (``protocol._HOST``)."""
        keeper = self.keeping.state if self.keeping is not None else OFF
        return {"tracking": self.tracker.mode, "keeper": keeper}

    async def start(self) -> None:
        self._presence = await self._announce()
        if self.tracker.cgroups is not None:
            removed = self.tracker.cgroups.cleanup(presence.alive)
            if removed:
                log.info("removed %d empty cgroups left by earlier agents", removed)
        if self.keeping is not None:
            await self.keeping.start()
            if self.assignments.restore():
                await self._settle()
            else:
                self._unsettled = True
        else:
            await self._stop_leftovers()
        self.link.start()
        self.stats_push.start()

    async def _announce(self) -> presence.Presence:
        """Hold this agent's name; an agent of this state dir killed just now may not have
        released it yet, so it is retried for BUSY_PATIENCE seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_PATIENCE
        while True:
            try:
                return presence.Presence(self.agent_id)
            except ConfigError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    # ------------------------------------------------------------------------- settling

    def _on_assign(self, body: dict[str, Any]) -> None:
        """An assignment (or a part of one): the first settles what was found at start; once
        a whole one is applied, the hold ends."""
        if self._unsettled:
            self._unsettled = False
            self.lease.settle(True)
            self._watch(self._settle_then_release())
        if self.assignments.apply(body):
            self.lease.release()

    async def _settle_then_release(self) -> None:
        try:
            await self._settle()
        finally:
            self.lease.settle(False)

    async def _settle(self) -> None:
        """Adopt or stop every process of this node that is this agent's to settle (see the
        module docstring); the Manager wants what the (restored or first) assignment says."""
        try:
            procs = await asyncio.wait_for(self._find_processes(), SETTLE_STEP)
        except asyncio.TimeoutError:
            log.error("reading /proc took over %gs: processes of earlier agents are not settled", SETTLE_STEP)
            return
        held: dict[str, Reclaimed] = {}
        if self.keeping is not None:
            try:
                held = await asyncio.wait_for(self.keeping.reclaim(), SETTLE_STEP)
            except (KeeperError, asyncio.TimeoutError) as exc:
                log.warning("cannot reclaim pipes from the keeper (adopting without them): %r", exc)
        plan = plan_adoption(procs, self._identity(procs), self._wanted(), self._journaled())
        for candidate in plan.adopt:
            pipes = held.pop(candidate.instance_id, None) or Reclaimed(fds={})
            if self._adopt(candidate, pipes):
                self.adopted += 1
                continue
            pipes.close()
            self._release_pipes(candidate.instance_id)
            self._stop_stray(candidate, "it could not be adopted")
        for candidate in plan.stop:
            self._stop_stray(candidate, candidate.reason)
        for key, pipes in held.items():
            pipes.close()
            self._release_pipes(key)
        self.journal.rewrite(
            journal.Entry(c.instance_id, c.leader.pid, c.leader.start_ticks, c.leader.spec)
            for c in plan.adopt if c.leader.pid in self._adopted_pids()
        )
        if plan.adopt or plan.stop:
            log.info(
                "adopted %d running processes, stopped %d (left %d of other agents)",
                self.adopted, self.strays, len(plan.left),
            )

    async def _stop_leftovers(self) -> None:
        """``gaffer start``: stop what an earlier run of this very agent (same data dir) left,
        never anything of another agent, dead or alive."""
        try:
            procs = await asyncio.wait_for(self._find_processes(), SETTLE_STEP)
        except asyncio.TimeoutError:
            log.error("reading /proc took over %gs: what an earlier run left is not stopped", SETTLE_STEP)
            return
        who = Identity(self.settings.node, self.agent_id, frozenset(
            p.agent_id for p in procs if p.agent_id and p.agent_id != self.agent_id
        ))
        plan = plan_adoption(procs, who, frozenset(), self._journaled())
        for candidate in plan.stop:
            self._stop_stray(candidate, "left running by an earlier run")

    def _adopt(self, candidate: Candidate, pipes: Reclaimed) -> bool:
        leader = candidate.leader
        found = adoption.Found(
            pid=leader.pid, instance_id=candidate.instance_id, template=leader.template or "",
            ordinal=int(leader.instance or 0), started_at=adoption.create_time(leader.start_ticks),
            spec=leader.spec, start_ticks=leader.start_ticks,
        )
        try:
            return self.manager.adopt(
                found, pipes.fds, pipes.buffered, pipes.dropped, leader=leader, members=candidate.members
            )
        except (AdoptError, ValueError) as exc:
            log.warning("cannot adopt %s (pid %d): %s", candidate.instance_id, leader.pid, exc)
            return False

    async def _find_processes(self) -> list[ProcInfo]:
        """The whole process table (off the loop), with the spawn journal's leaders marked as
        what they are even if they replaced their environment."""
        loop = asyncio.get_running_loop()
        procs = await loop.run_in_executor(None, adoption.snapshot, self.tracker.cgroups is not None)
        by_pid = {p.pid: p for p in procs}
        self._journal_entries = {}
        for entry in journal.read(self.journal.path):
            proc = by_pid.get(entry.pid)
            if proc is None or proc.start_ticks != entry.start_ticks or not proc.alive:
                continue
            self._journal_entries[entry.pid] = entry.start_ticks
            if proc.instance_id is None or proc.node is None:
                try:
                    template, ordinal = split_instance_id(entry.instance_id)
                except ValueError:
                    continue
                by_pid[entry.pid] = ProcInfo(
                    pid=proc.pid, ppid=proc.ppid, pgid=proc.pgid, sid=proc.sid,
                    start_ticks=proc.start_ticks, state=proc.state, node=self.settings.node,
                    template=template, instance=ordinal, agent_id=self.agent_id,
                    spec=entry.spec, cgroup=proc.cgroup,
                )
        return list(by_pid.values())

    def _journaled(self) -> dict[int, int]:
        """Leaders the spawn journal names (pid -> start ticks), from the last scan."""
        return self._journal_entries

    def _identity(self, procs: list[ProcInfo]) -> Identity:
        others = {p.agent_id for p in procs if p.node == self.settings.node and p.agent_id}
        others.discard(self.agent_id)
        return Identity(self.settings.node, self.agent_id, presence.live_agents(others))

    def _wanted(self) -> frozenset[str]:
        return frozenset(row["id"] for row in self.manager.instances() if not row["oneoff"])

    def _adopted_pids(self) -> set[int]:
        return {row["pid"] for row in self.manager.instances() if row["pid"]}

    def _release_pipes(self, key: str) -> None:
        if self.keeping is not None:
            self.keeping.release(key)

    def _stop_stray(self, candidate: Candidate, reason: str) -> None:
        """An incarnation nothing here wants: TERM it whole, KILL what lingers."""
        self.strays += 1
        log.warning(
            "stopping %s (pid %d and %d more): %s",
            candidate.instance_id, candidate.leader.pid, len(candidate.members), reason,
        )
        self.tracker.terminate(candidate.leader, candidate.members, STRAY_GRACE)

    def _watch(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, stop_processes: bool = False) -> None:
        """Close the link; the processes keep running (their pipes stay with the keeper)
        unless ``stop_processes``. Stops in progress are finished first (each within its
        graceful_timeout, then KILL): only the processes nobody was stopping are left."""
        await self.stats_push.stop()
        await self.link.stop()
        await self.assignments.aclose()
        finished = 0
        if stop_processes:
            await self.manager.shutdown()
        else:
            self.lease.hold()
            finished = await self.manager.finish_stops()
        for task in list(self._tasks):
            await cancel_and_wait(task)
        finished += await self.tracker.finish_strays(STRAY_GRACE + STRAY_MARGIN)
        if self.keeping is not None:
            await self.keeping.aclose(hand_over=not stop_processes)
        if not stop_processes:
            self.manager.abandon()
        await self.manager.aclose()
        await self.tracker.aclose(finish=stop_processes or finished > 0)
        self.journal.close()
        if self._presence is not None:
            self._presence.close()

    @property
    def connected(self) -> asyncio.Event:
        return self.link.connected
