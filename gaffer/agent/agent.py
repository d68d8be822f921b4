"""An agent: the Manager of this host, its link to the controller, and what they share.

The daemon, ``gaffer start`` and the tests all build agents through this one class so the
pieces are always wired the same way.

Surviving its own restart: the agent parks every pipe end of its processes with the fd keeper
(a small process outside the agent) and saves each assignment it applies in its state dir. A
new agent reclaims the pipes, restores the saved assignment (holding: nothing new starts until
the controller speaks), finds its processes in /proc and adopts those still assigned; any other
process it finds (a duplicate, or one no longer assigned) is stopped, so no unmanaged copy is
ever left running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from gaffer.agent import adoption, journal
from gaffer.agent.assignment import Assignments
from gaffer.agent.commands import Commands
from gaffer.agent.keeper_client import KeeperClient, Reclaimed
from gaffer.agent.link import ControllerLink, LinkSettings, read_agent_id
from gaffer.agent.manager import Manager

from gaffer.common.bus import EventBus
from gaffer.common.errors import AdoptError, ConfigError, KeeperBusy, KeeperError
from gaffer.common.topics import split_instance_id

log = logging.getLogger("gaffer.agent")

STRAY_GRACE = 10.0
BUSY_PATIENCE = 3.0
"""A keeper still busy with the agent this one replaces (its exit not yet noticed) is
retried this long before concluding that another agent really is running."""
KEEPER_IDLE = 2.0
"""A keeper holding nothing with no agent connected exits after this long: a later agent
starts a new one in a few milliseconds, so there is no reason to linger."""


class Agent:
    def __init__(
        self,
        settings: LinkSettings,
        bus: EventBus | None = None,
        keeper: bool = True,
        keeper_idle: float = KEEPER_IDLE,
    ) -> None:
        """``keeper=False`` (``gaffer start``): processes end with this agent, so no keeper."""
        self.settings = settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.state_dir, 0o700)
        self.agent_id = read_agent_id(settings.state_dir)
        self.manager = Manager(
            node=settings.node,
            bus=bus,
            agent_env={"GAFFER_AGENT_ID": self.agent_id},
            held=True,
        )
        self.link = ControllerLink(self.manager, settings, self.agent_id)
        self.assignments = Assignments(
            self.manager, self.link.ack, settings.state_dir / "assignment.json" if keeper else None
        )
        self.commands = Commands(self.manager, self.assignments)
        self.link.on_assign = self.assignments.apply
        self.link.commands = self.commands.table()
        self._use_keeper = keeper
        self._keeper_idle = keeper_idle
        self.journal = journal.Journal(settings.state_dir / "spawned.journal")
        self.manager.journal = self.journal
        self.keeper: KeeperClient | None = None
        self._tasks: set[asyncio.Task] = set()
        self.adopted = 0
        self.strays = 0

    async def start(self) -> None:
        if self._use_keeper:
            await self._connect_keeper()
            await self._adopt()
        self.link.start()

    async def _connect_keeper(self) -> None:
        path = self.settings.state_dir / "keeper.sock"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_PATIENCE
        while True:
            try:
                self.keeper = await KeeperClient.connect(
                    path, spawn=True, idle_timeout=self._keeper_idle,
                    log_path=self.settings.state_dir / "keeper.log",
                )
                break
            except KeeperBusy as exc:
                if loop.time() > deadline:
                    raise ConfigError(
                        f"another agent is using {self.settings.state_dir} ({exc.message}): "
                        "stop it, or give this one its own --state-dir"
                    ) from None
                await asyncio.sleep(0.05)
        self.manager.keeper = self.keeper
        self._watch(self._keep_keeper())

    async def _adopt(self) -> None:
        """Take back the processes an earlier agent left running (see the module docstring)."""
        assert self.keeper is not None
        held = await self.keeper.reclaim()
        found = self._find_processes()
        self.assignments.restore()
        for proc in found:
            pipes = held.pop(proc.instance_id, None) or Reclaimed(fds={})
            try:
                taken = self.manager.adopt(proc, pipes.fds, pipes.buffered, pipes.dropped)
            except (AdoptError, ValueError) as exc:
                log.warning("cannot adopt %s (pid %d): %s", proc.instance_id, proc.pid, exc)
                taken = False
            if taken:
                self.adopted += 1
                continue
            pipes.close()
            self.keeper.release(proc.instance_id)
            self._stop_stray(proc)
        for key, pipes in held.items():
            pipes.close()
            self.keeper.release(key)
        self.journal.rewrite(
            journal.Entry(p.instance_id, p.pid, p.start_ticks, p.spec)
            for p in found if p.pid in self._adopted_pids()
        )
        if found:
            log.info(
                "adopted %d running processes, stopped %d not assigned here", self.adopted, self.strays
            )

    def _find_processes(self) -> list[adoption.Found]:
        """Our processes in /proc by their environment, plus any the journal knows that hid
        their environment; oldest first for each instance id."""
        found = adoption.discover(self.settings.node, self.agent_id)
        seen = {f.pid for f in found}
        for entry in journal.read(self.journal.path):
            if entry.pid in seen or not journal.still_running(entry):
                continue
            try:
                template, ordinal = split_instance_id(entry.instance_id)
            except ValueError:
                continue
            found.append(adoption.Found(
                pid=entry.pid, instance_id=entry.instance_id, template=template,
                ordinal=int(ordinal) if ordinal.isascii() and ordinal.isdecimal() else ordinal,
                started_at=adoption.create_time(entry.start_ticks), spec=entry.spec,
                start_ticks=entry.start_ticks,
            ))
        found.sort(key=lambda f: (f.instance_id, f.started_at))
        return found

    def _adopted_pids(self) -> set[int]:
        return {row["pid"] for row in self.manager.instances() if row["pid"]}

    def _stop_stray(self, proc: adoption.Found) -> None:
        """A process of ours that nothing here wants: TERM its group, KILL it if it lingers."""
        self.strays += 1
        log.warning("stopping %s (pid %d): not assigned to this node any more", proc.instance_id, proc.pid)
        _signal_group(proc.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        loop.call_later(STRAY_GRACE, _kill_if_same, proc.pid, proc.started_at)

    async def _keep_keeper(self) -> None:
        """If the keeper dies, start a new one and hand it every live pipe again."""
        while True:
            assert self.keeper is not None
            reason = await asyncio.shield(self.keeper.lost)
            log.warning("fd keeper lost (%s); starting a new one", reason)
            try:
                await self._connect_keeper_again()
            except KeeperError as exc:
                log.error("no fd keeper: processes will not survive an agent restart: %s", exc)
                return

    async def _connect_keeper_again(self) -> None:
        self.keeper = await KeeperClient.connect(
            self.settings.state_dir / "keeper.sock", spawn=True, idle_timeout=self._keeper_idle,
            log_path=self.settings.state_dir / "keeper.log",
        )
        self.manager.keeper = self.keeper
        for ident, fds in self.manager.live_pipes().items():
            self.keeper.deposit(ident, fds)

    def _watch(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, stop_processes: bool = False) -> None:
        """Close the link; the processes keep running (their pipes stay with the keeper)
        unless ``stop_processes``."""
        await self.link.stop()
        if stop_processes:
            await self.manager.shutdown()
        for task in list(self._tasks):
            task.cancel()
        if self.keeper is not None:
            self.manager.keeper = None
            self.keeper.close()

    @property
    def connected(self) -> asyncio.Event:
        return self.link.connected


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_if_same(pid: int, started_at: float) -> None:
    """SIGKILL the group of ``pid`` unless that pid is now another process (or gone)."""
    try:
        stat = adoption.read_stat(pid)
    except (OSError, ValueError):
        return
    if abs(adoption.create_time(stat.start_ticks) - started_at) < 0.05 and stat.state != "Z":
        _signal_group(pid, signal.SIGKILL)
