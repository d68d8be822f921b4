"""The reconcile's inputs, made from the controller's live state as frozen values.

``reconcile`` reads templates as ``Desired`` and nodes as ``NodeView``. Making a ``Desired``
checks the template and encodes its spec, which for 100,000 templates on every pass would
stall the loop, so ``DesiredCache`` keeps each one until its template, restart generation or
count changes, and makes the new ones in steps.
"""

from __future__ import annotations

from typing import Callable, Mapping, MutableMapping

from gaffer.controller.liveness import NodeState
from gaffer.controller.orders import Version
from gaffer.controller.reconcile import Desired, NodeView
from gaffer.controller.registry import Node
from gaffer.controller.scheduler import Demand, NodeInfo
from gaffer.controller.steps import Steps
from gaffer.controller.store import StoredTemplate

DESIRED_SLICE = 256
"""Templates whose Desired is made anew between two pauses (a large apply makes thousands)."""


class DesiredCache:
    def __init__(self) -> None:
        self._known: dict[str, tuple[StoredTemplate, int, int, Desired]] = {}

    def steps(
        self,
        templates: Mapping[str, StoredTemplate],
        restarts: Mapping[str, int],
        placing: Callable[[str], int],
    ) -> Steps[dict[str, Desired]]:
        """Every template as a Desired (``placing(name)``: how many to place of an active
        one), made anew only for those that changed since the last call."""
        desired: dict[str, Desired] = {}
        cache = self._known
        made = 0
        for name, stored in list(templates.items()):
            restart = restarts.get(name, 0)
            count = 0 if stored.paused else placing(name)
            known = cache.get(name)
            if (known is not None and known[0] is stored and known[1] == restart and known[2] == count
                    and known[3].paused == stored.paused):
                desired[name] = known[3]
                continue
            template = stored.template
            version = known[3].version if known is not None else None
            if version is None or known[0].template is not template or version.restart != restart:
                version = Version.of(template, restart)
            placement = template.placement
            entry = Desired(
                name=name,
                demand=Demand(
                    name=name, count=count, max_per_node=placement.max_per_node,
                    nodes=placement.nodes, labels=dict(placement.labels),
                ),
                version=version,
                max_unavailable=template.update.max_unavailable,
                progress_deadline=template.update.progress_deadline,
                paused=stored.paused,
                checked=template.health is not None or template.notify,
            )
            cache[name] = (stored, restart, count, entry)
            desired[name] = entry
            made += 1
            if made % DESIRED_SLICE == 0:
                yield
        if len(cache) > len(desired):
            for name in [n for n in cache if n not in desired]:
                del cache[name]
        return desired


def node_views(
    nodes: Mapping[str, Node], down_since: MutableMapping[str, float], now: float
) -> dict[str, NodeView]:
    """Each node as the reconcile sees it; a node found down is recorded in ``down_since``
    from ``now`` if it was not yet."""
    views = {}
    for node in nodes.values():
        since = None
        if node.state is NodeState.DOWN:
            since = down_since.setdefault(node.name, now)
        views[node.name] = NodeView(
            info=NodeInfo(
                name=node.name, state=node.state.value, labels=node.labels,
                cordoned=node.cordoned, draining=node.draining,
            ),
            down_since=since,
            connected=node.state is not NodeState.DOWN and node.peer is not None,
            acked=node.generation_acked,
            rows=node.instances,
        )
    return views
