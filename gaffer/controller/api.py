"""The operations clients can ask of the controller (``request.op``), one method each.

Arguments arrive as plain data from the wire and are checked here (``common/arguments.py``:
type, length, pattern, range; never NaN), with errors that name the argument, before anything
acts on them. Operations on the desired state go through ``Cluster``; operations on processes
(kill, stdin, output, stats, one-off runs) are forwarded to the agent that runs them. Node
operations name a node the controller knows (``NodeNotFound`` otherwise).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Awaitable, Callable, Iterable, Mapping, Protocol, Sequence

import msgpack

from gaffer.common import arguments as arg
from gaffer.common.errors import (
    GafferError,
    InstanceNotFound,
    InvalidArgument,
    InvalidRequest,
    Problem,
    TemplateError,
    TemplateNotFound,
)
from gaffer.common.model import Slot, parse_instance_id
from gaffer.common.protocol import oversized_templates
from gaffer.common.signals import parse_signal
from gaffer.common.template import Template, parse_templates
from gaffer.controller.changes import Changes
from gaffer.controller.drainops import DrainOps
from gaffer.controller.instance_rows import fill_rows, instance_key, instance_rows
from gaffer.controller.liveness import NodeState
from gaffer.controller.logs import LogOps
from gaffer.controller.oneoffs import OneOffs
from gaffer.controller.paging import page, page_args, page_names
from gaffer.controller.registry import Node
from gaffer.controller.runops import RunOps
from gaffer.controller.row_bytes import PsAnswer, RowBytes, fast_token
from gaffer.controller.row_cache import RowCache
from gaffer.controller.staging import Stages
from gaffer.controller.statcache import StatCache
from gaffer.controller.store import StoredTemplate

Listing = list[dict[str, Any]] | dict[str, Any]
"""A listing: the whole list, or with ``limit`` one page (see ``paging``)."""
STATS_TIMEOUT = 2.0
Op = Callable[[dict[str, Any]], Awaitable[Any]]


class DesiredState(Protocol):
    """The desired state as the API reads and changes it (``Cluster``)."""

    templates: Mapping[str, StoredTemplate]
    placement: Mapping[Slot, str]
    failed: Mapping[Slot, frozenset[str]]

    async def apply_sliced(self, templates: list[Template]) -> list[dict[str, Any]]: ...
    def template_views(self, names: list[str]) -> list[dict[str, Any]]: ...
    def template_view(self, name: str) -> dict[str, Any]: ...
    def delete(self, name: str) -> None: ...
    def scale(self, name: str, how: str | int) -> int: ...
    def set_paused(self, name: str, paused: bool) -> None: ...
    def restart(self, name: str) -> int: ...
    def cordon(self, name: str, cordoned: bool) -> None: ...
    def drain(self, name: str, draining: bool = True) -> None: ...
    def forget_node(self, name: str) -> int: ...
    def placement_on(self, node: str) -> int: ...
    def by_node(self, node: str) -> Mapping[str, Sequence[int]]: ...
    def pending(self) -> dict[str, dict[str, Any]]: ...
    def wanted(self, name: str) -> int: ...


class Agents(Protocol):
    """The nodes, and asking their agents to act now (``Links``)."""

    def node(self, name: str) -> Node | None: ...
    def all(self) -> Iterable[Node]: ...
    async def command(self, node: Node, op: str, args: dict[str, Any], timeout: float = ...) -> Any: ...


class ControllerInfo(Protocol):
    """The controller itself: its id, its clock (loop time), its status, and whether a remote
    subscriber holds a topic prefix (``EventHub``)."""

    id: str

    def now(self) -> float: ...
    def status(self) -> dict[str, Any]: ...
    def subscribed(self, prefix: str) -> bool: ...


class Api:
    """Every client operation; each takes the request's ``args`` map (see ``requests``)."""

    def __init__(
        self,
        cluster: DesiredState,
        agents: Agents,
        oneoffs: OneOffs,
        stages: Stages,
        changes: Changes,
        controller: ControllerInfo,
        stat_cache: StatCache | None = None,
    ) -> None:
        """``stat_cache``: the stats the agents push, which ``ps`` answers from."""
        self.cluster = cluster
        self.stat_cache = stat_cache if stat_cache is not None else StatCache()
        self.agents = agents
        self.row_cache = RowCache(cluster, agents, self.stat_cache)
        self.row_bytes = RowBytes(self.row_cache, cluster)
        self.oneoffs = oneoffs
        self.runs = RunOps(cluster.templates, agents, oneoffs, changes, controller)
        self.drains = DrainOps(cluster, agents, changes, controller)
        self.logs = LogOps(cluster.templates, agents, self._nodes_running, self._node_for).logs
        self.stages = stages
        self.changes = changes
        self.controller = controller

    def ops(self) -> dict[str, Op]:
        return {
            "ping": self.ping, "status": self.status, "nodes": self.nodes,
            "apply": self.apply, "templates": self.templates, "get": self.get,
            "delete": self.delete, "scale": self.scale, "start": self.start, "stop": self.stop,
            "restart": self.restart, "ps": self.ps_answer, "stats": self.stats, "kill": self.kill,
            "run": self.runs.run, "cordon": self.cordon, "uncordon": self.uncordon,
            "drain": self.drains.drain, "forget": self.forget, "logs": self.logs, "write": self.write,
            "wait": self.runs.wait, "release": self.runs.release, "stage_apply": self.stage_apply,
        }

    # ----------------------------------------------------------------- cluster

    async def ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"controller": self.controller.id, "ts": time.time()}

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.controller.status()

    async def nodes(self, args: dict[str, Any]) -> Listing:
        limit, after = page_args(args)
        if limit is None:
            return self.node_rows()
        shown, token = page_names(sorted(node.name for node in self.agents.all()), limit, after)
        return {"items": self.node_rows(shown), "continue": token}

    async def cordon(self, args: dict[str, Any]) -> dict[str, Any]:
        name = arg.node(args)
        await self.cluster.cordon(name, True)
        return {"node": name, "cordoned": True}

    async def uncordon(self, args: dict[str, Any]) -> dict[str, Any]:
        name = arg.node(args)
        await self.cluster.cordon(name, False)
        return {"node": name, "cordoned": False}

    async def forget(self, args: dict[str, Any]) -> dict[str, Any]:
        """Remove a node that is down for good; its placements move to other nodes."""
        name = arg.node(args)
        moved = await self.cluster.forget_node(name)
        self.stat_cache.forget_node(name)
        return {"node": name, "forgotten": True, "moving": moved}

    # ----------------------------------------------------------------- templates

    async def apply(self, args: dict[str, Any]) -> list[dict[str, Any]] | dict[str, Any]:
        """Apply ``templates``, plus everything staged under ``stage`` (see ``staging``), in
        one transaction."""
        stage = args.get("stage")
        templates = self._part(args, allow_empty=stage is not None)
        if stage is not None:
            staged = self.stages.take(stage, self.controller.now())
            names = {t.name for t in staged}
            twice = [t.name for t in templates if t.name in names]
            if twice:
                raise TemplateError([Problem(n, "", "defined more than once in one apply") for n in twice[:100]])
            templates = staged + templates
        return summarize_apply(await self.cluster.apply_sliced(templates))

    async def stage_apply(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate one part of an apply too big for one message and keep it for ``apply``."""
        templates = self._part(args, allow_empty=False)
        size = len(msgpack.packb(args["templates"], use_bin_type=True))
        staged = self.stages.add(args.get("stage"), templates, size, self.controller.now())
        return {"stage": args["stage"], "staged": staged}

    def _part(self, args: dict[str, Any], allow_empty: bool) -> list[Template]:
        items = args.get("templates", [])
        if not isinstance(items, list) or (not items and not allow_empty):
            raise InvalidRequest("argument 'templates' must be a non-empty list of templates")
        source = args.get("source")
        if source is not None and not isinstance(source, str):
            raise InvalidArgument("source", "must be a string")
        problems = oversized_templates(items)
        if problems:
            raise TemplateError(problems, source=source)
        templates = parse_templates(((None, item) for item in items), source=source)
        for template in templates:
            template.spec_json()  # made now, part by part, not all at once in the commit
        return templates

    async def templates(self, args: dict[str, Any]) -> Listing:
        limit, after = page_args(args)
        names = sorted(self.cluster.templates)
        if limit is None:
            return self.cluster.template_views(names)
        shown, token = page_names(names, limit, after)
        return {"items": self.cluster.template_views(shown), "continue": token}

    async def get(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.cluster.template_view(arg.name(args))

    async def delete(self, args: dict[str, Any]) -> dict[str, Any]:
        name = arg.name(args)
        await self.cluster.delete(name)
        return {"name": name, "deleted": True}

    async def scale(self, args: dict[str, Any]) -> dict[str, Any]:
        name = arg.name(args)
        count = arg.count(args)
        previous = self.cluster.templates[name].template.numprocesses if name in self.cluster.templates else None
        new = await self.cluster.scale(name, count)
        return {"name": name, "numprocesses": new, "previous": previous}

    async def start(self, args: dict[str, Any]) -> dict[str, Any]:
        name = arg.name(args)
        await self.cluster.set_paused(name, False)
        return {"name": name, "paused": False}

    async def stop(self, args: dict[str, Any]) -> dict[str, Any]:
        name = arg.name(args)
        await self.cluster.set_paused(name, True)
        return {"name": name, "paused": True}

    async def restart(self, args: dict[str, Any]) -> dict[str, Any]:
        name = arg.name(args)
        await self.cluster.restart(name)
        return {"name": name, "restarting": True}

    # ----------------------------------------------------------------- instances

    async def ps(self, args: dict[str, Any]) -> Listing:
        """Every instance with cpu and memory from the agents' last push and its ``age``; with
        ``fresh``, cpu and memory asked of the agents now (waiting for them)."""
        name, fresh, limit, after = self._ps_args(args)
        if fresh:
            rows = self.instance_rows(name)
        else:  # from memory: the kept rows with their last pushed samples (row_cache.py)
            rows = self.row_cache.rows(name, time.time(), self.controller.now())
        result = page(rows, instance_key, limit, after) if limit is not None else None
        shown = result["items"] if result is not None else rows
        if fresh:
            stats = await self._gather_stats(name, {row["node"] for row in shown if row["pid"]})
            fill_rows(shown, self.cluster.templates, stats, time.time())
        return result if result is not None else rows

    async def ps_answer(self, args: dict[str, Any]) -> Listing | PsAnswer:
        """``ps`` as the servers send it (the op): from memory, an answer written from rows
        kept encoded (``row_bytes.py``), the same bytes as ``ps``'s rows; ``ps`` itself with
        ``fresh`` or a token of another shape."""
        name, fresh, limit, after = self._ps_args(args)
        if fresh or (after is not None and not fast_token(after)):
            return await self.ps(args)
        return self.row_bytes.answer(name, limit, after, time.time(), self.controller.now())

    def _ps_args(self, args: dict[str, Any]) -> tuple[str | None, bool, int | None, list[Any] | None]:
        """``ps``'s arguments, checked: name (a known template), fresh, limit, the token's key."""
        name = arg.name(args, default=None)
        fresh = arg.boolean(args, "fresh", False)
        limit, after = page_args(args)
        if name is not None and name not in self.cluster.templates:
            raise TemplateNotFound(name)
        return name, fresh, limit, after

    def node_rows(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        """The rows ``nodes`` lists: of ``names`` (those known), or of every node, by name."""
        now = self.controller.now()
        known = {node.name: node for node in self.agents.all()}
        return [known[name].view(now) for name in (sorted(known) if names is None else names) if name in known]

    def instance_rows(self, name: str | None) -> list[dict[str, Any]]:
        """The rows ``ps`` lists (of template ``name``, or all), in ``instance_key`` order
        (``instance_rows.py``)."""
        return instance_rows(self.cluster, self.agents, name)

    async def _gather_stats(self, name: str | None, node_names: set[str]) -> dict[str, dict[str, Any]]:
        async def one(node_name: str) -> dict[str, Any]:
            node = self.agents.node(node_name)
            if node is None or node.state is not NodeState.UP:
                return {}
            try:
                args = {"template": name} if name is not None else {}
                return await self.agents.command(node, "stats", args, timeout=STATS_TIMEOUT)
            except GafferError:
                return {}

        results = await asyncio.gather(*(one(n) for n in sorted(node_names)))
        samples: dict[str, dict[str, Any]] = {}
        for per_template in results:
            for summary in per_template.values():
                for item in summary.get("instances", []):
                    samples[item["id"]] = item
        return samples

    async def stats(self, args: dict[str, Any]) -> dict[str, Any]:
        name = arg.name(args, default=None)
        if name is not None and name not in self.cluster.templates:
            raise TemplateNotFound(name)
        nodes = {n for (t, _), n in self.cluster.placement.items() if name is None or t == name}
        samples = await self._gather_stats(name, nodes)
        out: dict[str, Any] = {}
        for ident, item in samples.items():
            parsed = parse_instance_id(ident)
            if parsed is None:
                continue
            template = parsed.template
            summary = out.setdefault(template, {"cpu": 0.0, "mem": 0, "instances": []})
            total_cpu = item["cpu"] + sum(c["cpu"] for c in item.get("children", []))
            summary["cpu"] = round(summary["cpu"] + total_cpu, 1)
            summary["mem"] += item["mem"] + sum(c["mem"] for c in item.get("children", []))
            summary["instances"].append(item)
        return out

    def _nodes_running(self, target: str) -> list[Node]:
        """Connected nodes that run instance ``target`` or any instance of template ``target``."""
        found = []
        for node in self.agents.all():
            if node.state is NodeState.DOWN or node.peer is None:
                continue
            if target in node.instances or any(row["template"] == target for row in node.instances.values()):
                found.append(node)
        return found

    async def kill(self, args: dict[str, Any]) -> dict[str, Any]:
        target = arg.target(args)
        sig = arg.signal(args)
        parse_signal(sig)
        group = arg.boolean(args, "group", False)
        nodes = self._nodes_running(target)
        if not nodes:
            if target in self.cluster.templates:
                return {"pids": {}}
            raise InstanceNotFound(target)
        pids: dict[str, list[int]] = {}
        for node in nodes:
            pids[node.name] = await self.agents.command(
                node, "kill", {"target": target, "signal": sig, "group": group}
            )
        return {"pids": pids}

    async def write(self, args: dict[str, Any]) -> dict[str, Any]:
        ident = arg.instance_id(args)
        data = arg.data(args)
        eof = arg.boolean(args, "eof", False)
        only = arg.node(args, default=None)
        node = self._node_of_instance(ident) if only is None else self._connected_node(only)
        command: dict[str, Any] = {"id": ident, "data": data}
        if eof:
            command["eof"] = True
        written = await self.agents.command(node, "write", command)
        return {"id": ident, "node": node.name, "bytes": written}

    def _node_for(self, ident: str, only: str | None) -> Node:
        return self._node_of_instance(ident) if only is None else self._connected_node(only)

    def _connected_node(self, name: str) -> Node:
        node = self.agents.node(name)
        if node is None or node.state is NodeState.DOWN or node.peer is None:
            raise InvalidRequest(f"node {name} is not connected")
        return node

    def _node_of_instance(self, ident: str) -> Node:
        parsed = parse_instance_id(ident)
        if parsed is None:
            raise InstanceNotFound(ident)
        placed = self.cluster.placement.get(parsed.slot) if parsed.slot is not None else None
        candidates = [n for n in self._nodes_running(ident)]
        if placed is not None:
            candidates.sort(key=lambda n: n.name != placed)
        if not candidates:
            raise InstanceNotFound(ident)
        return candidates[0]


MAX_APPLY_RESULTS = 10_000


def summarize_apply(results: list[dict[str, Any]]) -> list[dict[str, Any]] | dict[str, Any]:
    """The answer to an apply: one result per template, or for a very large apply (whose
    full list could exceed a message) the counts per change and the first changed ones."""
    if len(results) <= MAX_APPLY_RESULTS:
        return results
    counts = collections.Counter(r["change"] for r in results)
    changed = [r for r in results if r["change"] != "unchanged"]
    return {
        "counts": dict(counts),
        "results": changed[:MAX_APPLY_RESULTS],
        "more": max(0, len(changed) - MAX_APPLY_RESULTS),
    }
