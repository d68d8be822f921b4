"""The client operations on one-off runs: ``run``, ``wait`` and ``release``.

An *attended* run (``gafferctl run``) belongs to the client that started it, as a terminal
command belongs to its terminal:

- **Output from the first line.** Output reaches a subscriber only once the XPUB holds its
  subscription and the run's agent has been told to forward it (``watch``). The client
  subscribes to what it needs and, last, to a ``sync`` marker of its own (``~...``: no event
  has such a topic). ZeroMQ passes one subscriber's subscriptions in order, so once the hub
  has seen the marker, it holds the others too; the ``watch`` that followed them went to the
  agent before the ``run`` command does, on the same socket. ``run`` waits for the marker (at
  most SYNC_WAIT seconds).
- **A lease.** ``run`` with ``lease`` gives the run a lease at its agent; every ``wait`` on it
  renews the lease for the wait's ``seconds`` plus ``lease``, and ``release`` ends it (and
  stops the run, with ``signal`` when given). A client that vanishes renews nothing: its run
  is stopped when the lease lapses (``gaffer.agent.attended``).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

from gaffer.common import arguments as arg
from gaffer.common.errors import GafferError, InvalidArgument, InvalidRequest, TemplateNotFound
from gaffer.common.signals import parse_signal
from gaffer.common.template import Template
from gaffer.controller.changes import Changes
from gaffer.controller.liveness import NodeState
from gaffer.controller.oneoffs import OneOffs
from gaffer.controller.registry import Node

log = logging.getLogger("gaffer.controller.runops")

SYNC_WAIT = 5.0
"""Seconds ``run`` waits for the client's ``sync`` subscription to reach the hub."""
RENEW_TIMEOUT = 2.0
MAX_RUN_LEASE = 3_600.0
SYNC_RE = re.compile(r"^~[A-Za-z0-9._-]{1,127}\Z")


class RunAgents(Protocol):
    def node(self, name: str) -> Node | None: ...
    def all(self) -> Any: ...
    async def command(self, node: Node, op: str, args: dict[str, Any], timeout: float = ...) -> Any: ...


class RunInfo(Protocol):
    def now(self) -> float: ...
    def subscribed(self, prefix: str) -> bool: ...


class RunOps:
    """``run``, ``wait`` and ``release``; ``templates`` maps names to stored templates."""

    def __init__(self, templates: Any, agents: RunAgents, oneoffs: OneOffs, changes: Changes, info: RunInfo) -> None:
        self._templates = templates
        self._agents = agents
        self._oneoffs = oneoffs
        self._changes = changes
        self._info = info

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        """A one-off process of template ``name`` on the least busy eligible node."""
        name = arg.name(args)
        run_args = arg.strings(args, "args")
        env = arg.env(args)
        lease = arg.seconds(args, "lease", arg.MISSING, MAX_RUN_LEASE) if args.get("lease") is not None else None
        if lease is not None and lease <= 0:
            raise InvalidArgument("lease", "must be more than 0 seconds")
        sync = args.get("sync")
        if sync is not None and not (isinstance(sync, str) and SYNC_RE.match(sync)):
            raise InvalidArgument("sync", "must be a subscription marker: '~' then 1..127 letters, digits, '.', '_', '-'")
        stored = self._templates.get(name)
        if stored is None:
            raise TemplateNotFound(name)
        if sync is not None:
            await self._synced(sync)
        node = self.node_for_run(stored.template)
        spec = stored.template.with_count(0).to_dict()
        command: dict[str, Any] = {"template": spec, "args": run_args}
        if env:
            command["env"] = env
        if lease is not None:
            command["lease"] = lease
        with self._oneoffs.starting(node.name, name):
            result = await self._agents.command(node, "run", command)
            if isinstance(result, dict) and isinstance(result.get("id"), str):
                self._oneoffs.start(node.name, result["id"], lease)
        return {**result, "node": node.name, "stdin": stored.template.redirect_input}

    async def _synced(self, marker: str) -> None:
        deadline = self._info.now() + SYNC_WAIT
        while not self._info.subscribed(marker):
            left = deadline - self._info.now()
            if left <= 0 or not await self._changes.wait(left):
                raise InvalidRequest(
                    f"the client's event subscription ({marker}) did not reach the controller "
                    f"within {SYNC_WAIT:g}s: is its events endpoint reachable?"
                )

    async def wait(self, args: dict[str, Any]) -> dict[str, Any]:
        """Wait up to ``seconds`` for one-off run ``id`` on ``node`` to end; its exit status.
        Waiting on an attended run renews its lease for ``seconds`` + its lease."""
        ident = arg.instance_id(args)
        node = arg.node(args)
        seconds = arg.seconds(args, "seconds", 30.0)
        lease = self._oneoffs.lease_of(node, ident)
        if lease is not None:
            await self._lease(node, ident, seconds + lease)
        deadline = self._info.now() + seconds
        while (ended := self._oneoffs.exit_of(node, ident)) is None:
            left = deadline - self._info.now()
            if left <= 0 or not await self._changes.wait(left):
                return {"id": ident, "done": False, "exit": None}
        return {"id": ident, "done": True, "exit": {"status": ended.get("status"), "signal": ended.get("signal")}}

    async def release(self, args: dict[str, Any]) -> dict[str, Any]:
        """The client lets go of run ``id`` on ``node``: stopped if it still runs (with
        ``signal`` when given, else its stop signal; KILL after graceful_timeout), forgotten
        by its agent once ended."""
        ident = arg.instance_id(args)
        node = arg.node(args)
        sig = arg.signal(args) if args.get("signal") is not None else None
        if sig is not None:
            parse_signal(sig)
        self._oneoffs.release(node, ident)
        found = self._agents.node(node)
        if found is None or found.state is NodeState.DOWN or found.peer is None:
            raise InvalidRequest(f"node {node} is not connected (its agent stops the run when the lease lapses)")
        command: dict[str, Any] = {"id": ident, "seconds": 0}
        if sig is not None:
            command["signal"] = sig
        known = await self._agents.command(found, "lease_run", command)
        return {"id": ident, "node": node, "released": bool(known)}

    async def _lease(self, node_name: str, ident: str, seconds: float) -> None:
        """Renew at the agent; a failure is logged, never the wait's: the lease has room."""
        node = self._agents.node(node_name)
        if node is None or node.state is NodeState.DOWN or node.peer is None:
            return
        try:
            await self._agents.command(
                node, "lease_run", {"id": ident, "seconds": min(seconds, MAX_RUN_LEASE)}, timeout=RENEW_TIMEOUT
            )
        except GafferError as exc:
            log.info("renewing the lease of %s on %s failed: %s", ident, node_name, exc.message)

    def node_for_run(self, template: Template) -> Node:
        placement = template.placement
        best: tuple[int, str] | None = None
        chosen = None
        for node in self._agents.all():
            if node.state is not NodeState.UP or node.peer is None or node.cordoned or node.draining:
                continue
            if placement.nodes and node.name not in placement.nodes:
                continue
            if any(node.labels.get(k) != v for k, v in placement.labels.items()):
                continue
            key = (sum(1 for row in node.instances.values() if row["pid"]), node.name)
            if best is None or key < best:
                best, chosen = key, node
        if chosen is None:
            raise InvalidRequest(f"no node can run {template.name!r} now (up, not cordoned, matching its placement)")
        return chosen
