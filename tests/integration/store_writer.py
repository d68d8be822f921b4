"""Child process for the Store's crash tests, and the model those tests compare against.

    python store_writer.py run DATA_DIR SEED START TOTAL
        applies operations(SEED, TOTAL)[START:] to the Store in DATA_DIR, printing "ack <n>"
        (n = how many operations of the sequence are now applied) after each method returns.
    python store_writer.py hold DATA_DIR
        opens the Store, prints "locked", and keeps it open until stdin closes.

The sequence for a seed is deterministic, so the test replays it on ``Model`` to know the exact
state every prefix of acknowledged operations must leave behind.
"""

from __future__ import annotations

import random
import sys
from typing import Any

from gaffer.common.template import Template, parse_template
from gaffer.controller.store import Store

TEMPLATES = ("web", "worker", "cron", "db", "cache")
BULK = tuple(f"bulk-{i}" for i in range(60))
NODES = ("n1", "n2", "n3", "n4")
Op = tuple[Any, ...]


def make_template(name: str, variant: int, count: int) -> Template:
    return parse_template({"cmd": "sleep", "args": [str(variant)], "numprocesses": count}, name=name)


class Model:
    """What the Store must hold after a prefix of operations, in ``snapshot`` form."""

    def __init__(self) -> None:
        self.templates: dict[str, tuple[dict, int, bool]] = {}
        self.nodes: dict[str, tuple[dict, str, bool, bool, bool]] = {}
        self.placement: dict[tuple[str, int], str] = {}
        self.failed: dict[tuple[str, int], frozenset[str]] = {}
        self.generations: dict[str, int] = {}

    def snapshot(self) -> dict[str, Any]:
        return {
            "templates": dict(self.templates),
            "nodes": dict(self.nodes),
            "placement": dict(self.placement),
            "failed": dict(self.failed),
            "generations": dict(self.generations),
        }

    def apply(self, op: Op) -> None:
        kind, *args = op
        getattr(self, "_" + kind)(*args)

    def _put_template(self, name: str, variant: int, count: int) -> None:
        spec = make_template(name, variant, count).to_dict()
        if name not in self.templates:
            self.templates[name] = (spec, 1, False)
            return
        old, version, paused = self.templates[name]
        if old != spec:
            self.templates[name] = (spec, version + 1, paused)
            if parse_template(old, name=name).spec_hash() != parse_template(spec, name=name).spec_hash():
                self._clear_failed(name, None)

    def _put_templates(self, batch: tuple[tuple[str, int, int], ...]) -> None:
        for name, variant, count in batch:
            self._put_template(name, variant, count)

    def _set_count(self, name: str, count: int) -> None:
        old, version, paused = self.templates[name]
        if old["numprocesses"] != count:
            self.templates[name] = ({**old, "numprocesses": count}, version + 1, paused)

    def _set_paused(self, name: str, paused: bool) -> None:
        spec, version, _ = self.templates[name]
        self.templates[name] = (spec, version, paused)

    def _delete_template(self, name: str) -> None:
        del self.templates[name]
        self.placement = {slot: node for slot, node in self.placement.items() if slot[0] != name}
        self.failed = {slot: nodes for slot, nodes in self.failed.items() if slot[0] != name}

    def _save_placement(self, changes: tuple[tuple[str, int, str | None], ...]) -> None:
        for name, ordinal, node in changes:
            if node is None:
                self.placement.pop((name, ordinal), None)
            else:
                self.placement[(name, ordinal)] = node

    def _mark_failed(self, name: str, ordinal: int, node: str) -> None:
        self.failed[(name, ordinal)] = self.failed.get((name, ordinal), frozenset()) | {node}

    def _clear_failed(self, name: str, ordinal: int | None) -> None:
        self.failed = {
            slot: nodes for slot, nodes in self.failed.items()
            if not (slot[0] == name and ordinal in (None, slot[1]))
        }

    def _put_node(self, name: str, zone: str, agent_id: str) -> None:
        _, _, cordoned, draining, _ = self.nodes.get(name, ({}, "", False, False, False))
        self.nodes[name] = ({"zone": zone}, agent_id, cordoned, draining, True)

    def _set_cordoned(self, name: str, value: bool) -> None:
        labels, agent_id, cordoned, draining, registered = self.nodes.get(name, ({}, "", False, False, False))
        if value != cordoned:
            self.nodes[name] = (labels, agent_id, value, draining, registered)

    def _set_draining(self, name: str, value: bool) -> None:
        labels, agent_id, cordoned, draining, registered = self.nodes.get(name, ({}, "", False, False, False))
        if value != draining:
            self.nodes[name] = (labels, agent_id, cordoned, value, registered)

    def _next_generation(self, name: str) -> None:
        self.generations[name] = self.generations.get(name, 0) + 1


def snapshot(store: Store) -> dict[str, Any]:
    """The Store's content in the Model's form (timestamps left out)."""
    return {
        "templates": {s.name: (s.template.to_dict(), s.version, s.paused) for s in store.templates()},
        "nodes": {
            n.name: (dict(n.labels), n.agent_id, n.cordoned, n.draining, n.first_seen is not None)
            for n in store.nodes()
        },
        "placement": store.placement(),
        "failed": store.failed(),
        "generations": store.generations(),
    }


def operations(seed: int, total: int) -> list[Op]:
    """``total`` valid operations (each one Store call), chosen by ``seed``."""
    rng = random.Random(seed)
    model = Model()
    ops: list[Op] = []
    while len(ops) < total:
        op = _pick(rng, model)
        if op is not None:
            model.apply(op)
            ops.append(op)
    return ops


def _pick(rng: random.Random, model: Model) -> Op | None:
    existing = sorted(model.templates)
    roll = rng.random()
    if roll < 0.25 or not existing:
        return ("put_template", rng.choice(TEMPLATES), rng.randrange(3), rng.randrange(7))
    name = rng.choice(existing)
    if roll < 0.35:
        return ("set_count", name, rng.randrange(7))
    if roll < 0.40:
        return ("set_paused", name, rng.random() < 0.5)
    if roll < 0.45:
        return ("delete_template", name)
    if roll < 0.65:
        changes = {
            (rng.choice(existing), rng.randint(1, 8)): rng.choice(NODES + (None,))
            for _ in range(rng.randint(1, 30))
        }
        return ("save_placement", tuple((n, o, node) for (n, o), node in changes.items()))
    if roll < 0.72:
        return ("mark_failed", name, rng.randint(1, 8), rng.choice(NODES))
    if roll < 0.75:
        return ("clear_failed", name, rng.choice((None, 1, 2, 3)))
    if roll < 0.82:
        return ("put_node", rng.choice(NODES), rng.choice("abc"), f"agent-{rng.randrange(3)}")
    if roll < 0.88:
        return (rng.choice(("set_cordoned", "set_draining")), rng.choice(NODES + ("n9",)), rng.random() < 0.5)
    if roll < 0.94:
        names = rng.sample(TEMPLATES + BULK, rng.randint(2, 40))
        return ("put_templates", tuple((name, rng.randrange(3), rng.randrange(7)) for name in names))
    return ("next_generation", rng.choice(NODES))


def apply(store: Store, op: Op) -> None:
    """Make the one Store call that ``op`` stands for."""
    kind, *args = op
    if kind == "put_template":
        store.put_template(make_template(*args))
    elif kind == "put_templates":
        store.put_templates([make_template(*item) for item in args[0]])
    elif kind == "save_placement":
        store.save_placement({(name, ordinal): node for name, ordinal, node in args[0]})
    elif kind == "put_node":
        name, zone, agent_id = args
        store.put_node(name, {"zone": zone}, agent_id)
    else:
        getattr(store, kind)(*args)


def main(argv: list[str]) -> None:
    if argv[0] == "hold":
        with Store(argv[1]):
            print("locked", flush=True)
            sys.stdin.read()
        return
    _, data_dir, seed, start, total = argv
    ops = operations(int(seed), int(total))
    with Store(data_dir) as store:
        for n in range(int(start), len(ops)):
            apply(store, ops[n])
            print(f"ack {n + 1}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
