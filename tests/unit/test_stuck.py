"""why_stuck: the reason a drain gives for what cannot leave a node (issue 9, item 6)."""

from __future__ import annotations

import pytest

from gaffer.controller.scheduler import Demand, NodeInfo, schedule
from gaffer.controller.stuck import FAILED, MAX_PER_NODE, MOVING, NO_MATCH, NO_OTHER_NODE, why_stuck


def up(name: str, **labels: str) -> NodeInfo:
    return NodeInfo(name, "up", labels)


DRAINING = NodeInfo("a", "up", {"disk": "ssd"}, cordoned=True, draining=True)

CASES = [
    # (scenario, demand, other nodes, failed on, expected code, words in the message)
    ("alone", Demand("web", 1), [], (), NO_OTHER_NODE, "no other node is up"),
    ("others_cordoned", Demand("web", 1), [NodeInfo("b", "up", cordoned=True)], (), NO_OTHER_NODE, "uncordoned"),
    ("others_down", Demand("web", 1), [NodeInfo("b", "down")], (), NO_OTHER_NODE, "up"),
    ("label_selector", Demand("web", 1, labels={"disk": "ssd"}), [up("b", disk="hdd")], (), NO_MATCH, "labels disk=ssd"),
    ("nodes_list", Demand("web", 1, nodes=("a",)), [up("b")], (), NO_MATCH, "nodes a"),
    ("failed_there", Demand("web", 1), [up("b")], ("b",), FAILED, "failed on every other node"),
    ("max_per_node", Demand("web", 2, max_per_node=1), [up("b")], (), MAX_PER_NODE, "max_per_node 1 reached on b"),
    ("room_elsewhere", Demand("web", 1), [up("b")], (), MOVING, "not running there yet"),
]


@pytest.mark.parametrize(
    "demand, others, failed, code, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_why_stuck_names_the_obstacle(demand, others, failed, code, words):
    """Each obstacle the scheduler meets gets its own code and a line naming it."""
    nodes = [DRAINING, *others]
    current = {("web", o): ("a" if o == 1 else "b") for o in range(1, demand.count + 1)}
    avoid = {("web", 1): frozenset(failed)} if failed else {}
    plan = schedule([demand], nodes, current, avoid)
    if code != MOVING:
        assert plan.placement.get(("web", 1)) == "a", "the scheduler keeps the slot on the draining node"
    stuck = why_stuck(demand, "a", nodes, plan.placement, failed)
    assert stuck.code == code and words in stuck.message and stuck.template == "web"
