"""The ``logs`` operation: recent output of an instance, or of every instance of a template.

Each instance's recent lines live in its agent's ring buffer; the controller asks the agent
running it (``output`` command), tags each line with its instance and node, merges them all in
time order and keeps the last ``lines``. ``since`` (seconds) keeps only lines stamped at most
that long ago (by the agents' clocks). Every line carries ``number``, its number in its
instance's stream (see ``gaffer.agent.capture``), so a follower can join recent lines to live
ones without a gap or a repeat (``gaffer.cli.logfollow``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Protocol

from gaffer.common import arguments as arg
from gaffer.common.limits import MAX_DURATION, MAX_LINES
from gaffer.controller.registry import Node


class LogAgents(Protocol):
    def all(self) -> Any: ...
    async def command(self, node: Node, op: str, args: dict[str, Any], timeout: float = ...) -> Any: ...


class LogOps:
    """``logs`` over the agents: ``nodes_running(target)`` are the connected nodes running
    instance or template ``target``; ``node_for(ident, node)`` the node to ask for instance
    ``ident`` (``node``: the one the client named, or None)."""

    def __init__(
        self,
        templates: Mapping[str, Any],
        agents: LogAgents,
        nodes_running: Callable[[str], list[Node]],
        node_for: Callable[[str, str | None], Node],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._templates = templates
        self._agents = agents
        self._nodes_running = nodes_running
        self._node_for = node_for
        self._wall = wall

    async def logs(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        target = arg.target(args)
        lines = arg.integer(args, "lines", 100, 0, MAX_LINES)
        stream = arg.stream(args)
        since = None if args.get("since") is None else arg.seconds(args, "since", 0.0, MAX_DURATION)
        only = arg.node(args, default=None)
        if target in self._templates or any(
            row["template"] == target for n in self._agents.all() for row in n.instances.values()
        ):
            idents = sorted({
                ident for n in self._nodes_running(target) for ident, row in n.instances.items()
                if row["template"] == target
            })
        else:
            idents = [target]
        after = None if since is None else self._wall() - since
        out: list[dict[str, Any]] = []
        for ident in idents:
            node = self._node_for(ident, only)
            got = await self._agents.command(node, "output", {"id": ident, "lines": lines, "stream": stream})
            out.extend(
                {**line, "id": ident, "node": node.name} for line in got
                if after is None or line["ts"] >= after
            )
        out.sort(key=lambda line: line["ts"])
        return out[-lines:] if lines else []
