"""The desired state as loaded at start, and the writes observations ask for.

``Loaded`` is everything ``Cluster`` starts from, read from the store in one place before it is
built (``load``): the store may answer over the network, and a constructor cannot await.

``Observed`` holds what agents' messages tell the controller to remember (an ordinal failed on
a node; a node's labels or agent changed). Those messages are handled synchronously, as they
arrive, but the store is awaited: so they are queued here and the next reconcile pass writes
them first (``Cluster._store_observed``), each in its own transaction, before it changes memory
and before it decides anything with them. A write the store refuses is dropped: the store
logged why, and the next report of the same failure (or the node's next hello) asks again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Container

from gaffer.common.errors import StorageError
from gaffer.common.model import Slot
from gaffer.controller.node_rows import StoredNode
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.statestore import StateStore
from gaffer.controller.template_rows import StoredTemplate


@dataclass(frozen=True)
class Loaded:
    """The durable state a controller starts from."""

    templates: dict[str, StoredTemplate]
    restarts: dict[str, int]
    placement: dict[Slot, str]
    failed: dict[Slot, frozenset[str]]
    nodes: list[StoredNode]


async def load(store: StateStore) -> Loaded:
    """Read what ``Cluster`` starts from."""
    return Loaded(
        templates={t.template.name: t for t in await store.templates()},
        restarts=await store.restarts(),
        placement=await store.placement(),
        failed=dict(await store.failed()),
        nodes=await store.nodes(),
    )


def adopt_nodes(nodes: NodeTable, stored: list[StoredNode]) -> dict[str, NodeRecord]:
    """Put the stored nodes in the table (with their cordon and drain flags) so they count as
    known before their agents say hello; each one's stored (labels, agent)."""
    known = {}
    for record in stored:
        known[record.name] = (dict(record.labels), record.agent_id)
        node = nodes.nodes.get(record.name)
        if node is None:
            node = nodes.nodes[record.name] = Node(name=record.name)
            node.labels = dict(record.labels)
            node.agent_id = record.agent_id
        node.cordoned = record.cordoned
        node.draining = record.draining
    return known


NodeRecord = tuple[dict[str, str], str]
"""A node's labels and agent id, as stored."""


@dataclass
class Observed:
    """Failures and node records seen, not yet stored; and the node records stored."""

    stored_nodes: dict[str, NodeRecord] = field(default_factory=dict)
    failures: dict[Slot, set[str]] = field(default_factory=dict)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)

    def note_node(self, name: str, record: NodeRecord) -> bool:
        """Queue ``record`` unless it is what the store holds; True when queued."""
        if self.stored_nodes.get(name) == record:
            return False
        self.nodes[name] = record
        return True

    def forget_node(self, name: str) -> None:
        self.stored_nodes.pop(name, None)
        self.nodes.pop(name, None)

    def has_failure(self, slot: Slot, node: str) -> bool:
        return node in self.failures.get(slot, ())

    def add_failure(self, slot: Slot, node: str) -> None:
        self.failures.setdefault(slot, set()).add(node)

    def forget_template(self, name: str) -> None:
        """A template's failures are forgotten (restart, new spec, resume, delete): the ones
        seen before must not be stored after."""
        self.failures = {slot: nodes for slot, nodes in self.failures.items() if slot[0] != name}

    async def write(
        self, store: StateStore, templates: Container[str], nodes: Container[str],
    ) -> list[tuple[Slot, str]]:
        """Store everything queued (failures of templates still in ``templates``, records of
        nodes still in ``nodes``), each in its own transaction, and empty the queue; the
        failures stored. One the store refuses is dropped: it logged why, and the next report
        of the failure (or the node's next hello) asks again."""
        failures, records = self.failures, self.nodes
        self.failures, self.nodes = {}, {}
        stored_failures = []
        for slot, seen in failures.items():
            for node in sorted(seen):
                if slot[0] in templates and await _stored(store.mark_failed(slot[0], slot[1], node)):
                    stored_failures.append((slot, node))
        for name, known in records.items():
            if name in nodes and await _stored(store.put_node(name, known[0], known[1])):
                self.stored_nodes[name] = known
        return stored_failures


async def _stored(write: Awaitable[object]) -> bool:
    """Whether ``write`` applied (False: the store refused it and logged why)."""
    try:
        await write
    except StorageError:
        return False
    return True
