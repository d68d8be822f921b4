"""Leadership: runs ``election`` against etcd, and tells the controller when it may act.

Owns its tasks (``start`` / ``stop``): one loop that steps the pure election and carries out
what each Decision says (one call at a time: grant, campaign, renew; revoking a given-up lease
on the side), and one watch on the election key that wakes the loop when the key is deleted or
created (a candidate campaigns at once; a leader whose key went steps down). Without the watch
everything still happens, only later (a candidate campaigns again every ``recheck``).

The controller asks ``may_act()`` before acting and guards each write with ``guard()``
(``EtcdClient.guarded``): ``may_act`` reads the state and the clock at the call, so it turns
false at the deadline even while a renewal is stuck. Changes are announced to ``on_change``
callbacks and to ``changes()`` iterators (each keeps the latest few; a slow reader misses
intermediate ones, never the last).

The key's value is this controller's ``identity`` (what followers tell clients to follow:
its endpoint); ``holder`` is the value last seen there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from gaffer.common.errors import LeadershipLost, StorageError
from gaffer.common.tasks import cancel_and_wait
from gaffer.controller.etcd import election, wire
from gaffer.controller.etcd.client import EtcdClient
from gaffer.controller.etcd.election import Action, Policy

log = logging.getLogger("gaffer.controller.etcd")

DEFAULT_KEY = "/gaffer/leader"
EVENT_QUEUE = 64
CHANGE_QUEUE = 8


@dataclass(frozen=True)
class LeaderChange:
    """This controller started (``leading``) or stopped leading; ``term`` while leading."""

    leading: bool
    term: int


class Leadership:
    """This controller's part in the election on ``key`` through ``client`` (see module)."""

    def __init__(self, client: EtcdClient, identity: bytes | str, *, key: bytes | str = DEFAULT_KEY,
                 policy: Policy | None = None,
                 on_change: Callable[[LeaderChange], None] | None = None) -> None:
        self.client = client
        self.identity = wire.as_bytes(identity)
        self.key = wire.as_bytes(key)
        self.policy = policy or Policy()
        self.holder: bytes | None = None
        self._callbacks = [on_change] if on_change else []
        self._readers: list[asyncio.Queue[LeaderChange]] = []
        self._state = election.State()
        self._events: asyncio.Queue[election.Event] = asyncio.Queue(EVENT_QUEUE)
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        self._call_timeout = max(self.policy.renew_every(self.policy.ttl), 0.1)

    # ------------------------------------------------------------------ what the controller reads

    def may_act(self) -> bool:
        return election.may_act(self._state, asyncio.get_running_loop().time(), self.policy)

    @property
    def term(self) -> int:
        """The term this controller leads with now, 0 when it does not lead."""
        return self._state.term if self.may_act() else 0

    @property
    def phase(self) -> election.Phase:
        return self._state.phase

    def guard(self) -> wire.Guard:
        """The guard for a write made now; LeadershipLost when this controller does not lead."""
        if not self.may_act():
            raise LeadershipLost("this controller does not lead (no write is guarded by it)", 0)
        return wire.Guard(self.key, self._state.term)

    async def changes(self) -> AsyncIterator[LeaderChange]:
        """Each change of leadership from now on, for as long as the caller reads."""
        queue: asyncio.Queue[LeaderChange] = asyncio.Queue(CHANGE_QUEUE)
        self._readers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._readers.remove(queue)

    # ------------------------------------------------------------------ start / stop

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name="etcd-election")
            self._watch_task = asyncio.create_task(self._watch(), name="etcd-election-watch")

    async def stop(self) -> None:
        """Stop campaigning; a leader steps down and revokes its lease, so its key goes now and
        another controller can lead at once instead of after the TTL."""
        lease, was_leading = self._state.lease, self._state.leading
        await cancel_and_wait(self._loop_task)
        await cancel_and_wait(self._watch_task)
        for task in list(self._tasks):
            await cancel_and_wait(task)
        self._loop_task = self._watch_task = None
        self._state = election.State()
        if was_leading:
            self._announce(LeaderChange(False, 0))
        if lease:
            await self._revoke(lease)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        event: election.Event = election.Tick()
        while True:
            self._state, decision = election.step(self._state, event, loop.time(), self.policy)
            if decision.changed:
                self._announce(LeaderChange(decision.leading, decision.term))
            if decision.revoke:
                self._spawn(self._revoke(decision.revoke))
            if decision.do is not None:
                self._spawn(self._carry_out(decision.do, self._state.lease))
            try:
                async with asyncio.timeout_at(decision.wake_at):
                    event = await self._events.get()
            except TimeoutError:
                event = election.Tick()

    def _spawn(self, work) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _carry_out(self, action: Action, lease: int) -> None:
        try:
            outcome = await self._call(action, lease)
        except StorageError as exc:
            log.warning("election: %s failed: %s", action.value, exc)
            outcome = election.Failed(action)
        except Exception:
            log.exception("election: %s failed", action.value)
            outcome = election.Failed(action)
        await self._events.put(outcome)

    async def _call(self, action: Action, lease: int) -> election.Event:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        if action is Action.GRANT:
            granted, ttl = await self.client.grant(self.policy.ttl, timeout=self._call_timeout)
            return election.Granted(granted, float(ttl), sent)
        if action is Action.RENEW:
            ttl = await self.client.keepalive(lease, timeout=self._call_timeout)
            return election.Renewed(lease, float(ttl), sent)
        return await self._campaign(lease)

    async def _campaign(self, lease: int) -> election.Event:
        """Create the key bound to ``lease`` if it does not exist; else read who holds it."""
        result = await self.client.txn([wire.created_at(self.key, 0)],
                                       [wire.put_op(self.key, self.identity, lease)],
                                       [wire.range_op(self.key)], timeout=self._call_timeout)
        if result.succeeded:
            self.holder = self.identity
            return election.Won(lease, result.revision)
        found = result.responses[0].kvs if result.responses else ()
        if not found:
            return election.Lost(lease, 0)
        self.holder = found[0].value
        if found[0].lease == lease:
            return election.Won(lease, found[0].create_revision)
        return election.Lost(lease, found[0].create_revision)

    async def _revoke(self, lease: int) -> None:
        with contextlib.suppress(StorageError):
            await self.client.revoke(lease, timeout=self._call_timeout)

    def _announce(self, change: LeaderChange) -> None:
        log.info("election: %s", f"leading with term {change.term}" if change.leading else "not leading")
        for callback in self._callbacks:
            try:
                callback(change)
            except Exception:
                log.exception("election: a leadership callback failed")
        for queue in self._readers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(change)

    # ------------------------------------------------------------------ the watch

    async def _watch(self) -> None:
        start = 0
        while True:
            try:
                async with contextlib.aclosing(self.client.watch(self.key, start_revision=start)) as stream:
                    async for batch in stream:
                        for change in batch.events:
                            self._saw(change)
                        start = max(start, batch.revision + 1)
            except StorageError as exc:
                log.debug("election: watch on the election key: %s", exc)
                if exc.reason == "compacted":
                    start = 0
            except Exception:
                log.exception("election: watch on the election key failed")
            await asyncio.sleep(self.policy.retry)  # pace reconnects to an unavailable etcd

    def _saw(self, change: wire.WatchEvent) -> None:
        if change.kind == "DELETE":
            self.holder = None
            event: election.Event = election.KeyDeleted(change.kv.mod_revision)
        else:
            self.holder = change.kv.value
            event = election.KeyPut(change.kv.create_revision)
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            log.debug("election: watch event dropped (the loop is behind; recheck covers it)")
