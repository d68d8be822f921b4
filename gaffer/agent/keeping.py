"""Keeping an fd keeper for this agent: the pipes of every live instance are always deposited.

The keeper (``keeper.py``, a small process outside the agent) holds a copy of each instance's
pipe ends so the processes outlive the agent. ``Keeping`` is the agent's side of it:

- it is one of the Manager's ``ProcessHooks``: each spawn or adoption deposits the instance's
  pipes, each exit releases them, and it remembers which processes it deposited;
- it replaces a lost keeper for as long as the agent runs (``state`` is "restarting"
  meanwhile), handing the new one every live pipe again, with backoff (``keeper_retry_delay``);
- on a stop that leaves the processes running, ``aclose(hand_over=True)`` proves a live
  keeper holds the pipes before the agent lets go of its copies.

It owns one background task (the watch on the keeper), started by ``start`` and ended by
``aclose``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gaffer.agent.keeper.client import KeeperClient, Reclaimed
from gaffer.agent.processes import Proc
from gaffer.common.errors import ConfigError, GafferError, KeeperBusy, KeeperError
from gaffer.common.tasks import cancel_and_wait

log = logging.getLogger("gaffer.agent")

BUSY_PATIENCE = 3.0
"""A keeper still busy with the agent this one replaces (its exit not yet noticed) is
retried this long before concluding that another agent really is running."""
KEEPER_RETRY_FIRST = 0.1
KEEPER_RETRY_MAX = 30.0
KEEPER_LAST_CHANCE = 10.0
"""On stop, how long to try for a keeper (and its acknowledgements) before letting go of the
pipes anyway."""
RUNNING, RESTARTING = "running", "restarting"


def keeper_retry_delay(previous: float | None) -> float:
    """Backoff between attempts to start a keeper: 0.1 s, doubling, capped at 30 s."""
    if previous is None:
        return KEEPER_RETRY_FIRST
    return min(KEEPER_RETRY_MAX, previous * 2)


class Keeping:
    def __init__(self, state_dir: Path, idle: float) -> None:
        self._state_dir = state_dir
        self._idle = idle
        self.client: KeeperClient | None = None
        self.state = RUNNING
        self.restarts = 0
        self._deposited: dict[str, Proc] = {}
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect to this state dir's keeper (starting one), then watch it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_PATIENCE
        while True:
            try:
                self.client = await self._open()
                break
            except KeeperBusy as exc:
                if loop.time() > deadline:
                    raise ConfigError(
                        f"another agent is using {self._state_dir} ({exc.message}): "
                        "stop it, or give this one its own --state-dir"
                    ) from None
                await asyncio.sleep(0.05)
        self._task = loop.create_task(self._keep())

    async def aclose(self, hand_over: bool = False) -> None:
        """Stop watching and close the connection (the keeper keeps what it holds);
        ``hand_over`` first (see there): the agent stops and its processes go on."""
        await cancel_and_wait(self._task)
        self._task = None
        if hand_over:
            await self._hand_over()
        if self.client is not None:
            self.client.close()
            self.client = None

    async def _open(self) -> KeeperClient:
        return await KeeperClient.connect(
            self._state_dir / "keeper.sock", spawn=True, idle_timeout=self._idle,
            log_path=self._state_dir / "keeper.log",
        )

    async def _keep(self) -> None:
        """Whenever the keeper is lost, start a new one and hand it every live pipe again."""
        while True:
            assert self.client is not None
            reason = await asyncio.shield(self.client.lost)
            self.state = RESTARTING
            self.client = None
            log.warning("fd keeper lost (%s); starting a new one", reason)
            await self._reconnect()

    async def _reconnect(self) -> None:
        delay: float | None = None
        attempts = 0
        while True:
            try:
                client = await self._open()
                self._deposit_all(client)
            except KeeperError as exc:
                attempts += 1
                delay = keeper_retry_delay(delay)
                if attempts == 1 or delay >= KEEPER_RETRY_MAX:
                    log.error(
                        "no fd keeper (attempt %d, next in %.1fs): processes would not survive "
                        "an agent restart: %s", attempts, delay, exc,
                    )
                await asyncio.sleep(delay)
                continue
            self.client = client
            self.state = RUNNING
            self.restarts += 1
            log.info("fd keeper pid %s holds %d instances' pipes again", client.keeper_pid,
                     len(self.live_pipes()))
            return

    def live_pipes(self) -> dict[str, dict[str, int]]:
        """The pipe ends of every live process deposited so far, by instance id."""
        out = {}
        for ident, process in self._deposited.items():
            fds = process.stream_fds() if process.alive else {}
            if fds:
                out[ident] = fds
        return out

    def _deposit_all(self, client: KeeperClient) -> None:
        for ident, fds in self.live_pipes().items():
            try:
                client.deposit(ident, fds)
            except ValueError as exc:
                log.warning("%s: cannot hand its pipes to the keeper: %s", ident, exc)

    async def _hand_over(self) -> None:
        """Before this process lets go of the pipes, make sure a live keeper holds every one:
        the pipes close with the agent, and a process writing output would then die of
        SIGPIPE. A keeper lost just now (its loss maybe not even noticed yet) is replaced; a
        ``status`` round trip, answered after every earlier deposit, proves it holds them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KEEPER_LAST_CHANCE
        while loop.time() < deadline:
            try:
                if self.client is None or self.client.lost.done():
                    await asyncio.wait_for(self._reconnect(), deadline - loop.time())
                assert self.client is not None
                await asyncio.wait_for(self.client.status(), max(0.1, deadline - loop.time()))
                return
            except asyncio.TimeoutError:
                break
            except KeeperError as exc:
                log.warning("the fd keeper did not answer (%s); trying another", exc)
                if self.client is not None:
                    self.client.close(str(exc))
        log.error("stopping without an fd keeper: processes that write output may die")

    # ------------------------------------------------------------------------- settling

    async def reclaim(self) -> dict[str, Reclaimed]:
        """The pipes an earlier agent deposited (to adopt its processes with)."""
        if self.client is None:
            return {}
        return await self.client.reclaim()

    def release(self, key: str) -> None:
        """The keeper may drop what it holds for ``key``."""
        if self.client is not None:
            try:
                self.client.release(key)
            except KeeperError:
                pass

    # ------------------------------------------------------------------------- ProcessHooks

    def on_spawn(self, instance_id: str, process: Proc, spec: str | None, oneoff: bool) -> None:
        """One-off runs end with the agent: their pipes are not kept."""
        if not oneoff:
            self._deposit(instance_id, process)

    def on_adopt(self, instance_id: str, process: Proc) -> None:
        self._deposit(instance_id, process)

    def on_exit(self, instance_id: str, process: Proc, oneoff: bool) -> None:
        if oneoff:
            return
        self._deposited.pop(instance_id, None)
        if self.client is not None:
            try:
                self.client.release(instance_id)
            except GafferError as exc:
                log.debug("%s: keeper release failed: %s", instance_id, exc)

    def _deposit(self, instance_id: str, process: Proc) -> None:
        fds = process.stream_fds()
        if not fds:
            return
        self._deposited[instance_id] = process
        if self.client is None:
            return
        try:
            self.client.deposit(instance_id, fds)
        except (GafferError, ValueError) as exc:
            log.warning(
                "%s: keeper refused its pipes (it will not survive an agent restart): %s",
                instance_id, exc,
            )
